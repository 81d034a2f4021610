"""`Chain`: one web3.py connection to either the embedded chain or any JSON-RPC node, plus safe transacting."""

from __future__ import annotations

import http.client
import select
import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests
from eth_account.signers.local import LocalAccount
from web3 import HTTPProvider, Web3
from web3.contract import Contract
from web3.contract.contract import ContractFunction
from web3.exceptions import ContractLogicError, TimeExhausted, Web3RPCError
from web3.types import RPCEndpoint, TxReceipt

from covey.chain._keccak import use_fast_keccak
from covey.chain.compiler import compile_contract
from covey.chain.devkeys import dev_accounts as dev_accounts
from covey.chain.errors import revert_reason as revert_reason
from covey.chain.signing import FastSigningAccount as FastSigningAccount
from covey.chain.signing import sign_transaction
from covey.chain.units import GWEI
from covey.config import Settings, get_settings
from covey.errors import ChainError, ValidationError

if TYPE_CHECKING:
    from covey.chain._embedded.node import Durability

LOCAL_CHAIN_IDS = frozenset({31337, 1337})
GAS_MARGIN = 1.2
RECEIPT_TIMEOUT_S = 120.0
RPC_TIMEOUT_S = 60.0
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
CLOCK_TOLERANCE_S = 60
"""How far a chain's clock may be from wall time before commands warn: x402 clients sign validity windows
from wall time, so a chain clock far ahead refuses their payments as expired."""
WAIT_POLL_S = 0.5


class LoopbackHTTPProvider(HTTPProvider):
    """web3's HTTPProvider over one keep-alive `http.client` connection per thread, for a node on this host.

    requests spends ~1.5 ms of CPU per call (proxy lookups in the environment, pools, header
    merging), more than a local node takes to answer; proxies and TLS do not apply on loopback.
    Errors are requests' own, as HTTPProvider raises them.
    """

    def __init__(self, url: str, *, timeout_s: float) -> None:
        super().__init__(url, request_kwargs={"timeout": timeout_s})
        parts = urlsplit(url)
        self._address = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._timeout_s = timeout_s
        self._headers = self.get_request_headers()
        self._local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        connection: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
        if connection is not None and connection.sock is not None:
            # A keep-alive connection that the server closed reads as ready (EOF): open a new one.
            readable, _, _ = select.select([connection.sock], [], [], 0)
            if not readable:
                return connection
        if connection is not None:
            connection.close()
        connection = http.client.HTTPConnection(*self._address, timeout=self._timeout_s)
        connection.connect()
        assert connection.sock is not None
        connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._local.connection = connection
        return connection

    def _make_request(self, method: Any, request_data: bytes) -> bytes:
        try:
            connection = self._connection()
            connection.request("POST", self._path, body=request_data, headers=self._headers)
            response = connection.getresponse()
            body = response.read()
        except TimeoutError as exc:
            self._drop_connection()
            raise requests.Timeout(f"no answer from {self.endpoint_uri} in {self._timeout_s} s") from exc
        except (OSError, http.client.HTTPException) as exc:
            self._drop_connection()
            raise requests.ConnectionError(f"cannot reach {self.endpoint_uri}: {exc}") from exc
        if response.will_close:
            self._drop_connection()
        if response.status >= 400:
            raise requests.HTTPError(f"{response.status} {response.reason} for url: {self.endpoint_uri}")
        return body

    def _drop_connection(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
        self._local.connection = None


def _duration(seconds: int) -> str:
    """A short human duration: "45 s", "12 min", "3.5 h", "10.2 days"."""
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7_200:
        return f"{seconds // 60} min"
    if seconds < 172_800:
        return f"{seconds / 3_600:.1f} h"
    return f"{seconds / 86_400:.1f} days"


class Chain:
    """A connection to the coordinator chain with helpers that set nonce, gas and fees themselves.

    Use `Chain.connect()` to follow the settings: `COVEY_RPC_URL` set means that node; otherwise the
    embedded chain under `COVEY_HOME/chain`, or the `covey chain serve` process that holds it.
    """

    def __init__(self, w3: Web3, backend: str, *, node: Any = None, data_dir: Path | None = None) -> None:
        self.w3 = w3
        self.backend = backend
        self.data_dir = data_dir
        self._node = node
        self._send_lock = threading.Lock()
        use_fast_keccak()  # every chain hashes a lot, client side too (signing, checksums, ABI selectors)
        try:
            self.chain_id: int = int(w3.eth.chain_id)
        except Exception as exc:  # any transport failure means "cannot reach the node"
            raise ChainError(f"cannot reach the chain ({backend}): {exc}") from exc

    # -- construction -------------------------------------------------------------------------------------

    @classmethod
    def connect(cls, settings: Settings | None = None) -> Chain:
        """Connect as the settings say: an RPC URL, the served embedded chain, or the embedded chain itself."""
        settings = settings or get_settings()
        if settings.rpc_url:
            return cls.from_rpc(settings.rpc_url)
        return cls.embedded(settings.subdir("chain"), durability=settings.chain_durability)

    @classmethod
    def from_rpc(cls, url: str, *, backend: str = "rpc") -> Chain:
        """Connect to any Ethereum JSON-RPC node over HTTP."""
        if not url.startswith(("http://", "https://")):
            raise ValidationError(f"unsupported RPC URL {url!r}: expected http:// or https://")
        host = urlsplit(url).hostname
        if url.startswith("http://") and host in LOOPBACK_HOSTS:
            provider: HTTPProvider = LoopbackHTTPProvider(url, timeout_s=RPC_TIMEOUT_S)
        else:
            provider = HTTPProvider(url, request_kwargs={"timeout": RPC_TIMEOUT_S})
        # web3 validates every call with eth_chainId; caching it saves two round trips per read.
        provider.cache_allowed_requests = True
        return cls(Web3(provider), backend)

    @classmethod
    def embedded(cls, data_dir: Path, *, durability: Durability = "write") -> Chain:
        """Open the persistent in-process chain in `data_dir`, or talk to the server that holds it.

        `durability` says when a transaction counts as confirmed: "write" (the default: handed to the
        OS, survives SIGKILL or a crash of this process) or "fsync" (on disk, survives a power cut); see
        `covey.chain._embedded.node.Durability`.
        """
        from covey.chain._embedded import embedded_web3, open_node, running_server_url

        served = running_server_url(data_dir)
        if served:
            chain = cls.from_rpc(served, backend="embedded-served")
            chain.data_dir = data_dir
            return chain
        node = open_node(data_dir, durability=durability)
        return cls(embedded_web3(node), "embedded", node=node, data_dir=data_dir)

    def close(self) -> None:
        """Release the embedded chain (writes its snapshot); a no-op for RPC connections."""
        if self._node is not None:
            self._node.close()
            self._node = None

    def __enter__(self) -> Chain:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- facts ------------------------------------------------------------------------------------------

    @property
    def is_local(self) -> bool:
        """True on a dev chain (embedded, anvil, hardhat): faucets, mining on demand, time travel in tests."""
        return self.backend.startswith("embedded") or self.chain_id in LOCAL_CHAIN_IDS

    def block_number(self) -> int:
        return int(self.w3.eth.block_number)

    def timestamp(self) -> int:
        """The latest block's timestamp, the clock contracts see."""
        return int(self.w3.eth.get_block("latest")["timestamp"])

    def now(self) -> int:
        """The earliest time the next block can carry: the newer of the latest block and the wall clock.

        A local chain that mines on demand keeps an old latest block while nobody transacts, and mines
        the next one at wall time, so deadlines set "from now" must not count from the latest block alone.
        """
        return max(self.timestamp(), int(time.time()))

    def clock_offset_s(self) -> int:
        """How far the chain's clock runs ahead of wall time, in seconds (negative: behind).

        The in-process embedded chain answers exactly: the timestamp its next block will get. Over RPC this
        is the latest block's; a local chain that has been idle then reads as behind by the idle time only,
        so there a negative offset counts as 0 (its next block is mined at its own, wall-based clock).
        """
        node = self._node
        if node is not None:
            return int(node.engine.peek_timestamp()) - int(time.time())
        offset = self.timestamp() - int(time.time())
        return max(offset, 0) if self.is_local else offset

    def clock_warning(self) -> str | None:
        """One line saying how far the chain clock is from wall time, or None when within `CLOCK_TOLERANCE_S`."""
        offset = self.clock_offset_s()
        if abs(offset) <= CLOCK_TOLERANCE_S:
            return None
        direction = "ahead of" if offset > 0 else "behind"
        consequence = (
            "x402 payments signed from wall time are refused as expired; a clock never runs back, so start a "
            "fresh chain (a new COVEY_HOME, or a new node)"
            if offset > 0
            else "the node may be stale or still syncing"
        )
        return f"the chain clock is {_duration(abs(offset))} {direction} wall time: {consequence}"

    def wait_until(self, timestamp: int, *, timeout_s: float | None = None) -> int:
        """Wait in real time until the chain's latest block is at least `timestamp`; return that block's time.

        On a local chain that mines only on demand (embedded, anvil) the latest block stands still while
        nobody transacts, so once its clock has reached `timestamp` an empty block is mined for contracts
        and calls to see the time; elsewhere this polls for the chain's own blocks. A local chain whose
        clock runs ahead of wall time (time travelled earlier) is waited for by its own clock, not the wall's.
        """
        give_up = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            latest = self.timestamp()
            if latest >= timestamp:
                return latest
            if not self.is_local:  # a public chain's blocks come on their own: poll for them
                if give_up is not None and time.monotonic() > give_up:
                    raise ChainError(self._not_reached(timestamp, timeout_s, latest))
                time.sleep(WAIT_POLL_S)
                continue
            remaining_s = timestamp - (time.time() + self._lead_s(latest))
            if give_up is not None and time.monotonic() + max(remaining_s, 0.0) > give_up:
                raise ChainError(self._not_reached(timestamp, timeout_s, latest))
            if remaining_s > 0:
                time.sleep(remaining_s)
            self.mine()

    def _lead_s(self, latest: int) -> float:
        """How far a local chain's clock runs ahead of wall time (0 when it follows it), never overstated.

        In process the node says exactly. Over RPC the latest block's lead understates an idle chain's (it
        was mined a while ago), so when it leads at all a fresh block is mined to read the lead from.
        """
        if self._node is not None:
            return float(max(self.clock_offset_s(), 0))
        if latest <= time.time():
            return 0.0
        self.mine()
        return max(0.0, self.timestamp() - time.time())

    @staticmethod
    def _not_reached(timestamp: int, timeout_s: float | None, latest: int) -> str:
        return f"the chain clock did not reach {timestamp} within {timeout_s:.0f}s (at {latest} now)"

    def balance(self, address: str) -> int:
        return int(self.w3.eth.get_balance(Web3.to_checksum_address(address)))

    # -- contracts --------------------------------------------------------------------------------------

    def contract(self, name: str, address: str) -> Contract:
        """A handle on the deployed contract `name` at `address`."""
        return self.w3.eth.contract(address=Web3.to_checksum_address(address), abi=compile_contract(name).abi)

    def deploy(self, name: str, *args: Any, sender: LocalAccount) -> Contract:
        """Compile (cached) and deploy contract `name`; return a handle at its new address."""
        compiled = compile_contract(name)
        factory = self.w3.eth.contract(abi=compiled.abi, bytecode=compiled.bytecode)
        receipt = self._send(factory.constructor(*args), sender, value=0, gas=None, label=f"deploy {name}")
        address = receipt["contractAddress"]
        assert address is not None
        return self.w3.eth.contract(address=address, abi=compiled.abi)

    def transact(
        self, fn: ContractFunction, sender: LocalAccount, *, value: int = 0, gas: int | None = None
    ) -> TxReceipt:
        """Sign and send a contract call, wait for its receipt; a revert raises `ChainError(reason)`."""
        return self._send(fn, sender, value=value, gas=gas, label=fn.fn_name)

    def call(self, fn: ContractFunction, sender: str | None = None) -> Any:
        """Run a view call; a revert raises `ChainError` with the contract's message."""
        try:
            return fn.call({"from": sender} if sender else {})
        except (ContractLogicError, Web3RPCError) as exc:
            reason = revert_reason(exc)
            raise ChainError(reason, reason=reason) from exc

    def send_eth(self, sender: LocalAccount, to: str, wei: int) -> TxReceipt:
        """Transfer native currency (gas money)."""
        tx = {"to": Web3.to_checksum_address(to), "value": wei, "gas": 21_000}
        return self._sign_and_wait(tx, sender, label="send ETH")

    # -- dev-chain controls -----------------------------------------------------------------------------

    def mine(self) -> None:
        """Mine an empty block at the chain's clock (dev chains only)."""
        self._require_local("mining on demand")
        self.w3.provider.make_request(RPCEndpoint("evm_mine"), [])

    def increase_time(self, seconds: int) -> None:
        """Move the chain clock forward and mine a block (dev chains only).

        For tests that travel in time on purpose: the clock stays ahead of wall time for good, and x402
        clients sign from wall time, so nothing a user runs may call this (see `wait_until`).
        """
        self._require_local("time travel")
        self.w3.provider.make_request(RPCEndpoint("evm_increaseTime"), [int(seconds)])
        self.w3.provider.make_request(RPCEndpoint("evm_mine"), [])

    def set_balance(self, address: str, wei: int) -> None:
        """Set an address's native balance (dev chains only)."""
        self._require_local("setting balances")
        self.w3.provider.make_request(RPCEndpoint("anvil_setBalance"), [Web3.to_checksum_address(address), hex(wei)])

    def _require_local(self, what: str) -> None:
        if not self.is_local:
            raise ChainError(f"{what} is only allowed on a local dev chain (chain id {self.chain_id})")

    # -- sending ----------------------------------------------------------------------------------------

    def _send(self, fn: Any, sender: LocalAccount, *, value: int, gas: int | None, label: str) -> TxReceipt:
        params: dict[str, Any] = {"from": sender.address, "value": value}
        if gas is None:
            try:
                gas = int(fn.estimate_gas(params) * GAS_MARGIN)
            except (ContractLogicError, Web3RPCError) as exc:
                reason = revert_reason(exc)
                raise ChainError(f"{label} reverted: {reason}", reason=reason) from exc
        params["gas"] = gas
        tx = fn.build_transaction({**params, "nonce": 0, "maxFeePerGas": 0, "maxPriorityFeePerGas": 0})
        tx.pop("from", None)
        return self._sign_and_wait(dict(tx), sender, label=label)

    def _sign_and_wait(self, tx: dict[str, Any], sender: LocalAccount, *, label: str) -> TxReceipt:
        eth = self.w3.eth
        base_fee = int(eth.get_block("latest").get("baseFeePerGas", 0) or 0)
        tip = GWEI
        tx.update(
            chainId=self.chain_id,
            maxPriorityFeePerGas=tip,
            maxFeePerGas=2 * base_fee + tip,
            type=2,
        )
        # One signer per process at a time per chain handle keeps "pending" nonces consistent.
        with self._send_lock:
            tx["nonce"] = eth.get_transaction_count(sender.address, "pending")
            signed = sign_transaction(sender, tx)
            try:
                tx_hash = eth.send_raw_transaction(signed.raw_transaction)
            except Web3RPCError as exc:
                raise ChainError(f"{label} rejected by the node: {revert_reason(exc)}") from exc
        try:
            receipt = eth.wait_for_transaction_receipt(tx_hash, timeout=RECEIPT_TIMEOUT_S, poll_latency=0.05)
        except TimeExhausted as exc:
            raise ChainError(f"{label}: no receipt for {tx_hash.hex()} after {RECEIPT_TIMEOUT_S:.0f}s") from exc
        if receipt["status"] != 1:
            reason = self._replay_reason(tx, sender.address, receipt["blockNumber"])
            raise ChainError(f"{label} reverted: {reason}", reason=reason)
        return receipt

    def _replay_reason(self, tx: dict[str, Any], sender: str, block_number: int) -> str:
        """Re-run a failed transaction as a call to learn its revert reason.

        First on the state before its block; then on its block's own state, because a check against
        `block.timestamp` (a deadline) may pass on the older block's time and fail only on the newer one.
        """
        call: dict[str, Any] = {k: tx[k] for k in ("to", "data", "value", "gas") if k in tx}
        call["from"] = sender
        for replay_block in dict.fromkeys((max(block_number - 1, 0), block_number)):
            try:
                self.w3.eth.call(call, block_identifier=replay_block)  # type: ignore[arg-type]
            except (ContractLogicError, Web3RPCError) as exc:
                return revert_reason(exc)
        return "out of gas or reverted without a reason"
