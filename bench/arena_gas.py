"""Arena gas benchmark: gas of commitSubmission, revealSubmission, commitScores, revealScores and finalize for
4, 16 and 64 submissions with 4 and 16 validators, on a fresh suite per size. Prints a table, writes
bench/results/arena_gas.json and returns the numbers (`BENCH_ARENA_BACKEND=embedded` to use the embedded chain).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from rich.console import Console
from rich.table import Table
from web3 import Web3
from web3.contract.contract import ContractFunction

from covey.chain import Chain, dev_accounts
from covey.chain.arena_deploy import deploy_arena, scores_commitment, submission_commitment
from covey.chain.deploy import deploy_suite

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "arena_gas.json"
SIZES: list[tuple[int, int]] = [(4, 4), (16, 4), (64, 4), (4, 16), (16, 16), (64, 16)]
ACTIONS = ("commitSubmission", "revealSubmission", "commitScores", "revealScores", "finalize")
COLUMN_NAMES = {
    "commitSubmission": "commit",
    "revealSubmission": "reveal",
    "commitScores": "commitScores",
    "revealScores": "revealScores",
    "finalize": "finalize",
}
BLOCK_GAS_LIMIT = 30_000_000
COV = 10**18
SCORE = 10**6
TRAINER, VALIDATOR = 0, 1
PHASE_S = 3_600
PRE_FUNDED_ACCOUNTS = 10
console = Console()


def _sent_gas(chain: Chain, fn: ContractFunction, sender: LocalAccount) -> int:
    return int(chain.transact(fn, sender)["gasUsed"])


def _scores(submissions: int, validator_index: int) -> list[int]:
    """Validator `validator_index`'s scores: a quality ladder from 8.0 down, with +-0.001 of honest noise."""
    noise = (validator_index % 3 - 1) * 1_000
    return [8 * SCORE - i * SCORE // 10 + noise for i in range(submissions)]


def measure_task(chain: Chain, submissions: int, validators: int) -> dict[str, int]:
    """Play one task with `submissions` trainers and `validators` validators; the most gas each action took.

    Every trainer and validator is staked; the bottom quarter of submissions score under the baseline, so
    `finalize` also pays for slashes (top 3 paid, every validator paid).
    """
    owner = dev_accounts(1)[0]
    deployment = deploy_suite(chain, owner, unbonding_delay_s=1, commission_delay_s=0)
    arena = chain.contract("Arena", deploy_arena(chain, deployment, owner))
    cov = deployment.contract(chain, "CoveyToken")
    staking = deployment.contract(chain, "Staking")
    people = dev_accounts(1 + submissions + validators)[1:]
    trainers, judges = people[:submissions], people[submissions:]
    min_trainer_stake, min_validator_stake = 100 * COV, 1_000 * COV
    for index, account in enumerate(people, start=1):
        if index >= PRE_FUNDED_ACCOUNTS:
            chain.send_eth(owner, account.address, 10**18)
        role, amount = (TRAINER, min_trainer_stake) if account in trainers else (VALIDATOR, min_validator_stake)
        chain.transact(cov.functions.transfer(account.address, amount), owner)
        chain.transact(cov.functions.approve(staking.address, amount), account)
        chain.transact(staking.functions.stake(role, amount), account)

    pool = 10_000 * COV
    chain.transact(cov.functions.approve(arena.address, pool), owner)
    now = chain.timestamp()
    submit, reveal, score_commit, score_reveal = (now + PHASE_S * step for step in (1, 2, 3, 4))
    baseline = _scores(submissions, 1)[submissions - submissions // 4 - 1]
    deadlines = (submit, reveal, score_commit, score_reveal)
    stakes = (min_trainer_stake, min_validator_stake)
    create = arena.functions.createTask(Web3.keccak(text="bench"), pool, *deadlines, 3, *stakes, baseline, SCORE)
    chain.transact(create, owner)
    task_id = int(arena.functions.taskCount().call())
    gas: dict[str, list[int]] = {action: [] for action in ACTIONS}
    salt = b"\x01" * 32
    weights = {t.address: bytes(Web3.keccak(text=f"weights:{t.address}")) for t in trainers}

    for trainer in trainers:
        commitment = submission_commitment(weights[trainer.address], salt, trainer.address)
        gas["commitSubmission"].append(_sent_gas(chain, arena.functions.commitSubmission(task_id, commitment), trainer))
    _advance_to(chain, submit)
    for trainer in trainers:
        uri = f"file://artifacts/{weights[trainer.address].hex()}"
        fn = arena.functions.revealSubmission(task_id, weights[trainer.address], salt, uri)
        gas["revealSubmission"].append(_sent_gas(chain, fn, trainer))
    _advance_to(chain, reveal)
    for index, judge in enumerate(judges):
        commitment = scores_commitment(_scores(submissions, index), salt, judge.address)
        gas["commitScores"].append(_sent_gas(chain, arena.functions.commitScores(task_id, commitment), judge))
    _advance_to(chain, score_commit)
    for index, judge in enumerate(judges):
        fn = arena.functions.revealScores(task_id, _scores(submissions, index), salt)
        gas["revealScores"].append(_sent_gas(chain, fn, judge))
    _advance_to(chain, score_reveal)
    gas["finalize"].append(_sent_gas(chain, arena.functions.finalize(task_id), owner))
    return {action: max(used) for action, used in gas.items()}


def _advance_to(chain: Chain, timestamp: int) -> None:
    gap = timestamp - chain.timestamp()
    if gap > 0:
        chain.increase_time(gap)


def measure_gas(chain: Chain, sizes: list[tuple[int, int]] | None = None) -> dict[str, dict[str, int]]:
    """Gas per action for each (submissions, validators) size, keyed "<submissions>x<validators>"."""
    results: dict[str, dict[str, int]] = {}
    for submissions, validators in sizes or SIZES:
        with console.status(f"arena gas: {submissions} submissions, {validators} validators"):
            results[f"{submissions}x{validators}"] = measure_task(chain, submissions, validators)
    return results


def print_table(results: dict[str, dict[str, int]]) -> None:
    console.print("Arena gas per call (max over a task's calls; finalize pays the top 3 and slashes 1/4 as junk)")
    table = Table()
    table.add_column("subs x vals")
    for action in ACTIONS:
        table.add_column(COLUMN_NAMES[action], justify="right")
    for size, row in results.items():
        table.add_row(size, *(f"{row[action]:,}" for action in ACTIONS))
    console.print(table)
    worst = max(row["finalize"] for row in results.values())
    console.print(f"worst finalize: {worst:,} gas = {worst / BLOCK_GAS_LIMIT:.0%} of a {BLOCK_GAS_LIMIT:,} block")


@contextmanager
def _bench_chain(backend: str) -> Iterator[Chain]:
    """A throwaway chain: a fresh anvil node (default) or a fresh embedded chain, in a temporary COVEY_HOME."""
    with tempfile.TemporaryDirectory() as home:
        os.environ["COVEY_HOME"] = home
        os.environ.pop("COVEY_RPC_URL", None)
        if backend == "embedded":
            with Chain.embedded(Path(home) / "chain") as chain:
                yield chain
            return
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        anvil = REPO / "node_modules" / ".bin" / "anvil"
        proc = subprocess.Popen(
            [str(anvil), "--port", str(port), "--silent", "--max-persisted-states", "0"], stdout=subprocess.DEVNULL
        )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while not Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 2})).is_connected():
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"anvil did not start at {url}")
                time.sleep(0.2)
            yield Chain.from_rpc(url)
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def main() -> dict[str, Any]:
    backend = os.environ.get("BENCH_ARENA_BACKEND", "anvil")
    with _bench_chain(backend) as chain:
        gas = measure_gas(chain)
    print_table(gas)
    results: dict[str, Any] = {
        "backend": backend,
        "gas": gas,
        "block_gas_limit": BLOCK_GAS_LIMIT,
        "finalize_fits_block": all(row["finalize"] < BLOCK_GAS_LIMIT for row in gas.values()),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    console.print(f"wrote {RESULTS.relative_to(REPO)}")
    return results


if __name__ == "__main__":
    main()
