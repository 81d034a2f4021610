"""Embedded chain throughput: signed ERC-20 transfers per second in process and over HTTP, plus how long a
restart takes (journal replay of N transactions, snapshot load). Prints a table and writes
bench/results/embedded_throughput.json.

Each transfer is what a client does: sign (nonce, gas and fees set by the client), eth_sendRawTransaction,
then eth_getTransactionReceipt, all through web3.py; over HTTP the chain is served by a separate process.
Besides wall-clock rates it reports transfers per CPU-second (client and server together), which is what
an otherwise idle machine would reach. Run: `.venv/bin/python bench/embedded_throughput.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import vyper
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.contract import Contract

from covey.chain._embedded import dev_private_keys, embedded_web3, open_node, running_server_url

RESULTS = Path(__file__).resolve().parent / "results" / "embedded_throughput.json"
GWEI = 10**9
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

@external
def transfer(receiver: address, amount: uint256) -> bool:
    self.balanceOf[msg.sender] -= amount
    self.balanceOf[receiver] += amount
    log Transfer(sender=msg.sender, receiver=receiver, amount=amount)
    return True
"""


def deploy_token(w3: Web3, owner: LocalAccount) -> Contract:
    """Compile and deploy the tiny token; the owner holds the whole supply."""
    compiled = vyper.compile_code(TOKEN_SOURCE, output_formats=["abi", "bytecode"])
    factory = w3.eth.contract(abi=compiled["abi"], bytecode=compiled["bytecode"])
    tx = factory.constructor(10**30).build_transaction(
        {"from": owner.address, "nonce": w3.eth.get_transaction_count(owner.address), "gas": 1_000_000}
    )
    receipt = w3.eth.get_transaction_receipt(w3.eth.send_raw_transaction(owner.sign_transaction(tx).raw_transaction))
    return cast(Contract, w3.eth.contract(address=receipt["contractAddress"], abi=compiled["abi"]))


@dataclass(frozen=True)
class Rate:
    """Transfers per wall-clock second, and per CPU second (what an idle machine would reach)."""

    wall: float
    cpu: float


def server_cpu_s(pid: int | None) -> float:
    """CPU seconds used so far by process `pid` (0 for None), from /proc."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def transfers_per_second(
    w3: Web3, token: Contract, sender: LocalAccount, count: int, server_pid: int | None = None
) -> Rate:
    """Sign, send and read the receipt of `count` transfers in a row, one after the other."""
    receiver = Account.create().address
    data = token.encode_abi("transfer", [receiver, 1])
    nonce = w3.eth.get_transaction_count(sender.address)
    fields = {"chainId": 31337, "to": token.address, "data": data, "value": 0, "gas": 80_000}
    fees = {"maxFeePerGas": 3 * GWEI, "maxPriorityFeePerGas": GWEI}
    started, cpu_started, server_started = time.perf_counter(), time.process_time(), server_cpu_s(server_pid)
    for offset in range(count):
        signed = sender.sign_transaction({**fields, **fees, "nonce": nonce + offset})
        receipt = w3.eth.get_transaction_receipt(w3.eth.send_raw_transaction(signed.raw_transaction))
        if receipt["status"] != 1:
            raise RuntimeError(f"transfer {offset} failed: {receipt}")
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started + server_cpu_s(server_pid) - server_started
    if token.functions.balanceOf(receiver).call() != count:
        raise RuntimeError("the receiver's balance does not match the transfers sent")
    return Rate(count / elapsed, count / cpu)


@contextmanager
def served_chain(data_dir: Path) -> Iterator[tuple[str, int]]:
    """`covey chain serve` in miniature: a separate process serving the chain in `data_dir`."""
    script = (
        "import sys\nfrom pathlib import Path\nfrom covey.chain._embedded import open_node, serve_rpc\n"
        "node = open_node(Path(sys.argv[1]))\ntry:\n    serve_rpc(node, port=0)\nfinally:\n    node.close()\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script, str(data_dir)])
    try:
        deadline = time.monotonic() + 60
        url = running_server_url(data_dir)
        while url is None:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the chain server did not start")
            time.sleep(0.05)
            url = running_server_url(data_dir)
        yield url, process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def restart_times(work_dir: Path, journaled: int) -> dict[str, float]:
    """Seconds to open a chain that must replay `journaled` transfers, and then one that loads a snapshot."""
    source_dir = work_dir / "replay-source"
    owner = Account.from_key(dev_private_keys(1)[0])
    with open_node(source_dir, snapshot_every=journaled + 10) as node:
        w3 = embedded_web3(node)
        token = deploy_token(w3, owner)
        data = bytes.fromhex(token.encode_abi("transfer", [Account.create().address, 1])[2:])
        nonce = w3.eth.get_transaction_count(owner.address)
        for offset in range(journaled):
            tx = {"chainId": 31337, "nonce": nonce + offset, "to": token.address, "data": data, "gas": 80_000}
            signed = owner.sign_transaction({**tx, "maxFeePerGas": 3 * GWEI, "maxPriorityFeePerGas": GWEI})
            node.send_raw_transaction(signed.raw_transaction)
        # Every journal record is fsynced and the snapshot is written atomically, so a copy taken now is
        # exactly what a crash would leave behind: the genesis snapshot plus a journal of `journaled` entries.
        crashed_dir = work_dir / "crashed"
        shutil.copytree(source_dir, crashed_dir, ignore=shutil.ignore_patterns("LOCK"))
    started = time.perf_counter()
    replayed = open_node(crashed_dir)
    replay_s = time.perf_counter() - started
    replayed.close()  # writes a snapshot
    started = time.perf_counter()
    reloaded = open_node(crashed_dir)
    snapshot_load_s = time.perf_counter() - started
    blocks = reloaded.engine.head.number
    reloaded.close()
    if blocks != journaled + 1:
        raise RuntimeError(f"expected {journaled + 1} blocks after replay, found {blocks}")
    return {"replay_s": replay_s, "snapshot_load_s": snapshot_load_s}


def run(transfers: int, journaled: int) -> dict[str, Any]:
    """Measure everything; returns the numbers."""
    owner = Account.from_key(dev_private_keys(1)[0])
    with tempfile.TemporaryDirectory() as temporary:
        work_dir = Path(temporary)
        with open_node(work_dir / "in-process") as node:
            w3 = embedded_web3(node)
            in_process = transfers_per_second(w3, deploy_token(w3, owner), owner, transfers)
        # The same without fsync, to tell the disk's share (fsync latency) from the CPU's.
        with open_node(work_dir / "in-process-no-fsync", durability="none") as node:
            w3 = embedded_web3(node)
            unsynced = transfers_per_second(w3, deploy_token(w3, owner), owner, transfers)
        with served_chain(work_dir / "served") as (url, server_pid):
            remote = Web3(Web3.HTTPProvider(url))
            served = transfers_per_second(remote, deploy_token(remote, owner), owner, transfers, server_pid)
        restart = restart_times(work_dir, journaled)
    return {
        "transfers": transfers,
        "in_process_tx_per_s": round(in_process.wall, 1),
        "in_process_tx_per_cpu_s": round(in_process.cpu, 1),
        "in_process_no_fsync_tx_per_s": round(unsynced.wall, 1),
        "http_tx_per_s": round(served.wall, 1),
        "http_tx_per_cpu_s": round(served.cpu, 1),
        "journaled_txs": journaled,
        "replay_s": round(restart["replay_s"], 3),
        "snapshot_load_s": round(restart["snapshot_load_s"], 3),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transfers", type=int, default=2000, help="transfers per measurement")
    parser.add_argument("--journaled", type=int, default=2000, help="journaled transfers to replay on restart")
    parser.add_argument("--json", type=Path, default=RESULTS, help="where to write the results")
    args = parser.parse_args()
    numbers = run(args.transfers, args.journaled)
    rows = [
        (
            "in process (web3 EmbeddedProvider)",
            f"{numbers['in_process_tx_per_s']} tx/s  ({numbers['in_process_tx_per_cpu_s']} per CPU-second)",
        ),
        ("in process, journal not fsynced", f"{numbers['in_process_no_fsync_tx_per_s']} tx/s"),
        (
            "over HTTP (web3 HTTPProvider, 1 client)",
            f"{numbers['http_tx_per_s']} tx/s  ({numbers['http_tx_per_cpu_s']} per CPU-second, client + server)",
        ),
        (f"restart replaying {numbers['journaled_txs']} journaled txs", f"{numbers['replay_s']} s"),
        ("restart from a snapshot", f"{numbers['snapshot_load_s']} s"),
        ("machine load (1 min average) / CPUs", f"{numbers['load_average_1m']} / {numbers['cpus']}"),
    ]
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(numbers, indent=2) + "\n")


if __name__ == "__main__":
    main()
