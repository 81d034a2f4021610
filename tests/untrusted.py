"""Helpers for the bounded-parsing tests: hostile JSON, and a `covey ... serve` command as a real process.

Import as `tests.untrusted`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.support import REPO_ROOT, free_port

ATTACK_DEPTH = 100_000
"""The attack that killed `covey gateway serve` and `covey facilitator serve`: arrays nested 100,000 deep."""


def nested_arrays(depth: int = ATTACK_DEPTH) -> bytes:
    """`[[[...]]]` nested `depth` deep: valid JSON, ~2 bytes a level (195 KB at 100,000)."""
    return b"[" * depth + b"]" * depth


def nested_in_object(key: str, depth: int) -> bytes:
    """`{"key": [[[...]]]}`: an object whose one field nests `depth` deep."""
    return b'{"' + key.encode() + b'":' + nested_arrays(depth) + b"}"


@contextmanager
def covey_serve(
    args: list[str], *, env: dict[str, str], ready_path: str, log_path: Path
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`python -m covey.cli <args> --port N` as its own process; yield its URL once `ready_path` answers."""
    port = free_port()
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "covey.cli", *args, "--port", str(port)],
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"`covey {' '.join(args)}` exited with {proc.returncode}: {log_path.read_text()}")
            try:
                if httpx.get(f"{url}{ready_path}", timeout=5).status_code < 500:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"`covey {' '.join(args)}` did not answer: {log_path.read_text()[-2000:]}")
            time.sleep(0.2)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
