"""Arena read models from the Arena's events: tasks with deadlines and phase, each task's leaderboard,
validators' scores against consensus, payouts and slashes.

Everything comes from the index (the events carry every figure `finalize` settles); only "now" comes
from the chain (the head block's time), to tell which phase a task is in.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from covey.explorer.errors import NotFound
from covey.explorer.queries import Event, Explorer

ARENA = "Arena"
SCORE_SCALE = 10**6  # scores are fixed point with 6 decimals, higher is better
PHASES = ("committing", "revealing", "scoring", "revealing scores", "finalisable", "finalised")
DEADLINES = ("submitDeadline", "revealDeadline", "scoreCommitDeadline", "scoreRevealDeadline")


@dataclass
class Submission:
    """One trainer's submission, in commit order, with what `finalize` decided."""

    index: int
    trainer: str
    committed: Event
    revealed: Event | None = None
    consensus: int | None = None
    rank: int = 0
    eligible: bool = False
    payout: int = 0
    slashed: int = 0
    slash_reason: str = ""

    @property
    def uri(self) -> str:
        return str(self.revealed["uri"]) if self.revealed else ""

    @property
    def weights_hash(self) -> str:
        return str(self.revealed["weightsHash"]) if self.revealed else ""


@dataclass
class ValidatorRow:
    """One validator: its stake weight, its scores per revealed submission, and how far off consensus."""

    validator: str
    weight: int
    committed: Event
    scores: list[int] | None = None  # per revealed submission, in commit order
    mean_deviation: int | None = None  # sum |score - consensus| // revealed submissions, like the contract
    payout: int = 0
    slashed: int = 0
    slash_reason: str = ""

    @property
    def revealed(self) -> bool:
        return self.scores is not None


@dataclass
class Task:
    """A task as its events tell it."""

    task_id: int
    created: Event
    phase: str
    reward_pool: int
    submissions: list[Submission] = field(default_factory=list)
    validators: list[ValidatorRow] = field(default_factory=list)
    funding: list[Event] = field(default_factory=list)
    finalized: Event | None = None
    refunded: int = 0
    events: list[Event] = field(default_factory=list)

    @property
    def creator(self) -> str:
        return str(self.created["creator"])

    @property
    def deadlines(self) -> dict[str, int]:
        return {name: int(self.created[name]) for name in DEADLINES}

    @property
    def next_deadline(self) -> tuple[str, int] | None:
        labels = ("submissions close", "reveals close", "scoring closes", "score reveals close")
        for label, name in zip(labels, DEADLINES, strict=True):
            if self.phase == PHASES[DEADLINES.index(name)]:
                return label, int(self.created[name])
        return None

    @property
    def revealed_submissions(self) -> list[Submission]:
        return [s for s in self.submissions if s.revealed is not None]

    @property
    def leaderboard(self) -> list[Submission]:
        """Ranked submissions first (best first), then the unranked in commit order."""
        return sorted(self.submissions, key=lambda s: (s.rank == 0, s.rank, s.index))

    @property
    def winner(self) -> str | None:
        if self.finalized is None:
            return None
        winner = str(self.finalized["winner"])
        return None if int(winner, 16) == 0 else winner

    @property
    def trainer_paid(self) -> int:
        return int(self.finalized["trainerPaid"]) if self.finalized else 0

    @property
    def validator_paid(self) -> int:
        return int(self.finalized["validatorPaid"]) if self.finalized else 0


@dataclass(frozen=True)
class TaskRow:
    """A line of the task list."""

    task_id: int
    created: Event
    phase: str
    reward_pool: int
    submissions: int
    revealed: int
    validators: int
    winner: str | None
    next_deadline: int | None


def phase_of(created: Event, finalized: bool, now: int) -> str:
    """The task's phase at chain time `now`, as `Arena.phase` computes it."""
    if finalized:
        return PHASES[5]
    for index, name in enumerate(DEADLINES):
        if now < int(created[name]):
            return PHASES[index]
    return PHASES[4]


def tasks(explorer: Explorer) -> list[TaskRow]:
    """Every task, newest first, with counts from the index and its phase now."""
    now = explorer.status().head_ts or 0
    counts: dict[tuple[int, str], int] = {}
    for row in explorer.db().execute(
        "SELECT ref, event, COUNT(*) FROM events WHERE contract = ? AND ref IS NOT NULL GROUP BY ref, event",
        (ARENA,),
    ):
        counts[(int(row[0]), str(row[1]))] = int(row[2])
    pools = {e.ref: int(e["rewardPool"]) for e in explorer.of(ARENA, "PoolFunded")}
    finals = {e.ref: e for e in explorer.of(ARENA, "TaskFinalized")}
    rows = []
    for created in reversed(explorer.of(ARENA, "TaskCreated")):
        task_id = int(created["taskId"])
        final = finals.get(task_id)
        phase = phase_of(created, final is not None, now)
        upcoming = [int(created[name]) for name in DEADLINES if int(created[name]) > now]
        winner = str(final["winner"]) if final is not None and int(str(final["winner"]), 16) else None

        def count(event: str, task_id: int = task_id) -> int:
            return counts.get((task_id, event), 0)

        rows.append(
            TaskRow(
                task_id=task_id,
                created=created,
                phase=phase,
                reward_pool=pools.get(task_id, int(created["rewardPool"])),
                submissions=count("SubmissionCommitted"),
                revealed=count("SubmissionRevealed") - count("SubmissionDisplaced"),
                validators=count("ScoresCommitted"),
                winner=winner,
                next_deadline=min(upcoming) if upcoming and final is None else None,
            )
        )
    return rows


def task(explorer: Explorer, task_id: int) -> Task:
    """Task `task_id` with its leaderboard and validators; `NotFound` if the Arena never created it."""
    events = explorer.of(ARENA, ref=task_id)
    created = next((e for e in events if e.event == "TaskCreated"), None)
    if created is None:
        raise NotFound(f"the Arena has no task {task_id}")
    now = explorer.status().head_ts or 0
    result = Task(task_id, created, "", int(created["rewardPool"]), events=events)
    by_trainer: dict[str, Submission] = {}
    by_validator: dict[str, ValidatorRow] = {}
    for e in events:
        if e.event == "PoolFunded":
            result.funding.append(e)
            result.reward_pool = int(e["rewardPool"])
        elif e.event == "SubmissionCommitted":
            submission = Submission(int(e["index"]), str(e["trainer"]), e)
            result.submissions.append(submission)
            by_trainer[submission.trainer] = submission
        elif e.event == "SubmissionRevealed" and e["trainer"] in by_trainer:
            by_trainer[e["trainer"]].revealed = e
        elif e.event == "SubmissionDisplaced" and e["trainer"] in by_trainer:
            by_trainer[e["trainer"]].revealed = None  # a copy: an earlier commitment revealed the same weights
        elif e.event == "ScoresCommitted":
            row = ValidatorRow(str(e["validator"]), int(e["weight"]), e)
            result.validators.append(row)
            by_validator[row.validator] = row
        elif e.event == "ScoresRevealed" and e["validator"] in by_validator:
            by_validator[e["validator"]].scores = [int(score) for score in e["scores"]]
        elif e.event == "ConsensusReached" and e["trainer"] in by_trainer:
            submission = by_trainer[e["trainer"]]
            submission.consensus, submission.rank = int(e["consensusScore"]), int(e["rank"])
            submission.eligible = bool(e["eligible"])
        elif e.event == "TrainerPaid" and e["trainer"] in by_trainer:
            by_trainer[e["trainer"]].payout += int(e["amount"])
        elif e.event == "ValidatorPaid" and e["validator"] in by_validator:
            by_validator[e["validator"]].payout += int(e["amount"])
        elif e.event == "Slashed":
            target = by_trainer.get(e["account"]) if int(e["role"]) == 0 else by_validator.get(e["account"])
            if target is not None:
                target.slashed += int(e["slashed"])
                target.slash_reason = str(e["reason"])
        elif e.event == "RemainderReturned":
            result.refunded += int(e["amount"])
        elif e.event == "TaskFinalized":
            result.finalized = e
    result.submissions.sort(key=lambda s: s.index)
    result.phase = phase_of(created, result.finalized is not None, now)
    _deviations(result)
    return result


def _deviations(task: Task) -> None:
    """Each revealed validator's mean absolute deviation from consensus, computed as `finalize` does."""
    consensus = [s.consensus for s in task.revealed_submissions]
    if not consensus or any(c is None for c in consensus):
        return
    for row in task.validators:
        if row.scores is not None and len(row.scores) == len(consensus):
            total = sum(abs(score - int(c or 0)) for score, c in zip(row.scores, consensus, strict=True))
            row.mean_deviation = total // len(consensus)
