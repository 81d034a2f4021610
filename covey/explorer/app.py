"""The explorer's web app: FastAPI routes rendering Jinja templates, with the indexer in a background thread.

`create_app(chain)` builds it; `covey explorer serve` runs it with uvicorn. Pages are server-rendered
HTML with SVG charts, readable without JavaScript (a `<noscript>` refresh keeps them current); a small
script shipped in `static/` polls `/api/status` and swaps in the new page body when the index moves.
Unknown or malformed ids render a friendly 404 page; nothing ever shows a stack trace.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.exceptions import HTTPException as StarletteHTTPException

from covey.bounded_http import BoundedRequests
from covey.bounds import check_recursion_limit
from covey.chain import Chain
from covey.config import get_settings
from covey.explorer import alliance_view, arena_view, compute_view, gateway_view, page_charts
from covey.explorer.errors import NotFound
from covey.explorer.formatting import FILTERS
from covey.explorer.indexer import Indexer, index_path
from covey.explorer.model_scores import ModelScorer
from covey.explorer.queries import Explorer, parse_address, parse_id
from covey.storage import open_store

log = logging.getLogger("covey.explorer")

PACKAGE_DIR = Path(__file__).parent
DEFAULT_POLL_S = 1.0
DEFAULT_REFRESH_MS = 2_000
# The explorer only reads: no route takes a body, and its longest URL (an event filter) is under 200 bytes.
MAX_BODY_BYTES = 16 * 1024
MAX_URL_BYTES = 2 * 1024
NAV = (
    ("/", "Overview"),
    ("/arena", "Arena"),
    ("/alliance", "Alliance"),
    ("/gateway", "Gateway"),
    ("/compute", "Compute"),
    ("/events", "Events"),
)


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
    app.state.explorer = explorer
    # Oversized or deeply nested requests are refused with `{"error": ...}` before any route sees them.
    app.add_middleware(BoundedRequests, max_body_bytes=MAX_BODY_BYTES, max_url_bytes=MAX_URL_BYTES)  # type: ignore[arg-type]
    app.mount("/static", StaticFiles(directory=PACKAGE_DIR / "static"), name="static")
    env = Environment(loader=FileSystemLoader(PACKAGE_DIR / "templates"), autoescape=select_autoescape())
    env.filters.update(FILTERS)
    env.globals["charts"] = page_charts

    def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        status = context.pop("status", None) or explorer.status()
        page = env.get_template(template).render(
            request=request,
            path=request.url.path,
            nav=NAV,
            status=status,
            now=status.head_ts,
            names={address: name for name, address in status.contracts.items()},
            refresh_ms=refresh_ms,
            indexer_error=worker.indexer.last_error if worker else None,
            **context,
        )
        return HTMLResponse(page, status_code=status_code)

    def error_page(request: Request, status_code: int, title: str, message: str) -> HTMLResponse:
        try:
            return render(request, "error.html", status_code, title=title, message=message)
        except Exception:  # the index itself is unreadable: still no stack trace
            log.exception("explorer: cannot render the error page")
            return HTMLResponse(f"<h1>{status_code} {title}</h1>", status_code=status_code)

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": str(exc)}, status_code=404)
        return error_page(request, 404, "Not found", str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return error_page(request, 404, "Not found", f"there is no page at {request.url.path}")
        return error_page(request, exc.status_code, "Request refused", str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> HTMLResponse:
        fields = ", ".join(".".join(str(part) for part in error["loc"][1:]) for error in exc.errors())
        return error_page(request, 400, "Bad request", f"malformed parameter: {fields or 'request'}")

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> HTMLResponse:
        log.exception("explorer: %s failed", request.url.path)
        return error_page(request, 500, "Something went wrong", f"{type(exc).__name__}: the page could not be built")

    def page_param(request: Request) -> int:
        text = request.query_params.get("page", "1")
        return int(text) if text.isdigit() and len(text) < 7 else 1

    @app.get("/", response_class=HTMLResponse)
    def overview(request: Request) -> Response:
        data = explorer.overview()
        return render(request, "overview.html", status=data.status, overview=data)

    @app.get("/arena", response_class=HTMLResponse)
    def arena_tasks(request: Request) -> Response:
        return render(request, "arena_tasks.html", tasks=arena_view.tasks(explorer), deployed=_has(explorer, "Arena"))

    @app.get("/arena/tasks/{task_id}", response_class=HTMLResponse)
    def arena_task(request: Request, task_id: str) -> Response:
        task = arena_view.task(explorer, parse_id(task_id, "task"))
        return render(request, "arena_task.html", task=task)

    @app.get("/alliance", response_class=HTMLResponse)
    def alliances(request: Request) -> Response:
        return render(
            request, "alliance_list.html", runs=alliance_view.alliances(explorer), deployed=_has(explorer, "Alliance")
        )

    @app.get("/alliance/{alliance_id}", response_class=HTMLResponse)
    def alliance(request: Request, alliance_id: str) -> Response:
        run = alliance_view.alliance(explorer, parse_id(alliance_id, "alliance"))
        return render(request, "alliance_run.html", run=run)

    @app.get("/gateway", response_class=HTMLResponse)
    def gateway(request: Request) -> Response:
        return render(request, "gateway.html", gateway=gateway_view.gateway(explorer))

    @app.get("/compute", response_class=HTMLResponse)
    def compute(request: Request) -> Response:
        return render(request, "compute.html", market=compute_view.market(explorer))

    @app.get("/compute/jobs/{job_id}", response_class=HTMLResponse)
    def compute_job(request: Request, job_id: str) -> Response:
        return render(request, "compute_job.html", job=compute_view.job(explorer, parse_id(job_id, "job")))

    @app.get("/accounts/{address}", response_class=HTMLResponse)
    def account(request: Request, address: str) -> Response:
        return render(request, "account.html", account=explorer.account(address, page_param(request)))

    @app.get("/tx/{tx_hash}", response_class=HTMLResponse)
    def transaction(request: Request, tx_hash: str) -> Response:
        tx, events = explorer.transaction(tx_hash)
        return render(request, "tx.html", tx=tx, events=events)

    @app.get("/events", response_class=HTMLResponse)
    def events(request: Request) -> Response:
        params = request.query_params
        contract, event, block = params.get("contract") or None, params.get("event") or None, params.get("block")
        ref = parse_id(params["ref"], "subject") if params.get("ref") else None
        if block:
            if not block.isdigit() or len(block) > 18:
                raise NotFound(f"{block[:40]!r} is not a block number")
            rows, pages, page = explorer.events("block = ?", (int(block),)), 1, 1
        else:
            page = page_param(request)
            rows, pages = explorer.recent_page(page, contract, event, ref)
        return render(
            request,
            "events.html",
            events=rows,
            page=min(page, pages),
            pages=pages,
            contract=contract,
            event=event,
            ref=ref,
            block=block,
            contracts=sorted(explorer.contracts()),
        )

    @app.get("/search", response_class=HTMLResponse)
    def search(request: Request) -> Response:
        query = request.query_params.get("q", "").strip()
        if not query:
            return RedirectResponse("/", status_code=303)
        hits = explorer.search(query)
        if len(hits) == 1:
            return RedirectResponse(hits[0].url, status_code=303)
        if not hits:
            raise NotFound(f"nothing matches {query[:80]!r}")
        return render(request, "search.html", query=query, hits=hits)

    @app.get("/api/status")
    def api_status() -> JSONResponse:
        status = explorer.status()
        body = status.as_json()
        body["indexerError"] = worker.indexer.last_error if worker else None
        body["servedAt"] = time.time()
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    @app.get("/api/accounts/{address}")
    def api_account(address: str) -> JSONResponse:
        """An account's live figures as JSON (what the account page shows at the top)."""
        data = explorer.account(parse_address(address))
        figures = data.figures
        return JSONResponse(
            {
                "address": data.address,
                "eth": str(figures.eth_wei),
                "cov": str(figures.cov),
                "usd": str(figures.usd),
                "selfStake": {role: str(value) for role, value in figures.self_stake.items()},
                "effectiveStake": {role: str(value) for role, value in figures.effective_stake.items()},
            }
        )

    return app


def _has(explorer: Explorer, name: str) -> bool:
    return name in explorer.contracts()
