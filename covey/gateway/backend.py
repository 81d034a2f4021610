"""Where generation runs: the `Backend` protocol, and `LocalBackend`, which generates in this process.

The gateway answers from a backend: `LocalBackend` (a gateway, or a host, serving models itself) or the
`HostRouter` (staked hosts elsewhere). Generation is CPU work, so it runs on worker threads, never on the
event loop; a stream hops to the loop once per decoded piece.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from typing import Protocol, TypeVar

from covey.gateway.inference import Completion, Engine, SamplingParams, TextStream, complete, engine_for
from covey.gateway.models import ModelCatalog

DEFAULT_WORKERS = 2
ResultT = TypeVar("ResultT")


@dataclass(frozen=True)
class GenerationRequest:
    """One generation: the model, the rendered prompt, and how to sample."""

    model_id: str
    prompt: str
    params: SamplingParams


@dataclass(frozen=True)
class Generated:
    """A finished generation and who produced it (`host` is `None` when this process did)."""

    completion: Completion
    host: str | None


class GenerationStream:
    """Text pieces as they are generated. `host` is who generates now; `completion` is set at the end."""

    def __init__(self, produce: Callable[[GenerationStream], AsyncGenerator[str, None]]) -> None:
        self.host: str | None = None
        self.completion: Completion | None = None
        self._pieces = produce(self)

    def __aiter__(self) -> GenerationStream:
        return self

    async def __anext__(self) -> str:
        return await self._pieces.__anext__()

    async def aclose(self) -> None:
        await self._pieces.aclose()


class Backend(Protocol):
    """Generates for the gateway and says what its cheapest capacity costs."""

    async def complete(self, request: GenerationRequest) -> Generated:
        """Generate the whole answer; a `GatewayError` says why not."""
        ...

    async def stream(self, request: GenerationRequest) -> GenerationStream:
        """Start generating; the stream yields pieces (failures surface while iterating)."""
        ...

    def host_price_per_1k(self, model_id: str) -> int:
        """What serving `model_id` costs per thousand tokens (atomic USD); `NoHostAvailableError` if nobody can."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class LocalBackend:
    """Serves the catalog's models in this process at a fixed price per thousand tokens."""

    def __init__(
        self,
        catalog: ModelCatalog,
        *,
        price_per_1k_atomic: int,
        workers: int = DEFAULT_WORKERS,
    ) -> None:
        self.catalog = catalog
        self.price_per_1k_atomic = price_per_1k_atomic
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="covey-generate")
        self._engines: dict[str, Engine] = {}
        self._lock = threading.Lock()

    def engine(self, model_id: str) -> Engine:
        """The engine for `model_id`, loading its weights on first use (blocking)."""
        with self._lock:
            found = self._engines.get(model_id)
        if found is not None:
            return found
        served = self.catalog.get(model_id)
        engine = engine_for(served.kind, self.catalog.load(model_id))
        with self._lock:
            return self._engines.setdefault(model_id, engine)

    async def complete(self, request: GenerationRequest) -> Generated:
        completion = await self._run(self._complete, request)
        return Generated(completion, None)

    def _complete(self, request: GenerationRequest) -> Completion:
        return complete(self.engine(request.model_id), request.prompt, request.params)

    async def stream(self, request: GenerationRequest) -> GenerationStream:
        async def produce(stream: GenerationStream) -> AsyncGenerator[str, None]:
            pieces: TextStream = await self._run(self._open, request)
            try:
                while True:
                    done, value = await self._run(_step, pieces)
                    if done:
                        assert isinstance(value, Completion)
                        stream.completion = value
                        return
                    assert isinstance(value, str)
                    yield value
            finally:
                _stop(pieces)  # a client that hangs up stops the generation

        return GenerationStream(produce)

    def _open(self, request: GenerationRequest) -> TextStream:
        return self.engine(request.model_id).stream(request.prompt, request.params)

    def host_price_per_1k(self, model_id: str) -> int:
        self.catalog.get(model_id)
        return self.price_per_1k_atomic

    async def _run(self, fn: Callable[..., ResultT], *args: object) -> ResultT:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _stop(pieces: TextStream) -> None:
    # A worker may be inside the generator right now (ValueError): it is closed when freed after that step.
    with suppress(ValueError):
        pieces.close()


def _step(pieces: TextStream) -> tuple[bool, str | Completion]:
    """One step of a blocking stream: `(False, piece)`, or `(True, completion)` at its end."""
    try:
        return False, next(pieces)
    except StopIteration as done:
        return True, done.value
