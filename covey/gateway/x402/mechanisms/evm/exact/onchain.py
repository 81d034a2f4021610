"""The `exact` scheme's chain calls: one transfer, a batch through PaymentBatcher, and finding past ones."""

from __future__ import annotations

from typing import Any

from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.contract import Contract
from web3.logs import DISCARD
from web3.types import TxReceipt

from covey.chain import Chain, compile_contract
from covey.gateway.x402.errors import Reason
from covey.gateway.x402.mechanisms.evm.eip3009 import (
    AUTHORIZATION_USED_TOPIC,
    TRANSFER_TOPIC,
    Authorization,
    split_signature,
)


def transfer_call(token: Contract, auth: Authorization, signature: str) -> Any:
    """The token's `transferWithAuthorization(from, to, value, validAfter, validBefore, nonce, v, r, s)`."""
    v, r, s = split_signature(signature)
    return token.functions.transferWithAuthorization(
        auth.payer, auth.payee, auth.value, auth.valid_after, auth.valid_before, auth.nonce, v, r, s
    )


def settle_through_batcher(
    chain: Chain, batcher: str, signer: LocalAccount, token: str, payments: list[tuple[Authorization, str]]
) -> tuple[str, set[str]]:
    """Send one `PaymentBatcher.settle` transaction; return its hash and the keys of the payments it executed.

    The batcher skips (and logs) a payment the token refuses instead of reverting, so the caller learns
    which ones failed from the missing keys. Raises `ChainError` if the transaction itself fails.
    """
    rows = []
    for auth, signature in payments:
        v, r, s = split_signature(signature)
        rows.append((auth.payer, auth.payee, auth.value, auth.valid_after, auth.valid_before, auth.nonce, v, r, s))
    contract = chain.w3.eth.contract(
        address=Web3.to_checksum_address(batcher), abi=compile_contract("PaymentBatcher").abi
    )
    receipt = chain.transact(contract.functions.settle(Web3.to_checksum_address(token), rows), signer)
    settled = {
        f"{str(event['args']['payer']).lower()}:0x{bytes(event['args']['nonce']).hex()}"
        for event in contract.events.PaymentSettled().process_receipt(receipt, errors=DISCARD)
    }
    return tx_hash(receipt), settled


def find_settlement(chain: Chain, token: str, auth: Authorization, lookback_blocks: int) -> str | None:
    """The hash of a past transaction that executed exactly `auth` (same payee and value), if any.

    A used nonce alone does not prove it: the payer may have signed another authorisation with the same
    nonce, or cancelled it. The token's `AuthorizationUsed(payer, nonce)` log finds the transaction; its
    `Transfer` log must show this payee and amount.
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
        if _has_transfer(receipt, token, auth):
            return tx_hash(receipt)
    return None


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
