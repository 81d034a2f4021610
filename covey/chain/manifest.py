"""The deployment manifest: where the suite lives on one chain, kept in `COVEY_HOME/deployments/<chainId>.json`.

`Deployment` names every contract's address, runtime code hash and deployment block; `load_deployment`
reads the manifest back and checks that the chain still holds that code.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hexbytes import HexBytes
from web3 import Web3
from web3.contract import Contract

from covey.chain.chain import Chain
from covey.config import get_settings
from covey.errors import ChainError

MANIFEST_DIR = "deployments"


@dataclass(frozen=True)
class Deployment:
    """Where the suite lives on one chain: addresses, runtime code hashes and deployment blocks by name."""

    chain_id: int
    contracts: dict[str, str]
    code_hashes: dict[str, str]
    blocks: dict[str, int]
    deployer: str
    deployed_at: int

    def address(self, name: str) -> str:
        """The checksummed address of contract `name` (e.g. "Staking")."""
        try:
            return self.contracts[name]
        except KeyError:
            known = ", ".join(sorted(self.contracts))
            raise ChainError(
                f"no contract {name!r} in the Covey deployment on chain {self.chain_id}: it has {known}"
            ) from None

    def contract(self, chain: Chain, name: str) -> Contract:
        """A web3 handle on contract `name`, with its ABI."""
        return chain.contract(name, self.address(name))

    def to_json(self) -> dict[str, Any]:
        """The manifest as written to disk."""
        return {
            "chainId": self.chain_id,
            "contracts": dict(self.contracts),
            "codeHashes": dict(self.code_hashes),
            "blocks": dict(self.blocks),
            "deployer": self.deployer,
            "deployedAt": self.deployed_at,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Deployment:
        """Parse a manifest; a missing field raises `KeyError`, a wrong type `TypeError`/`ValueError`."""
        return cls(
            chain_id=int(data["chainId"]),
            contracts={str(k): Web3.to_checksum_address(v) for k, v in data["contracts"].items()},
            code_hashes={str(k): str(v) for k, v in data["codeHashes"].items()},
            blocks={str(k): int(v) for k, v in data["blocks"].items()},
            deployer=Web3.to_checksum_address(data["deployer"]),
            deployed_at=int(data["deployedAt"]),
        )


def manifest_path(chain_id: int) -> Path:
    """Where the manifest for chain `chain_id` lives: `COVEY_HOME/deployments/<chainId>.json`."""
    return get_settings().subdir(MANIFEST_DIR) / f"{chain_id}.json"


def load_deployment(chain: Chain) -> Deployment:
    """The suite recorded for this chain, after checking that every contract's code is still there.

    Raises `ChainError` when there is no manifest or it no longer matches the chain (a restarted node).
    """
    path = manifest_path(chain.chain_id)
    if not path.exists():
        raise _no_deployment(chain, f"no manifest at {path}")
    try:
        deployment = Deployment.from_json(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise _no_deployment(chain, f"unreadable manifest {path}: {exc!r}") from exc
    if deployment.chain_id != chain.chain_id:
        raise _no_deployment(chain, f"{path} is for chain {deployment.chain_id}")
    for name, address in deployment.contracts.items():
        if code_hash(chain, address) != deployment.code_hashes.get(name):
            raise _no_deployment(chain, f"{name} at {address} is missing or changed")
    return deployment


def _no_deployment(chain: Chain, detail: str) -> ChainError:
    return ChainError(f"no Covey deployment on chain {chain.chain_id}: run `covey chain deploy` ({detail})")


def code_hash(chain: Chain, address: str) -> str:
    """The keccak of the runtime code at `address`, as the manifest records it."""
    code = chain.w3.eth.get_code(Web3.to_checksum_address(address))
    return "0x" + Web3.keccak(HexBytes(code)).hex().removeprefix("0x")


def write_manifest(deployment: Deployment) -> Path:
    """Write the manifest atomically (temp file, fsync, rename), so a crash never leaves half a file."""
    path = manifest_path(deployment.chain_id)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(deployment.to_json(), handle, indent=2)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
