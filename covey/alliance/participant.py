"""`Participant`: one alliance member that keeps its private data in its own process and acts on chain state.

What leaves the process: update hashes and votes (to the chain), and canonical update bytes and global
models (to the store). Training data never does: `Participant` holds it in a private attribute, trains
on it, and scores other members' updates on it.

`act()` looks at the alliance's phase and this member's role in the running round and does whatever
is due, once: a proposer trains from the round's global model and commits the hash of its update,
then uploads the bytes once proposals close (so nobody can copy them); a voter fetches every
committed update, checks it against its hash, recomputes the robust aggregate, scores each update on
its own data (`scoring.accept_mask`) and commit-reveals its per-update votes with the hash of the
model the round started from. Under `covey_trust` a voter votes what the rule keeps instead
(`scoring.trust_votes`), from public data only, so honest voters agree whatever data they hold.
With a `MemberState` a voter writes its vote and salt to disk before committing, so that a member
restarted after its commit still reveals (without one, as in-process runs do, the salt lives in memory).
A `Behaviour` turns a member into an attacker for tests and the demo.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
from eth_account.signers.local import LocalAccount

from covey.alliance import attacks
from covey.alliance.canonical import FloatDtype, decode_update, encode_update
from covey.alliance.client import AllianceClient, Phase, RoundRole
from covey.alliance.errors import AggregationError
from covey.alliance.ledger import ModelLedger
from covey.alliance.rules import aggregate_by_rule, needs_reference, trust_reference
from covey.alliance.scoring import accept_mask, score_updates, trust_votes
from covey.alliance.spec import AllianceSpec
from covey.alliance.state import MemberState, VoteRecord
from covey.chain.alliance_deploy import vote_commitment
from covey.errors import ChainError, StorageError
from covey.ml import TrainConfig, evaluate, flatten, train, unflatten
from covey.ml.datasets import Dataset
from covey.storage import ArtifactStore

if TYPE_CHECKING:
    from covey.alliance.privacy import DPConfig, PrivateTrainer

UPDATE_DTYPE: FloatDtype = "float32"  # deltas need no float64 precision; float32 halves what proposers upload
UPLOAD_WAIT_FRACTION = 0.5  # a voter waits this share of the commit phase for missing uploads

UpdateAttack = Callable[[np.ndarray, np.random.Generator], np.ndarray]
VoteStyle = Literal["honest", "invert", "accept_all"]


@dataclass(frozen=True)
class Behaviour:
    """How a member plays: honest, or one of the attacks the tests and the demo use."""

    name: str = "honest"
    update_attack: UpdateAttack | None = None
    flip_labels: bool = False
    vote: VoteStyle = "honest"
    skip_upload: bool = False

    @classmethod
    def named(cls, name: str) -> Behaviour:
        """A behaviour by name: `honest`, or an attacker that also votes against the honest majority."""
        attackers: dict[str, Behaviour] = {
            "sign_flip": cls("sign_flip", lambda u, _: attacks.sign_flip(u, 4.0), vote="invert"),
            "scaled": cls("scaled", lambda u, _: attacks.scaled(u, 10.0), vote="invert"),
            "gaussian_noise": cls(
                "gaussian_noise",
                lambda u, rng: attacks.gaussian_noise(u, int(rng.integers(2**31)), 10 * _rms(u)),
                vote="invert",
            ),
            "free_rider": cls("free_rider", lambda u, _: attacks.free_rider(u), vote="accept_all"),
            "label_flip": cls("label_flip", flip_labels=True, vote="invert"),
            "lazy": cls("lazy", skip_upload=True, vote="accept_all"),
        }
        if name == "honest":
            return cls()
        if name not in attackers:
            raise ValueError(f"unknown behaviour {name!r}; choose honest or one of {', '.join(sorted(attackers))}")
        return attackers[name]

    @property
    def is_attacker(self) -> bool:
        return self.name != "honest"


@dataclass
class RoundWork:
    """What this member has done in one round (so `act` never repeats a step)."""

    update: bytes | None = None
    update_hash: bytes | None = None
    uploaded: bool = False
    vote_mask: int | None = None
    model_hash: bytes | None = None
    salt: bytes | None = None
    vote_committed: bool = False
    revealed: bool = False
    recalled: bool = False  # the chain and the state file were asked what an earlier run of this member did
    saved_vote: VoteRecord | None = None  # on disk but not (yet) on chain: commit exactly this one
    scores: list[float] = field(default_factory=list)


class Participant:
    """An alliance member: its key, its private data, and what it does each phase."""

    def __init__(
        self,
        account: LocalAccount,
        client: AllianceClient,
        store: ArtifactStore,
        alliance_id: int,
        data: Dataset,
        spec: AllianceSpec,
        *,
        behaviour: Behaviour | None = None,
        ledger: ModelLedger | None = None,
        privacy: DPConfig | None = None,
        num_threads: int | None = 1,
        state: MemberState | None = None,
    ) -> None:
        spec.check_data(data)
        self.account = account
        self.client = client
        self.store = store
        self.alliance_id = alliance_id
        self.spec = spec
        self.behaviour = behaviour or Behaviour()
        self.ledger = ledger or ModelLedger(client, store, alliance_id)
        self.privacy = privacy  # DP-SGD settings, or None for plain training
        self.privacy_spent: list[tuple[float, float]] = []  # (epsilon, delta) over all rounds so far, per round
        self._private_trainer: PrivateTrainer | None = None
        self.num_threads = num_threads
        self.state = state  # where votes are written before they are committed; None keeps them in memory
        self._data = data  # private: never serialised, uploaded or logged
        self._model = spec.build_model()
        self._work: dict[int, RoundWork] = {}
        self._rule = client.alliance(alliance_id).aggregation_rule

    @property
    def address(self) -> str:
        return str(self.account.address)

    def __repr__(self) -> str:
        # Deliberately without the data: a repr ends up in logs.
        return f"Participant({self.address}, {self.behaviour.name}, {len(self._data)} private examples)"

    # -- the loop ------------------------------------------------------------------------------------

    def act(self) -> list[str]:
        """Do whatever this member owes the running round now; return what it did (empty when nothing)."""
        phase = self.client.phase(self.alliance_id)
        if phase in (Phase.IDLE, Phase.ARMED, Phase.COMPLETE):
            return []
        round_number = self.client.alliance(self.alliance_id).current_round
        role, index = self.client.role_in(self.alliance_id, round_number, self.address)
        work = self._work.setdefault(round_number, RoundWork())
        if role == RoundRole.PROPOSER:
            return self._propose(round_number, phase, work)
        if role == RoundRole.VOTER:
            return self._vote(round_number, index, phase, work)
        return []

    # -- proposer --------------------------------------------------------------------------------------

    def _propose(self, round_number: int, phase: Phase, work: RoundWork) -> list[str]:
        done: list[str] = []
        if phase == Phase.PROPOSING and work.update_hash is None:
            update = encode_update(self.local_update(round_number), UPDATE_DTYPE)
            update_hash = hashlib.sha256(update).digest()
            self.client.commit_update(self.alliance_id, update_hash, self.account)
            work.update, work.update_hash = update, update_hash
            done.append(f"committed update {update_hash.hex()[:12]}")
        # Upload only once proposals are closed: before that, a copy could still be committed.
        if phase >= Phase.COMMITTING and work.update is not None and not work.uploaded:
            if not self.behaviour.skip_upload:
                self.store.put(work.update)
                done.append("uploaded update")
            work.uploaded = True
        return done

    def local_update(self, round_number: int) -> np.ndarray:
        """Train from the round's global model on the private data; the update is trained minus start (float64)."""
        base = self.ledger.model_for_round(round_number)
        start = base.astype(np.float32)
        unflatten(self._model, start)
        data = self._training_data()
        seed = self._seed(round_number)
        if self.privacy is not None:
            if self._private_trainer is None:
                from covey.alliance.privacy import PrivateTrainer  # opacus is optional: import it only when used

                self._private_trainer = PrivateTrainer(self.privacy)
            self.privacy_spent.append(self._private_trainer.train(self._model, data, self.spec, seed=seed))
        else:
            config = TrainConfig(
                epochs=self.spec.local_epochs,
                lr=self.spec.lr,
                batch_size=self.spec.batch_size,
                seed=seed,
                num_threads=self.num_threads,
            )
            train(self._model, data, config, progress=False)
        update = flatten(self._model).astype(np.float64) - start.astype(np.float64)
        if self.behaviour.update_attack is not None:
            update = self.behaviour.update_attack(update, np.random.default_rng(seed))
        return update

    def _training_data(self) -> Dataset:
        if not self.behaviour.flip_labels or self._data.targets is None:
            return self._data
        flipped = attacks.label_flip(self._data.targets, self._data.num_classes)
        return Dataset(self._data.name, self._data.task, self._data.inputs, flipped, self._data.num_classes)

    # -- voter -----------------------------------------------------------------------------------------

    def _vote(self, round_number: int, index: int, phase: Phase, work: RoundWork) -> list[str]:
        done = self._recall_vote(round_number, index, work) if not work.recalled else []
        if phase == Phase.COMMITTING and not work.vote_committed:
            record = work.saved_vote
            if record is None:
                decided = self.decide_vote(round_number)
                if decided is None:
                    return done
                mask, model_hash = decided
                seed = self.client.round(self.alliance_id, round_number).seed
                record = VoteRecord(round_number, seed, mask, model_hash, os.urandom(32))
                if self.state is not None:
                    self.state.save_vote(record)  # the salt must be on disk before the commitment is on chain
                work.saved_vote = record
            with self._recall_on_failure(work):
                self.client.commit_vote(
                    self.alliance_id, record.accept_mask, record.model_hash, record.salt, self.account
                )
            work.vote_mask, work.model_hash, work.salt = record.accept_mask, record.model_hash, record.salt
            work.vote_committed = True
            return [*done, f"committed vote {record.accept_mask:#b}"]
        if phase == Phase.REVEALING and work.vote_committed and not work.revealed and work.salt is not None:
            assert work.vote_mask is not None and work.model_hash is not None
            with self._recall_on_failure(work):
                self.client.reveal_vote(self.alliance_id, work.vote_mask, work.model_hash, work.salt, self.account)
            work.revealed = True
            return [*done, f"revealed vote {work.vote_mask:#b}"]
        return done

    @staticmethod
    @contextmanager
    def _recall_on_failure(work: RoundWork) -> Iterator[None]:
        """A vote transaction failed: ask the chain again next time (an earlier run's may have landed since)."""
        try:
            yield
        except ChainError:
            work.recalled = False
            raise

    def _recall_vote(self, round_number: int, index: int, work: RoundWork) -> list[str]:
        """Once per round and run: take up what an earlier run of this member did (it may have been killed).

        The chain says whether our vote is committed and revealed; the state file holds the vote and salt
        behind a commitment. A saved vote that is not on chain yet is the one to commit (its salt may have
        gone out in a transaction that never landed). Returns a note when a committed vote cannot be revealed.
        """
        work.recalled = True
        saved = None
        if self.state is not None:
            saved = self.state.vote(round_number, self.client.round(self.alliance_id, round_number).seed)
        vote = self.client.votes(self.alliance_id, round_number)[index]
        if not vote.committed:
            work.saved_vote = saved
            return []
        work.vote_committed, work.revealed = True, vote.revealed
        if vote.revealed:
            return []
        if saved is None or vote_commitment(saved.accept_mask, saved.model_hash, saved.salt, self.address) != (
            vote.commitment
        ):
            return ["cannot reveal: the vote committed on chain is not the one saved in this member's state"]
        work.vote_mask, work.model_hash, work.salt = saved.accept_mask, saved.model_hash, saved.salt
        return [f"recalled committed vote {saved.accept_mask:#b}"]

    def decide_vote(self, round_number: int) -> tuple[int, bytes] | None:
        """This voter's accept mask and model hash for the round, or None while it waits for uploads."""
        proposals = self.client.proposals(self.alliance_id, round_number)
        committed = [(index, p.update_hash) for index, p in enumerate(proposals) if p.committed]
        base = self.ledger.model_for_round(round_number)
        fetched: dict[int, np.ndarray] = {}
        missing = 0
        for index, digest in committed:
            vector = self._fetch_update(digest, base.shape[0])
            if vector is None:
                missing += 1
            else:
                fetched[index] = vector
        if missing and not self._stop_waiting(round_number):
            return None
        honest_mask = self._judge(round_number, base, fetched)
        committed_mask = sum(1 << index for index, _ in committed)
        if self.behaviour.vote == "invert":
            mask = ~honest_mask & committed_mask
        elif self.behaviour.vote == "accept_all":
            mask = committed_mask
        else:
            mask = honest_mask
        return mask, self.ledger.hash_for_round(round_number)

    def _judge(self, round_number: int, base: np.ndarray, updates: dict[int, np.ndarray]) -> int:
        """The honest accept mask over the fetched updates, by proposer index.

        Under `covey_trust`: what the rule keeps against the round's reference (`trust_votes`).
        Otherwise: each update that passes `accept_mask` against the rule's aggregate of all of them.
        """
        if not updates:
            return 0
        indices = sorted(updates)
        vectors = [updates[i] for i in indices]
        if needs_reference(self._rule):
            accepted = trust_votes(vectors, trust_reference(self.ledger.model_for_round, round_number))
        else:
            candidate = aggregate_by_rule(self._rule, vectors)
            deltas = score_updates(base, vectors, self._evaluate)
            accepted = accept_mask(
                deltas,
                vectors,
                candidate,
                min_score_delta=self.spec.min_score_delta,
                max_distance_ratio=self.spec.max_distance_ratio,
            )
        return sum(1 << index for index, ok in zip(indices, accepted, strict=True) if ok)

    def _fetch_update(self, digest: bytes, size: int) -> np.ndarray | None:
        """The committed update with this hash, or None if it is not in the store (yet) or is malformed."""
        try:
            if not self.store.exists(digest.hex()):
                return None
            vector = decode_update(self.store.get(digest.hex(), max_bytes=64 + 8 * size))
        except (StorageError, AggregationError):
            return None  # unreadable or not an update: the same as never delivered, so it is rejected
        if vector.ndim != 1 or vector.shape[0] != size:
            return None
        return vector.astype(np.float64)

    def _stop_waiting(self, round_number: int) -> bool:
        info = self.client.round(self.alliance_id, round_number)
        commit_s = self.client.alliance(self.alliance_id).commit_duration
        return self.client.now() >= info.commit_end - UPLOAD_WAIT_FRACTION * commit_s

    def _evaluate(self, vector: np.ndarray) -> float:
        unflatten(self._model, vector.astype(np.float32))
        return evaluate(self._model, self._data, "accuracy")

    def _seed(self, round_number: int) -> int:
        tag = f"{self.alliance_id}:{round_number}:{self.address}".encode()
        return int.from_bytes(hashlib.sha256(tag).digest()[:4], "big")


def _rms(vector: np.ndarray) -> float:
    return float(np.sqrt(np.mean(vector * vector))) or 1.0
