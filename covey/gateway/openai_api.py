"""The OpenAI-compatible routes: `/v1/models` (free), `/v1/chat/completions`, `/v1/completions` (paid).

Requests and responses follow OpenAI's shapes so the official client works with only `base_url` changed;
`stream: true` answers with server-sent events (`data: {chunk}` ... `data: [DONE]`). A stream's first piece
is generated before the response starts, so a failure still gets a proper status and no charge, and the
payment is verified (and in strict mode settled) before the first byte. Errors are OpenAI error objects
(`{"error": {"message", "type", "param", "code"}}`) with the matching HTTP status.
"""

from __future__ import annotations

import itertools
import json
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

import pydantic
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from covey.bounded_http import BoundedRequests
from covey.bounds import UntrustedInputError, loads_json
from covey.errors import CoveyError
from covey.gateway.backend import GenerationRequest, GenerationStream
from covey.gateway.errors import GatewayError, InvalidRequestError
from covey.gateway.inference import Completion, SamplingParams, render_chat
from covey.gateway.models import ServedModel
from covey.gateway.pricing import Quote, usd
from covey.gateway.service import GatewayService
from covey.gateway.x402.interfaces import VerifiedPayment

MAX_STOP_SEQUENCES = 4
MAX_BODY_BYTES = 1 << 20
"""The largest request body the gateway and hosts read: far above any prompt their models' context can hold."""
HOST_HEADER = "X-Covey-Host"
# Response ids must be unique, not secret: a per-process random prefix and a counter cost no syscall a request.
_ID_PREFIX = secrets.token_hex(8)
_ids = itertools.count(1)

# -- requests -----------------------------------------------------------------------------------------


class _Lenient(BaseModel):
    """OpenAI clients send fields we do not use (`user`, `metadata`...): accept and ignore them."""

    model_config = ConfigDict(extra="ignore")


class StreamOptions(_Lenient):
    include_usage: bool = False


class ContentPart(_Lenient):
    type: Literal["text"]
    text: str


class ChatMessage(_Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class _SamplingRequest(_Lenient):
    model: str = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: str | list[str] | None = None
    # OpenAI's seed is a signed 64-bit integer; anything wider would overflow the sampler's generator (a 500).
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    n: int | None = Field(default=None, ge=1)
    logprobs: bool | int | None = None

    def sampling(self, default_max_tokens: int, limit: int) -> SamplingParams:
        """Validated sampling parameters; `InvalidRequestError` names the offending field."""
        if self.n not in (None, 1):
            raise InvalidRequestError("only n=1 is supported: send one request per choice", param="n")
        if self.logprobs:
            raise InvalidRequestError("logprobs are not supported by this gateway", param="logprobs")
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > MAX_STOP_SEQUENCES:
            raise InvalidRequestError(f"at most {MAX_STOP_SEQUENCES} stop sequences are allowed", param="stop")
        max_tokens = self.requested_max_tokens() or default_max_tokens
        if max_tokens > limit:
            raise InvalidRequestError(
                f"max_tokens is {max_tokens}, but this gateway generates at most {limit} tokens a request",
                param="max_tokens",
            )
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            stop=tuple(stops),
            seed=self.seed,
        )

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(_SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_SamplingRequest):
    prompt: str | list[str]
    echo: bool | None = False
    suffix: str | None = None

    def prompt_text(self) -> str:
        if isinstance(self.prompt, str):
            return self.prompt
        if len(self.prompt) != 1:
            raise InvalidRequestError("send one prompt per request (batches are not supported)", param="prompt")
        return self.prompt[0]


# -- response shapes ----------------------------------------------------------------------------------


class _Shape:
    """How one endpoint dresses a completion: a whole response, or stream chunks."""

    object_name: str
    chunk_name: str
    id_prefix: str

    def __init__(self, model_id: str, echo: str = "") -> None:
        self.model_id = model_id
        self.echo = echo
        self.id = f"{self.id_prefix}-{_ID_PREFIX}{next(_ids):08x}"
        self.created = int(time.time())

    def envelope(self, object_name: str, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": object_name,
            "created": self.created,
            "model": self.model_id,
            "choices": choices,
            **extra,
        }

    def full(self, completion: Completion) -> dict[str, Any]:
        choice = self.choice(self.echo + completion.text, completion.finish_reason)
        return self.envelope(self.object_name, [choice], usage=usage(completion))

    def usage_chunk(self, completion: Completion) -> dict[str, Any]:
        return self.envelope(self.chunk_name, [], usage=usage(completion))

    def choice(self, text: str, finish_reason: str) -> dict[str, Any]:
        raise NotImplementedError

    def opening(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def delta(self, text: str) -> dict[str, Any]:
        raise NotImplementedError

    def finish(self, finish_reason: str) -> dict[str, Any]:
        raise NotImplementedError


class ChatShape(_Shape):
    object_name = "chat.completion"
    chunk_name = "chat.completion.chunk"
    id_prefix = "chatcmpl"

    def choice(self, text: str, finish_reason: str) -> dict[str, Any]:
        message = {"role": "assistant", "content": text, "refusal": None}
        return {"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}

    def opening(self) -> list[dict[str, Any]]:
        delta = {"role": "assistant", "content": ""}
        return [self.envelope(self.chunk_name, [{"index": 0, "delta": delta, "finish_reason": None}])]

    def delta(self, text: str) -> dict[str, Any]:
        return self.envelope(self.chunk_name, [{"index": 0, "delta": {"content": text}, "finish_reason": None}])

    def finish(self, finish_reason: str) -> dict[str, Any]:
        return self.envelope(self.chunk_name, [{"index": 0, "delta": {}, "finish_reason": finish_reason}])


class CompletionShape(_Shape):
    object_name = "text_completion"
    chunk_name = "text_completion"
    id_prefix = "cmpl"

    def choice(self, text: str, finish_reason: str) -> dict[str, Any]:
        return {"index": 0, "text": text, "finish_reason": finish_reason, "logprobs": None}

    def opening(self) -> list[dict[str, Any]]:
        return [self.delta(self.echo)] if self.echo else []

    def delta(self, text: str) -> dict[str, Any]:
        return self.envelope(self.chunk_name, [{"index": 0, "text": text, "finish_reason": None, "logprobs": None}])

    def finish(self, finish_reason: str) -> dict[str, Any]:
        choice = {"index": 0, "text": "", "finish_reason": finish_reason, "logprobs": None}
        return self.envelope(self.chunk_name, [choice])


def usage(completion: Completion) -> dict[str, int]:
    return {
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.completion_tokens,
        "total_tokens": completion.prompt_tokens + completion.completion_tokens,
    }


def sse(data: dict[str, Any] | str) -> bytes:
    """One server-sent event carrying `data` (JSON, or the literal `[DONE]`)."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {text}\n\n".encode()


# -- errors -------------------------------------------------------------------------------------------


def error_body(message: str, error_type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def error_response(exc: CoveyError) -> JSONResponse:
    """An OpenAI error object for any Covey error, with its HTTP status."""
    if isinstance(exc, GatewayError):
        body = error_body(str(exc), exc.openai_type, exc.param, exc.code)
    else:
        kind = "invalid_request_error" if exc.http_status < 500 else "server_error"
        body = error_body(str(exc), kind)
    return JSONResponse(body, status_code=exc.http_status)


_STATUS_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error", 429: "rate_limit_error"}
_BOUND_CODES = {413: "request_too_large", 414: "uri_too_long", 431: "headers_too_large"}


def bounds_error_body(error: UntrustedInputError) -> dict[str, Any]:
    """An OpenAI error object for a request refused before parsing (too large, too deeply nested)."""
    return error_body(str(error), "invalid_request_error", None, _BOUND_CODES.get(error.http_status, "invalid_json"))


def install_request_bounds(app: FastAPI, *, max_body_bytes: int = MAX_BODY_BYTES) -> None:
    """Refuse oversized or deeply nested requests with an OpenAI error object before any route parses them."""
    app.add_middleware(BoundedRequests, max_body_bytes=max_body_bytes, render=bounds_error_body)  # type: ignore[arg-type]


def install_error_handlers(app: FastAPI) -> None:
    """Answer every failure, ours or the framework's, with an OpenAI error object."""

    @app.exception_handler(CoveyError)
    async def covey_error(_request: Request, exc: CoveyError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        param = ".".join(str(part) for part in first.get("loc", ())[1:]) or None
        return JSONResponse(error_body(str(first.get("msg")), "invalid_request_error", param), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = _STATUS_TYPES.get(exc.status_code, "invalid_request_error" if exc.status_code < 500 else "server_error")
        return JSONResponse(error_body(str(exc.detail), kind), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        message = f"The gateway failed to answer: {type(exc).__name__}"
        return JSONResponse(error_body(message, "server_error"), status_code=500)


async def parse_body(request: Request, model: type[_SamplingRequest]) -> Any:
    """The request body as `model`; `InvalidRequestError` naming the first bad field."""
    try:
        raw = loads_json(await request.body(), max_bytes=MAX_BODY_BYTES, what="request body")
    except UntrustedInputError as exc:
        if exc.http_status != 400:
            raise  # too large: its own status
        raise InvalidRequestError(f"We could not parse the JSON body of your request: {exc}") from exc
    if not isinstance(raw, dict):
        raise InvalidRequestError("The request body must be a JSON object.")
    try:
        return model.model_validate(raw)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(part) for part in first["loc"]) or None
        raise InvalidRequestError(f"Invalid value for '{param}': {first['msg']}", param=param) from exc


# -- routes -------------------------------------------------------------------------------------------


def model_object(service: GatewayService, model: ServedModel) -> dict[str, Any]:
    """An OpenAI model object with Covey's pricing and provenance (extra keys the client keeps)."""
    pricing: dict[str, Any] = {"available": False, "subsidy_bps": service.subsidy_bps}
    try:
        price = service.quote(model.model_id, service.default_max_tokens)
    except GatewayError:
        price = None
    if price is not None:
        pricing = _pricing(price)
    return {
        "id": model.model_id,
        "object": "model",
        "created": model.created,
        "owned_by": model.trainer,
        "covey": {
            "source": "arena",
            "task_id": model.task_id,
            "kind": model.kind,
            "family": model.spec.family,
            "dataset": model.spec.dataset,
            "weights_sha256": model.weights_digest,
            "consensus_score": model.consensus_score / 10**6,
            "pricing": pricing,
        },
    }


def _pricing(price: Quote) -> dict[str, Any]:
    return {
        "available": True,
        "currency": "USD",
        "host_price_per_1k_tokens": usd(price.host_price_per_1k_atomic),
        "subsidy_bps": price.subsidy_bps,
        "price_per_1k_tokens": usd(price.host_price_per_1k_atomic) * (1 - price.subsidy_bps / 10_000),
        "default_max_tokens": price.max_tokens,
        "price_per_request_at_default_max_tokens": usd(price.price_atomic),
        "price_per_request_atomic_at_default_max_tokens": price.price_atomic,
    }


def create_openai_router(service: GatewayService) -> APIRouter:
    """The `/v1` routes over `service`."""
    router = APIRouter()

    @router.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [model_object(service, model) for model in service.catalog.models()]}

    @router.get("/v1/models/{model_id}")
    async def get_model(model_id: str) -> dict[str, Any]:
        return model_object(service, await service.model(model_id))

    @router.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        body: ChatCompletionRequest = await parse_body(request, ChatCompletionRequest)
        model = await service.model(body.model)
        messages = [(message.role, message.text()) for message in body.messages]
        prompt = render_chat(messages, model.kind)
        return await _answer(service, request, body, prompt, ChatShape(model.model_id))

    @router.post("/v1/completions")
    async def completions(request: Request) -> Response:
        body: CompletionRequest = await parse_body(request, CompletionRequest)
        if body.suffix:
            raise InvalidRequestError("suffix (insertion) is not supported", param="suffix")
        model = await service.model(body.model)
        prompt = body.prompt_text()
        return await _answer(
            service, request, body, prompt, CompletionShape(model.model_id, prompt if body.echo else "")
        )

    return router


async def _answer(
    service: GatewayService, request: Request, body: _SamplingRequest, prompt: str, shape: _Shape
) -> Response:
    params = body.sampling(service.default_max_tokens, service.max_tokens_limit)
    generation = GenerationRequest(shape.model_id, prompt, params)
    price = service.quote(shape.model_id, params.max_tokens)

    async def handler(payment: VerifiedPayment | None) -> Response:
        try:
            if body.stream:
                return await _stream(service, generation, shape, body.include_usage, payment)
            generated = await service.backend.complete(generation)
        except CoveyError as exc:
            return error_response(exc)  # an error status: the paywall charges nothing
        completion = generated.completion
        service.metrics.count_tokens(shape.model_id, completion.prompt_tokens, completion.completion_tokens)
        service.served(payment, generated.host)
        return JSONResponse(shape.full(completion), headers=_host_header(generated.host))

    return await service.charge(request, price, shape.model_id, handler)


async def _stream(
    service: GatewayService,
    generation: GenerationRequest,
    shape: _Shape,
    include_usage: bool,
    payment: VerifiedPayment | None,
) -> Response:
    stream = await service.backend.stream(generation)
    try:
        first: str | None = await stream.__anext__()
    except StopAsyncIteration:
        first = None
    service.served(payment, stream.host, streaming=True)
    return StreamingResponse(
        _events(service, stream, shape, first, include_usage, payment),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **_host_header(stream.host)},
    )


async def _events(
    service: GatewayService,
    stream: GenerationStream,
    shape: _Shape,
    first: str | None,
    include_usage: bool,
    payment: VerifiedPayment | None,
) -> AsyncIterator[bytes]:
    for chunk in shape.opening():
        yield sse(chunk)
    if first:
        yield sse(shape.delta(first))
    try:
        async for piece in stream:
            yield sse(shape.delta(piece))
    except CoveyError as exc:
        # The status line is long gone: the failure travels as an error event, as OpenAI's own streams do.
        yield sse(error_body(str(exc), getattr(exc, "openai_type", "server_error"), None, getattr(exc, "code", None)))
        return
    finally:
        await stream.aclose()
        # The host that finished the answer (another one if its first host died) earns the payment.
        service.stream_ended(payment, stream.host)
    completion = stream.completion
    if completion is None:
        return
    service.metrics.count_tokens(shape.model_id, completion.prompt_tokens, completion.completion_tokens)
    yield sse(shape.finish(completion.finish_reason))
    if include_usage:
        yield sse(shape.usage_chunk(completion))
    yield sse("[DONE]")


def _host_header(host: str | None) -> dict[str, str]:
    return {HOST_HEADER: host} if host else {}
