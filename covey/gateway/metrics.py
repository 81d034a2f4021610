"""Prometheus metrics for `/metrics`: requests, tokens, payments, settlement latency, revenue, subsidy, hosts.

Each app owns its own `CollectorRegistry` (no global state), so two gateways in one process, as in tests,
never share counters. Money is exported in USD (Prometheus' base-unit convention), counted exactly in
atomic units inside.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from covey.gateway.pricing import usd
from covey.gateway.x402.interfaces import Settlement, VerifiedPayment
from covey.gateway.x402.types import SettleResponse

SETTLEMENT_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class GatewayMetrics:
    """The gateway's counters, gauges and histograms in one private registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "covey_gateway_requests", "HTTP requests answered, by route and status.", ["route", "status"], registry=r
        )
        self.tokens = Counter(
            "covey_gateway_tokens",
            "Tokens processed, by model and kind (prompt, completion).",
            ["model", "kind"],
            registry=r,
        )
        self.payments = Counter(
            "covey_gateway_payments",
            "Accepted payments by settlement mode and outcome.",
            ["mode", "outcome"],
            registry=r,
        )
        self.settlement_latency = Histogram(
            "covey_gateway_settlement_latency_seconds",
            "Time to settle (strict: on chain) or durably accept (batched: journaled) one payment.",
            ["mode"],
            buckets=SETTLEMENT_BUCKETS_S,
            registry=r,
        )
        self.revenue = Counter("covey_gateway_revenue_usd", "USD paid by agents, settled or journaled.", registry=r)
        self.subsidy = Counter("covey_gateway_subsidy_usd", "USD the Treasury paid hosts as subsidy.", registry=r)
        self.host_payouts = Counter(
            "covey_gateway_host_payouts_usd", "USD the HostRegistry passed on to hosts from payments.", registry=r
        )
        self.host_healthy = Gauge(
            "covey_gateway_host_healthy",
            "1 while a host passes health checks, else 0.",
            ["host", "model"],
            registry=r,
        )
        self.failovers = Counter(
            "covey_gateway_failovers", "Requests moved to another host after one failed.", ["model"], registry=r
        )
        self.spot_checks = Counter(
            "covey_gateway_spot_checks",
            "Replayed requests by outcome (match, mismatch, error).",
            ["outcome"],
            registry=r,
        )
        self.slashes = Counter("covey_gateway_slashes", "Hosts reported and slashed for a mismatch.", registry=r)

    def count_tokens(self, model_id: str, prompt_tokens: int, completion_tokens: int) -> None:
        self.tokens.labels(model_id, "prompt").inc(prompt_tokens)
        self.tokens.labels(model_id, "completion").inc(completion_tokens)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MeteredSettlement:
    """A `Settlement` that times and counts every payment it settles, and reports the settled ones.

    `on_settled(payment)` runs after a successful settlement (strict: mined; batched: journaled), which is
    when the gateway owes the host that served the request its share.
    """

    def __init__(
        self,
        inner: Settlement,
        metrics: GatewayMetrics,
        on_settled: Callable[[VerifiedPayment], None] | None = None,
    ) -> None:
        self.inner = inner
        self.metrics = metrics
        self.on_settled = on_settled
        self.mode = inner.mode
        self.min_validity_s = inner.min_validity_s

    async def settle(self, payment: VerifiedPayment) -> SettleResponse:
        started = time.perf_counter()
        try:
            result = await self.inner.settle(payment)
        except Exception:
            self.metrics.payments.labels(self.mode, "error").inc()
            raise
        self.metrics.settlement_latency.labels(self.mode).observe(time.perf_counter() - started)
        self.metrics.payments.labels(self.mode, "settled" if result.success else "failed").inc()
        if result.success:
            self.metrics.revenue.inc(usd(int(payment.requirements.amount)))
            if self.on_settled is not None:
                self.on_settled(payment)
        return result

    async def check(self, payment: VerifiedPayment) -> str | None:
        return await self.inner.check(payment)

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    def status(self) -> dict[str, Any]:
        return self.inner.status()
