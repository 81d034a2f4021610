"""The facilitator as an HTTP service: `POST /verify`, `POST /settle`, `GET /supported`, as x402 v2 specifies."""

from __future__ import annotations

import inspect
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from covey.bounded_http import BoundedRequests
from covey.bounds import UntrustedInputError, check_recursion_limit, loads_json
from covey.gateway.x402.errors import Reason
from covey.gateway.x402.facilitator_client import LocalFacilitatorClient
from covey.gateway.x402.interfaces import Facilitator, FacilitatorClient
from covey.gateway.x402.types import (
    X402_VERSION,
    PaymentPayload,
    PaymentRequirements,
    SettleResponse,
    VerifyResponse,
)

MAX_BODY_BYTES = 64 * 1024
"""A `/verify` or `/settle` body is a payment and its requirements: ~2 KB; anything far larger is abuse."""


class _BadRequest(Exception):
    """The body is well-formed JSON but not a payment we can judge; answered 200 with a reason."""

    def __init__(self, reason: Reason, message: str, network: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.network = network


def create_facilitator_app(facilitator: Facilitator | FacilitatorClient) -> FastAPI:
    """A FastAPI app serving `facilitator`; a blocking in-process one runs on worker threads.

    Invalid payments answer HTTP 200 with `isValid: false` / `success: false` and the spec's reason code;
    only a body that is not a JSON object answers 400 (413 when it is too large).
    """
    check_recursion_limit()
    # Both protocols have the same method names; only the async one is already safe on the event loop.
    client: FacilitatorClient = (
        facilitator  # type: ignore[assignment]
        if inspect.iscoroutinefunction(facilitator.verify)
        else LocalFacilitatorClient(facilitator)  # type: ignore[arg-type]
    )
    app = FastAPI(title="Covey x402 facilitator", docs_url=None, redoc_url=None)
    app.add_middleware(BoundedRequests, max_body_bytes=MAX_BODY_BYTES)  # type: ignore[arg-type]

    @app.post("/verify")
    async def verify(request: Request) -> JSONResponse:
        body = await _json_object(request)
        if body is None:
            return JSONResponse({"error": "the body must be a JSON object"}, status_code=400)
        try:
            payload, requirements = _parse_request(body)
        except _BadRequest as bad:
            return _answer(VerifyResponse(is_valid=False, invalid_reason=bad.reason, invalid_message=str(bad)))
        return _answer(await client.verify(payload, requirements))

    @app.post("/settle")
    async def settle(request: Request) -> JSONResponse:
        body = await _json_object(request)
        if body is None:
            return JSONResponse({"error": "the body must be a JSON object"}, status_code=400)
        try:
            payload, requirements = _parse_request(body)
        except _BadRequest as bad:
            failed = SettleResponse(
                success=False, error_reason=bad.reason, error_message=str(bad), transaction="", network=bad.network
            )
            return _answer(failed)
        return _answer(await client.settle(payload, requirements))

    @app.get("/supported")
    async def supported() -> JSONResponse:
        return _answer(await client.supported())

    return app


async def _json_object(request: Request) -> dict[str, Any] | None:
    try:
        body = loads_json(await request.body(), max_bytes=MAX_BODY_BYTES)
    except UntrustedInputError:
        return None
    return body if isinstance(body, dict) else None


def _parse_request(body: dict[str, Any]) -> tuple[PaymentPayload, PaymentRequirements]:
    """Split a `/verify` or `/settle` body, naming which part is wrong with the spec's codes."""
    raw_requirements = body.get("paymentRequirements")
    network = raw_requirements.get("network", "") if isinstance(raw_requirements, dict) else ""
    network = network if isinstance(network, str) else ""
    if body.get("x402Version") != X402_VERSION:
        raise _BadRequest(Reason.INVALID_X402_VERSION, f"x402Version must be {X402_VERSION}", network)
    try:
        requirements = PaymentRequirements.model_validate(raw_requirements)
    except ValidationError as exc:
        raise _BadRequest(Reason.INVALID_PAYMENT_REQUIREMENTS, _first_error(exc), network) from exc
    try:
        payload = PaymentPayload.model_validate(body.get("paymentPayload"))
    except ValidationError as exc:
        raise _BadRequest(Reason.INVALID_PAYLOAD, _first_error(exc), network) from exc
    return payload, requirements


def _first_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    return f"{'.'.join(str(part) for part in first['loc']) or '(root)'}: {first['msg']}"


def _answer(message: VerifyResponse | SettleResponse | Any) -> JSONResponse:
    return JSONResponse(message.to_wire())
