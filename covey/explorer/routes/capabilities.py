"""The capability pages: Arena tasks, Alliance runs, the Gateway's hosts, the compute market's jobs."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from covey.explorer import alliance_view, arena_view, compute_view, gateway_view
from covey.explorer.queries import parse_id
from covey.explorer.site import SiteDep

router = APIRouter(default_response_class=HTMLResponse)


@router.get("/arena")
def arena_tasks(request: Request, site: SiteDep) -> Response:
    tasks = arena_view.tasks(site.explorer)
    return site.render(request, "arena_tasks.html", tasks=tasks, deployed=site.has("Arena"))


@router.get("/arena/tasks/{task_id}")
def arena_task(request: Request, site: SiteDep, task_id: str) -> Response:
    task = arena_view.task(site.explorer, parse_id(task_id, "task"))
    return site.render(request, "arena_task.html", task=task)


@router.get("/alliance")
def alliances(request: Request, site: SiteDep) -> Response:
    runs = alliance_view.alliances(site.explorer)
    return site.render(request, "alliance_list.html", runs=runs, deployed=site.has("Alliance"))


@router.get("/alliance/{alliance_id}")
def alliance(request: Request, site: SiteDep, alliance_id: str) -> Response:
    run = alliance_view.alliance(site.explorer, parse_id(alliance_id, "alliance"))
    return site.render(request, "alliance_run.html", run=run)


@router.get("/gateway")
def gateway(request: Request, site: SiteDep) -> Response:
    return site.render(request, "gateway.html", gateway=gateway_view.gateway(site.explorer))


@router.get("/compute")
def compute(request: Request, site: SiteDep) -> Response:
    return site.render(request, "compute.html", market=compute_view.market(site.explorer))


@router.get("/compute/jobs/{job_id}")
def compute_job(request: Request, site: SiteDep, job_id: str) -> Response:
    job = compute_view.job(site.explorer, parse_id(job_id, "job"))
    return site.render(request, "compute_job.html", job=job)
