"""The JSON API: the index's status (which the pages' script polls) and an account's live figures."""

from __future__ import annotations

import time

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from covey.explorer import account_view
from covey.explorer.queries import parse_address
from covey.explorer.site import SiteDep

router = APIRouter(prefix="/api")


@router.get("/status")
def api_status(site: SiteDep) -> JSONResponse:
    body = site.explorer.status().as_json()
    body["indexerError"] = site.indexer_error
    body["servedAt"] = time.time()
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


@router.get("/accounts/{address}")
def api_account(site: SiteDep, address: str) -> JSONResponse:
    """An account's live figures as JSON (what the account page shows at the top)."""
    data = account_view.account(site.explorer, parse_address(address))
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
