"""Explorer benchmark: page latency at 10,000 indexed events, and the indexer's events per second.

On a fresh embedded chain in a temporary COVEY_HOME it plays one large Arena task by hand (64 trainers,
16 validators, settled by `finalize`) and fills the rest with x402 payments settled through the
PaymentBatcher (three events each, 200 a transaction), until the suite has emitted BENCH_EVENTS events
(default 10,000). It then indexes them from scratch (events/s), serves the explorer with uvicorn (the
background indexer polling as in production), and times BENCH_REQUESTS requests per page over HTTP.
Prints a table and writes bench/results/explorer.json. Goal: pages under 100 ms at 10,000 events.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from eth_account import Account
from eth_account.signers.local import LocalAccount
from rich.console import Console
from rich.table import Table

from covey.chain import Chain, dev_accounts
from covey.chain.arena_deploy import ARENA_STEPS, scores_commitment, submission_commitment
from covey.chain.deploy import CORE_STEPS, DeployContext, Deployment, Step, deploy_suite, load_deployment
from covey.chain.roles import Role
from covey.errors import ChainError

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "explorer.json"
TARGET_EVENTS = int(os.environ.get("BENCH_EVENTS", "10000"))
REQUESTS = int(os.environ.get("BENCH_REQUESTS", "60"))
TRAINERS, VALIDATORS = 64, 16
PAYMENTS_PER_BATCH = 200
AGENTS = 40
GOAL_MS = 100.0
COV, USD, SCORE = 10**18, 10**6, 10**6
console = Console()


def _deploy_batcher(ctx: DeployContext) -> None:
    ctx.deploy("PaymentBatcher")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Sender:
    """Signs and sends from one account with nonce, gas and fees set here (no estimate, no per-tx lookups)."""

    def __init__(self, chain: Chain, account: LocalAccount) -> None:
        self.chain, self.account = chain, account
        self.nonce = chain.w3.eth.get_transaction_count(account.address, "pending")

    def send(self, fn: Any, gas: int = 400_000, value: int = 0) -> None:
        tx = fn.build_transaction(
            {
                "from": self.account.address,
                "nonce": self.nonce,
                "gas": gas,
                "maxFeePerGas": 10 * 10**9,
                "maxPriorityFeePerGas": 10**9,
                "chainId": self.chain.chain_id,
                "value": value,
            }
        )
        signed = self.account.sign_transaction(tx)
        tx_hash = self.chain.w3.eth.send_raw_transaction(signed.raw_transaction)
        self.nonce += 1
        receipt = self.chain.w3.eth.wait_for_transaction_receipt(tx_hash)
        if receipt["status"] != 1:
            raise RuntimeError(f"benchmark transaction reverted: {fn.fn_name}")

    def send_eth(self, to: str, wei: int) -> None:
        tx = {
            "to": to,
            "value": wei,
            "nonce": self.nonce,
            "gas": 21_000,
            "maxFeePerGas": 10 * 10**9,
            "maxPriorityFeePerGas": 10**9,
            "chainId": self.chain.chain_id,
        }
        self.chain.w3.eth.send_raw_transaction(self.account.sign_transaction(tx).raw_transaction)
        self.nonce += 1


def big_task(chain: Chain, deployment: Deployment) -> int:
    """One Arena task with 64 submissions and 16 validators, played to `finalize`; returns its id."""
    owner = Sender(chain, dev_accounts(1)[0])
    cov, usd = deployment.contract(chain, "CoveyToken"), deployment.contract(chain, "USDToken")
    staking, arena = deployment.contract(chain, "Staking"), deployment.contract(chain, "Arena")
    people: list[LocalAccount] = [Account.create() for _ in range(TRAINERS + VALIDATORS + 1)]
    for person in people:
        owner.send_eth(person.address, 10**18)
        owner.send(cov.functions.transfer(person.address, 1_000 * COV))
        owner.send(usd.functions.faucet(person.address, 100 * USD))
    creator, trainers, validators = people[0], people[1 : TRAINERS + 1], people[TRAINERS + 1 :]
    for index, person in enumerate(trainers + validators):
        role, amount = (Role.TRAINER, 100 * COV) if index < TRAINERS else (Role.VALIDATOR, 500 * COV)
        sender = Sender(chain, person)
        sender.send(cov.functions.approve(staking.address, amount))
        sender.send(staking.functions.stake(int(role), amount))
    creator_tx = Sender(chain, creator)
    pool = 1_000 * COV
    creator_tx.send(cov.functions.approve(arena.address, pool))
    now = chain.timestamp()
    deadlines = [now + 3_600 * step for step in (1, 2, 3, 4)]
    terms = (secrets.token_bytes(32), pool, *deadlines, 3, 50 * COV, 100 * COV, SCORE // 2, SCORE // 50)
    creator_tx.send(arena.functions.createTask(*terms), gas=1_500_000)
    task_id = int(arena.functions.taskCount().call())
    secrets_by_trainer = [(secrets.token_bytes(32), secrets.token_bytes(32)) for _ in trainers]
    for trainer, (weights, salt) in zip(trainers, secrets_by_trainer, strict=True):
        commitment = submission_commitment(weights, salt, trainer.address)
        Sender(chain, trainer).send(arena.functions.commitSubmission(task_id, commitment))
    chain.increase_time(deadlines[0] - chain.timestamp())
    for number, (trainer, (weights, salt)) in enumerate(zip(trainers, secrets_by_trainer, strict=True)):
        Sender(chain, trainer).send(arena.functions.revealSubmission(task_id, weights, salt, f"bench://w/{number}"))
    chain.increase_time(deadlines[1] - chain.timestamp())
    truth = [SCORE * (400 + 9 * i) // 1000 for i in range(TRAINERS)]  # 0.400 .. 0.967
    rows = [[max(0, score + (v % 3 - 1) * 2_000) for score in truth] for v in range(VALIDATORS)]
    salts = [secrets.token_bytes(32) for _ in validators]
    for validator, row, salt in zip(validators, rows, salts, strict=True):
        commitment = scores_commitment(row, salt, validator.address)
        Sender(chain, validator).send(arena.functions.commitScores(task_id, commitment))
    chain.increase_time(deadlines[2] - chain.timestamp())
    for validator, row, salt in zip(validators, rows, salts, strict=True):
        Sender(chain, validator).send(arena.functions.revealScores(task_id, row, salt), gas=3_000_000)
    chain.increase_time(deadlines[3] - chain.timestamp())
    creator_tx.send(arena.functions.finalize(task_id), gas=25_000_000)
    return task_id


def payments(chain: Chain, deployment: Deployment, count: int) -> None:
    """`count` x402 payments (signed EIP-3009 authorisations) settled through the PaymentBatcher."""
    usd, batcher = deployment.contract(chain, "USDToken"), deployment.contract(chain, "PaymentBatcher")
    owner = Sender(chain, dev_accounts(1)[0])
    payee = dev_accounts(3)[2].address
    agents = [Account.create() for _ in range(AGENTS)]
    for agent in agents:
        owner.send(usd.functions.faucet(agent.address, 1_000 * USD))
    _, name, version, chain_id, contract, _, _ = usd.functions.eip712Domain().call()
    domain = {"name": name, "version": version, "chainId": chain_id, "verifyingContract": contract}
    fields = [
        {"name": "from", "type": "address"},
        {"name": "to", "type": "address"},
        {"name": "value", "type": "uint256"},
        {"name": "validAfter", "type": "uint256"},
        {"name": "validBefore", "type": "uint256"},
        {"name": "nonce", "type": "bytes32"},
    ]
    valid_before = chain.timestamp() + 30 * 86_400
    for start in range(0, count, PAYMENTS_PER_BATCH):
        batch = []
        for number in range(start, min(count, start + PAYMENTS_PER_BATCH)):
            agent = agents[number % AGENTS]
            message = {
                "from": agent.address,
                "to": payee,
                "value": 1_000 + number % 97,
                "validAfter": 0,
                "validBefore": valid_before,
                "nonce": secrets.token_bytes(32),
            }
            signed = agent.sign_typed_data(
                domain_data=domain, message_types={"TransferWithAuthorization": fields}, message_data=message
            )
            batch.append(
                (
                    message["from"],
                    message["to"],
                    message["value"],
                    0,
                    valid_before,
                    message["nonce"],
                    signed.v,
                    signed.r.to_bytes(32, "big"),
                    signed.s.to_bytes(32, "big"),
                )
            )
        owner.send(batcher.functions.settle(usd.address, batch), gas=28_000_000)


def make_network(chain: Chain) -> tuple[Deployment, int]:
    """The suite, the big task and the payments; reused as they are when the chain already has them."""
    try:
        deployment = load_deployment(chain)
        arena = deployment.contract(chain, "Arena")
        if suite_events(chain, deployment) >= TARGET_EVENTS and int(arena.functions.taskCount().call()):
            return deployment, 1
    except ChainError:
        pass
    steps = [*CORE_STEPS, Step("deploy PaymentBatcher", _deploy_batcher), *ARENA_STEPS]
    deployment = deploy_suite(chain, dev_accounts(1)[0], steps=steps)
    started = time.perf_counter()
    task_id = big_task(chain, deployment)
    missing = TARGET_EVENTS - suite_events(chain, deployment)
    # Each payment logs AuthorizationUsed, Transfer and PaymentSettled; each batch one BatchSettled.
    payments(chain, deployment, max(0, missing * PAYMENTS_PER_BATCH // (3 * PAYMENTS_PER_BATCH + 1)))
    console.print(
        f"chain: {suite_events(chain, deployment):,} suite events in {chain.block_number():,} blocks "
        f"({time.perf_counter() - started:.0f}s to make)"
    )
    return deployment, task_id


def suite_events(chain: Chain, deployment: Deployment) -> int:
    logs = chain.w3.eth.get_logs({"address": list(deployment.contracts.values()), "fromBlock": 0, "toBlock": "latest"})
    return len(logs)


def time_pages(base_url: str, pages: dict[str, str]) -> dict[str, dict[str, float]]:
    """Per page: p50, p95 and mean milliseconds over REQUESTS sequential requests, after 3 warm-ups."""
    results = {}
    with httpx.Client(base_url=base_url, timeout=30) as client:
        for label, path in pages.items():
            for _ in range(3):
                client.get(path).raise_for_status()
            samples = []
            for _ in range(REQUESTS):
                started = time.perf_counter()
                response = client.get(path)
                samples.append((time.perf_counter() - started) * 1000)
                response.raise_for_status()
            samples.sort()
            results[label] = {
                "p50_ms": round(statistics.median(samples), 2),
                "p95_ms": round(samples[int(0.95 * (len(samples) - 1))], 2),
                "mean_ms": round(statistics.fmean(samples), 2),
                "bytes": len(response.content),
            }
    return results


def run() -> dict[str, Any]:
    from covey.explorer import Indexer, create_app

    # BENCH_HOME keeps the chain between runs (made once, then reused), for profiling the pages.
    kept = os.environ.get("BENCH_HOME")
    with tempfile.TemporaryDirectory(prefix="covey-bench-explorer-") as scratch:
        home = Path(kept or scratch)
        os.environ["COVEY_HOME"] = str(home)
        os.environ.pop("COVEY_RPC_URL", None)
        os.environ.pop("COVEY_STORE_URL", None)
        cache = Path.home() / ".covey" / "cache" / "contracts"  # reuse compiled contracts across runs
        cache.mkdir(parents=True, exist_ok=True)
        if not (home / "cache" / "contracts").exists():
            (home / "cache").mkdir(parents=True, exist_ok=True)
            os.symlink(cache, home / "cache" / "contracts")
        chain = Chain.embedded(home / "chain")
        try:
            deployment, task_id = make_network(chain)
            events = suite_events(chain, deployment)

            index = home / "explorer" / f"bench-{time.time_ns()}.sqlite"  # always index from scratch
            indexer = Indexer(chain, index)
            started = time.perf_counter()
            indexed = indexer.poll()
            index_s = time.perf_counter() - started
            indexer.close()
            assert indexed.events == events, f"indexed {indexed.events} of {events} events"

            port = free_port()
            server = uvicorn.Server(
                uvicorn.Config(create_app(chain, index=index), host="127.0.0.1", port=port, log_level="warning")
            )
            thread = threading.Thread(target=server.run, daemon=True)
            thread.start()
            while not server.started:
                time.sleep(0.05)
            pages = {
                "overview": "/",
                "leaderboard": f"/arena/tasks/{task_id}",
                "arena tasks": "/arena",
                "account": f"/accounts/{dev_accounts(1)[0].address}",
                "events": "/events?page=3",
                "gateway": "/gateway",
            }
            timings = time_pages(f"http://127.0.0.1:{port}", pages)
            server.should_exit = True
            thread.join(timeout=30)
            for suffix in ("", "-wal", "-shm"):
                Path(f"{index}{suffix}").unlink(missing_ok=True)
        finally:
            chain.close()
    return {
        "events": events,
        "index_seconds": round(index_s, 3),
        "indexer_events_per_s": round(events / index_s, 1),
        "overview_p50_ms": timings["overview"]["p50_ms"],
        "leaderboard_p50_ms": timings["leaderboard"]["p50_ms"],
        "leaderboard_rows": TRAINERS,
        "validators": VALIDATORS,
        "requests_per_page": REQUESTS,
        "pages": timings,
        "goal_ms": GOAL_MS,
        "meets_goal": all(t["p50_ms"] < GOAL_MS for t in timings.values()),
        "backend": "embedded (in process)",
    }


def main() -> None:
    result = run()
    table = Table(title=f"Explorer at {result['events']:,} indexed events ({REQUESTS} requests per page)")
    for column in ("page", "p50 ms", "p95 ms", "mean ms", "KB"):
        table.add_column(column, justify="left" if column == "page" else "right")
    for label, timing in result["pages"].items():
        table.add_row(
            label,
            f"{timing['p50_ms']:.1f}",
            f"{timing['p95_ms']:.1f}",
            f"{timing['mean_ms']:.1f}",
            f"{timing['bytes'] / 1024:.0f}",
        )
    console.print(table)
    console.print(
        f"indexer: {result['events']:,} events in {result['index_seconds']:.2f}s = "
        f"{result['indexer_events_per_s']:,.0f} events/s; goal (p50 < {GOAL_MS:.0f} ms): "
        f"{'met' if result['meets_goal'] else 'missed'}"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
