"""The explorer's routes, one `APIRouter` per part of the site: network pages, capability pages, JSON API."""

from __future__ import annotations

from covey.explorer.routes.api import router as api_router
from covey.explorer.routes.capabilities import router as capabilities_router
from covey.explorer.routes.network import router as network_router

ROUTERS = (network_router, capabilities_router, api_router)

__all__ = ["ROUTERS"]
