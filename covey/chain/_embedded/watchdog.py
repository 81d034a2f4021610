"""Wall-time limits for work done in a thread: past its deadline, the thread gets `DeadlineExceeded`.

Python cannot kill a thread, and an EVM call spends its time where no opcode counter looks: py-evm runs
the bn128 and BLS12-381 precompiles in pure Python (~0.5 s per pairing here, and one ecpairing call may
ask for ~1,400 pairings with 50M gas), and blake2f charges one gas per round. So the watchdog asks the
interpreter to raise `DeadlineExceeded` in the late thread (CPython's `PyThreadState_SetAsyncExc`); the
thread sees it at its next bytecode boundary, wherever in pure Python it is. Measured: a call spinning
in a loop stops within ~10 ms of its deadline on an idle machine.

Only work that owns nothing shared may run under a deadline, since the exception can land on any line:
a call on its private `StateView` does (the node lock is released before the deadline starts).
`DeadlineExceeded` (in `covey.chain.errors`) derives from `BaseException` so that no `except Exception` on
the way swallows it.
"""

from __future__ import annotations

import contextlib
import ctypes
import heapq
import itertools
import queue
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType

from covey.chain.errors import DeadlineExceeded

# Own prototypes of PyThreadState_SetAsyncExc (holding the GIL, as PYFUNCTYPE does): one raises, the
# other passes NULL, which cancels an exception the thread has not seen yet.
_raise_in = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.py_object)(
    ("PyThreadState_SetAsyncExc", ctypes.pythonapi)
)
_cancel_in = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)(
    ("PyThreadState_SetAsyncExc", ctypes.pythonapi)
)
# Past this many finished deadlines waiting in the heap for their time, drop them all at once.
_PRUNE_ABOVE = 1024


@dataclass(order=True)
class _Deadline:
    at: float
    order: int
    thread_id: int = field(compare=False)
    active: bool = field(default=True, compare=False)
    fired: bool = field(default=False, compare=False)


class Watchdog:
    """One background thread that interrupts threads past their deadlines; safe to share."""

    def __init__(self) -> None:
        # While a deadline is armed, the late thread may be interrupted on any bytecode, so the code it
        # runs around its block uses only C-level primitives (a plain lock, a SimpleQueue): an exception
        # landing inside a Python-level `__enter__` (threading.Condition's) would leave a lock held.
        self._lock = threading.Lock()
        self._incoming: queue.SimpleQueue[_Deadline] = queue.SimpleQueue()
        self._order = itertools.count()
        self._thread = threading.Thread(target=self._run, name="covey-call-watchdog", daemon=True)
        self._thread.start()

    def limit(self, seconds: float) -> _Limit:
        """`with watchdog.limit(s):` raises `DeadlineExceeded` in this thread if the block runs past `s`.

        Catch it around the `with` statement: it can surface anywhere from entering to leaving the block,
        and once the statement is done nothing is pending.
        """
        return _Limit(self, _Deadline(time.monotonic() + seconds, next(self._order), threading.get_ident()))

    def _run(self) -> None:
        heap: list[_Deadline] = []
        while True:
            wait = max(0.0, heap[0].at - time.monotonic()) if heap else None
            with contextlib.suppress(queue.Empty):
                heapq.heappush(heap, self._incoming.get(timeout=wait))
            now = time.monotonic()
            while heap and heap[0].at <= now:
                due = heapq.heappop(heap)
                with self._lock:
                    if due.active:
                        due.fired = True
                        _raise_in(due.thread_id, DeadlineExceeded)
            if len(heap) > _PRUNE_ABOVE:
                heap = [deadline for deadline in heap if deadline.active]
                heapq.heapify(heap)


class _Limit:
    __slots__ = ("_deadline", "_watchdog")

    def __init__(self, watchdog: Watchdog, deadline: _Deadline) -> None:
        self._watchdog = watchdog
        self._deadline = deadline

    def __enter__(self) -> None:
        self._watchdog._incoming.put(self._deadline)

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        deadline = self._deadline
        with self._watchdog._lock:
            deadline.active = False
            fired = deadline.fired
        if fired:
            # It fired as the block ended: cancel the exception if the thread has not seen it yet.
            _cancel_in(deadline.thread_id, None)
