"""Two ways to reach a facilitator, both a `FacilitatorClient`: in this process (thread pool) or over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import httpx
from pydantic import ValidationError

from covey.bounds import UntrustedInputError, loads_json
from covey.gateway.x402.errors import FacilitatorUnavailableError
from covey.gateway.x402.interfaces import Facilitator
from covey.gateway.x402.types import (
    PaymentPayload,
    PaymentRequirements,
    SettleRequest,
    SettleResponse,
    SupportedResponse,
    VerifyRequest,
    VerifyResponse,
    X402Model,
)

DEFAULT_TIMEOUT_S = 30.0
# Settlement waits for a receipt; on a real chain that can take a while.
DEFAULT_SETTLE_TIMEOUT_S = 130.0
# A facilitator's answer is a few hundred bytes; a remote one is a stranger whose bytes are bounded like any.
MAX_REPLY_BYTES = 64 * 1024
ResultT = TypeVar("ResultT")
ModelT = TypeVar("ModelT", bound=X402Model)


class LocalFacilitatorClient:
    """Runs an in-process facilitator's blocking chain calls on worker threads, never on the event loop."""

    def __init__(self, facilitator: Facilitator, *, executor: ThreadPoolExecutor | None = None, max_workers: int = 8):
        self.facilitator = facilitator
        self._own_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="x402-facilitator")

    async def verify(self, payload: PaymentPayload, requirements: PaymentRequirements) -> VerifyResponse:
        return await self._run(self.facilitator.verify, payload, requirements)

    async def settle(self, payload: PaymentPayload, requirements: PaymentRequirements) -> SettleResponse:
        return await self._run(self.facilitator.settle, payload, requirements)

    async def supported(self) -> SupportedResponse:
        return await self._run(self.facilitator.supported)

    async def _run(self, fn: Callable[..., ResultT], *args: Any) -> ResultT:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def close(self) -> None:
        """Stop the worker threads this client started (not an executor it was given)."""
        if self._own_executor:
            self._executor.shutdown(wait=True)


class HttpFacilitatorClient:
    """A remote facilitator at `url` (its `/verify`, `/settle`, `/supported`), with timeouts on every call."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        settle_timeout_s: float = DEFAULT_SETTLE_TIMEOUT_S,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.settle_timeout_s = settle_timeout_s
        self._http = httpx.AsyncClient(timeout=timeout_s, headers=headers)

    async def verify(self, payload: PaymentPayload, requirements: PaymentRequirements) -> VerifyResponse:
        body = VerifyRequest(payment_payload=payload, payment_requirements=requirements)
        return await self._post("/verify", body, VerifyResponse)

    async def settle(self, payload: PaymentPayload, requirements: PaymentRequirements) -> SettleResponse:
        body = SettleRequest(payment_payload=payload, payment_requirements=requirements)
        return await self._post("/settle", body, SettleResponse, timeout_s=self.settle_timeout_s)

    async def supported(self) -> SupportedResponse:
        try:
            reply = await self._http.get(f"{self.url}/supported")
        except httpx.HTTPError as exc:
            raise FacilitatorUnavailableError(f"facilitator {self.url} unreachable: {exc}") from exc
        return _parse(reply, SupportedResponse, self.url)

    async def _post(self, path: str, body: X402Model, model: type[ModelT], *, timeout_s: float | None = None) -> ModelT:
        try:
            reply = await self._http.post(
                f"{self.url}{path}",
                json=body.to_wire(),
                timeout=timeout_s if timeout_s is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.HTTPError as exc:
            raise FacilitatorUnavailableError(f"facilitator {self.url}{path} unreachable: {exc}") from exc
        return _parse(reply, model, f"{self.url}{path}")

    async def aclose(self) -> None:
        await self._http.aclose()


def _parse(reply: httpx.Response, model: type[ModelT], where: str) -> ModelT:
    # The spec answers invalid payments with 200 and a reason; any other status is the facilitator failing.
    if reply.status_code != 200:
        raise FacilitatorUnavailableError(f"facilitator {where} answered HTTP {reply.status_code}: {reply.text[:200]}")
    try:
        return model.model_validate(loads_json(reply.content, max_bytes=MAX_REPLY_BYTES, what="the answer"))
    except (UntrustedInputError, ValidationError) as exc:
        raise FacilitatorUnavailableError(f"facilitator {where} answered outside the x402 schema: {exc}") from exc
