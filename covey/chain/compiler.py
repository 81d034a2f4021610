"""Compiles the Vyper contracts under `covey/chain/contracts/`, caching artifacts by source hash."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from covey.errors import ChainError

CONTRACTS_DIR = Path(__file__).parent / "contracts"
EVM_VERSION = "prague"


@dataclass(frozen=True)
class CompiledContract:
    """A contract's ABI and deploy bytecode, with the hash of the sources that made it."""

    name: str
    abi: list[dict[str, Any]]
    bytecode: str
    source_hash: str


def _search_paths() -> list[str]:
    import snekmate

    # snekmate is a namespace package (no __file__): its parent folder is the import root
    snekmate_root = Path(next(iter(snekmate.__path__))).parent
    return [str(CONTRACTS_DIR), str(snekmate_root)]


def _sources_hash(name: str) -> str:
    """Hash every contract source and the compiler version, so any edit invalidates the cache."""
    from importlib.metadata import version

    import vyper

    digest = hashlib.sha256(f"{vyper.__version__}|{EVM_VERSION}|{version('snekmate')}|{name}".encode())
    for path in sorted(CONTRACTS_DIR.rglob("*.vy")):
        digest.update(path.relative_to(CONTRACTS_DIR).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _cache_dir() -> Path:
    from covey.config import get_settings

    return get_settings().subdir("cache/contracts")


@cache
def compile_contract(name: str) -> CompiledContract:
    """Return the compiled contract `name` (file `contracts/<name>.vy`), from the cache when fresh."""
    source_path = CONTRACTS_DIR / f"{name}.vy"
    if not source_path.exists():
        raise ChainError(f"unknown contract {name!r}: no {source_path.name} in {CONTRACTS_DIR}")
    source_hash = _sources_hash(name)
    cached = _cache_dir() / f"{name}-{source_hash[:16]}.json"
    if cached.exists():
        data = json.loads(cached.read_text())
        return CompiledContract(name, data["abi"], data["bytecode"], source_hash)

    import vyper
    from vyper.compiler.input_bundle import FilesystemInputBundle
    from vyper.compiler.settings import Settings

    bundle = FilesystemInputBundle([Path(p) for p in _search_paths()])
    file_input = bundle.load_file(source_path)
    try:
        output = vyper.compile_from_file_input(
            file_input,
            input_bundle=bundle,
            output_formats=["abi", "bytecode"],
            settings=Settings(evm_version=EVM_VERSION),
        )
    except vyper.exceptions.VyperException as exc:
        raise ChainError(f"{name}.vy does not compile: {exc}") from exc
    compiled = CompiledContract(name, output["abi"], output["bytecode"], source_hash)
    fd, tmp = tempfile.mkstemp(dir=cached.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump({"abi": compiled.abi, "bytecode": compiled.bytecode}, handle)
    os.replace(tmp, cached)
    return compiled
