"""web3.py over an `EmbeddedNode` in process: a provider without HTTP or JSON text, and `embedded_web3`,
whose `eth` module sends raw transactions and reads receipts without web3's formatter layers."""

from __future__ import annotations

import functools
import itertools
from typing import Any, cast

from eth_typing import ChecksumAddress, HexStr
from eth_utils import to_checksum_address
from hexbytes import HexBytes
from web3 import Web3
from web3.datastructures import AttributeDict
from web3.eth import Eth
from web3.main import get_default_modules
from web3.providers import BaseProvider
from web3.types import RPCEndpoint, RPCResponse, TxReceipt, _Hash32

from covey.chain._embedded.engine import Block, LogEntry, TxRecord
from covey.chain._embedded.limits import RpcLimits
from covey.chain._embedded.node import EmbeddedNode
from covey.chain._embedded.rpc import Dispatcher
from covey.chain._embedded.rpc import _bloom as bloom
from covey.chain.errors import RpcError
from covey.errors import ChainError

# In process the caller is the chain's own user, so a call may run longer than over JSON-RPC (where
# geth's 5 s applies): the timeout is only a backstop against a runaway loop, not a bound on strangers.
IN_PROCESS_LIMITS = RpcLimits(evm_timeout_s=60.0)


class EmbeddedProvider(BaseProvider):
    """`Web3(EmbeddedProvider(node))` talks to the embedded chain; safe to share across threads."""

    def __init__(self, node: EmbeddedNode, limits: RpcLimits | None = None) -> None:
        super().__init__()
        self.node = node
        self.dispatcher = Dispatcher(node, IN_PROCESS_LIMITS if limits is None else limits)
        # next() on itertools.count is atomic under the GIL, so ids stay unique across threads.
        self._request_ids = itertools.count()

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        request_id = next(self._request_ids)
        try:
            result = self.dispatcher.dispatch(method, params)
        except RpcError as exc:
            return cast(RPCResponse, {"jsonrpc": "2.0", "id": request_id, "error": exc.to_json()})
        return cast(RPCResponse, {"jsonrpc": "2.0", "id": request_id, "result": result})

    def is_connected(self, show_traceback: bool = False) -> bool:
        return not self.node.closed


def embedded_web3(node: EmbeddedNode) -> Web3:
    """A `Web3` on `node` whose `eth.send_raw_transaction` and receipt reads take the fast path."""
    modules = get_default_modules()
    modules["eth"] = EmbeddedEth
    w3 = Web3(EmbeddedProvider(node), modules=modules)
    cast(EmbeddedEth, w3.eth).fast_middleware = tuple(w3.middleware_onion)
    return w3


class EmbeddedEth(Eth):
    """`Eth` that answers the two calls of every transaction (send, receipt) straight from the node.

    web3's request formatters, middleware and result formatters cost more than executing an
    ERC-20 transfer, so these calls skip them and build exactly what they would have returned.
    Anything unusual (an error, a missing receipt, another provider, middleware added by the
    user) goes the ordinary way, so behaviour stays web3's own.
    """

    # The middleware (by name) that the fast path stands in for: the default stack, set by
    # `embedded_web3`; with any other stack every call goes through web3.
    fast_middleware: tuple[str, ...] | None = None

    def _fast_node(self) -> tuple[EmbeddedNode, Dispatcher] | None:
        provider = self.w3.provider
        if not isinstance(provider, EmbeddedProvider) or tuple(self.w3.middleware_onion) != self.fast_middleware:
            return None
        return provider.node, provider.dispatcher

    def send_raw_transaction(self, transaction: HexStr | bytes) -> HexBytes:
        fast = self._fast_node()
        if fast is None or not isinstance(transaction, bytes | bytearray):
            return super().send_raw_transaction(transaction)
        try:
            # Not waiting for the commit: reading the receipt (or anything else) waits for it.
            allow = fast[1].limits.allow_unprotected_txs
            return HexBytes(fast[0].send_raw_transaction(bytes(transaction), wait=False, allow_unprotected=allow))
        except ChainError:
            # Rejected and not journaled: let web3 raise its usual error through the RPC layer.
            return super().send_raw_transaction(transaction)

    def get_transaction_receipt(self, transaction_hash: _Hash32) -> TxReceipt:
        receipt = self._fast_receipt(transaction_hash)
        return receipt if receipt is not None else super().get_transaction_receipt(transaction_hash)

    def wait_for_transaction_receipt(
        self, transaction_hash: _Hash32, timeout: float = 120, poll_latency: float = 0.1
    ) -> TxReceipt:
        receipt = self._fast_receipt(transaction_hash)
        if receipt is not None:
            return receipt
        return super().wait_for_transaction_receipt(transaction_hash, timeout, poll_latency)

    def _fast_receipt(self, transaction_hash: _Hash32) -> TxReceipt | None:
        fast = self._fast_node()
        if fast is None or not isinstance(transaction_hash, bytes) or len(transaction_hash) != 32:
            return None
        node = fast[0]
        with node.lock:
            engine = node.engine
            record = None if node.closed else engine.txs.get(bytes(transaction_hash))
            if record is None:
                return None
            block = engine.blocks[record.block_number]
            seen = node.written_ticket
        node.wait_committed(seen)
        return receipt_of(block, record)


@functools.lru_cache(maxsize=4096)
def _checksum(address: bytes) -> ChecksumAddress:
    return to_checksum_address(address)


def _log_of(block: Block, record: TxRecord, hash_bytes: HexBytes, index: int, log: LogEntry) -> AttributeDict[str, Any]:
    return AttributeDict(
        {
            "address": _checksum(log.address),
            "topics": [HexBytes(topic) for topic in log.topics],
            "data": HexBytes(log.data),
            "blockNumber": block.number,
            "blockHash": HexBytes(block.hash),
            "blockTimestamp": hex(block.timestamp),  # web3 has no formatter for it: it stays hex
            "transactionHash": hash_bytes,
            "transactionIndex": 0,
            "logIndex": index,
            "removed": False,
        }
    )


def receipt_of(block: Block, record: TxRecord) -> TxReceipt:
    """The receipt web3 would return for `record` (same keys, types and values as over JSON-RPC)."""
    hash_bytes = HexBytes(record.hash)
    return cast(
        TxReceipt,
        AttributeDict(
            {
                "transactionHash": hash_bytes,
                "transactionIndex": 0,
                "blockHash": HexBytes(block.hash),
                "blockNumber": block.number,
                "from": _checksum(record.sender),
                "to": None if record.to is None else _checksum(record.to),
                "cumulativeGasUsed": record.gas_used,
                "gasUsed": record.gas_used,
                "effectiveGasPrice": record.effective_gas_price,
                "contractAddress": None if record.contract_address is None else _checksum(record.contract_address),
                "logs": [_log_of(block, record, hash_bytes, index, log) for index, log in enumerate(record.logs)],
                "logsBloom": HexBytes(bloom(record.logs)),
                "status": record.status,
                "type": record.type_id,
            }
        ),
    )
