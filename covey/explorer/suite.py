"""Which contracts the explorer indexes: the deployment manifest's suite, plus what the on-chain Registry adds.

The manifest is the authority for what it names and is checked against the chain's code; a contract
registered later (with an ABI Covey knows) is indexed from the Registry's deployment block.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from eth_utils import keccak

from covey.chain import Chain, compile_contract
from covey.chain.deploy import Deployment, manifest_path
from covey.errors import ChainError
from covey.explorer.decoding import EventDecoder, checksum


@dataclass(frozen=True)
class Watched:
    """A contract the indexer follows: its suite name, address and the block to start from."""

    name: str
    address: str
    start_block: int


def read_manifest(chain: Chain, path: Path) -> Deployment:
    """The deployment manifest at `path`, checked against the chain (as `load_deployment` does).

    The indexer keeps the manifest's path from when it started rather than asking the settings each
    time: a long-running explorer must not follow a COVEY_HOME that changes under it.
    Raises `ChainError` when the file is missing or unreadable, or the chain lacks its contracts.
    """
    if not path.exists():
        raise ChainError(f"no Covey deployment on chain {chain.chain_id}: no manifest at {path}")
    try:
        deployment = Deployment.from_json(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ChainError(f"unreadable deployment manifest {path}: {exc!r}") from exc
    if deployment.chain_id != chain.chain_id:
        raise ChainError(f"the manifest {path} is for chain {deployment.chain_id}, not {chain.chain_id}")
    for name, address in deployment.contracts.items():
        code = bytes(chain.w3.eth.get_code(address))  # type: ignore[arg-type]
        if "0x" + keccak(code).hex() != deployment.code_hashes.get(name):
            raise ChainError(f"the manifest's {name} at {address} is missing or changed on chain {chain.chain_id}")
    return deployment


def discover_suite(chain: Chain, manifest: Path | None = None) -> list[Watched]:
    """The suite's contracts: the manifest's, plus any the Registry names that the manifest lacks.

    Raises `ChainError` when the chain has no (or a changed) Covey deployment.
    """
    deployment = read_manifest(chain, manifest or manifest_path(chain.chain_id))
    watched = {
        address: Watched(name, address, deployment.blocks.get(name, 0))
        for name, address in deployment.contracts.items()
    }
    registry_block = deployment.blocks.get("Registry", 0)
    if "Registry" in deployment.contracts:
        registry = deployment.contract(chain, "Registry")
        for name in chain.call(registry.functions.names()):
            # The manifest is the authority for what it names; the Registry adds what came later.
            if name in deployment.contracts or not _has_abi(str(name)):
                continue
            address = checksum(str(chain.call(registry.functions.get(name))))
            if address in watched:
                continue
            # Registered after the manifest was written: it was deployed after the Registry, so
            # scanning from the Registry's block finds all its events.
            watched[address] = Watched(str(name), address, registry_block)
    return sorted(watched.values(), key=lambda w: (w.start_block, w.name))


def _has_abi(name: str) -> bool:
    try:
        compile_contract(name)
    except ChainError:
        return False
    return True


def event_names(names: Iterable[str]) -> dict[str, list[str]]:
    """Per contract name, the events its ABI declares (for the explorer's event filter)."""
    return {name: EventDecoder(compile_contract(name).abi).event_names for name in names}
