"""The embedded chain's JSON-RPC server against an attacker: every finding of issue 15 (chain part), reproduced.

In-process servers (`start_server_thread`) for protocol behaviour; `covey chain serve` as a subprocess for
what only a process shows: surviving a body nested 100,000 deep, other clients' latency while a maximal
call runs, and stopping within 2 s of SIGTERM with the state intact.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import rlp
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import function_signature_to_4byte_selector, keccak, to_checksum_address

from covey.chain._embedded import EmbeddedNode, ServerHandle, dev_private_keys, open_node, start_server_thread
from covey.chain._embedded.limits import RpcLimits
from covey.chain._embedded.rpc import Dispatcher, RpcError
from covey.errors import ChainError
from tests.chain.conftest import compile_vyper
from tests.support import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
DEAD = "0x000000000000000000000000000000000000dEaD"
GWEI = 10**9
NESTED_100K = b"[" * 100_000 + b"]" * 100_000  # ~195 KB: killed the server with SIGSEGV before

SPIN_SOURCE = """
# pragma version ~=0.4.3
@external
@view
def spin(rounds: uint256) -> uint256:
    x: uint256 = 0
    for i: uint256 in range(rounds, bound=max_value(uint256)):
        x = unsafe_add(x, i)
    return x

@external
def burn(rounds: uint256) -> uint256:
    x: uint256 = 0
    for i: uint256 in range(rounds, bound=max_value(uint256)):
        x = unsafe_add(x, i)
    return x
"""
SPIN_SELECTOR_INPUT = 2**255  # rounds: no gas cap or timeout lets the loop finish


# -- helpers -------------------------------------------------------------------------------------


class Client:
    """One keep-alive HTTP connection speaking raw JSON-RPC, timing each answer."""

    def __init__(self, url: str, timeout_s: float = 30) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.connection = http.client.HTTPConnection(host, int(port), timeout=timeout_s)

    def post(self, body: bytes | str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        data = body.encode() if isinstance(body, str) else body
        self.connection.request("POST", "/", data, {"Content-Type": "application/json", **(headers or {})})
        response = self.connection.getresponse()
        return response.status, json.loads(response.read())

    def rpc(self, method: str, *params: Any) -> Any:
        status, answer = self.post(json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}))
        assert status == 200, answer
        if "error" in answer:
            raise RpcError(answer["error"]["code"], answer["error"]["message"])
        return answer["result"]

    def close(self) -> None:
        self.connection.close()


def sign(account: LocalAccount, **fields: Any) -> str:
    tx = {"chainId": 31337, "maxFeePerGas": 3 * GWEI, "maxPriorityFeePerGas": GWEI, "value": 0, **fields}
    return str(account.sign_transaction(tx).raw_transaction.to_0x_hex())


def high_s(raw_hex: str) -> str:
    """The same type-2 transaction with the other valid signature (n - s, flipped parity), which EIP-2 forbids."""
    raw = bytes.fromhex(raw_hex[2:])
    fields = rlp.decode(raw[1:])
    fields[9] = b"" if fields[9] == b"\x01" else b"\x01"
    fields[11] = (SECP256K1_N - int.from_bytes(fields[11], "big")).to_bytes(32, "big").lstrip(b"\0")
    return "0x02" + rlp.encode(fields).hex()


def unprotected_legacy(account: LocalAccount, nonce: int) -> str:
    """A legacy transaction signed without a chain id (v = 27/28): valid on every chain."""
    tx = {"nonce": nonce, "to": DEAD, "value": 1, "gas": 21_000, "gasPrice": 2 * GWEI}
    return str(account.sign_transaction(tx).raw_transaction.to_0x_hex())


def nested_rlp(depth: int) -> bytes:
    """An RLP list nested `depth` deep (pyrlp decodes nesting recursively)."""
    item = b"\x80"
    for _ in range(depth):
        size = len(item)
        if size <= 55:
            item = bytes([0xC0 + size]) + item
        else:
            length = size.to_bytes((size.bit_length() + 7) // 8, "big")
            item = bytes([0xF7 + len(length)]) + length + item
    return item


def error_of(answer: Any) -> dict[str, Any]:
    assert isinstance(answer, dict) and answer.get("jsonrpc") == "2.0" and "error" in answer, answer
    return dict(answer["error"])


@pytest.fixture
def server(node: EmbeddedNode) -> Iterator[ServerHandle]:
    handle = start_server_thread(node, announce=False)
    yield handle
    handle.shutdown()


@pytest.fixture
def alice() -> LocalAccount:
    return Account.from_key(dev_private_keys(3)[2])


# -- JSON-RPC correctness ------------------------------------------------------------------------


def malformed_requests(alice: LocalAccount) -> list[tuple[str, bytes, int]]:
    """(what, body, expected error code): each answered with HTTP 200 and a JSON-RPC error object."""

    def call(name: str, *params: Any, **request: Any) -> bytes:
        return json.dumps({"jsonrpc": "2.0", "id": 9, "method": name, "params": list(params), **request}).encode()

    transfer = sign(alice, nonce=0, to=DEAD, value=1, gas=21_000)
    return [
        ("not JSON", b"{not json", -32700),
        ("arrays nested 100,000 deep", NESTED_100K, -32700),
        ("objects nested 100 deep", b'{"a":' * 100 + b"1" + b"}" * 100, -32700),
        ("empty batch", b"[]", -32600),
        ("batch of 1,001", json.dumps([json.loads(call("eth_chainId"))] * 1001).encode(), -32600),
        ("a number", b"5", -32600),
        ('jsonrpc "1.0"', call("eth_chainId", jsonrpc="1.0"), -32600),
        ("no jsonrpc", json.dumps({"id": 1, "method": "eth_chainId"}).encode(), -32600),
        ("an object as id", call("eth_chainId", id={"a": 1}), -32600),
        ("a number as method", call("eth_chainId", method=5), -32600),
        ("params by name", call("eth_chainId", params={"a": 1}), -32602),
        ("eth_getLogs topics: 5", call("eth_getLogs", {"topics": 5}), -32602),
        ("eth_getLogs five topics", call("eth_getLogs", {"topics": [None] * 5}), -32602),
        ("eth_getLogs fromBlock as a list", call("eth_getLogs", {"fromBlock": [1]}), -32602),
        ("eth_newFilter bad block tag", call("eth_newFilter", {"toBlock": "nope"}), -32602),
        ("eth_feeHistory percentiles as a number", call("eth_feeHistory", 1, "latest", 5), -32602),
        ("eth_feeHistory descending percentiles", call("eth_feeHistory", 1, "latest", [50, 10]), -32602),
        ("eth_getStorageAt slot 2**256", call("eth_getStorageAt", DEAD, hex(2**256), "latest"), -32602),
        ("eth_getBalance short address", call("eth_getBalance", "0x12", "latest"), -32602),
        ("eth_call with a number", call("eth_call", 5), -32602),
        ("eth_call value above uint256", call("eth_call", {"to": DEAD, "value": "0x" + "f" * 70}), -32602),
        ("eth_sendRawTransaction not hex", call("eth_sendRawTransaction", "0xzz"), -32602),
        ("eth_sendRawTransaction garbage", call("eth_sendRawTransaction", "0x01"), -32000),
        ("RLP lists nested 5,000 deep", call("eth_sendRawTransaction", "0x" + nested_rlp(5000).hex()), -32000),
        ("high-s signature (EIP-2)", call("eth_sendRawTransaction", high_s(transfer)), -32000),
        ("unprotected legacy transaction", call("eth_sendRawTransaction", unprotected_legacy(alice, 0)), -32000),
        ("evm_increaseTime 2**70 s", call("evm_increaseTime", hex(2**70)), -32602),
        ("anvil_mine a billion blocks", call("anvil_mine", hex(10**9)), -32602),
        ("unknown filter", call("eth_getFilterChanges", 5), -32000),
        ("unknown method", call("eth_nope"), -32601),
    ]


def test_every_malformed_request_gets_an_error_object_on_a_live_connection(
    server: ServerHandle, node: EmbeddedNode, alice: LocalAccount
) -> None:
    client = Client(server.url)
    for what, body, code in malformed_requests(alice):
        status, answer = client.post(body)
        assert status == 200, what
        assert error_of(answer)["code"] == code, (what, answer)
        # The same connection answers the next request: nothing was dropped.
        assert client.rpc("eth_chainId") == "0x7a69", what
    # Neither the high-s nor the unprotected transaction was mined or journaled.
    assert node.engine.head.number == 0
    assert node.engine.nonce(bytes.fromhex(alice.address[2:])) == 0
    high_s_answer = client.post(
        json.dumps(
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "eth_sendRawTransaction",
                "params": [high_s(sign(alice, nonce=0, to=DEAD, gas=21_000))],
            }
        )
    )[1]
    assert "EIP-2" in error_of(high_s_answer)["message"]
    client.close()


def test_a_server_refuses_to_start_with_a_raised_recursion_limit(node: EmbeddedNode) -> None:
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(100_000)
    try:
        with pytest.raises(ChainError, match="recursion limit is 100,000"):
            start_server_thread(node, announce=False)
    finally:
        sys.setrecursionlimit(limit)


def test_http_level_refusals_are_json_rpc_error_objects(server: ServerHandle) -> None:
    host, port = server.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.request("GET", "/")
    response = connection.getresponse()
    assert response.status == 405 and error_of(json.loads(response.read()))["code"] == -32600

    # An oversized body is refused from its Content-Length alone (413, as geth), never read.
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 6000000\r\n\r\n")
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.endswith(b"}"):
            chunk = raw.recv(65536)
            if not chunk:
                break
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413") and error_of(json.loads(body))["code"] == -32600

    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.request("POST", "/", body=iter([b'{"jsonrpc":"2.0"}']), headers={"Transfer-Encoding": "chunked"})
    response = connection.getresponse()
    assert response.status == 411 and error_of(json.loads(response.read()))["code"] == -32600


def test_unprotected_legacy_transactions_only_with_the_flag(node: EmbeddedNode, alice: LocalAccount) -> None:
    refusing = Dispatcher(node)
    with pytest.raises(RpcError, match=r"only replay-protected \(EIP-155\)"):
        refusing.dispatch("eth_sendRawTransaction", [unprotected_legacy(alice, 0)])
    allowing = Dispatcher(node, RpcLimits(allow_unprotected_txs=True))
    tx_hash = allowing.dispatch("eth_sendRawTransaction", [unprotected_legacy(alice, 0)])
    receipt = allowing.dispatch("eth_getTransactionReceipt", [tx_hash])
    assert receipt["status"] == "0x1" and "chainId" not in allowing.dispatch("eth_getTransactionByHash", [tx_hash])
    # The journal holds it: a restart replays it although replay has no flag to pass.
    node.close()
    reopened = open_node(node.data_dir)
    try:
        assert reopened.engine.nonce(bytes.fromhex(alice.address[2:])) == 1
    finally:
        reopened.close()


def test_filters_expire_when_unused_and_are_bounded(node: EmbeddedNode) -> None:
    dispatcher = Dispatcher(node, RpcLimits(filter_ttl_s=0.5, max_filters=4))
    polled = dispatcher.dispatch("eth_newBlockFilter", [])
    idle = [dispatcher.dispatch("eth_newFilter", [{"address": DEAD}]) for _ in range(3)]
    with pytest.raises(RpcError, match="too many filters: 4 are installed"):
        dispatcher.dispatch("eth_newBlockFilter", [])
    for _ in range(4):
        time.sleep(0.2)
        assert dispatcher.dispatch("eth_getFilterChanges", [polled]) == []
    for filter_id in idle:
        with pytest.raises(RpcError, match="filter not found"):
            dispatcher.dispatch("eth_getFilterChanges", [filter_id])
    # The expired ones made room; the polled one lives on.
    assert dispatcher.dispatch("eth_newBlockFilter", [])
    node.mine()
    assert len(dispatcher.dispatch("eth_getFilterChanges", [polled])) == 1


def test_idle_and_half_sent_connections_are_closed(node: EmbeddedNode) -> None:
    handle = start_server_thread(node, announce=False, limits=RpcLimits(idle_timeout_s=0.5))
    try:
        host, port = handle.url.removeprefix("http://").split(":")
        threads_before = threading.active_count()
        half_sent = socket.create_connection((host, int(port)), timeout=10)
        half_sent.sendall(b'POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\n{"jsonrpc"')
        idle = Client(handle.url)
        assert idle.rpc("eth_chainId") == "0x7a69"
        time.sleep(0.1)
        assert threading.active_count() == threads_before + 2
        started = time.monotonic()
        assert half_sent.recv(1024) == b""  # the server hung up on the half-sent request
        assert time.monotonic() - started < 2.0
        idle_socket = idle.connection.sock
        assert idle_socket is not None and idle_socket.recv(1024) == b""  # and on the idle keep-alive one
        time.sleep(0.1)
        assert threading.active_count() == threads_before  # their threads are gone
        half_sent.close()
        idle.close()
    finally:
        handle.shutdown()


def test_connections_past_the_bound_wait_for_a_slot_and_the_backlog_is_128(node: EmbeddedNode) -> None:
    handle = start_server_thread(node, announce=False, limits=RpcLimits(max_connections=3))
    try:
        host, port = handle.url.removeprefix("http://").split(":")
        holders = [Client(handle.url) for _ in range(3)]
        for holder in holders:
            assert holder.rpc("eth_chainId") == "0x7a69"
        threads_with_three = threading.active_count()
        # A fourth connection is left in the listen backlog: its request waits, no thread is spent on it.
        waiting = socket.create_connection((host, int(port)), timeout=0.5)
        body = json.dumps({"jsonrpc": "2.0", "id": 4, "method": "eth_chainId"}).encode()
        waiting.sendall(b"POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        with pytest.raises(TimeoutError):
            waiting.recv(4096)
        assert threading.active_count() == threads_with_three
        # Once a holder leaves, the waiting connection is accepted and answered.
        holders.pop().close()
        waiting.settimeout(5)
        reply = waiting.recv(4096)
        assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b'"result":"0x7a69"}')
        waiting.close()
        for holder in holders:
            holder.close()
        # `ss` shows a listening socket's backlog as its Send-Q.
        listing = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True)
        assert listing.stdout.split()[2] == "128", listing.stdout
    finally:
        handle.shutdown()


# -- covey chain serve, as a process ---------------------------------------------------------------


@dataclass
class Served:
    url: str
    process: subprocess.Popen[bytes]
    home: Path


def start_serve(home: Path, *extra: str, env_extra: dict[str, str] | None = None) -> Served:
    port = free_port()
    env = {**os.environ, "COVEY_HOME": str(home), "PYTHONPATH": str(REPO_ROOT), **(env_extra or {})}
    env.pop("COVEY_RPC_URL", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "covey.cli", "chain", "serve", "--port", str(port), *extra],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        assert time.monotonic() < deadline, "covey chain serve did not come up"
        try:
            if Client(url, timeout_s=2).rpc("eth_chainId") == "0x7a69":
                return Served(url, process, home)
        except OSError:
            time.sleep(0.1)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    running = start_serve(tmp_path / "home")
    yield running
    if running.process.poll() is None:
        running.process.kill()
        running.process.wait(timeout=10)


def deploy_spin(client: Client, deployer: LocalAccount) -> str:
    artifact = compile_vyper(SPIN_SOURCE)
    nonce = int(client.rpc("eth_getTransactionCount", deployer.address, "latest"), 16)
    tx_hash = client.rpc("eth_sendRawTransaction", sign(deployer, nonce=nonce, data=artifact.bytecode, gas=500_000))
    receipt = client.rpc("eth_getTransactionReceipt", tx_hash)
    assert receipt["status"] == "0x1"
    return str(receipt["contractAddress"])


def spin_call_data(selector: str, rounds: int) -> str:
    return "0x" + function_signature_to_4byte_selector(f"{selector}(uint256)").hex() + rounds.to_bytes(32, "big").hex()


class MaximalCall(threading.Thread):
    """An eth_call of an endless loop with the cap's gas, from its own connection."""

    def __init__(self, url: str, contract: str) -> None:
        super().__init__(daemon=True)
        self.client = Client(url, timeout_s=60)
        self.request = {"to": contract, "data": spin_call_data("spin", SPIN_SELECTOR_INPUT), "gas": hex(50_000_000)}
        self.answer: Any = None
        self.seconds = 0.0

    def run(self) -> None:
        started = time.monotonic()
        try:
            self.answer = self.client.post(
                json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_call", "params": [self.request, "latest"]})
            )[1]
        except OSError as exc:
            self.answer = exc
        self.seconds = time.monotonic() - started


def test_served_chain_survives_a_body_nested_100000_deep(served: Served) -> None:
    client = Client(served.url)
    for body in (NESTED_100K, b'{"a":' * 100_000 + b"1" + b"}" * 100_000):
        status, answer = client.post(body)
        assert status == 200 and error_of(answer)["code"] == -32700
    assert client.rpc("eth_blockNumber") == "0x0"
    assert served.process.poll() is None


@pytest.mark.parametrize("calls", [1, 4], ids=["one-maximal-call", "four-maximal-calls"])
def test_maximal_calls_do_not_stall_other_clients(
    served: Served, calls: int, capsys: pytest.CaptureFixture[str]
) -> None:
    # Four is RpcLimits.max_concurrent_calls: the most an attacker can run at once.
    alice, bob = (Account.from_key(key) for key in dev_private_keys(3)[1:3])
    client = Client(served.url)
    spinner = deploy_spin(client, alice)
    maximals = [MaximalCall(served.url, spinner) for _ in range(calls)]
    for maximal in maximals:
        maximal.start()
    time.sleep(0.5)  # the calls are well under way
    block_number_s, transfer_s = [], []
    nonce = int(client.rpc("eth_getTransactionCount", bob.address, "latest"), 16)
    for index in range(8):
        started = time.perf_counter()
        client.rpc("eth_blockNumber")
        block_number_s.append(time.perf_counter() - started)
        raw = sign(bob, nonce=nonce + index, to=DEAD, value=1, gas=21_000)
        started = time.perf_counter()
        receipt = client.rpc("eth_getTransactionReceipt", client.rpc("eth_sendRawTransaction", raw))
        transfer_s.append(time.perf_counter() - started)
        assert receipt["status"] == "0x1"
        time.sleep(0.1)
    assert all(maximal.is_alive() for maximal in maximals), "a maximal call ended before the measurement did"
    for maximal in maximals:
        maximal.join(timeout=30)
        assert error_of(maximal.answer)["message"] == "execution aborted (timeout = 5s)"
        assert 4.9 < maximal.seconds < 8
    with capsys.disabled():
        print(
            f"\nwhile {calls} maximal call(s) ran: eth_blockNumber median "
            f"{statistics.median(block_number_s) * 1000:.1f} ms "
            f"max {max(block_number_s) * 1000:.1f} ms; transfer (send + receipt) median "
            f"{statistics.median(transfer_s) * 1000:.1f} ms max {max(transfer_s) * 1000:.1f} ms"
        )
    # The goal is 100 ms each (measured ~5 and ~15 ms on an idle machine); a loaded 2-core CI box gets slack.
    assert statistics.median(block_number_s) < 0.1 and statistics.median(transfer_s) < 0.1
    assert max(block_number_s) < 0.5 and max(transfer_s) < 0.5


def stop_with_sigterm(served: Served) -> float:
    started = time.monotonic()
    served.process.send_signal(signal.SIGTERM)
    served.process.wait(timeout=30)
    return time.monotonic() - started


def test_sigterm_stops_the_server_mid_call_within_two_seconds_with_state_intact(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    alice = Account.from_key(dev_private_keys(2)[1])
    client = Client(served.url)
    spinner = deploy_spin(client, alice)
    for nonce in range(1, 4):
        client.rpc("eth_sendRawTransaction", sign(alice, nonce=nonce, to=DEAD, value=1, gas=21_000))
    head = client.rpc("eth_blockNumber")
    maximal = MaximalCall(served.url, spinner)
    maximal.start()
    time.sleep(0.5)
    seconds = stop_with_sigterm(served)
    with capsys.disabled():
        print(f"\nSIGTERM during a maximal call: covey chain serve exited in {seconds * 1000:.0f} ms")
    assert seconds < 2.0 and served.process.returncode == 0
    maximal.join(timeout=10)

    restarted = start_serve(served.home)
    try:
        again = Client(restarted.url)
        assert again.rpc("eth_blockNumber") == head
        assert int(again.rpc("eth_getBalance", DEAD, "latest"), 16) == 3
        assert again.rpc("eth_getCode", spinner, "latest") != "0x"
    finally:
        stop_with_sigterm(restarted)


def test_sigterm_mid_transaction_exits_within_two_seconds_and_the_journal_replays_it(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    alice = Account.from_key(dev_private_keys(2)[1])
    client = Client(served.url)
    spinner = deploy_spin(client, alice)
    # A transaction that runs its loop for seconds in py-evm, holding the node's write lock.
    burn = sign(
        alice, nonce=1, to=to_checksum_address(spinner), data=spin_call_data("burn", SPIN_SELECTOR_INPUT), gas=1_500_000
    )
    sender = Client(served.url, timeout_s=60)

    def send_burn() -> None:
        with contextlib.suppress(OSError):  # the server exits before it can answer
            sender.post(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_sendRawTransaction", "params": [burn]}))

    sending = threading.Thread(target=send_burn, daemon=True)
    sending.start()
    time.sleep(0.5)
    seconds = stop_with_sigterm(served)
    with capsys.disabled():
        print(f"\nSIGTERM during a long transaction: covey chain serve exited in {seconds * 1000:.0f} ms")
    assert seconds < 2.0 and served.process.returncode == 0

    # The transaction was journaled before it ran: the next start mines it (out of gas, as it would have).
    restarted = start_serve(served.home)
    try:
        again = Client(restarted.url)
        assert again.rpc("eth_blockNumber") == "0x2"
        assert int(again.rpc("eth_getTransactionCount", alice.address, "latest"), 16) == 2
        receipt = again.rpc("eth_getTransactionReceipt", "0x" + keccak(bytes.fromhex(burn[2:])).hex())
        assert receipt["status"] == "0x0" and receipt["gasUsed"] == hex(1_500_000)
    finally:
        stop_with_sigterm(restarted)


def test_serve_flags_and_settings_set_the_limits(tmp_path: Path) -> None:
    running = start_serve(
        tmp_path / "home",
        "--rpc-gas-cap",
        "100000",
        "--allow-unprotected-txs",
        env_extra={"COVEY_CHAIN_RPC_EVM_TIMEOUT_S": "60"},
    )
    try:
        alice, bob = (Account.from_key(key) for key in dev_private_keys(3)[1:3])
        client = Client(running.url)
        spinner = deploy_spin(client, alice)
        request = {"to": spinner, "data": spin_call_data("spin", SPIN_SELECTOR_INPUT), "gas": hex(10**12)}
        started = time.monotonic()
        with pytest.raises(RpcError, match="OutOfGas"):
            client.rpc("eth_call", request, "latest")
        assert time.monotonic() - started < 5  # cut to 100,000 gas, long before the 60 s timeout
        tx_hash = client.rpc("eth_sendRawTransaction", unprotected_legacy(bob, 0))
        assert client.rpc("eth_getTransactionReceipt", tx_hash)["status"] == "0x1"
    finally:
        stop_with_sigterm(running)

    running = start_serve(tmp_path / "home", "--rpc-evm-timeout", "1")
    try:
        client = Client(running.url)
        started = time.monotonic()
        with pytest.raises(RpcError, match=r"execution aborted \(timeout = 1s\)"):
            client.rpc("eth_call", request, "latest")
        assert time.monotonic() - started < 3
        with pytest.raises(RpcError, match="only replay-protected"):
            client.rpc("eth_sendRawTransaction", unprotected_legacy(bob, 1))
    finally:
        stop_with_sigterm(running)
