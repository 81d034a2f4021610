"""What trainer and validator nodes share: identity, state folder, logging, retries and the keeper duty."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from eth_account.signers.local import LocalAccount

from covey.arena.client import ArenaClient, TaskInfo
from covey.arena.errors import NotReady
from covey.arena.state import NodeState, TaskRecord
from covey.chain import reverts
from covey.errors import ChainError, CoveyError
from covey.storage import ArtifactStore

Log = Callable[[str], None]

FATAL_REVERTS = frozenset(
    {
        reverts.ARENA_SUBMISSIONS_CLOSED,
        reverts.ARENA_TASK_FULL,
        reverts.ARENA_TRAINER_STAKE_TOO_LOW,
        reverts.ARENA_REVEAL_CLOSED,
        reverts.ARENA_BAD_REVEAL,
        reverts.ARENA_DUPLICATE_WEIGHTS,
        reverts.ARENA_SCORING_CLOSED,
        reverts.ARENA_TRAINER_CANNOT_VALIDATE,
        reverts.ARENA_VALIDATORS_FULL,
        reverts.ARENA_VALIDATOR_STAKE_TOO_LOW,
        reverts.ARENA_NO_VALIDATOR_STAKE,
        reverts.ARENA_SCORE_REVEAL_CLOSED,
        reverts.ARENA_WRONG_SCORE_COUNT,
        reverts.ARENA_NOTHING_TO_SCORE,
    }
)
"""Reverts that no retry can fix: the node stops working on the task. ("Already submitted" is not one: a
transaction whose receipt we missed may have landed, and reconciling with the chain tells.)"""


def _quiet(_: str) -> None:
    pass


class NodeBase:
    """One account acting in Arena tasks; subclasses implement `step(task, now) -> bool` for their role."""

    role = "node"

    def __init__(
        self,
        client: ArenaClient,
        account: LocalAccount,
        store: ArtifactStore,
        home: Path,
        *,
        name: str | None = None,
        log: Log | None = None,
        progress: bool = False,
        keeper: bool = True,
    ) -> None:
        self.client = client
        self.account = account
        self.address: str = account.address
        self.store = store
        self.home = home
        self.name = name or f"{self.role} {self.address[:10]}"
        self.state = NodeState(home, self.role, self.address)
        self.log = log or _quiet
        self.progress = progress
        self.keeper = keeper  # also calls `finalize` once a task can be settled
        self.seconds: dict[str, float] = {}  # time spent per kind of local work ("training", "evaluation")
        self._last_wait: dict[int, str] = {}
        self._reconciled: set[int] = set()  # tasks whose notes this process has checked against the chain

    @contextmanager
    def timed(self, work: str) -> Iterator[None]:
        """Add the time the block takes to `seconds[work]` (benchmarks split a cycle's time with it)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[work] = self.seconds.get(work, 0.0) + time.perf_counter() - started

    def step(self, task: TaskInfo, now: int) -> bool:
        """Act on `task` as its phase at chain time `now` asks; False once the task needs nothing more."""
        raise NotImplementedError

    def reconcile_once(self, task: TaskInfo, record: TaskRecord) -> None:
        """Check our notes against the chain the first time this process sees a task, and after any failure.

        A crash (or a lost receipt) can fall between a transaction and the save that records it.
        """
        if record.salt and task.task_id not in self._reconciled:
            self.reconcile(task, record)
            self._reconciled.add(task.task_id)

    def reconcile(self, task: TaskInfo, record: TaskRecord) -> None:
        """Update `record` from the chain, when what the chain holds is the commitment our notes open."""
        on_chain = self.on_chain(task)
        if on_chain is None or on_chain[0] != self.commitment(record):
            return
        if (record.committed, record.revealed) != (True, on_chain[1]):
            record.committed, record.revealed = True, on_chain[1]
            self.state.save(record)

    def on_chain(self, task: TaskInfo) -> tuple[bytes, bool] | None:
        """This node's commitment in `task` and whether it is revealed, or None if it has not committed."""
        raise NotImplementedError

    def commitment(self, record: TaskRecord) -> bytes:
        """The commitment our notes for a task open."""
        raise NotImplementedError

    def settle(self, task: TaskInfo, record: TaskRecord) -> bool:
        """The last two phases for every role: finalize when due (keepers), remember when done."""
        if task.finalized:
            record.finalized = True
            self.state.save(record)
            return False
        if self.keeper:
            self.attempt(record, "finalize", lambda: self._finalize(task))
        return True

    def attempt(self, record: TaskRecord, action: str, run: Callable[[], None]) -> None:
        """Run an action; a revert is logged and retried on the next step unless no retry can succeed."""
        try:
            run()
        except NotReady as exc:
            message = f"{self.name}: {action} waits: {exc}"
            if self._last_wait.get(record.task_id) != message:  # say it once, not on every poll
                self._last_wait[record.task_id] = message
                self.log(message)
        except ChainError as exc:
            self._reconciled.discard(record.task_id)
            reason = exc.reason or str(exc)
            if reason in FATAL_REVERTS:
                self.give_up(record, f"{action} refused: {reason}")
            elif reason != reverts.ARENA_ALREADY_FINALISED:  # another keeper was faster: nothing lost
                self.log(f"{self.name}: {action} failed ({reason}); will retry")
        except CoveyError as exc:
            self.give_up(record, f"{action} failed: {exc}")

    def give_up(self, record: TaskRecord, why: str) -> None:
        record.gave_up = why
        self.state.save(record)
        self.log(f"{self.name}: gave up on task {record.task_id}: {why}")

    def _finalize(self, task: TaskInfo) -> None:
        self.client.finalize(self.account, task.task_id)  # "already finalised" means another keeper was first
        self.log(f"{self.name}: finalized task {task.task_id}")
