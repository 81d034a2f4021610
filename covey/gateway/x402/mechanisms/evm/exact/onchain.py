"""The `exact` scheme's chain calls: one transfer, a batch through PaymentBatcher, and finding past ones."""

from __future__ import annotations

from typing import Any, cast

from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractFunction
from web3.exceptions import ContractLogicError, Web3RPCError
from web3.types import TxReceipt

from covey.chain import Chain
from covey.chain.chain import GAS_MARGIN, revert_reason
from covey.errors import ChainError
from covey.gateway.x402.errors import Reason
from covey.gateway.x402.mechanisms.evm.eip3009 import (
    AUTHORIZATION_USED_TOPIC,
    TRANSFER_TOPIC,
    Authorization,
    split_signature,
)

# PaymentBatcher's ABI, the two pieces the gateway needs: `settle(token, payments)` and its success event.
_PAYMENT_TUPLE = "(address,address,uint256,uint256,uint256,bytes32,uint8,bytes32,bytes32)"
BATCH_SETTLE_SELECTOR = keccak(text=f"settle(address,{_PAYMENT_TUPLE}[])")[:4]
PAYMENT_SETTLED_TOPIC = keccak(text="PaymentSettled(address,address,bytes32,address,uint256)")
# A batch's gas limit, instead of an estimate that would run the whole batch once more on the node: a
# `transferWithAuthorization` costs at most ~60k (new nonce slot, a payee's first balance, logs); the
# unused rest is not charged. 256 payments stay under a 30M block.
BATCH_BASE_GAS = 100_000
BATCH_GAS_PER_PAYMENT = 100_000
AUTHORIZATION_STATE_SELECTOR = keccak(text="authorizationState(address,bytes32)")[:4]
# What a transfer costs more when the payee's balance is zero by the time it is mined than when the gas was
# estimated: writing a zero slot costs 22,100 gas (cold), a non-zero one 5,000 (EIP-2929/2200). Someone can
# empty the payee in between (a gateway passing what agents paid on to its hosts does), and a 20% margin
# over a ~68k estimate (~14k) does not cover it: the transfer ran out of gas and the payment failed.
PAYEE_EMPTIED_GAS = 22_100 - 5_000


class EncodedCall:
    """A contract call whose calldata is already ABI-encoded, sent through `Chain.transact` like any other.

    web3 normalises and validates a 100-payment batch field by field, twice (gas estimate, then the
    transaction), which costs the gateway more CPU than serving the requests the batch pays for; eth_abi
    encodes it once. `Chain.transact` asks a call only for `fn_name`, `estimate_gas` and `build_transaction`.
    """

    def __init__(self, w3: Web3, to: str, data: bytes, fn_name: str) -> None:
        self.w3 = w3
        self.to = Web3.to_checksum_address(to)
        self.data = "0x" + data.hex()
        self.fn_name = fn_name

    def estimate_gas(self, params: dict[str, Any]) -> int:
        return int(self.w3.eth.estimate_gas({**params, "to": self.to, "data": self.data}))  # type: ignore[typeddict-item]

    def build_transaction(self, params: dict[str, Any]) -> dict[str, Any]:
        return {**params, "to": self.to, "data": self.data}


def transfer_call(token: Contract, auth: Authorization, signature: str) -> Any:
    """The token's `transferWithAuthorization(from, to, value, validAfter, validBefore, nonce, v, r, s)`."""
    v, r, s = split_signature(signature)
    return token.functions.transferWithAuthorization(
        auth.payer, auth.payee, auth.value, auth.valid_after, auth.valid_before, auth.nonce, v, r, s
    )


def transfer_gas(fn: ContractFunction, sender: str) -> int:
    """A gas limit for one `transferWithAuthorization`: the estimate now, plus what others can change first.

    The estimate runs the token's checks: a refused transfer raises `ChainError` with the token's reason
    before anything is sent. Gas left over is not charged, so the headroom costs nothing.
    """
    try:
        estimate = int(fn.estimate_gas({"from": sender}))
    except (ContractLogicError, Web3RPCError) as exc:
        reason = revert_reason(exc)
        raise ChainError(f"{fn.fn_name} reverted: {reason}", reason=reason) from exc
    return int(estimate * GAS_MARGIN) + PAYEE_EMPTIED_GAS


def settle_through_batcher(
    chain: Chain, batcher: str, signer: LocalAccount, token: str, payments: list[tuple[Authorization, str]]
) -> tuple[str, set[str]]:
    """Send one `PaymentBatcher.settle` transaction; return its hash and the keys of the payments it executed.

    The batcher skips (and logs) a payment the token refuses instead of reverting, so the caller learns
    which ones failed from the missing keys. Raises `ChainError` if the transaction itself fails.
    """
    call = EncodedCall(chain.w3, batcher, batch_settle_calldata(token, payments), "settle")
    gas = BATCH_BASE_GAS + BATCH_GAS_PER_PAYMENT * len(payments)
    receipt = chain.transact(cast(ContractFunction, call), signer, gas=gas)
    return tx_hash(receipt), settled_keys(receipt, batcher)


def batch_settle_calldata(token: str, payments: list[tuple[Authorization, str]]) -> bytes:
    """`PaymentBatcher.settle(token, payments)` as calldata.

    Every field of a payment is one static 32-byte word, so the ABI encoding is plain concatenation: the
    token, the array's offset (two words in), its length, then nine words per payment.
    """
    words = [_word(bytes.fromhex(token[2:])), _word(64), _word(len(payments))]
    for auth, signature in payments:
        v, r, s = split_signature(signature)
        words += [
            _word(bytes.fromhex(auth.payer[2:])),
            _word(bytes.fromhex(auth.payee[2:])),
            _word(auth.value),
            _word(auth.valid_after),
            _word(auth.valid_before),
            auth.nonce,
            _word(v),
            r,
            s,
        ]
    return BATCH_SETTLE_SELECTOR + b"".join(words)


def _word(value: int | bytes) -> bytes:
    """One left-padded ABI word: a uint, or an address's 20 bytes."""
    if isinstance(value, bytes):
        return value.rjust(32, b"\0")
    return value.to_bytes(32, "big")


def settled_keys(receipt: TxReceipt, batcher: str) -> set[str]:
    """The keys (payer:nonce) of the payments a batch executed, from its `PaymentSettled` logs."""
    keys = set()
    for entry in receipt["logs"]:
        topics = [bytes(topic) for topic in entry["topics"]]
        if entry["address"].lower() == batcher.lower() and len(topics) == 4 and topics[0] == PAYMENT_SETTLED_TOPIC:
            keys.add(f"0x{topics[2][12:].hex()}:0x{topics[3].hex()}")
    return keys


def find_settlement(
    chain: Chain, token: str, auth: Authorization, lookback_blocks: int, *, sender: str | None = None
) -> str | None:
    """The hash of a past transaction that executed exactly `auth` (same payee and value), if any.

    A used nonce alone does not prove it: the payer may have signed another authorisation with the same
    nonce, or cancelled it. The token's `AuthorizationUsed(payer, nonce)` log finds the transaction; its
    `Transfer` log must show this payee and amount. With `sender`, only a transaction sent from that
    account counts (a facilitator's own settlement, not someone else's use of the same authorisation).
    """
    token = Web3.to_checksum_address(token)
    latest = chain.block_number()
    logs = chain.w3.eth.get_logs(
        {
            "address": token,
            "fromBlock": max(0, latest - lookback_blocks),
            "toBlock": latest,
            "topics": [
                "0x" + AUTHORIZATION_USED_TOPIC.hex(),
                "0x" + bytes(12).hex() + auth.payer[2:].lower(),
                "0x" + auth.nonce.hex(),
            ],
        }
    )
    for entry in logs:
        receipt = chain.w3.eth.get_transaction_receipt(entry["transactionHash"])
        if sender is not None and str(receipt["from"]).lower() != sender.lower():
            continue
        if _has_transfer(receipt, token, auth):
            return tx_hash(receipt)
    return None


def authorization_used(chain: Chain, token: str, auth: Authorization) -> bool:
    """The token's `authorizationState(payer, nonce)`: whether it has used (or cancelled) this nonce.

    One raw `eth_call`: batched settlement asks this on the request path, where web3's contract machinery
    would cost several times the call itself.
    """
    data = AUTHORIZATION_STATE_SELECTOR + _word(bytes.fromhex(auth.payer[2:])) + auth.nonce
    reply = chain.w3.provider.make_request(
        "eth_call",  # type: ignore[arg-type]
        [{"to": Web3.to_checksum_address(token), "data": "0x" + data.hex()}, "latest"],
    )
    if "error" in reply or not isinstance(reply.get("result"), str):
        raise ChainError(f"authorizationState on {token} failed: {reply.get('error')}")
    return int(reply["result"], 16) != 0


def reason_from_revert(message: str) -> Reason:
    """Map a token's revert message (ours, or USDC's) to the spec's reason code."""
    text = message.lower()
    if "not yet valid" in text:
        return Reason.VALID_AFTER
    if "expired" in text:
        return Reason.VALID_BEFORE
    if "used or canceled" in text or "authorization is used" in text:
        return Reason.NONCE_ALREADY_USED
    if "exceeds balance" in text or "insufficient" in text:
        return Reason.INSUFFICIENT_FUNDS
    if "signature" in text:
        return Reason.INVALID_SIGNATURE
    return Reason.INVALID_TRANSACTION_STATE


def tx_hash(receipt: TxReceipt) -> str:
    return "0x" + bytes(receipt["transactionHash"]).hex()


def _has_transfer(receipt: TxReceipt, token: str, auth: Authorization) -> bool:
    for entry in receipt["logs"]:
        topics = [bytes(t) for t in entry["topics"]]
        if (
            entry["address"].lower() == token.lower()
            and len(topics) == 3
            and topics[0] == TRANSFER_TOPIC
            and topics[1][12:] == bytes.fromhex(auth.payer[2:])
            and topics[2][12:] == bytes.fromhex(auth.payee[2:])
            and int.from_bytes(bytes(entry["data"]), "big") == auth.value
        ):
            return True
    return False
