"""`TrainerNode`: trains, commits with its salt already on disk, and reveals even after a restart or a crash."""

from __future__ import annotations

from covey.arena import Hyperparams, TrainerNode
from covey.arena.client import submission_commitment
from covey.chain.roles import Role
from covey.ml import default_spec, evaluate, load_weights
from covey.storage import sha256_hex
from tests.arena.conftest import COV, ArenaEnv

QUICK = Hyperparams(epochs=3, lr=1e-2)


def test_a_trainer_commits_and_a_restarted_node_reveals(arena_env: ArenaEnv) -> None:
    env = arena_env
    posted = env.post()
    account = env.staked(Role.TRAINER, 10)
    node = TrainerNode(env.client, account, env.store, env.home, QUICK)

    task = env.client.task(posted.task_id)
    assert node.step(task, env.client.now())
    record = node.state.load(posted.task_id)
    on_chain = env.client.submission_of(posted.task_id, account.address)
    assert record.committed and on_chain is not None and not on_chain.revealed
    assert on_chain.commitment == submission_commitment(record.weights_hash_bytes, record.salt_bytes, account.address)
    assert not env.store.exists(record.weights_hash)  # nothing published before the reveal

    env.travel_to(task.submit_deadline)
    restarted = TrainerNode(env.client, account, env.store, env.home, QUICK)  # a new process, same COVEY_HOME
    assert restarted.step(env.client.task(posted.task_id), env.client.now())
    revealed = env.client.submission_of(posted.task_id, account.address)
    assert revealed is not None and revealed.revealed
    assert revealed.weights_hash.hex() == record.weights_hash
    weights = env.store.get(revealed.uri)
    assert sha256_hex(weights) == record.weights_hash
    spec = default_spec("digits")
    model = load_weights(spec.build_model(), weights)
    assert evaluate(model, spec.load_split().public_train, "accuracy") > 0.8  # it really trained


def test_a_crash_between_commit_and_save_is_recovered_from_the_chain(arena_env: ArenaEnv) -> None:
    env = arena_env
    posted = env.post()
    account = env.staked(Role.TRAINER, 10)
    node = TrainerNode(env.client, account, env.store, env.home, QUICK)
    task = env.client.task(posted.task_id)
    node.step(task, env.client.now())
    # Rewind the notes to the moment after the salt was saved but before the commit was recorded.
    record = node.state.load(posted.task_id)
    record.committed = False
    node.state.save(record)

    env.travel_to(task.submit_deadline)
    restarted = TrainerNode(env.client, account, env.store, env.home, QUICK)
    restarted.step(env.client.task(posted.task_id), env.client.now())
    assert restarted.state.load(posted.task_id).revealed
    assert env.client.task(posted.task_id).revealed_count == 1


def test_a_trainer_without_enough_stake_gives_up_before_training(arena_env: ArenaEnv) -> None:
    env = arena_env
    posted = env.post(min_trainer_stake=50 * COV)
    account = env.staked(Role.TRAINER, 10)
    node = TrainerNode(env.client, account, env.store, env.home, QUICK)
    assert not node.step(env.client.task(posted.task_id), env.client.now())
    record = node.state.load(posted.task_id)
    assert "below the task's minimum" in record.gave_up
    assert node.state.load_weights(posted.task_id) is None
    assert env.client.submission_of(posted.task_id, account.address) is None


def test_a_trainer_that_missed_the_window_stays_out(arena_env: ArenaEnv) -> None:
    env = arena_env
    posted = env.post()
    account = env.staked(Role.TRAINER, 10)
    task = env.client.task(posted.task_id)
    env.travel_to(task.submit_deadline)
    node = TrainerNode(env.client, account, env.store, env.home, QUICK)
    assert not node.step(env.client.task(posted.task_id), env.client.now())
    assert node.state.load_weights(posted.task_id) is None
