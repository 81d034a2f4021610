"""Rented results belong to the renter: a provider publishes only outputs sealed to the buyer's key.

The finding (issue 15): with `--rent`, the provider's weights sat in the shared store as soon as it committed
them to the Market; a watcher committed their hash to the Arena before the renter did, and since the earliest
commitment owns given weights, the copy won. Here a real watcher reads everything the provider published, on a
real anvil node with the whole suite, and tries: it cannot load weights from any of it, and what it commits to
the Arena first is not the renter's weights, so the renter's reveal stands and the watcher's copy fails.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from eth_account import Account

from covey.arena import ArenaClient, Hyperparams, TrainerNode
from covey.arena.client import new_salt, submission_commitment
from covey.chain import Chain, dev_accounts
from covey.chain.deploy import deploy_suite
from covey.chain.roles import Role
from covey.compute.client import MarketClient, Resources, wait_for_units
from covey.compute.errors import RentalError, SealError
from covey.compute.jobs import WEIGHTS_OUTPUT, fetch_job, fetch_result
from covey.compute.provider import PricingRule, ProviderAgent
from covey.compute.rental import Rental, collect_training, post_training
from covey.compute.sandbox import Sandbox
from covey.compute.sealing import recipient_of, seal, sealing_key, unit_context, unseal
from covey.errors import ChainError
from covey.ml import default_spec, evaluate, load_weights
from covey.storage import open_store, sha256_hex
from tests.arena.conftest import ArenaEnv

RECIPE = {"epochs": 1, "lr": 1e-2, "max_steps": 20}


def test_sealing_is_deterministic_and_opens_only_for_its_key_and_unit() -> None:
    buyer, other = Account.create(), Account.create()
    context = unit_context("ab" * 32, 3, WEIGHTS_OUTPUT)
    sealed = seal(b"weights", recipient_of(buyer.key), context)

    assert sealed == seal(b"weights", recipient_of(buyer.key), context)  # a verifier's re-run seals alike
    assert b"weights" not in sealed and sealed != seal(b"weights", recipient_of(other.key), context)
    assert unseal(sealed, sealing_key(buyer.key), context) == b"weights"
    with pytest.raises(SealError):
        unseal(sealed, sealing_key(other.key), context)
    with pytest.raises(SealError):  # moved to another unit's place
        unseal(sealed, sealing_key(buyer.key), unit_context("ab" * 32, 4, WEIGHTS_OUTPUT))


@pytest.fixture
def market_env(anvil_url: str, covey_home: Path) -> ArenaEnv:
    """The whole suite (Arena and Market) on anvil."""
    chain = Chain.from_rpc(anvil_url)
    deployment = deploy_suite(chain, dev_accounts(1)[0], unbonding_delay_s=100, commission_delay_s=10)
    return ArenaEnv(
        chain, deployment, ArenaClient.from_deployment(chain, deployment), open_store(None, covey_home), covey_home
    )


@contextmanager
def provider_running(env: ArenaEnv, anvil_url: str, tmp_path: Path) -> Iterator[ProviderAgent]:
    """A staked provider working the Market from a thread, on its own connection to the node."""
    agent = ProviderAgent(
        MarketClient.from_deployment(Chain.from_rpc(anvil_url), env.deployment),
        env.staked(Role.PROVIDER, 100),
        env.store,
        resources=Resources(1, 2048, 0),
        pricing=PricingRule(10),
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


@pytest.mark.e2e
def test_a_watcher_cannot_take_rented_weights_before_the_renter_commits(
    market_env: ArenaEnv, anvil_url: str, tmp_path: Path
) -> None:
    env = market_env
    posted = env.post()
    task = env.client.task(posted.task_id)
    renter, watcher = env.staked(Role.TRAINER, 10), env.staked(Role.TRAINER, 10)
    market = MarketClient.from_deployment(env.chain, env.deployment)
    spec = default_spec("digits")

    with provider_running(env, anvil_url, tmp_path):
        job_id = post_training(market, env.store, task.spec_hash.hex(), RECIPE, renter, bid_window_s=3)
        (delivered,) = wait_for_units(market, job_id, 1, verified_only=False, timeout_s=240).values()

    # The watcher: the provider has committed its result, the renter has not committed to the Arena yet.
    manifest = fetch_result(env.store, delivered.result_hash)
    published = {digest: env.store.get(digest) for digest in manifest["outputs"].values()}
    assert fetch_job(env.store, market.job(job_id).spec_digest).sealed_to == recipient_of(renter.key)
    for blob in published.values():
        with pytest.raises(Exception):  # noqa: B017 - any failure to parse is the point: no weights in there
            load_weights(spec.build_model(), blob)
    stolen = bytes.fromhex(manifest["outputs"][WEIGHTS_OUTPUT])  # the best it can do: commit what it found
    watcher_salt = new_salt()
    env.client.commit_submission(watcher, task.task_id, submission_commitment(stolen, watcher_salt, watcher.address))

    # The renter opens its weights, commits after the watcher, and still owns them.
    rented = collect_training(market, env.store, job_id, renter)
    weights_hash = bytes.fromhex(sha256_hex(rented.weights))
    assert rented.weights_ref.digest == weights_hash.hex() and weights_hash not in {bytes.fromhex(d) for d in published}
    assert not env.store.exists(weights_hash.hex())  # neither the weights nor their hash were ever published
    renter_salt = new_salt()
    env.client.commit_submission(renter, task.task_id, submission_commitment(weights_hash, renter_salt, renter.address))

    env.travel_to(task.submit_deadline)
    ref = env.store.put(rented.weights)  # published only now, at the renter's reveal
    env.client.reveal_submission(renter, task.task_id, weights_hash, renter_salt, ref.uri)
    with pytest.raises(ChainError, match="arena: bad reveal"):  # its commitment was to the sealed blob
        env.client.reveal_submission(watcher, task.task_id, weights_hash, watcher_salt, ref.uri)

    mine = env.client.submission_of(task.task_id, renter.address)
    assert mine is not None and mine.revealed and mine.weights_hash == weights_hash
    theirs = env.client.submission_of(task.task_id, watcher.address)
    assert theirs is not None and not theirs.revealed
    model = load_weights(spec.build_model(), rented.weights)
    assert evaluate(model, spec.load_split().public_train, "accuracy") > 0.2  # trained: well above chance (0.1)


@pytest.mark.e2e
def test_collecting_sealed_weights_needs_the_buyers_key(market_env: ArenaEnv, anvil_url: str, tmp_path: Path) -> None:
    env = market_env
    task = env.client.task(env.post().task_id)
    renter, stranger = env.staked(Role.TRAINER, 10), env.funded()
    market = MarketClient.from_deployment(env.chain, env.deployment)

    with provider_running(env, anvil_url, tmp_path):
        job_id = post_training(market, env.store, task.spec_hash.hex(), RECIPE, renter, bid_window_s=3)
        wait_for_units(market, job_id, 1, verified_only=False, timeout_s=240)

    with pytest.raises(RentalError, match="sealed to its buyer"):
        collect_training(market, env.store, job_id)
    with pytest.raises(RentalError, match="this key does not open the sealed output"):
        collect_training(market, env.store, job_id, stranger)
    assert collect_training(market, env.store, job_id, renter).weights


@pytest.mark.e2e
def test_a_trainer_renting_several_units_opens_them_all_and_commits_the_best(
    market_env: ArenaEnv, anvil_url: str, tmp_path: Path
) -> None:
    env = market_env
    posted = env.post()
    trainer = env.staked(Role.TRAINER, 10)
    market = MarketClient.from_deployment(env.chain, env.deployment)
    rental = Rental(market, units=2, bid_window_s=3, heartbeat_interval_s=30, timeout_s=240)
    node = TrainerNode(env.client, trainer, env.store, env.home, Hyperparams(epochs=1, lr=1e-2), rental=rental)

    with provider_running(env, anvil_url, tmp_path):
        assert node.step(env.client.task(posted.task_id), env.client.now())  # rents 2 units, commits the best

    record = node.state.load(posted.task_id)
    assert record.committed and not node.rental_failures
    rented = collect_training(market, env.store, record.notes["rented_job"], trainer)
    opened = {sha256_hex(weights) for weights in rented.unit_bytes.values()}
    assert len(opened) == 2 and record.weights_hash in opened
    assert not any(env.store.exists(digest) for digest in opened)  # still only the trainer has them
