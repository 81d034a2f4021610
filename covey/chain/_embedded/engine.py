"""The EVM engine: one live py-evm Prague state that every transaction is applied to.

Sealing a py-evm block per transaction (state root, tries, chain DB) would cap the chain near
200 tx/s, so blocks here are *virtual*: every transaction gets its own block (automine) with a
number, hash, timestamp and PREVRANDAO that the EVM sees, while receipts, transactions and
blocks live in in-memory indexes. State roots are only computed at snapshots, so blocks report
a zero `stateRoot`, and block hashes are a keccak over the fields we do keep, not a real header.
Only the latest state is kept: calls against an older block raise `StateUnavailable`.

Contracts may nest calls `MAX_CALL_DEPTH` (100) deep, not Ethereum's 1,024: py-evm recurses about
six Python frames per EVM call, and covey keeps the interpreter's recursion limit at its default
(1,000; see `covey.chain._recursion`). A fixed depth makes the outcome of a deep transaction the
same whichever thread runs or replays it, where a `RecursionError` would depend on the caller's stack.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import rlp
from coincurve import PublicKey
from eth._utils.address import generate_contract_address
from eth.abc import ComputationAPI, SignedTransactionAPI
from eth.constants import BLANK_ROOT_HASH, CREATE_CONTRACT_ADDRESS, ZERO_ADDRESS
from eth.db.atomic import AtomicDB
from eth.db.backends.memory import MemoryDB
from eth.exceptions import StackDepthLimit
from eth.vm.execution_context import ExecutionContext
from eth.vm.forks.prague import PragueVM
from eth.vm.message import Message
from eth_typing import Address, BlockNumber, Hash32
from eth_utils import ValidationError as EthValidationError
from eth_utils import keccak
from eth_utils.logging import get_extended_debug_logger

from covey.chain._rlp import rlp_encode, rlp_item_end, rlp_length_prefix, rlp_list_payload_start
from covey.chain.devkeys import DEV_ACCOUNT_COUNT as DEV_ACCOUNT_COUNT
from covey.chain.devkeys import DEV_MNEMONIC as DEV_MNEMONIC
from covey.chain.devkeys import dev_addresses
from covey.chain.devkeys import dev_private_keys as dev_private_keys
from covey.chain.errors import ExecutionFailed as ExecutionFailed
from covey.chain.errors import ExecutionReverted as ExecutionReverted
from covey.chain.errors import StateUnavailable as StateUnavailable
from covey.chain.errors import TransactionRejected
from covey.chain.errors import decode_revert_reason as decode_revert_reason
from covey.chain.units import ETH, GWEI
from covey.errors import ChainError

CHAIN_ID = 31337
BLOCK_GAS_LIMIT = 30_000_000
BASE_FEE_WEI = GWEI
GAS_PRICE_WEI = 2 * GWEI
PRIORITY_FEE_WEI = GWEI
COINBASE = ZERO_ADDRESS
DEV_BALANCE_WEI = 10_000 * ETH
ZERO_HASH = b"\x00" * 32
# BLOCKHASH can see this many ancestors (the EVM rule).
BLOCKHASH_WINDOW = 256
# EIP-7623 (Prague) calldata floor: a transaction must pay at least this per calldata token.
_FLOOR_GAS_PER_TOKEN = 10
_TX_BASE_GAS = 21_000
_BLOB_TX_TYPE = 3

VM_CLASS = PragueVM
_TX_BUILDER = PragueVM.get_transaction_builder()
_DYNAMIC_FEE_TX_TYPE = 2
_MAX_JUMP_ANALYSES = 4096
# The deepest call a contract may make (Ethereum allows 1,024): ~100 x 6-7 Python frames per EVM call
# stays well inside the default recursion limit of 1,000, with room for the caller's own frames.
MAX_CALL_DEPTH = 100

# EIP-2: a signature's s must be in the lower half of the curve order, or (r, n - s) would be a second
# valid signature of the same transaction under another hash.
_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_MAX_S = _SECP256K1_N // 2


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One event emitted by a transaction (topics are 32 bytes each)."""

    address: bytes
    topics: tuple[bytes, ...]
    data: bytes


@dataclass(frozen=True, slots=True)
class TxRecord:
    """A mined transaction and its receipt; the signed fields are decoded from `raw` on demand."""

    hash: bytes
    raw: bytes
    block_number: int
    sender: bytes
    to: bytes | None
    type_id: int
    nonce: int
    status: int
    gas_used: int
    effective_gas_price: int
    contract_address: bytes | None
    logs: tuple[LogEntry, ...]


@dataclass(frozen=True, slots=True)
class Block:
    """A virtual block: one transaction (automine) or none (`evm_mine`)."""

    number: int
    hash: bytes
    parent_hash: bytes
    timestamp: int
    prevrandao: bytes
    gas_used: int
    tx_hashes: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class CheckedTransaction:
    """A decoded transaction that passed `Engine.check_transaction`, with its raw bytes and hash."""

    tx: SignedTransactionAPI
    raw: bytes
    hash: bytes


@dataclass(frozen=True, slots=True)
class CallRequest:
    """An unsigned message for `eth_call`/`eth_estimateGas`; `to` is None to simulate a deploy."""

    sender: bytes = ZERO_ADDRESS
    to: bytes | None = None
    gas: int | None = None
    value: int = 0
    data: bytes = b""


# py-evm checks each JUMP target by scanning the code behind it for PUSH data, per message, so
# a contract's checks are redone on every call. Which positions are valid depends only on the
# code, so the memo sets are shared by every run of the same code (a set add is atomic).
_jump_analyses: dict[bytes, tuple[set[int], set[int]]] = {}
_PRAGUE_STATE = PragueVM.get_state_class()


class _Computation(_PRAGUE_STATE.computation_class):  # type: ignore[name-defined,misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        code = self.msg.code
        analysis = _jump_analyses.get(code)
        if analysis is None:
            if len(_jump_analyses) >= _MAX_JUMP_ANALYSES:
                _jump_analyses.clear()
            analysis = _jump_analyses[code] = (set(), set())
        self.code.valid_positions, self.code.invalid_positions = analysis

    @classmethod
    def apply_message(cls, state: Any, message: Any, transaction_context: Any, parent_computation: Any = None) -> Any:
        # Fails the calling frame (a VMError, like any other), deterministically, long before py-evm's
        # own check at 1,024 and before Python's recursion limit.
        if message.depth > MAX_CALL_DEPTH:
            raise StackDepthLimit(f"call depth {message.depth} exceeds the embedded EVM's limit of {MAX_CALL_DEPTH}")
        return super().apply_message(state, message, transaction_context, parent_computation)


class _AccountDB(_PRAGUE_STATE.account_db_class):  # type: ignore[name-defined,misc]
    def _set_account(self, address: Address, account: Any) -> None:
        # The same bytes as `rlp.encode(account, sedes=Account)`, without inferring sedes.
        self._account_cache[address] = account
        self._journaltrie[address] = rlp_encode(
            [account.nonce, account.balance, account.storage_root, account.code_hash]
        )


class _TransactionExecutor(_PRAGUE_STATE.transaction_executor_class):  # type: ignore[name-defined,misc]
    def build_evm_message(self, transaction: SignedTransactionAPI) -> Message:
        """Cancun's message building minus its debug line, which hex-encodes the whole contract code
        (and hashes the calldata) on every transaction even with debug logging off."""
        if transaction.type_id == _BLOB_TX_TYPE:
            return cast(Message, super().build_evm_message(transaction))
        state = self.vm_state
        sender = transaction.sender
        state.delta_balance(sender, -1 * transaction.gas * state.get_gas_price(transaction))
        state.increment_nonce(sender)
        refund = self.calc_message_refund(transaction)
        if transaction.to == CREATE_CONTRACT_ADDRESS:
            created: Address | None = generate_contract_address(sender, state.get_nonce(sender) - 1)
            data, code, is_delegation = b"", transaction.data, False
        else:
            created, data = None, transaction.data
            code, delegation_address = self.get_code_at_address(transaction.to)
            is_delegation = delegation_address is not None
        return Message(
            gas=transaction.gas - transaction.intrinsic_gas,
            to=transaction.to,
            sender=sender,
            value=transaction.value,
            data=data,
            code=code,
            create_address=created,  # type: ignore[arg-type]  # None for calls, as py-evm itself passes
            refund=refund,
            is_delegation=is_delegation,
        )


class _State(_PRAGUE_STATE):  # type: ignore[valid-type,misc]
    computation_class = _Computation
    account_db_class = _AccountDB
    transaction_executor_class = _TransactionExecutor
    # py-evm looks its logger up by name on every use (several times per transaction).
    logger = get_extended_debug_logger("eth.vm.state.PragueState")


_STATE_CLASS = _State


def block_hash(
    parent_hash: bytes, number: int, timestamp: int, prevrandao: bytes, gas_used: int, tx_hashes: Sequence[bytes]
) -> bytes:
    """The virtual block's hash: keccak of the fields that define it (deterministic on replay)."""
    fields = [parent_hash, number, timestamp, prevrandao, gas_used, BASE_FEE_WEI, list(tx_hashes)]
    return keccak(rlp_encode(fields))


def prevrandao_for(parent_hash: bytes, number: int) -> bytes:
    """PREVRANDAO of block `number`: a hash of (parent hash, number), so it differs per block."""
    return keccak(parent_hash + number.to_bytes(32, "big"))


def decode_transaction(raw: bytes) -> SignedTransactionAPI:
    """Decode a signed raw transaction (legacy, EIP-2930, EIP-1559, EIP-7702)."""
    try:
        return _TX_BUILDER.decode(raw)
    except (rlp.exceptions.RLPException, EthValidationError, ValueError, TypeError, IndexError) as exc:
        raise TransactionRejected(f"invalid raw transaction: {exc}") from exc
    except RecursionError:
        # pyrlp decodes nested lists recursively: a few KB of nesting reach the (default) recursion limit.
        raise TransactionRejected("invalid raw transaction: RLP lists nested too deeply") from None


def recover_dynamic_fee_sender(raw: bytes, tx: SignedTransactionAPI) -> bytes | None:
    """The sender of a decoded type-2 transaction, recovered straight from its raw bytes.

    py-evm rebuilds and RLP-encodes the unsigned transaction through its sedes to get the
    signed message; the message is the first nine fields of `raw` under a new list prefix.
    Returns None when it cannot (py-evm's recovery then says why).
    """
    if raw[:1] != b"\x02" or tx.type_id != _DYNAMIC_FEE_TX_TYPE:
        return None
    try:
        start = position = rlp_list_payload_start(raw, 1)
        for _ in range(9):
            position = rlp_item_end(raw, position)
        message = b"\x02" + rlp_length_prefix(position - start, 0xC0) + raw[start:position]
        signature = tx.r.to_bytes(32, "big") + tx.s.to_bytes(32, "big") + bytes([tx.y_parity])
        public_key = PublicKey.from_signature_and_message(signature, keccak(message), hasher=None)
    except (ValueError, OverflowError, IndexError):
        return None
    return keccak(public_key.format(compressed=False)[1:])[-20:]


def calldata_floor_gas(data: bytes) -> int:
    """The EIP-7623 minimum gas of a transaction carrying `data`."""
    zeros = data.count(0)
    tokens = zeros + 4 * (len(data) - zeros)
    return _TX_BASE_GAS + _FLOOR_GAS_PER_TOKEN * tokens


class Engine:
    """One chain's live state, blocks, transactions and logs; not thread-safe (the node locks)."""

    def __init__(
        self,
        db: AtomicDB,
        state_root: bytes,
        history: Iterable[tuple[Block, Sequence[TxRecord]]],
        *,
        time_offset_s: int = 0,
        next_timestamp: int | None = None,
    ) -> None:
        self.db = db
        self.blocks: list[Block] = []
        self.blocks_by_hash: dict[bytes, Block] = {}
        self.txs: dict[bytes, TxRecord] = {}
        # Numbers of the blocks that emitted logs, ascending: eth_getLogs scans only these.
        self.log_block_numbers: list[int] = []
        for block, records in history:
            self._index(block, records)
        if not self.blocks:
            raise ChainError("an embedded chain needs at least its genesis block")
        self.time_offset_s = time_offset_s
        self.next_timestamp = next_timestamp
        head = self.head
        context = self._context(head.number, head.timestamp, head.prevrandao, BASE_FEE_WEI)
        self.state = _STATE_CLASS(db, context, state_root)

    @classmethod
    def genesis(cls, timestamp: int | None = None) -> Engine:
        """A new chain whose block 0 funds the dev accounts with `DEV_BALANCE_WEI` each."""
        stamp = int(time.time()) if timestamp is None else timestamp
        randao = prevrandao_for(ZERO_HASH, 0)
        block = Block(0, block_hash(ZERO_HASH, 0, stamp, randao, 0, ()), ZERO_HASH, stamp, randao, 0, ())
        engine = cls(AtomicDB(), BLANK_ROOT_HASH, [(block, ())])
        for address in dev_addresses():
            engine.state.set_balance(Address(address), DEV_BALANCE_WEI)
        engine.state.lock_changes()
        return engine

    # -- reading ----------------------------------------------------------------------------

    @property
    def head(self) -> Block:
        """The latest block."""
        return self.blocks[-1]

    def balance(self, address: bytes) -> int:
        return self.state.get_balance(Address(address))

    def nonce(self, address: bytes) -> int:
        return self.state.get_nonce(Address(address))

    def code(self, address: bytes) -> bytes:
        return self.state.get_code(Address(address))

    def storage(self, address: bytes, slot: int) -> int:
        return self.state.get_storage(Address(address), slot)

    def block_records(self, block: Block) -> list[TxRecord]:
        """The transactions (with receipts) of `block`, in order."""
        return [self.txs[tx_hash] for tx_hash in block.tx_hashes]

    # -- time control -----------------------------------------------------------------------

    def peek_timestamp(self) -> int:
        """The timestamp the next block will get: a pinned one, else wall clock plus offset."""
        if self.next_timestamp is not None:
            return self.next_timestamp
        return max(self.head.timestamp, int(time.time()) + self.time_offset_s)

    def increase_time(self, seconds: int) -> int:
        """Move the chain clock forward by `seconds`; returns the total offset in seconds."""
        if seconds < 0:
            raise ChainError(f"cannot move time backwards (asked for {seconds} s)")
        self.time_offset_s += seconds
        return self.time_offset_s

    def set_next_timestamp(self, timestamp: int) -> None:
        """Pin the next block's timestamp; later blocks continue from it."""
        if timestamp < self.head.timestamp:
            raise ChainError(f"timestamp {timestamp} is before the latest block's timestamp {self.head.timestamp}")
        self.next_timestamp = timestamp

    def _consume_timestamp(self, timestamp: int) -> None:
        if self.next_timestamp is not None:
            # Like hardhat and anvil, the clock continues from a pinned timestamp.
            self.next_timestamp = None
            self.time_offset_s = timestamp - int(time.time())

    # -- writing ----------------------------------------------------------------------------

    def check_transaction(self, raw: bytes, *, allow_unprotected: bool = True) -> CheckedTransaction:
        """Decode `raw` and check it against the next block; raises `TransactionRejected`.

        `allow_unprotected=False` refuses legacy transactions without a chain id (not EIP-155), as
        geth does over RPC; replay keeps the default, since the journal holds only accepted ones.
        """
        tx = decode_transaction(raw)
        if tx.type_id == _BLOB_TX_TYPE:
            raise TransactionRejected("blob transactions (type 3) are not supported by the embedded chain")
        if tx.chain_id is None and not allow_unprotected:
            raise TransactionRejected(
                "only replay-protected (EIP-155) transactions allowed over RPC: sign with a chain id "
                "(or serve the chain with --allow-unprotected-txs)"
            )
        if tx.s > _MAX_S or tx.s == 0 or not 0 < tx.r < _SECP256K1_N:
            raise TransactionRejected(
                "invalid transaction: signature values out of range (s must be at most secp256k1n/2, EIP-2)"
            )
        tx_hash = keccak(raw)
        if tx_hash in self.txs:
            raise TransactionRejected(f"already known: transaction 0x{tx_hash.hex()} is already mined")
        if tx.chain_id is not None and tx.chain_id != CHAIN_ID:
            raise TransactionRejected(
                f"invalid chain id: the transaction is for chain {tx.chain_id}, this chain is {CHAIN_ID}"
            )
        try:
            tx.validate()
            fast_sender = recover_dynamic_fee_sender(raw, tx)
            if fast_sender is not None:
                # `sender` is a cached_property: seed it so that py-evm never recovers it again.
                tx.__dict__["sender"] = Address(fast_sender)
            sender = tx.sender
        except (EthValidationError, ValueError) as exc:
            raise TransactionRejected(f"invalid transaction: {exc}") from exc
        who = f"address 0x{sender.hex()}"
        if tx.gas > BLOCK_GAS_LIMIT:
            raise TransactionRejected(
                f"exceeds block gas limit: transaction gas {tx.gas}, block gas limit {BLOCK_GAS_LIMIT}"
            )
        minimum_gas = max(tx.intrinsic_gas, calldata_floor_gas(tx.data))
        if tx.gas < minimum_gas:
            raise TransactionRejected(f"intrinsic gas too low: have {tx.gas}, want {minimum_gas}")
        if tx.max_fee_per_gas < BASE_FEE_WEI:
            raise TransactionRejected(
                f"max fee per gas less than block base fee: {who}, "
                f"maxFeePerGas: {tx.max_fee_per_gas}, baseFee: {BASE_FEE_WEI}"
            )
        if tx.max_priority_fee_per_gas > tx.max_fee_per_gas:
            raise TransactionRejected(
                f"max priority fee per gas higher than max fee per gas: {who}, "
                f"maxPriorityFeePerGas: {tx.max_priority_fee_per_gas}, maxFeePerGas: {tx.max_fee_per_gas}"
            )
        expected_nonce = self.state.get_nonce(sender)
        if tx.nonce < expected_nonce:
            raise TransactionRejected(f"nonce too low: {who}, tx: {tx.nonce} state: {expected_nonce}")
        if tx.nonce > expected_nonce:
            raise TransactionRejected(
                f"nonce too high: {who}, tx: {tx.nonce} state: {expected_nonce} "
                "(the embedded chain mines at once and keeps no queue of future nonces)"
            )
        cost = tx.gas * tx.max_fee_per_gas + tx.value
        balance = self.state.get_balance(sender)
        if balance < cost:
            raise TransactionRejected(f"insufficient funds for gas * price + value: {who} have {balance} want {cost}")
        return CheckedTransaction(tx, raw, tx_hash)

    def execute(self, checked: CheckedTransaction, timestamp: int) -> TxRecord:
        """Mine a checked transaction in a new block at `timestamp`; returns its receipt."""
        tx, raw, tx_hash = checked.tx, checked.raw, checked.hash
        parent = self.head
        number = parent.number + 1
        randao = prevrandao_for(parent.hash, number)
        state = self.state
        state.execution_context = self._context(number, timestamp, randao, BASE_FEE_WEI)
        # A checkpoint costs microseconds and keeps the state whole if py-evm raises mid-way.
        checkpoint = state.snapshot()
        try:
            computation = state.apply_transaction(tx)
        except BaseException as exc:
            state.revert(checkpoint)
            if isinstance(exc, RecursionError):
                # Only a caller with an unusually deep stack gets here (MAX_CALL_DEPTH stops contracts).
                raise TransactionRejected("the transaction nests too deeply for this process's Python stack") from exc
            if isinstance(exc, EthValidationError):
                # py-evm's own checks of the transaction, for any rule `check_transaction` does not repeat.
                raise TransactionRejected(f"invalid transaction: {exc}") from exc
            raise
        state.commit(checkpoint)
        state.lock_changes()
        is_create = tx.to == CREATE_CONTRACT_ADDRESS
        sender = tx.sender
        record = TxRecord(
            hash=tx_hash,
            raw=raw,
            block_number=number,
            sender=sender,
            to=None if is_create else tx.to,
            type_id=tx.type_id or 0,
            nonce=tx.nonce,
            status=0 if computation.is_error else 1,
            gas_used=VM_CLASS.finalize_gas_used(tx, computation),
            effective_gas_price=state.get_gas_price(tx),
            contract_address=generate_contract_address(sender, tx.nonce) if is_create else None,
            logs=_logs_of(computation),
        )
        block_id = block_hash(parent.hash, number, timestamp, randao, record.gas_used, (tx_hash,))
        block = Block(number, block_id, parent.hash, timestamp, randao, record.gas_used, (tx_hash,))
        self._consume_timestamp(timestamp)
        self._index(block, (record,))
        return record

    def mine_empty(self, timestamp: int) -> Block:
        """Mine a block without transactions at `timestamp`."""
        if timestamp < self.head.timestamp:
            raise ChainError(f"timestamp {timestamp} is before the latest block's {self.head.timestamp}")
        parent = self.head
        number = parent.number + 1
        randao = prevrandao_for(parent.hash, number)
        block = Block(
            number, block_hash(parent.hash, number, timestamp, randao, 0, ()), parent.hash, timestamp, randao, 0, ()
        )
        self._consume_timestamp(timestamp)
        self._index(block, ())
        return block

    def persist_state(self) -> bytes:
        """Write pending state changes into the trie database; returns the state root."""
        self.state.persist()
        return self.state.state_root

    def read_state_node(self, key: bytes) -> bytes:
        """A trie node or code blob of the state database, by hash."""
        return self.db[key]

    def rebase(self, nodes: dict[bytes, bytes]) -> None:
        """Continue on a database holding only `nodes` (the persisted state, minus garbage)."""
        root = self.state.state_root
        context = self.state.execution_context
        self.db = AtomicDB(MemoryDB(nodes))
        self.state = _STATE_CLASS(self.db, context, root)

    def set_balance(self, address: bytes, balance_wei: int) -> None:
        """Dev control: overwrite an account's balance (like `anvil_setBalance`)."""
        self.state.set_balance(Address(address), balance_wei)
        self.state.lock_changes()

    def _index(self, block: Block, records: Sequence[TxRecord]) -> None:
        if block.number != len(self.blocks):
            raise ChainError(f"block {block.number} does not follow block {len(self.blocks) - 1}")
        self.blocks.append(block)
        self.blocks_by_hash[block.hash] = block
        for record in records:
            self.txs[record.hash] = record
        if any(record.logs for record in records):
            self.log_block_numbers.append(block.number)

    def _context(self, number: int, timestamp: int, randao: bytes, base_fee: int) -> ExecutionContext:
        return execution_context(self.blocks, number, timestamp, randao, base_fee)


def execution_context(
    blocks: Sequence[Block], number: int, timestamp: int, randao: bytes, base_fee: int
) -> ExecutionContext:
    """The EVM's view of block `number` (its parent is `blocks[number - 1]`)."""

    def ancestor_hashes() -> Iterator[Hash32]:
        # Newest first, as BLOCKHASH expects; lazily, since most transactions never ask.
        for ancestor in range(number - 1, max(-1, number - 1 - BLOCKHASH_WINDOW), -1):
            yield Hash32(blocks[ancestor].hash)

    return ExecutionContext(
        coinbase=COINBASE,
        timestamp=timestamp,
        block_number=BlockNumber(number),
        difficulty=0,
        mix_hash=Hash32(randao),
        gas_limit=BLOCK_GAS_LIMIT,
        prev_hashes=ancestor_hashes(),
        chain_id=CHAIN_ID,
        base_fee_per_gas=base_fee,
        excess_blob_gas=0,
    )


def _logs_of(computation: ComputationAPI) -> tuple[LogEntry, ...]:
    return tuple(
        LogEntry(bytes(address), tuple(topic.to_bytes(32, "big") for topic in topics), bytes(data))
        for address, topics, data in computation.get_log_entries()
    )
