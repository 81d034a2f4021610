"""How the sandbox starts, watches and collects one unit's process, with namespaces (`execute_isolated`) or without.

Without namespaces (`execute`) a tiny exec'd wrapper sets the rlimits and CPU affinity, then becomes the
program; with them, `unshare` starts `_unit_init.py` as PID 1 of fresh namespaces over a read-only runtime
view (`runtime_view`), and it runs the program. Either way `supervise` enforces the wall clock and
cancellation on the whole process group, and `collect_outputs` takes back only declared regular files.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from covey.compute.errors import SandboxError
from covey.compute.limits import Limits, SandboxResult, describe_failure

_TAIL_BYTES = 4_096
_POLL_S = 0.05
UNIT_UID = 65534  # `nobody`: what a unit runs as when the provider is root
UNIT_GID = 65534
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_INIT = Path(__file__).with_name("_unit_init.py")
_COVEY_PACKAGE = Path(__file__).resolve().parents[1]
_RUNTIME_COVEY = "/opt/covey-runtime"  # where the unit imports covey from: the provider's own code, read-only
# Inside the sandbox these are the unit's own; a runtime path under one of them cannot be bound.
_RESERVED = ("/job", "/tmp", "/dev", "/proc", "/etc", _RUNTIME_COVEY)

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


def execute(
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
    returncode, wall_s, timed_out, cancelled = supervise(command, env, work, scratch.parent, limits, cancel)
    return _result(work, scratch.parent, outputs, limits, returncode, wall_s, timed_out, cancelled)


def execute_isolated(
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
    symlinks, runtime, masks = runtime_view(hide)
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
    unshare = shutil.which("unshare", path=SYSTEM_PATH)
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
    code, wall_s, timed_out, cancelled = supervise(
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


def supervise(
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
    found, missing, rejected = collect_outputs(work, outputs, limits.max_output_bytes)
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


def runtime_view(hide: Sequence[Path] = ()) -> tuple[list[list[str]], list[list[str]], list[str]]:
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


def collect_outputs(
    work: Path, outputs: Sequence[str], max_bytes: int
) -> tuple[dict[str, bytes], list[str], dict[str, str]]:
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
