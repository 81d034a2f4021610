"""The embedded chain survives restarts and crashes: journal, snapshots, torn records, the lock."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address

from covey.chain._embedded import DEV_BALANCE_WEI, EmbeddedNode, dev_private_keys, open_node
from covey.chain._embedded.rpc import Dispatcher
from covey.errors import ChainBusyError

REPO_ROOT = Path(__file__).resolve().parents[2]
GWEI = 10**9
RECIPIENT = to_checksum_address("0x" + "5e" * 20)
FUNDED = "0x" + "f0" * 20


def write_transfers(node: EmbeddedNode, count: int, token_bytecode: str) -> Iterator[tuple[str, str]]:
    """Act as a user: deploy the token, then alternate ETH and token transfers to RECIPIENT.

    Yields "(tx hash, block hash)" after each send returns, that is, once it is durable. Also
    moves the clock and sets a balance first, so replay has every kind of journal entry.
    """
    sender = Account.from_key(dev_private_keys(1)[0])
    node.increase_time(7)
    node.set_balance(bytes.fromhex(FUNDED[2:]), 123)
    nonce = node.engine.nonce(bytes.fromhex(sender.address[2:]))
    fees = {"chainId": 31337, "maxFeePerGas": 3 * GWEI, "maxPriorityFeePerGas": GWEI}
    deploy_data = bytes.fromhex(token_bytecode[2:]) + (10**24).to_bytes(32, "big")
    transfer = bytes.fromhex("a9059cbb") + bytes(12) + bytes.fromhex(RECIPIENT[2:]) + (1).to_bytes(32, "big")
    token: bytes | None = None
    for index in range(count + 1):
        if index == 0:
            fields: dict[str, Any] = {"data": deploy_data, "gas": 1_000_000}
        elif index % 2 == 1:
            fields = {"to": RECIPIENT, "value": 1, "gas": 21_000}
        else:
            fields = {"to": to_checksum_address(token or b""), "data": transfer, "gas": 100_000}
        raw = sender.sign_transaction({**fees, **fields, "nonce": nonce + index}).raw_transaction
        tx_hash = node.send_raw_transaction(raw)
        record = node.engine.txs[tx_hash]
        token = token or record.contract_address
        yield tx_hash.hex(), node.engine.blocks[record.block_number].hash.hex()


# The same user in its own process, printing each durable hash, to be SIGKILLed.
WRITER = f"""
import sys
from pathlib import Path
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
from test_embedded_persistence import write_transfers
from covey.chain._embedded import open_node

node = open_node(Path(sys.argv[1]), snapshot_every=16)
for tx_hash, block_hash in write_transfers(node, 100_000, sys.argv[2]):
    print(tx_hash, block_hash, flush=True)
"""


def crashed_copy(node: EmbeddedNode, destination: Path) -> Path:
    """What a crash would leave on disk now: every acknowledged write is fsynced, nothing else is."""
    shutil.copytree(node.data_dir, destination, ignore=shutil.ignore_patterns("LOCK"))
    return destination


def write_then_crash(
    chain_dir: Path, tmp_path: Path, bytecode: str, count: int, snapshot_every: int
) -> tuple[Path, list[tuple[str, str]]]:
    with open_node(chain_dir, snapshot_every=snapshot_every) as node:
        printed = list(write_transfers(node, count, bytecode))
        return crashed_copy(node, tmp_path / "crashed"), printed


def chain_view(node: EmbeddedNode) -> dict[str, Any]:
    """Everything a client could read about the chain's history and the accounts we touch."""
    rpc = Dispatcher(node)
    head = int(rpc.dispatch("eth_blockNumber"), 16)
    blocks = [rpc.dispatch("eth_getBlockByNumber", [hex(number), True]) for number in range(head + 1)]
    receipts = [
        rpc.dispatch("eth_getTransactionReceipt", [tx["hash"]]) for block in blocks for tx in block["transactions"]
    ]
    accounts = {
        address: (rpc.dispatch("eth_getBalance", [address]), rpc.dispatch("eth_getTransactionCount", [address]))
        for address in (RECIPIENT, FUNDED, Account.from_key(dev_private_keys(1)[0]).address)
    }
    return {"blocks": blocks, "receipts": receipts, "accounts": accounts}


def token_balance(node: EmbeddedNode, token: bytes, holder: str) -> int:
    data = "0x70a08231" + "00" * 12 + holder[2:]
    return int(Dispatcher(node).dispatch("eth_call", [{"to": "0x" + token.hex(), "data": data}]), 16)


def test_snapshot_plus_journal_tail_replays_to_identical_state(
    chain_dir: Path, tmp_path: Path, token_artifact: Any
) -> None:
    chain_dir, printed = write_then_crash(chain_dir, tmp_path, token_artifact.bytecode, count=20, snapshot_every=7)
    assert len(printed) == 21

    # Opening after the crash loads the last snapshot and replays the journal tail.
    with open_node(chain_dir) as replayed:
        for tx_hash, block_hash in printed:
            record = replayed.engine.txs[bytes.fromhex(tx_hash)]
            assert record.status == 1
            assert replayed.engine.blocks[record.block_number].hash.hex() == block_hash
        after_replay = chain_view(replayed)
        assert replayed.engine.time_offset_s == 7
    # Closing wrote a snapshot; opening again replays nothing and must read the same chain.
    with open_node(chain_dir) as reloaded:
        assert chain_view(reloaded) == after_replay
        token = reloaded.engine.txs[bytes.fromhex(printed[0][0])].contract_address
        assert token is not None and token_balance(reloaded, token, RECIPIENT) == 10
    balance, _ = after_replay["accounts"][RECIPIENT]
    assert int(balance, 16) == 10 and after_replay["accounts"][FUNDED] == (hex(123), "0x0")


def test_sigkill_loses_no_confirmed_transaction(chain_dir: Path, token_artifact: Any) -> None:
    """A writer process prints each hash once durable and is killed mid-stream; nothing printed is lost."""
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(chain_dir), token_artifact.bytecode],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout is not None
    confirmed: list[str] = []
    try:
        for line in writer.stdout:
            confirmed.append(line.split()[0])
            if len(confirmed) == 5:
                # While the writer runs, this process cannot open its chain.
                with pytest.raises(ChainBusyError, match=f"already open in process {writer.pid}"):
                    open_node(chain_dir)
            if len(confirmed) >= 60:
                break
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(timeout=30)
    assert len(confirmed) >= 60, writer.stderr.read() if writer.stderr else ""

    with open_node(chain_dir) as node:
        records = [node.engine.txs.get(bytes.fromhex(tx_hash)) for tx_hash in confirmed]
        assert all(record is not None and record.status == 1 for record in records)
        sender = bytes.fromhex(Account.from_key(dev_private_keys(1)[0]).address[2:])
        mined_transfers = node.engine.nonce(sender) - 1  # the first transaction deployed the token
        assert mined_transfers >= len(confirmed) - 1
        assert node.engine.balance(bytes.fromhex(RECIPIENT[2:])) == (mined_transfers + 1) // 2
        token = records[0].contract_address  # type: ignore[union-attr]
        assert token is not None and token_balance(node, token, RECIPIENT) == mined_transfers // 2


def test_torn_journal_tail_is_ignored_and_cut_off(
    chain_dir: Path, tmp_path: Path, token_artifact: Any, dev_accounts: list[LocalAccount]
) -> None:
    chain_dir, printed = write_then_crash(chain_dir, tmp_path, token_artifact.bytecode, count=4, snapshot_every=1000)
    (segment,) = sorted((chain_dir / "journal").glob("*.log"))
    # A crash in the middle of writing the last record leaves part of it behind.
    segment.write_bytes(segment.read_bytes()[:-9])

    with open_node(chain_dir) as node:
        last_hash = bytes.fromhex(printed[-1][0])
        assert last_hash not in node.engine.txs
        assert all(bytes.fromhex(tx_hash) in node.engine.txs for tx_hash, _ in printed[:-1])
        sender = dev_accounts[0]
        nonce = node.engine.nonce(bytes.fromhex(sender.address[2:]))
        assert nonce == len(printed) - 1
        # New writes land after the cut, not after the garbage.
        replacement = sender.sign_transaction(
            {
                "chainId": 31337,
                "nonce": nonce,
                "to": RECIPIENT,
                "value": 5,
                "gas": 21_000,
                "maxFeePerGas": 3 * GWEI,
                "maxPriorityFeePerGas": GWEI,
            }
        )
        new_hash = node.send_raw_transaction(replacement.raw_transaction)
    with open_node(chain_dir) as reopened:
        assert new_hash in reopened.engine.txs
        assert reopened.engine.nonce(bytes.fromhex(sender.address[2:])) == nonce + 1


def test_garbage_after_the_last_record_is_ignored(chain_dir: Path, tmp_path: Path, token_artifact: Any) -> None:
    chain_dir, printed = write_then_crash(chain_dir, tmp_path, token_artifact.bytecode, count=2, snapshot_every=1000)
    (segment,) = sorted((chain_dir / "journal").glob("*.log"))
    with segment.open("ab") as handle:
        handle.write(b"\x10\x00\x00\x00garbage")
    with open_node(chain_dir) as node:
        assert all(bytes.fromhex(tx_hash) in node.engine.txs for tx_hash, _ in printed)


def test_rejected_transactions_are_not_journaled(chain_dir: Path, dev_accounts: list[LocalAccount]) -> None:
    sender = dev_accounts[0]
    with open_node(chain_dir) as node:
        (segment,) = sorted((chain_dir / "journal").glob("*.log"))
        size_before = segment.stat().st_size
        stale = sender.sign_transaction(
            {"chainId": 31337, "nonce": 3, "to": RECIPIENT, "value": 1, "gas": 21_000, "gasPrice": 2 * GWEI}
        )
        with pytest.raises(Exception, match="nonce too high"):
            node.send_raw_transaction(stale.raw_transaction)
        assert segment.stat().st_size == size_before


def test_second_opener_gets_chain_busy_error(chain_dir: Path) -> None:
    """The cross-process case is in the SIGKILL test, which holds the chain in another process."""
    with open_node(chain_dir), pytest.raises(ChainBusyError, match="already open in this process"):
        open_node(chain_dir)
    # Released on close.
    with open_node(chain_dir) as again:
        assert again.engine.head.number == 0


def test_clean_close_keeps_state_clock_and_drops_old_segments(
    chain_dir: Path, dev_accounts: list[LocalAccount]
) -> None:
    sender = dev_accounts[1]
    with open_node(chain_dir, snapshot_every=3) as node:
        for nonce in range(10):
            signed = sender.sign_transaction(
                {"chainId": 31337, "nonce": nonce, "to": RECIPIENT, "value": 2, "gas": 21_000, "gasPrice": 2 * GWEI}
            )
            node.send_raw_transaction(signed.raw_transaction)
        node.increase_time(500)
        head = node.engine.head
    assert len(list((chain_dir / "journal").glob("*.log"))) == 1
    with open_node(chain_dir) as node:
        assert node.engine.head == head
        assert node.engine.time_offset_s == 500
        assert node.engine.balance(bytes.fromhex(RECIPIENT[2:])) == 20
        assert node.engine.balance(bytes.fromhex(sender.address[2:])) < DEV_BALANCE_WEI - 20
