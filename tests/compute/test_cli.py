"""`covey market ...` and `covey provider run` as a user runs them, against a suite that includes the Market."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from covey.chain import Chain, dev_accounts
from covey.chain.deploy import SUITE_STEPS, deploy_suite
from covey.chain.faucet import fund
from covey.cli import market_cmd
from covey.compute.client import MarketClient, Resources
from covey.compute.provider import wait_for
from covey.errors import ChainError, ValidationError

COV = 10**18
USD = 10**6
PROGRAM = b"import sys\nopen('out.txt', 'w').write('unit ' + sys.argv[1])\n"


@pytest.fixture
def market_env(covey_home: Path, anvil_url: str, monkeypatch: pytest.MonkeyPatch) -> dict:
    """A suite with the Market on anvil, its manifest in COVEY_HOME, and funded dev3 (provider) and dev4 (buyer)."""
    from covey.chain.market_deploy import MARKET_STEPS

    monkeypatch.setenv("COVEY_RPC_URL", anvil_url)
    chain = Chain.from_rpc(anvil_url)
    owner = dev_accounts(1)[0]
    deployment = deploy_suite(chain, owner, steps=[*SUITE_STEPS, *MARKET_STEPS])
    for index in (3, 4):
        fund(chain, deployment, dev_accounts(index + 1)[index].address)
    program = covey_home / "prog.py"
    program.write_bytes(PROGRAM)
    return {
        "chain": chain,
        "deployment": deployment,
        "client": MarketClient.from_deployment(chain, deployment),
        "program": program,
        "home": covey_home,
        "rpc": anvil_url,
    }


def market(*args: str) -> dict | list:
    result = CliRunner().invoke(market_cmd.app, [*args, "--json"], catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def post_command_job(program: Path, *extra: str, bid_window_s: int = 5) -> dict:
    return market(
        "post",
        "--command",
        "python prog.py {unit}",
        "--input",
        f"prog.py={program}",
        "--output",
        "out.txt",
        "--units",
        "2",
        "--max-price",
        "0.00002",
        "--seconds-per-unit",
        "10",
        "--bid-window",
        str(bid_window_s),
        "--heartbeat",
        "30",
        "--from",
        "dev4",
        *extra,
    )


def test_post_list_bid_and_status(market_env) -> None:
    client: MarketClient = market_env["client"]
    provider = dev_accounts(4)[3]
    client.stake_provider(provider, market_env["deployment"].contract(market_env["chain"], "CoveyToken"), 100 * COV)
    client.register_offer(provider, Resources(4, 8192, 0), 10)

    offers = market("offers")
    assert offers == [
        {
            "provider": provider.address,
            "cpuCores": 4,
            "memoryMb": 8192,
            "gpus": 0,
            "pricePerUnitSecond": 10,
            "stake": 100 * COV,
            "active": True,
        }
    ]

    # Nothing here waits for the window to close: a long one keeps the bid inside it on a slow machine.
    posted = post_command_job(market_env["program"], bid_window_s=3_600)
    assert (posted["kind"], posted["units"], posted["escrow"]) == ("command", 2, 20 * 2 * 10)
    job_id = posted["jobId"]
    listed = market("jobs", "--status", "open")
    assert [job["jobId"] for job in listed] == [job_id]

    bid = market("bid", str(job_id), "0.000012", "--from", "dev3")
    assert bid["pricePerUnitSecond"] == 12
    status = market("status", str(job_id))
    assert status["status"] == "open" and status["spec"] == posted["spec"]
    assert status["bids"] == [{"provider": provider.address, "pricePerUnitSecond": 12, "stake": 100 * COV}]
    assert [unit["verdict"] for unit in status["units"]] == ["none", "none"]

    with pytest.raises(ChainError, match="market: price above max"):
        market("bid", str(job_id), "0.5", "--from", "dev3")
    with pytest.raises(ValidationError, match="unknown job status"):
        market("jobs", "--status", "sleeping")


def test_a_buyer_who_cannot_pay_the_escrow_is_refused(market_env) -> None:
    with pytest.raises(ChainError, match="market: escrow short"):
        post_command_job(market_env["program"], "--max-price", "1000")
    assert market("jobs") == []


def test_post_needs_exactly_one_kind_of_job(market_env) -> None:
    with pytest.raises(ValidationError, match="exactly one of"):
        market("post", "--max-price", "0.00001", "--from", "dev4")


@pytest.mark.e2e
def test_provider_run_wins_and_runs_a_job(market_env) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVEY_")}
    env |= {"COVEY_HOME": str(market_env["home"]), "COVEY_RPC_URL": market_env["rpc"]}
    command = [
        sys.executable,
        "-c",
        "from covey.cli.provider_cmd import app; app()",
        "run",
        "--price",
        "0.00001",
        "--cpu",
        "2",
        "--stake",
        "100",
        "--max-jobs",
        "1",
        "--poll",
        "0.3",
        "--from",
        "dev3",
        "--json",
    ]
    provider = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Post only once the provider is up (its offer is on chain), or it could miss the 5 s bid window.
        client: MarketClient = market_env["client"]
        assert wait_for(lambda: client.offer(dev_accounts(4)[3].address) is not None, 120)
        job_id = post_command_job(market_env["program"])["jobId"]
        out, err = provider.communicate(timeout=90)
    finally:
        if provider.poll() is None:
            provider.kill()
    assert provider.returncode == 0, err
    summary = json.loads(out[out.index("{\n") :])
    assert summary["jobsWon"] == 1 and summary["unitsRun"] == 2 and summary["jobs"] == [job_id]
    status = market("status", str(job_id))
    assert status["status"] == "verifying"
    assert all(unit["resultHash"] for unit in status["units"])
    assert any("units run with namespace isolation" in line for line in out.splitlines()) or os.geteuid() != 0

    # The outputs were sealed to the buyer (dev4): only its key opens them.
    folder = market_env["home"] / "results"
    fetched = market("results", str(job_id), "--out", str(folder), "--from", "dev4")
    assert fetched["sealed"] and [item["unit"] for item in fetched["outputs"]] == [0, 1]
    assert (folder / "unit-1" / "out.txt").read_text() == "unit 1"
    with pytest.raises(ValidationError, match="this key does not open the sealed output"):
        market("results", str(job_id), "--out", str(folder / "theirs"), "--from", "dev3")


def test_market_algorithm_prints_the_code_hash_an_owner_approves(tmp_path: Path) -> None:
    from covey.compute.c2d import algorithm_digest
    from covey.compute.jobs import CommandJob, job_to_bytes

    job = CommandJob(
        argv=["python", "program.py", "private.npz"],
        inputs={"program.py": "ab" * 32},
        outputs=["stats.json"],
        private_data="cd" * 32,
    )
    spec = tmp_path / "job.json"
    spec.write_bytes(job_to_bytes(job))
    assert market("algorithm", "--job", str(spec))["algorithm"] == algorithm_digest(job)


def test_provider_run_parses_approvals() -> None:
    from covey.cli.provider_cmd import _parse_approval

    assert _parse_approval("ab" * 32) == ("ab" * 32, None)
    assert _parse_approval(f"sha256:{'ab' * 32}:4096") == ("ab" * 32, 4096)
    with pytest.raises(ValidationError):
        _parse_approval("not-a-digest:12")
