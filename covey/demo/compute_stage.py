"""The Compute chapter of `covey demo`: an Arena trainer rents compute, one provider is killed mid-job.

Two staked providers bid for an Arena-style training job (three seeds, one unit each). The cheaper one
wins, commits its first unit and is killed while training the second: it misses its heartbeat, is
slashed, and the two remaining units are re-posted and won by the other provider. A verifier re-trains
a sample of each provider's units bitwise; escrow pays only verified work. The weights then enter the
Arena as a committed and revealed submission (when the Arena is deployed). Escrow, payouts and slashes
are printed at the end.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from rich.table import Table
from web3 import Web3

from covey.chain import Chain
from covey.chain.arena_deploy import submission_commitment
from covey.chain.chain import dev_accounts
from covey.chain.deploy import Deployment
from covey.chain.faucet import fund
from covey.chain.market_deploy import MARKET, deploy_market
from covey.chain.roles import Role
from covey.compute.client import (
    ZERO_ADDRESS,
    Job,
    JobTerms,
    MarketClient,
    Resources,
    delivered_units,
    job_lineage,
)
from covey.compute.jobs import TrainingJob, TrainUnit, UnitLimits, fetch_result, publish_job
from covey.compute.provider import PricingRule, ProviderAgent, wait_for
from covey.compute.sandbox import Sandbox
from covey.compute.verifier import VerifierAgent
from covey.demo.runner import StageContext
from covey.ml import default_spec
from covey.storage import ArtifactStore, open_store

COV = 10**18
USD = 10**6
PROVIDER_STAKE = 100 * COV
SEEDS = (11, 12, 13)
TRAIN_STEPS = 12
SECONDS_PER_UNIT = 30  # what a unit is billed for
MAX_PRICE = 50  # µUSD per unit-second
HEARTBEAT_S = 4
BID_WINDOW_S = 3
TIMEOUT_S = 240.0
ARENA_PHASE_S = 3


@dataclass
class Actor:
    """A named account of the story, its key derived from the name (the same actors on every run)."""

    name: str
    role: str
    account: LocalAccount = field(init=False)

    def __post_init__(self) -> None:
        self.account = Account.from_key(Web3.keccak(text=f"covey demo compute {self.name}"))

    @property
    def address(self) -> str:
        return self.account.address


def compute_stage(ctx: StageContext) -> dict[str, Any]:
    """Play the compute market story and return escrow, payouts, slashes and the Arena submission."""
    started = time.perf_counter()
    chain, say = ctx.chain, ctx.console.print
    store = open_store(ctx.settings.store_url, ctx.settings.data_dir)
    owner = dev_accounts(1)[0]
    client = MarketClient.from_deployment(chain, ctx.deployment, _market_address(chain, ctx.deployment, owner))
    buyer, fast, steady, verifier_actor = (
        Actor("trainer", "buyer (an Arena trainer)"),
        Actor("fast-box", "provider, killed mid-job"),
        Actor("steady-box", "provider"),
        Actor("verifier", "verifier"),
    )
    cast = [buyer, fast, steady, verifier_actor]
    for actor in cast:
        fund(chain, ctx.deployment, actor.address)
    cov = ctx.deployment.contract(chain, "CoveyToken")
    for provider in (fast, steady):
        missing = PROVIDER_STAKE - client.provider_stake(provider.address)
        if missing > 0:
            client.stake_provider(provider.account, cov, missing)
    if not client.is_verifier(verifier_actor.address):
        client.set_verifier(owner, verifier_actor.address)
    say("funded a trainer, two providers (100 COV provider stake each) and a registered verifier")

    task_digest, arena_task_spec = _training_task(chain, ctx.deployment, store)
    job_spec = TrainingJob(
        task=task_digest,
        units=[TrainUnit(seed=seed, max_steps=TRAIN_STEPS) for seed in SEEDS],
        limits=UnitLimits(cpu_seconds=300, memory_mb=4096, wall_clock_s=300),
    )
    spec_ref = publish_job(store, job_spec)
    root = ctx.settings.subdir("compute/demo-sandbox")
    agents = {
        fast.name: ProviderAgent(
            client,
            fast.account,
            store,
            resources=Resources(2, 4096, 0),
            pricing=PricingRule(20),
            sandbox=Sandbox(store, root=root),
            name=fast.name,
            log=say,
        ),
        steady.name: ProviderAgent(
            client,
            steady.account,
            store,
            resources=Resources(2, 4096, 0),
            pricing=PricingRule(30),
            sandbox=Sandbox(store, root=root),
            name=steady.name,
            log=say,
        ),
    }
    verifier = VerifierAgent(
        client, verifier_actor.account, store, sandbox=Sandbox(store, root=root), name=verifier_actor.name, log=say
    )
    for agent in agents.values():
        agent.register()  # offers on the market before the job is posted: no bid window is missed
    before = {actor.name: _money(client, actor.address) for actor in cast}
    terms = JobTerms(
        spec_ref.bytes32, len(SEEDS), MAX_PRICE, SECONDS_PER_UNIT, Resources(1, 2048, 0), BID_WINDOW_S, HEARTBEAT_S
    )
    job_id = client.post_job(buyer.account, terms, extra_allowance=terms.escrow)
    say(
        f"the trainer posts job {job_id}: train task {task_digest[:12]}… with seeds {list(SEEDS)} "
        f"({len(SEEDS)} units x {SECONDS_PER_UNIT}s), escrow {terms.escrow / USD:.6f} USD at most "
        f"{MAX_PRICE} µUSD/unit-s"
    )

    stop = threading.Event()
    runners: list[ProviderAgent | VerifierAgent] = [*agents.values(), verifier]
    threads = [
        threading.Thread(target=agent.run, args=(stop,), kwargs={"poll_s": 0.3}, daemon=True) for agent in runners
    ]
    for thread in threads:
        thread.start()
    try:
        _kill_mid_job(client, job_id, agents[fast.name], say)
        delivered = wait_for(lambda: len(delivered_units(client, job_id)) == len(SEEDS), TIMEOUT_S, poll_s=0.5)
    finally:
        stop.set()
        for agent in agents.values():
            agent.kill()
        for thread in threads:
            thread.join(timeout=30)
    if not delivered:
        say(f"[red]the job's units were not all verified within {TIMEOUT_S:.0f}s[/]")

    lineage = job_lineage(client, job_id)
    after = {actor.name: _money(client, actor.address) for actor in cast}
    names = {actor.address: actor.name for actor in cast}
    ctx.console.print(_jobs_table(lineage, names))
    ctx.console.print(_money_table(cast, before, after))
    paid = sum(job.paid for job in lineage)
    slashed = {names.get(job.provider, job.provider): job.slashed / COV for job in lineage if job.slashed}
    say(
        f"escrow: {terms.escrow / USD:.6f} USD posted; providers were paid {paid / USD:.6f} USD for "
        f"{sum(job.paid_units for job in lineage)} verified units; slashed: "
        + (", ".join(f"{name} {amount:g} COV" for name, amount in slashed.items()) or "nobody")
    )

    submission = _enter_arena(chain, ctx.deployment, store, client, job_id, buyer, owner, arena_task_spec, say)
    return {
        "jobId": job_id,
        "jobs": [job.job_id for job in lineage],
        "escrowUsd": terms.escrow / USD,
        "paidUsd": {names.get(job.provider, job.provider): job.paid / USD for job in lineage},
        "refundedUsd": sum(job.refunded for job in lineage) / USD,
        "slashedCov": slashed,
        "verifiedUnits": sum(job.paid_units for job in lineage),
        "checks": [{"job": check.job_id, "unit": check.unit, "ok": check.ok} for check in verifier.checks],
        "arena": submission,
        "seconds": round(time.perf_counter() - started, 1),
    }


# -- the story's moves ------------------------------------------------------------------------------------


def _kill_mid_job(client: MarketClient, job_id: int, victim: ProviderAgent, say: Any) -> None:
    """Once the victim has committed a unit of the job, let it start the next, then kill it."""

    def committed_one() -> bool:
        job = client.job(job_id)
        return job.provider == victim.address and job.committed_units >= 1

    if not wait_for(committed_one, TIMEOUT_S, poll_s=0.3):
        say("[yellow]the cheaper provider never got going; nothing to kill[/]")
        return
    time.sleep(1.5)  # into the next unit's training
    victim.kill()
    say(f"[bold red]{victim.name} is killed mid-job[/]: no more heartbeats; its sandboxed unit dies with it")


def _market_address(chain: Chain, deployment: Deployment, owner: LocalAccount) -> str:
    """The suite's Market, or one deployed now for a suite that predates it."""
    if MARKET in deployment.contracts:
        return deployment.address(MARKET)
    registry = deployment.contract(chain, "Registry")
    address = str(registry.functions.get(MARKET).call())
    if address != ZERO_ADDRESS:
        return address
    address = deploy_market(chain, deployment, owner)
    chain.transact(registry.functions.set(MARKET, address), owner)
    return address


def _training_task(chain: Chain, deployment: Deployment, store: ArtifactStore) -> tuple[str, bytes | None]:
    """The latest Arena task's spec when its manifest is in this store, else a fresh digits spec."""
    if "Arena" in deployment.contracts:
        arena = deployment.contract(chain, "Arena")
        count = int(arena.functions.taskCount().call())
        if count:
            spec_hash = bytes(arena.functions.task(count).call()[1])
            if store.exists(spec_hash.hex()):
                return spec_hash.hex(), spec_hash
    spec = default_spec("digits")
    return store.put(spec.to_bytes()).digest, None


def _enter_arena(
    chain: Chain,
    deployment: Deployment,
    store: ArtifactStore,
    client: MarketClient,
    job_id: int,
    trainer: Actor,
    creator: LocalAccount,
    spec_hash: bytes | None,
    say: Any,
) -> dict[str, Any] | None:
    """Commit and reveal the rented weights in a fresh Arena task on the same spec (waits out its deadline)."""
    delivered = delivered_units(client, job_id)
    if spec_hash is None or "Arena" not in deployment.contracts or 0 not in delivered:
        say("(no Arena task to enter: the rented weights stay in the store)")
        return None
    weights_digest = fetch_result(store, delivered[0].result_hash)["outputs"]["weights.safetensors"]
    arena = deployment.contract(chain, "Arena")
    # Phases of seconds, waited for in real time: the trainer's one commit needs no more.
    now = chain.now()
    deadlines = [now + ARENA_PHASE_S * step for step in (1, 2, 3, 4)]
    receipt = chain.transact(arena.functions.createTask(spec_hash, 0, *deadlines, 1, 0, 0, 0, 1), creator)
    task_id = int(arena.events.TaskCreated().process_receipt(receipt)[0]["args"]["taskId"])
    weights_hash = bytes.fromhex(weights_digest)
    salt = Web3.keccak(text=f"demo salt {job_id}")
    commitment = submission_commitment(weights_hash, salt, trainer.address)
    chain.transact(arena.functions.commitSubmission(task_id, commitment), trainer.account)
    chain.wait_until(deadlines[0])
    chain.transact(
        arena.functions.revealSubmission(task_id, weights_hash, salt, store.uri_for(weights_digest)), trainer.account
    )
    say(
        f"the trainer enters the rented weights ({weights_digest[:12]}…) in Arena task {task_id}: committed, "
        f"then revealed after the submission deadline"
    )
    return {"taskId": task_id, "weights": weights_digest}


# -- tables -----------------------------------------------------------------------------------------------


def _money(client: MarketClient, address: str) -> dict[str, int]:
    return {
        "usd": client.usd_balance(address),
        "stake": client.staking.functions.stakeOf(address, int(Role.PROVIDER)).call(),
    }


def _jobs_table(lineage: list[Job], names: dict[str, str]) -> Table:
    table = Table(title="The job and its re-post", title_justify="left")
    for column in (
        "job",
        "units",
        "provider",
        "µUSD/unit-s",
        "status",
        "verified",
        "paid USD",
        "refund USD",
        "slashed COV",
    ):
        table.add_column(column, justify="left" if column in ("provider", "status") else "right")
    for job in lineage:
        table.add_row(
            str(job.job_id),
            f"{job.first_unit}-{job.first_unit + job.units - 1}",
            names.get(job.provider, job.provider[:10]),
            str(job.price_per_unit_second),
            job.status.label,
            str(job.paid_units),
            f"{job.paid / USD:.6f}",
            f"{job.refunded / USD:.6f}",
            f"{job.slashed / COV:g}",
        )
    return table


def _money_table(cast: list[Actor], before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]) -> Table:
    table = Table(title="USD and provider stake before and after", title_justify="left")
    for column in ("account", "role", "USD change", "provider stake", "stake change"):
        table.add_column(column, justify="left" if column in ("account", "role") else "right")
    for actor in cast:
        old, new = before[actor.name], after[actor.name]
        table.add_row(
            actor.name,
            actor.role,
            f"{(new['usd'] - old['usd']) / USD:+.6f}",
            f"{new['stake'] / COV:g}",
            f"{(new['stake'] - old['stake']) / COV:+g}",
        )
    return table
