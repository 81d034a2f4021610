"""Secure aggregation by pairwise additive masks: the aggregator learns the sum of the updates and nothing else.

The masking of Bonawitz et al., "Practical secure aggregation for privacy-preserving machine
learning" (CCS 2017), without its dropout recovery. Each pair of parties (i, j) shares a seed;
both expand it with the same PRG into a mask m_ij; i adds it, j subtracts it, so every mask
cancels in the sum. Values are fixed point (round(x * 2^scale_bits)) in int64 two's complement,
added modulo 2^64, so cancellation is exact; float addition would leave rounding residue.

Pair seeds: derive one from a secret only the two parties hold, e.g. the output of an X25519
exchange of their published keys (`cryptography`'s `X25519PrivateKey.exchange`), through
`pair_seed`; any 16+ byte seed the pair agrees on privately works. The PRG is numpy's PCG64 (its
raw output stream is fixed across numpy versions) seeded with sha256(domain, seed, round_tag).
A mask must never be reused: two rounds under one mask reveal the difference of the updates,
so `round_tag` (e.g. task id and round number) is required.

Limits: every party in the pairwise graph must deliver, or the masks do not cancel (Bonawitz's
secret-shared seed recovery is not implemented); the aggregator cannot check that a party
clipped, scaled or even sent a sane update, because it never sees one.

Which robust rules combine with it (`SECURE_AGG_COMPATIBILITY`):

    rule                         with secure aggregation
    fedavg                       yes: parties send w_i * u_i and w_i (as an extra coordinate); sum / sum
    norm clipping (client-side)  yes, but unverifiable: nobody sees an update to check its norm
    DP noise (client-side)       yes: the noise sums like the updates
    coordinate_median            no: needs every coordinate of every update
    trimmed_mean                 no: needs to sort individual values
    krum, multi_krum             no: needs pairwise distances between individual updates
    fltrust, fltrust_committee   no: needs each update's direction and norm
    covey_default                no: clips to the median norm of individual updates, then trims
    covey_trust                  no: keeps or drops each update by its cosine with the reference,
                                 its norm against the median, and whether it copies another
    per-update voter scoring     no: voters cannot evaluate an update they cannot see, so a
                                 round can only be judged as a whole; an honest proposer then
                                 shares the fate of a poisoner in the same round
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from types import MappingProxyType

import numpy as np
import numpy.typing as npt

from covey.alliance.aggregators._base import Vector, as_vector, check_int
from covey.alliance.errors import AggregationError

DEFAULT_SCALE_BITS = 24  # resolution 2^-24 ~ 6e-8 per value: finer than float32 deltas near 1
MIN_SEED_BYTES = 16
_DOMAIN = b"covey/alliance/secure-agg/v1"
_INT64_LIMIT = 2.0**63

SECURE_AGG_COMPATIBILITY: Mapping[str, str] = MappingProxyType(
    {
        "fedavg": "compatible: the aggregator needs only the (weighted) sum",
        "coordinate_median": "incompatible: needs every coordinate of every individual update",
        "trimmed_mean": "incompatible: sorts individual values per coordinate",
        "krum": "incompatible: needs distances between individual updates",
        "multi_krum": "incompatible: needs distances between individual updates",
        "fltrust": "incompatible: needs each update's direction and norm",
        "fltrust_committee": "incompatible: needs each update's direction and norm",
        "covey_default": "incompatible: clips to the median norm of individual updates, then trims",
        "covey_trust": "incompatible: judges each update by its cosine with the reference, its norm and its bytes",
    }
)


def check_rule_compatible(rule_name: str) -> None:
    """Return if the aggregation rule `rule_name` works on masked updates; raise `AggregationError` saying why not."""
    verdict = SECURE_AGG_COMPATIBILITY.get(rule_name)
    if verdict is None:
        raise AggregationError(f"secure_agg: unknown aggregation rule {rule_name!r}")
    if verdict.startswith("incompatible"):
        raise AggregationError(f"secure_agg: {rule_name} cannot run on masked updates ({verdict})")


def pair_seed(shared_secret: bytes, index_a: int, index_b: int) -> bytes:
    """The 32-byte seed parties `index_a` and `index_b` share, from a secret both hold (either order gives it)."""
    if not isinstance(shared_secret, bytes) or len(shared_secret) < MIN_SEED_BYTES:
        raise AggregationError(f"secure_agg: a shared secret has at least {MIN_SEED_BYTES} bytes")
    low, high = sorted((_check_index(index_a, "index_a"), _check_index(index_b, "index_b")))
    if low == high:
        raise AggregationError(f"secure_agg: a pair needs two different parties, got {low} twice")
    material = _DOMAIN + b"/pair" + len(shared_secret).to_bytes(4, "little") + shared_secret
    return hashlib.sha256(material + low.to_bytes(8, "little") + high.to_bytes(8, "little")).digest()


def pair_mask(seed: bytes, round_tag: bytes, dim: int) -> npt.NDArray[np.uint64]:
    """The `dim` uint64 mask words a pair's seed expands to in the round `round_tag`."""
    _check_seed(seed)
    _check_round_tag(round_tag)
    material = _DOMAIN + b"/mask" + len(seed).to_bytes(4, "little") + seed + round_tag
    digest = hashlib.sha256(material).digest()
    generator = np.random.PCG64(int.from_bytes(digest, "little"))
    return generator.random_raw(check_int(dim, "dim", "secure_agg", low=1))


def encode_fixed_point(
    update: np.ndarray, n_parties: int, scale_bits: int = DEFAULT_SCALE_BITS
) -> npt.NDArray[np.uint64]:
    """`round(update * 2^scale_bits)` (ties to even) as int64 two's complement words in uint64.

    Raises `AggregationError` when a value is so large that the sum of `n_parties` such values
    could overflow int64, which would wrap the sum silently.
    """
    vector = as_vector(update, "secure_agg: update")
    parties = check_int(n_parties, "n_parties", "secure_agg", low=1)
    scale = 2.0 ** check_int(scale_bits, "scale_bits", "secure_agg", low=0, high=52)
    largest = float(np.max(np.abs(vector)))
    if largest * scale * parties >= _INT64_LIMIT:
        raise AggregationError(
            f"secure_agg: |value| up to {largest:g} times 2^{scale_bits} times {parties} parties overflows int64;"
            " lower scale_bits or clip the update"
        )
    return np.rint(vector * scale).astype(np.int64).view(np.uint64)


def mask(
    update: np.ndarray,
    my_index: int,
    peer_seeds: Mapping[int, bytes],
    *,
    round_tag: bytes,
    scale_bits: int = DEFAULT_SCALE_BITS,
) -> npt.NDArray[np.uint64]:
    """The update in fixed point plus this party's pairwise masks (mod 2^64): uniformly random words alone.

    `peer_seeds` maps every other party's index to the seed this party shares with it. For each
    peer, the mask is added if `my_index < peer` and subtracted otherwise, so summing every
    party's masked update cancels all masks. Raises `AggregationError` for no peers, a peer equal
    to `my_index`, a short seed, an empty `round_tag` or a value too large for fixed point.
    """
    me = _check_index(my_index, "my_index")
    if not peer_seeds:
        raise AggregationError("secure_agg: masking needs at least one peer; alone, the update would be in the clear")
    masked = encode_fixed_point(update, len(peer_seeds) + 1, scale_bits)
    for peer, seed in sorted(peer_seeds.items()):
        if _check_index(peer, "peer index") == me:
            raise AggregationError(f"secure_agg: party {me} lists itself among its peers")
        words = pair_mask(seed, round_tag, masked.shape[0])
        # uint64 array arithmetic wraps modulo 2^64, which is exactly the group the masks live in.
        masked = masked + words if me < peer else masked - words
    return masked


def unmask_sum(masked_updates: Sequence[np.ndarray], *, scale_bits: int = DEFAULT_SCALE_BITS) -> Vector:
    """The sum of the original updates, as float64, from every party's masked update.

    Exact up to fixed-point rounding: each coordinate is within `n * 2^-(scale_bits + 1)` of the
    plain sum. Meaningless (random) if any party's masked update is missing. Raises
    `AggregationError` when there are none, or they are not uint64 vectors of one length.
    """
    if len(masked_updates) == 0:
        raise AggregationError("secure_agg: no masked updates to sum")
    scale = 2.0 ** check_int(scale_bits, "scale_bits", "secure_agg", low=0, high=52)
    first = np.asarray(masked_updates[0])
    total = np.zeros(first.shape, dtype=np.uint64)
    for index, masked in enumerate(masked_updates):
        words = np.asarray(masked)
        if words.dtype != np.uint64 or words.ndim != 1:
            raise AggregationError(
                f"secure_agg: masked update {index} is {words.dtype} with shape {words.shape}; expected 1-D uint64"
            )
        if words.shape != first.shape:
            raise AggregationError(
                f"secure_agg: masked update {index} has {words.shape[0]} words, masked update 0 has {first.shape[0]}"
            )
        total += words
    return total.view(np.int64).astype(np.float64) / scale


def _check_index(index: object, name: str) -> int:
    return check_int(index, name, "secure_agg", low=0)


def _check_seed(seed: object) -> None:
    if not isinstance(seed, bytes) or len(seed) < MIN_SEED_BYTES:
        raise AggregationError(f"secure_agg: a pair seed is at least {MIN_SEED_BYTES} bytes")


def _check_round_tag(round_tag: object) -> None:
    if not isinstance(round_tag, bytes) or not round_tag:
        raise AggregationError("secure_agg: round_tag must be non-empty bytes naming the round; masks are never reused")
