"""`covey facilitator serve`: an x402 facilitator (`/verify`, `/settle`, `/supported`) for the chain's USD token."""

from __future__ import annotations

import typer

from covey.cli._context import open_context
from covey.cli._output import console

app = typer.Typer(help="The x402 facilitator: verifies and settles agents' payments on chain.", no_args_is_help=True)

FROM_OPTION = typer.Option(
    None, "--from", help="The account that pays settlement gas; default COVEY_KEY, else dev6 on a local chain."
)


@app.callback()
def _group() -> None:
    """A callback keeps `serve` a subcommand even while it is the only one."""


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = typer.Option(8402, "--port", help="Port to listen on."),
    batcher: str | None = typer.Option(None, "--batcher", help="A PaymentBatcher, for batched settlement."),
    from_: str | None = FROM_OPTION,
) -> None:
    """Serve `POST /verify`, `POST /settle` and `GET /supported` as x402 version 2 specifies."""
    import uvicorn

    from covey.gateway import ExactEvmFacilitator, create_facilitator_app

    with open_context() as ctx:
        account, signer = ctx.server_signer(from_, "facilitator")
        facilitator = ExactEvmFacilitator(ctx.chain, account, batcher=batcher)
        console.print(f"x402 facilitator on http://{host}:{port} for {facilitator.network}, settling from {signer}")
        uvicorn.run(create_facilitator_app(facilitator), host=host, port=port, log_level="warning")
