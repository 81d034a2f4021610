"""The network pages: the overview, accounts, transactions, the event log and search."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from covey.explorer import account_view
from covey.explorer.errors import NotFound
from covey.explorer.queries import parse_id
from covey.explorer.site import SiteDep, page_param

router = APIRouter(default_response_class=HTMLResponse)


@router.get("/")
def overview(request: Request, site: SiteDep) -> Response:
    data = site.explorer.overview()
    return site.render(request, "overview.html", status=data.status, overview=data)


@router.get("/accounts/{address}")
def account(request: Request, site: SiteDep, address: str) -> Response:
    data = account_view.account(site.explorer, address, page_param(request))
    return site.render(request, "account.html", account=data)


@router.get("/tx/{tx_hash}")
def transaction(request: Request, site: SiteDep, tx_hash: str) -> Response:
    tx, events = site.explorer.transaction(tx_hash)
    return site.render(request, "tx.html", tx=tx, events=events)


@router.get("/events")
def events(request: Request, site: SiteDep) -> Response:
    explorer = site.explorer
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
    return site.render(
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


@router.get("/search")
def search(request: Request, site: SiteDep) -> Response:
    query = request.query_params.get("q", "").strip()
    if not query:
        return RedirectResponse("/", status_code=303)
    hits = site.explorer.search(query)
    if len(hits) == 1:
        return RedirectResponse(hits[0].url, status_code=303)
    if not hits:
        raise NotFound(f"nothing matches {query[:80]!r}")
    return site.render(request, "search.html", query=query, hits=hits)
