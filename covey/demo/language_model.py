"""For the gateway chapter when no consensus model is servable yet: a small Shakespeare task played by Arena nodes.

Everything is the Arena's own code. The creator publishes the task (`covey.arena.manifest.publish_task`: the
public training split and the manifest in the store, the validation key kept for its validators); a staked
trainer trains a CharGPT on the public split, commits to it and reveals it (`TrainerNode`); two staked
validators score the revealed weights in bits per character on the held-out plays (`ValidatorNode`), commit
and reveal; the contract's consensus score is the stake-weighted median of what they measured, and a model
that does no better than the task's baseline is junk: the gateway then has nothing to serve.

The creator publishes the manifest before it opens the task on chain and the trainer trains then, so the
task's phases hold only transactions and the validators' scoring and last seconds, waited for in real time
(the chain's clock follows wall time: x402 clients sign from it). The faucet makes this a local-chain affair.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from eth_account import Account
from eth_account.signers.local import LocalAccount

from covey.arena.base import Log
from covey.arena.client import ArenaClient, Deadlines, TaskInfo
from covey.arena.manifest import TaskManifest, fetch_training_data, publish_task, save_key
from covey.arena.scenario import play
from covey.arena.scoring import chain_score, to_fixed
from covey.arena.trainer import TrainerNode
from covey.arena.validator import ValidatorNode
from covey.chain import Chain
from covey.chain.deploy import Deployment
from covey.chain.faucet import fund
from covey.chain.roles import Role
from covey.errors import ChainError
from covey.ml import TaskSpec, TrainConfig, default_spec, save_weights, train
from covey.ml.evaluate import get_metric
from covey.storage import ArtifactStore

COV = 10**18
TRAIN_STEPS = 150
TRAIN_SEED = 0
PHASES_S = (3, 3, 12, 3)
"""Seconds to commit, reveal, score and reveal scores. Training happens before the task opens; scoring
(two validators, ~2 s each here, several times that on a loaded 2-core machine) is the only real work."""
VALIDATORS = 2
BASELINE_BPC = 7.0  # a uniform guess over bytes scores 8: the task asks for a model that learnt something
TOLERANCE_BPC = 1.0
REWARD_POOL = 100 * COV
MIN_TRAINER_STAKE = 100 * COV
MIN_VALIDATOR_STAKE = 1_000 * COV


class EarlyTrainer(TrainerNode):
    """A `TrainerNode` that trained on the task's public split when the creator published the manifest.

    Everything else is the node's own: the stake check, the salted commitment kept on disk, the upload
    and reveal after the submission deadline, and the keeper's `finalize`.
    """

    def __init__(self, *args: Any, weights: bytes, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.weights = weights

    def make_weights(self, task: TaskInfo, manifest: TaskManifest) -> bytes:
        return self.weights


def language_spec() -> TaskSpec:
    """The demo's task: the default Shakespeare CharGPT task with the demo's baseline."""
    return default_spec(
        "shakespeare",
        baseline_score=BASELINE_BPC,
        description="Covey demo: a small Shakespeare model for the gateway",
    )


def train_on(store: ArtifactStore, manifest: TaskManifest, steps: int) -> bytes:
    """A CharGPT for the task, trained on its public training split only; its safetensors bytes."""
    data = fetch_training_data(store, manifest)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TRAIN_SEED)
        model = manifest.spec.build_model()
    # One thread, as Arena nodes train: small models train fastest on one, and the demo shares the machine.
    config = TrainConfig(lr=3e-3, batch_size=16, max_steps=steps, seed=TRAIN_SEED, num_threads=1)
    train(model, data, config, progress=False)
    return save_weights(model)


def publish_language_model(
    chain: Chain,
    deployment: Deployment,
    arena: str,
    store: ArtifactStore,
    home: Path,
    *,
    steps: int = TRAIN_STEPS,
    phases_s: Sequence[int] = PHASES_S,
    log: Log | None = None,
) -> int:
    """Take a small Shakespeare CharGPT through an Arena task at `arena` to consensus; return the task id.

    The validation key and the nodes' notes go under `home` (the data directory). `ChainError` when the
    task ends without a consensus model (say, the validators found the model no better than the baseline).
    """
    if not chain.is_local:
        raise ChainError("the demo's language task funds its accounts from the faucet: run it on a local chain")
    client = ArenaClient(chain, arena)
    creator, trainer, *validators = (_funded(chain, deployment) for _ in range(2 + VALIDATORS))
    _stake(client, trainer, Role.TRAINER, MIN_TRAINER_STAKE)
    for validator in validators:
        _stake(client, validator, Role.VALIDATOR, MIN_VALIDATOR_STAKE)

    spec = language_spec()
    manifest, key = publish_task(spec, store)
    save_key(home, manifest.spec_hash, key)  # the creator hands the key to its validators (here: same home)
    weights = train_on(store, manifest, steps)
    metric = get_metric(spec.metric)
    task_id = client.create_task(
        creator,
        spec_hash=manifest.spec_hash,
        reward_pool=REWARD_POOL,
        deadlines=Deadlines.after(client.now(), *phases_s),
        top_k=1,
        min_trainer_stake=MIN_TRAINER_STAKE,
        min_validator_stake=MIN_VALIDATOR_STAKE,
        baseline_score=chain_score(BASELINE_BPC, higher_is_better=metric.higher_is_better, worst=metric.worst),
        tolerance=to_fixed(TOLERANCE_BPC),
    )
    common: dict[str, Any] = {"store": store, "home": home, "log": log}
    nodes = [
        EarlyTrainer(client, trainer, weights=weights, name="bard", **common),
        *(ValidatorNode(client, v, name=f"critic-{i}", **common) for i, v in enumerate(validators, 1)),
    ]
    play(client, nodes, task_id)
    if client.consensus_model(task_id) is None:
        raise ChainError(f"Arena task {task_id} ended without a consensus model: the validators found none good enough")
    return task_id


def _funded(chain: Chain, deployment: Deployment) -> LocalAccount:
    account: LocalAccount = Account.create()
    fund(chain, deployment, account.address)
    return account


def _stake(client: ArenaClient, account: LocalAccount, role: Role, amount: int) -> None:
    client.chain.transact(client.token.functions.approve(client.staking.address, amount), account)
    client.chain.transact(client.staking.functions.stake(role, amount), account)
