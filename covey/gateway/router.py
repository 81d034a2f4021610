"""`HostRouter`: a `Backend` that sends each request to the cheapest healthy host serving its model.

Hosts come from the HostRegistry (live: recent heartbeat, enough stake) and are probed on `/health`; a host
that fails `failure_threshold` probes in a row, or fails a request, is not routed to until a probe passes.
A request whose host fails (unreachable, timed out, error status, broken stream) moves to the next host:
a whole answer is asked again, a stream continues where it broke (the next host extends the prompt plus
the text already sent, within what is left of `max_tokens`). Requests are signed with the gateway's key,
which the hosts check against the registry; a sampled share is replayed by the `SpotChecker`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
from eth_account.signers.local import LocalAccount

from covey.bounds import UntrustedInputError, loads_json
from covey.gateway.backend import Generated, GenerationRequest, GenerationStream
from covey.gateway.errors import HostError, InvalidRequestError, NoHostAvailableError
from covey.gateway.inference import Completion, SamplingParams, count_tokens
from covey.gateway.metrics import GatewayMetrics
from covey.gateway.models import ModelCatalog
from covey.gateway.registry import HostInfo, HostRegistryClient
from covey.gateway.signing import request_hash, sign_request

log = logging.getLogger(__name__)

DEFAULT_HEALTH_INTERVAL_S = 2.0
DEFAULT_REFRESH_INTERVAL_S = 5.0
DEFAULT_FAILURE_THRESHOLD = 2
HEALTH_TIMEOUT_S = 2.0
CONNECT_TIMEOUT_S = 2.0
READ_TIMEOUT_S = 60.0
# A host's answer (or one stream event) is parsed only below this size: an answer of MAX_TOKENS_LIMIT tokens is
# a few KB, and a host is a stranger whose bytes are bounded like any request's.
MAX_ANSWER_BYTES = 1 << 20
# What a malformed host answer can raise while being read: each becomes a `HostError`, never a 500.
_MALFORMED = (ValueError, KeyError, IndexError, TypeError, AttributeError, UntrustedInputError)


@dataclass
class HostState:
    """What the router knows of one host: its registration, health and record."""

    info: HostInfo
    healthy: bool = False
    """Routable only after a health probe passed; a new host waits for its first probe."""
    failures: int = 0
    banned: str | None = None
    served: int = 0
    latency_s: float = 0.0

    @property
    def address(self) -> str:
        return self.info.address

    @property
    def routable(self) -> bool:
        return self.healthy and self.banned is None


@dataclass(frozen=True)
class HostAnswer:
    """A host's whole answer, with the signed proof of what it answered to which request."""

    completion: Completion
    request_hash: bytes
    proof: dict[str, str] = field(default_factory=dict)


SpotCheck = Callable[[HostState, GenerationRequest], None]


class HostRouter:
    """Routes generation to staked hosts by price and health, failing over when one dies."""

    def __init__(
        self,
        registry: HostRegistryClient,
        catalog: ModelCatalog,
        account: LocalAccount,
        metrics: GatewayMetrics,
        *,
        health_interval_s: float = DEFAULT_HEALTH_INTERVAL_S,
        refresh_interval_s: float = DEFAULT_REFRESH_INTERVAL_S,
        failure_threshold: int = DEFAULT_FAILURE_THRESHOLD,
        read_timeout_s: float = READ_TIMEOUT_S,
    ) -> None:
        self.registry = registry
        self.catalog = catalog
        self.account = account
        self.metrics = metrics
        self.health_interval_s = health_interval_s
        self.refresh_interval_s = refresh_interval_s
        self.failure_threshold = failure_threshold
        self.read_timeout_s = read_timeout_s
        self.spot_check: SpotCheck | None = None
        self.before_close: list[Callable[[], Awaitable[None]]] = []
        """Run first when the router closes, while hosts can still be reached (spot checks under way)."""
        self._hosts: dict[str, HostState] = {}
        self._banned: dict[str, str] = {}
        self._http: httpx.AsyncClient | None = None
        self._loops: list[asyncio.Task[None]] = []

    # -- lifecycle ------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(self.read_timeout_s, connect=CONNECT_TIMEOUT_S),
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
        )
        await self.refresh()
        self._loops = [
            asyncio.create_task(self._every(self.refresh_interval_s, self.refresh), name="covey-router-refresh"),
            asyncio.create_task(self._every(self.health_interval_s, self.check_health), name="covey-router-health"),
        ]

    async def close(self) -> None:
        for hook in self.before_close:
            await hook()
        for task in self._loops:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
        if self._http is not None:
            await self._http.aclose()

    async def _every(self, interval_s: float, action: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await action()
            except Exception as exc:  # the chain or the network hiccuped: keep routing on what we know
                log.warning("router: %s failed: %s", getattr(action, "__name__", action), exc)

    # -- hosts ----------------------------------------------------------------------------------------

    async def refresh(self) -> None:
        """Re-read live hosts from the registry; probe the new ones at once."""
        live = {info.address: info for info in await asyncio.to_thread(self.registry.live_hosts)}
        for address in list(self._hosts):
            if address not in live:
                self._forget(self._hosts.pop(address))
        fresh = []
        for address, info in live.items():
            state = self._hosts.get(address)
            if state is None:
                state = self._hosts[address] = HostState(info, banned=self._banned.get(address))
                fresh.append(state)
            else:
                state.info = info
        await asyncio.gather(*(self._probe(state) for state in fresh))

    async def check_health(self) -> None:
        """Probe every known host's `/health` once."""
        await asyncio.gather(*(self._probe(state) for state in list(self._hosts.values())))

    async def _probe(self, state: HostState) -> None:
        assert self._http is not None
        started = time.perf_counter()
        try:
            reply = await self._http.get(f"{state.info.endpoint}/health", timeout=HEALTH_TIMEOUT_S)
            ok = reply.status_code == 200
        except httpx.HTTPError:
            ok = False
        if ok:
            state.failures = 0
            state.healthy = True
            state.latency_s = time.perf_counter() - started
        else:
            state.failures += 1
            if state.failures >= self.failure_threshold:
                state.healthy = False
        self._gauge(state)

    def _failed(self, state: HostState, reason: Exception) -> None:
        """A request failed on `state`: stop routing to it until a health probe passes again."""
        log.warning("router: host %s failed a request: %s", state.address, reason)
        state.failures = max(state.failures + 1, self.failure_threshold)
        state.healthy = False
        self._gauge(state)

    def ban(self, address: str, reason: str) -> None:
        """Never route to `address` again (it served a different model)."""
        self._banned[address] = reason
        state = self._hosts.get(address)
        if state is not None:
            state.banned = reason
            self._gauge(state)

    def _gauge(self, state: HostState) -> None:
        self.metrics.host_healthy.labels(state.address, state.info.model_id).set(1 if state.routable else 0)

    def _forget(self, state: HostState) -> None:
        self.metrics.host_healthy.labels(state.address, state.info.model_id).set(0)

    def candidates(self, model_id: str) -> list[HostState]:
        """Routable hosts of `model_id`, cheapest first (then fewest recent failures, then fastest)."""
        hosts = [s for s in self._hosts.values() if s.info.model_id == model_id and s.routable]
        return sorted(hosts, key=lambda s: (s.info.price_per_1k_atomic, s.failures, s.latency_s))

    def host_price_per_1k(self, model_id: str) -> int:
        self.catalog.get(model_id)
        hosts = self.candidates(model_id)
        if not hosts:
            raise NoHostAvailableError(f"no healthy host serves {model_id} right now; try again shortly")
        return hosts[0].info.price_per_1k_atomic

    def status(self) -> list[dict[str, Any]]:
        """Every known host with its health, for `/health` and people."""
        return [
            {
                "host": s.address,
                "model": s.info.model_id,
                "endpoint": s.info.endpoint,
                "price_per_1k_atomic": s.info.price_per_1k_atomic,
                "healthy": s.healthy,
                "banned": s.banned,
                "failures": s.failures,
                "served": s.served,
            }
            for s in self._hosts.values()
        ]

    # -- calling a host -------------------------------------------------------------------------------

    def _request(self, request: GenerationRequest, *, stream: bool) -> tuple[bytes, dict[str, str]]:
        params = request.params
        body = json.dumps(
            {
                "model": request.model_id,
                "prompt": request.prompt,
                "max_tokens": params.max_tokens,
                "temperature": params.temperature,
                "top_p": params.top_p,
                "stop": list(params.stop),
                "seed": params.seed,
                "stream": stream,
            },
            separators=(",", ":"),
        ).encode()
        headers = {"Content-Type": "application/json", **sign_request(self.account, body, int(time.time()))}
        return body, headers

    async def call(self, state: HostState, request: GenerationRequest) -> HostAnswer:
        """Ask `state` for a whole answer; `HostError` when the host fails, `InvalidRequestError` if it refuses."""
        assert self._http is not None
        body, headers = self._request(request, stream=False)
        try:
            reply = await self._http.post(f"{state.info.endpoint}/v1/completions", content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise HostError(f"host {state.address} failed: {type(exc).__name__}: {exc}") from exc
        _raise_for_host(state, reply.status_code, reply.content)
        try:
            data = loads_json(reply.content, max_bytes=MAX_ANSWER_BYTES, what="the answer")
            choice = data["choices"][0]
            usage = data["usage"]
            completion = Completion(
                str(choice["text"]),
                int(usage["prompt_tokens"]),
                int(usage["completion_tokens"]),
                choice["finish_reason"],
            )
            signed = dict(data.get("covey") or {})
        except _MALFORMED as exc:
            raise HostError(f"host {state.address} answered outside the completions shape: {exc}") from exc
        return HostAnswer(completion, request_hash(body), signed)

    async def complete(self, request: GenerationRequest) -> Generated:
        for state in self.candidates(request.model_id):
            try:
                answer = await self.call(state, request)
            except HostError as exc:
                self._failed(state, exc)
                self.metrics.failovers.labels(request.model_id).inc()
                continue
            state.served += 1
            if self.spot_check is not None:
                self.spot_check(state, request)
            return Generated(answer.completion, state.address)
        raise NoHostAvailableError(f"no host could serve {request.model_id} right now; try again shortly")

    async def stream(self, request: GenerationRequest) -> GenerationStream:
        async def produce(stream: GenerationStream) -> AsyncGenerator[str, None]:
            sent = ""
            spent_tokens = 0
            tried: set[str] = set()
            while True:
                hosts = [s for s in self.candidates(request.model_id) if s.address not in tried]
                if not hosts:
                    raise NoHostAvailableError(f"no host could serve {request.model_id} right now; try again shortly")
                state = hosts[0]
                tried.add(state.address)
                left = request.params.max_tokens - spent_tokens
                if left <= 0:
                    stream.completion = Completion(sent, count_tokens(request.prompt), spent_tokens, "length")
                    return
                part = GenerationRequest(
                    request.model_id,
                    request.prompt + sent,
                    _with_max_tokens(request, left),
                )
                stream.host = state.address
                finished: Completion | None = None
                try:
                    async for piece, done in self._stream_from(state, part):
                        if done is not None:
                            finished = done
                            break
                        sent += piece
                        spent_tokens += count_tokens(piece)
                        yield piece
                except HostError as exc:
                    self._failed(state, exc)
                    self.metrics.failovers.labels(request.model_id).inc()
                    continue  # the next host continues from what was sent
                assert finished is not None
                state.served += 1
                total_tokens = spent_tokens - count_tokens(finished.text) + finished.completion_tokens
                stream.completion = Completion(sent, count_tokens(request.prompt), total_tokens, finished.finish_reason)
                if self.spot_check is not None and not tried - {state.address}:
                    self.spot_check(state, request)
                return

        return GenerationStream(produce)

    async def _stream_from(
        self, state: HostState, request: GenerationRequest
    ) -> AsyncGenerator[tuple[str, Completion | None], None]:
        """Pieces of one host's stream, then `("", completion)`; `HostError` if the stream breaks."""
        assert self._http is not None
        body, headers = self._request(request, stream=True)
        text, finish, usage = "", "length", None
        try:
            async with self._http.stream(
                "POST", f"{state.info.endpoint}/v1/completions", content=body, headers=headers
            ) as reply:
                if reply.status_code != 200:
                    _raise_for_host(state, reply.status_code, await reply.aread())
                async for line in reply.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    data = line[len("data: ") :]
                    if data == "[DONE]":
                        if usage is None:
                            raise HostError(f"host {state.address} ended its stream without usage")
                        completion = Completion(
                            text,
                            int(usage["prompt_tokens"]),
                            int(usage["completion_tokens"]),
                            finish,  # type: ignore[arg-type]
                        )
                        yield "", completion
                        return
                    chunk = loads_json(data, max_bytes=MAX_ANSWER_BYTES, what="a stream event")
                    if "error" in chunk:
                        raise HostError(f"host {state.address} failed mid-stream: {_message(chunk['error'])}")
                    if chunk.get("usage"):
                        usage = chunk["usage"]
                    for choice in chunk.get("choices", []):
                        if choice.get("finish_reason"):
                            finish = choice["finish_reason"]
                        piece = choice.get("text") or ""
                        if piece:
                            text += piece
                            yield piece, None
        except httpx.HTTPError as exc:
            raise HostError(f"host {state.address} broke its stream: {type(exc).__name__}: {exc}") from exc
        except _MALFORMED as exc:
            raise HostError(f"host {state.address} streamed outside the completions shape: {exc}") from exc
        raise HostError(f"host {state.address} closed its stream before [DONE]")


def _with_max_tokens(request: GenerationRequest, max_tokens: int) -> SamplingParams:
    return replace(request.params, max_tokens=max_tokens)


def _raise_for_host(state: HostState, status: int, content: bytes) -> None:
    """A client mistake the host refused (400) goes back to the agent; anything else is the host failing."""
    if status == 200:
        return
    if status == 400:
        try:
            error = loads_json(content, max_bytes=MAX_ANSWER_BYTES, what="the error")["error"]
            raise InvalidRequestError(str(error.get("message")), param=error.get("param"))
        except _MALFORMED:
            pass
    raise HostError(f"host {state.address} answered HTTP {status}: {content[:200]!r}")


def _message(error: Any) -> str:
    """The message of an OpenAI error object a host sent, whatever shape it came in."""
    return str(error.get("message")) if isinstance(error, dict) else str(error)[:200]
