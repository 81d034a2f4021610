"""Gateway benchmark: requests/s and p50/p99 latency at 1 and 16 concurrent clients for free, strict-paid and
batched-paid inference in the same run (as ratios to free), gas per settled payment (strict against batched),
and a money audit: the on-chain transfers must equal exactly the paid requests served.

The gateway runs as `covey gateway serve` in its own process, generating in process (`--local-price`), so the
numbers are the API and payment path, not a host hop; each request asks for one token. The chain is a private
anvil node (BENCH_GATEWAY_CHAIN=anvil, the default when node_modules has it), standing in for a real chain
whose execution costs the gateway nothing; BENCH_GATEWAY_CHAIN=embedded puts the embedded chain inside the
gateway's process instead, where every settled transfer's EVM execution competes with serving for the CPU.

The three gateways run side by side and each level is measured in rounds that take the modes in turn,
each round starting once every gateway is idle (batched settlement has flushed its journal), so a shared
machine's changing load falls on all modes alike. Payments are signed before a round starts (the `exact`
scheme's payload, as the official client builds it), so the load generator's CPU goes to HTTP, not to
signing. Writes bench/results/gateway.json. Knobs: BENCH_GATEWAY_REQUESTS_1 (default 60),
BENCH_GATEWAY_REQUESTS_16 (default 320), BENCH_GATEWAY_ROUNDS (default 2), BENCH_GATEWAY_CHAIN.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from eth_account import Account
from eth_account.signers.local import LocalAccount
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
# Run as `python bench/gateway.py`: this checkout's covey, and the tests' x402 client under tests/.
sys.path.insert(0, str(REPO))

from covey.chain import Chain, dev_accounts  # noqa: E402
from covey.chain.arena_deploy import deploy_arena  # noqa: E402
from covey.chain.deploy import deploy_suite  # noqa: E402
from covey.demo.language_model import publish_language_model  # noqa: E402
from covey.gateway.models import model_id_for_task  # noqa: E402
from covey.gateway.x402.batcher_deploy import deploy_batcher  # noqa: E402
from covey.gateway.x402.encoding import decode_payment_required, encode_header  # noqa: E402
from covey.storage import LocalStore  # noqa: E402
from tests.x402_scaffolding.client import ExactEvmClient  # noqa: E402

RESULTS = REPO / "bench" / "results" / "gateway.json"
ANVIL = REPO / "node_modules" / ".bin" / "anvil"
CHAIN = os.environ.get("BENCH_GATEWAY_CHAIN", "anvil" if ANVIL.exists() else "embedded")
REQUESTS = {
    1: int(os.environ.get("BENCH_GATEWAY_REQUESTS_1", "60")),
    16: int(os.environ.get("BENCH_GATEWAY_REQUESTS_16", "320")),
}
ROUNDS = int(os.environ.get("BENCH_GATEWAY_ROUNDS", "2"))
WARMUP = 5
MODES = ("free", "strict", "batched")
LOCAL_PRICE_USD = "0.02"
PAYERS = 16
console = Console()


@dataclass
class Setup:
    home: Path
    rpc_url: str | None
    arena: str
    model_id: str
    usd: str
    batcher: str
    payers: list[LocalAccount]


@dataclass
class Level:
    clients: int
    requests: int
    ok: int
    seconds: float
    latencies_s: list[float]

    def merge(self, other: Level) -> Level:
        """This level and `other` (another round at the same concurrency) as one."""
        return Level(
            self.clients,
            self.requests + other.requests,
            self.ok + other.ok,
            self.seconds + other.seconds,
            self.latencies_s + other.latencies_s,
        )

    @property
    def rps(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def percentile(self, share: float) -> float:
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000 if ordered else 0.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def connect(home: Path, rpc_url: str | None) -> Chain:
    return Chain.from_rpc(rpc_url) if rpc_url else Chain.embedded(home / "chain")


def start_anvil() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [str(ANVIL), "--port", str(port), "--host", "127.0.0.1", "--silent", "--max-persisted-states", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}, timeout=2)
            return proc, url
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def prepare(home: Path, rpc_url: str | None) -> Setup:
    """Deploy the suite and an Arena, finalise a small language model, fund payers; close the chain."""
    cache = REPO / ".pytest_cache" / "covey-contracts"
    if cache.exists():  # compiled contracts from the test runs: no need to compile again
        (home / "cache").mkdir(parents=True, exist_ok=True)
        os.symlink(cache, home / "cache" / "contracts")
    owner = dev_accounts(1)[0]
    with connect(home, rpc_url) as chain:
        deployment = deploy_suite(chain, owner)
        # The suite deploys the Arena and a PaymentBatcher; a checkout without them deploys them here.
        arena = chain.contract("Arena", deployment.contracts.get("Arena") or deploy_arena(chain, deployment, owner))
        store = LocalStore(home / "artifacts")
        task_id = publish_language_model(chain, deployment, arena.address, store, home, steps=20)
        usd = deployment.contract(chain, "USDToken")
        payers = [Account.create() for _ in range(PAYERS)]
        for payer in payers:
            chain.transact(usd.functions.faucet(payer.address, 1_000 * 10**6), owner)
        batcher = deployment.contracts.get("PaymentBatcher") or deploy_batcher(chain, owner)
        return Setup(home, rpc_url, arena.address, model_id_for_task(task_id), usd.address, batcher, payers)


def start_gateway(setup: Setup, mode: str, pay_to: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    """`covey gateway serve` for `mode` in its own process, holding the embedded chain."""
    args = [
        "serve",
        "--port",
        str(port),
        "--settlement",
        mode,
        "--local-price",
        LOCAL_PRICE_USD,
        "--from",
        "dev3",
        "--arena",
        setup.arena,
        "--pay-to",
        pay_to,
        "--spot-check-rate",
        "0",
    ]
    if mode == "batched":
        args += ["--batcher", setup.batcher, "--journal", str(setup.home / f"journal-{port}")]
    code = f"from covey.cli.gateway_cmd import app; app({args!r})"
    env = {**os.environ, "COVEY_HOME": str(setup.home)}
    if setup.rpc_url:
        env["COVEY_RPC_URL"] = setup.rpc_url
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the {mode} gateway exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the {mode} gateway did not start: {log.read_text()[-2000:]}")
        time.sleep(0.2)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT, as Ctrl-C: uvicorn runs the lifespan shutdown (batched settlement drains its journal)."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def request_body(model_id: str) -> bytes:
    return json.dumps({"model": model_id, "prompt": "ROMEO:", "max_tokens": 1, "temperature": 0}).encode()


def signed_headers(url: str, body: bytes, payers: list[LocalAccount], count: int) -> list[dict[str, str]]:
    """`count` payments for `/v1/completions`, signed from the requirements the gateway asks for."""
    reply = httpx.post(f"{url}/v1/completions", content=body, headers={"Content-Type": "application/json"}, timeout=30)
    requirements = decode_payment_required(reply.headers["PAYMENT-REQUIRED"]).accepts[0]
    clients = [ExactEvmClient(payer) for payer in payers]
    return [
        {
            "Content-Type": "application/json",
            "PAYMENT-SIGNATURE": encode_header(clients[i % len(clients)].pay(requirements)),
        }
        for i in range(count)
    ]


async def load(url: str, body: bytes, headers: list[dict[str, str]], clients: int) -> Level:
    """Send one request per entry of `headers` from `clients` concurrent connections."""
    queue: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    for entry in headers:
        queue.put_nowait(entry)
    latencies: list[float] = []
    ok = 0

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal ok
        while True:
            try:
                entry = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            started = time.perf_counter()
            reply = await http.post(f"{url}/v1/completions", content=body, headers=entry)
            latencies.append(time.perf_counter() - started)
            if reply.status_code == 200:
                ok += 1
            else:
                console.print(f"[red]HTTP {reply.status_code}: {reply.text[:200]}")

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        seconds = time.perf_counter() - started
    return Level(clients, len(headers), ok, seconds, latencies)


def wait_idle(url: str, timeout_s: float = 120.0) -> None:
    """Wait until the gateway has no payment waiting for a batch (its settlement work would skew a round)."""
    deadline = time.monotonic() + timeout_s
    while httpx.get(f"{url}/health", timeout=30).json()["settlement"].get("pending", 0):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the gateway at {url} still has payments pending after {timeout_s:.0f}s")
        time.sleep(0.1)


def run_modes(setup: Setup, payees: dict[str, str], logs: Path) -> tuple[dict[str, dict[int, Level]], dict[str, int]]:
    """Warm up every mode's gateway, then load each at 1 and 16 clients in rounds taking the modes in turn.

    Returns each mode's levels (all rounds together) and how many paid requests each served.
    """
    body = request_body(setup.model_id)
    urls: dict[str, str] = {}
    procs = []
    levels: dict[str, dict[int, Level]] = {mode: {} for mode in MODES}
    served = {mode: 0 for mode in MODES}
    try:
        for mode in MODES:
            port = free_port()
            procs.append(start_gateway(setup, mode, payees[mode], port, logs / f"gateway-{mode}.log"))
            urls[mode] = f"http://127.0.0.1:{port}"

        def headers(mode: str, count: int) -> list[dict[str, str]]:
            if mode == "free":
                return [{"Content-Type": "application/json"}] * count
            return signed_headers(urls[mode], body, setup.payers, count)

        for mode in MODES:  # loads the model, opens connections
            served[mode] += asyncio.run(load(urls[mode], body, headers(mode, WARMUP), 1)).ok
        for clients in (1, 16):
            per_round = max(1, REQUESTS[clients] // ROUNDS)
            for _round in range(ROUNDS):
                for mode in MODES:
                    for url in urls.values():  # a batch flushing in another gateway would slow this round
                        wait_idle(url)
                    level = asyncio.run(load(urls[mode], body, headers(mode, per_round), clients))
                    served[mode] += level.ok
                    levels[mode][clients] = levels[mode][clients].merge(level) if clients in levels[mode] else level
    finally:
        for proc in procs:
            stop(proc)
    return levels, {mode: count for mode, count in served.items() if mode != "free"}


def audit(setup: Setup, payees: dict[str, str], served: dict[str, int]) -> dict[str, Any]:
    """Count each mode's transfers on chain and the gas spent settling them."""
    with connect(setup.home, setup.rpc_url) as chain:
        usd = chain.contract("USDToken", setup.usd)
        batcher = chain.contract("PaymentBatcher", setup.batcher)
        transfers = {
            mode: usd.events.Transfer().get_logs(from_block=0, argument_filters={"receiver": payee})
            for mode, payee in payees.items()
        }
        strict_gas = [
            int(chain.w3.eth.get_transaction_receipt(e["transactionHash"])["gasUsed"]) for e in transfers["strict"]
        ]
        batches = batcher.events.BatchSettled().get_logs(from_block=0)
        batch_gas = sum(int(chain.w3.eth.get_transaction_receipt(b["transactionHash"])["gasUsed"]) for b in batches)
        batch_settled = sum(int(b["args"]["settled"]) for b in batches)
    counts = {mode: len(events) for mode, events in transfers.items()}
    return {
        "transfers": counts,
        "served": served,
        "double_charged": sum(max(0, counts[m] - served[m]) for m in payees),
        "unsettled": sum(max(0, served[m] - counts[m]) for m in payees),
        "gas_per_payment": {
            "strict": statistics.mean(strict_gas) if strict_gas else None,
            "batched": batch_gas / batch_settled if batch_settled else None,
            "batches": len(batches),
        },
    }


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="covey-bench-gateway-") as tmp:
        home = Path(tmp)
        os.environ["COVEY_HOME"] = str(home)
        console.print(f"setting up on the {CHAIN} chain: suite, Arena, a finalised language model, funded payers")
        anvil, rpc_url = start_anvil() if CHAIN == "anvil" else (None, None)
        try:
            setup = prepare(home, rpc_url)
            payees = {mode: Account.create().address for mode in MODES}
            console.print(f"running {', '.join(MODES)} side by side, {ROUNDS} rounds per level")
            results, served = run_modes(setup, payees, home)
            money = audit(setup, {mode: payees[mode] for mode in served}, served)
        finally:
            if anvil is not None:
                anvil.terminate()
                anvil.wait(timeout=30)
    report(results, money)


def report(results: dict[str, dict[int, Level]], money: dict[str, Any]) -> None:
    title = f"Gateway: one-token completions on loopback ({CHAIN} chain, {ROUNDS} rounds a level)"
    table = Table(title=title, title_justify="left")
    for column in ("mode", "clients", "requests/s", "p50 ms", "p99 ms", "vs free"):
        table.add_column(column, justify="left" if column == "mode" else "right")
    data: dict[str, Any] = {"chain": CHAIN, "rounds": ROUNDS, "requests": {str(k): v for k, v in REQUESTS.items()}}
    for mode, levels in results.items():
        data[mode] = {}
        for clients, level in levels.items():
            ratio = level.rps / results["free"][clients].rps if results["free"][clients].rps else 0.0
            table.add_row(
                mode,
                str(clients),
                f"{level.rps:.1f}",
                f"{level.percentile(0.5):.1f}",
                f"{level.percentile(0.99):.1f}",
                f"{ratio:.2f}x",
            )
            data[mode][f"clients_{clients}"] = {
                "rps": round(level.rps, 2),
                "p50_ms": round(level.percentile(0.5), 2),
                "p99_ms": round(level.percentile(0.99), 2),
                "ratio_to_free": round(ratio, 3),
                "requests": level.requests,
                "ok": level.ok,
            }
        data[mode]["rps"] = data[mode]["clients_16"]["rps"]  # the headline: 16 concurrent clients
    console.print(table)
    gas = money["gas_per_payment"]
    ratio = gas["batched"] / gas["strict"] if gas["strict"] and gas["batched"] else None
    console.print(
        f"gas per settled payment: strict {gas['strict']:,.0f}, batched {gas['batched']:,.0f} "
        f"({ratio:.2f}x, {gas['batches']} batches)"
        if ratio
        else f"gas per settled payment: {gas}"
    )
    console.print(
        f"money audit: transfers {money['transfers']} for paid requests served {money['served']}; "
        f"double charged {money['double_charged']}, unsettled {money['unsettled']}"
    )
    data["gas_per_payment"] = {**gas, "batched_vs_strict": round(ratio, 3) if ratio else None}
    data["double_charged"] = money["double_charged"]
    data["unsettled"] = money["unsettled"]
    data["transfers"] = money["transfers"]
    data["paid_served"] = money["served"]
    data["transfers_equal_paid_requests"] = money["double_charged"] == 0 and money["unsettled"] == 0
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(data, indent=2) + "\n")
    console.print(f"wrote {RESULTS.relative_to(REPO)}")
    if not data["transfers_equal_paid_requests"]:
        raise SystemExit("the on-chain transfers do not equal the paid requests served")


if __name__ == "__main__":
    main()
