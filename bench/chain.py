"""Chain benchmark: ERC-20 transfers/s and stake operations/s on the embedded chain (in process and served)
and on anvil in the same run, their ratios, and gas per operation. Writes bench/results/chain.json.

Besides wall-clock rates it reports CPU milliseconds per transfer (client and node together), which does
not move with the load of a shared machine, and the embedded chain once more with durability "fsync"
(confirmed once on disk; the default "write" confirms once handed to the OS, which survives SIGKILL) to
show what a per-transaction fsync would cost on this disk. anvil is
measured through `Chain.from_rpc` (covey's keep-alive client) and through web3's stock HTTPProvider."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from rich.console import Console
from rich.table import Table
from web3 import Web3

from covey.chain import Chain, dev_accounts
from covey.chain.deploy import deploy_suite

REPO = Path(__file__).resolve().parent.parent
TRANSFERS = int(os.environ.get("BENCH_TRANSFERS", "1000"))
STAKE_OPS = int(os.environ.get("BENCH_STAKE_OPS", "300"))
RESULTS = REPO / "bench" / "results" / "chain.json"
console = Console()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_rpc(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"node at {url} exited with {proc.returncode}")
        try:
            if Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 2})).is_connected():
                return
        except Exception:  # not up yet
            pass
        time.sleep(0.2)
    raise RuntimeError(f"no node at {url}")


def process_tree_cpu_s(pid: int | None) -> float:
    """CPU seconds used so far by process `pid` and its descendants (0 for None), from /proc."""
    if pid is None:
        return 0.0
    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            for task in Path(f"/proc/{current}/task").iterdir():
                pending.extend(int(child) for child in (task / "children").read_text().split())
        except OSError:
            continue  # exited meanwhile
    return total


def signed_loop(
    chain: Chain, sender: LocalAccount, build: Any, count: int, gas: int, node_pid: int | None = None
) -> tuple[float, float]:
    """Send `count` pre-signed transactions built by `build(i)`; return (transactions/s, CPU ms per transaction).

    The client sets nonce, gas and fees itself (as a production sender does), reads every receipt. CPU is
    this process's plus that of the node process `node_pid` (and its children) if the node runs apart.
    """
    w3 = chain.w3
    nonce = w3.eth.get_transaction_count(sender.address, "pending")
    base_fee = int(w3.eth.get_block("latest").get("baseFeePerGas", 0) or 0)
    fees = {"maxFeePerGas": 4 * base_fee + 10**9, "maxPriorityFeePerGas": 10**9}
    started, cpu_started, node_started = time.perf_counter(), time.process_time(), process_tree_cpu_s(node_pid)
    for i in range(count):
        tx = {**build(i), "nonce": nonce + i, "gas": gas, "chainId": chain.chain_id, "type": 2, **fees}
        tx_hash = w3.eth.send_raw_transaction(sender.sign_transaction(tx).raw_transaction)
        receipt = w3.eth.wait_for_transaction_receipt(tx_hash, poll_latency=0.01)
        if receipt["status"] != 1:
            raise RuntimeError(f"benchmark transaction {i} reverted")
    elapsed = time.perf_counter() - started
    cpu_s = time.process_time() - cpu_started + process_tree_cpu_s(node_pid) - node_started
    return count / elapsed, 1000 * cpu_s / count


def measure(chain: Chain, label: str, node_pid: int | None = None) -> dict[str, float]:
    """Transfers/s and stake operations/s on one chain, with a freshly deployed suite."""
    owner, receiver = dev_accounts(2)
    suite = deploy_suite(chain, owner)
    token = suite.contract(chain, "CoveyToken")
    staking = suite.contract(chain, "Staking")
    to = receiver.address

    # Build call data once: what a busy client does (the ABI encoding is not the chain's cost).
    unsigned = {"from": owner.address, "gas": 300_000, "nonce": 0, "maxFeePerGas": 0, "maxPriorityFeePerGas": 0}
    transfer_tx = token.functions.transfer(to, 1).build_transaction(unsigned)
    chain.transact(token.functions.approve(staking.address, 2**255), owner)
    stake_tx = staking.functions.stake(1, 10**18).build_transaction(unsigned)
    strip = ("nonce", "gas", "maxFeePerGas", "maxPriorityFeePerGas", "chainId", "type", "from")
    transfer_base = {k: v for k, v in transfer_tx.items() if k not in strip}
    stake_base = {k: v for k, v in stake_tx.items() if k not in strip}
    with console.status(f"{label}: {TRANSFERS} transfers"):
        transfers_per_s, cpu_ms = signed_loop(chain, owner, lambda i: transfer_base, TRANSFERS, 100_000, node_pid)
    with console.status(f"{label}: {STAKE_OPS} stake operations"):
        stake_per_s, _ = signed_loop(chain, owner, lambda i: stake_base, STAKE_OPS, 300_000, node_pid)
    return {
        "transfers_per_s": round(transfers_per_s, 1),
        "stake_ops_per_s": round(stake_per_s, 1),
        "cpu_ms_per_transfer": round(cpu_ms, 2),
    }


def gas_table(chain: Chain) -> dict[str, int]:
    """Gas used by each user-facing token-economy operation, measured on a fresh suite."""
    from eth_account import Account

    owner, operator, delegator, module = dev_accounts(4)
    suite = deploy_suite(chain, owner, unbonding_delay_s=60, commission_delay_s=0)
    cov, usd = suite.contract(chain, "CoveyToken"), suite.contract(chain, "USDToken")
    staking, treasury = suite.contract(chain, "Staking"), suite.contract(chain, "Treasury")
    gas: dict[str, int] = {}

    def record(name: str, fn: Any, sender: LocalAccount) -> None:
        gas[name] = int(chain.transact(fn, sender)["gasUsed"])

    unit = 10**18
    record("cov.transfer", cov.functions.transfer(operator.address, 10_000 * unit), owner)
    chain.transact(cov.functions.transfer(delegator.address, 10_000 * unit), owner)
    chain.transact(cov.functions.transfer(module.address, 10_000 * unit), owner)
    record("cov.approve", cov.functions.approve(staking.address, 2**255), operator)
    chain.transact(cov.functions.approve(staking.address, 2**255), delegator)
    chain.transact(cov.functions.approve(staking.address, 2**255), module)
    record("staking.stake (first)", staking.functions.stake(1, 1_000 * unit), operator)
    record("staking.stake (top-up)", staking.functions.stake(1, 100 * unit), operator)
    record("staking.setCommission", staking.functions.setCommission(1_000), operator)
    record("staking.delegate", staking.functions.delegate(operator.address, 1, 500 * unit), delegator)
    record("staking.unbond", staking.functions.unbond(1, 100 * unit), operator)
    record("staking.undelegate", staking.functions.undelegate(operator.address, 1, 50 * unit), delegator)
    chain.transact(staking.functions.setModule(module.address, True), owner)
    record("staking.slash", staking.functions.slash(operator.address, 1, 10 * unit, "bench"), module)
    record("staking.distributeReward", staking.functions.distributeReward(operator.address, 1, 100 * unit), module)
    record("staking.claimRewards", staking.functions.claimRewards(operator.address, 1), delegator)
    chain.increase_time(61)
    record("staking.withdraw", staking.functions.withdraw(), operator)
    chain.increase_time(int(treasury.functions.epochLength().call()))
    record("treasury.mintEmission", treasury.functions.mintEmission(), owner)
    record("usd.faucet", usd.functions.faucet(delegator.address, 1_000 * 10**6), owner)
    payer = Account.from_key(delegator.key)
    record("usd.transferWithAuthorization", _authorized_transfer(chain, usd, payer, operator.address), module)
    return gas


def _authorized_transfer(chain: Chain, usd: Any, payer: LocalAccount, to: str) -> Any:
    """An EIP-3009 transfer signed by `payer`, ready to submit by anyone."""
    now = chain.timestamp()
    message = {
        "from": payer.address,
        "to": to,
        "value": 10**6,
        "validAfter": 0,
        "validBefore": now + 3600,
        "nonce": os.urandom(32),
    }
    typed = {
        "types": {
            "EIP712Domain": [
                {"name": n, "type": t}
                for n, t in (
                    ("name", "string"),
                    ("version", "string"),
                    ("chainId", "uint256"),
                    ("verifyingContract", "address"),
                )
            ],
            "TransferWithAuthorization": [
                {"name": n, "type": t}
                for n, t in (
                    ("from", "address"),
                    ("to", "address"),
                    ("value", "uint256"),
                    ("validAfter", "uint256"),
                    ("validBefore", "uint256"),
                    ("nonce", "bytes32"),
                )
            ],
        },
        "primaryType": "TransferWithAuthorization",
        "domain": {
            "name": usd.functions.name().call(),
            "version": usd.functions.version().call(),
            "chainId": chain.chain_id,
            "verifyingContract": usd.address,
        },
        "message": message,
    }
    signed = payer.sign_typed_data(full_message=typed)
    return usd.functions.transferWithAuthorization(
        payer.address,
        to,
        message["value"],
        0,
        message["validBefore"],
        message["nonce"],
        signed.v,
        signed.r.to_bytes(32, "big"),
        signed.s.to_bytes(32, "big"),
    )


def main() -> dict[str, Any]:
    results: dict[str, Any] = {"transfers": TRANSFERS, "stake_ops": STAKE_OPS}
    with tempfile.TemporaryDirectory() as home:
        os.environ["COVEY_HOME"] = home
        os.environ.pop("COVEY_RPC_URL", None)
        with Chain.embedded(Path(home) / "chain") as chain:
            results["embedded"] = measure(chain, "embedded (in process)")
            results["gas"] = gas_table(chain)
    with tempfile.TemporaryDirectory() as home, Chain.embedded(Path(home) / "chain", durability="fsync") as chain:
        results["embedded_fsync"] = measure(chain, "embedded (in process, durability=fsync)")

    with tempfile.TemporaryDirectory() as home:
        port = free_port()
        env = {**os.environ, "COVEY_HOME": home}
        proc = subprocess.Popen(
            [sys.executable, "-m", "covey.cli", "chain", "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_rpc(url, proc)
            results["served"] = measure(Chain.from_rpc(url), "embedded (served over JSON-RPC)", proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=30)

    anvil = REPO / "node_modules" / ".bin" / "anvil"
    port = free_port()
    proc = subprocess.Popen(
        [str(anvil), "--port", str(port), "--silent", "--max-persisted-states", "0"], stdout=subprocess.DEVNULL
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_rpc(url, proc)
        results["anvil"] = measure(Chain.from_rpc(url), "anvil", proc.pid)
        # The same node through web3's stock HTTPProvider (requests), as a plain web3.py user sees it.
        stock = Web3.HTTPProvider(url, request_kwargs={"timeout": 60})
        stock.cache_allowed_requests = True
        results["anvil_stock_web3"] = measure(Chain(Web3(stock), "rpc"), "anvil (stock web3 HTTPProvider)", proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    anvil_tps = results["anvil"]["transfers_per_s"]
    results["load_average_1m"] = round(os.getloadavg()[0], 2)
    results["ratios"] = {
        "embedded_vs_anvil": round(results["embedded"]["transfers_per_s"] / anvil_tps, 2),
        "embedded_fsync_vs_anvil": round(results["embedded_fsync"]["transfers_per_s"] / anvil_tps, 2),
        "served_vs_anvil": round(results["served"]["transfers_per_s"] / anvil_tps, 2),
        "embedded_vs_anvil_stock_web3": round(
            results["embedded"]["transfers_per_s"] / results["anvil_stock_web3"]["transfers_per_s"], 2
        ),
    }
    results["goals"] = {
        "embedded_at_least_400_tps": results["embedded"]["transfers_per_s"] >= 400,
        "embedded_at_least_3x_anvil": results["ratios"]["embedded_vs_anvil"] >= 3,
        "served_at_least_200_tps": results["served"]["transfers_per_s"] >= 200,
    }

    table = Table(title=f"Chain throughput ({TRANSFERS} ERC-20 transfers, {STAKE_OPS} stakes, receipts read)")
    for column in ("backend", "transfers/s", "stake ops/s", "vs anvil", "CPU ms/transfer"):
        table.add_column(column, justify="right" if column != "backend" else "left")
    for backend in ("embedded", "embedded_fsync", "served", "anvil", "anvil_stock_web3"):
        row = results[backend]
        ratio = row["transfers_per_s"] / anvil_tps
        table.add_row(
            backend,
            f"{row['transfers_per_s']:.0f}",
            f"{row['stake_ops_per_s']:.0f}",
            f"{ratio:.2f}x",
            f"{row['cpu_ms_per_transfer']:.2f}",
        )
    console.print(table)
    console.print(f"machine load (1 min average): {results['load_average_1m']} on {os.cpu_count()} CPUs")
    gas = Table(title="Gas per operation (embedded chain)")
    gas.add_column("operation")
    gas.add_column("gas", justify="right")
    for name, used in results["gas"].items():
        gas.add_row(name, f"{used:,}")
    console.print(gas)
    for goal, met in results["goals"].items():
        console.print(f"goal {goal}: {'met' if met else 'MISSED'}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    console.print(f"wrote {RESULTS.relative_to(REPO)}")
    return results


if __name__ == "__main__":
    main()
