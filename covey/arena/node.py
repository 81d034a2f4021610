"""`NodeRunner`: the long-running loop that watches the chain and steps one node through every task.

It polls the Arena's task views (cheap, and the same on every backend), steps the node for each task
still in play, and sleeps. `stop()` (wired to SIGTERM/SIGINT by the CLI) ends the loop between steps;
whatever the node committed is already on disk, so a restarted node picks up where it left off.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from covey.arena.base import NodeBase
from covey.arena.client import TaskInfo
from covey.errors import CoveyError


@dataclass
class RunSummary:
    """What a run did: the tasks it finished (and how), how long it ran, why it stopped."""

    finished: dict[int, str] = field(default_factory=dict)  # task id -> outcome
    seconds: float = 0.0
    stopped_by: str = ""


class NodeRunner:
    """Steps `node` through tasks until stopped, or until `max_tasks` tasks it took part in are done.

    - `task_ids`: only these tasks (default: every task on chain, including ones created later).
    - `once`: one pass over the tasks, then return (for cron jobs and tests).
    - `until`: an extra stop condition checked after every pass (the CLI's one-shot commands use it).
    """

    def __init__(
        self,
        node: NodeBase,
        *,
        task_ids: Iterable[int] | None = None,
        max_tasks: int | None = None,
        once: bool = False,
        poll_s: float = 1.0,
        until: Callable[[], bool] | None = None,
    ) -> None:
        self.node = node
        self.task_ids = sorted(set(task_ids)) if task_ids is not None else None
        self.max_tasks = max_tasks
        self.once = once
        self.poll_s = poll_s
        self.until = until
        self._stop = threading.Event()
        self.summary = RunSummary()

    def stop(self, why: str = "stop requested") -> None:
        """Ask the loop to end after the current step (safe from a signal handler or another thread)."""
        if not self.summary.stopped_by:
            self.summary.stopped_by = why
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> RunSummary:
        started = time.monotonic()
        try:
            while not self._stop.is_set():
                self.run_once()
                if self.once:
                    self.stop("one pass done")
                elif self.max_tasks is not None and self._took_part_count() >= self.max_tasks:
                    self.stop(f"{self.max_tasks} task(s) done")
                elif self.until is not None and self.until():
                    self.stop("done")
                elif self.task_ids is not None and all(task_id in self.summary.finished for task_id in self.task_ids):
                    self.stop("every chosen task is done")
                else:
                    self._stop.wait(self.poll_s)
        finally:
            self.summary.seconds = time.monotonic() - started
        return self.summary

    def run_once(self) -> int:
        """One pass: step the node through every task still in play; returns how many remain in play."""
        in_play = 0
        for task_id in self._candidates():
            if self._stop.is_set():
                break
            try:
                task = self.node.client.task(task_id)
                still_in_play = self.node.step(task, self.node.client.now())
            except (CoveyError, OSError) as exc:  # the chain or the store is unreachable for now: try again
                self.node.log(f"{self.node.name}: task {task_id}: {exc}; will retry")
                in_play += 1
                continue
            if still_in_play:
                in_play += 1
            else:
                self.summary.finished[task_id] = self._outcome(task)
        return in_play

    def _candidates(self) -> list[int]:
        known = self.task_ids if self.task_ids is not None else range(1, self.node.client.task_count() + 1)
        return [task_id for task_id in known if task_id not in self.summary.finished]

    def _took_part_count(self) -> int:
        return sum(1 for outcome in self.summary.finished.values() if outcome != "not taken part")

    def _outcome(self, task: TaskInfo) -> str:
        record = self.node.state.load(task.task_id)
        if record.gave_up:
            return f"gave up: {record.gave_up}"
        if record.finalized:
            return "settled"
        if record.revealed:
            return "revealed"
        return "not taken part"
