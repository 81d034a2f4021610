"""The `exact` scheme's facilitator on an EVM chain: verify EIP-3009 payments and settle each exactly once.

Two ways to verify. `verification="onchain"` (the default, for strict settlement and the HTTP facilitator)
runs the transfer as an `eth_call` for every payment: the token itself has the last word. `"ledger"` (for
batched settlement, which settles later anyway) reads no chain state per payment: signature, amount, asset,
network, payee and validity window as always; the nonce against the payments this facilitator has seen
(held, settling, settled); the balance from a `BalanceLedger`, read at most once per `balance_ttl_s`, less
the payments held for a batch. What it gives up: a nonce the payer spent elsewhere, and funds moved away
within the ledger's lifetime, are caught only by the batch (which skips the transfer): the risk window
batched settlement already accepts between answering and settling, a little longer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import BadFunctionCallOutput, ContractLogicError, Web3RPCError

from covey.chain import Chain
from covey.chain.chain import revert_reason
from covey.errors import ChainError
from covey.gateway.x402.errors import Reason
from covey.gateway.x402.mechanisms.evm.eip3009 import (
    Authorization,
    TokenDomain,
    read_domain,
    recover_digest_signer,
    signing_digest,
    split_signature,
    token_contract,
)
from covey.gateway.x402.mechanisms.evm.exact.onchain import (
    authorization_used,
    find_settlement,
    reason_from_revert,
    settle_through_batcher,
    transfer_call,
    transfer_gas,
    tx_hash,
)
from covey.gateway.x402.mechanisms.evm.ledger import DEFAULT_BALANCE_TTL_S, BalanceLedger
from covey.gateway.x402.types import (
    X402_VERSION,
    PaymentPayload,
    PaymentRequirements,
    SettleResponse,
    SupportedKind,
    SupportedResponse,
    VerifyResponse,
)

log = logging.getLogger(__name__)

SCHEME = "exact"
# The reference SDKs want 6 s of validity left at verification: about one block to land the transfer.
DEFAULT_VALIDITY_MARGIN_S = 6
# Successful settlements remembered in memory for idempotent answers; older ones are found on chain.
RESULT_CACHE_SIZE = 10_000
# How far back to search for an earlier settlement of an authorisation (after a restart, or another process's).
DEFAULT_LOOKBACK_BLOCKS = 50_000
CHAIN_CLOCK_TTL_S = 1.0
# Signers recovered by `verify`, so `reserve` of the same payment (a moment later) need not recover again.
RECOVERED_CACHE_SIZE = 4096
Verification = Literal["onchain", "ledger"]


@dataclass(frozen=True)
class _Payment:
    """A payment parsed for the token: who pays whom how much, and the signature's parts."""

    auth: Authorization
    signature: str
    token: str

    @property
    def key(self) -> str:
        return self.auth.key


class _Invalid(Exception):
    """Internal: a check failed; becomes `VerifyResponse(is_valid=False)` at the public boundary."""

    def __init__(self, reason: Reason, message: str, payer: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.payer = payer


class ExactEvmFacilitator:
    """Verifies and settles x402 `exact` payments for one EVM chain, paying the gas from `signer`.

    Thread-safe: the gateway calls it from a thread pool. Each authorisation (payer, nonce) is settled at
    most once: concurrent settles of the same one wait for the first and get its answer, a repeated
    settle answers with the transaction that already moved the money (from memory, else from the chain's
    `AuthorizationUsed` log), and verification treats a nonce that is being settled or is held for a batch
    as already used, counting held amounts against the payer's balance.
    """

    scheme = SCHEME

    def __init__(
        self,
        chain: Chain,
        signer: LocalAccount,
        *,
        batcher: str | None = None,
        validity_margin_s: int = DEFAULT_VALIDITY_MARGIN_S,
        verification: Verification = "onchain",
        balance_ttl_s: float = DEFAULT_BALANCE_TTL_S,
        lookback_blocks: int = DEFAULT_LOOKBACK_BLOCKS,
    ) -> None:
        self.chain = chain
        self.signer = signer
        self.network = f"eip155:{chain.chain_id}"
        self.batcher = Web3.to_checksum_address(batcher) if batcher else None
        if self.batcher and not chain.w3.eth.get_code(self.batcher):
            # A call to an empty address "succeeds": every batch would look settled and be lost.
            raise ChainError(f"no PaymentBatcher contract at {self.batcher} on chain {chain.chain_id}")
        self.validity_margin_s = validity_margin_s
        if verification not in ("onchain", "ledger"):
            raise ValueError(f"unknown verification {verification!r}: expected 'onchain' or 'ledger'")
        self.verification = verification
        self.ledger = BalanceLedger(self._read_balance, ttl_s=balance_ttl_s) if verification == "ledger" else None
        self.lookback_blocks = lookback_blocks
        self._domains: dict[str, TokenDomain] = {}
        self._tokens: dict[str, Contract] = {}
        self._cond = threading.Condition()
        self._settling: dict[str, tuple[str, int]] = {}  # key -> (payer, amount): a transaction is under way
        self._held: dict[str, tuple[str, int]] = {}  # key -> (payer, amount): accepted, waiting for a batch
        # payer -> {key: amount} for every key held or settling: what a payer owes, without scanning all holds.
        self._in_flight_by_payer: dict[str, dict[str, int]] = {}
        self._results: OrderedDict[str, SettleResponse] = OrderedDict()
        self._chain_clock: tuple[float, int] = (0.0, 0)
        self._recovered: OrderedDict[tuple[bytes, str], str] = OrderedDict()
        self._recovered_lock = threading.Lock()

    # -- the facilitator API --------------------------------------------------------------------------

    def supported(self) -> SupportedResponse:
        """One kind: x402 v2, `exact`, this chain; the signer that pays the gas."""
        return SupportedResponse(
            kinds=[SupportedKind(x402_version=X402_VERSION, scheme=SCHEME, network=self.network)],
            extensions=[],
            signers={"eip155:*": [self.signer.address]},
        )

    def verify(self, payload: PaymentPayload, requirements: PaymentRequirements) -> VerifyResponse:
        """Would this payment settle now for exactly these requirements? Never raises for a bad payment."""
        try:
            payment = self._check(payload, requirements, margin_s=self.validity_margin_s)
            with self._cond:
                if self._in_flight(payment.key):
                    raise _Invalid(
                        Reason.NONCE_ALREADY_USED, "this authorisation is settled or in flight", payment.auth.payer
                    )
                owed = self._owed_by(payment.auth.payer, exclude=payment.key)
            if self.ledger is not None:
                self._check_funds(payment, owed=owed)
            else:
                # One call answers for the nonce, the balance and the token's own checks; the explicit reads
                # run only to name the reason of a failure, or when held payments must be added up.
                try:
                    self._simulate(payment)
                except _Invalid:
                    self._check_nonce_and_funds(payment, owed=0)
                    raise
                if owed:
                    self._check_nonce_and_funds(payment, owed=owed)
        except _Invalid as invalid:
            return VerifyResponse(
                is_valid=False, invalid_reason=invalid.reason, invalid_message=str(invalid), payer=invalid.payer
            )
        except Exception as exc:  # the chain is unreachable or answered nonsense: the spec's catch-all code
            log.warning("x402 verify failed unexpectedly: %s", exc)
            return VerifyResponse(
                is_valid=False, invalid_reason=Reason.UNEXPECTED_VERIFY_ERROR, invalid_message=str(exc)
            )
        return VerifyResponse(is_valid=True, payer=payment.auth.payer)

    def settle(self, payload: PaymentPayload, requirements: PaymentRequirements) -> SettleResponse:
        """Execute the payment's `transferWithAuthorization`, once; a repeat answers with the first result."""
        try:
            key = self._parse(payload).key
        except _Invalid as invalid:
            return self._failed(requirements, invalid.reason, str(invalid), invalid.payer)
        if key not in self._claim([(key, payload)]):
            cached = self._results.get(key)
            if cached is not None:
                return cached  # settled by the concurrent settle we waited for, or earlier
            return self.settle(payload, requirements)
        try:
            return self._settle_one(payload, requirements)
        except Exception as exc:  # the chain went away mid-settlement; a retry finds the transfer if it landed
            log.warning("x402 settle failed unexpectedly: %s", exc)
            return self._failed(requirements, Reason.UNEXPECTED_SETTLE_ERROR, str(exc), None)
        finally:
            self._finish([key])

    # -- batched settlement (the `BatchSettler` protocol) ----------------------------------------------

    def reserve(
        self, payload: PaymentPayload, requirements: PaymentRequirements, *, min_validity_s: int
    ) -> VerifyResponse:
        """Hold a verified payment for a later batch: nonce in flight, amount counted against the balance."""
        try:
            payment = self._check(payload, requirements, margin_s=min_validity_s)
            for fresh in (False, True):  # a cached balance that looks too small is read again before refusing
                balance = self._balance(payment, fresh=fresh)
                with self._cond:
                    # Re-check under the lock: two requests of one payer may race between verify and reserve.
                    if self._in_flight(payment.key):
                        raise _Invalid(
                            Reason.NONCE_ALREADY_USED, "this authorisation is already accepted", payment.auth.payer
                        )
                    owed = self._owed_by(payment.auth.payer, exclude=payment.key)
                    if balance >= owed + payment.auth.value:
                        self._hold(self._held, payment.key, payment.auth.payer, payment.auth.value)
                        break
                if fresh or self.ledger is None:
                    raise _Invalid(
                        Reason.INSUFFICIENT_FUNDS,
                        f"balance {balance} cannot cover {payment.auth.value} on top of {owed} accepted",
                        payment.auth.payer,
                    )
        except _Invalid as invalid:
            return VerifyResponse(
                is_valid=False, invalid_reason=invalid.reason, invalid_message=str(invalid), payer=invalid.payer
            )
        except Exception as exc:  # the chain is unreachable: refuse rather than accept unbacked payments
            log.warning("x402 reserve failed unexpectedly: %s", exc)
            return VerifyResponse(
                is_valid=False, invalid_reason=Reason.UNEXPECTED_VERIFY_ERROR, invalid_message=str(exc)
            )
        return VerifyResponse(is_valid=True, payer=payment.auth.payer)

    def restore(self, payload: PaymentPayload, requirements: PaymentRequirements) -> None:
        """Hold a payment accepted before a restart, without re-checking it (it was checked then)."""
        auth = self._parse(payload).auth
        with self._cond:
            self._hold(self._held, auth.key, auth.payer, auth.value)

    def release(self, payload: PaymentPayload) -> None:
        """Forget a hold whose request was not served."""
        with self._cond:
            self._unhold(self._held, self._safe_key(payload))

    def settle_batch(self, items: Sequence[tuple[PaymentPayload, PaymentRequirements]]) -> list[SettleResponse | None]:
        """Settle many payments, through the PaymentBatcher contract when one is configured.

        Returns one entry per item: a final `SettleResponse`, or `None` when the payment is still good but
        did not settle this time (the batch transaction failed, or another settle of it is under way).
        """
        results: list[SettleResponse | None] = [None] * len(items)
        keyed = []
        for index, (payload, requirements) in enumerate(items):
            try:
                keyed.append((index, self._parse(payload).key))
            except _Invalid as invalid:
                results[index] = self._failed(requirements, invalid.reason, str(invalid), invalid.payer)
        claimed = self._claim([(key, items[index][0]) for index, key in keyed])
        for index, key in keyed:
            if key not in claimed and key in self._results:
                results[index] = self._results[key]
        todo = [(index, key) for index, key in keyed if key in claimed]
        try:
            if self.batcher is None:
                for index, _key in todo:
                    results[index] = self._settle_one(*items[index])
            else:
                self._settle_through_batcher(items, todo, results)
        finally:
            self._finish([key for _index, key in todo], keep_held=[k for i, k in todo if results[i] is None])
        return results

    def nonce_used(self, payload: PaymentPayload, requirements: PaymentRequirements) -> bool:
        """Whether the token has already used this payment's nonce: its `authorizationState` (one chain read)."""
        try:
            auth = self._parse(payload).auth
        except _Invalid as invalid:
            raise ValueError(str(invalid)) from invalid
        return authorization_used(self.chain, requirements.asset, auth)

    # -- checks --------------------------------------------------------------------------------------

    def _parse(self, payload: PaymentPayload) -> _Payment:
        data = payload.payload
        try:
            auth = Authorization.from_wire(data.get("authorization"))
        except ValueError as exc:
            raise _Invalid(Reason.INVALID_PAYLOAD, str(exc)) from exc
        signature = data.get("signature")
        try:
            split_signature(signature)  # type: ignore[arg-type]
        except ValueError as exc:
            raise _Invalid(Reason.INVALID_SIGNATURE, str(exc), auth.payer) from exc
        return _Payment(auth=auth, signature=str(signature), token=payload.accepted.asset)

    def _safe_key(self, payload: PaymentPayload) -> str:
        try:
            return self._parse(payload).key
        except _Invalid:
            return ""

    def _check(self, payload: PaymentPayload, requirements: PaymentRequirements, *, margin_s: int) -> _Payment:
        """The checks that need no chain state but the clock and the token's domain, cheapest first."""
        if payload.x402_version != X402_VERSION:
            raise _Invalid(Reason.INVALID_X402_VERSION, f"x402Version {payload.x402_version} is not supported (2 is)")
        if requirements.scheme != SCHEME or payload.accepted.scheme != SCHEME:
            raise _Invalid(Reason.UNSUPPORTED_SCHEME, f"only the {SCHEME!r} scheme is supported")
        if requirements.network != self.network:
            raise _Invalid(
                Reason.INVALID_NETWORK, f"this facilitator settles on {self.network}, not {requirements.network}"
            )
        payment = replace(self._parse(payload), token=requirements.asset)
        auth, payer = payment.auth, payment.auth.payer
        self._check_accepted(payload.accepted, requirements, payer)
        if auth.payee.lower() != requirements.pay_to.lower():
            raise _Invalid(
                Reason.RECIPIENT_MISMATCH, f"authorisation pays {auth.payee}, not {requirements.pay_to}", payer
            )
        if str(auth.value) != requirements.amount:
            raise _Invalid(
                Reason.VALUE_MISMATCH, f"authorisation is for {auth.value}, the price is {requirements.amount}", payer
            )

        domain = self._domain(requirements.asset, payer)
        try:
            signer = self._recover(signing_digest(domain.separator, auth), payment.signature)
        except ValueError as exc:
            raise _Invalid(Reason.INVALID_SIGNATURE, str(exc), payer) from exc
        if signer != payer:
            extra = requirements.extra or {}
            hint = ""
            if (extra.get("name"), extra.get("version")) != (domain.name, domain.version):
                hint = f"; the token's EIP-712 domain is name={domain.name!r} version={domain.version!r}"
            raise _Invalid(Reason.INVALID_SIGNATURE, f"signature is by {signer}, not the payer {payer}{hint}", payer)
        self._check_window(auth, margin_s)
        return payment

    def _check_nonce_and_funds(self, payment: _Payment, *, owed: int) -> None:
        """Read the chain: the nonce is unused, and the balance covers this payment plus `owed` in flight."""
        auth = payment.auth
        if self._token(payment.token).functions.authorizationState(auth.payer, auth.nonce).call():
            raise _Invalid(Reason.NONCE_ALREADY_USED, "the token has already used this nonce", auth.payer)
        self._check_funds(payment, owed=owed)

    def _recover(self, digest: bytes, signature: str) -> str:
        """The signer of `digest`, remembered for a while: batched settlement checks each payment twice."""
        with self._recovered_lock:
            signer = self._recovered.get((digest, signature))
        if signer is None:
            signer = recover_digest_signer(digest, signature)
            with self._recovered_lock:
                self._recovered[(digest, signature)] = signer
                if len(self._recovered) > RECOVERED_CACHE_SIZE:
                    self._recovered.popitem(last=False)
        return signer

    def _check_funds(self, payment: _Payment, *, owed: int) -> None:
        """The payer's balance covers this payment plus `owed` in flight."""
        auth = payment.auth
        balance = self._balance(payment)
        if balance < owed + auth.value and self.ledger is not None:
            balance = self._balance(payment, fresh=True)
        if balance < owed + auth.value:
            raise _Invalid(
                Reason.INSUFFICIENT_FUNDS,
                f"balance {balance} cannot cover {auth.value} (plus {owed} in flight)",
                auth.payer,
            )

    def _balance(self, payment: _Payment, *, fresh: bool = False) -> int:
        """The payer's balance: from the ledger when verifying off chain (unless `fresh`), else the chain's."""
        if self.ledger is not None:
            return self.ledger.balance(payment.token, payment.auth.payer, fresh=fresh)
        return self._read_balance(payment.token, payment.auth.payer)

    def _read_balance(self, token: str, payer: str) -> int:
        return int(self._token(token).functions.balanceOf(payer).call())

    def _check_accepted(self, accepted: PaymentRequirements, required: PaymentRequirements, payer: str) -> None:
        """The client echoes the requirements it paid for; they must be ours, field for field, as sent."""
        if accepted.network != required.network:
            raise _Invalid(Reason.INVALID_NETWORK, f"payment is for {accepted.network}, not {required.network}", payer)
        if accepted.amount != required.amount:
            raise _Invalid(
                Reason.VALUE_MISMATCH, f"payment accepted {accepted.amount}, the price is {required.amount}", payer
            )
        if accepted.asset != required.asset:
            raise _Invalid(Reason.ASSET_MISMATCH, f"payment is in {accepted.asset}, not {required.asset}", payer)
        if accepted.pay_to != required.pay_to:
            raise _Invalid(Reason.RECIPIENT_MISMATCH, f"payment is to {accepted.pay_to}, not {required.pay_to}", payer)
        if accepted.max_timeout_seconds != required.max_timeout_seconds:
            raise _Invalid(
                Reason.INVALID_PAYMENT_REQUIREMENTS, "maxTimeoutSeconds differs from the requirements", payer
            )
        extra, echoed = required.extra or {}, accepted.extra or {}
        if "name" not in extra or "version" not in extra:
            raise _Invalid(Reason.MISSING_EIP712_DOMAIN, "requirements lack extra.name / extra.version", payer)
        if any(echoed.get(field) != extra[field] for field in ("name", "version")):
            raise _Invalid(
                Reason.INVALID_PAYMENT_REQUIREMENTS, "extra.name / extra.version differ from the requirements", payer
            )

    def _check_window(self, auth: Authorization, margin_s: int) -> None:
        """Valid now, and still valid `margin_s` from now, by wall time and by the chain's clock.

        The token judges by the timestamp of the block that includes the transfer: at least the latest
        block's plus one, and no earlier than wall time (an idle dev chain's latest block can be old, and
        a time-travelled one runs ahead). Clients sign by wall time; a payment must pass both clocks.
        """
        wall = int(time.time())
        next_block = max(self._latest_block_time() + 1, wall)
        if auth.valid_after >= wall:
            raise _Invalid(
                Reason.VALID_AFTER, f"authorisation is valid only after {auth.valid_after} (now {wall})", auth.payer
            )
        deadline = next_block + margin_s
        if auth.valid_before <= deadline:
            raise _Invalid(
                Reason.VALID_BEFORE,
                f"authorisation expires at {auth.valid_before}, before {deadline} (wall {wall}, chain {next_block})",
                auth.payer,
            )

    def _simulate(self, payment: _Payment) -> None:
        """Run the transfer as a call in the pending block: the token itself has the last word."""
        fn = self._transfer_fn(payment)
        try:
            fn.call({"from": self.signer.address}, block_identifier="pending")
        except (ContractLogicError, Web3RPCError) as exc:
            reason = revert_reason(exc)
            raise _Invalid(
                reason_from_revert(reason), f"the token refused the transfer: {reason}", payment.auth.payer
            ) from exc

    # -- settlement ----------------------------------------------------------------------------------

    def _settle_one(self, payload: PaymentPayload, requirements: PaymentRequirements) -> SettleResponse:
        try:
            payment = self._check(payload, requirements, margin_s=0)
        except _Invalid as invalid:
            return self._failed(requirements, invalid.reason, str(invalid), invalid.payer)
        # No reads first: the transaction's gas estimate runs the token's checks, and a used nonce is then
        # looked up on chain, so a repeated settle answers with the transfer that already happened. The gas
        # limit leaves room for the payee being emptied between the estimate and the transfer's block.
        sent_at = time.monotonic()
        try:
            fn = self._transfer_fn(payment)
            receipt = self.chain.transact(fn, self.signer, gas=transfer_gas(fn, self.signer.address))
        except ChainError as exc:
            self._balance_moved(payment, None)
            earlier = self._earlier_settlement(payment, requirements)
            if earlier is not None:  # another process settled it between our check and our transaction
                return self._remember(payment.key, earlier)
            reason = reason_from_revert(exc.reason) if exc.reason else Reason.INVALID_TRANSACTION_STATE
            return self._failed(requirements, reason, str(exc), payment.auth.payer)
        self._balance_moved(payment, sent_at)
        return self._remember(payment.key, self._succeeded(requirements, payment, tx_hash(receipt)))

    def _settle_through_batcher(
        self,
        items: Sequence[tuple[PaymentPayload, PaymentRequirements]],
        todo: list[tuple[int, str]],
        results: list[SettleResponse | None],
    ) -> None:
        by_token: dict[str, list[tuple[int, _Payment]]] = {}
        for index, _key in todo:
            payment = self._parse(items[index][0])
            by_token.setdefault(Web3.to_checksum_address(items[index][1].asset), []).append((index, payment))
        assert self.batcher is not None
        for token, group in by_token.items():
            sent_at = time.monotonic()
            try:
                tx, settled = settle_through_batcher(
                    self.chain, self.batcher, self.signer, token, [(p.auth, p.signature) for _i, p in group]
                )
            except ChainError as exc:
                log.warning("x402 batch of %d payments in %s failed; will retry: %s", len(group), token, exc)
                continue
            for index, payment in group:
                requirements = items[index][1]
                if payment.key in settled:
                    self._balance_moved(payment, sent_at)
                    results[index] = self._remember(payment.key, self._succeeded(requirements, payment, tx))
                else:
                    self._balance_moved(payment, None)
                    results[index] = self._diagnose_skipped(items[index][0], requirements, payment)

    def _diagnose_skipped(
        self, payload: PaymentPayload, requirements: PaymentRequirements, payment: _Payment
    ) -> SettleResponse | None:
        """Why did the batcher skip this payment? Final failure, earlier success, or `None` to retry."""
        try:
            self._check_nonce_and_funds(self._check(payload, requirements, margin_s=0), owed=0)
        except _Invalid as invalid:
            if invalid.reason == Reason.NONCE_ALREADY_USED:
                earlier = self._earlier_settlement(payment, requirements)
                if earlier is not None:
                    return self._remember(payment.key, earlier)
            return self._failed(requirements, invalid.reason, str(invalid), payment.auth.payer)
        except Exception as exc:  # the chain is unreachable now: keep the payment pending
            log.warning("x402 could not diagnose a skipped payment; will retry: %s", exc)
            return None
        return None  # still valid: it ran out of gas or hit a transient fault inside the batch

    def _earlier_settlement(self, payment: _Payment, requirements: PaymentRequirements) -> SettleResponse | None:
        """The settlement of exactly this authorisation that we sent: remembered, or found on chain.

        Only a transaction from our own signer counts (a batch lost in a crash, or a settle another thread
        of ours raced): a nonce someone else used, even for a transfer to the same payee, is not a payment
        this facilitator settled, and must not be reported as one.
        """
        cached = self._results.get(payment.key)
        if cached is not None:
            return cached
        tx = find_settlement(
            self.chain, requirements.asset, payment.auth, self.lookback_blocks, sender=self.signer.address
        )
        return None if tx is None else self._succeeded(requirements, payment, tx)

    # -- bookkeeping -----------------------------------------------------------------------------------

    def _balance_moved(self, payment: _Payment, sent_at: float | None) -> None:
        """Tell the ledger the payment's transfer was mined (sent at `sent_at`), or failed (`None`)."""
        if self.ledger is None:
            return
        if sent_at is None:
            self.ledger.forget(payment.token, payment.auth.payer)
        else:
            self.ledger.settled(payment.token, payment.auth.payer, payment.auth.value, sent_at=sent_at)

    def _claim(self, keyed: list[tuple[str, PaymentPayload]]) -> set[str]:
        """Mark keys as settling; wait for other settles of the same keys; skip keys already settled."""
        claimed: set[str] = set()
        with self._cond:
            for key, payload in keyed:
                while key in self._settling:
                    self._cond.wait()
                if key in self._results or key in claimed:
                    continue
                auth = self._parse(payload).auth
                self._hold(self._settling, key, auth.payer, auth.value)
                claimed.add(key)
        return claimed

    def _finish(self, keys: list[str], keep_held: Sequence[str] = ()) -> None:
        with self._cond:
            for key in keys:
                self._unhold(self._settling, key)
                if key not in keep_held:
                    self._unhold(self._held, key)
            self._cond.notify_all()

    def _in_flight(self, key: str) -> bool:
        return key in self._settling or key in self._held or key in self._results

    def _owed_by(self, payer: str, *, exclude: str) -> int:
        """What this payer has in flight here (being settled or held for a batch), other than `exclude`."""
        in_flight = self._in_flight_by_payer.get(payer.lower(), {})
        return sum(in_flight.values()) - in_flight.get(exclude, 0)

    def _hold(self, table: dict[str, tuple[str, int]], key: str, payer: str, amount: int) -> None:
        """Put `key` in `table` (`_held` or `_settling`) and count it as in flight for its payer (under the lock)."""
        table[key] = (payer.lower(), amount)
        self._in_flight_by_payer.setdefault(payer.lower(), {})[key] = amount

    def _unhold(self, table: dict[str, tuple[str, int]], key: str) -> None:
        """Take `key` out of `table`; it stops counting for its payer once in neither table (under the lock)."""
        entry = table.pop(key, None)
        if entry is None or key in self._held or key in self._settling:
            return
        in_flight = self._in_flight_by_payer.get(entry[0], {})
        in_flight.pop(key, None)
        if not in_flight:
            self._in_flight_by_payer.pop(entry[0], None)

    def _remember(self, key: str, response: SettleResponse) -> SettleResponse:
        """Keep a success for idempotent answers (failures are not kept: a retry may succeed)."""
        if response.success:
            with self._cond:
                self._results[key] = response
                while len(self._results) > RESULT_CACHE_SIZE:
                    self._results.popitem(last=False)
        return response

    def _domain(self, asset: str, payer: str) -> TokenDomain:
        if asset not in self._domains:
            try:
                self._domains[asset] = read_domain(self.chain, asset)
            except (ContractLogicError, BadFunctionCallOutput, Web3RPCError, ValueError) as exc:
                raise _Invalid(
                    Reason.INVALID_PAYMENT_REQUIREMENTS, f"asset {asset} is not an EIP-3009 token: {exc}", payer
                ) from exc
        return self._domains[asset]

    def _latest_block_time(self) -> int:
        fetched_at, stamp = self._chain_clock
        if time.monotonic() - fetched_at > CHAIN_CLOCK_TTL_S:
            stamp = self.chain.timestamp()
            self._chain_clock = (time.monotonic(), stamp)
        return stamp

    def _token(self, address: str) -> Contract:
        # Building a web3 contract parses its ABI: keep one per token.
        if address not in self._tokens:
            self._tokens[address] = token_contract(self.chain, address)
        return self._tokens[address]

    def _transfer_fn(self, payment: _Payment) -> Any:
        return transfer_call(self._token(payment.token), payment.auth, payment.signature)

    def _succeeded(self, requirements: PaymentRequirements, payment: _Payment, tx: str) -> SettleResponse:
        return SettleResponse(
            success=True,
            payer=payment.auth.payer,
            transaction=tx,
            network=requirements.network,
            amount=str(payment.auth.value),
        )

    def _failed(
        self, requirements: PaymentRequirements, reason: str, message: str, payer: str | None
    ) -> SettleResponse:
        return SettleResponse(
            success=False,
            error_reason=reason,
            error_message=message,
            payer=payer,
            transaction="",
            network=requirements.network,
        )
