"""Bad requests get OpenAI-style error objects with the right HTTP status, and the client raises the right error."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from .conftest import World, local_gateway, serve_in_thread


@pytest.fixture(scope="module")
def url(world: World) -> Iterator[str]:
    with serve_in_thread(local_gateway(world)) as base:
        yield base


def _error(reply: httpx.Response) -> dict[str, Any]:
    body = reply.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]  # type: ignore[no-any-return]


def test_an_unknown_model_is_a_404_the_client_raises_as_not_found(url: str) -> None:
    client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)

    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])

    assert caught.value.status_code == 404
    assert caught.value.code == "model_not_found" and caught.value.param == "model"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"model": "M", "messages": []}, "messages"),
        ({"model": "M", "messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role"),
        ({"model": "M", "messages": [{"role": "user", "content": "hi"}], "temperature": 3}, "temperature"),
        ({"model": "M", "messages": [{"role": "user", "content": "hi"}], "top_p": 0}, "top_p"),
        ({"model": "M", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, "max_tokens"),
        ({"model": "M", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100_000}, "max_tokens"),
        ({"model": "M", "messages": [{"role": "user", "content": "hi"}], "n": 2}, "n"),
        ({"model": "M", "messages": [{"role": "user", "content": "hi"}], "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ],
)
def test_invalid_fields_are_400_with_the_param_named(url: str, world: World, body: dict[str, Any], param: str) -> None:
    if body.get("model") == "M":
        body["model"] = world.model_id

    reply = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30)

    assert reply.status_code == 400
    error = _error(reply)
    assert error["type"] == "invalid_request_error" and error["param"] == param, error


def test_a_body_that_is_not_json_is_a_400(url: str) -> None:
    reply = httpx.post(
        f"{url}/v1/completions", content=b"{not json", headers={"Content-Type": "application/json"}, timeout=30
    )

    assert reply.status_code == 400
    assert "JSON" in _error(reply)["message"]


def test_an_unknown_route_and_a_wrong_method_are_openai_errors(url: str) -> None:
    missing = httpx.get(f"{url}/v1/embeddings", timeout=30)
    wrong = httpx.get(f"{url}/v1/chat/completions", timeout=30)

    assert missing.status_code == 404 and _error(missing)["type"] == "not_found_error"
    assert wrong.status_code == 405 and _error(wrong)["type"] == "invalid_request_error"


def test_the_client_raises_bad_request_for_a_batch_prompt(url: str, world: World) -> None:
    client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)

    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=world.model_id, prompt=["one", "two"])

    assert caught.value.param == "prompt"
