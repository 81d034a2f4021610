"""Signatures between gateway and hosts: hosts sign their answers, gateways sign their requests.

A host signs `answerDigest(host, requestHash, outputHash)` (the HostRegistry's EIP-191 digest) with every
answer, so a gateway holding a wrong answer can prove on chain who gave it. A gateway signs each request's
body hash and a timestamp, so a host serves only gateways the HostRegistry lists (agents pay the gateway;
a host answering anyone would serve for free).
"""

from __future__ import annotations

from eth_abi import encode
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from eth_keys.exceptions import BadSignature
from web3 import Web3

GATEWAY_TIME_HEADER = "X-Covey-Gateway-Time"
GATEWAY_SIGNATURE_HEADER = "X-Covey-Gateway-Signature"


def request_hash(body: bytes) -> bytes:
    """What identifies a request to a host: the keccak256 of its exact body bytes."""
    return bytes(Web3.keccak(body))


def output_hash(text: str) -> bytes:
    """What identifies an answer: the keccak256 of its UTF-8 text."""
    return bytes(Web3.keccak(text.encode("utf-8")))


def _answer_message(registry: str, chain_id: int, host: str, request: bytes, output: bytes) -> bytes:
    inner = Web3.keccak(
        encode(
            ["address", "uint256", "address", "bytes32", "bytes32"],
            [Web3.to_checksum_address(registry), chain_id, Web3.to_checksum_address(host), request, output],
        )
    )
    return bytes(inner)


def sign_answer(account: LocalAccount, registry: str, chain_id: int, request: bytes, output: bytes) -> str:
    """The host's signature (0x hex, 65 bytes) over its answer `output` to `request`."""
    message = encode_defunct(primitive=_answer_message(registry, chain_id, account.address, request, output))
    return "0x" + bytes(account.sign_message(message).signature).hex()


def answer_signer(registry: str, chain_id: int, host: str, request: bytes, output: bytes, signature: str) -> str | None:
    """Who signed this answer as `host` (checksummed), or `None` for a malformed signature."""
    message = encode_defunct(primitive=_answer_message(registry, chain_id, host, request, output))
    try:
        return str(Account.recover_message(message, signature=bytes.fromhex(signature.removeprefix("0x"))))
    except (ValueError, TypeError, BadSignature):  # BadSignature: 65 bytes that are no signature (v out of range)
        return None


def _request_message(body: bytes, timestamp: int) -> bytes:
    return b"covey-gateway-request:" + str(timestamp).encode() + b":" + request_hash(body)


def sign_request(account: LocalAccount, body: bytes, timestamp: int) -> dict[str, str]:
    """The headers that prove a gateway sent `body` at `timestamp`."""
    signature = account.sign_message(encode_defunct(primitive=_request_message(body, timestamp))).signature
    return {GATEWAY_TIME_HEADER: str(timestamp), GATEWAY_SIGNATURE_HEADER: "0x" + bytes(signature).hex()}


def request_signer(body: bytes, timestamp: int, signature: str) -> str | None:
    """The gateway that signed `body` at `timestamp`, or `None` for a malformed signature."""
    message = encode_defunct(primitive=_request_message(body, timestamp))
    try:
        return str(Account.recover_message(message, signature=bytes.fromhex(signature.removeprefix("0x"))))
    except (ValueError, TypeError, BadSignature):  # BadSignature: 65 bytes that are no signature (v out of range)
        return None
