"""`covey host serve`: a staked inference host that registers its endpoint and price on chain and serves a model."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from covey.chain.roles import Role
from covey.cli._context import Context, open_context
from covey.cli._output import USD_DECIMALS, console, format_units, parse_amount
from covey.errors import ConfigError, ValidationError

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from covey.gateway.registry import HostRegistryClient

app = typer.Typer(help="Inference hosts: serve a consensus model to gateways for a price.", no_args_is_help=True)

FROM_OPTION = typer.Option(
    None, "--from", help="The host's staked account; default COVEY_KEY, else dev4 on a local chain."
)


@app.callback()
def _group() -> None:
    """A callback keeps `serve` a subcommand even while it is the only one."""


@app.command()
def serve(
    model: str = typer.Option(..., "--model", help="The consensus model to serve, e.g. covey-arena-3."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = typer.Option(8100, "--port", help="Port to listen on."),
    price: str = typer.Option("0.02", "--price", help="Your price in USD per 1,000 tokens."),
    public_url: str | None = typer.Option(
        None, "--public-url", help="Where gateways reach you (default http://HOST:PORT)."
    ),
    stake: str | None = typer.Option(
        None, "--stake", help="COV to stake for the host role first, if you have less than the registry's minimum."
    ),
    tokens_per_s: float = typer.Option(0.0, "--tokens-per-s", help="Pace each answer (0: full speed)."),
    arena: str | None = typer.Option(None, "--arena", help="Arena address (default: from the deployment)."),
    registry: str | None = typer.Option(None, "--registry", help="HostRegistry address (default: deployment)."),
    from_: str | None = FROM_OPTION,
) -> None:
    """Register `(model, endpoint, price)` in the HostRegistry, heartbeat, and serve until stopped."""
    import torch
    import uvicorn

    from covey.gateway.host import HostConfig, build_host_app
    from covey.gateway.models import ModelCatalog, find_arena
    from covey.gateway.registry import HostRegistryClient
    from covey.storage import open_store

    # Requests run concurrently on worker threads; intra-op threads would only spin against them.
    torch.set_num_threads(1)
    price_atomic = parse_amount(price, USD_DECIMALS, what="price")
    with open_context() as ctx:
        account, signer = ctx.server_signer(from_, "host")
        chain, deployment = ctx.chain, ctx.deployment
        hosts = (
            HostRegistryClient(chain, registry) if registry else HostRegistryClient.from_deployment(chain, deployment)
        )
        if hosts is None:
            raise ConfigError(f"no HostRegistry on chain {chain.chain_id}: deploy one or pass --registry")
        _ensure_stake(ctx, hosts, account, stake)
        arena_address = arena or find_arena(chain, deployment)
        catalog = ModelCatalog(chain, open_store(ctx.settings.store_url, ctx.settings.data_dir), arena_address)
        config = HostConfig(
            model_id=model,
            endpoint=(public_url or f"http://{host}:{port}").rstrip("/"),
            price_per_1k_atomic=price_atomic,
            max_tokens_per_s=tokens_per_s,
        )
        app_ = build_host_app(catalog, hosts, account, config)
        console.print(f"host {signer} serving {model} at {config.endpoint} for {price} USD per 1k tokens")
        uvicorn.run(app_, host=host, port=port, log_level="warning")


def _ensure_stake(ctx: Context, hosts: HostRegistryClient, account: LocalAccount, stake: str | None) -> None:
    """Stake `--stake` COV for the host role when the account has less than the registry's minimum."""
    staking = ctx.deployment.contract(ctx.chain, "Staking")
    needed = int(hosts.contract.functions.minStake().call())
    have = int(staking.functions.effectiveStake(account.address, Role.HOST).call())
    if have >= needed:
        return
    token = ctx.deployment.contract(ctx.chain, "CoveyToken")
    if stake is None:
        missing = format_units(needed - have)
        hint = ""
        liquid = int(token.functions.balanceOf(account.address).call())
        if liquid < needed - have and ctx.chain.is_local:
            hint = f" (it holds {format_units(liquid)} COV: `covey wallet faucet {account.address}` first)"
        raise ValidationError(
            f"hosts need {format_units(needed)} COV staked for the host role (you have {format_units(have)}): "
            f"pass --stake {missing} or run `covey stake add host {missing}`{hint}"
        )
    units = parse_amount(stake, what="stake")
    ctx.chain.transact(token.functions.approve(staking.address, units), account)
    ctx.chain.transact(staking.functions.stake(Role.HOST, units), account)
    console.print(f"staked {stake} COV for the host role")
