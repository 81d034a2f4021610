"""`create_gateway_app`: the OpenAI-compatible API with x402 payments, metrics and a backend (local or hosts).

    app = create_gateway_app(catalog, backend, payments=PaymentOptions(chain, token, pay_to, account))

`payments=None` serves for free (benchmarks' baseline, private deployments). The facilitator runs in this
process unless `PaymentOptions.facilitator_url` names a remote one; settlement is strict or batched.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from covey.bounds import check_recursion_limit
from covey.chain import Chain
from covey.chain.deploy import Deployment
from covey.errors import ConfigError
from covey.gateway.backend import Backend, LocalBackend
from covey.gateway.metrics import GatewayMetrics, MeteredSettlement
from covey.gateway.models import ModelCatalog, find_arena, find_contract
from covey.gateway.openai_api import create_openai_router, install_error_handlers, install_request_bounds
from covey.gateway.payouts import HostPayouts
from covey.gateway.registry import HostRegistryClient
from covey.gateway.router import HostRouter
from covey.gateway.service import DEFAULT_MAX_TOKENS, REFRESH_INTERVAL_S, GatewayService, HostEarned, SubsidySource
from covey.gateway.spot_check import SpotChecker
from covey.gateway.x402.batcher_deploy import deploy_batcher
from covey.gateway.x402.facilitator_client import HttpFacilitatorClient, LocalFacilitatorClient
from covey.gateway.x402.interfaces import FacilitatorClient, Settlement
from covey.gateway.x402.mechanisms.evm.exact import ExactEvmFacilitator, ExactEvmServer
from covey.gateway.x402.mechanisms.evm.exact.server import DEFAULT_MAX_TIMEOUT_S
from covey.gateway.x402.paywall import Paywall
from covey.gateway.x402.settlement import BatchedSettlement, StrictSettlement
from covey.storage import ArtifactStore

SETTLEMENT_MODES = ("strict", "batched")
# A batch transaction's fixed cost spread over up to 200 payments (the batcher takes 256), settled at least
# every two seconds.
GATEWAY_BATCH_SIZE = 200
GATEWAY_FLUSH_INTERVAL_S = 2.0
COUNTED_ROUTES = frozenset({"/v1/models", "/v1/chat/completions", "/v1/completions", "/health", "/metrics"})


@dataclass
class PaymentOptions:
    """How the gateway is paid: in `token` to `pay_to`, verified and settled by `facilitator_account`."""

    chain: Chain
    token: str
    pay_to: str
    facilitator_account: LocalAccount
    mode: str = "strict"
    journal_dir: Path | None = None
    batcher: str | None = None
    facilitator_url: str | None = None
    batch_size: int = 50
    flush_interval_s: float = 1.0
    max_timeout_s: int = DEFAULT_MAX_TIMEOUT_S
    """How long a signed payment stays valid; raise it when the chain's clock runs ahead of wall time."""


@dataclass
class _Payments:
    paywall: Paywall
    settlement: MeteredSettlement
    clients: list[Any]


def _build_payments(options: PaymentOptions, metrics: GatewayMetrics, on_settled: Callable[..., None]) -> _Payments:
    if options.mode not in SETTLEMENT_MODES:
        raise ValueError(f"unknown settlement mode {options.mode!r}: expected 'strict' or 'batched'")
    # Batched settlement settles later anyway: verify off chain, balances from a ledger (see the facilitator).
    facilitator = ExactEvmFacilitator(
        options.chain,
        options.facilitator_account,
        batcher=options.batcher,
        verification="ledger" if options.mode == "batched" else "onchain",
    )
    local = LocalFacilitatorClient(facilitator)
    remote = HttpFacilitatorClient(options.facilitator_url) if options.facilitator_url else None
    client: FacilitatorClient = remote or local
    inner: Settlement
    if options.mode == "strict":
        inner = StrictSettlement(client)
    else:
        if options.journal_dir is None:
            raise ValueError("batched settlement needs a journal directory")
        # Batches go through the in-process facilitator: the spec's HTTP facilitator settles one at a time.
        inner = BatchedSettlement(
            facilitator,
            options.journal_dir,
            batch_size=options.batch_size,
            flush_interval_s=options.flush_interval_s,
            max_timeout_s=options.max_timeout_s,
        )
    settlement = MeteredSettlement(inner, metrics, on_settled)
    server = ExactEvmServer(options.chain, options.token, options.pay_to, max_timeout_s=options.max_timeout_s)
    return _Payments(Paywall(server, client, settlement), settlement, [c for c in (local, remote) if c is not None])


def create_gateway_app(
    catalog: ModelCatalog,
    backend: Backend,
    *,
    metrics: GatewayMetrics | None = None,
    payments: PaymentOptions | None = None,
    subsidy_bps: SubsidySource | int = 0,
    on_host_earned: HostEarned | None = None,
    default_max_tokens: int = DEFAULT_MAX_TOKENS,
    refresh_interval_s: float = REFRESH_INTERVAL_S,
    extra_lifespan: Callable[[], Any] | None = None,
) -> FastAPI:
    """The gateway app. It owns `backend` (started and closed with the app) and the settlement's lifetime.

    `on_host_earned(host, amount_atomic, payment_key)` hears of each settled payment for a request a host served.
    `extra_lifespan` is an async context manager factory run inside the app's lifespan (payouts, heartbeats).
    """
    check_recursion_limit()
    metrics = metrics or GatewayMetrics()
    service = GatewayService(
        catalog,
        backend,
        metrics,
        subsidy_bps=subsidy_bps,
        on_host_earned=on_host_earned,
        default_max_tokens=default_max_tokens,
        refresh_interval_s=refresh_interval_s,
    )
    paid = _build_payments(payments, metrics, service.settled) if payments is not None else None
    if paid is not None:
        service.paywall = paid.paywall

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # `extra_lifespan` (host payouts) is entered first so it exits last: after batched settlement has
        # drained, its final payout covers every payment the gateway accepted.
        async with AsyncExitStack() as stack:
            if extra_lifespan is not None:
                await stack.enter_async_context(extra_lifespan())
            if paid is not None:
                await paid.settlement.start()
                stack.push_async_callback(_close_payments, paid)
            await backend.start()
            stack.push_async_callback(backend.close)
            await service.start()
            stack.push_async_callback(service.close)
            yield

    app = FastAPI(title="Covey Gateway", lifespan=lifespan, docs_url=None, redoc_url=None)
    install_error_handlers(app)
    app.include_router(create_openai_router(service))

    @app.get("/health")
    async def health() -> dict[str, Any]:
        status: dict[str, Any] = {"status": "ok", "models": len(catalog.models()), "subsidy_bps": service.subsidy_bps}
        status["settlement"] = paid.settlement.status() if paid is not None else {"mode": "free"}
        hosts = getattr(backend, "status", None)
        if callable(hosts):
            status["hosts"] = hosts()
        return status

    @app.get("/metrics")
    async def prometheus() -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    @app.get("/")
    async def root() -> JSONResponse:
        return JSONResponse({"service": "covey-gateway", "openai_base_url": "/v1"})

    app.state.service = service
    app.state.metrics = metrics
    app.state.settlement = paid.settlement if paid is not None else None
    install_request_bounds(app)
    # Added last, so outermost: requests refused as too large or too deep are counted too.
    app.add_middleware(_CountRequests, metrics=metrics)  # type: ignore[arg-type]
    return app


async def _close_payments(paid: _Payments) -> None:
    await paid.settlement.close()
    for client in paid.clients:
        if isinstance(client, HttpFacilitatorClient):
            await client.aclose()
        else:
            client.close()


class _CountRequests:
    """Counts every answered request by route and status (pure ASGI, so streams pass through untouched)."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        route = path if path in COUNTED_ROUTES else ("/v1/models/{id}" if path.startswith("/v1/models/") else "other")

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.metrics.requests.labels(route, str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, counting_send)


# -- assembling a gateway from the chain -----------------------------------------------------------------


@dataclass
class GatewayConfig:
    """How `covey gateway serve` runs: settlement, where models and hosts come from, checks and payouts."""

    settlement: str = "strict"
    """`strict`, `batched`, or `free` (no payments at all)."""
    facilitator_url: str | None = None
    journal_dir: Path | None = None
    batcher: str | None = None
    arena: str | None = None
    registry: str | None = None
    local_price_per_1k_atomic: int | None = None
    """Generate in this process at this price instead of routing to hosts."""
    pay_to: str | None = None
    spot_check_rate: float = 0.05
    payout_interval_s: float = 5.0
    health_interval_s: float = 2.0
    host_refresh_interval_s: float = 5.0
    default_max_tokens: int = DEFAULT_MAX_TOKENS
    max_timeout_s: int = DEFAULT_MAX_TIMEOUT_S
    batch_size: int = GATEWAY_BATCH_SIZE
    flush_interval_s: float = GATEWAY_FLUSH_INTERVAL_S


@dataclass
class Gateway:
    """An assembled gateway: the app and the parts a caller may want to watch (tests, the demo)."""

    app: FastAPI
    catalog: ModelCatalog
    pay_to: str
    registry: HostRegistryClient | None = None
    router: HostRouter | None = None
    spot_checker: SpotChecker | None = None
    payouts: HostPayouts | None = None


def build_gateway(
    chain: Chain,
    deployment: Deployment,
    store: ArtifactStore,
    account: LocalAccount,
    config: GatewayConfig,
    *,
    data_dir: Path,
) -> Gateway:
    """Assemble a gateway from what the chain says: the Arena's models, the HostRegistry's hosts and subsidy.

    `account` is the gateway's key: it pays settlement gas, signs requests to hosts, passes payments on to
    hosts and reports mismatches (the HostRegistry must list it as a gateway for the last three).
    """
    arena = config.arena or find_arena(chain, deployment)
    if arena is None:
        raise ConfigError(f"no Arena on chain {chain.chain_id}: there are no consensus models to serve")
    catalog = ModelCatalog(chain, store, arena)
    registry = HostRegistryClient(chain, config.registry) if config.registry else None
    registry = registry or HostRegistryClient.from_deployment(chain, deployment)
    metrics = GatewayMetrics()
    gateway = Gateway(app=FastAPI(), catalog=catalog, pay_to=config.pay_to or account.address, registry=registry)
    subsidy: SubsidySource | int = 0
    on_host_earned: HostEarned | None = None
    extra_lifespan = None
    backend: Backend
    if config.local_price_per_1k_atomic is not None:
        backend = LocalBackend(catalog, price_per_1k_atomic=config.local_price_per_1k_atomic)
    else:
        if registry is None:
            raise ConfigError(f"no HostRegistry on chain {chain.chain_id}: deploy one, or serve locally")
        router = HostRouter(
            registry,
            catalog,
            account,
            metrics,
            health_interval_s=config.health_interval_s,
            refresh_interval_s=config.host_refresh_interval_s,
        )
        # Credits owed to hosts survive a restart: the next run pays what this one owed.
        payouts_path = data_dir / "gateway" / f"payouts-{chain.chain_id}-{registry.address.lower()}.sqlite"
        payouts = HostPayouts(registry, account, metrics, interval_s=config.payout_interval_s, state_path=payouts_path)
        reference = LocalBackend(catalog, price_per_1k_atomic=0, workers=1)
        checker = SpotChecker(
            router, reference, registry, account, metrics, rate=config.spot_check_rate, on_mismatch=payouts.withhold
        )
        backend, subsidy, on_host_earned = router, registry.subsidy_bps, payouts.credit
        gateway.pay_to = config.pay_to or registry.address  # agents pay the registry, which pays the hosts
        gateway.router, gateway.spot_checker, gateway.payouts = router, checker, payouts

        @asynccontextmanager
        async def host_economy() -> AsyncIterator[None]:
            payouts.start()
            try:
                yield
            finally:
                await payouts.close()
                await reference.close()

        extra_lifespan = host_economy
    payments = None
    if config.settlement != "free":
        journal_dir = config.journal_dir or data_dir / "gateway" / f"journal-{chain.chain_id}"
        batcher = config.batcher
        if config.settlement == "batched" and batcher is None:
            batcher = find_contract(chain, deployment, "PaymentBatcher") or deploy_batcher(chain, account)
        payments = PaymentOptions(
            chain,
            deployment.address("USDToken"),
            gateway.pay_to,
            account,
            mode=config.settlement,
            journal_dir=journal_dir,
            batcher=batcher,
            facilitator_url=config.facilitator_url,
            max_timeout_s=config.max_timeout_s,
            batch_size=config.batch_size,
            flush_interval_s=config.flush_interval_s,
        )
    gateway.app = create_gateway_app(
        catalog,
        backend,
        metrics=metrics,
        payments=payments,
        subsidy_bps=subsidy,
        on_host_earned=on_host_earned,
        default_max_tokens=config.default_max_tokens,
        extra_lifespan=extra_lifespan,
    )
    gateway.app.state.gateway = gateway
    return gateway
