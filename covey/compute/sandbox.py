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

import contextlib
import json
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
from typing import TYPE_CHECKING, Literal

from covey.compute.errors import SandboxError

if TYPE_CHECKING:  # a training unit imports this module; it need not load the S3 client
    from covey.storage import ArtifactStore

FILE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_NAME = re.compile(FILE_NAME_PATTERN)
_TAIL_BYTES = 4_096
_POLL_S = 0.05
UNIT_UID = 65534  # `nobody`: what a unit runs as when the provider is root
UNIT_GID = 65534
IsolationMode = Literal["auto", "namespaces", "process"]
_INIT = Path(__file__).with_name("_unit_init.py")
_COVEY_PACKAGE = Path(__file__).resolve().parents[1]
_RUNTIME_COVEY = "/opt/covey-runtime"  # where the unit imports covey from: the provider's own code, read-only
_SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Inside the sandbox these are the unit's own; a runtime path under one of them cannot be bound.
_RESERVED = ("/job", "/tmp", "/dev", "/proc", "/etc", _RUNTIME_COVEY)
_SETUP_FAILED = 125

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
                return _execute_isolated(command, workdir, outputs, limits, cancel, network, hide=[workdir.parent])
            return _execute(command, work, scratch, outputs, limits, cancel)
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
    if shutil.which("unshare", path=_SYSTEM_PATH) is None:
        return Isolation(False, "util-linux `unshare` is not installed on this machine")
    workdir = Path(tempfile.mkdtemp(prefix="covey-probe-"))
    try:
        (workdir / "work").mkdir()
        (workdir / "scratch").mkdir()
        quick = Limits(cpu_seconds=10, wall_clock_s=30, memory_bytes=0)
        result = _execute_isolated([sys.executable, "-I", "-S", "-c", "pass"], workdir, (), quick, None, False)
    except (SandboxError, OSError) as exc:
        return Isolation(False, f"namespaces are not available here ({exc})")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if result.returncode != 0:
        why = result.stderr_tail.strip().splitlines()[-1:] or [f"exit code {result.returncode}"]
        return Isolation(False, f"namespaces are not available here ({why[0]})")
    who = "nobody" if os.geteuid() == 0 else "a user-namespace uid"
    return Isolation(True, f"own mount, PID, network and IPC namespaces, read-only runtime, runs as {who}")


def clean_env(
    home: Path, scratch: Path, *, threads: int = 1, gpus: int = 0, pythonpath: str | None = None
) -> dict[str, str]:
    """The whole environment a unit sees: no inherited variables, `threads` BLAS/OpenMP threads, the first
    `gpus` GPUs, a private HOME and TMPDIR, and the provider's own covey package on PYTHONPATH."""
    return {
        "PYTHONPATH": pythonpath if pythonpath is not None else str(_COVEY_PACKAGE.parent),
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
    """Process isolation only: limits and a clean env, as the provider's user, in the provider's namespaces."""
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
    env = clean_env(work, scratch, threads=max(1, limits.cpu_cores), gpus=limits.gpus)
    returncode, wall_s, timed_out, cancelled = _supervise(command, env, work, scratch.parent, limits, cancel)
    return _result(work, scratch.parent, outputs, limits, returncode, wall_s, timed_out, cancelled)


def _execute_isolated(
    argv: list[str],
    workdir: Path,
    outputs: Sequence[str],
    limits: Limits,
    cancel: threading.Event | None,
    network: bool,
    hide: Sequence[Path] = (),
) -> SandboxResult:
    """Namespace isolation: `unshare` starts `_unit_init.py` as PID 1 of fresh namespaces, which runs `argv`.

    `hide` are host folders (other units' directories) to mask should the runtime happen to contain them.
    """
    work, scratch, new_root, status = workdir / "work", workdir / "scratch", workdir / "root", workdir / "status"
    new_root.mkdir()
    as_root = os.geteuid() == 0
    if as_root:
        # The unit runs as nobody: it owns its work and scratch directories (and its staged inputs, as it
        # would under the provider's user), and nothing else on the machine.
        for path in (work, scratch, *work.iterdir()):
            os.chown(path, UNIT_UID, UNIT_GID, follow_symlinks=False)
    symlinks, runtime, masks = _runtime_view(hide)
    devices = ["null", "zero", "full", "random", "urandom"]
    if limits.gpus > 0:
        devices += sorted(name for name in os.listdir("/dev") if name.startswith("nvidia"))
    config = {
        "root": str(new_root),
        "status": str(status),
        "work": str(work),
        "scratch": str(scratch),
        "symlinks": symlinks,
        "runtime": runtime + _network_files(network),
        "masks": masks,
        "devices": devices,
        "files": _etc_files(),
        "network": network,
        "user": "setuid" if as_root else "userns",
        "uid": UNIT_UID,
        "gid": UNIT_GID,
        "limits": [
            limits.cpu_seconds,
            limits.memory_bytes,
            limits.data_bytes,
            limits.file_size_bytes,
            limits.cpu_cores,
        ],
        "argv": argv,
    }
    unshare = shutil.which("unshare", path=_SYSTEM_PATH)
    if unshare is None:
        raise SandboxError("util-linux `unshare` is not installed on this machine")
    command = [unshare, "--mount", "--pid", "--ipc", "--uts", "--fork", "--kill-child"]
    if not as_root:
        command[1:1] = ["--user", "--map-root-user"]
    if not network:
        command.append("--net")
    command += ["--", sys.executable, "-I", "-S", str(_INIT)]
    env = clean_env(
        Path("/job"), Path("/tmp"), threads=max(1, limits.cpu_cores), gpus=limits.gpus, pythonpath=_RUNTIME_COVEY
    )
    code, wall_s, timed_out, cancelled = _supervise(
        command, env, workdir, workdir, limits, cancel, stdin=json.dumps(config).encode()
    )
    ended = status.read_text() if status.exists() else ""
    if ended.startswith("setup:"):
        raise SandboxError(f"the unit's sandbox could not be set up: {ended.removeprefix('setup:').strip()}")
    if ended.startswith("exit "):
        code = int(ended.split()[1])
    elif ended.startswith("signal "):
        code = -int(ended.split()[1])
    elif not (timed_out or cancelled):
        why = _tail(workdir / "stderr").strip().splitlines()[-1:] or [f"exit code {code}"]
        raise SandboxError(f"the unit's sandbox did not start: {why[0]}")
    return _result(work, workdir, outputs, limits, code, wall_s, timed_out, cancelled)


def _supervise(
    command: list[str],
    env: dict[str, str],
    cwd: Path,
    logs: Path,
    limits: Limits,
    cancel: threading.Event | None,
    stdin: bytes | None = None,
) -> tuple[int, float, bool, bool]:
    """Run `command` to its end, its wall-clock limit or `cancel`; return (exit code, seconds, timed out, cancelled).

    `stdin` is written to the process and closed (small: it must fit the pipe), else stdin is empty.
    """
    started = time.monotonic()
    timed_out = cancelled = False
    with (logs / "stdout").open("wb") as stdout, (logs / "stderr").open("wb") as stderr:
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,  # its own process group, so a timeout kills its children too
        )
        if process.stdin is not None:
            with contextlib.suppress(BrokenPipeError), process.stdin:
                process.stdin.write(stdin or b"")
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
    return int(process.returncode), time.monotonic() - started, timed_out, cancelled


def _result(
    work: Path,
    logs: Path,
    outputs: Sequence[str],
    limits: Limits,
    returncode: int,
    wall_s: float,
    timed_out: bool,
    cancelled: bool,
) -> SandboxResult:
    found, missing, rejected = _collect(work, outputs, limits.max_output_bytes)
    result = SandboxResult(
        returncode=returncode,
        outputs=found,
        missing=missing,
        rejected=rejected,
        stdout_tail=_tail(logs / "stdout"),
        stderr_tail=_tail(logs / "stderr"),
        wall_s=wall_s,
        timed_out=timed_out,
        cancelled=cancelled,
    )
    return replace(result, error=describe_failure(result, limits))


def _runtime_view(hide: Sequence[Path] = ()) -> tuple[list[list[str]], list[list[str]], list[str]]:
    """What a unit's filesystem holds besides its own directories: (symlinks, read-only binds, masked paths).

    The system (`/usr` and the top-level library links), this interpreter and its virtualenv, and the
    covey package at `/opt/covey-runtime/covey`. A covey data directory (or a folder in `hide`) that happens
    to sit inside one of them is masked by an empty mount.
    """
    symlinks: list[list[str]] = []
    binds: list[list[str]] = [["/usr", "/usr"]]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            symlinks.append([top, os.readlink(top)])
        elif os.path.isdir(top):
            binds.append([top, top])
    interpreter = Path(os.path.realpath(sys.executable)).parent.parent
    for prefix in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, str(interpreter)):
        path = Path(prefix).resolve()
        if any(path.is_relative_to(bound) for bound, _ in binds):
            continue
        if any(path.is_relative_to(reserved) for reserved in _RESERVED) or path == Path("/"):
            raise SandboxError(f"cannot isolate an interpreter installed under {path}")
        binds.append([str(path), str(path)])
    binds.append([str(_COVEY_PACKAGE), f"{_RUNTIME_COVEY}/covey"])
    for name in ("ld.so.cache", "localtime", "alternatives", "ssl", "ca-certificates"):
        if os.path.exists(f"/etc/{name}"):
            binds.append([os.path.realpath(f"/etc/{name}"), f"/etc/{name}"])
    homes = [Path(os.environ["COVEY_HOME"])] if os.environ.get("COVEY_HOME") else []
    homes += [Path.home() / ".covey", *hide]
    masks = [
        str(home.resolve())
        for home in homes
        if any(home.resolve().is_relative_to(source) for source, target in binds if source == target)
    ]
    return symlinks, binds, masks


def _network_files(network: bool) -> list[list[str]]:
    """Name resolution for a unit that has the network (its job declared it)."""
    if not network:
        return []
    return [
        [os.path.realpath(f"/etc/{name}"), f"/etc/{name}"]
        for name in ("resolv.conf",)
        if os.path.exists(f"/etc/{name}")
    ]


def _etc_files() -> dict[str, str]:
    """A minimal /etc: who `nobody` is (torch and getpass ask), localhost, and where names come from."""
    return {
        "/etc/passwd": (
            f"root:x:0:0:root:/root:/usr/sbin/nologin\nnobody:x:{UNIT_UID}:{UNIT_GID}:nobody:/job:/usr/sbin/nologin\n"
        ),
        "/etc/group": f"root:x:0:\nnogroup:x:{UNIT_GID}:\n",
        "/etc/hosts": "127.0.0.1 localhost\n::1 localhost\n",
        "/etc/nsswitch.conf": "passwd: files\ngroup: files\nhosts: files dns\n",
    }


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
        try:
            # O_NOFOLLOW: a symlink could point anywhere on the provider's disk; only plain files the unit
            # wrote leave. Checking the opened file (not the name) leaves nothing to swap in between.
            handle = os.open(work / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            missing.append(name)
            continue
        except OSError:  # ELOOP: a symlink
            rejected[name] = "not a regular file"
            continue
        with os.fdopen(handle, "rb") as stream:
            info = os.fstat(stream.fileno())
            if not stat.S_ISREG(info.st_mode):
                rejected[name] = "not a regular file"
            elif info.st_size > max_bytes:
                rejected[name] = f"{info.st_size} bytes, over the {max_bytes}-byte cap"
            else:
                found[name] = stream.read(max_bytes + 1)
                if len(found[name]) > max_bytes:  # it grew after the check
                    rejected[name] = f"over the {max_bytes}-byte cap"
                    del found[name]
    return found, missing, rejected


def _tail(path: Path) -> str:
    with path.open("rb") as handle:
        handle.seek(max(0, path.stat().st_size - _TAIL_BYTES))
        return handle.read().decode("utf-8", "replace")
