"""What one unit may use (`Limits`) and what came back from running it (`SandboxResult`).

A failed run is worded from the limits it broke and its exit (`describe_failure`), never from timings, so a
verifier's re-run of the same unit says the same thing.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, replace

from covey.compute.errors import SandboxError

# What a unit that ran out of memory prints, from Python, numpy, torch and the dynamic loader.
_OUT_OF_MEMORY = (
    "MemoryError",
    "bad_alloc",
    "can't allocate memory",
    "Cannot allocate memory",
    "failed to map segment",
)


@dataclass(frozen=True)
class Limits:
    """Resource caps for one unit.

    `memory_bytes` caps the address space and `data_bytes` the data memory (0 = no cap); `cpu_cores`
    pins the unit to that many CPUs and sets its BLAS/OpenMP threads (0 = no pinning, one thread);
    `gpus` is how many GPUs the unit may see.
    """

    cpu_seconds: int = 300
    memory_bytes: int = 4 << 30
    file_size_bytes: int = 256 << 20
    wall_clock_s: float = 600.0
    max_output_bytes: int = 256 << 20
    data_bytes: int = 0
    cpu_cores: int = 0
    gpus: int = 0

    def __post_init__(self) -> None:
        if self.cpu_seconds < 1 or self.wall_clock_s <= 0 or self.file_size_bytes < 1 or self.max_output_bytes < 1:
            raise SandboxError(f"sandbox limits must be positive, got {self}")
        if min(self.memory_bytes, self.data_bytes, self.cpu_cores, self.gpus) < 0:
            raise SandboxError(f"sandbox limits may not be negative, got {self}")

    def for_needs(self, cpu_cores: int, memory_mb: int, gpus: int) -> Limits:
        """These limits narrowed to what a job declared on chain: its cores, its memory, its GPUs."""
        return replace(self, data_bytes=memory_mb << 20, cpu_cores=cpu_cores, gpus=gpus)


@dataclass(frozen=True)
class SandboxResult:
    """What came back from one run: exit code, the declared outputs found, and the tails of stdout/stderr."""

    returncode: int
    outputs: dict[str, bytes]
    missing: list[str]
    rejected: dict[str, str]
    stdout_tail: str
    stderr_tail: str
    wall_s: float
    timed_out: bool
    cancelled: bool = False
    error: str = ""  # why the unit failed, in one line ("" when it exited 0 in time)

    @property
    def ok(self) -> bool:
        """Exited 0 in time with every declared output present."""
        return self.returncode == 0 and not self.timed_out and not self.cancelled and not self.missing


def describe_failure(result: SandboxResult, limits: Limits) -> str:
    """Why a run failed, in one line that names the limit it broke ("" if it exited 0 in time).

    Worded from the limits and the exit, never from timings, so a verifier's re-run says the same.
    """
    if result.cancelled:
        return "cancelled"
    if result.timed_out:
        return f"timed out: the unit ran past its {limits.wall_clock_s:g} s wall-clock limit"
    if result.returncode == 0:
        return ""
    if any(marker in result.stderr_tail for marker in _OUT_OF_MEMORY):
        cap = limits.data_bytes or limits.memory_bytes
        return f"out of memory: the unit exceeded its {cap >> 20} MiB memory limit"
    if result.returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        return f"killed: the unit used up its {limits.cpu_seconds} s of CPU time"
    if result.returncode < 0:
        return f"killed by signal {signal.Signals(-result.returncode).name}"
    return f"exit code {result.returncode}"
