"""The unit sandbox: only declared inputs go in (hash-checked), only declared outputs come out, limits bite."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import covey
from covey.chain.wallets import Keystore
from covey.compute.sandbox import UNIT_GID, UNIT_UID, Limits, Sandbox, SandboxError, probe_namespaces
from covey.errors import IntegrityError

NAMESPACES = probe_namespaces()
QUICK = Limits(cpu_seconds=10, memory_bytes=1 << 30, file_size_bytes=1 << 20, wall_clock_s=20, max_output_bytes=1 << 20)


def python(code: str) -> list[str]:
    return ["python", "-c", code]


@pytest.fixture
def sandbox(store, sandbox_root: Path) -> Sandbox:
    return Sandbox(store, QUICK, root=sandbox_root)


def test_a_unit_sees_only_its_declared_inputs_and_returns_only_declared_outputs(sandbox, store, sandbox_root) -> None:
    data = store.put(b"1,2,3\n")
    code = (
        "import os, json\n"
        "json.dump(sorted(os.listdir('.')), open('listing.json', 'w'))\n"
        "open('secret.txt', 'w').write('kept on the provider')\n"
        "open('sum.txt', 'w').write(str(sum(int(x) for x in open('data.csv').read().split(','))))\n"
    )
    result = sandbox.run(
        python(code), inputs={"data.csv": data.digest}, files={"unit.json": b"{}"}, outputs=["sum.txt", "listing.json"]
    )

    assert result.ok, result.stderr_tail
    assert result.outputs["sum.txt"] == b"6"
    assert json.loads(result.outputs["listing.json"]) == ["data.csv", "unit.json"]
    assert "secret.txt" not in result.outputs
    assert list(sandbox_root.iterdir()) == []  # the working directory, and the undeclared file, are gone


def test_a_missing_declared_output_is_reported(sandbox) -> None:
    result = sandbox.run(python("open('a.txt','w').write('a')"), outputs=["a.txt", "b.txt"])
    assert result.outputs == {"a.txt": b"a"}
    assert result.missing == ["b.txt"]
    assert not result.ok


def test_inputs_are_hash_checked_before_anything_runs(store, sandbox_root, tmp_path: Path) -> None:
    # Process isolation, so the unit could write the marker on this machine had it run.
    sandbox = Sandbox(store, QUICK, root=sandbox_root, isolation="process")
    ref = store.put(b"the real data")
    store.path_for(ref.digest).write_bytes(b"tampered data")  # someone swapped the bytes on disk
    marker = tmp_path / "ran"
    with pytest.raises(IntegrityError):
        sandbox.run(python(f"open({str(marker)!r}, 'w').write('x')"), inputs={"data.bin": ref.digest})
    assert not marker.exists()


@pytest.mark.parametrize("isolation", ["namespaces", "process"])
def test_the_wall_clock_limit_kills_the_unit_and_its_children(store, sandbox_root, isolation) -> None:
    if isolation == "namespaces" and not NAMESPACES.namespaces:
        pytest.skip(NAMESPACES.detail)
    sandbox = Sandbox(store, QUICK, root=sandbox_root, isolation=isolation)
    marker = f"time.sleep(60)  # grandchild {uuid.uuid4().hex}"
    code = (
        f"import subprocess, sys, time\nchild = subprocess.Popen([sys.executable, '-c', {marker!r}])\ntime.sleep(60)\n"
    )
    started = time.monotonic()
    result = sandbox.run(python(code), limits=Limits(wall_clock_s=1.5, cpu_seconds=10))
    assert result.timed_out and not result.ok
    assert time.monotonic() - started < 10
    # The grandchild's pid inside a PID namespace means nothing here: find it by its command line instead.
    # SIGKILL to a group is delivered asynchronously: on a busy machine it may take a moment to die.
    deadline = time.monotonic() + 5
    while processes_running(marker.encode()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not processes_running(marker.encode())


def processes_running(marker: bytes) -> list[int]:
    """Live (not zombie) processes on this machine whose command line holds `marker`."""
    return [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and still_running(int(entry.name), marker)
    ]


def still_running(pid: int, marker: bytes) -> bool:
    """Whether `pid` is a live (not zombie) process whose command line holds `marker` (a busy machine may
    already have given the pid to another process)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return marker in cmdline and state != "Z"


def test_the_cpu_limit_kills_a_busy_loop(sandbox) -> None:
    result = sandbox.run(python("while True: pass"), limits=Limits(cpu_seconds=1, wall_clock_s=20))
    assert result.returncode < 0  # SIGXCPU, then SIGKILL at the hard limit
    assert not result.timed_out


def test_the_memory_and_file_size_limits_hold(sandbox) -> None:
    hog = sandbox.run(python("x = bytearray(800 << 20)"), limits=Limits(memory_bytes=256 << 20, wall_clock_s=20))
    assert hog.returncode != 0 and "MemoryError" in hog.stderr_tail

    big = sandbox.run(
        python("open('big.bin', 'wb').write(b'x' * (2 << 20))"),
        outputs=["big.bin"],
        limits=Limits(file_size_bytes=1 << 20, wall_clock_s=20),
    )
    assert big.returncode != 0
    assert len(big.outputs.get("big.bin", b"")) <= 1 << 20


@pytest.mark.parametrize("isolation", ["namespaces", "process"])
def test_the_environment_is_clean(store, sandbox_root, monkeypatch, isolation) -> None:
    if isolation == "namespaces" and not NAMESPACES.namespaces:
        pytest.skip(NAMESPACES.detail)
    sandbox = Sandbox(store, QUICK, root=sandbox_root, isolation=isolation)
    monkeypatch.setenv("COVEY_PASSWORD", "hunter2")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    result = sandbox.run(
        python("import os, json; json.dump(dict(os.environ), open('env.json', 'w'))"), outputs=["env.json"]
    )
    env = json.loads(result.outputs["env.json"])
    assert "COVEY_PASSWORD" not in env and "AWS_SECRET_ACCESS_KEY" not in env
    assert env["OMP_NUM_THREADS"] == "1"


def test_a_symlink_output_never_leaves(sandbox, tmp_path: Path) -> None:
    host_file = tmp_path / "provider-secret.txt"
    host_file.write_text("the provider's own file")
    result = sandbox.run(python(f"import os; os.symlink({str(host_file)!r}, 'out.txt')"), outputs=["out.txt"])
    assert result.outputs == {}
    assert result.rejected == {"out.txt": "not a regular file"}


def test_an_oversized_output_is_rejected(sandbox) -> None:
    result = sandbox.run(
        python("open('o.bin','wb').write(b'x' * 2000)"),
        outputs=["o.bin"],
        limits=Limits(max_output_bytes=1000, wall_clock_s=20),
    )
    assert result.outputs == {} and "over the 1000-byte cap" in result.rejected["o.bin"]


def test_a_cancelled_unit_is_killed(sandbox) -> None:
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    result = sandbox.run(python("import time; time.sleep(30)"), cancel=cancel)
    assert result.cancelled and result.wall_s < 10


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"outputs": ["../escape.txt"]}, "bad file name"),
        ({"files": {".hidden": b""}}, "bad file name"),
        ({"files": {"a": b""}, "outputs": ["a"]}, "outputs may not reuse input names"),
    ],
)
def test_bad_names_are_refused(sandbox, kwargs: dict, message: str) -> None:
    with pytest.raises(SandboxError, match=message):
        sandbox.run(python("pass"), **kwargs)


def test_programs_must_be_installed_and_named(sandbox) -> None:
    with pytest.raises(SandboxError, match="not installed"):
        sandbox.run(["no-such-program-here"])
    with pytest.raises(SandboxError, match="named, not given by path"):
        sandbox.run(["/bin/sh", "-c", "true"])


# -- isolation: what a hostile unit tried (issue 15) ---------------------------------------------------------

needs_namespaces = pytest.mark.skipif(not NAMESPACES.namespaces, reason=f"no namespaces here: {NAMESPACES.detail}")
SECRET = "hunter2-the-provider-password"

# Looks for the secret in every process environment it can reach: its parent's, PID 1's, every pid in /proc,
# and the provider's own pid (argv[1]); lists the command lines it can see.
SNOOP = """
import json, os, sys
secret, provider = sys.argv[1].encode(), sys.argv[2]
visible = sorted(entry for entry in os.listdir("/proc") if entry.isdigit())
found, cmdlines = [], []
for pid in {*visible, str(os.getppid()), "1", provider}:
    try:
        if secret in open(f"/proc/{pid}/environ", "rb").read():
            found.append(pid)
    except OSError:
        pass
    try:
        cmdlines.append(open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\\0", b" ").decode())
    except OSError:
        pass
if secret.decode() in json.dumps(dict(os.environ)):
    found.append("own environment")
json.dump({"found": found, "cmdlines": cmdlines, "uid": os.getuid()}, open("out.json", "w"))
"""


# A provider process started, as `covey provider run` is, with COVEY_PASSWORD in its environment: it runs SNOOP
# in its sandbox (argv[1] isolation, argv[2] folder) and prints what the unit found, and its own command line.
PROVIDER = """
import json, os, sys
from pathlib import Path
from covey.compute.sandbox import Sandbox
from covey.storage import LocalStore
folder = Path(sys.argv[2])
sandbox = Sandbox(LocalStore(folder / "store"), root=folder / "units", isolation=sys.argv[1])
result = sandbox.run(["python", "-c", sys.argv[3], sys.argv[4], str(os.getpid())], outputs=["out.json"])
assert result.ok, result.stderr_tail
seen = json.loads(result.outputs["out.json"])
seen["provider_cmdline"] = open("/proc/self/cmdline", "rb").read().replace(b"\\0", b" ").decode()
print(json.dumps(seen))
"""


def snoop(isolation: str, folder: Path) -> dict:
    """What a unit finds when the provider process was started with the secret in its environment."""
    env = {**os.environ, "COVEY_PASSWORD": SECRET}
    done = subprocess.run(
        [sys.executable, "-c", PROVIDER, isolation, str(folder), SNOOP, SECRET],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@needs_namespaces
def test_a_unit_cannot_read_the_providers_environment_through_proc(tmp_path: Path) -> None:
    seen = snoop("namespaces", tmp_path)

    assert seen["found"] == []
    # Its /proc shows only its own PID namespace (its init and itself), never the provider's process.
    assert seen["provider_cmdline"] not in seen["cmdlines"]
    assert len(seen["cmdlines"]) <= 3, seen["cmdlines"]
    if os.geteuid() == 0:
        assert seen["uid"] == UNIT_UID


def test_without_namespaces_a_unit_can_read_the_providers_environment(tmp_path: Path) -> None:
    """The finding itself, where it still holds: why a provider without namespaces refuses compute-to-data."""
    seen = snoop("process", tmp_path)
    assert seen["found"] and seen["provider_cmdline"] in seen["cmdlines"]


# Tries to read the files named in argv (and list the folders); reports what it got.
READER = """
import json, os, sys
got = {}
for path in sys.argv[1:]:
    try:
        got[path] = sorted(os.listdir(path)) if os.path.isdir(path) else open(path).read()
    except OSError as exc:
        got[path] = type(exc).__name__
json.dump(got, open("out.json", "w"))
"""


def runtime_path(path: str) -> bool:
    """Whether `path` leads to this interpreter's installation (which a unit's read-only runtime holds)."""
    return any(prefix.startswith(path) for prefix in (sys.prefix, sys.base_prefix, os.path.realpath(sys.executable)))


@needs_namespaces
def test_a_unit_cannot_read_the_providers_keystore_or_data_directory(sandbox, covey_home: Path) -> None:
    wallet = Keystore().create("provider", SECRET)
    assert wallet.path is not None and wallet.path.is_relative_to(covey_home)
    targets = [str(wallet.path), str(covey_home), str(covey_home / "keys"), str(Path.home()), "/root", "/home"]

    result = sandbox.run([*python(READER), *dict.fromkeys(targets)], outputs=["out.json"])

    assert result.ok, result.stderr_tail
    got = json.loads(result.outputs["out.json"])
    for home in dict.fromkeys((str(Path.home()), "/root", "/home")):
        # A home folder exists in the unit's view only as the way to a bound interpreter (pyenv, uv).
        listing = got.pop(home)
        assert listing == "FileNotFoundError" or all(runtime_path(f"{home}/{entry}") for entry in listing), listing
    assert set(got.values()) == {"FileNotFoundError"}, got
    assert wallet.address[2:].lower() not in result.outputs["out.json"].decode().lower()


# Tries every way it knows to reach the TCP listener at argv[1]:argv[2] and the JSON-RPC node at argv[3].
DIALLER = """
import json, socket, sys, urllib.request
host, port, rpc = sys.argv[1], int(sys.argv[2]), sys.argv[3]
tried = {}
for target in (host, "localhost", "::1", socket.gethostname()):
    try:
        with socket.create_connection((target, port), timeout=2) as sock:
            sock.sendall(b"rows")
        tried[target] = "connected"
    except OSError as exc:
        tried[target] = type(exc).__name__
try:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}).encode()
    request = urllib.request.Request(rpc, body, {"Content-Type": "application/json"})
    tried["rpc"] = urllib.request.urlopen(request, timeout=2).read().decode()
except OSError as exc:
    tried["rpc"] = type(exc).__name__
json.dump(tried, open("out.json", "w"))
"""


class Listener:
    """A real TCP listener on 127.0.0.1 that counts who connected and what they sent."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.2)
        self.port = self.server.getsockname()[1]
        self.received: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self.server.accept()
            except TimeoutError:
                continue
            with connection:
                connection.settimeout(2)
                self.received.append(connection.recv(1 << 16))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.server.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    yield server
    server.close()


@needs_namespaces
def test_a_unit_cannot_reach_a_listener_or_the_chain_on_the_providers_loopback(
    sandbox, listener: Listener, anvil_url: str
) -> None:
    result = sandbox.run([*python(DIALLER), "127.0.0.1", str(listener.port), anvil_url], outputs=["out.json"])

    assert result.ok, result.stderr_tail
    tried = json.loads(result.outputs["out.json"])
    assert "connected" not in tried.values() and tried["rpc"] in ("URLError", "ConnectionRefusedError"), tried
    time.sleep(0.5)
    assert listener.received == []


@needs_namespaces
def test_a_unit_whose_job_declared_network_can_reach_it(sandbox, listener: Listener, anvil_url: str) -> None:
    """The control for the test above: the same unit, given the network, does connect (so that test can fail)."""
    result = sandbox.run(
        [*python(DIALLER), "127.0.0.1", str(listener.port), anvil_url], outputs=["out.json"], network=True
    )

    tried = json.loads(result.outputs["out.json"])
    assert tried["127.0.0.1"] == "connected" and '"result"' in tried["rpc"], tried
    deadline = time.monotonic() + 5
    while not listener.received and time.monotonic() < deadline:
        time.sleep(0.05)
    assert b"rows" in listener.received


@needs_namespaces
def test_the_runtime_is_read_only_and_the_unit_owns_only_its_directories(sandbox) -> None:
    code = (
        "import json, os\n"
        "got = {}\n"
        "paths = ['/usr/evil', '/opt/covey-runtime/covey/evil.py', '/etc/passwd', '/evil', '/job/mine', '/tmp/x']\n"
        "for path in paths:\n"
        "    try:\n"
        "        open(path, 'w').write('x'); got[path] = 'written'\n"
        "    except OSError as exc:\n"
        "        got[path] = type(exc).__name__\n"
        "json.dump(got, open('out.json', 'w'))\n"
    )
    result = sandbox.run(python(code), outputs=["out.json"])

    got = json.loads(result.outputs["out.json"])
    assert got.pop("/job/mine") == got.pop("/tmp/x") == "written"
    assert set(got.values()) <= {"OSError", "PermissionError"}, got
    assert not Path("/usr/evil").exists() and not (Path(covey.__file__).parent / "evil.py").exists()


def test_without_namespaces_isolation_is_refused_where_it_is_required(store, sandbox_root) -> None:
    sandbox = Sandbox(store, QUICK, root=sandbox_root, isolation="process")
    assert not sandbox.probe().namespaces
    assert sandbox.probe().describe().startswith("WEAK isolation")
    with pytest.raises(SandboxError, match="must run isolated in namespaces"):
        sandbox.run(python("pass"), require_isolation=True)
    assert list(sandbox_root.iterdir()) == []  # refused before anything was staged
    assert sandbox.run(python("pass")).ok  # ordinary units still run, weakly isolated


def test_an_unknown_isolation_is_refused(store) -> None:
    with pytest.raises(SandboxError, match="unknown isolation"):
        Sandbox(store, isolation="chroot")  # type: ignore[arg-type]


# A provider that is not root: run as `nobody` with the system interpreter (readable by every user), it isolates
# its unit in a user namespace. It was started with the secret in its environment and owns a key file.
UNPRIVILEGED_PROVIDER = """
import json, os, sys
from pathlib import Path
from covey.compute.sandbox import Sandbox, probe_namespaces
folder = Path(sys.argv[1])
isolation = probe_namespaces()
sandbox = Sandbox(None, root=folder / "units")  # no inputs to fetch: no store needed
argv = ["python3", "-c", sys.argv[2], sys.argv[3], str(os.getpid()), str(folder / "key.json")]
result = sandbox.run(argv, outputs=["out.json"])
print(json.dumps({"isolation": isolation.detail, "namespaces": isolation.namespaces, "rc": result.returncode,
                  "stderr": result.stderr_tail, "seen": json.loads(result.outputs.get("out.json", b"{}"))}))
"""
UNPRIVILEGED_UNIT = """
import json, os, sys
secret, provider, key = sys.argv[1].encode(), sys.argv[2], sys.argv[3]
seen = {"uid": os.getuid(), "pids": sorted(p for p in os.listdir("/proc") if p.isdigit()), "found": []}
for pid in seen["pids"] + [provider]:
    try:
        if secret in open(f"/proc/{pid}/environ", "rb").read():
            seen["found"].append(pid)
    except OSError:
        pass
try:
    seen["key"] = open(key).read()
except OSError as exc:
    seen["key"] = type(exc).__name__
json.dump(seen, open("out.json", "w"))
"""


@pytest.mark.skipif(
    os.geteuid() != 0 or not Path("/usr/bin/python3").exists() or shutil.which("setpriv") is None,
    reason="needs root to become an unprivileged provider (setpriv) and a system python3 every user can run",
)
def test_an_unprivileged_provider_isolates_units_in_a_user_namespace() -> None:
    with tempfile.TemporaryDirectory(prefix="covey-unprivileged-") as where:  # pytest's own tmp is root-only
        unprivileged_provider(Path(where))


def unprivileged_provider(folder: Path) -> None:
    (folder / "key.json").write_text(SECRET)
    for path in (folder, folder / "key.json"):
        os.chown(path, UNIT_UID, UNIT_GID)
    os.chmod(folder / "key.json", 0o600)  # readable by the provider user (nobody) only
    env = {"PATH": "/usr/bin:/bin", "HOME": str(folder), "PYTHONPATH": str(Path(covey.__file__).parents[1])}
    become = ["setpriv", "--reuid", str(UNIT_UID), "--regid", str(UNIT_GID), "--clear-groups"]
    done = subprocess.run(
        [*become, "/usr/bin/python3", "-c", UNPRIVILEGED_PROVIDER, str(folder), UNPRIVILEGED_UNIT, SECRET],
        env={**env, "COVEY_PASSWORD": SECRET},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=folder,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    if not report["namespaces"]:
        pytest.skip(f"no unprivileged user namespaces on this kernel: {report['isolation']}")
    assert report["rc"] == 0, report["stderr"]
    assert "user-namespace" in report["isolation"]
    seen = report["seen"]
    assert seen["found"] == [] and seen["key"] == "FileNotFoundError" and len(seen["pids"]) <= 2, seen
