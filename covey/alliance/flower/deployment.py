"""`FlowerDeployment`: Flower's deployment engine on 127.0.0.1 (a SuperLink, a SuperNode per member) running Covey.

Everything stays offline: no `flwr new` (it fetches templates), no runtime dependency installation
(the app's code is already importable), no update check, no telemetry. `flwr run` exits 0 even
when the run then fails, so `run` polls the run's status (`flwr ls --run-id`) and raises
`FlowerError` unless it ends `finished:completed`.

This module does not import flwr: it drives the Flower executables in `flower_bin_dir()`, which may
belong to another virtual environment (flwr 1.42 pins older typer, rich, fastapi and uvicorn than
Covey uses; `make bootstrap` builds `.venv/flower` on top of `.venv` for it).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

from covey.alliance.errors import FlowerError

if TYPE_CHECKING:
    from covey.alliance.runner import RunConfig

FLOWER_VENV_ENV = "COVEY_FLOWER_VENV"
FLOWER_VENV_DIR = ".venv/flower"
SUPERLINK_START_S = 60.0
STATUS_POLL_S = 2.0
CLI_TIMEOUT_S = 120.0
STOP_GRACE_S = 10.0
OFFLINE_ENV = {
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_TELEMETRY_ENABLED": "0",
}
APP_COMPONENTS = {
    "serverapp": "covey.alliance.flower.apps:server_app",
    "clientapp": "covey.alliance.flower.apps:client_app",
}
COMPLETED = "finished:completed"


@dataclass(frozen=True)
class FlowerRunReport:
    """What one Flower run did: its id and status, the held-out accuracy after each round, seconds per round."""

    run_id: int
    status: str
    accuracies: list[float]  # before round 1, then after each round
    round_s: list[float]  # wall time of each round, from the ServerApp's clock
    wall_s: float  # from `flwr run` to the finished status, as the caller waited
    details: dict[str, Any] = field(default_factory=dict)  # the ServerApp's report: metrics, failures


def flower_bin_dir() -> Path:
    """The directory holding `flower-superlink`, `flower-supernode` and `flwr`.

    `$COVEY_FLOWER_VENV` (a virtual environment) if set; else the repository's `.venv/flower`;
    else this interpreter's own `bin` if flwr is installed next to it. Raises `FlowerError` otherwise.
    """
    candidates = []
    if os.environ.get(FLOWER_VENV_ENV):
        candidates.append(Path(os.environ[FLOWER_VENV_ENV]) / "bin")
    candidates.append(Path(__file__).resolve().parents[3] / FLOWER_VENV_DIR / "bin")
    candidates.append(Path(sys.executable).parent)
    for candidate in candidates:
        if (candidate / "flower-superlink").exists() and (candidate / "flwr").exists():
            return candidate
    searched = ", ".join(str(c) for c in candidates)
    raise FlowerError(f"no Flower installation in {searched}; `make bootstrap` builds {FLOWER_VENV_DIR}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class FlowerDeployment:
    """A SuperLink and `supernodes` SuperNodes (node `i` gets `partition-id=i`), stopped on exit.

    Logs go to `workdir` (a temporary directory unless given): `superlink.log`, `supernode-<i>.log`.
    """

    def __init__(self, supernodes: int, *, workdir: Path | None = None, bin_dir: Path | None = None) -> None:
        if supernodes < 1:
            raise FlowerError(f"a deployment needs at least one SuperNode, got {supernodes}")
        self.supernodes = supernodes
        self.bin_dir = bin_dir or flower_bin_dir()
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="covey-flower-"))
        self.port = 0
        self._processes: list[tuple[str, subprocess.Popen[bytes]]] = []
        self._logs: list[IO[bytes]] = []
        self._runs = 0

    @property
    def process_ids(self) -> list[int]:
        """The process ids (each also a process group id) of the SuperLink and SuperNodes running now."""
        return [process.pid for _, process in self._processes]

    # -- lifecycle ------------------------------------------------------------------------------------

    def __enter__(self) -> FlowerDeployment:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start the SuperLink, wait until it listens, then start the SuperNodes."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self._write_cli_config()
        self._spawn("superlink", ["flower-superlink", "--insecure", "--port", str(self.port)], "superlink")
        self._wait_for_superlink()
        for index in range(self.supernodes):
            command = [
                "flower-supernode",
                "--insecure",
                "--superlink",
                f"127.0.0.1:{self.port}",
                "--port",
                str(free_port()),
                "--node-config",
                f"partition-id={index} num-partitions={self.supernodes}",
            ]
            self._spawn(f"supernode-{index}", command, f"supernode-{index}")

    def stop(self) -> None:
        """Stop every process this deployment started (and their children: SuperExec, ServerApp, ClientApps)."""
        for _, process in reversed(self._processes):
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for _, process in self._processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait()
            _signal_group(process, signal.SIGKILL)  # children the leader left behind
            _wait_until_gone(process.pid)
        self._processes.clear()
        for log in self._logs:
            log.close()
        self._logs.clear()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- runs -----------------------------------------------------------------------------------------

    def run(self, config: RunConfig, *, timeout_s: float = 900.0) -> FlowerRunReport:
        """Run the Covey app with `config` (one behaviour per SuperNode) and return its report.

        Raises `FlowerError` when the run fails, stops, or is not finished within `timeout_s`.
        """
        if len(config.behaviours) != self.supernodes:
            raise FlowerError(f"the run has {len(config.behaviours)} members but {self.supernodes} SuperNodes run")
        self._runs += 1
        app_dir = self.workdir / f"app-{self._runs}"
        report_path = app_dir / "report.json"
        _write_app(app_dir, config, report_path)
        started = time.perf_counter()
        output = self._cli(["run", str(app_dir), "--format", "json"])
        run_id = int(_json_line(output)["run-id"])
        deadline = started + timeout_s
        status = ""
        while not status.startswith("finished"):
            if time.perf_counter() > deadline:
                raise FlowerError(f"Flower run {run_id} is still {status or 'pending'} after {timeout_s:.0f}s")
            self._check_alive()
            time.sleep(STATUS_POLL_S)
            status = self.status(run_id)
        wall_s = time.perf_counter() - started
        if status != COMPLETED:
            raise self._failure(run_id, status)
        details = json.loads(report_path.read_text())
        return FlowerRunReport(run_id, status, details["accuracies"], details["round_s"], wall_s, details)

    def status(self, run_id: int) -> str:
        """The run's status as `flwr ls` shows it: `pending`, `running`, `finished:completed`, `finished:failed`..."""
        return str(self._run_row(run_id)["status"])

    def _run_row(self, run_id: int) -> dict[str, Any]:
        row: dict[str, Any] = _json_line(self._cli(["ls", "--run-id", str(run_id), "--format", "json"]))["runs"][0]
        return row

    def _failure(self, run_id: int, status: str) -> FlowerError:
        """A `FlowerError` with the run's status details and the end of the ServerApp's log."""
        details = self._run_row(run_id).get("status-details", "")
        try:
            log = self._cli(["log", str(run_id), "--show"]).splitlines()[-30:]
        except (FlowerError, subprocess.TimeoutExpired):
            log = []
        return FlowerError(f"Flower run {run_id} ended {status}: {details}\n" + "\n".join(log))

    # -- internals ------------------------------------------------------------------------------------

    def _env(self, home: str) -> dict[str, str]:
        path = f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"  # Flower finds its helpers on PATH
        return {**os.environ, **OFFLINE_ENV, "PATH": path, "FLWR_HOME": str(self.workdir / home)}

    def _write_cli_config(self) -> None:
        home = self.workdir / "cli"
        home.mkdir(parents=True, exist_ok=True)
        (home / "config.toml").write_text(
            f'[superlink]\ndefault = "covey"\n\n[superlink.covey]\naddress = "127.0.0.1:{self.port}"\ninsecure = true\n'
        )

    def _spawn(self, name: str, command: list[str], home: str) -> None:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop()
        self._logs.append(log)
        executable = str(self.bin_dir / command[0])
        process = subprocess.Popen(
            [executable, *command[1:]],
            env=self._env(home),
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so stop() reaches the children it spawns
        )
        self._processes.append((name, process))

    def _wait_for_superlink(self) -> None:
        deadline = time.monotonic() + SUPERLINK_START_S
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        raise FlowerError(f"the SuperLink did not listen on port {self.port} within {SUPERLINK_START_S:.0f}s")

    def _check_alive(self) -> None:
        for name, process in self._processes:
            if process.poll() is not None:
                raise FlowerError(f"{name} exited with {process.returncode}; see {self.workdir / name}.log")

    def _cli(self, args: list[str]) -> str:
        command = [str(self.bin_dir / "flwr"), *args]
        done = subprocess.run(
            command, env=self._env("cli"), cwd=self.workdir, capture_output=True, text=True, timeout=CLI_TIMEOUT_S
        )
        if done.returncode != 0:
            raise FlowerError(f"`flwr {' '.join(args)}` exited with {done.returncode}: {done.stderr or done.stdout}")
        return done.stdout


def _write_app(app_dir: Path, config: RunConfig, report_path: Path) -> None:
    """The Flower app directory `flwr run` bundles: only a pyproject naming Covey's components and the run config."""
    app_dir.mkdir(parents=True, exist_ok=True)
    components = "\n".join(f"{name} = {json.dumps(ref)}" for name, ref in APP_COMPONENTS.items())
    (app_dir / "pyproject.toml").write_text(
        "[build-system]\n"
        'requires = ["hatchling"]\n'
        'build-backend = "hatchling.build"\n\n'
        "[project]\n"
        'name = "covey-alliance"\n'
        'version = "1.0.0"\n'
        'description = "Covey alliance training with its robust aggregation rule"\n'
        'license = "Apache-2.0"\n'
        "dependencies = []\n\n"
        "[tool.flwr.app]\n"
        'publisher = "covey"\n\n'
        f"[tool.flwr.app.components]\n{components}\n\n"
        "[tool.flwr.app.config]\n"
        # JSON string literals are valid TOML basic strings.
        f"covey-config = {json.dumps(config.to_json())}\n"
        f"report-path = {json.dumps(str(report_path))}\n"
    )


def _json_line(output: str) -> dict[str, Any]:
    """The JSON object a `flwr ... --format json` command printed (it may be indented, with other lines before)."""
    start = output.find("\n{") + 1 if not output.startswith("{") else 0
    if not output[start:].startswith("{"):
        raise FlowerError(f"flwr printed no JSON: {output!r}")
    data, _ = json.JSONDecoder().raw_decode(output[start:])
    if not isinstance(data, dict) or not data.get("success", False):
        raise FlowerError(f"flwr reported failure: {output[start:]}")
    return data


def _wait_until_gone(group: int, timeout_s: float = STOP_GRACE_S) -> None:
    """Wait until no process of `group` is left (killed children take a moment to be reaped)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.1)


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)
