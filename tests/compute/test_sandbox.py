"""The unit sandbox: only declared inputs go in (hash-checked), only declared outputs come out, limits bite."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from covey.compute.sandbox import Limits, Sandbox, SandboxError
from covey.errors import IntegrityError

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


def test_inputs_are_hash_checked_before_anything_runs(sandbox, store, tmp_path: Path) -> None:
    ref = store.put(b"the real data")
    store.path_for(ref.digest).write_bytes(b"tampered data")  # someone swapped the bytes on disk
    marker = tmp_path / "ran"
    with pytest.raises(IntegrityError):
        sandbox.run(python(f"open({str(marker)!r}, 'w').write('x')"), inputs={"data.bin": ref.digest})
    assert not marker.exists()


def test_the_wall_clock_limit_kills_the_unit_and_its_children(sandbox, tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    code = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(60)\n"
    )
    started = time.monotonic()
    result = sandbox.run(python(code), limits=Limits(wall_clock_s=1.5, cpu_seconds=10))
    assert result.timed_out and not result.ok
    assert time.monotonic() - started < 10
    # SIGKILL to the group is delivered asynchronously: on a busy machine the grandchild may take a moment to die.
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while still_running(grandchild, b"time.sleep(60)") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not still_running(grandchild, b"time.sleep(60)")


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


def test_the_environment_is_clean(sandbox, monkeypatch) -> None:
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
