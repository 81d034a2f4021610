"""The dependency locks: the committed ones agree with pyproject.toml, and the check catches each way they drift."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCKS = ("bootstrap.lock.txt", "covey.lock.txt", "flower.lock.txt", "nodeps.lock.txt")


def run_check(pyproject: Path, requirements: Path) -> subprocess.CompletedProcess[str]:
    """`scripts/locks.py check` as `make lint` runs it, pointed at the given files."""
    return subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "locks.py"),
            "check",
            "--pyproject",
            str(pyproject),
            "--requirements",
            str(requirements),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def copy_project(tmp_path: Path) -> tuple[Path, Path]:
    requirements = tmp_path / "requirements"
    requirements.mkdir()
    for name in LOCKS:
        shutil.copy(ROOT / "requirements" / name, requirements / name)
    pyproject = tmp_path / "pyproject.toml"
    shutil.copy(ROOT / "pyproject.toml", pyproject)
    return pyproject, requirements


def test_the_committed_locks_agree_with_pyproject() -> None:
    result = run_check(ROOT / "pyproject.toml", ROOT / "requirements")
    assert result.returncode == 0, result.stderr
    assert "agree" in result.stdout


def test_a_dependency_missing_from_the_lock_fails_the_check(tmp_path: Path) -> None:
    pyproject, requirements = copy_project(tmp_path)
    text = pyproject.read_text()
    pyproject.write_text(text.replace("dependencies = [\n", 'dependencies = [\n    "left-pad-for-python==1.0",\n', 1))

    result = run_check(pyproject, requirements)

    assert result.returncode == 1
    assert "left-pad-for-python==1.0 (pyproject.toml) is not in covey.lock.txt" in result.stderr


def test_a_pin_moved_in_pyproject_but_not_in_the_lock_fails_the_check(tmp_path: Path) -> None:
    pyproject, requirements = copy_project(tmp_path)
    pyproject.write_text(re.sub(r'"httpx==[^"]+"', '"httpx==0.27.0"', pyproject.read_text()))

    result = run_check(pyproject, requirements)

    assert result.returncode == 1
    assert "httpx==0.27.0 (pyproject.toml) but covey.lock.txt pins 0.28.1" in result.stderr


def test_locks_that_disagree_on_a_shared_package_fail_the_check(tmp_path: Path) -> None:
    pyproject, requirements = copy_project(tmp_path)
    flower = requirements / "flower.lock.txt"
    numpy_pin = re.search(r"^numpy==(\S+) ", flower.read_text(), re.MULTILINE)
    assert numpy_pin, "Flower's lock holds numpy, which .venv shares"
    flower.write_text(flower.read_text().replace(f"numpy=={numpy_pin.group(1)} ", "numpy==1.26.0 "))

    result = run_check(pyproject, requirements)

    assert result.returncode == 1
    assert f"numpy: flower.lock.txt pins 1.26.0 but covey.lock.txt pins {numpy_pin.group(1)}" in result.stderr


def test_a_lock_entry_without_a_hash_fails_the_check(tmp_path: Path) -> None:
    pyproject, requirements = copy_project(tmp_path)
    nodeps = requirements / "nodeps.lock.txt"
    nodeps.write_text(nodeps.read_text() + "six==1.16.0\n")

    result = run_check(pyproject, requirements)

    assert result.returncode == 1
    assert "six==1.16.0 in nodeps.lock.txt has no hash" in result.stderr
