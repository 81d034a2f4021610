"""The explorer bounds every request before a route sees it: bodies, nesting, URLs and their query strings."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from covey.explorer.app import MAX_BODY_BYTES, MAX_URL_BYTES
from tests.untrusted import ATTACK_DEPTH, covey_serve, nested_arrays

DEEP_BUT_SMALL = 5_000  # 10 KB: under the size bound, so only the depth check can refuse it


def test_hostile_bodies_and_long_query_strings_get_a_json_error(client: TestClient) -> None:
    attack = client.post("/api/status", content=nested_arrays(ATTACK_DEPTH))
    deep = client.request("GET", "/", content=nested_arrays(DEEP_BUT_SMALL))
    search = client.get("/search", params={"q": "x" * MAX_URL_BYTES})
    events = client.get("/events", params={"contract": "Arena", "event": "e" * MAX_URL_BYTES})

    assert attack.status_code == 413
    assert attack.json() == {"error": f"the request body is 200,000 bytes; the limit is {MAX_BODY_BYTES:,}"}
    assert deep.status_code == 400 and deep.json() == {"error": "request body nests more than 64 levels deep"}
    for reply in (search, events):
        assert reply.status_code == 414 and "the request's URL is" in reply.json()["error"]
    assert client.get("/").status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/events?page=99999999999999999999999",
        "/events?ref=99999999999999999999",
        "/events?ref=%00",
        "/events?contract=%00%ff&event=%c3%28",
        "/events?block=999999999999999999",
        "/search?q=task%20999999999999999999",
        "/search?q=%ff%fe",
        "/accounts/%c3%28",
        "/tx/%00",
    ],
)
def test_malformed_query_values_never_answer_500(client: TestClient, path: str) -> None:
    page = client.get(path)
    assert page.status_code < 500, page.text[:500]
    assert "Traceback" not in page.text


def test_covey_explorer_serve_survives_the_nesting_attack(covey_home: Path, tmp_path: Path) -> None:
    with covey_serve(["explorer", "serve"], env={}, ready_path="/", log_path=tmp_path / "explorer.log") as (url, proc):
        attack = httpx.post(f"{url}/api/status", content=nested_arrays(ATTACK_DEPTH), timeout=30)
        deep = httpx.request("GET", f"{url}/", content=nested_arrays(DEEP_BUT_SMALL), timeout=30)
        too_long = httpx.get(f"{url}/search", params={"q": "x" * MAX_URL_BYTES}, timeout=30)
        page = httpx.get(f"{url}/", timeout=30)
        alive = proc.poll() is None

    assert (attack.status_code, deep.status_code, too_long.status_code) == (413, 400, 414)
    assert alive and page.status_code == 200
