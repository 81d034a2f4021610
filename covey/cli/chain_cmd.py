"""`covey chain ...`: deploy the contract suite, show chain facts, serve the embedded chain over JSON-RPC."""

from __future__ import annotations

import os
import sys
import time

import typer

from covey.cli._context import open_context
from covey.cli._output import console, error_console, print_json, table
from covey.errors import ChainError, ValidationError

app = typer.Typer(help="The chain: deploy the contracts, show facts, serve the embedded chain.", no_args_is_help=True)

JSON_OPTION = typer.Option(False, "--json", help="Print the result as JSON.")


@app.command()
def deploy(
    as_json: bool = JSON_OPTION,
    from_: str = typer.Option("dev0", "--from", help="Deployer account (a wallet name or dev0..dev9)."),
    unbonding_delay: int | None = typer.Option(
        None, "--unbonding-delay", help="Seconds before unbonded stake can be withdrawn (default: 3 local, 7 days)."
    ),
    commission_delay: int | None = typer.Option(
        None, "--commission-delay", help="Seconds before a new commission rate applies (default: 2 local, 1 day)."
    ),
    epoch_length: int | None = typer.Option(
        None,
        "--epoch-length",
        help="Seconds per emission epoch, at least 60 (default: 60 local, 1 day); the yearly emission stays the same.",
    ),
) -> None:
    """Deploy the whole contract suite and write the manifest to COVEY_HOME/deployments/<chainId>.json.

    Local chains get delays of seconds: their clock follows wall time, so waiting out a delay is real waiting.
    """
    from covey.chain.deploy import deploy_suite

    for name, value in (
        ("--unbonding-delay", unbonding_delay),
        ("--commission-delay", commission_delay),
        ("--epoch-length", epoch_length),
    ):
        if value is not None and value < 0:
            raise ValidationError(f"{name} is a number of seconds, not {value}")
    with open_context() as ctx:
        deployer = ctx.signer(from_)
        deployment = deploy_suite(
            ctx.chain,
            deployer,
            unbonding_delay_s=unbonding_delay,
            commission_delay_s=commission_delay,
            epoch_length_s=epoch_length,
        )
        data = deployment.to_json()
        if as_json:
            print_json(data)
            return
        rows = [(name, address, data["blocks"].get(name, "")) for name, address in data["contracts"].items()]
        console.print(table(f"Covey suite on chain {ctx.chain.chain_id}", ["contract", "address", "block"], rows))


@app.command()
def info(as_json: bool = JSON_OPTION) -> None:
    """Show the backend, chain id, latest block, the clock against wall time, and deployed addresses.

    A chain clock more than a minute off wall time gets a warning (stderr; `clockWarning` in --json).
    """
    with open_context() as ctx:
        chain = ctx.chain
        try:
            contracts = ctx.deployment.contracts
        except ChainError:
            contracts = {}
        warning = chain.clock_warning()
        data = {
            "backend": chain.backend,
            "chainId": chain.chain_id,
            "block": chain.block_number(),
            "timestamp": chain.timestamp(),
            "wallTime": int(time.time()),
            "clockOffsetS": chain.clock_offset_s(),
            "clockWarning": warning,
            "rpcUrl": ctx.settings.rpc_url,
            "dataDir": str(chain.data_dir) if chain.data_dir else None,
            "contracts": contracts,
        }
        if warning:
            error_console.print(f"warning: {warning}", markup=False, highlight=False)
        if as_json:
            print_json(data)
            return
        rows = [(key, value) for key, value in data.items() if key not in ("contracts", "clockWarning")]
        rows += [(name, address) for name, address in contracts.items()]
        if not contracts:
            rows.append(("contracts", "none deployed: run `covey chain deploy`"))
        console.print(table("Chain", ["", "value"], rows))


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8545, help="TCP port."),
    durability: str | None = typer.Option(
        None,
        help="When a transaction is confirmed: write (survives SIGKILL; default, or COVEY_CHAIN_DURABILITY), "
        "fsync (also survives a power cut, slower) or none.",
    ),
    rpc_gas_cap: int | None = typer.Option(
        None,
        "--rpc-gas-cap",
        help="Gas of one eth_call / eth_estimateGas; more is cut to it (default 50000000 as geth, "
        "or COVEY_CHAIN_RPC_GAS_CAP).",
    ),
    rpc_evm_timeout: float | None = typer.Option(
        None,
        "--rpc-evm-timeout",
        help="Seconds one eth_call / eth_estimateGas may run before it is stopped (default 5 as geth, "
        "or COVEY_CHAIN_RPC_EVM_TIMEOUT_S).",
    ),
    allow_unprotected_txs: bool = typer.Option(
        False,
        "--allow-unprotected-txs",
        help="Accept legacy transactions without a chain id (not EIP-155), which replay on any chain.",
    ),
) -> None:
    """Serve the embedded chain as Ethereum JSON-RPC so several processes share it."""
    from covey.chain._embedded import open_node, serve_rpc
    from covey.chain._embedded.limits import RpcLimits

    with open_context() as ctx:
        settings = ctx.settings
        if settings.rpc_url:
            raise ChainError("COVEY_RPC_URL is set: `covey chain serve` serves the embedded chain only")
        limits = RpcLimits(
            gas_cap=settings.chain_rpc_gas_cap if rpc_gas_cap is None else rpc_gas_cap,
            evm_timeout_s=settings.chain_rpc_evm_timeout_s if rpc_evm_timeout is None else rpc_evm_timeout,
            allow_unprotected_txs=allow_unprotected_txs,
        )
        node = open_node(settings.subdir("chain"), durability=durability or settings.chain_durability)  # type: ignore[arg-type]
        try:
            console.print(f"serving the embedded chain on http://{host}:{port} (Ctrl-C to stop)")
            serve_rpc(node, host=host, port=port, limits=limits)
        finally:
            # Stop within ~1 s of SIGTERM even while a long transaction runs (py-evm may take seconds):
            # it was journaled before it started, so the next start replays it. Calls hold no lock.
            if not node.close(wait_s=0.5):
                console.print("a transaction was still running: it is in the journal and replays on the next start")
                # Its thread still holds the GIL for slices; winding down the interpreter around it costs
                # ~0.5 s more, and nothing is left to flush (the journal is written with os.write).
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(0)
