"""PID 1 of a sandboxed unit: build its filesystem view, drop privileges, run the unit, report how it ended.

`covey.compute.sandbox` starts this file as
`unshare --mount --pid --net --ipc --uts --fork --kill-child -- python -I -S _unit_init.py` with its JSON
configuration on stdin (not in argv, where the unit could read it in /proc/1/cmdline), so it
runs as root of fresh mount, PID, network, IPC and UTS namespaces (with `--user --map-root-user` in front
when the provider is not root). In order it:
1. mounts a small tmpfs as the new root and bind-mounts into it, read-only, only the runtime the unit needs
   (the interpreter, its virtualenv, the covey package, system libraries); the unit's work directory at
   `/job` and its scratch directory at `/tmp` are the only writable places;
2. adds `/dev` (null, zero, full, random, urandom, a small `/dev/shm`), a minimal `/etc` and a fresh
   `/proc` of the new PID namespace (the unit sees only itself and this process);
3. pivots into the new root and detaches the old one, so nothing else of the host stays reachable;
4. brings the namespace's loopback up (empty: nothing listens there but what the unit starts);
5. forks the unit, which sets its resource limits, drops to an unprivileged user (`nobody`, or a nested user
   namespace for a non-root provider), sets `no_new_privs` and execs the program;
6. waits for the unit and writes `exit N` or `signal N` to the status file the provider reads. When this
   process exits the kernel kills whatever the unit left running in its PID namespace.
A failure to set up writes `setup: why` instead and exits 125: the provider must not mistake it for the
unit's own result. Standard library only, started with `-I -S`: it runs before every unit and must be quick.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import resource
import socket
import struct
import sys

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MNT_DETACH = 2
CLONE_NEWUSER = 0x10000000
PR_SET_NO_NEW_PRIVS = 38
# Flags a bind mount inherits and, inside a user namespace, may not drop on a remount (`statvfs` bits equal
# the `MS_*` bits): read-only, nosuid, nodev, noexec, noatime, nodiratime, relatime.
_KEPT_FLAGS = 1 | 2 | 4 | 8 | 1024 | 2048 | 4096
_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 1

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


class SetupError(Exception):
    """The sandbox could not be built; the message names the step."""


def _check(result: int, what: str) -> None:
    if result != 0:
        error = ctypes.get_errno()
        raise SetupError(f"{what}: {os.strerror(error)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    encode = lambda text: text.encode() if text is not None else None  # noqa: E731
    result = _libc.mount(encode(source), target.encode(), encode(fstype), flags, encode(data))
    _check(result, f"mount {source or fstype} on {target}")


def _inside(root: str, path: str) -> str:
    return os.path.join(root, path.lstrip("/"))


def _bind(root: str, source: str, target: str, writable: bool) -> None:
    """Bind `source` at `target` in the new root; read-only unless `writable`, never suid or devices."""
    destination = _inside(root, target)
    if os.path.isdir(source):
        os.makedirs(destination, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        open(destination, "a").close()
    try:
        _mount(source, destination, None, MS_BIND)
    except SetupError:
        # In a user namespace a mount with locked submounts can only be bound together with them.
        _mount(source, destination, None, MS_BIND | MS_REC)
    kept = os.statvfs(destination).f_flag & _KEPT_FLAGS
    flags = MS_REMOUNT | MS_BIND | MS_NOSUID | kept
    if not source.startswith("/dev/"):
        flags |= MS_NODEV
    if not writable:
        flags |= MS_RDONLY
    _mount(None, destination, None, flags)


def _build_root(config: dict) -> str:
    root = config["root"]
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=4m,mode=0755")
    for link, target in config["symlinks"]:
        os.makedirs(os.path.dirname(_inside(root, link)), exist_ok=True)
        os.symlink(target, _inside(root, link))
    for source, target in config["runtime"]:
        _bind(root, source, target, writable=False)
    for target in config["masks"]:
        # A secret the runtime happens to contain (a data directory inside a virtualenv) is hidden.
        if os.path.isdir(_inside(root, target)):
            _mount("tmpfs", _inside(root, target), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY, "size=4k")
    _bind(root, config["work"], "/job", writable=True)
    _bind(root, config["scratch"], "/tmp", writable=True)
    dev = _inside(root, "dev")
    os.makedirs(dev, exist_ok=True)
    _mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,mode=0755")
    for name in config["devices"]:
        _bind(root, f"/dev/{name}", f"/dev/{name}", writable=True)
    os.makedirs(os.path.join(dev, "shm"))
    _mount("tmpfs", os.path.join(dev, "shm"), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=64m,mode=1777")
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1")):
        os.symlink(target, os.path.join(dev, name))
    os.symlink("/proc/self/fd/2", os.path.join(dev, "stderr"))
    for path, text in config["files"].items():
        os.makedirs(os.path.dirname(_inside(root, path)), exist_ok=True)
        with open(_inside(root, path), "w") as handle:
            handle.write(text)
    proc = _inside(root, "proc")
    os.makedirs(proc, exist_ok=True)
    # This process is PID 1 of a new PID namespace: its /proc lists only the unit's processes and itself.
    _mount("proc", proc, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    return root


def _pivot(root: str) -> None:
    number = _PIVOT_ROOT.get(os.uname().machine)
    if number is None:
        raise SetupError(f"pivot_root: unknown system call number on {os.uname().machine}")
    os.chdir(root)
    # pivot_root(".", ".") stacks the old root under the new one; detaching it leaves nothing of the host.
    _check(_libc.syscall(number, b".", b"."), "pivot_root")
    _check(_libc.umount2(b".", MNT_DETACH), "detach the old root")
    os.chdir("/")
    _mount(None, "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, "size=4m,mode=0755")


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(sock, _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | _IFF_UP))


def _run_unit(config: dict) -> None:
    """In the forked child: limits, an unprivileged user, no new privileges, then the program. Never returns."""
    try:
        cpu, memory, data, fsize, cores = config["limits"]
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        if memory > 0:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        if data > 0:
            resource.setrlimit(resource.RLIMIT_DATA, (data, data))
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        if cores > 0:
            os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:cores])
        user = config["user"]
        if user == "userns":
            _nested_user_namespace(config["uid"], config["gid"])
        else:
            os.setgroups([])
            os.setresgid(config["gid"], config["gid"], config["gid"])
            os.setresuid(config["uid"], config["uid"], config["uid"])
        _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
        os.chdir("/job")
        os.execve(config["argv"][0], config["argv"], dict(os.environ))
    except OSError as exc:
        print(f"covey sandbox: cannot start {config['argv'][0]}: {exc}", file=sys.stderr, flush=True)
        os._exit(127)
    except SetupError as exc:
        print(f"covey sandbox: {exc}", file=sys.stderr, flush=True)
        os._exit(127)


def _nested_user_namespace(uid: int, gid: int) -> None:
    """A non-root provider has only its own uid: map it to `uid` in a child user namespace, without capabilities."""
    _check(_libc.unshare(CLONE_NEWUSER), "unshare a user namespace")
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} 0 1"), ("gid_map", f"{gid} 0 1")):
        with open(f"/proc/self/{name}", "w") as handle:
            handle.write(text)


def main() -> int:
    config = json.loads(sys.stdin.buffer.read())
    os.umask(0o022)  # the new root's folders must be traversable by the unprivileged unit
    status = os.open(config["status"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # before the host is gone
    try:
        root = _build_root(config)
        _pivot(root)
        os.dup2(os.open("/dev/null", os.O_RDONLY), 0)  # the unit reads nothing from the provider
        if not config["network"]:
            _loopback_up()
        socket.sethostname("covey-unit")
    except (SetupError, OSError) as exc:
        os.write(status, f"setup: {exc}".encode())
        return 125
    child = os.fork()
    if child == 0:
        _run_unit(config)
    while True:
        # Orphans of the unit are re-parented here: reap them too, until the unit itself ends.
        pid, wait_status = os.wait()
        if pid == child:
            break
    if os.WIFSIGNALED(wait_status):
        os.write(status, f"signal {os.WTERMSIG(wait_status)}".encode())
    else:
        os.write(status, f"exit {os.waitstatus_to_exitcode(wait_status)}".encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
