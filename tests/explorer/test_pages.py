"""Every page over HTTP: the figures a person reads match the chain's own views, bad input gets a friendly 404."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest
from fastapi.testclient import TestClient

from covey.chain.roles import Role

from .conftest import SmallNetwork


def figure(html: str, name: str) -> int:
    """The exact integer behind a figure (`data-figure="name" data-value="..."`)."""
    match = re.search(rf'data-figure="{name}" data-value="(-?\d+)"', html)
    assert match, f"no figure {name!r} on the page"
    return int(match.group(1))


def row(html: str, attribute: str, value: str) -> str:
    """The HTML of the table row whose `data-<attribute>` is `value`."""
    match = re.search(rf'<tr data-{attribute}="{re.escape(value)}"[^>]*>(.*?)</tr>', html, re.S)
    assert match, f"no row with data-{attribute}={value!r}"
    return match.group(1)


def cell(row_html: str, column: str) -> int | None:
    match = re.search(rf'data-col="{column}" data-value="(-?\d*)"', row_html)
    assert match, f"no {column!r} cell"
    return int(match.group(1)) if match.group(1) else None


def test_overview_shows_the_chains_figures(client: TestClient, small_network: SmallNetwork) -> None:
    chain, deployment = small_network.chain, small_network.deployment
    page = client.get("/")
    assert page.status_code == 200
    html = page.text
    token, staking = deployment.contract(chain, "CoveyToken"), deployment.contract(chain, "Staking")
    treasury = deployment.address("Treasury")
    assert figure(html, "cov-supply") == token.functions.totalSupply().call()
    assert figure(html, "treasury-cov") == token.functions.balanceOf(treasury).call()
    assert figure(html, "head-block") == chain.block_number()
    for role in Role:
        staked = staking.functions.totalStaked(int(role)).call()
        assert f'data-role="{role.name.lower()}" data-value="{staked}"' in html
    assert html.count("<svg") >= 2  # staked per role and activity, drawn on the server


def test_arena_pages_match_the_contract(client: TestClient, small_network: SmallNetwork) -> None:
    chain, deployment, task_id = small_network.chain, small_network.deployment, small_network.task_id
    arena = deployment.contract(chain, "Arena")
    tasks = client.get("/arena")
    assert tasks.status_code == 200
    assert "finalised" in row(tasks.text, "task", str(task_id))

    page = client.get(f"/arena/tasks/{task_id}")
    assert page.status_code == 200
    html = page.text
    on_chain = arena.functions.task(task_id).call()
    assert figure(html, "pool") == on_chain[2]
    assert figure(html, "trainer-paid") == on_chain[21]
    for submission in arena.functions.submissions(task_id).call():
        trainer, _commitment, _weights, _uri, revealed, consensus, rank, payout, slashed = submission
        line = row(html, "trainer", trainer)
        assert cell(line, "consensus") == (consensus if revealed else None)
        assert cell(line, "payout") == payout
        assert cell(line, "slashed") == slashed
        assert f'<td class="num">{rank or "-"}</td>' in line
    for validator in arena.functions.validatorsOf(task_id).call():
        line = row(html, "validator", validator[0])
        assert cell(line, "weight") == validator[2]
        assert cell(line, "deviation") == validator[4]
        assert cell(line, "payout") == validator[5]
        assert cell(line, "slashed") == validator[6]
    svg = re.search(r"<svg.*?</svg>", html, re.S)
    assert svg is not None
    ET.fromstring(svg.group(0))  # well-formed: readable without JavaScript


def test_account_page_shows_balances_stakes_rewards_and_slashes(
    client: TestClient, small_network: SmallNetwork
) -> None:
    chain, deployment = small_network.chain, small_network.deployment
    token, staking = deployment.contract(chain, "CoveyToken"), deployment.contract(chain, "Staking")
    winner, junk = small_network.trainers[0], small_network.trainers[2]

    html = client.get(f"/accounts/{winner.address}").text
    assert figure(html, "cov") == token.functions.balanceOf(winner.address).call()
    assert figure(html, "self-stake") == staking.functions.stakeOf(winner.address, int(Role.TRAINER)).call()
    assert f"Arena task {small_network.task_id}" in html  # its reward, linked to the task
    assert small_network.delegator.address in html  # its delegator

    junk_page = client.get(f"/accounts/{junk.address.lower()}")  # any case works
    assert junk_page.status_code == 200
    assert "arena: submission below baseline" in junk_page.text

    delegator_page = client.get(f"/accounts/{small_network.delegator.address}").text
    bonded = staking.functions.delegationOf(small_network.delegator.address, winner.address, 0).call()
    assert f'data-value="{bonded}"' in delegator_page


@pytest.mark.parametrize(
    "path",
    [
        "/arena/tasks/999",
        "/arena/tasks/abc",
        "/arena/tasks/-1",
        "/accounts/0x123",
        "/accounts/0x000000000000000000000000000000000000dEaD",
        "/tx/0x1234",
        "/tx/0x" + "ab" * 32,
        "/compute/jobs/7",
        "/alliance/x",
        "/no/such/page",
        "/search?q=nothing-like-this",
        "/events?block=abc",
    ],
)
def test_bad_input_gets_a_friendly_404(client: TestClient, path: str) -> None:
    page = client.get(path)
    assert page.status_code == 404
    assert "Not found" in page.text
    assert 'id="error-message"' in page.text
    assert "Traceback" not in page.text and 'File "' not in page.text


def test_search_goes_to_the_right_page(client: TestClient, small_network: SmallNetwork) -> None:
    address = small_network.creator.address
    found = client.get("/search", params={"q": address.lower()}, follow_redirects=False)
    assert found.status_code == 303 and found.headers["location"] == f"/accounts/{address}"
    task = client.get("/search", params={"q": f"task {small_network.task_id}"}, follow_redirects=False)
    assert task.headers["location"] == f"/arena/tasks/{small_network.task_id}"

    events = client.get("/events", params={"contract": "Arena", "event": "TaskFinalized"}).text
    tx_hash = re.search(r'href="/tx/(0x[0-9a-f]{64})"', events)
    assert tx_hash is not None
    tx = client.get("/search", params={"q": tx_hash.group(1)})
    assert tx.status_code == 200 and "TaskFinalized" in tx.text and "success" in tx.text


def test_gateway_page_shows_models_payments_and_subsidy(client: TestClient, small_network: SmallNetwork) -> None:
    facts = small_network.gateway
    if facts is None:
        pytest.skip("this checkout has no HostRegistry")
    chain, deployment = small_network.chain, small_network.deployment
    html = client.get("/gateway").text
    assert figure(html, "requests") == len(facts.payments)
    assert figure(html, "revenue") == sum(facts.payments)
    payee = row(html, "payee", facts.payee)
    assert f'<td class="num">{facts.batched}</td>' in payee
    model = row(html, "model", facts.model_id)
    hosts = deployment.contract(chain, "HostRegistry")
    rate = hosts.functions.subsidyBps().call()
    subsidy = sum(amount * rate // (10_000 - rate) for amount in facts.host_paid)
    assert f'data-col="revenue" data-value="{sum(facts.host_paid)}"' in model
    assert f'data-col="subsidy" data-value="{subsidy}"' in model
    assert f'data-col="agent-price" data-value="{facts.price_per_1k * (10_000 - rate) // 10_000}"' in model


def test_capability_pages_say_what_is_not_deployed(client: TestClient) -> None:
    for path, name in (("/alliance", "Alliance"), ("/compute", "Market")):
        page = client.get(path)
        assert page.status_code == 200
        assert f"The {name} contract is not deployed" in page.text


def test_events_page_filters_and_pages(client: TestClient) -> None:
    everything = client.get("/events")
    assert everything.status_code == 200 and "page 1 of" in everything.text
    transfers = client.get("/events", params={"contract": "CoveyToken", "event": "Transfer", "page": "2"}).text
    assert "Transfer" in transfers and "Staked" not in transfers
    assert client.get("/events", params={"page": "zzz"}).status_code == 200  # a bad page number reads as 1


def test_status_api(client: TestClient, small_network: SmallNetwork) -> None:
    status = client.get("/api/status").json()
    assert status["chainId"] == small_network.chain.chain_id
    assert status["indexedBlock"] == status["headBlock"] == small_network.chain.block_number()
    assert status["deployed"] is True
