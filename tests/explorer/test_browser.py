"""The explorer in a real browser (Playwright driving Debian's Chromium) against a chain where the demo ran.

It loads every page, clicks task -> leaderboard -> account checking the figures against the chain's own
views, watches a page follow a new transaction without a reload, and saves screenshots to
bench/results/screens/. The demo plays every stage this checkout has (COVEY_EXPLORER_E2E_STAGES=token,arena
picks fewer) on a suite with every capability's contracts.
"""

from __future__ import annotations

import importlib
import io
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import uvicorn
from rich.console import Console

from covey.chain import Chain, dev_accounts
from covey.chain.deploy import Deployment, deploy_suite
from covey.config import get_settings
from covey.demo.runner import Stage, run_demo
from covey.explorer import create_app
from covey.explorer.formatting import score

from .conftest import COV, REPO_ROOT, SMALL_SUITE, make_home

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-gpu",
]
SCREENS = REPO_ROOT / "bench" / "results" / "screens"
CAPABILITY_STAGES = (
    ("arena", "covey.demo.arena_stage", "arena_stage", "Arena"),
    ("alliance", "covey.demo.alliance_stage", "alliance_stage", "Alliance"),
    ("compute", "covey.demo.compute_stage", "compute_stage", "Compute market"),
)


@dataclass
class DemoNetwork:
    chain: Chain
    deployment: Deployment
    base_url: str
    stages: list[str]
    summary: dict[str, Any]


def demo_stages() -> list[Stage]:
    """The demo's stages, plus the capability stages this checkout has that the demo does not list yet."""
    from covey.demo.stages import STAGES

    stages = list(STAGES)
    for name, module, function, title in CAPABILITY_STAGES:
        if name not in {stage.name for stage in stages}:
            try:
                stages.append(Stage(name, title, getattr(importlib.import_module(module), function)))
            except ModuleNotFoundError:
                continue
    chosen = os.environ.get("COVEY_EXPLORER_E2E_STAGES")
    if chosen:
        names = {name.strip() for name in chosen.split(",")}
        stages = [stage for stage in stages if stage.name in names]
    return stages


def full_suite(chain: Chain) -> Deployment:
    try:
        from covey.chain.suite import suite_steps

        steps = suite_steps()
    except ModuleNotFoundError:
        steps = SMALL_SUITE
    # The local chain's own delays (seconds): the demo that runs on this suite waits them out in real time.
    return deploy_suite(chain, dev_accounts(1)[0], steps=steps)


@pytest.fixture(scope="module")
def demo_network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoNetwork]:
    """A data directory where the demo ran, and the explorer serving it (indexing in its own thread)."""
    home = make_home(tmp_path_factory.mktemp("explorer-demo"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COVEY_HOME", str(home))
        patch.delenv("COVEY_RPC_URL", raising=False)
        patch.delenv("COVEY_STORE_URL", raising=False)
        with Chain.embedded(home / "chain") as chain:
            full_suite(chain)
        stages = demo_stages()
        summary = run_demo(stages, get_settings(), Console(file=io.StringIO(), width=160))
        chain = Chain.embedded(home / "chain")
        deployment = full_deployment(chain)
        server = uvicorn.Server(uvicorn.Config(create_app(chain), host="127.0.0.1", port=0, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 60
            while not server.started and time.monotonic() < deadline:
                time.sleep(0.05)
            port = server.servers[0].sockets[0].getsockname()[1]
            names = [stage.name for stage in stages]
            yield DemoNetwork(chain, deployment, f"http://127.0.0.1:{port}", names, summary)
        finally:
            server.should_exit = True
            thread.join(timeout=30)
            chain.close()


def full_deployment(chain: Chain) -> Deployment:
    from covey.chain.deploy import load_deployment

    return load_deployment(chain)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail("Chromium is missing: run scripts/install-browser.sh (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright is missing: pip install playwright (the browser is Debian's, not Playwright's)")

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser, demo_network: DemoNetwork) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=demo_network.base_url)
    tab = context.new_page()
    yield tab
    context.close()


def caught_up(demo_network: DemoNetwork, page: Page, timeout_s: float = 60) -> None:
    """Wait until the explorer's index has reached the chain's head."""
    head = demo_network.chain.block_number()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = page.request.get("/api/status").json()
        if status["indexedBlock"] >= head:
            return
        time.sleep(0.5)
    pytest.fail(f"the explorer did not index up to block {head} in {timeout_s}s")


def shoot(page: Page, name: str, *, full: bool = False) -> None:
    SCREENS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENS / f"{name}.png"), full_page=full)


def test_every_page_loads(page: Page, demo_network: DemoNetwork) -> None:
    caught_up(demo_network, page)
    paths = {"overview": "/", "arena": "/arena", "alliance": "/alliance", "gateway": "/gateway",
             "compute": "/compute", "events": "/events"}  # fmt: skip
    contracts = demo_network.deployment.contracts
    if "Alliance" in contracts and "alliance" in demo_network.stages:
        paths["alliance-run"] = "/alliance/1"
    if "Market" in contracts and "compute" in demo_network.stages:
        paths["compute-job"] = "/compute/jobs/1"
    for name, path in paths.items():
        response = page.goto(path)
        assert response.status == 200, f"{path} answered {response.status}"
        assert page.locator("main#content h1").first.is_visible()
        assert "Something went wrong" not in page.content()
        shoot(page, name, full=name in ("alliance-run", "compute-job"))
    overview = page.goto("/")
    assert overview.status == 200
    supply = demo_network.deployment.contract(demo_network.chain, "CoveyToken").functions.totalSupply().call()
    shown = page.locator('[data-figure="cov-supply"]').get_attribute("data-value")
    assert int(shown) == supply


def test_task_leaderboard_account_click_through(page: Page, demo_network: DemoNetwork) -> None:
    if "arena" not in demo_network.stages:
        pytest.skip("the demo ran without its Arena stage")
    chain, deployment = demo_network.chain, demo_network.deployment
    arena = deployment.contract(chain, "Arena")
    caught_up(demo_network, page)
    page.goto("/arena")
    shoot(page, "arena-tasks")
    page.locator("a.task-link", has_text="task 1").click()
    page.wait_for_url("**/arena/tasks/1")
    leaderboard = page.locator("#leaderboard")
    assert leaderboard.is_visible()
    shoot(page, "arena-leaderboard", full=True)

    submissions = arena.functions.submissions(1).call()
    for trainer, _commitment, _weights, _uri, revealed, consensus, rank, payout, slashed in submissions:
        row = leaderboard.locator(f'tr[data-trainer="{trainer}"]')
        if revealed and rank:
            assert int(row.locator('[data-col="consensus"]').get_attribute("data-value")) == consensus
            assert row.locator('[data-col="consensus"]').inner_text() == score(consensus)
        assert int(row.locator('[data-col="payout"]').get_attribute("data-value")) == payout
        assert int(row.locator('[data-col="slashed"]').get_attribute("data-value")) == slashed
    for validator in arena.functions.validatorsOf(1).call():
        row = page.locator(f'#validators tr[data-validator="{validator[0]}"]')
        assert int(row.locator('[data-col="deviation"]').get_attribute("data-value")) == validator[4]
        assert int(row.locator('[data-col="payout"]').get_attribute("data-value")) == validator[5]

    winner = arena.functions.consensusModel(1).call()[0]
    leaderboard.locator(f'tr[data-trainer="{winner}"] td.trainer a').click()
    page.wait_for_url(f"**/accounts/{winner}")
    shoot(page, "account-winner", full=True)
    token, staking = deployment.contract(chain, "CoveyToken"), deployment.contract(chain, "Staking")
    cov = page.locator('[data-figure="cov"]').get_attribute("data-value")
    assert int(cov) == token.functions.balanceOf(winner).call()
    own = page.locator('#stakes tr[data-role="trainer"] [data-col="own"]').get_attribute("data-value")
    assert int(own) == staking.functions.stakeOf(winner, 0).call()
    assert page.locator("#rewards").get_by_text("Arena task 1").first.is_visible()


def test_alliance_accuracy_matches_what_the_demo_measured(page: Page, demo_network: DemoNetwork) -> None:
    """The explorer re-evaluates each round's global model from the store; the demo's coordinator did too."""
    if "alliance" not in demo_network.stages:
        pytest.skip("the demo ran without its Alliance stage")
    reported = demo_network.summary["stages"]["alliance"]
    caught_up(demo_network, page)
    page.goto(f"/alliance/{reported['allianceId']}")
    # Scoring runs in the background (torch loads first); the page swaps itself in when it is done.
    page.wait_for_function(
        "document.querySelector('#rounds tr[data-round=\"1\"] td[data-col=accuracy]').dataset.value !== ''",
        timeout=120_000,
    )
    for number, accuracy in enumerate(reported["accuracyPerRound"], start=1):
        cell = page.locator(f'#rounds tr[data-round="{number}"] td[data-col="accuracy"]')
        assert float(cell.get_attribute("data-value")) == pytest.approx(accuracy, abs=1e-9)
    assert page.locator("#accuracy-chart svg circle").count() == len(reported["accuracyPerRound"]) + 1
    shoot(page, "alliance-accuracy")


def test_a_page_follows_the_chain_without_reloading(page: Page, demo_network: DemoNetwork) -> None:
    chain, deployment = demo_network.chain, demo_network.deployment
    caught_up(demo_network, page)
    page.goto("/")
    page.evaluate("window.__sameDocument = true")
    before = int(page.locator("#event-count").inner_text().replace(",", ""))
    token = deployment.contract(chain, "CoveyToken")
    chain.transact(token.functions.transfer(dev_accounts(4)[3].address, 5 * COV), dev_accounts(1)[0])
    page.wait_for_function(
        f"parseInt(document.getElementById('event-count').textContent.replace(/,/g, '')) > {before}",
        timeout=30_000,
    )
    assert page.evaluate("window.__sameDocument") is True
    assert page.locator("#recent").get_by_text("Transfer").first.is_visible()


def test_search_box_and_friendly_errors(page: Page, demo_network: DemoNetwork) -> None:
    caught_up(demo_network, page)
    address = dev_accounts(1)[0].address
    page.goto("/")
    page.fill("#search", address.lower())
    page.press("#search", "Enter")
    page.wait_for_url(f"**/accounts/{address}")
    assert page.locator("#account-address").inner_text() == address

    page.fill("#search", "no such thing")
    page.press("#search", "Enter")
    page.wait_for_load_state()
    assert "nothing matches" in page.locator("#error-message").inner_text()
    shoot(page, "not-found")
    for path in ("/arena/tasks/424242", "/accounts/0xnothex", "/compute/jobs/x"):
        response = page.goto(path)
        assert response.status == 404
        assert page.locator("#error-message").is_visible()
        assert "Traceback" not in page.content()
