"""Runs one unit of work isolated from the provider: its own namespaces, only its directory, limits, a clean env.

What the sandbox guarantees:
- the process starts in a fresh private directory holding only the declared inputs, each fetched from
  the artifact store by sha256 and hash-checked before anything runs (plus files the runner itself
  writes, such as a unit's parameters or a compute-to-data provider's private data set);
- with namespace isolation (the default wherever it works: root, or unprivileged user namespaces) the unit
  runs in its own mount, PID, network, IPC and UTS namespaces (`unshare` from util-linux, set up by
  `_unit_init.py`): its filesystem is a read-only runtime (interpreter, virtualenv, the covey package,
  system libraries) plus its work directory (`/job`) and scratch (`/tmp`), so no data directory, keystore or
  home directory exists for it; its `/proc` is a fresh one showing only its own processes; it has no
  network at all (an empty loopback) unless its job declared network access, in which case it shares the
  provider's network namespace, loopback services included (a provider that sells network access must not
  keep private services on this machine's loopback); it runs as `nobody` (or an unmapped uid in a nested
  user namespace) with `no_new_privs`;
- `resource.setrlimit` caps CPU seconds, address space and file size and disables core dumps; the job's
  declared memory caps its data memory (`RLIMIT_DATA`: heap and private mappings, what a unit really
  allocates), its declared cores pin it to that many CPUs (`sched_setaffinity`) and set the BLAS/OpenMP
  thread counts, and only its declared GPUs are visible; a wall-clock limit kills the whole process group
  (and with it the PID namespace: nothing the unit started survives it);
- a unit that breaks a limit ends with a one-line `error` ("out of memory: ...") instead of hanging;
- the environment is rebuilt from scratch (no keys, tokens or RPC URLs leak in);
- only declared outputs that are regular files (never symlinks) within the size cap come back;
  everything else in the directory is deleted with it.
Where namespaces are not available (no `unshare`, or a kernel without unprivileged user namespaces) the
sandbox falls back to process isolation only: limits and a clean env, but the unit runs as the provider's
user, sees its files and its network. `Sandbox.probe()` finds out once, by trying; callers that must not run
unisolated (compute-to-data) pass `require_isolation=True` and get a `SandboxError` saying why.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from covey.compute._unit_process import (
    SYSTEM_PATH,
    UNIT_GID,
    UNIT_UID,
    clean_env,
    execute,
    execute_isolated,
)
from covey.compute.errors import SandboxError
from covey.compute.limits import Limits, SandboxResult, describe_failure

if TYPE_CHECKING:  # a training unit imports this module; it need not load the S3 client
    from covey.storage import ArtifactStore

__all__ = [
    "FILE_NAME_PATTERN",
    "UNIT_GID",
    "UNIT_UID",
    "Isolation",
    "IsolationMode",
    "Limits",
    "Sandbox",
    "SandboxError",
    "SandboxResult",
    "clean_env",
    "describe_failure",
    "machine_capacity",
    "probe_namespaces",
]

FILE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_NAME = re.compile(FILE_NAME_PATTERN)
IsolationMode = Literal["auto", "namespaces", "process"]


@dataclass(frozen=True)
class Isolation:
    """How units are isolated here: `namespaces` (the full sandbox) or not, and one line saying what or why not."""

    namespaces: bool
    detail: str

    def describe(self) -> str:
        if self.namespaces:
            return f"namespace isolation ({self.detail})"
        return f"WEAK isolation, limits and a clean environment only: {self.detail}"


_probe_lock = threading.Lock()
_probed: Isolation | None = None


@dataclass
class Sandbox:
    """Where units run (`root`, default the system temp dir), the limits they get and how they are isolated.

    `isolation` is "auto" (namespaces where they work, else process isolation, found out once by trying),
    "namespaces" (fail with `SandboxError` if unavailable) or "process" (never use namespaces: what a
    machine without them gets, and how tests simulate one).
    """

    store: ArtifactStore
    limits: Limits = field(default_factory=Limits)
    root: Path | None = None
    isolation: IsolationMode = "auto"

    def __post_init__(self) -> None:
        if self.isolation not in ("auto", "namespaces", "process"):
            raise SandboxError(f"unknown isolation {self.isolation!r}: use auto, namespaces or process")

    def probe(self) -> Isolation:
        """How units will be isolated; the first call tries a real namespace sandbox (once per process)."""
        if self.isolation == "process":
            return Isolation(False, "namespace isolation is turned off for this sandbox")
        found = probe_namespaces()
        if self.isolation == "namespaces" and not found.namespaces:
            raise SandboxError(f"namespace isolation is not available: {found.detail}")
        return found

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
        network: bool = False,
        require_isolation: bool = False,
    ) -> SandboxResult:
        """Run `argv` in a fresh directory and return its declared outputs.

        `inputs` maps file names to artifact digests (fetched and hash-checked), `files` to bytes the
        caller supplies, `local_files` to host files copied in (a provider's private data). `argv[0]`
        "python" means this interpreter. Setting `cancel` kills the run (a provider shutting down).
        `network` keeps the provider's network for the unit (a job that declared and paid for it);
        `require_isolation` refuses to run at all without namespace isolation.
        Raises `SandboxError` before starting anything if a name or an input is bad, or if isolation is
        required but not available.
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
        isolation = self.probe()
        if require_isolation and not isolation.namespaces:
            raise SandboxError(
                f"refused: this unit must run isolated in namespaces, and this provider has none ({isolation.detail})"
            )

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
            command = [program, *argv[1:]]
            if isolation.namespaces:
                return execute_isolated(command, workdir, outputs, limits, cancel, network, hide=[workdir.parent])
            return execute(command, work, scratch, outputs, limits, cancel)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


def probe_namespaces() -> Isolation:
    """Whether this machine can run units in namespaces, found once per process by running a trivial unit."""
    global _probed
    with _probe_lock:
        if _probed is None:
            _probed = _try_namespaces()
        return _probed


def _try_namespaces() -> Isolation:
    if shutil.which("unshare", path=SYSTEM_PATH) is None:
        return Isolation(False, "util-linux `unshare` is not installed on this machine")
    workdir = Path(tempfile.mkdtemp(prefix="covey-probe-"))
    try:
        (workdir / "work").mkdir()
        (workdir / "scratch").mkdir()
        quick = Limits(cpu_seconds=10, wall_clock_s=30, memory_bytes=0)
        result = execute_isolated([sys.executable, "-I", "-S", "-c", "pass"], workdir, (), quick, None, False)
    except (SandboxError, OSError) as exc:
        return Isolation(False, f"namespaces are not available here ({exc})")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if result.returncode != 0:
        why = result.stderr_tail.strip().splitlines()[-1:] or [f"exit code {result.returncode}"]
        return Isolation(False, f"namespaces are not available here ({why[0]})")
    who = "nobody" if os.geteuid() == 0 else "a user-namespace uid"
    return Isolation(True, f"own mount, PID, network and IPC namespaces, read-only runtime, runs as {who}")


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
