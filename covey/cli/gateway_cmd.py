"""`covey gateway serve`: the OpenAI-compatible inference API, paid per request with x402."""

from __future__ import annotations

from pathlib import Path

import typer

from covey.cli._context import open_context
from covey.cli._output import USD_DECIMALS, console, error_console, parse_amount
from covey.errors import ValidationError

app = typer.Typer(
    help="The inference gateway: OpenAI-compatible API, x402 payments, staked hosts.", no_args_is_help=True
)

SETTLEMENTS = ("strict", "batched", "free")
FROM_OPTION = typer.Option(
    None,
    "--from",
    help="The gateway's account (settlement gas, host payouts); default COVEY_KEY, else dev5 on a local chain.",
)


@app.callback()
def _group() -> None:
    """A callback keeps `serve` a subcommand even while it is the only one."""


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = typer.Option(8000, "--port", help="Port to listen on."),
    settlement: str = typer.Option(
        "strict",
        "--settlement",
        help="strict (on chain before answering), batched (journaled, settled many per transaction) or free.",
    ),
    facilitator_url: str | None = typer.Option(
        None, "--facilitator-url", help="A remote x402 facilitator; default: one in this process."
    ),
    local_price: str | None = typer.Option(
        None,
        "--local-price",
        help="Generate in this process at this USD price per 1,000 tokens instead of routing to staked hosts.",
    ),
    spot_check_rate: float = typer.Option(
        0.05,
        "--spot-check-rate",
        help="Share of requests replayed at temperature 0 to catch hosts serving another model.",
    ),
    journal: Path | None = typer.Option(None, "--journal", help="Batched settlement's journal directory."),
    batcher: str | None = typer.Option(None, "--batcher", help="PaymentBatcher address (batched settlement)."),
    batch_size: int = typer.Option(200, "--batch-size", help="Payments per batch transaction (batched, at most 256)."),
    flush_interval: float = typer.Option(2.0, "--flush-interval", help="Seconds between batches (batched)."),
    arena: str | None = typer.Option(None, "--arena", help="Arena address (default: from the deployment)."),
    registry: str | None = typer.Option(None, "--registry", help="HostRegistry address (default: deployment)."),
    pay_to: str | None = typer.Option(None, "--pay-to", help="Payee (default: the HostRegistry, or the gateway)."),
    from_: str | None = FROM_OPTION,
) -> None:
    """Serve `/v1/models`, `/v1/chat/completions` and `/v1/completions` for the Arena's consensus models."""
    import torch
    import uvicorn

    from covey.gateway.app import GatewayConfig, build_gateway
    from covey.storage import open_store

    if settlement not in SETTLEMENTS:
        raise ValidationError(f"unknown settlement {settlement!r}: choose one of {', '.join(SETTLEMENTS)}")
    if not 0 <= spot_check_rate <= 1:
        raise ValidationError(f"--spot-check-rate is a share between 0 and 1, not {spot_check_rate}")
    config = GatewayConfig(
        settlement=settlement,
        facilitator_url=facilitator_url,
        journal_dir=journal,
        batcher=batcher,
        arena=arena,
        registry=registry,
        pay_to=pay_to,
        spot_check_rate=spot_check_rate,
        batch_size=batch_size,
        flush_interval_s=flush_interval,
        local_price_per_1k_atomic=parse_amount(local_price, USD_DECIMALS, what="price") if local_price else None,
    )
    # Requests run concurrently on worker threads; intra-op threads would only spin against them.
    torch.set_num_threads(1)
    with open_context() as ctx:
        account, signer = ctx.server_signer(from_, "gateway")
        store = open_store(ctx.settings.store_url, ctx.settings.data_dir)
        gateway = build_gateway(ctx.chain, ctx.deployment, store, account, config, data_dir=ctx.settings.data_dir)
        mode = "in process" if config.local_price_per_1k_atomic is not None else "routed to staked hosts"
        console.print(
            f"gateway on http://{host}:{port}/v1 (OpenAI base_url), settlement {settlement}, generation {mode}; "
            f"agents pay {gateway.pay_to} on chain {ctx.chain.chain_id}; signing as {signer}"
        )
        routing_registry = gateway.registry if gateway.router is not None else None  # only routing needs the allowance
        if routing_registry is not None and not routing_registry.is_gateway(account.address):
            error_console.print(
                f"warning: {account.address} is not an allowed gateway in the HostRegistry, so hosts refuse "
                "its requests: the registry's owner allows it with setGateway",
                markup=False,
                highlight=False,
            )
        uvicorn.run(gateway.app, host=host, port=port, log_level="warning")
