"""Fixtures for the embedded chain tests: a node on disk, web3 over it, and two tiny contracts."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
import vyper
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.contract import Contract
from web3.types import TxParams, TxReceipt

from covey.chain._embedded import EmbeddedNode, dev_private_keys, embedded_web3, open_node

TOKEN_SOURCE = """
# pragma version ~=0.4.3
event Transfer:
    sender: indexed(address)
    receiver: indexed(address)
    amount: uint256

balanceOf: public(HashMap[address, uint256])

@deploy
def __init__(supply: uint256):
    self.balanceOf[msg.sender] = supply
    log Transfer(sender=empty(address), receiver=msg.sender, amount=supply)

@external
def transfer(receiver: address, amount: uint256) -> bool:
    assert self.balanceOf[msg.sender] >= amount, "token: balance too low"
    self.balanceOf[msg.sender] -= amount
    self.balanceOf[receiver] += amount
    log Transfer(sender=msg.sender, receiver=receiver, amount=amount)
    return True
"""

PROBE_SOURCE = """
# pragma version ~=0.4.3
event Ping:
    caller: indexed(address)
    tag: indexed(uint256)
    amount: uint256

last_timestamp: public(uint256)
last_randao: public(bytes32)
last_number: public(uint256)

@external
def ping(tag: uint256, amount: uint256):
    self.last_timestamp = block.timestamp
    self.last_randao = block.prevrandao
    self.last_number = block.number
    log Ping(caller=msg.sender, tag=tag, amount=amount)

@external
@view
def now() -> uint256:
    return block.timestamp

@external
@view
def parent_hash() -> bytes32:
    return blockhash(block.number - 1)

@external
def refuse(code: uint256):
    assert code == 0, "probe: refused"
    self.last_number = block.number
"""


@dataclass(frozen=True)
class Artifact:
    abi: list[dict[str, Any]]
    bytecode: str


def compile_vyper(source: str) -> Artifact:
    out = vyper.compile_code(source, output_formats=["abi", "bytecode"])
    return Artifact(out["abi"], out["bytecode"])


@pytest.fixture(scope="session")
def token_artifact() -> Artifact:
    return compile_vyper(TOKEN_SOURCE)


@pytest.fixture(scope="session")
def probe_artifact() -> Artifact:
    return compile_vyper(PROBE_SOURCE)


@pytest.fixture(scope="session")
def dev_accounts() -> list[LocalAccount]:
    return [Account.from_key(key) for key in dev_private_keys(10)]


@pytest.fixture
def chain_dir(tmp_path: Path) -> Path:
    return tmp_path / "chain"


@pytest.fixture
def node(chain_dir: Path) -> Iterator[EmbeddedNode]:
    opened = open_node(chain_dir)
    yield opened
    opened.close()


@pytest.fixture
def w3(node: EmbeddedNode) -> Web3:
    return embedded_web3(node)


def send_tx(w3: Web3, account: LocalAccount, **fields: Any) -> TxReceipt:
    """Sign `fields` (nonce, fees and gas filled in when missing), send, and return the receipt."""
    tx: dict[str, Any] = {
        "chainId": 31337,
        "nonce": w3.eth.get_transaction_count(account.address),
        "maxFeePerGas": 3 * 10**9,
        "maxPriorityFeePerGas": 10**9,
        "value": 0,
        **fields,
    }
    if "gas" not in tx:
        estimate_fields = {key: value for key, value in tx.items() if key != "nonce"}
        tx["gas"] = w3.eth.estimate_gas(cast(TxParams, estimate_fields | {"from": account.address}))
    tx_hash = w3.eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction)
    return w3.eth.get_transaction_receipt(tx_hash)


def deploy(w3: Web3, account: LocalAccount, artifact: Artifact, *args: Any) -> Contract:
    factory = w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
    data = factory.constructor(*args).data_in_transaction
    receipt = send_tx(w3, account, data=data)
    assert receipt["status"] == 1
    return cast(Contract, w3.eth.contract(address=receipt["contractAddress"], abi=artifact.abi))


@pytest.fixture
def send(w3: Web3) -> Callable[..., TxReceipt]:
    """`send(account, to=..., data=...)` -> receipt, on this test's chain."""
    return functools.partial(send_tx, w3)


@pytest.fixture
def token(w3: Web3, dev_accounts: list[LocalAccount], token_artifact: Artifact) -> Contract:
    return deploy(w3, dev_accounts[0], token_artifact, 10**24)


@pytest.fixture
def probe(w3: Web3, dev_accounts: list[LocalAccount], probe_artifact: Artifact) -> Contract:
    return deploy(w3, dev_accounts[0], probe_artifact)
