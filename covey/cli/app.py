"""The root `covey` app: registers every sub-app and turns errors into one line and exit code 1."""

from __future__ import annotations

import sys
import traceback

import typer

# typer >= 0.29 ships its own copy of click; its exceptions are what `app(standalone_mode=False)` raises.
from typer._click import exceptions as click_exceptions

from covey.cli import (
    alliance_cmd,
    arena_cmd,
    chain_cmd,
    demo_cmd,
    explorer_cmd,
    facilitator_cmd,
    gateway_cmd,
    host_cmd,
    market_cmd,
    node_cmd,
    provider_cmd,
    stake_cmd,
    wallet_cmd,
)
from covey.cli._context import debug_enabled
from covey.cli._output import error_console
from covey.errors import CoveyError

app = typer.Typer(
    name="covey",
    help="Covey: a decentralised AI network on an EVM chain (token economy, Arena, Alliance, Gateway, Compute).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(chain_cmd.app, name="chain")
app.add_typer(wallet_cmd.app, name="wallet")
app.add_typer(stake_cmd.app, name="stake")
app.add_typer(arena_cmd.app, name="arena")
app.add_typer(node_cmd.app, name="node")
app.add_typer(alliance_cmd.app, name="alliance")
app.add_typer(gateway_cmd.app, name="gateway")
app.add_typer(host_cmd.app, name="host")
app.add_typer(facilitator_cmd.app, name="facilitator")
app.add_typer(market_cmd.app, name="market")
app.add_typer(provider_cmd.app, name="provider")
app.add_typer(explorer_cmd.app, name="explorer")
app.command("demo")(demo_cmd.demo)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `covey` console script."""
    try:
        app(args=argv, standalone_mode=False)
    except click_exceptions.NoArgsIsHelpError:
        sys.exit(0)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except typer.Abort:
        error_console.print("error: aborted")
        sys.exit(1)
    except click_exceptions.ClickException as usage:
        error_console.print(f"error: {usage.format_message()}", markup=False, highlight=False)
        sys.exit(1)
    except CoveyError as exc:
        error_console.print(f"error: {exc}", markup=False, highlight=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        error_console.print("error: interrupted")
        sys.exit(130)
    except Exception as exc:  # the last line of defence: users get one line, COVEY_DEBUG=1 shows the trace
        if debug_enabled():
            traceback.print_exc()
        first_line = (str(exc).splitlines() or [""])[0]
        error_console.print(f"error: {type(exc).__name__}: {first_line}", markup=False, highlight=False)
        sys.exit(1)
