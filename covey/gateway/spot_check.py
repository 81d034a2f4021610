"""Spot checks: replay a sampled request to the host that served it, at temperature 0, and compare.

Greedy decoding of the consensus weights is deterministic, so the gateway computes the right answer itself
(its own copy of the model, from the same store) and compares it with the host's. The replay is signed
like any request, so a host cannot tell a check from work. A host whose answer differs signed it: the
gateway reports it to the HostRegistry, which slashes the host's stake and removes it, and the router
never routes to it again.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

from eth_account.signers.local import LocalAccount

from covey.errors import CoveyError
from covey.gateway.backend import Backend, GenerationRequest
from covey.gateway.errors import HostError
from covey.gateway.metrics import GatewayMetrics
from covey.gateway.registry import HostRegistryClient
from covey.gateway.router import HostRouter, HostState
from covey.gateway.signing import answer_signer, output_hash

log = logging.getLogger(__name__)

MISMATCH_REASON = "served a different model (spot check)"


@dataclass(frozen=True)
class SpotCheckResult:
    """One replay: whom, the outcome (`match`, `mismatch`, `error`), and COV slashed for a mismatch."""

    host: str
    model_id: str
    outcome: str
    slashed: int = 0
    detail: str = ""


class SpotChecker:
    """Replays a `rate` share of routed requests in the background; `results` keeps what it found."""

    def __init__(
        self,
        router: HostRouter,
        reference: Backend,
        registry: HostRegistryClient,
        account: LocalAccount,
        metrics: GatewayMetrics,
        *,
        rate: float,
        on_mismatch: Callable[[str], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not 0 <= rate <= 1:
            raise ValueError(f"a spot-check rate is a probability, not {rate}")
        self.router = router
        self.reference = reference
        self.registry = registry
        self.account = account
        self.metrics = metrics
        self.rate = rate
        self.on_mismatch = on_mismatch
        self.results: list[SpotCheckResult] = []
        self._rng = rng or random.Random()
        self._running: set[asyncio.Task[SpotCheckResult]] = set()
        router.spot_check = self.maybe_check
        router.before_close.append(self.drain)

    def maybe_check(self, state: HostState, request: GenerationRequest) -> None:
        """Check this request with probability `rate` (in the background; the agent never waits)."""
        if self.rate <= 0 or self._rng.random() >= self.rate:
            return
        task = asyncio.get_running_loop().create_task(self.check(state, request))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def check(self, state: HostState, request: GenerationRequest) -> SpotCheckResult:
        """Replay `request` greedily on `state` and against the reference; report a signed mismatch."""
        greedy = GenerationRequest(request.model_id, request.prompt, request.params.greedy())
        try:
            answer = await self.router.call(state, greedy)
            expected = (await self.reference.complete(greedy)).completion
        except HostError as exc:  # a host failing the replay is the health checks' business, not fraud
            return self._done(SpotCheckResult(state.address, request.model_id, "error", detail=str(exc)))
        except CoveyError as exc:
            return self._done(SpotCheckResult(state.address, request.model_id, "error", detail=str(exc)))
        if answer.completion.text == expected.text:
            return self._done(SpotCheckResult(state.address, request.model_id, "match"))
        log.warning(
            "spot check: host %s answered %r, the consensus model %r",
            state.address,
            answer.completion.text[:60],
            expected.text[:60],
        )
        self.router.ban(state.address, MISMATCH_REASON)
        if self.on_mismatch is not None:
            self.on_mismatch(state.address)
        slashed, detail = await self._report(
            state, answer.request_hash, answer.proof, answer.completion.text, expected.text
        )
        if slashed:
            self.metrics.slashes.inc()
        return self._done(SpotCheckResult(state.address, request.model_id, "mismatch", slashed, detail))

    async def _report(
        self, state: HostState, asked: bytes, proof: dict[str, str], observed: str, expected: str
    ) -> tuple[int, str]:
        """Report the host's signed answer on chain; without a valid signature, only stop routing to it."""
        signature = proof.get("signature", "")
        observed_hash = output_hash(observed)
        signer = answer_signer(
            self.registry.address, self.registry.chain.chain_id, state.address, asked, observed_hash, signature
        )
        if signer != state.address:
            return 0, "the host's answer carries no valid signature: banned here, not provable on chain"
        try:
            slashed = await asyncio.to_thread(
                self.registry.report_mismatch,
                self.account,
                state.address,
                asked,
                output_hash(expected),
                observed_hash,
                signature,
            )
        except CoveyError as exc:
            return 0, f"reporting failed: {exc}"
        return slashed, "reported and slashed"

    def _done(self, result: SpotCheckResult) -> SpotCheckResult:
        self.metrics.spot_checks.labels(result.outcome).inc()
        self.results.append(result)
        return result

    async def drain(self) -> None:
        """Wait for the checks under way (tests, shutdown)."""
        if self._running:
            await asyncio.gather(*list(self._running), return_exceptions=True)
