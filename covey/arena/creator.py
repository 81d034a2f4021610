"""The task creator's side: publish the manifest and training data, keep the validation key, post the task."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from eth_account.signers.local import LocalAccount

from covey.arena.client import ArenaClient, Deadlines
from covey.arena.manifest import TaskManifest, publish_task, save_key
from covey.arena.scoring import chain_score, to_fixed
from covey.errors import ValidationError
from covey.ml import TaskSpec
from covey.ml.evaluate import get_metric
from covey.storage import ArtifactStore


@dataclass(frozen=True)
class PostedTask:
    """A task on chain, its public manifest, and where the creator keeps its validation key."""

    task_id: int
    manifest: TaskManifest
    key_path: Path


def post_task(
    client: ArenaClient,
    creator: LocalAccount,
    store: ArtifactStore,
    home: Path,
    spec: TaskSpec,
    *,
    reward_pool: int,
    deadlines: Deadlines,
    top_k: int = 3,
    min_trainer_stake: int = 0,
    min_validator_stake: int = 0,
    tolerance: float = 0.02,
    baseline: float | None = None,
) -> PostedTask:
    """Split the data with a fresh secret, upload the public part and the manifest, and create the task.

    `baseline` (default: the spec's) and `tolerance` are in the metric's own units; the key is written to
    `home/arena/keys/<specHash>.json` for the creator to hand to its validators.
    """
    metric = get_metric(spec.metric)
    baseline = spec.baseline_score if baseline is None else baseline
    if baseline is None:
        raise ValidationError("the task needs a baseline score: set one in the spec or pass --baseline")
    if tolerance <= 0:
        raise ValidationError(f"tolerance must be positive, got {tolerance}")
    manifest, key = publish_task(spec, store)
    key_path = save_key(home, manifest.spec_hash, key)
    task_id = client.create_task(
        creator,
        spec_hash=manifest.spec_hash,
        reward_pool=reward_pool,
        deadlines=deadlines,
        top_k=top_k,
        min_trainer_stake=min_trainer_stake,
        min_validator_stake=min_validator_stake,
        baseline_score=chain_score(baseline, higher_is_better=metric.higher_is_better, worst=metric.worst),
        tolerance=to_fixed(tolerance),
    )
    return PostedTask(task_id, manifest, key_path)
