"""What every explorer route shares: the read models, the page templates, and how a page is rendered.

`create_app` keeps one `Site` on `app.state.site`; a route asks for it with a `SiteDep` parameter. Pages are
server-rendered HTML (Jinja templates with SVG charts); every page gets the navigation, the index's status
and, when the background indexer last failed, its error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from covey.explorer import page_charts
from covey.explorer.formatting import FILTERS
from covey.explorer.indexer import Indexer
from covey.explorer.queries import Explorer

log = logging.getLogger("covey.explorer")

PACKAGE_DIR = Path(__file__).parent
NAV = (
    ("/", "Overview"),
    ("/arena", "Arena"),
    ("/alliance", "Alliance"),
    ("/gateway", "Gateway"),
    ("/compute", "Compute"),
    ("/events", "Events"),
)


def page_templates() -> Environment:
    """The Jinja environment of the explorer's templates, with its filters and chart helpers."""
    env = Environment(loader=FileSystemLoader(PACKAGE_DIR / "templates"), autoescape=select_autoescape())
    env.filters.update(FILTERS)
    env.globals["charts"] = page_charts
    return env


@dataclass
class Site:
    """The explorer's read models and templates; `indexer` is the background indexer, if this app runs one."""

    explorer: Explorer
    templates: Environment
    refresh_ms: int
    indexer: Indexer | None = None

    @property
    def indexer_error(self) -> str | None:
        return self.indexer.last_error if self.indexer is not None else None

    def render(self, request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        """`template` rendered for `request`; pass `status` when the page already read it."""
        status = context.pop("status", None) or self.explorer.status()
        page = self.templates.get_template(template).render(
            request=request,
            path=request.url.path,
            nav=NAV,
            status=status,
            now=status.head_ts,
            names={address: name for name, address in status.contracts.items()},
            refresh_ms=self.refresh_ms,
            indexer_error=self.indexer_error,
            **context,
        )
        return HTMLResponse(page, status_code=status_code)

    def error_page(self, request: Request, status_code: int, title: str, message: str) -> HTMLResponse:
        """The friendly error page; a bare heading when even that cannot be built (no stack trace, ever)."""
        try:
            return self.render(request, "error.html", status_code, title=title, message=message)
        except Exception:  # the index itself is unreadable: still no stack trace
            log.exception("explorer: cannot render the error page")
            return HTMLResponse(f"<h1>{status_code} {title}</h1>", status_code=status_code)

    def has(self, contract: str) -> bool:
        """Whether the indexed suite has `contract` deployed."""
        return contract in self.explorer.contracts()


def site_of(request: Request) -> Site:
    site: Site = request.app.state.site
    return site


SiteDep = Annotated[Site, Depends(site_of)]


def page_param(request: Request) -> int:
    """The `?page=` number, 1 when absent or malformed."""
    text = request.query_params.get("page", "1")
    return int(text) if text.isdigit() and len(text) < 7 else 1
