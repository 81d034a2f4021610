"""Runs one unit of work in a subprocess with its own directory, only its declared inputs, limits and a clean env.

What the sandbox guarantees:
- the process starts in a fresh private directory holding only the declared inputs, each fetched from
  the artifact store by sha256 and hash-checked before anything runs (plus files the runner itself
  writes, such as a unit's parameters or a compute-to-data provider's private data set);
- `resource.setrlimit` caps CPU seconds, address space and file size and disables core dumps; the job's
  declared memory caps its data memory (`RLIMIT_DATA`: heap and private mappings, what a unit really
  allocates), its declared cores pin it to that many CPUs (`sched_setaffinity`) and set the BLAS/OpenMP
  thread counts, and only its declared GPUs are visible; a wall-clock limit kills the whole process group;
- a unit that breaks a limit ends with a one-line `error` ("out of memory: ...") instead of hanging;
- the environment is rebuilt from scratch (no keys, tokens or RPC URLs leak in);
- only declared outputs that are regular files (never symlinks) within the size cap come back;
  everything else in the directory is deleted with it.
What it does not do: it is not a container. The process runs as the same user, can read files that
user can read and can reach the network. Providers that run untrusted command jobs should add OS-level
isolation (a container, a VM, or a dedicated user) around `covey provider run`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from covey.errors import CoveyError

if TYPE_CHECKING:  # a training unit imports this module; it need not load the S3 client
    from covey.storage import ArtifactStore

FILE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_NAME = re.compile(FILE_NAME_PATTERN)
_TAIL_BYTES = 4_096
_POLL_S = 0.05

# Runs in the child before the real program: set the limits, then replace itself with the program.
# Doing this in a tiny exec'd wrapper instead of `preexec_fn` keeps spawning safe in threaded parents.
_LIMITER = """
import os, resource, sys
cpu, memory, data, fsize, cores = (int(v) for v in sys.argv[1:6])
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
if memory > 0:
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
if data > 0:
    resource.setrlimit(resource.RLIMIT_DATA, (data, data))
resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
if cores > 0:
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:cores])
os.execvpe(sys.argv[6], sys.argv[6:], os.environ)
"""
# What a unit that ran out of memory prints, from Python, numpy, torch and the dynamic loader.
_OUT_OF_MEMORY = (
    "MemoryError",
    "bad_alloc",
    "can't allocate memory",
    "Cannot allocate memory",
    "failed to map segment",
)


class SandboxError(CoveyError):
    """A unit could not be set up: a bad name, a missing or corrupt input, an unknown program."""


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


@dataclass
class Sandbox:
    """Where units run (`root`, default the system temp dir) and the limits they get."""

    store: ArtifactStore
    limits: Limits = field(default_factory=Limits)
    root: Path | None = None

    def run(
        self,
        argv: Sequence[str],
        *,
        inputs: Mapping[str, str] | None = None,
        files: Mapping[str, bytes] | None = None,
        local_files: Mapping[str, Path] | None = None,
        outputs: Sequence[str] = (),
        limits: Limits | None = None,
        cancel: threading.Event | None = None,
    ) -> SandboxResult:
        """Run `argv` in a fresh directory and return its declared outputs.

        `inputs` maps file names to artifact digests (fetched and hash-checked), `files` to bytes the
        caller supplies, `local_files` to host files copied in (a provider's private data). `argv[0]`
        "python" means this interpreter. Setting `cancel` kills the run (a provider shutting down).
        Raises `SandboxError` before starting anything if a name or an input is bad.
        """
        limits = limits or self.limits
        inputs, files, local_files = dict(inputs or {}), dict(files or {}), dict(local_files or {})
        staged = [*inputs, *files, *local_files]
        _check_names([*staged, *outputs])
        if len(set(staged)) != len(staged):
            raise SandboxError(f"input names repeat: {sorted(staged)}")
        if set(staged) & set(outputs):
            raise SandboxError(f"outputs may not reuse input names: {sorted(set(staged) & set(outputs))}")
        if not argv:
            raise SandboxError("a unit needs a program to run (empty argv)")
        program = _resolve_program(argv[0])

        if self.root is not None:
            self.root.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix="covey-unit-", dir=self.root))
        try:
            work, scratch = workdir / "work", workdir / "scratch"
            work.mkdir(mode=0o700)
            scratch.mkdir(mode=0o700)
            for name, digest in inputs.items():
                # `get_to_file` checks the sha256: a corrupt or swapped artifact never reaches the program.
                self.store.get_to_file(digest, work / name)
            for name, data in files.items():
                (work / name).write_bytes(data)
            for name, source in local_files.items():
                shutil.copyfile(source, work / name)
            return _execute([program, *argv[1:]], work, scratch, outputs, limits, cancel)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


def clean_env(home: Path, scratch: Path, *, threads: int = 1, gpus: int = 0) -> dict[str, str]:
    """The whole environment a unit sees: no inherited variables, `threads` BLAS/OpenMP threads, the first
    `gpus` GPUs, a private HOME and TMPDIR."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "TMPDIR": str(scratch),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1",
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": str(threads),
        "NUMEXPR_NUM_THREADS": str(threads),
        "CUDA_VISIBLE_DEVICES": ",".join(str(index) for index in range(gpus)),
    }


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


def machine_capacity(*, count_gpus: bool = True) -> tuple[int, int, int]:
    """(CPU cores this process may use, physical memory in MiB, GPUs) of this machine.

    GPUs are counted through torch (slow to import, hence `count_gpus`); without CUDA there are none.
    """
    cores = len(os.sched_getaffinity(0))
    memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") >> 20
    if not count_gpus:
        return cores, memory_mb, 0
    try:
        import torch
    except ImportError:
        return cores, memory_mb, 0
    return cores, memory_mb, int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


def _check_names(names: Sequence[str]) -> None:
    for name in names:
        if not _NAME.match(name) or name in (".", ".."):
            raise SandboxError(
                f"bad file name {name!r}: use letters, digits, '.', '_' or '-', not starting with '.' or '-'"
            )


def _resolve_program(name: str) -> str:
    if name in ("python", "python3"):
        return sys.executable
    if os.sep in name:
        raise SandboxError(f"programs are named, not given by path: {name!r}")
    found = shutil.which(name, path=clean_env(Path("/"), Path("/"))["PATH"])
    if found is None:
        raise SandboxError(f"program {name!r} is not installed on this provider")
    return found


def _execute(
    argv: list[str],
    work: Path,
    scratch: Path,
    outputs: Sequence[str],
    limits: Limits,
    cancel: threading.Event | None,
) -> SandboxResult:
    command = [
        sys.executable,
        "-I",
        "-S",
        "-c",
        _LIMITER,
        str(limits.cpu_seconds),
        str(limits.memory_bytes),
        str(limits.data_bytes),
        str(limits.file_size_bytes),
        str(limits.cpu_cores),
        *argv,
    ]
    stdout_path, stderr_path = scratch.parent / "stdout", scratch.parent / "stderr"
    started = time.monotonic()
    timed_out = cancelled = False
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            command,
            cwd=work,
            env=clean_env(work, scratch, threads=max(1, limits.cpu_cores), gpus=limits.gpus),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,  # its own process group, so a timeout kills its children too
        )
        try:
            while process.poll() is None:
                if time.monotonic() - started > limits.wall_clock_s:
                    timed_out = True
                    break
                if cancel is not None and cancel.is_set():
                    cancelled = True
                    break
                time.sleep(_POLL_S)
        finally:
            if process.poll() is None:
                _kill_group(process)
    wall_s = time.monotonic() - started
    found, missing, rejected = _collect(work, outputs, limits.max_output_bytes)
    result = SandboxResult(
        returncode=int(process.returncode),
        outputs=found,
        missing=missing,
        rejected=rejected,
        stdout_tail=_tail(stdout_path),
        stderr_tail=_tail(stderr_path),
        wall_s=wall_s,
        timed_out=timed_out,
        cancelled=cancelled,
    )
    return replace(result, error=describe_failure(result, limits))


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):  # it may have exited since the last poll
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _collect(work: Path, outputs: Sequence[str], max_bytes: int) -> tuple[dict[str, bytes], list[str], dict[str, str]]:
    """The declared outputs that are regular files within the size cap; the rest as missing or rejected."""
    found: dict[str, bytes] = {}
    missing: list[str] = []
    rejected: dict[str, str] = {}
    for name in outputs:
        path = work / name
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            missing.append(name)
            continue
        if not stat.S_ISREG(info.st_mode):
            # A symlink could point anywhere on the provider's disk; only plain files the unit wrote leave.
            rejected[name] = "not a regular file"
        elif info.st_size > max_bytes:
            rejected[name] = f"{info.st_size} bytes, over the {max_bytes}-byte cap"
        else:
            found[name] = path.read_bytes()
    return found, missing, rejected


def _tail(path: Path) -> str:
    with path.open("rb") as handle:
        handle.seek(max(0, path.stat().st_size - _TAIL_BYTES))
        return handle.read().decode("utf-8", "replace")
