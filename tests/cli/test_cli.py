"""The `covey` command as a user runs it: deploy, wallets, faucet, staking, and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from covey.chain import Chain, dev_accounts
from covey.chain.deploy import load_deployment
from covey.chain.roles import Role

COVEY = [sys.executable, "-m", "covey.cli"]
DAY_S = 86_400


def run(home: Path, *args: str, password: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVEY_")}
    env["COVEY_HOME"] = str(home)
    if password is not None:
        env["COVEY_PASSWORD"] = password
    result = subprocess.run(
        [*COVEY, *args], env=env, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def assert_one_line_error(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.stderr


@pytest.fixture
def deployed_home(covey_home: Path) -> Path:
    # The stories here need an unbonding still running a few commands later: a public chain's week, not the
    # seconds a local chain gets by default.
    run(covey_home, "chain", "deploy", "--unbonding-delay", str(7 * DAY_S), "--commission-delay", str(DAY_S))
    return covey_home


def test_help_describes_every_group(covey_home: Path) -> None:
    top = run(covey_home, "--help").stdout
    for group in ("chain", "wallet", "stake", "demo"):
        assert group in top
    for group, commands in {
        "chain": ("deploy", "info", "serve"),
        "wallet": ("new", "list", "show", "balance", "faucet"),
        "stake": ("add", "delegate", "undelegate", "claim", "rewards", "unbond", "withdraw", "commission", "show"),
    }.items():
        text = run(covey_home, group, "--help").stdout
        for command in commands:
            assert command in text, f"{group} --help does not mention {command}"


def test_deploy_writes_manifest_and_info_reads_it(deployed_home: Path) -> None:
    info = json.loads(run(deployed_home, "chain", "info", "--json").stdout)
    assert info["backend"] == "embedded"
    manifest = json.loads((deployed_home / "deployments" / f"{info['chainId']}.json").read_text())
    assert manifest["chainId"] == info["chainId"]
    for name in ("CoveyToken", "USDToken", "Staking", "Treasury"):
        assert manifest["contracts"][name] == info["contracts"][name]
    assert info["block"] > 0


def test_deploy_on_a_local_chain_uses_delays_of_seconds_and_info_shows_an_honest_clock(covey_home: Path) -> None:
    deployed = json.loads(run(covey_home, "chain", "deploy", "--json").stdout)
    chain = Chain.embedded(covey_home / "chain")
    try:
        staking = chain.contract("Staking", deployed["contracts"]["Staking"])
        treasury = chain.contract("Treasury", deployed["contracts"]["Treasury"])
        assert staking.functions.unbondingDelay().call() <= 60
        assert staking.functions.commissionDelay().call() <= 60
        assert treasury.functions.epochLength().call() == 60
    finally:
        chain.close()

    shown = run(covey_home, "chain", "info", "--json")
    info = json.loads(shown.stdout)
    assert abs(info["clockOffsetS"]) <= 60 and abs(info["wallTime"] - time.time()) <= 60
    assert info["clockWarning"] is None and "warning" not in shown.stderr


def test_info_warns_when_the_chain_clock_is_far_from_wall_time(covey_home: Path) -> None:
    chain = Chain.embedded(covey_home / "chain")
    try:
        chain.increase_time(3 * DAY_S)  # as an older Covey's demo left it
    finally:
        chain.close()

    shown = run(covey_home, "chain", "info", "--json")
    info = json.loads(shown.stdout)
    assert 3 * DAY_S <= info["clockOffsetS"] <= 3 * DAY_S + 60
    assert info["clockWarning"].startswith("the chain clock is 3.0 days ahead of wall time")
    warnings = shown.stderr.strip().splitlines()
    assert warnings == [f"warning: {info['clockWarning']}"]
    assert "x402 payments signed from wall time are refused" in warnings[0]
    assert "warning: the chain clock is 3.0 days ahead" in run(covey_home, "chain", "info").stderr


def test_deploy_takes_delays_and_refuses_negative_ones(covey_home: Path) -> None:
    assert_one_line_error(run(covey_home, "chain", "deploy", "--unbonding-delay", "-1", check=False), "-1")
    run(covey_home, "chain", "deploy", "--unbonding-delay", "600", "--commission-delay", "0", "--epoch-length", "120")
    chain = Chain.embedded(covey_home / "chain")
    try:
        deployment = load_deployment(chain)
        staking, treasury = deployment.contract(chain, "Staking"), deployment.contract(chain, "Treasury")
        assert staking.functions.unbondingDelay().call() == 600
        assert staking.functions.commissionDelay().call() == 0
        assert treasury.functions.epochLength().call() == 120
    finally:
        chain.close()


def test_the_demo_refuses_a_suite_whose_delays_it_cannot_wait_out(deployed_home: Path) -> None:
    refused = run(deployed_home, "demo", check=False)
    assert_one_line_error(refused, "has a commission delay of 86,400 s and an unbonding delay of 604,800 s")
    assert "demo waits in real time" in refused.stderr


def test_wallet_faucet_stake_and_show(deployed_home: Path) -> None:
    created = json.loads(run(deployed_home, "wallet", "new", "alice", "--json", password="pw-alice").stdout)
    address = created["address"]
    keyfile = Path(created["keyfile"])
    assert keyfile.exists() and "alice" in keyfile.name
    listed = json.loads(run(deployed_home, "wallet", "list", "--json").stdout)
    assert {"name": "alice", "address": address} in listed

    run(deployed_home, "wallet", "faucet", "alice")
    balance = json.loads(run(deployed_home, "wallet", "balance", "alice", "--json").stdout)
    assert balance["cov_units"] == 10_000 * 10**18
    assert balance["usd_units"] == 1_000 * 10**6
    assert balance["eth_wei"] == 10 * 10**18

    run(deployed_home, "stake", "add", "validator", "250", "--from", "alice", password="pw-alice")
    run(deployed_home, "wallet", "faucet", "dev1")
    run(deployed_home, "stake", "delegate", address, "validator", "100", "--from", "dev1")
    shown = json.loads(run(deployed_home, "stake", "show", "alice", "--json").stdout)
    assert shown["roles"]["validator"]["self"] == 250 * 10**18
    assert shown["roles"]["validator"]["effective"] == 350 * 10**18

    run(deployed_home, "stake", "unbond", "validator", "50", "--from", "alice", password="pw-alice")
    shown = json.loads(run(deployed_home, "stake", "show", "alice", "--json").stdout)
    assert shown["roles"]["validator"]["self"] == 200 * 10**18
    assert [entry["amount"] for entry in shown["unbonding"]] == [50 * 10**18]
    early = run(deployed_home, "stake", "withdraw", "--from", "alice", password="pw-alice", check=False)
    assert_one_line_error(early, "staking: unbonding not finished")


def test_a_delegator_sees_and_claims_its_rewards(deployed_home: Path) -> None:
    operator, delegator = dev_accounts(3)[1:3]
    for name in ("dev1", "dev2"):
        run(deployed_home, "wallet", "faucet", name)
    run(deployed_home, "stake", "add", "validator", "300", "--from", "dev1")
    run(deployed_home, "stake", "delegate", operator.address, "validator", "100", "--from", "dev2")
    # A module pays the operator 40 COV: a quarter of the pool is delegated, so the delegator accrues 10 COV.
    chain = Chain.embedded(deployed_home / "chain")
    try:
        deployment = load_deployment(chain)
        owner = dev_accounts(1)[0]
        staking, token = deployment.contract(chain, "Staking"), deployment.contract(chain, "CoveyToken")
        chain.transact(staking.functions.setModule(owner.address, True), owner)
        chain.transact(token.functions.approve(staking.address, 40 * 10**18), owner)
        chain.transact(staking.functions.distributeReward(operator.address, int(Role.VALIDATOR), 40 * 10**18), owner)
    finally:
        chain.close()

    rewards = ("stake", "rewards", "dev1", "validator", "--account", "dev2", "--json")
    before = json.loads(run(deployed_home, *rewards).stdout)
    assert before["delegated"] == 100 * 10**18
    assert before["pending"] == 10 * 10**18
    balance = json.loads(run(deployed_home, "wallet", "balance", "dev2", "--json").stdout)["cov_units"]
    claimed = json.loads(run(deployed_home, "stake", "claim", "dev1", "validator", "--from", "dev2", "--json").stdout)
    assert claimed["action"] == "claimed" and claimed["operator"] == operator.address
    balance_after = json.loads(run(deployed_home, "wallet", "balance", "dev2", "--json").stdout)["cov_units"]
    assert balance_after == balance + 10 * 10**18
    after = json.loads(run(deployed_home, *rewards).stdout)
    assert after["pending"] == 0
    again = run(deployed_home, "stake", "claim", "dev1", "validator", "--from", "dev2", check=False)
    assert_one_line_error(again, "staking: no rewards to claim")
    assert delegator.address == before["delegator"]


def test_bad_input_gives_one_line_and_exit_1(deployed_home: Path) -> None:
    assert_one_line_error(run(deployed_home, "wallet", "show", "nobody", check=False), "unknown account")
    assert_one_line_error(run(deployed_home, "wallet", "balance", "0x1234", check=False), "malformed address")
    assert_one_line_error(
        run(deployed_home, "stake", "add", "validator", "--from", "dev1", "--", "-5", check=False), "positive"
    )
    assert_one_line_error(
        run(deployed_home, "stake", "add", "validator", "ten", "--from", "dev1", check=False), "malformed amount"
    )
    assert_one_line_error(
        run(deployed_home, "stake", "add", "wizard", "1", "--from", "dev1", check=False), "unknown role"
    )
    assert_one_line_error(
        run(deployed_home, "stake", "delegate", "0xnot-an-address", "validator", "1", "--from", "dev1", check=False),
        "malformed address",
    )

    run(deployed_home, "wallet", "new", "poor", password="right")
    wrong = run(deployed_home, "stake", "add", "trainer", "1", "--from", "poor", password="wrong", check=False)
    assert_one_line_error(wrong, "wrong password")
    # `poor` has no ETH for gas and no COV: the node or the token refuses, in one line.
    broke = run(deployed_home, "stake", "add", "trainer", "1", "--from", "poor", password="right", check=False)
    assert broke.returncode == 1 and len(broke.stderr.strip().splitlines()) == 1
    run(deployed_home, "wallet", "faucet", "poor")
    too_much = run(deployed_home, "stake", "add", "trainer", "20000", "--from", "poor", password="right", check=False)
    assert_one_line_error(too_much, "transfer amount exceeds balance")
    assert_one_line_error(run(deployed_home, "stake", "--bogus", check=False), "No such option")
