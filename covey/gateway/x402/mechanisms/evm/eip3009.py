"""EIP-3009 `TransferWithAuthorization` off chain: the token's EIP-712 domain, hashing, signing, recovery."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from coincurve import PublicKey
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from web3 import Web3
from web3.contract import Contract

from covey.chain import Chain

# USDC's FiatTokenV2 type, byte for byte: the token hashes exactly this string.
TRANSFER_WITH_AUTHORIZATION_TYPE = (
    "TransferWithAuthorization("
    "address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)"
)
TRANSFER_WITH_AUTHORIZATION_TYPEHASH = keccak(text=TRANSFER_WITH_AUTHORIZATION_TYPE)
DOMAIN_TYPEHASH = keccak(text="EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)")
TYPED_DATA_FIELDS = [
    {"name": "from", "type": "address"},
    {"name": "to", "type": "address"},
    {"name": "value", "type": "uint256"},
    {"name": "validAfter", "type": "uint256"},
    {"name": "validBefore", "type": "uint256"},
    {"name": "nonce", "type": "bytes32"},
]
# Signatures with s above n/2 are the malleable twin of a valid one; tokens (and snekmate's ecdsa) refuse them.
SECP256K1_HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0
UINT256_MAX = 2**256 - 1

_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_BYTES32 = re.compile(r"^0x[0-9a-fA-F]{64}$")
_UINT = re.compile(r"^[0-9]{1,78}$")
_SIGNATURE = re.compile(r"^0x[0-9a-fA-F]{130}$")

# Only what x402 needs, so the facilitator also works with a real chain's USDC.
EIP3009_TOKEN_ABI: list[dict[str, Any]] = [
    {"type": "function", "name": "name", "stateMutability": "view", "inputs": [],
     "outputs": [{"name": "", "type": "string"}]},
    {"type": "function", "name": "version", "stateMutability": "view", "inputs": [],
     "outputs": [{"name": "", "type": "string"}]},
    {"type": "function", "name": "decimals", "stateMutability": "view", "inputs": [],
     "outputs": [{"name": "", "type": "uint8"}]},
    {"type": "function", "name": "DOMAIN_SEPARATOR", "stateMutability": "view", "inputs": [],
     "outputs": [{"name": "", "type": "bytes32"}]},
    {"type": "function", "name": "eip712Domain", "stateMutability": "view", "inputs": [],
     "outputs": [{"name": "fields", "type": "bytes1"}, {"name": "name", "type": "string"},
                 {"name": "version", "type": "string"}, {"name": "chainId", "type": "uint256"},
                 {"name": "verifyingContract", "type": "address"}, {"name": "salt", "type": "bytes32"},
                 {"name": "extensions", "type": "uint256[]"}]},
    {"type": "function", "name": "balanceOf", "stateMutability": "view",
     "inputs": [{"name": "owner", "type": "address"}], "outputs": [{"name": "", "type": "uint256"}]},
    {"type": "function", "name": "authorizationState", "stateMutability": "view",
     "inputs": [{"name": "authorizer", "type": "address"}, {"name": "nonce", "type": "bytes32"}],
     "outputs": [{"name": "", "type": "bool"}]},
    {"type": "function", "name": "transferWithAuthorization", "stateMutability": "nonpayable",
     "inputs": [{"name": "from", "type": "address"}, {"name": "to", "type": "address"},
                {"name": "value", "type": "uint256"}, {"name": "validAfter", "type": "uint256"},
                {"name": "validBefore", "type": "uint256"}, {"name": "nonce", "type": "bytes32"},
                {"name": "v", "type": "uint8"}, {"name": "r", "type": "bytes32"}, {"name": "s", "type": "bytes32"}],
     "outputs": []},
    {"type": "event", "name": "AuthorizationUsed", "anonymous": False,
     "inputs": [{"name": "authorizer", "type": "address", "indexed": True},
                {"name": "nonce", "type": "bytes32", "indexed": True}]},
    {"type": "event", "name": "Transfer", "anonymous": False,
     "inputs": [{"name": "sender", "type": "address", "indexed": True},
                {"name": "receiver", "type": "address", "indexed": True},
                {"name": "value", "type": "uint256", "indexed": False}]},
]  # fmt: skip
AUTHORIZATION_USED_TOPIC = keccak(text="AuthorizationUsed(address,bytes32)")
TRANSFER_TOPIC = keccak(text="Transfer(address,address,uint256)")


@dataclass(frozen=True)
class Authorization:
    """The signed fields of one `TransferWithAuthorization`, parsed from the wire's strings."""

    payer: str
    payee: str
    value: int
    valid_after: int
    valid_before: int
    nonce: bytes

    @classmethod
    def from_wire(cls, data: Any) -> Authorization:
        """Parse the spec's `authorization` object (all strings); raise `ValueError` naming the bad field."""
        if not isinstance(data, dict):
            raise ValueError("authorization must be an object")
        fields: dict[str, str] = {}
        for name in ("from", "to", "value", "validAfter", "validBefore", "nonce"):
            value = data.get(name)
            if not isinstance(value, str):
                raise ValueError(f"authorization.{name} must be a string")
            fields[name] = value
        for name, pattern, what in (
            ("from", _ADDRESS, "address"),
            ("to", _ADDRESS, "address"),
            ("nonce", _BYTES32, "32 bytes"),
        ):
            if not pattern.match(fields[name]):
                raise ValueError(f"authorization.{name} must be 0x-prefixed hex of {what}")
        for name in ("value", "validAfter", "validBefore"):
            if not _UINT.match(fields[name]) or int(fields[name]) > UINT256_MAX:
                raise ValueError(f"authorization.{name} must be a decimal uint256 string")
        return cls(
            payer=checksum_address(fields["from"]),
            payee=checksum_address(fields["to"]),
            value=int(fields["value"]),
            valid_after=int(fields["validAfter"]),
            valid_before=int(fields["validBefore"]),
            nonce=bytes.fromhex(fields["nonce"][2:]),
        )

    def to_wire(self) -> dict[str, str]:
        """The spec's `authorization` object."""
        return {
            "from": self.payer,
            "to": self.payee,
            "value": str(self.value),
            "validAfter": str(self.valid_after),
            "validBefore": str(self.valid_before),
            "nonce": "0x" + self.nonce.hex(),
        }

    @property
    def key(self) -> str:
        """The idempotency key of this authorisation: the token allows each (payer, nonce) once."""
        return f"{self.payer.lower()}:0x{self.nonce.hex()}"

    def message(self) -> dict[str, Any]:
        """The EIP-712 message for signing libraries."""
        return {
            "from": self.payer,
            "to": self.payee,
            "value": self.value,
            "validAfter": self.valid_after,
            "validBefore": self.valid_before,
            "nonce": self.nonce,
        }


@dataclass(frozen=True)
class TokenDomain:
    """A token's EIP-712 domain as the token itself reports it, with the separator it hashes with."""

    name: str
    version: str
    chain_id: int
    verifying_contract: str
    separator: bytes

    def as_typed_data(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "chainId": self.chain_id,
            "verifyingContract": self.verifying_contract,
        }


def token_contract(chain: Chain, address: str) -> Contract:
    """A handle on an EIP-3009 token with only the functions x402 uses."""
    return chain.w3.eth.contract(address=Web3.to_checksum_address(address), abi=EIP3009_TOKEN_ABI)


def read_domain(chain: Chain, token_address: str) -> TokenDomain:
    """Ask the token for its EIP-712 domain (EIP-5267 `eip712Domain`, else `name` and `version`)."""
    token = token_contract(chain, token_address)
    try:
        _fields, name, version, chain_id, contract, _salt, _ext = token.functions.eip712Domain().call()
    except Exception:  # tokens without EIP-5267 (older USDC deployments) revert or return nothing
        name = token.functions.name().call()
        version = token.functions.version().call()
        chain_id, contract = chain.chain_id, token.address
    separator = domain_separator(str(name), str(version), int(chain_id), str(contract))
    try:
        on_chain = bytes(token.functions.DOMAIN_SEPARATOR().call())
    except Exception:
        on_chain = separator
    # The token's own separator is the ground truth: a domain with a salt or other fields hashes differently.
    return TokenDomain(str(name), str(version), int(chain_id), Web3.to_checksum_address(contract), on_chain)


def domain_separator(name: str, version: str, chain_id: int, verifying_contract: str) -> bytes:
    """The EIP-712 separator of a (name, version, chainId, verifyingContract) domain."""
    return keccak(
        DOMAIN_TYPEHASH
        + keccak(text=name)
        + keccak(text=version)
        + chain_id.to_bytes(32, "big")
        + bytes(12)
        + bytes.fromhex(verifying_contract[2:])
    )


def signing_digest(separator: bytes, auth: Authorization) -> bytes:
    """The 32 bytes the payer signs: keccak(0x1901 || domainSeparator || structHash)."""
    struct_hash = keccak(
        TRANSFER_WITH_AUTHORIZATION_TYPEHASH
        + bytes(12)
        + bytes.fromhex(auth.payer[2:])
        + bytes(12)
        + bytes.fromhex(auth.payee[2:])
        + auth.value.to_bytes(32, "big")
        + auth.valid_after.to_bytes(32, "big")
        + auth.valid_before.to_bytes(32, "big")
        + auth.nonce
    )
    return keccak(b"\x19\x01" + separator + struct_hash)


def split_signature(signature: str) -> tuple[int, bytes, bytes]:
    """(v, r, s) of a 65-byte hex signature, with v as 27/28; raise `ValueError` if it cannot be valid."""
    if not isinstance(signature, str) or not _SIGNATURE.match(signature):
        raise ValueError("signature must be 65 bytes of 0x-prefixed hex")
    raw = bytes.fromhex(signature[2:])
    r, s, v = raw[:32], raw[32:64], raw[64]
    if v < 27:
        v += 27  # some signers emit the recovery id (0/1) instead of 27/28
    if v not in (27, 28):
        raise ValueError(f"signature v must be 27 or 28, not {v}")
    if int.from_bytes(s, "big") > SECP256K1_HALF_N:
        raise ValueError("signature s is in the upper half of the curve order (malleable)")
    return v, r, s


def recover_signer(separator: bytes, auth: Authorization, signature: str) -> str:
    """The address that signed `auth` under the domain `separator`; `ValueError` if none can."""
    return recover_digest_signer(signing_digest(separator, auth), signature)


def recover_digest_signer(digest: bytes, signature: str) -> str:
    """The checksum address whose key signed the 32-byte `digest`; `ValueError` if none can.

    libsecp256k1 through coincurve directly: a payment's one expensive check, several times faster than
    going through eth_keys' objects.
    """
    v, r, s = split_signature(signature)
    try:
        public_key = PublicKey.from_signature_and_message(r + s + bytes([v - 27]), digest, hasher=None)
    except Exception as exc:  # coincurve raises bare Exception for signatures that recover no key
        raise ValueError(f"signature does not recover: {exc}") from exc
    return checksum_address("0x" + keccak(public_key.format(compressed=False)[1:])[-20:].hex())


@lru_cache(maxsize=65_536)
def checksum_address(address: str) -> str:
    """`address` in EIP-55 checksum case; cached, since the same payers and payees come back every request."""
    return str(Web3.to_checksum_address(address))


def sign_authorization(account: LocalAccount, domain: dict[str, Any], auth: Authorization) -> str:
    """Sign `auth` as EIP-712 typed data under `domain` (name, version, chainId, verifyingContract),
    the way wallets and the x402 SDK do; returns 0x-hex."""
    signed = account.sign_typed_data(
        domain_data=domain,
        message_types={"TransferWithAuthorization": TYPED_DATA_FIELDS},
        message_data=auth.message(),
    )
    return "0x" + bytes(signed.signature).hex()
