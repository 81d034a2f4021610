"""The JSON-RPC surface of the embedded chain: decode params, call the node, encode like geth.

`Dispatcher.dispatch(method, params)` returns a JSON-ready result or raises `RpcError`;
`Dispatcher.handle(request)` wraps that in a JSON-RPC 2.0 response object. Reverts come back as
geth and anvil send them (code 3, "execution reverted: <reason>", data = revert data), so
web3.py raises `ContractLogicError` with the contract's reason.

Block tags: "latest", "safe", "finalized" and the latest number read the latest state;
"pending" (and latest + 1) runs calls in the next block's context, and `eth_estimateGas` always
does, since that is where the transaction will be mined. Older blocks have no state here
(`eth_call`, `eth_getBalance` etc. answer with an error) but their blocks, receipts and logs are
kept. "pending" reads as the latest block for block queries and logs.

Every request gets an answer object, whatever it holds: malformed requests and params are
-32600/-32602, and anything no check foresaw is -32603 rather than a dropped connection. Calls and
gas estimates are untrusted work: they run on a `StateView` outside the node lock, at most
`RpcLimits.max_concurrent_calls` at once, each under the gas cap and stopped at the EVM timeout
(see `limits` and `view`).
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import itertools
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import rlp
from eth.constants import BLANK_ROOT_HASH, EMPTY_UNCLE_HASH
from eth_utils import keccak

from covey.chain._embedded import engine as evm
from covey.chain._embedded.engine import Block, CallRequest, LogEntry, TxRecord
from covey.chain._embedded.limits import RpcLimits
from covey.chain._embedded.node import EmbeddedNode
from covey.chain._embedded.view import StateView, capture
from covey.chain._embedded.watchdog import Watchdog
from covey.chain.errors import DeadlineExceeded, ExecutionReverted, StateUnavailable
from covey.chain.errors import RpcError as RpcError
from covey.errors import ChainError

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
SERVER_ERROR = -32000
EXECUTION_REVERTED = 3

CLIENT_VERSION = "covey-embedded/0.1.0/py-evm-0.12.1b1"
_ZERO_HASH_HEX = "0x" + "00" * 32
_EMPTY_REQUESTS_HASH = "0x" + hashlib.sha256(b"").hexdigest()
_T = TypeVar("_T")
_MAX_FEE_HISTORY_BLOCKS = 1024
_MAX_REWARD_PERCENTILES = 100
_MAX_UINT256 = 2**256 - 1
# A log filter matches at most four topics (the EVM's LOG4); geth refuses more, and caps addresses.
_MAX_TOPICS = 4
_MAX_FILTER_ADDRESSES = 1000
_MAX_TOPIC_ALTERNATIVES = 1000
# Dev controls: blocks per evm_mine/anvil_mine request, and how far the clock may move in one call
# (a timestamp must fit the journal's 64-bit fields and the EVM's).
_MAX_MINE_BLOCKS = 10_000
_MAX_TIME_STEP_S = 2**32
_MAX_TIMESTAMP = 2**63 - 1


def error_response(request_id: Any, error: RpcError) -> dict[str, Any]:
    """A JSON-RPC 2.0 error response object."""
    return {"jsonrpc": "2.0", "id": request_id, "error": error.to_json()}


_watchdog_lock = threading.Lock()
_watchdog: Watchdog | None = None


def _shared_watchdog() -> Watchdog:
    """One watchdog thread per process, started by the first call."""
    global _watchdog
    with _watchdog_lock:
        if _watchdog is None:
            _watchdog = Watchdog()
        return _watchdog


# -- encoding ----------------------------------------------------------------------------------


def _hex(value: int) -> str:
    return hex(value)


def _data(value: bytes) -> str:
    return "0x" + value.hex()


def _address_or_none(value: bytes | None) -> str | None:
    return None if value is None else "0x" + value.hex()


@functools.lru_cache(maxsize=4096)
def _bloom_bits(value: bytes) -> int:
    """The three bloom bits of one address or topic (as in eth-bloom)."""
    # Cached because contracts, event signatures and holders repeat from log to log, and a keccak
    # costs tens of microseconds with the pycryptodome backend.
    digest = keccak(value)
    return (
        (1 << (int.from_bytes(digest[0:2], "big") & 2047))
        | (1 << (int.from_bytes(digest[2:4], "big") & 2047))
        | (1 << (int.from_bytes(digest[4:6], "big") & 2047))
    )


def _bloom(logs: Iterable[LogEntry]) -> bytes:
    bits = 0
    for log in logs:
        bits |= _bloom_bits(log.address)
        for topic in log.topics:
            bits |= _bloom_bits(topic)
    return bits.to_bytes(256, "big")


def _single_item_trie_root(value: bytes) -> bytes:
    """Root of a trie holding only `value` at key rlp(0), as in a one-transaction block."""
    # The only node is a leaf whose hex-prefixed path is the two nibbles of rlp(0) = 0x80.
    return keccak(rlp.encode([b"\x20\x80", value]))


def _receipt_encoding(record: TxRecord) -> bytes:
    logs = [[log.address, list(log.topics), log.data] for log in record.logs]
    body = rlp.encode([record.status, record.gas_used, _bloom(record.logs), logs])
    return body if record.type_id == 0 else bytes([record.type_id]) + body


# -- decoding ----------------------------------------------------------------------------------


def _invalid(message: str) -> RpcError:
    return RpcError(INVALID_PARAMS, message)


def _param(params: Sequence[Any], index: int, name: str, default: Any = ...) -> Any:
    if index < len(params):
        return params[index]
    if default is ...:
        raise _invalid(f"missing parameter {index + 1} ({name})")
    return default


def _to_bytes(value: Any, name: str) -> bytes:
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, str):
        text = value[2:] if value[:2] in ("0x", "0X") else value
        if len(text) % 2:
            text = "0" + text
        try:
            return bytes.fromhex(text)
        except ValueError:
            raise _invalid(f"{name} is not hex data: {value!r}") from None
    raise _invalid(f"{name} must be hex data, got {value!r}")


def _to_quantity(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise _invalid(f"{name} must be a quantity, got {value!r}")
    if isinstance(value, int):
        quantity = value
    elif isinstance(value, str):
        try:
            quantity = int(value, 16) if value[:2] in ("0x", "0X") else int(value)
        except ValueError:
            raise _invalid(f"{name} is not a quantity: {value!r}") from None
    elif isinstance(value, bytes | bytearray):
        quantity = int.from_bytes(value, "big")
    else:
        raise _invalid(f"{name} must be a quantity, got {value!r}")
    if not 0 <= quantity <= _MAX_UINT256:
        raise _invalid(f"{name} must be between 0 and 2**256-1, got {value!r}")
    return quantity


def _to_address(value: Any, name: str = "address") -> bytes:
    address = _to_bytes(value, name)
    if len(address) != 20:
        raise _invalid(f"{name} must be 20 bytes, got {value!r}")
    return address


def _to_hash(value: Any, name: str = "hash") -> bytes:
    digest = _to_bytes(value, name)
    if len(digest) != 32:
        raise _invalid(f"{name} must be 32 bytes, got {value!r}")
    return digest


@dataclass(frozen=True, slots=True)
class _LogCriteria:
    from_block: Any
    to_block: Any
    block_hash: bytes | None
    addresses: frozenset[bytes] | None
    topics: tuple[frozenset[bytes] | None, ...]


def _log_criteria(value: Any) -> _LogCriteria:
    if not isinstance(value, dict):
        raise _invalid(f"a log filter must be an object, got {value!r}")
    address = value.get("address")
    if address is None or address == []:
        addresses = None
    elif isinstance(address, list):
        if len(address) > _MAX_FILTER_ADDRESSES:
            raise _invalid(f"a log filter takes at most {_MAX_FILTER_ADDRESSES} addresses, got {len(address)}")
        addresses = frozenset(_to_address(item) for item in address)
    else:
        addresses = frozenset([_to_address(address)])
    positions = value.get("topics")
    if positions is None:
        positions = []
    if not isinstance(positions, list):
        raise _invalid(f"topics must be an array, got {positions!r}")
    if len(positions) > _MAX_TOPICS:
        raise _invalid(f"a log filter takes at most {_MAX_TOPICS} topic positions, got {len(positions)}")
    topics: list[frozenset[bytes] | None] = []
    for position in positions:
        if position is None or position == []:
            topics.append(None)
        elif isinstance(position, list):
            if len(position) > _MAX_TOPIC_ALTERNATIVES:
                raise _invalid(f"a topic position takes at most {_MAX_TOPIC_ALTERNATIVES} alternatives")
            topics.append(frozenset(_to_hash(item, "topic") for item in position if item is not None))
        else:
            topics.append(frozenset([_to_hash(position, "topic")]))
    block_hash = value.get("blockHash")
    if block_hash is not None and (value.get("fromBlock") is not None or value.get("toBlock") is not None):
        raise _invalid("a log filter takes blockHash or fromBlock/toBlock, not both")
    return _LogCriteria(
        from_block=value.get("fromBlock", "latest"),
        to_block=value.get("toBlock", "latest"),
        block_hash=None if block_hash is None else _to_hash(block_hash, "blockHash"),
        addresses=addresses,
        topics=tuple(topics),
    )


def _log_matches(log: LogEntry, criteria: _LogCriteria) -> bool:
    if criteria.addresses is not None and log.address not in criteria.addresses:
        return False
    if len(criteria.topics) > len(log.topics):
        return False
    return all(wanted is None or topic in wanted for wanted, topic in zip(criteria.topics, log.topics, strict=False))


@dataclass(slots=True)
class _Filter:
    criteria: _LogCriteria | None  # None: a block filter
    next_block: int
    last_used: float  # time.monotonic() of its creation or latest poll


# -- dispatcher --------------------------------------------------------------------------------


class Dispatcher:
    """Answers JSON-RPC calls against one `EmbeddedNode`; safe to call from many threads."""

    def __init__(
        self, node: EmbeddedNode, limits: RpcLimits | None = None, *, call_switch_interval_s: float | None = None
    ) -> None:
        """`call_switch_interval_s`: the GIL switch interval while any call runs (process-wide, so only for a
        dispatcher that owns its process, as `serve_rpc`'s does); None leaves the interpreter's alone."""
        self._node = node
        self.limits = limits = RpcLimits() if limits is None else limits
        self._call_slots = threading.BoundedSemaphore(limits.max_concurrent_calls)
        self._call_switch_interval_s = call_switch_interval_s
        self._calls_lock = threading.Lock()
        self._calls_running = 0
        self._idle_switch_interval_s = 0.0
        self._filters: dict[str, _Filter] = {}
        self._filter_ids = itertools.count(1)
        handlers: dict[str, Callable[[Sequence[Any]], Any]] = {
            "web3_clientVersion": lambda _: CLIENT_VERSION,
            "web3_sha3": lambda p: _data(keccak(_to_bytes(_param(p, 0, "data"), "data"))),
            "net_version": lambda _: str(evm.CHAIN_ID),
            "net_listening": lambda _: True,
            "net_peerCount": lambda _: "0x0",
            "eth_chainId": lambda _: _hex(evm.CHAIN_ID),
            "eth_syncing": lambda _: False,
            "eth_mining": lambda _: True,
            "eth_accounts": lambda _: [],
            "eth_coinbase": lambda _: _data(evm.COINBASE),
            "eth_gasPrice": lambda _: _hex(evm.GAS_PRICE_WEI),
            "eth_maxPriorityFeePerGas": lambda _: _hex(evm.PRIORITY_FEE_WEI),
            "eth_blobBaseFee": lambda _: "0x1",
            "eth_blockNumber": lambda _: _hex(self._engine.head.number),
            "eth_getBalance": self._get_balance,
            "eth_getTransactionCount": self._get_transaction_count,
            "eth_getCode": self._get_code,
            "eth_getStorageAt": self._get_storage_at,
            "eth_call": self._call,
            "eth_estimateGas": self._estimate_gas,
            "eth_sendRawTransaction": self._send_raw_transaction,
            "eth_sendTransaction": self._send_transaction,
            "eth_getTransactionReceipt": self._get_transaction_receipt,
            "eth_getTransactionByHash": self._get_transaction_by_hash,
            "eth_getTransactionByBlockNumberAndIndex": self._get_transaction_by_block_number_and_index,
            "eth_getTransactionByBlockHashAndIndex": self._get_transaction_by_block_hash_and_index,
            "eth_getBlockByNumber": self._get_block_by_number,
            "eth_getBlockByHash": self._get_block_by_hash,
            "eth_getBlockTransactionCountByNumber": self._get_block_transaction_count_by_number,
            "eth_getBlockTransactionCountByHash": self._get_block_transaction_count_by_hash,
            "eth_getBlockReceipts": self._get_block_receipts,
            "eth_getLogs": self._get_logs,
            "eth_feeHistory": self._fee_history,
            "eth_newFilter": self._new_filter,
            "eth_newBlockFilter": self._new_block_filter,
            "eth_getFilterChanges": self._get_filter_changes,
            "eth_getFilterLogs": self._get_filter_logs,
            "eth_uninstallFilter": self._uninstall_filter,
            "evm_increaseTime": self._increase_time,
            "evm_setNextBlockTimestamp": self._set_next_block_timestamp,
            "evm_mine": self._mine,
            "anvil_mine": self._mine_many,
            "hardhat_mine": self._mine_many,
            "anvil_setBalance": self._set_balance,
            "hardhat_setBalance": self._set_balance,
        }
        self._handlers = handlers
        # These call node methods that lock for the write and wait for the commit after unlocking,
        # so that one fsync can cover several clients' writes; calls and estimates (`_on_view`) hold
        # the node lock only to capture a state view; every other method runs under the node lock.
        # eth_sendRawTransaction does not wait: the hash is no confirmation, and reads
        # (the receipt first) wait for the commit, so the flush overlaps the trip to the client.
        self._self_locking = {
            "eth_sendRawTransaction",
            "evm_increaseTime",
            "evm_setNextBlockTimestamp",
            "evm_mine",
            "anvil_mine",
            "hardhat_mine",
            "anvil_setBalance",
            "hardhat_setBalance",
        }
        # These take the node lock only to capture a state view, and run on it unlocked.
        self._on_view = {"eth_call", "eth_estimateGas"}

    @property
    def _engine(self) -> evm.Engine:
        return self._node.engine

    def dispatch(self, method: str, params: Any = None) -> Any:
        """The JSON-ready result of `method(params)`; raises `RpcError`."""
        handler = self._handlers.get(method)
        if handler is None:
            raise RpcError(METHOD_NOT_FOUND, f"the method {method} does not exist/is not available")
        if params is None:
            params = []
        elif isinstance(params, tuple):
            params = list(params)
        elif not isinstance(params, list):
            raise _invalid(f"params of {method} must be an array")
        node = self._node
        try:
            if method in self._self_locking or method in self._on_view:
                return handler(params)
            with node.lock:
                if node.closed:
                    raise ChainError(f"the embedded chain in {node.data_dir} is closed")
                result = handler(params)
                seen = node.written_ticket
            # Show nothing a crash could take back: wait (outside the lock, so that one flush
            # serves many) until every write this answer may reflect is committed.
            node.wait_committed(seen)
            return result
        except ExecutionReverted as exc:
            raise RpcError(EXECUTION_REVERTED, str(exc), _data(exc.data)) from exc
        except ChainError as exc:
            # Rejections, failed calls, missing history, a closed or busy chain: all are answers
            # about this request, which geth reports as server errors with a message.
            raise RpcError(SERVER_ERROR, str(exc)) from exc
        except RpcError:
            raise
        except (TypeError, ValueError, KeyError, IndexError, OverflowError, AttributeError) as exc:
            # Params of a shape no check foresaw: an answer about this request, never a dropped connection.
            raise RpcError(INVALID_PARAMS, f"invalid params for {method}: {type(exc).__name__}: {exc}") from exc
        except Exception as exc:
            raise RpcError(INTERNAL_ERROR, f"internal error in {method}: {type(exc).__name__}: {exc}") from exc

    def commit_writes(self) -> None:
        """Wait until every write so far is committed (a server calls it after answering, so that
        the fsync of a transaction runs while its client reads the hash and asks for the receipt)."""
        node = self._node
        node.wait_committed(node.written_ticket)

    def handle(self, request: Any) -> dict[str, Any]:
        """A JSON-RPC 2.0 response object for one decoded request object (never raises)."""
        if not isinstance(request, dict):
            return error_response(None, RpcError(INVALID_REQUEST, "invalid request: a request must be a JSON object"))
        request_id = request.get("id")
        if isinstance(request_id, bool) or not isinstance(request_id, str | int | float | None):
            error = RpcError(INVALID_REQUEST, "invalid request: the id must be a string, a number or null")
            return error_response(None, error)
        if request.get("jsonrpc") != "2.0":
            error = RpcError(INVALID_REQUEST, 'invalid request: "jsonrpc" must be "2.0"')
            return error_response(request_id, error)
        method = request.get("method")
        if not isinstance(method, str):
            return error_response(request_id, RpcError(INVALID_REQUEST, "invalid request: the method must be a string"))
        try:
            result = self.dispatch(method, request.get("params"))
        except RpcError as exc:
            return error_response(request_id, exc)
        return {"jsonrpc": "2.0", "id": request_id, "result": result}

    # -- block tags -------------------------------------------------------------------------

    def _block_number(self, tag: Any) -> int:
        """The block a tag names, for reading blocks and logs ("pending" reads as latest)."""
        head = self._engine.head.number
        if isinstance(tag, dict):
            if "blockHash" in tag:
                return self._block_by_hash(_to_hash(tag["blockHash"], "blockHash")).number
            tag = tag.get("blockNumber", "latest")
        if tag in (None, "latest", "pending", "safe", "finalized"):
            return head
        if tag == "earliest":
            return 0
        return _to_quantity(tag, "block number")

    def _state_is_pending(self, tag: Any) -> bool:
        """Whether a state read at `tag` runs in the next block's context; older blocks raise."""
        engine = self._engine
        if tag == "pending":
            return True
        if isinstance(tag, dict) and "blockHash" in tag:
            block = self._block_by_hash(_to_hash(tag["blockHash"], "blockHash"))
            if block.number != engine.head.number:
                raise StateUnavailable(self._no_history(block.number))
            return False
        number = self._block_number(tag)
        if number == engine.head.number:
            return False
        if number == engine.head.number + 1:
            return True
        if number > engine.head.number:
            raise ChainError(f"block {number} is not mined yet (the latest block is {engine.head.number})")
        raise StateUnavailable(self._no_history(number))

    def _no_history(self, number: int) -> str:
        return (
            f"the embedded chain keeps only the latest state: block {number} is older than the "
            f"latest block {self._engine.head.number}; ask for 'latest'"
        )

    def _block_by_hash(self, block_id: bytes) -> Block:
        block = self._engine.blocks_by_hash.get(block_id)
        if block is None:
            raise ChainError(f"block 0x{block_id.hex()} not found")
        return block

    # -- accounts ---------------------------------------------------------------------------

    def _get_balance(self, params: Sequence[Any]) -> str:
        address = _to_address(_param(params, 0, "address"))
        self._state_is_pending(_param(params, 1, "block", "latest"))
        return _hex(self._engine.balance(address))

    def _get_transaction_count(self, params: Sequence[Any]) -> str:
        address = _to_address(_param(params, 0, "address"))
        self._state_is_pending(_param(params, 1, "block", "latest"))
        return _hex(self._engine.nonce(address))

    def _get_code(self, params: Sequence[Any]) -> str:
        address = _to_address(_param(params, 0, "address"))
        self._state_is_pending(_param(params, 1, "block", "latest"))
        return _data(self._engine.code(address))

    def _get_storage_at(self, params: Sequence[Any]) -> str:
        address = _to_address(_param(params, 0, "address"))
        slot = _to_quantity(_param(params, 1, "slot"), "slot")
        self._state_is_pending(_param(params, 2, "block", "latest"))
        return _data(self._engine.storage(address, slot).to_bytes(32, "big"))

    # -- execution --------------------------------------------------------------------------

    def _call_request(self, value: Any) -> CallRequest:
        if not isinstance(value, dict):
            raise _invalid(f"a call must be a transaction object, got {value!r}")
        data = value.get("input", value.get("data")) or "0x"
        sender = value.get("from")
        to = value.get("to")
        gas = value.get("gas")
        return CallRequest(
            sender=evm.ZERO_ADDRESS if sender is None else _to_address(sender, "from"),
            to=None if to in (None, "", "0x") else _to_address(to, "to"),
            gas=None if gas is None else _to_quantity(gas, "gas"),
            value=_to_quantity(value.get("value") or 0, "value"),
            data=_to_bytes(data, "input"),
        )

    def _call(self, params: Sequence[Any]) -> str:
        request = self._call_request(_param(params, 0, "transaction"))
        tag = _param(params, 1, "block", "latest")
        if _param(params, 2, "state overrides", None):
            raise _invalid("state overrides are not supported by the embedded chain")
        # As geth: no gas means the cap, and more than the cap is cut to it.
        cap = self.limits.gas_cap
        gas = cap if request.gas is None else min(request.gas, cap)
        return _data(self._run_on_view(tag, lambda view, pending: view.call(request, pending=pending, gas=gas)))

    def _estimate_gas(self, params: Sequence[Any]) -> str:
        request = self._call_request(_param(params, 0, "transaction"))
        cap = min(request.gas or evm.BLOCK_GAS_LIMIT, evm.BLOCK_GAS_LIMIT, self.limits.gas_cap)
        # Always in the next block's context, where the transaction will be mined: in the latest
        # block's context an SSTORE of block.number or block.timestamp can look like a cheap no-op.
        tag = _param(params, 1, "block", None)
        return _hex(self._run_on_view(tag, lambda view, _: view.estimate_gas(request, cap=cap)))

    def _run_on_view(self, tag: Any, work: Callable[[StateView, bool], _T]) -> _T:
        """`work(view, pending)` on a view of the latest state, outside the node lock, within the limits."""
        limits = self.limits
        if not self._call_slots.acquire(timeout=limits.evm_timeout_s):
            raise ChainError(
                f"too many calls in progress (at most {limits.max_concurrent_calls} at once); try again later"
            )
        self._count_call(+1)
        try:
            node = self._node
            with node.lock:
                if node.closed:
                    raise ChainError(f"the embedded chain in {node.data_dir} is closed")
                pending = self._state_is_pending(tag)
                view = capture(node.engine)
                seen = node.written_ticket
            node.wait_committed(seen)  # show nothing a crash could take back
            try:
                with _shared_watchdog().limit(limits.evm_timeout_s):
                    return work(view, pending)
            except DeadlineExceeded:
                raise ChainError(f"execution aborted (timeout = {limits.evm_timeout_s:g}s)") from None
        finally:
            self._count_call(-1)
            self._call_slots.release()

    def _count_call(self, step: int) -> None:
        # A call's pure-Python EVM loop holds the GIL until the interpreter forces a switch; a shorter
        # interval while calls run lets other requests in sooner (see server.py for measurements). Only
        # while they run: on a loaded machine forced switches also slow a lone writer down.
        if self._call_switch_interval_s is None:
            return
        with self._calls_lock:
            self._calls_running += step
            if step > 0 and self._calls_running == 1:
                self._idle_switch_interval_s = sys.getswitchinterval()
                sys.setswitchinterval(self._call_switch_interval_s)
            elif step < 0 and self._calls_running == 0:
                sys.setswitchinterval(self._idle_switch_interval_s)

    def _send_raw_transaction(self, params: Sequence[Any]) -> str:
        raw = _to_bytes(_param(params, 0, "raw transaction"), "raw transaction")
        allow = self.limits.allow_unprotected_txs
        return _data(self._node.send_raw_transaction(raw, wait=False, allow_unprotected=allow))

    def _send_transaction(self, params: Sequence[Any]) -> None:
        raise RpcError(
            METHOD_NOT_FOUND,
            "eth_sendTransaction is not supported: the embedded chain holds no keys; "
            "sign locally and use eth_sendRawTransaction",
        )

    # -- transactions and receipts ------------------------------------------------------------

    def _get_transaction_receipt(self, params: Sequence[Any]) -> dict[str, Any] | None:
        record = self._engine.txs.get(_to_hash(_param(params, 0, "transaction hash")))
        return None if record is None else self._receipt_json(record)

    def _get_transaction_by_hash(self, params: Sequence[Any]) -> dict[str, Any] | None:
        record = self._engine.txs.get(_to_hash(_param(params, 0, "transaction hash")))
        return None if record is None else self._transaction_json(record)

    def _transaction_at(self, block: Block, index: int) -> dict[str, Any] | None:
        if index >= len(block.tx_hashes):
            return None
        return self._transaction_json(self._engine.txs[block.tx_hashes[index]])

    def _get_transaction_by_block_number_and_index(self, params: Sequence[Any]) -> dict[str, Any] | None:
        block = self._block_or_none(self._block_number(_param(params, 0, "block")))
        index = _to_quantity(_param(params, 1, "index"), "index")
        return None if block is None else self._transaction_at(block, index)

    def _get_transaction_by_block_hash_and_index(self, params: Sequence[Any]) -> dict[str, Any] | None:
        block = self._engine.blocks_by_hash.get(_to_hash(_param(params, 0, "block hash")))
        index = _to_quantity(_param(params, 1, "index"), "index")
        return None if block is None else self._transaction_at(block, index)

    def _receipt_json(self, record: TxRecord) -> dict[str, Any]:
        block = self._engine.blocks[record.block_number]
        logs = [self._log_json(block, record, index, log) for index, log in enumerate(record.logs)]
        return {
            "transactionHash": _data(record.hash),
            "transactionIndex": "0x0",
            "blockHash": _data(block.hash),
            "blockNumber": _hex(block.number),
            "from": _data(record.sender),
            "to": _address_or_none(record.to),
            "cumulativeGasUsed": _hex(record.gas_used),
            "gasUsed": _hex(record.gas_used),
            "effectiveGasPrice": _hex(record.effective_gas_price),
            "contractAddress": _address_or_none(record.contract_address),
            "logs": logs,
            "logsBloom": _data(_bloom(record.logs)),
            "status": _hex(record.status),
            "type": _hex(record.type_id),
        }

    def _log_json(self, block: Block, record: TxRecord, log_index: int, log: LogEntry) -> dict[str, Any]:
        return {
            "address": _data(log.address),
            "topics": [_data(topic) for topic in log.topics],
            "data": _data(log.data),
            "blockNumber": _hex(block.number),
            "blockHash": _data(block.hash),
            "blockTimestamp": _hex(block.timestamp),
            "transactionHash": _data(record.hash),
            "transactionIndex": "0x0",
            "logIndex": _hex(log_index),
            "removed": False,
        }

    def _transaction_json(self, record: TxRecord) -> dict[str, Any]:
        tx = evm.decode_transaction(record.raw)
        block = self._engine.blocks[record.block_number]
        out: dict[str, Any] = {
            "blockHash": _data(block.hash),
            "blockNumber": _hex(block.number),
            "transactionIndex": "0x0",
            "hash": _data(record.hash),
            "type": _hex(record.type_id),
            "from": _data(record.sender),
            "to": _address_or_none(record.to),
            "nonce": _hex(tx.nonce),
            "gas": _hex(tx.gas),
            "gasPrice": _hex(record.effective_gas_price),
            "value": _hex(tx.value),
            "input": _data(tx.data),
            "r": _hex(tx.r),
            "s": _hex(tx.s),
        }
        if record.type_id == 0:
            out["v"] = _hex(cast(Any, tx).v)  # legacy transactions carry v, typed ones y_parity
            if tx.chain_id is not None:
                out["chainId"] = _hex(cast(int, tx.chain_id))  # typed transactions always name their chain
            return out
        out["chainId"] = _hex(cast(int, tx.chain_id))  # typed transactions always name their chain
        out["v"] = out["yParity"] = _hex(tx.y_parity)
        out["accessList"] = [
            {"address": _data(address), "storageKeys": [_data(slot.to_bytes(32, "big")) for slot in slots]}
            for address, slots in tx.access_list
        ]
        if record.type_id >= 2:
            out["maxFeePerGas"] = _hex(tx.max_fee_per_gas)
            out["maxPriorityFeePerGas"] = _hex(tx.max_priority_fee_per_gas)
        if record.type_id == 4:
            out["authorizationList"] = [
                {
                    "chainId": _hex(auth.chain_id),
                    "address": _data(auth.address),
                    "nonce": _hex(auth.nonce),
                    "yParity": _hex(auth.y_parity),
                    "r": _hex(auth.r),
                    "s": _hex(auth.s),
                }
                for auth in tx.authorization_list
            ]
        return out

    # -- blocks -----------------------------------------------------------------------------

    def _block_or_none(self, number: int) -> Block | None:
        blocks = self._engine.blocks
        return blocks[number] if number < len(blocks) else None

    def _get_block_by_number(self, params: Sequence[Any]) -> dict[str, Any] | None:
        block = self._block_or_none(self._block_number(_param(params, 0, "block")))
        full = bool(_param(params, 1, "full transactions", False))
        return None if block is None else self._block_json(block, full)

    def _get_block_by_hash(self, params: Sequence[Any]) -> dict[str, Any] | None:
        block = self._engine.blocks_by_hash.get(_to_hash(_param(params, 0, "block hash")))
        full = bool(_param(params, 1, "full transactions", False))
        return None if block is None else self._block_json(block, full)

    def _get_block_transaction_count_by_number(self, params: Sequence[Any]) -> str | None:
        block = self._block_or_none(self._block_number(_param(params, 0, "block")))
        return None if block is None else _hex(len(block.tx_hashes))

    def _get_block_transaction_count_by_hash(self, params: Sequence[Any]) -> str | None:
        block = self._engine.blocks_by_hash.get(_to_hash(_param(params, 0, "block hash")))
        return None if block is None else _hex(len(block.tx_hashes))

    def _get_block_receipts(self, params: Sequence[Any]) -> list[dict[str, Any]] | None:
        tag = _param(params, 0, "block")
        if isinstance(tag, str) and len(tag) == 66:
            block: Block | None = self._engine.blocks_by_hash.get(_to_hash(tag))
        else:
            block = self._block_or_none(self._block_number(tag))
        if block is None:
            return None
        return [self._receipt_json(record) for record in self._engine.block_records(block)]

    def _block_json(self, block: Block, full: bool) -> dict[str, Any]:
        records = self._engine.block_records(block)
        if len(records) == 1:
            transactions_root = _single_item_trie_root(records[0].raw)
            receipts_root = _single_item_trie_root(_receipt_encoding(records[0]))
        else:
            transactions_root = receipts_root = BLANK_ROOT_HASH
        transactions: list[Any] = (
            [self._transaction_json(record) for record in records]
            if full
            else [_data(record.hash) for record in records]
        )
        return {
            "number": _hex(block.number),
            "hash": _data(block.hash),
            "parentHash": _data(block.parent_hash),
            "nonce": "0x0000000000000000",
            "mixHash": _data(block.prevrandao),
            "sha3Uncles": _data(EMPTY_UNCLE_HASH),
            "logsBloom": _data(_bloom(log for record in records for log in record.logs)),
            "transactionsRoot": _data(transactions_root),
            # State roots are computed only at snapshots; see the engine's docstring.
            "stateRoot": _ZERO_HASH_HEX,
            "receiptsRoot": _data(receipts_root),
            "miner": _data(evm.COINBASE),
            "difficulty": "0x0",
            "totalDifficulty": "0x0",
            "extraData": "0x",
            "size": _hex(600 + sum(len(record.raw) for record in records)),
            "gasLimit": _hex(evm.BLOCK_GAS_LIMIT),
            "gasUsed": _hex(block.gas_used),
            "timestamp": _hex(block.timestamp),
            "transactions": transactions,
            "uncles": [],
            "baseFeePerGas": _hex(evm.BASE_FEE_WEI),
            "withdrawals": [],
            "withdrawalsRoot": _data(BLANK_ROOT_HASH),
            "blobGasUsed": "0x0",
            "excessBlobGas": "0x0",
            "parentBeaconBlockRoot": _ZERO_HASH_HEX,
            "requestsHash": _EMPTY_REQUESTS_HASH,
        }

    def _fee_history(self, params: Sequence[Any]) -> dict[str, Any]:
        count = _to_quantity(_param(params, 0, "block count"), "block count")
        newest = min(self._block_number(_param(params, 1, "newest block", "latest")), self._engine.head.number)
        percentiles = _reward_percentiles(_param(params, 2, "reward percentiles", None))
        count = min(count, newest + 1, _MAX_FEE_HISTORY_BLOCKS)
        oldest = newest - count + 1
        blocks = self._engine.blocks[oldest : newest + 1]
        history: dict[str, Any] = {
            "oldestBlock": _hex(oldest),
            "baseFeePerGas": [_hex(evm.BASE_FEE_WEI)] * (count + 1),
            "gasUsedRatio": [block.gas_used / evm.BLOCK_GAS_LIMIT for block in blocks],
            "baseFeePerBlobGas": ["0x1"] * (count + 1),
            "blobGasUsedRatio": [0.0] * count,
        }
        if percentiles:
            history["reward"] = [[_hex(evm.PRIORITY_FEE_WEI)] * len(percentiles) for _ in blocks]
        return history

    # -- logs and filters ---------------------------------------------------------------------

    def _get_logs(self, params: Sequence[Any]) -> list[dict[str, Any]]:
        criteria = self._checked_criteria(_param(params, 0, "filter"))
        if criteria.block_hash is not None:
            number = self._block_by_hash(criteria.block_hash).number
            return self._logs_between(criteria, number, number)
        return self._logs_between(
            criteria, self._block_number(criteria.from_block), self._block_number(criteria.to_block)
        )

    def _logs_between(self, criteria: _LogCriteria, first: int, last: int) -> list[dict[str, Any]]:
        engine = self._engine
        numbers = engine.log_block_numbers
        start = bisect.bisect_left(numbers, first)
        stop = bisect.bisect_right(numbers, last)
        found: list[dict[str, Any]] = []
        for number in numbers[start:stop]:
            block = engine.blocks[number]
            log_index = 0
            for record in engine.block_records(block):
                for log in record.logs:
                    if _log_matches(log, criteria):
                        found.append(self._log_json(block, record, log_index, log))
                    log_index += 1
        return found

    def _checked_criteria(self, value: Any) -> _LogCriteria:
        criteria = _log_criteria(value)
        # Refuse a malformed block tag now, not at the first poll.
        self._block_number(criteria.from_block)
        self._block_number(criteria.to_block)
        return criteria

    def _new_filter(self, params: Sequence[Any]) -> str:
        criteria = self._checked_criteria(_param(params, 0, "filter"))
        return self._add_filter(criteria)

    def _new_block_filter(self, params: Sequence[Any]) -> str:
        return self._add_filter(None)

    def _add_filter(self, criteria: _LogCriteria | None) -> str:
        now = time.monotonic()
        self._expire_filters(now)
        limit = self.limits.max_filters
        if len(self._filters) >= limit:
            raise ChainError(f"too many filters: {limit} are installed; uninstall some (eth_uninstallFilter)")
        filter_id = _hex(next(self._filter_ids))
        self._filters[filter_id] = _Filter(criteria, self._engine.head.number + 1, now)
        return filter_id

    def _expire_filters(self, now: float) -> None:
        # As geth: a filter nobody polled for the TTL is gone (the client went away without uninstalling).
        oldest = now - self.limits.filter_ttl_s
        for filter_id in [key for key, found in self._filters.items() if found.last_used < oldest]:
            del self._filters[filter_id]

    def _filter(self, params: Sequence[Any]) -> _Filter:
        filter_id = _param(params, 0, "filter id")
        now = time.monotonic()
        self._expire_filters(now)
        found = self._filters.get(filter_id) if isinstance(filter_id, str) else None
        if found is None:
            raise ChainError(f"filter not found: {filter_id!r}")
        found.last_used = now
        return found

    def _get_filter_changes(self, params: Sequence[Any]) -> list[Any]:
        watched = self._filter(params)
        head = self._engine.head.number
        first, watched.next_block = watched.next_block, head + 1
        if watched.criteria is None:
            return [_data(block.hash) for block in self._engine.blocks[first : head + 1]]
        criteria = watched.criteria
        # A moving bound ("latest") means "whatever is new"; a fixed one also clips the range.
        moving = (None, "latest", "pending")
        low = first if criteria.from_block in moving else max(first, self._block_number(criteria.from_block))
        high = head if criteria.to_block in moving else min(head, self._block_number(criteria.to_block))
        return self._logs_between(criteria, low, high)

    def _get_filter_logs(self, params: Sequence[Any]) -> list[dict[str, Any]]:
        criteria = self._filter(params).criteria
        if criteria is None:
            raise ChainError("eth_getFilterLogs needs a log filter, not a block filter")
        return self._logs_between(
            criteria, self._block_number(criteria.from_block), self._block_number(criteria.to_block)
        )

    def _uninstall_filter(self, params: Sequence[Any]) -> bool:
        filter_id = _param(params, 0, "filter id")
        return self._filters.pop(filter_id, None) is not None if isinstance(filter_id, str) else False

    # -- dev controls -----------------------------------------------------------------------

    def _increase_time(self, params: Sequence[Any]) -> int:
        return self._node.increase_time(_time_step(_param(params, 0, "seconds"), "seconds"))

    def _set_next_block_timestamp(self, params: Sequence[Any]) -> None:
        self._node.set_next_block_timestamp(_timestamp(_param(params, 0, "timestamp")))

    def _mine(self, params: Sequence[Any]) -> str:
        option = _param(params, 0, "timestamp", None)
        blocks = 1
        if isinstance(option, dict):
            blocks = _mine_count(option.get("blocks", 1))
            option = option.get("timestamp")
        timestamp = None if option is None else _timestamp(option)
        for _ in range(blocks):
            self._node.mine(timestamp)
            timestamp = None
        return "0x0"

    def _mine_many(self, params: Sequence[Any]) -> None:
        blocks = _mine_count(_param(params, 0, "blocks", 1))
        interval = _time_step(_param(params, 1, "interval", 1), "interval")
        for _ in range(blocks):
            self._node.mine()
            if interval:
                self._node.increase_time(interval)

    def _set_balance(self, params: Sequence[Any]) -> None:
        address = _to_address(_param(params, 0, "address"))
        balance = _to_quantity(_param(params, 1, "balance"), "balance")
        self._node.set_balance(address, balance)


def _reward_percentiles(value: Any) -> list[float]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > _MAX_REWARD_PERCENTILES:
        raise _invalid(f"reward percentiles must be an array of at most {_MAX_REWARD_PERCENTILES} numbers")
    previous = 0.0
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int | float) or not previous <= item <= 100:
            raise _invalid(f"reward percentiles must be numbers from 0 to 100 in ascending order, got {value!r}")
        previous = item
    return [float(item) for item in value]


def _mine_count(value: Any) -> int:
    blocks = _to_quantity(value, "blocks")
    if blocks > _MAX_MINE_BLOCKS:
        raise _invalid(f"mine at most {_MAX_MINE_BLOCKS} blocks per request, got {blocks}")
    return blocks


def _time_step(value: Any, name: str) -> int:
    seconds = _to_quantity(value, name)
    if seconds > _MAX_TIME_STEP_S:
        raise _invalid(f"{name} must be at most {_MAX_TIME_STEP_S} seconds, got {seconds}")
    return seconds


def _timestamp(value: Any) -> int:
    timestamp = _to_quantity(value, "timestamp")
    if timestamp > _MAX_TIMESTAMP:
        raise _invalid(f"timestamp must be below 2**63, got {timestamp}")
    return timestamp
