"""`ValidatorNode`: score every revealed submission on the held-out split, flag copies, commit, then reveal.

Scoring a submission: fetch its weights by the revealed hash (the store checks sha256, and so do we),
score them with `covey.ml.score_submission` on the held-out data (bad files get the metric's worst), and
give the worst score to near-duplicates of an earlier-committed submission or of a known public model.
Earlier commit wins: honest trainers publish nothing before the reveal, so a copy is always committed
after its original. The held-out data comes from the task's validation key (see `covey.arena.manifest`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import torch
from eth_account.signers.local import LocalAccount

from covey.arena.base import Log, NodeBase
from covey.arena.client import ArenaClient, Phase, Submission, TaskInfo, new_salt, scores_commitment
from covey.arena.errors import NotReady
from covey.arena.manifest import TaskManifest, fetch_manifest, held_out_data, load_key
from covey.arena.scoring import WORST_SCORE, chain_score
from covey.arena.state import TaskRecord
from covey.chain.roles import Role
from covey.errors import CoveyError, StorageError
from covey.ml import Dataset, TaskSpec, build_model, load_weights, score_submission
from covey.ml.evaluate import get_metric
from covey.ml.weights import read_architecture
from covey.storage import ArtifactStore, open_store, sha256_hex

WEIGHT_DISTANCE = 0.5  # independently trained models sit near 1.4 apart; a copy plus noise far closer
OUTPUT_DISTANCE = 0.02  # the same function in other clothes (permuted units) answers probes identically
PROBE_EXAMPLES = 256
PROBE_SEED = 20_240_601


@dataclass(frozen=True)
class Fingerprint:
    """What two submissions are compared by: their weight matrices, flat, and their answers to fixed probes."""

    weights: np.ndarray
    outputs: np.ndarray

    def near(self, other: Fingerprint) -> bool:
        """Whether `other` is a copy of this model, up to small noise or a reordering of its units."""
        if (
            self.weights.shape == other.weights.shape
            and _relative_distance(self.weights, other.weights) < WEIGHT_DISTANCE
        ):
            return True
        return self.outputs.shape == other.outputs.shape and (
            _relative_distance(self.outputs, other.outputs) < OUTPUT_DISTANCE
        )


@dataclass(frozen=True)
class PublicModel:
    """A model anyone could copy, and who made it (its author may build on it; nobody else may resubmit it)."""

    label: str
    author: str | None
    mark: Fingerprint


@dataclass
class Evaluation:
    """One validator's judgement of a task: a chain score and a note per revealed submission, in order."""

    submissions: list[Submission]
    scores: list[int]
    notes: list[str] = field(default_factory=list)


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run the block with `count` torch threads (None: leave the setting alone), then restore it."""
    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _relative_distance(a: np.ndarray, b: np.ndarray) -> float:
    scale = max(float(np.linalg.norm(a)), float(np.linalg.norm(b)), 1e-12)
    return float(np.linalg.norm(a.astype(np.float64) - b.astype(np.float64))) / scale


def probe_inputs(spec: TaskSpec, data: Dataset) -> torch.Tensor:
    """Fixed random inputs shaped like the task's data: classifiers see noise with the data's statistics."""
    rng = np.random.default_rng(PROBE_SEED)
    if data.task == "language":
        block = int(spec.architecture.get("block_size", 64))
        return torch.from_numpy(rng.integers(0, data.num_classes, (16, block)).astype(np.int64))
    inputs = np.asarray(data.inputs, dtype=np.float32)
    mean, std = inputs.mean(axis=0), inputs.std(axis=0) + 1e-3
    noise = rng.standard_normal((PROBE_EXAMPLES, *inputs.shape[1:])).astype(np.float32)
    return torch.from_numpy(mean + std * noise)


def fingerprint(weights: bytes, spec: TaskSpec, probes: torch.Tensor) -> Fingerprint | None:
    """The fingerprint of weights that `score_submission` accepted; None when they cannot be loaded."""
    try:
        _, submitted = read_architecture(weights, spec.size_limit_bytes)
        model = build_model(spec.family, {**spec.architecture, **(submitted or {})})
        load_weights(model, weights, spec.size_limit_bytes)
        model.eval()
        if probes.dtype == torch.int64:  # token windows: no longer than this model's context
            probes = probes[:, : int(getattr(model.config, "block_size", probes.shape[-1]))]
        with torch.no_grad():
            outputs = model(probes)
    except (CoveyError, RuntimeError, ValueError):
        return None
    # Only matrices and kernels: they start random, while biases and norm scales start equal in every model.
    matrices = [
        t.detach().reshape(-1).float() for t in model.state_dict().values() if t.is_floating_point() and t.dim() >= 2
    ]
    weights_vector = torch.cat(matrices).numpy() if matrices else np.zeros(0, dtype=np.float32)
    return Fingerprint(weights_vector, outputs.reshape(-1).numpy().astype(np.float32))


def fetch_weights(store: ArtifactStore, submission: Submission, max_bytes: int) -> bytes:
    """A revealed submission's weights from our store (or the local store its URI names), hash-checked."""
    digest = submission.weights_hash.hex()
    try:
        data = store.get(digest, max_bytes=max_bytes)
    except StorageError:
        # The trainer may use another store: follow its URI when it names one we can open.
        other = _store_of(submission.uri)
        if other is None:
            raise
        data = other.get(digest, max_bytes=max_bytes)
    if sha256_hex(data) != digest:  # the store checks too; a wrong hash here is never acceptable
        raise StorageError(f"weights for submission {submission.index} do not hash to the revealed weightsHash")
    return data


def _store_of(uri: str) -> ArtifactStore | None:
    parts = urlsplit(uri)
    if parts.scheme == "file":
        root = Path(unquote(parts.path)).parent.parent  # LocalStore keeps <root>/<2 hex>/<digest>
        return open_store(root.as_uri(), root) if root.is_dir() else None
    if parts.scheme == "s3":
        return open_store(uri.rsplit("/", 1)[0], Path("."))
    return None


class ValidatorNode(NodeBase):
    """One staked validator account; `step` is safe to call repeatedly, and state survives restarts."""

    role = "validator"

    def __init__(
        self,
        client: ArenaClient,
        account: LocalAccount,
        store: ArtifactStore,
        home: Path,
        *,
        known_models: tuple[bytes, ...] = (),
        num_threads: int | None = 1,
        name: str | None = None,
        log: Log | None = None,
        progress: bool = False,
        keeper: bool = True,
    ) -> None:
        super().__init__(client, account, store, home, name=name, log=log, progress=progress, keeper=keeper)
        self.known_models = known_models  # extra public weights a submission must not copy
        self.num_threads = num_threads  # torch threads while scoring; small models score fastest on one
        self._evaluations: dict[int, Evaluation] = {}

    # -- the phase machine ----------------------------------------------------------------------------

    def step(self, task: TaskInfo, now: int) -> bool:
        record = self.state.load(task.task_id)
        if record.gave_up or record.finalized:
            return False
        phase = task.phase_at(now)
        if phase < Phase.SCORING:
            return True
        self.reconcile_once(task, record)
        if phase == Phase.SCORING:
            if not record.committed:
                self.attempt(record, "commit scores", lambda: self.commit(task, record))
            return not record.gave_up
        if not record.committed:
            return False
        if phase == Phase.REVEALING_SCORES:
            if not record.revealed:
                self.attempt(record, "reveal scores", lambda: self.reveal(task, record))
            return not record.gave_up
        if not record.revealed:
            self.give_up(record, "the score-reveal window closed before we revealed")
            return False
        return self.settle(task, record)

    def done_scoring(self, task_id: int) -> bool:
        """Whether this node has revealed its scores (or given up): all a one-shot `validate` waits for."""
        record = self.state.load(task_id)
        return record.revealed or bool(record.gave_up)

    # -- judging --------------------------------------------------------------------------------------

    def evaluate(self, task: TaskInfo) -> Evaluation:
        """Score every revealed submission of `task` honestly (cached per task)."""
        if task.task_id in self._evaluations:
            return self._evaluations[task.task_id]
        try:
            key = load_key(self.home, task.spec_hash)
        except StorageError as exc:
            raise NotReady(str(exc)) from exc  # the creator may still deliver it before scoring closes
        revealed = [sub for sub in self.client.submissions(task.task_id) if sub.revealed]
        with self.timed("evaluation"), torch_threads(self.num_threads):
            manifest = fetch_manifest(self.store, task.spec_hash)
            held_out = held_out_data(manifest, key)
            evaluation = self.judge(task, manifest, held_out, revealed)
        self._evaluations[task.task_id] = evaluation
        return evaluation

    def judge(
        self, task: TaskInfo, manifest: TaskManifest, held_out: Dataset, revealed: list[Submission]
    ) -> Evaluation:
        """Scores and notes for `revealed` (in submission order): quality, then copies zeroed."""
        spec = manifest.spec
        metric = get_metric(spec.metric)
        probes = probe_inputs(spec, held_out)
        originals = self._public_fingerprints(task, spec, probes)
        scores: list[int] = []
        notes: list[str] = []
        seen: list[tuple[Submission, Fingerprint]] = []
        for sub in revealed:
            try:
                weights = fetch_weights(self.store, sub, spec.size_limit_bytes)
            except StorageError as exc:
                scores.append(WORST_SCORE)
                notes.append(f"unavailable: {exc}")
                continue
            score = score_submission(weights, spec, held_out, progress=self.progress)
            if not score.valid:
                scores.append(WORST_SCORE)
                notes.append(f"refused: {score.reason}")
                continue
            mark = fingerprint(weights, spec, probes)
            copied = self._copied_from(sub, mark, seen, originals) if mark is not None else None
            if mark is not None and copied is None:  # a copy is never anyone's original
                seen.append((sub, mark))
            if copied is not None:
                scores.append(WORST_SCORE)
                notes.append(f"copy of {copied} ({spec.metric} {score.value:.4f})")
                continue
            scores.append(chain_score(score.value, higher_is_better=metric.higher_is_better, worst=metric.worst))
            notes.append(f"{spec.metric} {score.value:.4f}")
        self.log(f"{self.name}: scored {len(scores)} submissions of task {task.task_id}")
        return Evaluation(revealed, scores, notes)

    def choose_scores(self, task: TaskInfo, evaluation: Evaluation) -> list[int]:
        """The scores to commit; an honest validator commits exactly what it measured."""
        return list(evaluation.scores)

    @staticmethod
    def _copied_from(
        candidate: Submission,
        mark: Fingerprint,
        seen: list[tuple[Submission, Fingerprint]],
        originals: list[PublicModel],
    ) -> str | None:
        """What `candidate` copies: an earlier-committed submission, or a public model it did not make itself."""
        for earlier, earlier_mark in seen:
            if earlier_mark.near(mark):
                return f"submission {earlier.index} by {earlier.trainer}"
        for original in originals:
            if original.author != candidate.trainer and original.mark.near(mark):
                return original.label
        return None

    def _public_fingerprints(self, task: TaskInfo, spec: TaskSpec, probes: torch.Tensor) -> list[PublicModel]:
        """Models anyone could copy: earlier tasks' consensus models for this dataset, and `known_models`."""
        found: list[PublicModel] = []
        for index, weights in enumerate(self.known_models):
            mark = fingerprint(weights, spec, probes)
            if mark is not None:
                found.append(PublicModel(f"known public model {index}", None, mark))
        for earlier_id in range(1, task.task_id):
            model = self.client.consensus_model(earlier_id)
            if model is None:
                continue
            try:
                earlier_spec = fetch_manifest(self.store, self.client.task(earlier_id).spec_hash).spec
                if (earlier_spec.dataset, earlier_spec.family) != (spec.dataset, spec.family):
                    continue
                weights = self.store.get(model.weights_hash.hex(), max_bytes=spec.size_limit_bytes)
            except CoveyError:
                continue  # a model we cannot fetch is one a copycat could not easily fetch either
            mark = fingerprint(weights, spec, probes)
            if mark is not None:
                found.append(PublicModel(f"the consensus model of task {earlier_id}", model.trainer, mark))
        return found

    # -- the actions ----------------------------------------------------------------------------------

    def commit(self, task: TaskInfo, record: TaskRecord) -> None:
        """Judge (once), keep scores and salt on disk, then commit on chain."""
        if not record.salt:
            if task.revealed_count == 0:
                self.give_up(record, "no submission was revealed")
                return
            stake = self.client.effective_stake(self.address, Role.VALIDATOR)
            if stake < max(task.min_validator_stake, 1):
                self.give_up(record, f"validator stake {stake} is below the task's minimum {task.min_validator_stake}")
                return
            evaluation = self.evaluate(task)
            record.scores = self.choose_scores(task, evaluation)
            record.notes = {
                str(sub.index): note for sub, note in zip(evaluation.submissions, evaluation.notes, strict=True)
            }
            record.salt = new_salt().hex()
            self.state.save(record)  # the salt must be on disk before the commitment is on chain
        self.client.commit_scores(self.account, task.task_id, self.commitment(record))
        record.committed = True
        self.state.save(record)
        self.log(f"{self.name}: committed scores for task {task.task_id}")

    def reveal(self, task: TaskInfo, record: TaskRecord) -> None:
        self.client.reveal_scores(self.account, task.task_id, record.scores, record.salt_bytes)
        record.revealed = True
        self.state.save(record)
        self.log(f"{self.name}: revealed scores for task {task.task_id}")

    def commitment(self, record: TaskRecord) -> bytes:
        return scores_commitment(record.scores, record.salt_bytes, self.address)

    def on_chain(self, task: TaskInfo) -> tuple[bytes, bool] | None:
        mine = self.client.validator_of(task.task_id, self.address)
        return None if mine is None else (mine.commitment, mine.revealed)
