"""Charging for a FastAPI route with x402: 402 with requirements, verify, serve, settle, `PAYMENT-RESPONSE`.

    paywall = Paywall(server, facilitator, settlement)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await paywall.serve(request, price_atomic, lambda payment: answer(request, payment))

A payment is spent at most once per authorisation: a retry of the same request with the same payment gets
the first answer again (replayed, not recomputed, not charged again), and the same payment sent twice
concurrently is served and settled once, the second copy waiting for the first.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from starlette.responses import StreamingResponse

from covey.gateway.x402.encoding import (
    PAYMENT_REQUIRED_HEADER,
    PAYMENT_RESPONSE_HEADER,
    PAYMENT_SIGNATURE_HEADER,
    decode_payment_payload,
    encode_header,
)
from covey.gateway.x402.errors import MalformedPaymentError, Reason, X402Error
from covey.gateway.x402.interfaces import FacilitatorClient, PaymentFacts, SchemeServer, Settlement, VerifiedPayment
from covey.gateway.x402.types import PaymentPayload, PaymentRequired, PaymentRequirements, ResourceInfo

Handler = Callable[[VerifiedPayment], Awaitable[Response]]

REPLAY_CACHE_SIZE = 1024
MAX_REPLAY_BODY_BYTES = 1 << 20
REPLAY_CACHE_BYTES = 64 << 20
EXPOSED_HEADERS = f"{PAYMENT_REQUIRED_HEADER}, {PAYMENT_RESPONSE_HEADER}"


@dataclass(frozen=True)
class _Answer:
    """A paid answer kept for replay to a retry of the same request with the same payment."""

    fingerprint: str
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


class Paywall:
    """Guards routes behind x402 payments, verified by `facilitator` and settled by `settlement`.

    The app owns the settlement's lifetime: `await settlement.start()` and `await settlement.close()` in its
    lifespan (batched settlement recovers its journal on start and drains it on close).
    """

    def __init__(
        self,
        servers: SchemeServer | Sequence[SchemeServer],
        facilitator: FacilitatorClient,
        settlement: Settlement,
        *,
        replay_cache_size: int = REPLAY_CACHE_SIZE,
    ) -> None:
        self.servers = [servers] if not isinstance(servers, Sequence) else list(servers)
        if not self.servers:
            raise ValueError("a paywall needs at least one scheme server to price its routes")
        self.facilitator = facilitator
        self.settlement = settlement
        self.replay_cache_size = replay_cache_size
        self._answers: OrderedDict[str, _Answer] = OrderedDict()
        self._answer_bytes = 0
        self._in_flight: dict[str, asyncio.Future[None]] = {}

    async def serve(
        self,
        request: Request,
        amount_atomic: int,
        handler: Handler,
        *,
        description: str | None = None,
        mime_type: str | None = None,
    ) -> Response:
        """Answer `request` with `handler`'s response if it carries a valid payment of `amount_atomic`.

        No payment: 402 with `PAYMENT-REQUIRED` (and the same object as the JSON body). Undecodable payment:
        400. Invalid payment: 402 with `error` set to the reason code. A handler answer of 400 or more is
        returned unpaid; otherwise the payment is settled and the answer carries `PAYMENT-RESPONSE`.
        """
        accepts = [server.requirements(amount_atomic) for server in self.servers]
        resource = ResourceInfo(url=str(request.url), description=description, mime_type=mime_type)
        header = request.headers.get(PAYMENT_SIGNATURE_HEADER)
        if not header:
            return self.payment_required(resource, accepts, f"{PAYMENT_SIGNATURE_HEADER} header is required")
        try:
            payload = decode_payment_payload(header)
            requirements, server = self._select(accepts, payload)
            facts = server.check_payload(payload.payload)
        except MalformedPaymentError as exc:
            return self.payment_required(resource, accepts, str(exc), status_code=400)

        fingerprint = await _fingerprint(request, header)
        while True:
            answer = self._answers.get(facts.key)
            if answer is not None:
                if answer.fingerprint == fingerprint:
                    return _replay(answer)
                return self.payment_required(resource, accepts, Reason.NONCE_ALREADY_USED)
            running = self._in_flight.get(facts.key)
            if running is None:
                break
            await asyncio.shield(running)  # the same payment is being served: wait for its answer, then replay

        # No await between the checks above and this line: the event loop makes the claim atomic.
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._in_flight[facts.key] = done
        try:
            return await self._charge(request, payload, requirements, facts, fingerprint, handler, resource, accepts)
        except X402Error as exc:
            return JSONResponse({"error": str(exc)}, status_code=exc.http_status)
        finally:
            del self._in_flight[facts.key]
            done.set_result(None)

    def payment_required(
        self, resource: ResourceInfo, accepts: list[PaymentRequirements], error: str, *, status_code: int = 402
    ) -> Response:
        """The x402 answer asking for payment: header and JSON body carry the same `PaymentRequired`."""
        message = PaymentRequired(error=str(error), resource=resource, accepts=accepts)
        return JSONResponse(
            message.to_wire(),
            status_code=status_code,
            headers={
                PAYMENT_REQUIRED_HEADER: encode_header(message),
                "Cache-Control": "no-store",
                "Access-Control-Expose-Headers": EXPOSED_HEADERS,
            },
        )

    async def _charge(
        self,
        request: Request,
        payload: PaymentPayload,
        requirements: PaymentRequirements,
        facts: PaymentFacts,
        fingerprint: str,
        handler: Handler,
        resource: ResourceInfo,
        accepts: list[PaymentRequirements],
    ) -> Response:
        left_s = facts.expires_at - int(time.time())
        if left_s < self.settlement.min_validity_s:
            # Settlement must land before the authorisation expires; refuse rather than serve for free.
            return self.payment_required(resource, accepts, Reason.VALID_BEFORE)
        verdict = await self.facilitator.verify(payload, requirements)
        if not verdict.is_valid:
            return self.payment_required(resource, accepts, verdict.invalid_reason or Reason.UNEXPECTED_VERIFY_ERROR)
        payment = VerifiedPayment(payload, requirements, verdict.payer or facts.payer, facts.key, facts.expires_at)
        # The facilitator judged the payment alone; the settlement knows what was already spent (batched: also
        # in earlier runs), and a spent payment must be refused before it is served, not after.
        refused = await self.settlement.check(payment)
        if refused is not None:
            return self.payment_required(resource, accepts, refused)
        response = await handler(payment)
        if response.status_code >= 400:
            return response  # the resource failed: nothing is charged
        result = await self.settlement.settle(payment)
        if not result.success:
            failed = self.payment_required(resource, accepts, result.error_reason or Reason.UNEXPECTED_SETTLE_ERROR)
            failed.headers[PAYMENT_RESPONSE_HEADER] = encode_header(result)
            return failed
        response.headers[PAYMENT_RESPONSE_HEADER] = encode_header(result)
        response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
        response.headers.setdefault("Cache-Control", "private")
        self._remember(facts.key, fingerprint, response)
        return response

    def _select(
        self, accepts: list[PaymentRequirements], payload: PaymentPayload
    ) -> tuple[PaymentRequirements, SchemeServer]:
        """The requirements the payment claims to answer; a near miss still goes to the facilitator, which
        names the mismatching field (amount, asset, payee, network) in its reason."""
        pairs = list(zip(accepts, self.servers, strict=True))
        chosen = payload.accepted
        for exact in (True, False):
            for requirements, server in pairs:
                if exact and requirements == chosen:
                    return requirements, server
                if not exact and (requirements.scheme, requirements.network) == (chosen.scheme, chosen.network):
                    return requirements, server
        return pairs[0]

    def _remember(self, key: str, fingerprint: str, response: Response) -> None:
        if isinstance(response, StreamingResponse) or len(response.body) > MAX_REPLAY_BODY_BYTES:
            return  # a stream cannot be replayed; its retry is refused as a used nonce instead
        answer = _Answer(fingerprint, response.status_code, list(response.raw_headers), bytes(response.body))
        self._answers[key] = answer
        self._answer_bytes += len(answer.body)
        while len(self._answers) > self.replay_cache_size or self._answer_bytes > REPLAY_CACHE_BYTES:
            _key, evicted = self._answers.popitem(last=False)
            self._answer_bytes -= len(evicted.body)


async def _fingerprint(request: Request, payment_header: str) -> str:
    """What makes two requests "the same request": the very same payment, method, path, query and body."""
    digest = hashlib.sha256()
    digest.update(payment_header.encode() + b"\0" + request.method.encode())
    digest.update(b"\0" + request.url.path.encode() + b"\0" + request.url.query.encode() + b"\0")
    digest.update(await request.body())
    return digest.hexdigest()


def _replay(answer: _Answer) -> Response:
    response = Response(content=answer.body, status_code=answer.status)
    response.raw_headers = list(answer.headers)
    return response
