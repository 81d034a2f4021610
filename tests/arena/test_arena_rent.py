"""An Arena trainer rents a compute-market provider instead of training: the task gets a submission whose
weights the provider trained, committed and revealed like local weights; a rental nobody bids for, or that
the trainer cannot pay, fails in one clear line with no money lost.

Real pieces throughout: the whole suite on a real anvil node, a `ProviderAgent` in a thread with its own
connection running units in its sandbox, and the `covey` command in a subprocess.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount

from covey.arena import ArenaClient, Hyperparams, TrainerNode
from covey.chain import Chain, dev_accounts
from covey.chain.deploy import deploy_suite
from covey.chain.faucet import fund
from covey.chain.roles import Role
from covey.compute.client import JobStatus, MarketClient, Resources, job_lineage
from covey.compute.jobs import WEIGHTS_OUTPUT, fetch_result
from covey.compute.provider import PricingRule, ProviderAgent
from covey.compute.rental import Rental
from covey.compute.sandbox import Sandbox
from covey.compute.sealing import sealing_key, unit_context, unseal
from covey.ml import default_spec, evaluate, load_weights
from covey.storage import open_store, sha256_hex
from tests.arena.conftest import COV, ArenaEnv, run_covey

pytestmark = pytest.mark.e2e

QUICK = Hyperparams(epochs=3, lr=1e-2)
PROVIDER_FLOOR = 10  # µUSD per unit-second


@pytest.fixture
def market_env(anvil_url: str, covey_home: Path, monkeypatch: pytest.MonkeyPatch) -> ArenaEnv:
    """The whole suite (Arena and Market included) on anvil, its manifest in COVEY_HOME for the CLI."""
    monkeypatch.setenv("COVEY_RPC_URL", anvil_url)
    chain = Chain.from_rpc(anvil_url)
    deployment = deploy_suite(chain, dev_accounts(1)[0], unbonding_delay_s=100, commission_delay_s=10)
    return ArenaEnv(
        chain, deployment, ArenaClient.from_deployment(chain, deployment), open_store(None, covey_home), covey_home
    )


@contextmanager
def provider_running(env: ArenaEnv, anvil_url: str, tmp_path: Path) -> Iterator[ProviderAgent]:
    """A staked provider working the Market from a thread, on its own connection to the node."""
    account = env.staked(Role.PROVIDER, 100)
    agent = ProviderAgent(
        MarketClient.from_deployment(Chain.from_rpc(anvil_url), env.deployment),
        account,
        env.store,
        resources=Resources(1, 2048, 0),
        pricing=PricingRule(PROVIDER_FLOOR),
        sandbox=Sandbox(env.store, root=tmp_path / "provider-sandbox"),
        log=print,
    )
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, args=(stop,), kwargs={"poll_s": 0.3}, daemon=True)
    thread.start()
    try:
        yield agent
    finally:
        stop.set()
        thread.join(timeout=60)


def rental(env: ArenaEnv, **terms: object) -> Rental:
    options: dict[str, object] = {"bid_window_s": 3, "heartbeat_interval_s": 30, "timeout_s": 240, **terms}
    return Rental(MarketClient.from_deployment(env.chain, env.deployment), **options)  # type: ignore[arg-type]


def rented_weights_digest(market: MarketClient, store, job_id: int, buyer: LocalAccount) -> tuple[str, str]:
    """The digest of the weights the provider trained for unit 0 of a job, and that provider.

    The provider published them sealed to the buyer: only the buyer's key opens them, and what sits in the
    store is not the weights (so nobody could commit to their hash before the buyer did).
    """
    job = job_lineage(market, job_id)[-1]
    manifest = fetch_result(store, market.unit_result(job.job_id, 0).result_hash)
    published = manifest["outputs"][WEIGHTS_OUTPUT]
    context = unit_context(job.spec_digest, job.first_unit, WEIGHTS_OUTPUT)
    digest = sha256_hex(unseal(store.get(published), sealing_key(buyer.key), context))
    assert digest != published
    return digest, job.provider


def test_a_trainer_that_rents_a_provider_submits_the_weights_it_trained(
    market_env: ArenaEnv, anvil_url: str, tmp_path: Path
) -> None:
    env = market_env
    posted = env.post()
    trainer = env.staked(Role.TRAINER, 10)  # also holds 1,000 USD from the faucet
    market = MarketClient.from_deployment(env.chain, env.deployment)
    usd_before = market.usd_balance(trainer.address)
    node = TrainerNode(env.client, trainer, env.store, env.home, QUICK, rental=rental(env), log=print)

    with provider_running(env, anvil_url, tmp_path) as provider:
        assert node.step(env.client.task(posted.task_id), env.client.now())  # rents, waits, commits

    record = node.state.load(posted.task_id)
    assert record.committed and not node.rental_failures
    job_id = record.notes["rented_job"]
    digest, trained_by = rented_weights_digest(market, env.store, job_id, trainer)
    assert trained_by == provider.address == record.notes["rental"]["provider"]
    assert record.weights_hash == digest  # the commitment is to exactly what the provider trained
    job = market.job(job_id)
    assert job.price_per_unit_second == PROVIDER_FLOOR and job.status == JobStatus.VERIFYING
    assert market.usd_balance(trainer.address) == usd_before - PROVIDER_FLOOR * 60  # the rest was refunded

    env.travel_to(env.client.task(posted.task_id).submit_deadline)
    node.step(env.client.task(posted.task_id), env.client.now())
    submission = env.client.submission_of(posted.task_id, trainer.address)
    assert submission is not None and submission.revealed
    assert submission.weights_hash.hex() == digest
    weights = env.store.get(submission.uri)
    assert sha256_hex(weights) == digest
    spec = default_spec("digits")
    assert evaluate(load_weights(spec.build_model(), weights), spec.load_split().public_train, "accuracy") > 0.8


def test_a_rental_nobody_bids_for_is_cancelled_and_refunded(market_env: ArenaEnv) -> None:
    env = market_env
    posted = env.post()
    trainer = env.staked(Role.TRAINER, 10)
    market = MarketClient.from_deployment(env.chain, env.deployment)
    usd_before = market.usd_balance(trainer.address)
    node = TrainerNode(env.client, trainer, env.store, env.home, QUICK, rental=rental(env, bid_window_s=2))

    assert node.step(env.client.task(posted.task_id), env.client.now())  # no provider is running

    failure = node.rental_failures[posted.task_id]
    assert failure.startswith("renting failed: no provider bid on job") and "µUSD/unit-s" in failure
    (job,) = market.jobs()[-1:]
    assert job.buyer == trainer.address and job.status == JobStatus.CANCELLED
    assert market.usd_balance(trainer.address) == usd_before
    record = node.state.load(posted.task_id)
    assert not record.committed and not record.gave_up and "rented_job" not in record.notes  # free to try again


def covey(home: Path, rpc: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_covey(home, *args, rpc_url=rpc)


def test_covey_arena_train_rent_from_the_command_line(market_env: ArenaEnv, anvil_url: str, tmp_path: Path) -> None:
    env = market_env
    posted = env.post()
    task = str(posted.task_id)
    trainer, broke = dev_accounts(7)[5:7]
    cov, staking = env.client.token, env.client.staking
    for account in (trainer, broke):
        fund(env.chain, env.deployment, account.address)
        env.chain.transact(cov.functions.approve(staking.address, 10 * COV), account)
        env.chain.transact(staking.functions.stake(Role.TRAINER, 10 * COV), account)
    usd = env.deployment.contract(env.chain, "USDToken")
    env.chain.transact(usd.functions.transfer(trainer.address, usd.functions.balanceOf(broke.address).call()), broke)

    short = covey(env.home, anvil_url, "arena", "train", "--task", task, "--rent", "--no-wait", "--from", "dev6")
    assert short.returncode == 1 and len(short.stderr.strip().splitlines()) == 1, short.stderr
    assert short.stderr.startswith("error: renting failed: escrow short: 1 unit(s) x 60 s"), short.stderr

    rent = ("arena", "train", "--task", task, "--rent", "--no-wait", "--from", "dev5")
    nobody = covey(env.home, anvil_url, *rent, "--bid-window", "2")
    assert nobody.returncode == 1 and len(nobody.stderr.strip().splitlines()) == 1, nobody.stderr
    assert nobody.stderr.startswith("error: renting failed: no provider bid on job"), nobody.stderr

    with provider_running(env, anvil_url, tmp_path) as provider:
        rented = covey(
            env.home, anvil_url, *rent, "--max-price", "0.00005", "--bid-window", "3", "--epochs", "3", "--json"
        )
    assert rented.returncode == 0, rented.stderr
    result = json.loads(rented.stdout)
    assert result["committed"] and result["notes"]["rental"]["provider"] == provider.address
    digest, _ = rented_weights_digest(
        MarketClient.from_deployment(env.chain, env.deployment), env.store, result["notes"]["rented_job"], trainer
    )
    assert result["weightsHash"] == digest
    assert env.client.submission_of(posted.task_id, trainer.address) is not None
