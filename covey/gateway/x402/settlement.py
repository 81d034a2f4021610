"""When accepted payments reach the chain: `StrictSettlement` before each answer, `BatchedSettlement` later.

Batched: a payment is re-checked and held by the facilitator (its nonce in flight, its amount counted
against the payer's balance), journaled with fsync, and only then answered; a worker thread settles the
journal's pending payments many per transaction. After a crash, the journal's pending payments are held
again and settled; one that a lost batch already executed is recognised on chain (its nonce is used by our
own transfer to the payee), so every accepted payment is settled exactly once.

Settled stays settled: before a payment is served, `check` refuses it if the journal already accepted its
key, in this run or an earlier one (an in-memory lookup); for a payment the journal's record cannot vouch
for (it may have been settled before the record began, or it lives longer than any we ask for) the token's
`authorizationState` on chain decides.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from covey.gateway.x402.errors import Reason
from covey.gateway.x402.interfaces import BatchSettler, FacilitatorClient, VerifiedPayment
from covey.gateway.x402.journal import JournalEntry, PaymentJournal
from covey.gateway.x402.types import PaymentPayload, PaymentRequirements, SettleResponse, VerifyResponse

log = logging.getLogger(__name__)

# Strict settlement runs after the handler: leave it a minute to produce its answer and land the transfer.
STRICT_MIN_VALIDITY_S = 60
# Batched settlement needs the payment to survive a flush interval, a retry or two, and a restart.
BATCHED_MIN_VALIDITY_S = 180
DEFAULT_BATCH_SIZE = 50
DEFAULT_FLUSH_INTERVAL_S = 1.0
MAX_RETRY_BACKOFF_S = 30.0
# The payments a gateway asks for live `maxTimeoutSeconds` (600 by default) from signing, by the client's clock,
# which may run this far ahead of ours. A new journal asks the chain about the payments of its first
# CLOCK_SKEW_S seconds (and any signed before it): every chain read there costs the batched path throughput.
DEFAULT_MAX_TIMEOUT_S = 600
CLOCK_SKEW_S = 10


class StrictSettlement:
    """Settle on chain before answering: the answer carries the transaction hash."""

    mode = "strict"

    def __init__(self, facilitator: FacilitatorClient, *, min_validity_s: int = STRICT_MIN_VALIDITY_S) -> None:
        self.facilitator = facilitator
        self.min_validity_s = min_validity_s
        self._settled = 0
        self._failed = 0

    async def check(self, payment: VerifiedPayment) -> str | None:
        # Verification ran the transfer against the chain: a used nonce was refused there.
        return None

    async def settle(self, payment: VerifiedPayment) -> SettleResponse:
        result = await self.facilitator.settle(payment.payload, payment.requirements)
        if result.success:
            self._settled += 1
        else:
            self._failed += 1
        return result

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def status(self) -> dict[str, Any]:
        return {"mode": self.mode, "pending": 0, "settled": self._settled, "failed": self._failed}


class BatchedSettlement:
    """Answer once the payment is journaled; settle journaled payments in batches on a worker thread.

    The answer's `PAYMENT-RESPONSE` says `success: true` with an empty `transaction`: the transfer is
    owed, not yet mined. Money is at risk only in the window between acceptance and the batch (the payer
    could move the funds); the facilitator counts held payments against the balance to bound it.
    """

    mode = "batched"

    def __init__(
        self,
        settler: BatchSettler,
        journal_dir: Path,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S,
        min_validity_s: int = BATCHED_MIN_VALIDITY_S,
        max_timeout_s: int = DEFAULT_MAX_TIMEOUT_S,
        executor: ThreadPoolExecutor | None = None,
    ) -> None:
        """`max_timeout_s`: the longest a payment asked for here lives (the requirements' `maxTimeoutSeconds`)."""
        self.settler = settler
        self.journal_dir = Path(journal_dir)
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.min_validity_s = min_validity_s
        self.max_timeout_s = max_timeout_s
        self._own_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(max_workers=8, thread_name_prefix="x402-batched")
        self._journal: PaymentJournal | None = None
        self._cond = threading.Condition()
        self._queue: dict[str, tuple[PaymentPayload, PaymentRequirements]] = {}
        self._stopping = False
        self._worker: threading.Thread | None = None
        self._counts = {"settled": 0, "failed": 0, "recovered": 0, "batches": 0, "refused_spent": 0, "chain_checks": 0}

    # -- lifecycle -----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the journal, hold and queue what a previous run left pending, start the worker."""
        await self._run(self._open)

    def _open(self) -> None:
        # Payments settled before the journal existed may be offered for up to their lifetime after it.
        self._journal = PaymentJournal(self.journal_dir, horizon_s=self.max_timeout_s + CLOCK_SKEW_S)
        for entry in self._journal.pending():
            payload, requirements = _decode(entry)
            self.settler.restore(payload, requirements)
            self._queue[entry.key] = (payload, requirements)
        self._counts["recovered"] = len(self._queue)
        if self._queue:
            log.info("x402: %d journaled payments from a previous run will be settled", len(self._queue))
        self._worker = threading.Thread(target=self._work, name="x402-settler", daemon=True)
        self._worker.start()

    async def close(self, *, drain_timeout_s: float = 30.0) -> None:
        """Stop accepting work, settle what is pending (within `drain_timeout_s`), close the journal."""
        await self._run(self._stop, drain_timeout_s)
        if self._own_executor:
            self._executor.shutdown(wait=False)

    def _stop(self, drain_timeout_s: float) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._worker is not None:
            self._worker.join(timeout=drain_timeout_s)
        if self._journal is not None:
            self._journal.close()

    def status(self) -> dict[str, Any]:
        with self._cond:
            return {"mode": self.mode, "pending": len(self._queue), **self._counts}

    # -- accepting -----------------------------------------------------------------------------------

    async def check(self, payment: VerifiedPayment) -> str | None:
        """`NONCE_ALREADY_USED` if this payment was accepted here before (even in an earlier run), else None.

        Costs a dict lookup, plus a chain read only for a payment the journal's record cannot vouch for.
        """
        journal = self._journal
        if journal is None:
            raise RuntimeError("BatchedSettlement.start() was not awaited")
        if journal.spent(payment.key):
            self._count("refused_spent")
            return Reason.NONCE_ALREADY_USED
        if self._vouched(journal, payment):
            return None
        self._count("chain_checks")
        try:
            used = await self._run(self.settler.nonce_used, payment.payload, payment.requirements)
        except Exception as exc:  # the chain is unreachable: refuse rather than serve a payment nobody can vouch for
            log.warning("x402: cannot read the nonce state of %s: %s", payment.key, exc)
            return Reason.UNEXPECTED_VERIFY_ERROR
        if used:
            self._count("refused_spent")
            return Reason.NONCE_ALREADY_USED
        return None

    def _vouched(self, journal: PaymentJournal, payment: VerifiedPayment) -> bool:
        """Whether the journal would hold this payment's key had it ever been accepted here.

        It would if the payment expires after the record's horizon, and no later than any payment signed now
        for these requirements (a longer-lived one may have been signed, and settled, before the record began).
        """
        expires = payment.expires_at
        longest = int(time.time()) + payment.requirements.max_timeout_seconds + CLOCK_SKEW_S
        return expires is not None and journal.complete_after < expires <= longest

    def _count(self, counter: str) -> None:
        with self._cond:
            self._counts[counter] += 1

    async def settle(self, payment: VerifiedPayment) -> SettleResponse:
        """Hold and journal the payment (fsync) so it survives a crash; the chain sees it in a later batch."""
        if self._journal is None:
            raise RuntimeError("BatchedSettlement.start() was not awaited")
        # One trip to a worker thread: the hold is quick, the journal's fsync is shared with concurrent payments.
        verdict = await self._run(self._accept, payment)
        network = payment.requirements.network
        if not verdict.is_valid:
            return SettleResponse(
                success=False,
                error_reason=verdict.invalid_reason,
                error_message=verdict.invalid_message,
                payer=verdict.payer,
                transaction="",
                network=network,
            )
        return SettleResponse(
            success=True, payer=payment.payer, transaction="", network=network, amount=payment.requirements.amount
        )

    def _accept(self, payment: VerifiedPayment) -> VerifyResponse:
        """Hold, journal and queue the payment (blocking); the facilitator's verdict if it cannot be held."""
        assert self._journal is not None
        if self._journal.spent(payment.key):  # `check` refused it already, unless a caller skipped `check`
            return VerifyResponse(
                is_valid=False,
                invalid_reason=Reason.NONCE_ALREADY_USED,
                invalid_message="this payment was already accepted here",
                payer=payment.payer,
            )
        verdict = self.settler.reserve(payment.payload, payment.requirements, min_validity_s=self.min_validity_s)
        if not verdict.is_valid:
            return verdict
        try:
            self._journal.append_accepted(
                payment.key,
                payment.payload.to_wire(),
                payment.requirements.to_wire(),
                expires_at=payment.expires_at,
            )
        except BaseException:
            self.settler.release(payment.payload)
            raise
        with self._cond:
            self._queue[payment.key] = (payment.payload, payment.requirements)
            if len(self._queue) >= self.batch_size:
                self._cond.notify_all()
        return verdict

    async def _run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    # -- the worker ----------------------------------------------------------------------------------

    def _work(self) -> None:
        backoff_s = self.flush_interval_s
        while True:
            with self._cond:
                if not self._stopping and len(self._queue) < self.batch_size:
                    self._cond.wait(timeout=backoff_s)
                batch = list(self._queue.items())[: self.batch_size]
                stopping = self._stopping
            if not batch:
                if stopping:
                    return
                continue
            progressed = self._settle(batch)
            if stopping and not progressed:
                log.warning("x402: %d payments stay journaled for the next start", len(self._queue))
                return
            backoff_s = self.flush_interval_s if progressed else min(backoff_s * 2, MAX_RETRY_BACKOFF_S)

    def _settle(self, batch: list[tuple[str, tuple[PaymentPayload, PaymentRequirements]]]) -> bool:
        """Settle one batch and journal the final outcomes; False when nothing became final."""
        try:
            results = self.settler.settle_batch([item for _key, item in batch])
        except Exception as exc:  # the chain is unreachable: everything stays pending, retried with backoff
            log.warning("x402: batch settlement failed, will retry: %s", exc)
            return False
        outcomes = []
        for (key, _item), result in zip(batch, results, strict=True):
            if result is None:
                continue
            outcomes.append((key, result.success, result.transaction, result.error_reason))
            if not result.success:
                log.warning("x402: accepted payment %s could not be settled: %s", key, result.error_reason)
        assert self._journal is not None
        try:
            self._journal.append_settled(outcomes)
        except Exception as exc:  # still pending in the journal: settled again next start, found on chain then
            log.error("x402: cannot journal settled payments: %s", exc)
            return False
        with self._cond:
            for key, success, _tx, _reason in outcomes:
                self._queue.pop(key, None)
                self._counts["settled" if success else "failed"] += 1
            self._counts["batches"] += 1
        return bool(outcomes)


def _decode(entry: JournalEntry) -> tuple[PaymentPayload, PaymentRequirements]:
    return PaymentPayload.model_validate(entry.payload), PaymentRequirements.model_validate(entry.requirements)
