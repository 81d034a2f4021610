"""The gateway's core, between the HTTP routes and the backends: models, quotes, charging, host attribution.

`GatewayService.charge` puts a handler behind the x402 paywall (or runs it free when payments are off) at
the price `quote` gives for the request's model and `max_tokens`. A handler reports which host served
the request; once the payment is settled the service credits that host (`on_host_earned`), which is
how the HostRegistry later passes the payment, plus the Treasury's subsidy, to the host that did the work.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from contextlib import suppress

from fastapi import Request
from fastapi.responses import Response

from covey.gateway.backend import Backend
from covey.gateway.errors import ModelNotFoundError
from covey.gateway.metrics import GatewayMetrics
from covey.gateway.models import ModelCatalog, ServedModel
from covey.gateway.pricing import Quote, quote
from covey.gateway.x402.interfaces import VerifiedPayment
from covey.gateway.x402.paywall import Paywall

log = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 100
MAX_TOKENS_LIMIT = 1024
REFRESH_INTERVAL_S = 10.0
MISS_REFRESH_INTERVAL_S = 2.0
ATTRIBUTION_LIMIT = 10_000

Handler = Callable[[VerifiedPayment | None], Awaitable[Response]]
SubsidySource = Callable[[], int]
HostEarned = Callable[[str, int, str], None]
"""`(host, amount_atomic, payment_key)`: a host earned a settled payment."""


class GatewayService:
    """Everything a route needs: which models exist, what they cost, and how to charge for them."""

    def __init__(
        self,
        catalog: ModelCatalog,
        backend: Backend,
        metrics: GatewayMetrics,
        *,
        paywall: Paywall | None = None,
        subsidy_bps: SubsidySource | int = 0,
        on_host_earned: HostEarned | None = None,
        default_max_tokens: int = DEFAULT_MAX_TOKENS,
        max_tokens_limit: int = MAX_TOKENS_LIMIT,
        refresh_interval_s: float = REFRESH_INTERVAL_S,
    ) -> None:
        self.catalog = catalog
        self.backend = backend
        self.metrics = metrics
        self.paywall = paywall
        self._subsidy_source = subsidy_bps if callable(subsidy_bps) else (lambda: int(subsidy_bps))
        self.subsidy_bps = 0
        self.on_host_earned = on_host_earned
        self.default_max_tokens = default_max_tokens
        self.max_tokens_limit = max_tokens_limit
        self.refresh_interval_s = refresh_interval_s
        self._served_by: OrderedDict[str, tuple[str | None, int]] = OrderedDict()
        # A stream can fail over to another host mid-answer: who earns it is known only when it ends, and
        # a strict payment settles before the first byte, so such credits wait here for the stream's end.
        self._streaming: OrderedDict[str, None] = OrderedDict()
        self._settled_mid_stream: set[str] = set()
        self._attribution_lock = threading.Lock()
        self._last_miss_refresh = 0.0
        self._refresher: asyncio.Task[None] | None = None

    # -- lifecycle ------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Read the chain once (models, subsidy), then keep re-reading it in the background."""
        await self.refresh()
        self._refresher = asyncio.create_task(self._refresh_forever(), name="covey-gateway-refresh")

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with suppress(asyncio.CancelledError):
                await self._refresher

    async def refresh(self) -> None:
        """Discover newly finalised models and re-read the subsidy rate (on a worker thread)."""
        await asyncio.to_thread(self.catalog.refresh)
        self.subsidy_bps = await asyncio.to_thread(self._subsidy_source)

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_interval_s)
            try:
                await self.refresh()
            except Exception as exc:  # the node is down: keep serving what we know, try again later
                log.warning("gateway: cannot refresh models from the chain: %s", exc)

    # -- models and prices ----------------------------------------------------------------------------

    async def model(self, model_id: str) -> ServedModel:
        """The served model `model_id`, re-reading the chain (rate-limited) before saying it does not exist."""
        try:
            return self.catalog.get(model_id)
        except ModelNotFoundError:
            if time.monotonic() - self._last_miss_refresh < MISS_REFRESH_INTERVAL_S:
                raise
            self._last_miss_refresh = time.monotonic()
            await asyncio.to_thread(self.catalog.refresh)
            return self.catalog.get(model_id)

    def quote(self, model_id: str, max_tokens: int) -> Quote:
        """The price of a request for up to `max_tokens` from the cheapest host serving `model_id`."""
        return quote(self.backend.host_price_per_1k(model_id), max_tokens, self.subsidy_bps)

    # -- charging -------------------------------------------------------------------------------------

    async def charge(self, request: Request, price: Quote, model_id: str, handler: Handler) -> Response:
        """Answer with `handler` behind the paywall at `price` (for free when payments are off)."""
        if self.paywall is None:
            return await handler(None)
        description = f"{model_id}: up to {price.max_tokens} tokens"
        return await self.paywall.serve(
            request, price.price_atomic, handler, description=description, mime_type="application/json"
        )

    def served(self, payment: VerifiedPayment | None, host: str | None, *, streaming: bool = False) -> None:
        """Remember who served a paid request, to credit them when the payment settles.

        For a stream (`streaming`), `host` is who sent the first piece; `stream_ended` names who finished it.
        """
        if payment is None:
            return
        with self._attribution_lock:
            self._served_by[payment.key] = (host, int(payment.requirements.amount))
            while len(self._served_by) > ATTRIBUTION_LIMIT:
                self._served_by.popitem(last=False)
            if streaming:
                self._streaming[payment.key] = None
                while len(self._streaming) > ATTRIBUTION_LIMIT:
                    self._settled_mid_stream.discard(self._streaming.popitem(last=False)[0])

    def stream_ended(self, payment: VerifiedPayment | None, host: str | None) -> None:
        """A paid stream ended, finished by `host` (after any failover): it earns the payment."""
        if payment is None:
            return
        with self._attribution_lock:
            self._streaming.pop(payment.key, None)
            if payment.key in self._served_by:
                self._served_by[payment.key] = (host, self._served_by[payment.key][1])
            if payment.key not in self._settled_mid_stream:
                return
            self._settled_mid_stream.discard(payment.key)
        self._credit(payment.key)

    def settled(self, payment: VerifiedPayment) -> None:
        """A payment settled: the host that served its request has earned it (`MeteredSettlement` calls this)."""
        with self._attribution_lock:
            if payment.key in self._streaming:
                self._settled_mid_stream.add(payment.key)
                return
        self._credit(payment.key)

    def _credit(self, key: str) -> None:
        with self._attribution_lock:
            host, amount = self._served_by.pop(key, (None, 0))
        if host is not None and self.on_host_earned is not None:
            self.on_host_earned(host, amount, key)
