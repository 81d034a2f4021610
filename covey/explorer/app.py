"""The explorer's web app: its routers, error pages and middleware, with the indexer in a background thread.

`create_app(chain)` builds it; `covey explorer serve` runs it with uvicorn. The routes live in
`covey.explorer.routes` (one `APIRouter` per part of the site) and share a `Site` (`covey.explorer.site`).
Pages are server-rendered HTML with SVG charts, readable without JavaScript (a `<noscript>` refresh keeps
them current); a small script shipped in `static/` polls `/api/status` and swaps in the new page body when
the index moves.
Unknown or malformed ids render a friendly 404 page; nothing ever shows a stack trace.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from covey.bounded_http import BoundedRequests
from covey.bounds import check_recursion_limit
from covey.chain import Chain
from covey.config import get_settings
from covey.explorer.errors import NotFound
from covey.explorer.index_db import index_path
from covey.explorer.indexer import Indexer
from covey.explorer.model_scores import ModelScorer
from covey.explorer.queries import Explorer
from covey.explorer.routes import ROUTERS
from covey.explorer.site import PACKAGE_DIR, Site, page_templates
from covey.storage import open_store

log = logging.getLogger("covey.explorer")

DEFAULT_POLL_S = 1.0
DEFAULT_REFRESH_MS = 2_000
# The explorer only reads: no route takes a body, and its longest URL (an event filter) is under 200 bytes.
MAX_BODY_BYTES = 16 * 1024
MAX_URL_BYTES = 2 * 1024


class BackgroundWork:
    """The app's two daemon threads: the indexer (then warming the overview's live figures) and the model
    scorer, apart so that scoring (torch loads in seconds) never holds up indexing."""

    def __init__(self, indexer: Indexer, explorer: Explorer, interval_s: float) -> None:
        self.indexer = indexer
        self.explorer = explorer
        self.interval_s = interval_s
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._index, name="covey-explorer-indexer", daemon=True),
            threading.Thread(target=self._score, name="covey-explorer-scorer", daemon=True),
        ]

    def _index(self) -> None:
        while not self.stop.is_set():
            try:
                result = self.indexer.poll()
                self.indexer.last_error = None
                if self.explorer.contracts():
                    self.explorer.live.figures(result.head_block)
            except Exception as exc:  # a node that is briefly away must not kill the thread
                self.indexer.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("explorer indexer: %s", self.indexer.last_error)
            self.stop.wait(self.interval_s)

    def _score(self) -> None:
        scorer = self.explorer.model_scores
        while scorer is not None and not self.stop.is_set():
            try:
                scorer.work(budget_s=5.0)
            except Exception:  # a model that breaks the evaluator is skipped, the thread lives on
                log.exception("explorer model scorer")
            self.stop.wait(self.interval_s)

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)
        self.indexer.close()


def create_app(
    chain: Chain | None = None,
    *,
    index: Path | None = None,
    poll_interval_s: float = DEFAULT_POLL_S,
    refresh_ms: int = DEFAULT_REFRESH_MS,
    run_indexer: bool = True,
) -> FastAPI:
    """The explorer app over `chain` (default: the configured one) and the index file `index`.

    With `run_indexer` the app indexes in a background thread while it serves; without it, something
    else (a test, the benchmark) keeps the index current.
    """
    check_recursion_limit()
    owns_chain = chain is None
    chain = chain or Chain.connect()
    path = index or index_path()
    explorer = Explorer(chain, path)
    settings = get_settings()
    explorer.model_scores = ModelScorer(open_store(settings.store_url, settings.data_dir))
    worker = BackgroundWork(Indexer(chain, path), explorer, poll_interval_s) if run_indexer else None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if worker is not None:
            worker.start()
        try:
            yield
        finally:
            if worker is not None:
                worker.close()
            if owns_chain:
                chain.close()

    app = FastAPI(title="Covey Explorer", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    site = Site(explorer, page_templates(), refresh_ms, worker.indexer if worker else None)
    app.state.site = site
    app.state.explorer = explorer
    # Oversized or deeply nested requests are refused with `{"error": ...}` before any route sees them.
    app.add_middleware(BoundedRequests, max_body_bytes=MAX_BODY_BYTES, max_url_bytes=MAX_URL_BYTES)  # type: ignore[arg-type]
    app.mount("/static", StaticFiles(directory=PACKAGE_DIR / "static"), name="static")
    for router in ROUTERS:
        app.include_router(router)
    _add_error_pages(app, site)
    return app


def _add_error_pages(app: FastAPI, site: Site) -> None:
    """Unknown or malformed ids, bad parameters and failures all answer with a page (JSON under /api/)."""

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": str(exc)}, status_code=404)
        return site.error_page(request, 404, "Not found", str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return site.error_page(request, 404, "Not found", f"there is no page at {request.url.path}")
        return site.error_page(request, exc.status_code, "Request refused", str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> HTMLResponse:
        fields = ", ".join(".".join(str(part) for part in error["loc"][1:]) for error in exc.errors())
        return site.error_page(request, 400, "Bad request", f"malformed parameter: {fields or 'request'}")

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> HTMLResponse:
        log.exception("explorer: %s failed", request.url.path)
        message = f"{type(exc).__name__}: the page could not be built"
        return site.error_page(request, 500, "Something went wrong", message)
