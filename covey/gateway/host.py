"""A staked inference host: serves one consensus model to gateways and keeps its registration alive on chain.

`covey host serve --model covey-arena-3` (or `python -m covey.gateway.host ...` with the key in
`COVEY_HOST_KEY`) loads the model's consensus weights from the store, registers `(model, endpoint, price)`
in the HostRegistry, heartbeats, and deregisters on shutdown. It speaks the OpenAI completions shape on
`/v1/completions` (the gateway renders chats into prompts), answers only requests a registered gateway
signed, and signs every answer, so a wrong answer can be proven on chain.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from covey.bounds import check_recursion_limit
from covey.chain import Chain
from covey.errors import ChainError, CoveyError
from covey.gateway.backend import GenerationRequest, LocalBackend
from covey.gateway.errors import GatewayError, ModelNotFoundError
from covey.gateway.inference import Completion, count_tokens
from covey.gateway.models import ModelCatalog
from covey.gateway.openai_api import (
    CompletionRequest,
    CompletionShape,
    error_body,
    error_response,
    install_error_handlers,
    install_request_bounds,
    parse_body,
    sse,
)
from covey.gateway.registry import HostRegistryClient
from covey.gateway.service import DEFAULT_MAX_TOKENS, MAX_TOKENS_LIMIT
from covey.gateway.signing import (
    GATEWAY_SIGNATURE_HEADER,
    GATEWAY_TIME_HEADER,
    output_hash,
    request_hash,
    request_signer,
    sign_answer,
)

log = logging.getLogger(__name__)

HOST_KEY_ENV = "COVEY_HOST_KEY"
DEFAULT_HEARTBEAT_INTERVAL_S = 30.0
REQUEST_MAX_AGE_S = 300


@dataclass
class HostConfig:
    """What a host serves, where, at what price (atomic USD per 1,000 tokens), and how."""

    model_id: str
    endpoint: str
    price_per_1k_atomic: int
    heartbeat_interval_s: float = DEFAULT_HEARTBEAT_INTERVAL_S
    max_tokens_per_s: float = 0.0
    """Pace of each answer (0: as fast as the CPU goes); shares a slow machine fairly between requests."""
    require_gateway: bool = True
    """Serve only requests signed by a gateway the HostRegistry lists."""


class HostNode:
    """The host's life on chain: register at start, heartbeat while serving, deregister at the end."""

    def __init__(self, registry: HostRegistryClient, account: LocalAccount, config: HostConfig) -> None:
        self.registry = registry
        self.account = account
        self.config = config
        self._heartbeats: asyncio.Task[None] | None = None

    async def start(self) -> None:
        config = self.config
        await asyncio.to_thread(
            self.registry.register, self.account, config.model_id, config.endpoint, config.price_per_1k_atomic
        )
        log.info("host %s registered for %s at %s", self.account.address, config.model_id, config.endpoint)
        self._heartbeats = asyncio.create_task(self._beat(), name="covey-host-heartbeat")

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_interval_s)
            try:
                await asyncio.to_thread(self.registry.heartbeat, self.account)
            except ChainError as exc:  # a slashed or unstaked host stays up but stops being routed to
                log.warning("host heartbeat failed: %s", exc)

    async def stop(self) -> None:
        if self._heartbeats is not None:
            self._heartbeats.cancel()
            with suppress(asyncio.CancelledError):
                await self._heartbeats
        try:
            if await asyncio.to_thread(self.registry.is_registered, self.account.address):
                await asyncio.to_thread(self.registry.deregister, self.account)
        except CoveyError as exc:
            log.warning("host could not deregister: %s", exc)


def create_host_app(
    backend: LocalBackend,
    account: LocalAccount,
    registry: HostRegistryClient | None,
    config: HostConfig,
    *,
    register: bool = True,
) -> FastAPI:
    """The host's HTTP API over `backend`; with `register`, its on-chain life runs with the app's."""
    check_recursion_limit()
    node = HostNode(registry, account, config) if registry is not None and register else None
    signing_registry = registry.address if registry is not None else "0x" + "00" * 20
    chain_id = registry.chain.chain_id if registry is not None else 0

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Load the weights before registering: a host that cannot serve must not be routed to.
        await asyncio.to_thread(backend.catalog.refresh)
        await asyncio.to_thread(backend.engine, config.model_id)
        if node is not None:
            await node.start()
        try:
            yield
        finally:
            if node is not None:
                await node.stop()
            await backend.close()

    app = FastAPI(title="Covey inference host", lifespan=lifespan, docs_url=None, redoc_url=None)
    install_error_handlers(app)
    install_request_bounds(app)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": config.model_id, "host": account.address}

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        body = await request.body()
        refused = await _check_gateway(request, body)
        if refused is not None:
            return refused
        parsed: CompletionRequest = await parse_body(request, CompletionRequest)
        if parsed.model != config.model_id:
            raise ModelNotFoundError(f"this host serves {config.model_id}, not {parsed.model}", param="model")
        params = parsed.sampling(DEFAULT_MAX_TOKENS, MAX_TOKENS_LIMIT)
        generation = GenerationRequest(parsed.model, parsed.prompt_text(), params)
        shape = CompletionShape(parsed.model)
        asked = request_hash(body)
        if parsed.stream:
            return await _stream(generation, shape, asked)
        try:
            completion = await _generate(generation)
        except CoveyError as exc:
            return error_response(exc)
        return JSONResponse({**shape.full(completion), "covey": _signed(asked, completion.text)})

    async def _check_gateway(request: Request, body: bytes) -> Response | None:
        if registry is None or not config.require_gateway:
            return None
        timestamp = _timestamp(request.headers.get(GATEWAY_TIME_HEADER, ""))
        signer = None
        # A stale or malformed request costs no signature recovery.
        if timestamp is not None and abs(time.time() - timestamp) <= REQUEST_MAX_AGE_S:
            signer = request_signer(body, timestamp, request.headers.get(GATEWAY_SIGNATURE_HEADER, ""))
        if signer is None or not await asyncio.to_thread(registry.is_gateway, signer):
            message = "this host serves only requests signed by a gateway the HostRegistry lists"
            return JSONResponse(error_body(message, "authentication_error"), status_code=401)
        return None

    async def _generate(generation: GenerationRequest) -> Completion:
        if config.max_tokens_per_s <= 0:
            return (await backend.complete(generation)).completion
        stream = await backend.stream(generation)
        async for piece in stream:
            await _pace(piece)
        assert stream.completion is not None
        return stream.completion

    async def _pace(piece: str) -> None:
        if config.max_tokens_per_s > 0:
            await asyncio.sleep(count_tokens(piece) / config.max_tokens_per_s)

    async def _stream(generation: GenerationRequest, shape: CompletionShape, asked: bytes) -> Response:
        stream = await backend.stream(generation)
        try:
            first: str | None = await stream.__anext__()
        except StopAsyncIteration:
            first = None
        except CoveyError as exc:
            return error_response(exc)

        async def events() -> AsyncIterator[bytes]:
            try:
                if first:
                    yield sse(shape.delta(first))
                    await _pace(first)
                async for piece in stream:
                    yield sse(shape.delta(piece))
                    await _pace(piece)
            except GatewayError as exc:
                yield sse(error_body(str(exc), exc.openai_type, exc.param, exc.code))
                return
            completion = stream.completion
            assert completion is not None
            yield sse(shape.finish(completion.finish_reason))
            yield sse({**shape.usage_chunk(completion), "covey": _signed(asked, completion.text)})
            yield sse("[DONE]")

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    def _signed(asked: bytes, text: str) -> dict[str, str]:
        answered = output_hash(text)
        return {
            "host": account.address,
            "request_hash": "0x" + asked.hex(),
            "output_hash": "0x" + answered.hex(),
            "signature": sign_answer(account, signing_registry, chain_id, asked, answered),
        }

    app.state.config = config
    app.state.account = account
    return app


def _timestamp(text: str) -> int | None:
    """A request's unix time as the gateway sent it; `None` if it is not a plausible integer."""
    if len(text) > 20:  # far past any real time; a longer number would overflow the float comparison
        return None
    try:
        return int(text)
    except ValueError:
        return None


def build_host_app(
    catalog: ModelCatalog, registry: HostRegistryClient, account: LocalAccount, config: HostConfig
) -> FastAPI:
    """A host app for `config.model_id`, which must be one of the catalog's consensus models."""
    backend = LocalBackend(catalog, price_per_1k_atomic=config.price_per_1k_atomic)
    return create_host_app(backend, account, registry, config)


def main(argv: list[str] | None = None) -> None:
    """`python -m covey.gateway.host`: serve one model on 127.0.0.1 (the key comes from `COVEY_HOST_KEY`)."""
    import uvicorn

    from covey.chain.deploy import load_deployment
    from covey.config import get_settings
    from covey.gateway.models import find_arena
    from covey.gateway.pricing import USD_DECIMALS
    from covey.storage import open_store

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--price", type=float, default=0.02, help="USD per 1,000 tokens")
    parser.add_argument("--rpc-url")
    parser.add_argument("--arena")
    parser.add_argument("--registry")
    parser.add_argument("--public-url")
    parser.add_argument("--tokens-per-s", type=float, default=0.0)
    parser.add_argument("--heartbeat", type=float, default=DEFAULT_HEARTBEAT_INTERVAL_S)
    args = parser.parse_args(argv)
    import torch

    # Requests run concurrently on worker threads; intra-op threads would only spin against them.
    torch.set_num_threads(1)
    settings = get_settings()
    key = settings.host_key.get_secret_value() if settings.host_key else None
    if not key:
        parser.error(f"set {HOST_KEY_ENV} to the host's private key")
    chain = Chain.from_rpc(args.rpc_url) if args.rpc_url else Chain.connect(settings)
    deployment = None if (args.arena and args.registry) else load_deployment(chain)
    arena = args.arena or (find_arena(chain, deployment) if deployment else None)
    if args.registry:
        registry: HostRegistryClient | None = HostRegistryClient(chain, args.registry)
    else:
        registry = HostRegistryClient.from_deployment(chain, deployment) if deployment else None
    if registry is None:
        parser.error("no HostRegistry on this chain: deploy one (covey.chain.hosts_deploy) or pass --registry")
    catalog = ModelCatalog(chain, open_store(settings.store_url, settings.data_dir), arena)
    config = HostConfig(
        model_id=args.model,
        endpoint=args.public_url or f"http://127.0.0.1:{args.port}",
        price_per_1k_atomic=round(args.price * 10**USD_DECIMALS),
        heartbeat_interval_s=args.heartbeat,
        max_tokens_per_s=args.tokens_per_s,
    )
    app = build_host_app(catalog, registry, Account.from_key(key), config)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
