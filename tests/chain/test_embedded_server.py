"""The embedded chain over HTTP JSON-RPC: batches, reverts, many clients, serve.json discovery."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractLogicError

from covey.chain._embedded import EmbeddedNode, ServerHandle, dev_private_keys, running_server_url, start_server_thread
from covey.chain._embedded.server import SERVE_FILE

REPO_ROOT = Path(__file__).resolve().parents[2]

# One client process: sends `count` transfers from its own account through web3's HTTPProvider,
# reading each receipt, and prints the hashes.
CLIENT = """
import sys
from eth_account import Account
from web3 import Web3

url, key, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 30}))
account = Account.from_key(key)
nonce = w3.eth.get_transaction_count(account.address)
for offset in range(count):
    tx = {"chainId": 31337, "nonce": nonce + offset, "to": "0x000000000000000000000000000000000000dEaD",
          "value": 1, "gas": 21000, "maxFeePerGas": 3 * 10**9, "maxPriorityFeePerGas": 10**9}
    tx_hash = w3.eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction)
    assert w3.eth.get_transaction_receipt(tx_hash)["status"] == 1
    print(tx_hash.to_0x_hex())
"""


def post(url: str, payload: Any) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture
def server(node: EmbeddedNode) -> Iterator[ServerHandle]:
    handle = start_server_thread(node)
    yield handle
    handle.shutdown()


def test_single_batch_and_malformed_requests(server: ServerHandle) -> None:
    single = post(server.url, {"jsonrpc": "2.0", "id": 7, "method": "eth_chainId", "params": []})
    assert single == {"jsonrpc": "2.0", "id": 7, "result": "0x7a69"}

    batch = post(
        server.url,
        [
            {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []},
            {"jsonrpc": "2.0", "id": 2, "method": "eth_nope", "params": []},
            {"jsonrpc": "2.0", "id": 3, "method": "net_version"},
        ],
    )
    assert [answer["id"] for answer in batch] == [1, 2, 3]
    assert batch[0]["result"] == "0x0" and batch[2]["result"] == "31337"
    assert batch[1]["error"]["code"] == -32601

    request = urllib.request.Request(server.url, data=b"{not json", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.loads(response.read())["error"]["code"] == -32700
    assert post(server.url, [])["error"]["code"] == -32600


def test_web3_over_http_sees_revert_reasons(
    server: ServerHandle, token: Contract, dev_accounts: list[LocalAccount]
) -> None:
    remote = Web3(Web3.HTTPProvider(server.url))
    remote_token = remote.eth.contract(address=token.address, abi=token.abi)
    assert remote_token.functions.balanceOf(dev_accounts[0].address).call() == 10**24
    with pytest.raises(ContractLogicError, match="token: balance too low"):
        remote_token.functions.transfer(dev_accounts[0].address, 1).call({"from": dev_accounts[4].address})


def test_keep_alive_without_nagle_answers_small_requests_quickly(server: ServerHandle) -> None:
    host, port = server.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.connect()
    connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []})
    started = time.perf_counter()
    for _ in range(100):
        connection.request("POST", "/", body, {"Content-Type": "application/json"})
        assert json.loads(connection.getresponse().read())["result"] == "0x0"
    # With Nagle's algorithm on, each round trip waits ~40 ms for a delayed ACK (4 s in all).
    assert time.perf_counter() - started < 2.0
    connection.close()


def test_two_client_processes_send_concurrently_with_correct_nonces(server: ServerHandle, node: EmbeddedNode) -> None:
    keys = dev_private_keys(4)[2:4]
    clients = [
        subprocess.Popen(
            [sys.executable, "-c", CLIENT, server.url, key, "100"],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for key in keys
    ]
    outputs = [client.communicate(timeout=180) for client in clients]
    for client, (_, errors) in zip(clients, outputs, strict=True):
        assert client.returncode == 0, errors
    hashes = [line for stdout, _ in outputs for line in stdout.split()]
    assert len(hashes) == 200 and len(set(hashes)) == 200

    remote = Web3(Web3.HTTPProvider(server.url))
    for key in keys:
        address = remote.eth.account.from_key(key).address
        assert remote.eth.get_transaction_count(address) == 100
    assert remote.eth.get_balance(Web3.to_checksum_address("0x000000000000000000000000000000000000dead")) == 200
    assert remote.eth.block_number == 200
    assert all(node.engine.txs[bytes.fromhex(tx_hash[2:])].status == 1 for tx_hash in hashes)


def test_serve_file_points_other_processes_at_the_live_server(node: EmbeddedNode, chain_dir: Path) -> None:
    assert running_server_url(chain_dir) is None
    handle = start_server_thread(node)
    try:
        assert running_server_url(chain_dir) == handle.url
        recorded = json.loads((chain_dir / SERVE_FILE).read_text())
        assert recorded == {"url": handle.url, "pid": os.getpid()}
    finally:
        handle.shutdown()
    assert not (chain_dir / SERVE_FILE).exists()
    assert running_server_url(chain_dir) is None

    # A file left by a dead process, or one pointing at a closed port, is not a live server.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (chain_dir / SERVE_FILE).write_text(json.dumps({"url": handle.url, "pid": int(dead.stdout)}))
    assert running_server_url(chain_dir) is None
    (chain_dir / SERVE_FILE).write_text(json.dumps({"url": handle.url, "pid": os.getpid()}))
    assert running_server_url(chain_dir) is None


def test_serve_rpc_cleans_up_on_sigterm(tmp_path: Path) -> None:
    data_dir = tmp_path / "served"
    script = (
        "import sys\nfrom pathlib import Path\nfrom covey.chain._embedded import open_node, serve_rpc\n"
        "node = open_node(Path(sys.argv[1]))\ntry:\n    serve_rpc(node, port=0)\nfinally:\n    node.close()\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script, str(data_dir)], cwd=REPO_ROOT, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while running_server_url(data_dir) is None:
            assert process.poll() is None and time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.1)
        url = running_server_url(data_dir)
        assert url is not None and post(url, {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"})["result"] == "0x7a69"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    assert process.returncode == 0
    assert not (data_dir / SERVE_FILE).exists()


def test_chain_from_rpc_talks_to_a_local_server_over_keep_alive(server: ServerHandle, node: EmbeddedNode) -> None:
    """`Chain.from_rpc` on a loopback URL uses covey's keep-alive client; errors stay web3's and covey's."""
    from covey.chain import Chain, dev_accounts
    from covey.chain.chain import LoopbackHTTPProvider
    from covey.errors import ChainError

    chain = Chain.from_rpc(server.url)
    assert isinstance(chain.w3.provider, LoopbackHTTPProvider)
    sender, receiver = dev_accounts(2)
    before = chain.balance(receiver.address)
    receipts = [chain.send_eth(sender, receiver.address, 5) for _ in range(3)]
    assert [receipt["status"] for receipt in receipts] == [1, 1, 1]
    assert chain.balance(receiver.address) == before + 15
    assert node.engine.head.number == receipts[-1]["blockNumber"]

    port = server.url.rsplit(":", 1)[1]
    server.shutdown()
    with pytest.raises(ChainError, match="cannot reach"):
        Chain.from_rpc(f"http://127.0.0.1:{port}")
