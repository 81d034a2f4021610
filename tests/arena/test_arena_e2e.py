"""End to end: a whole task with every adversary, then real node processes that finish a task on their own.

1. In process, in real time (phases of seconds): three honest trainers, a copycat, a replay copycat and a
   junk trainer; four honest validators, a lazy one and a colluding pair. Every adversary loses stake or
   gains nothing, the honest ranking stands, and the chain settles exactly as `covey.arena.scoring.settle`
   predicts.
2. `covey chain serve` plus separate `covey node run` processes, each with its own data directory,
   sharing only the chain and the artifact store: they complete a task in real time with nobody driving.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount

from covey.arena import ArenaClient, Deadlines, post_task
from covey.arena.report import predict, task_report
from covey.arena.scenario import (
    ADVERSARIES,
    HONEST_TRAINERS,
    HONEST_VALIDATORS,
    balances,
    build_nodes,
    cast,
    fund_and_stake,
    play,
    post,
    staking_flows,
)
from covey.chain import Chain, dev_accounts
from covey.chain.deploy import Deployment, manifest_path
from covey.chain.faucet import fund
from covey.chain.roles import Role
from covey.ml import TaskSpec, default_spec
from covey.ml.train import TrainConfig, train
from covey.storage import open_store
from tests.arena.conftest import CLI_ENTRY, COV, ArenaEnv, deploy_with_arena
from tests.support import free_port, wait_for_rpc

pytestmark = pytest.mark.e2e


def test_a_task_with_every_adversary_settles_honestly(arena_env: ArenaEnv) -> None:
    env = arena_env
    actors = cast()
    fund_and_stake(env.chain, env.deployment, env.client, actors)
    before = balances(env.client, actors)
    treasury = env.deployment.address("Treasury")
    treasury_before = int(env.client.token.functions.balanceOf(treasury).call())
    first_block = env.chain.block_number() + 1
    posted = post(env.client, env.store, env.home, actors)
    nodes = build_nodes(env.client, env.store, env.home, actors)

    predicted = {}

    def before_finalize(phase: object) -> None:
        if str(getattr(phase, "label", "")) == "finalisable":
            predicted["settlement"] = predict(env.client, env.client.task(posted.task_id))

    play(env.client, nodes, posted.task_id, on_phase=before_finalize)
    report = task_report(env.client, posted.task_id)
    after = balances(env.client, actors)
    flows = staking_flows(env.client, first_block)
    name_of = {actor.address: name for name, actor in actors.items()}
    rows = {name_of[row["trainer"]]: row for row in report["submissions"]}
    judges = {name_of[row["validator"]]: row for row in report["validators"]}

    # The honest ranking stands: the three honest trainers take ranks 1-3 and every paid place.
    assert {name for name, row in rows.items() if row["rank"] in (1, 2, 3)} == set(HONEST_TRAINERS)
    assert all(rows[name]["eligible"] and rows[name]["payout"] > 0 for name in HONEST_TRAINERS)
    assert name_of[report["winner"]] in HONEST_TRAINERS
    # The colluders could not lift junk: its consensus is what the honest validators measured.
    honest_scores = env.client.revealed_scores(posted.task_id, actors["val-1"].address)
    junk_position = [row["index"] for row in report["submissions"] if row["revealed"]]
    assert rows["junk"]["consensusScore"] == honest_scores[sorted(junk_position).index(rows["junk"]["index"])]
    assert rows["copycat"]["consensusScore"] == 0 and not rows["replayer"]["revealed"]

    # Every adversary loses stake or gains nothing; honest participants lose nothing.
    for name in ADVERSARIES:
        address = actors[name].address
        assert flows.get(address, {}).get("reward", 0) == 0, name
        assert after[address]["stake"] < before[address]["stake"], name
        assert after[address]["cov"] <= before[address]["cov"], name
    for name in (*HONEST_TRAINERS, *HONEST_VALIDATORS):
        address = actors[name].address
        assert after[address]["stake"] == before[address]["stake"], name
        assert after[address]["cov"] > before[address]["cov"], name
    assert all(judges[name]["slashed"] > 0 for name in ("lazy", "colluder-1", "colluder-2"))

    # Money: the pool is fully accounted for, and every slash reached the Treasury.
    assert report["trainerPaid"] + report["validatorPaid"] + report["refunded"] == report["rewardPool"]
    slashed = sum(flow["slashed"] for flow in flows.values())
    assert int(env.client.token.functions.balanceOf(treasury).call()) - treasury_before == slashed
    # Ada's delegator gets its share of ada's reward minus ada's 10% commission on it.
    commission = flows[actors["ada"].address]["commission"]
    pending = int(
        env.client.staking.functions.pendingRewards(
            actors["delegator"].address, actors["ada"].address, Role.TRAINER
        ).call()
    )
    assert commission > 0 and abs(pending - 9 * commission) <= 10

    # The chain decided exactly what the Python mirror of `finalize` predicted.
    settlement = predicted["settlement"]
    for outcome, sub in zip(settlement.submissions, env.client.submissions(posted.task_id), strict=True):
        assert (outcome.rank, outcome.payout, outcome.slashed) == (sub.rank, sub.payout, sub.slashed)
        assert outcome.consensus_score == sub.consensus_score
    for outcome, record in zip(settlement.validators, env.client.validators(posted.task_id), strict=True):
        assert (outcome.payout, outcome.slashed, outcome.mean_deviation) == (
            record.payout,
            record.slashed,
            record.mean_deviation,
        )


# -- separate processes -----------------------------------------------------------------------------------


def _env(home: Path, store: Path, rpc_url: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVEY_")}
    env.update(COVEY_HOME=str(home), COVEY_STORE_URL=str(store), PYTHONUNBUFFERED="1")
    if rpc_url:
        env["COVEY_RPC_URL"] = rpc_url
    return env


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", CLI_ENTRY, *args],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )


def _wait_for_line(log: Path, text: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if log.exists() and text in log.read_text(errors="replace"):
            return
        time.sleep(0.2)
    raise AssertionError(f"{log.name} never said {text!r}:\n{log.read_text(errors='replace')}")


def _stake(
    chain: Chain, client: ArenaClient, deployment: Deployment, account: LocalAccount, role: Role, cov: int
) -> None:
    fund(chain, deployment, account.address)
    chain.transact(client.token.functions.approve(client.staking.address, cov * COV), account)
    chain.transact(client.staking.functions.stake(role, cov * COV), account)


def _time_training(spec: TaskSpec, epochs: int) -> float:
    """Seconds this machine takes now to train `spec`'s model for `epochs` on one thread, as a trainer node does."""
    hints = spec.train
    config = TrainConfig(
        epochs=epochs, lr=hints.lr, batch_size=hints.batch_size, max_steps=hints.max_steps, seed=1, num_threads=1
    )
    data = spec.load_split().public_train
    started = time.monotonic()
    train(spec.build_model(), data, config, progress=False)
    return time.monotonic() - started


def test_node_processes_complete_a_task_on_their_own(covey_home: Path, tmp_path: Path) -> None:
    store_dir = tmp_path / "shared-store"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server_log = tmp_path / "chain.log"
    server = subprocess.Popen(
        [sys.executable, "-c", CLI_ENTRY, "chain", "serve", "--port", str(port)],
        env=_env(covey_home, store_dir),
        stdout=server_log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        wait_for_rpc(url, timeout_s=60)
        chain = Chain.from_rpc(url)
        deployment = deploy_with_arena(chain)
        client = ArenaClient.from_deployment(chain, deployment)
        accounts = dev_accounts(8)
        trainers = {"dev1": ["--epochs", "10"], "dev2": ["--epochs", "5"], "dev3": ["--adversary", "junk"]}
        validators = {"dev4": 1_000, "dev5": 1_000, "dev6": 500}  # dev6 is lazy, with a third of the stake
        for name in trainers:
            _stake(chain, client, deployment, accounts[int(name[3:])], Role.TRAINER, 10)
        for name, cov in validators.items():
            _stake(chain, client, deployment, accounts[int(name[3:])], Role.VALIDATOR, cov)

        # Each node has its own data directory: it knows the chain, the deployment and the shared store.
        homes = {}
        for name in [*trainers, *validators]:
            home = tmp_path / f"home-{name}"
            (home / "deployments").mkdir(parents=True)
            shutil.copy(manifest_path(chain.chain_id), home / "deployments")
            (home / "cache").mkdir()  # share compiled contracts, as every test home does
            (home / "cache" / "contracts").symlink_to((covey_home / "cache" / "contracts").resolve())
            homes[name] = home
        for name, options in trainers.items():
            args = ["node", "run", "--role", "trainer", "--from", name, "--max-tasks", "1", "--poll", "0.5", *options]
            processes[name] = _start(args, _env(homes[name], store_dir, url), tmp_path / f"{name}.log")
        for name in validators:
            args = ["node", "run", "--role", "validator", "--from", name, "--max-tasks", "1", "--poll", "0.5"]
            args += ["--adversary", "lazy"] if name == "dev6" else []
            processes[name] = _start(args, _env(homes[name], store_dir, url), tmp_path / f"{name}.log")
        for name in processes:
            _wait_for_line(tmp_path / f"{name}.log", "watching chain", timeout_s=120)

        spec = default_spec("digits")
        # Real-time phases must fit the nodes' work on this machine as loaded now: two trainers train at
        # once (the slower for 10 epochs), then validators score every submission. Time that training.
        train_s = _time_training(spec, epochs=10)
        phases_s = (30 + math.ceil(4 * train_s), 20 + math.ceil(train_s), 30 + math.ceil(2 * train_s), 20)
        creator = accounts[7]
        fund(chain, deployment, creator.address)
        posted = post_task(
            client,
            creator,
            open_store(str(store_dir), covey_home),
            covey_home,
            spec,
            reward_pool=100 * COV,
            deadlines=Deadlines.after(client.now(), *phases_s),
            min_trainer_stake=10 * COV,
            min_validator_stake=100 * COV,
        )
        for name in validators:  # the creator hands the key to its validators, and only to them
            keys = homes[name] / "arena" / "keys"
            keys.mkdir(parents=True, exist_ok=True)
            shutil.copy(posted.key_path, keys)

        for name, process in processes.items():
            log = (tmp_path / f"{name}.log").read_text
            assert process.wait(timeout=sum(phases_s) + 240) == 0, log(errors="replace")
        report = task_report(client, posted.task_id)
        assert report["settled"]
        by_trainer = {row["trainer"]: row for row in report["submissions"]}
        assert {row["trainer"] for row in report["submissions"]} == {accounts[i].address for i in (1, 2, 3)}
        assert by_trainer[accounts[3].address]["slashed"] > 0 and not by_trainer[accounts[3].address]["eligible"]
        assert report["winner"] in (accounts[1].address, accounts[2].address)
        # Both honest trainers are judged on merit: independent models, neither mistaken for a copy.
        assert by_trainer[accounts[1].address]["eligible"] and by_trainer[accounts[2].address]["eligible"]
        judged = {row["validator"]: row for row in report["validators"]}
        assert judged[accounts[6].address]["slashed"] > 0
        assert all(judged[accounts[i].address]["payout"] > 0 for i in (4, 5))
        for name in trainers:  # trainers never held the validation key
            assert not (homes[name] / "arena" / "keys").exists() or not any((homes[name] / "arena" / "keys").iterdir())
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def test_a_node_stops_cleanly_on_sigterm(covey_home: Path, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    store_dir = tmp_path / "store"
    server = subprocess.Popen(
        [sys.executable, "-c", CLI_ENTRY, "chain", "serve", "--port", str(port)],
        env=_env(covey_home, store_dir),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_rpc(url, timeout_s=60)
        deploy_with_arena(Chain.from_rpc(url))
        log = tmp_path / "node.log"
        node = _start(
            ["node", "run", "--role", "validator", "--from", "dev4", "--json"], _env(covey_home, store_dir, url), log
        )
        _wait_for_line(log, "watching chain", timeout_s=120)
        node.send_signal(signal.SIGTERM)
        assert node.wait(timeout=30) == 0
        summary = json.loads(log.read_text()[log.read_text().index("{") :])
        assert summary["stoppedBy"] == "signal SIGTERM"
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)
