"""Sealed outputs: a unit's outputs encrypted to its buyer, so nothing a provider publishes is of use to anyone else.

A buyer names its public key in the job (`sealed_to`); the provider seals every output before it uploads it and
commits the hash of a manifest that lists only sealed digests. The plaintext, and even its hash, never reach the
shared store: a watcher can neither load the weights nor commit them to the Arena before the buyer does (the
Arena gives given weights to the earliest commitment, and a commitment needs only their hash).

Scheme `x25519-hkdf-sha256-aes256gcm-v1`, ECIES-style and deterministic ("convergent"):
- the buyer's X25519 key is derived from its account key (HKDF), so a buyer keeps no second secret;
- the ephemeral key is derived from the recipient, the context (job, unit, output name) and the plaintext, so the
  same output seals to the same bytes on any machine: a verifier re-running a unit reproduces the provider's
  sealed result hash without holding the buyer's key, and the Market's hash check works unchanged;
- X25519(ephemeral, recipient) -> HKDF-SHA256 -> an AES-256-GCM key used for this one plaintext only (so a fixed
  nonce is safe), with the context as associated data: a sealed output cannot be passed off as another unit's.
What it cannot hide: the output's size, and equality with a plaintext someone already has (anyone who re-runs
the public job spec gets the same weights at the same cost: sealing stops copying, not re-training).
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from covey.compute.errors import SealError
from covey.errors import ValidationError

SEAL_SCHEME = "x25519-hkdf-sha256-aes256gcm-v1"
_MAGIC = b"CVSEAL1\n"
_KEY_BYTES = 32
_NONCE = b"\x00" * 12  # each key seals exactly one plaintext (it is derived from it)
_ACCOUNT_INFO = b"covey sealed outputs v1: recipient key"
_EPHEMERAL_INFO = b"covey sealed outputs v1: ephemeral key"
_AEAD_INFO = b"covey sealed outputs v1: aes-256-gcm key"


def sealing_key(account_key: bytes) -> X25519PrivateKey:
    """The X25519 key a buyer opens its sealed outputs with, derived from its account's private key."""
    seed = _hkdf(bytes(account_key), b"covey", _ACCOUNT_INFO)
    return X25519PrivateKey.from_private_bytes(seed)


def public_key_hex(key: X25519PrivateKey) -> str:
    """The 64-hex-digit public key to put in a job's `sealed_to`."""
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def recipient_of(account_key: bytes) -> str:
    """`sealed_to` for the account with this private key."""
    return public_key_hex(sealing_key(account_key))


def check_recipient(public_hex: str) -> str:
    """`public_hex` if outputs can be sealed to it (a valid X25519 key, not a low-order point), else an error."""
    try:
        recipient = X25519PublicKey.from_public_bytes(bytes.fromhex(public_hex))
        X25519PrivateKey.from_private_bytes(b"\x01" * _KEY_BYTES).exchange(recipient)
    except ValueError as exc:
        raise ValidationError(f"sealed_to is not a usable X25519 public key: {exc}") from exc
    return public_hex


def unit_context(job_digest: str, unit: int, name: str) -> bytes:
    """What binds a sealed output to its place: the job spec, the unit (the spec's own index) and the file name."""
    return f"covey-sealed:{job_digest}:{unit}:{name}".encode()


def seal(plaintext: bytes, recipient_hex: str, context: bytes) -> bytes:
    """`plaintext` encrypted to `recipient_hex`; the same inputs always give the same bytes."""
    recipient = bytes.fromhex(check_recipient(recipient_hex))
    digest = hashlib.sha256(plaintext).digest()
    ephemeral_seed = hmac.new(recipient, context + b"\x00" + digest, hashlib.sha256).digest()
    ephemeral = X25519PrivateKey.from_private_bytes(_hkdf(ephemeral_seed, recipient, _EPHEMERAL_INFO))
    ephemeral_public = ephemeral.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(recipient))
    key = _hkdf(shared, ephemeral_public + recipient, _AEAD_INFO)
    return _MAGIC + ephemeral_public + AESGCM(key).encrypt(_NONCE, plaintext, context)


def unseal(sealed: bytes, key: X25519PrivateKey, context: bytes) -> bytes:
    """The plaintext of a sealed output; `SealError` if this key or context does not open it."""
    if not sealed.startswith(_MAGIC) or len(sealed) < len(_MAGIC) + _KEY_BYTES + 16:
        raise SealError("not a sealed output")
    ephemeral_public = sealed[len(_MAGIC) : len(_MAGIC) + _KEY_BYTES]
    recipient = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    try:
        shared = key.exchange(X25519PublicKey.from_public_bytes(ephemeral_public))
        aead_key = _hkdf(shared, ephemeral_public + recipient, _AEAD_INFO)
        return AESGCM(aead_key).decrypt(_NONCE, sealed[len(_MAGIC) + _KEY_BYTES :], context)
    except (InvalidTag, ValueError) as exc:
        raise SealError(
            "this key does not open the sealed output (sealed to someone else, or for another unit)"
        ) from exc


def _hkdf(material: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=_KEY_BYTES, salt=salt, info=info).derive(material)
