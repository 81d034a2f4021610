"""Calls are untrusted work: they run on a frozen view outside the node lock, capped in gas, time and depth,
and no import leaves the interpreter's recursion limit raised."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from py_ecc import optimized_bn128 as bn128
from web3 import Web3
from web3.contract import Contract

from covey.chain._embedded import EmbeddedNode
from covey.chain._embedded.engine import MAX_CALL_DEPTH, CallRequest
from covey.chain._embedded.limits import RpcLimits
from covey.chain._embedded.rpc import Dispatcher, RpcError
from covey.chain._embedded.view import capture
from tests.chain.conftest import Artifact, compile_vyper, deploy, send_tx

REPO_ROOT = Path(__file__).resolve().parents[2]
ENDLESS = 2**255  # rounds of `spin`: no gas cap or timeout lets it finish

SPIN_SOURCE = """
# pragma version ~=0.4.3
counter: public(uint256)

@external
@view
def spin(rounds: uint256) -> uint256:
    x: uint256 = 0
    for i: uint256 in range(rounds, bound=max_value(uint256)):
        x = unsafe_add(x, i)
    return x

@external
def bump() -> uint256:
    self.counter += 1
    return self.counter
"""

DEPTH_SOURCE = """
# pragma version ~=0.4.3
interface Self:
    def down(n: uint256) -> uint256: view

@external
@view
def down(n: uint256) -> uint256:
    if n == 0:
        return 0
    return staticcall Self(self).down(n - 1) + 1
"""

FACTORY_SOURCE = """
# pragma version ~=0.4.3
interface Counter:
    def bump() -> uint256: nonpayable
    def counter() -> uint256: view

last: public(address)

@external
def make(target: address) -> address:
    self.last = create_copy_of(target)
    extcall Counter(self.last).bump()
    return self.last
"""


@pytest.fixture(scope="module")
def spin_artifact() -> Artifact:
    return compile_vyper(SPIN_SOURCE)


def call_data(contract: Contract, name: str, *args: Any) -> str:
    return contract.encode_abi(name, list(args))


def dispatch_call(dispatcher: Dispatcher, contract: Contract, name: str, *args: Any, gas: int | None = None) -> Any:
    request: dict[str, Any] = {"to": contract.address, "data": call_data(contract, name, *args)}
    if gas is not None:
        request["gas"] = hex(gas)
    return dispatcher.dispatch("eth_call", [request, "latest"])


def test_a_view_sees_the_state_of_its_moment_and_calls_change_nothing(
    node: EmbeddedNode, w3: Web3, token: Contract, dev_accounts: list[LocalAccount]
) -> None:
    alice, bob = dev_accounts[0], dev_accounts[1]
    balance_of_bob = CallRequest(
        to=bytes.fromhex(token.address[2:]), data=bytes.fromhex(call_data(token, "balanceOf", bob.address)[2:])
    )
    with node.lock:
        before = capture(node.engine)
    send_tx(w3, alice, to=token.address, data=call_data(token, "transfer", bob.address, 5), gas=100_000)
    with node.lock:
        after = capture(node.engine)
    assert int.from_bytes(before.call(balance_of_bob, pending=False, gas=100_000), "big") == 0
    assert int.from_bytes(after.call(balance_of_bob, pending=False, gas=100_000), "big") == 5

    # A call that transfers runs to completion on its view and leaves the live state alone.
    transfer = CallRequest(
        sender=bytes.fromhex(bob.address[2:]),
        to=bytes.fromhex(token.address[2:]),
        data=bytes.fromhex(call_data(token, "transfer", alice.address, 5)[2:]),
    )
    assert int.from_bytes(after.call(transfer, pending=True, gas=100_000), "big") == 1
    assert token.functions.balanceOf(bob.address).call() == 5

    # A snapshot swaps the state database under the engine; a view taken before it still reads.
    node.checkpoint()
    assert int.from_bytes(after.call(balance_of_bob, pending=False, gas=100_000), "big") == 5


def test_views_see_storage_cleared_and_code_created_since_the_last_snapshot(
    node: EmbeddedNode, w3: Web3, dev_accounts: list[LocalAccount], spin_artifact: Artifact
) -> None:
    alice = dev_accounts[0]
    counter = deploy(w3, alice, spin_artifact)
    factory = deploy(w3, alice, compile_vyper(FACTORY_SOURCE))
    node.checkpoint()  # everything above is persisted; what follows lives only in the journals
    send_tx(w3, alice, to=counter.address, data=call_data(counter, "bump"), gas=100_000)
    send_tx(w3, alice, to=factory.address, data=call_data(factory, "make", counter.address), gas=500_000)
    copy = w3.eth.contract(address=factory.functions.last().call(), abi=counter.abi)
    dispatcher = Dispatcher(node)
    # The copy is new code with fresh storage; the original keeps its own count.
    assert int(dispatch_call(dispatcher, copy, "counter"), 16) == 1
    assert int(dispatch_call(dispatcher, counter, "counter"), 16) == 1
    live = node.engine.storage(bytes.fromhex(copy.address[2:]), 0)
    assert live == 1
    assert dispatcher.dispatch("eth_getCode", [copy.address, "latest"]) == dispatcher.dispatch(
        "eth_getCode", [counter.address, "latest"]
    )


def test_an_endless_call_is_stopped_at_the_timeout_without_blocking_writers(
    node: EmbeddedNode, w3: Web3, dev_accounts: list[LocalAccount], spin_artifact: Artifact
) -> None:
    alice, bob = dev_accounts[0], dev_accounts[1]
    spinner = deploy(w3, alice, spin_artifact)
    dispatcher = Dispatcher(node, RpcLimits(evm_timeout_s=1.0))
    outcome: dict[str, Any] = {}

    def endless() -> None:
        started = time.monotonic()
        try:
            dispatch_call(dispatcher, spinner, "spin", ENDLESS, gas=10**12)
        except RpcError as exc:
            outcome["error"] = exc
        outcome["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=endless)
    thread.start()
    time.sleep(0.2)
    # The node lock is free: a transfer is mined and read while the call spins.
    started = time.monotonic()
    receipt = send_tx(w3, alice, to=bob.address, value=1, gas=21_000)
    transfer_s = time.monotonic() - started
    assert receipt["status"] == 1 and thread.is_alive()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert outcome["error"].code == -32000
    assert outcome["error"].message == "execution aborted (timeout = 1s)"
    assert 0.9 < outcome["seconds"] < 3.0
    assert transfer_s < 0.5, f"a transfer took {transfer_s:.3f} s while a call spun"
    # The dispatcher and the chain go on as before.
    assert int(dispatch_call(dispatcher, spinner, "counter"), 16) == 0


def test_gas_above_the_cap_is_cut_to_it(
    node: EmbeddedNode, w3: Web3, dev_accounts: list[LocalAccount], spin_artifact: Artifact
) -> None:
    spinner = deploy(w3, dev_accounts[0], spin_artifact)
    dispatcher = Dispatcher(node, RpcLimits(gas_cap=100_000, evm_timeout_s=30))
    started = time.monotonic()
    with pytest.raises(RpcError, match="OutOfGas"):
        dispatch_call(dispatcher, spinner, "spin", ENDLESS, gas=10**12)
    assert time.monotonic() - started < 5  # 100k gas of loop, not 10**12
    with pytest.raises(RpcError, match=r"gas required exceeds allowance \(100000\)"):
        dispatcher.dispatch(
            "eth_estimateGas", [{"to": spinner.address, "data": call_data(spinner, "spin", ENDLESS), "gas": hex(10**9)}]
        )


def test_a_pairing_precompile_call_is_stopped_at_the_timeout(node: EmbeddedNode) -> None:
    # py-evm computes bn128 pairings in pure Python (~0.5 s each): no opcode runs while it does, so only
    # the watchdog can stop it.
    def coordinate(value: Any) -> bytes:
        return int(value).to_bytes(32, "big")

    g1x, g1y = bn128.normalize(bn128.G1)
    g2x, g2y = bn128.normalize(bn128.G2)
    pair = coordinate(g1x) + coordinate(g1y)
    pair += (
        coordinate(g2x.coeffs[1]) + coordinate(g2x.coeffs[0]) + coordinate(g2y.coeffs[1]) + coordinate(g2y.coeffs[0])
    )
    dispatcher = Dispatcher(node, RpcLimits(evm_timeout_s=0.5))
    started = time.monotonic()
    with pytest.raises(RpcError, match=r"execution aborted \(timeout = 0.5s\)"):
        dispatcher.dispatch("eth_call", [{"to": "0x" + "00" * 19 + "08", "data": "0x" + (pair * 60).hex()}, "latest"])
    assert time.monotonic() - started < 2.5


def test_call_depth_is_capped_deterministically(node: EmbeddedNode, w3: Web3, dev_accounts: list[LocalAccount]) -> None:
    deep = deploy(w3, dev_accounts[0], compile_vyper(DEPTH_SOURCE))
    dispatcher = Dispatcher(node)
    assert int(dispatch_call(dispatcher, deep, "down", MAX_CALL_DEPTH), 16) == MAX_CALL_DEPTH
    # One more fails as a reverted call (the frame past the limit fails, Vyper reverts the rest),
    # whatever the Python stack of the caller: never a RecursionError.
    with pytest.raises(RpcError, match="execution reverted"):
        dispatch_call(dispatcher, deep, "down", MAX_CALL_DEPTH + 1)
    with pytest.raises(RpcError, match="execution reverted"):
        dispatch_call(dispatcher, deep, "down", 1000)


RECURSION_PROBE = """
import sys, tempfile
from pathlib import Path
{first}
before = sys.getrecursionlimit()
import covey.chain
after_import = sys.getrecursionlimit()
from covey.chain import Chain, dev_accounts
chain = Chain.embedded(Path(tempfile.mkdtemp()) / "chain")
sender, receiver = dev_accounts(2)
chain.send_eth(sender, receiver.address, 1)
# ecAdd and ecPairing run py_ecc code
chain.w3.eth.call({{"to": "0x" + "00" * 19 + "06", "data": "0x" + "00" * 128}})
chain.w3.eth.call({{"to": "0x" + "00" * 19 + "08", "data": "0x"}})
chain.close()
print(before, after_import, sys.getrecursionlimit())
"""


@pytest.mark.parametrize("first", ["", "import eth_account, eth"], ids=["covey-first", "py-ecc-and-py-evm-first"])
def test_no_import_leaves_the_recursion_limit_raised(first: str) -> None:
    probe = subprocess.run(
        [sys.executable, "-c", RECURSION_PROBE.format(first=first)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert probe.returncode == 0, probe.stderr
    before, after_import, after_use = (int(word) for word in probe.stdout.split())
    if first:
        # py_ecc and py-evm raised it before covey was imported; covey puts back CPython's default.
        assert before == 100_000 and after_import == after_use == 1000
    else:
        assert before == after_import == after_use == 1000
