"""`covey explorer serve` starts a server that answers even before anything is deployed."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
from typer.testing import CliRunner

from covey.cli import explorer_cmd
from tests.support import free_port

from .conftest import REPO_ROOT

# The root app registers `explorer`; until it does, this entry point runs the sub-app itself.
ENTRY = "from covey.cli.explorer_cmd import app; app(prog_name='covey explorer')"


def test_serve_help_names_its_options() -> None:
    result = CliRunner().invoke(explorer_cmd.app, ["serve", "--help"])
    assert result.exit_code == 0
    assert "--host" in result.output and "--port" in result.output


def test_serve_answers_on_a_chain_without_a_deployment(covey_home: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", ENTRY, "serve", "--port", str(port)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 90
        page = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
                break
            except httpx.HTTPError:
                time.sleep(0.3)
        assert page is not None, proc.stdout.read().decode() if proc.stdout else "no output"
        assert page.status_code == 200
        assert "No Covey deployment is indexed on this chain yet" in page.text
        assert httpx.get(f"http://127.0.0.1:{port}/arena/tasks/1", timeout=5).status_code == 404
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert (covey_home / "explorer" / "index.sqlite").exists()
