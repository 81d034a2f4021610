"""What the Market contract stores, as Python values: job states, verdicts, offers, jobs, bids, unit results.

Amounts are token units: USD prices in micro-dollars per unit-second (6 decimals), stakes and slashes in COV
wei. `MarketClient` reads these from the chain; nothing here talks to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from covey.compute.resources import Resources
from covey.storage import bytes32_to_digest

USD = 10**6
ZERO_ADDRESS = "0x" + "00" * 20


class JobStatus(IntEnum):
    """A job's state as the contract stores it."""

    OPEN = 1
    RUNNING = 2
    VERIFYING = 3
    SETTLED = 4
    FAILED = 5
    REJECTED = 6
    CANCELLED = 7

    @property
    def label(self) -> str:
        return self.name.lower()

    @property
    def finished(self) -> bool:
        return self >= JobStatus.SETTLED


class Verdict(IntEnum):
    """A sampled unit's verification verdict."""

    NONE = 0
    OK = 1
    WRONG = 2


@dataclass(frozen=True)
class Offer:
    """A provider's standing offer."""

    provider: str
    resources: Resources
    price_per_unit_second: int
    active: bool
    updated_at: int


@dataclass(frozen=True)
class JobTerms:
    """What a buyer posts: the job spec's hash, the needs, the price ceiling and the shape of the work."""

    spec_hash: bytes
    units: int
    max_price_per_unit_second: int
    seconds_per_unit: int
    needs: Resources = field(default_factory=Resources)
    bid_window_s: int = 30
    heartbeat_interval_s: int = 60

    @property
    def escrow(self) -> int:
        """The USD units `postJob` escrows: max price x units x seconds per unit."""
        return self.max_price_per_unit_second * self.units * self.seconds_per_unit


@dataclass(frozen=True)
class Job:
    """A job's terms, state and money, as the contract reports it."""

    job_id: int
    buyer: str
    spec_hash: bytes
    needs: Resources
    max_price_per_unit_second: int
    units: int
    seconds_per_unit: int
    bid_window: int
    heartbeat_interval: int
    first_unit: int
    parent_job: int
    child_job: int
    status: JobStatus
    bid_deadline: int
    escrow: int
    provider: str
    price_per_unit_second: int
    awarded_at: int
    last_heartbeat: int
    committed_units: int
    sample_block: int
    sample_drawn: bool
    sample_mask: int
    sample_size: int
    verified_units: int
    verify_deadline: int
    paid_units: int
    paid: int
    refunded: int
    slashed: int

    @property
    def spec_digest(self) -> str:
        """The job spec's sha256 in the artifact store."""
        return bytes32_to_digest(self.spec_hash)

    @property
    def heartbeat_deadline(self) -> int:
        return self.last_heartbeat + self.heartbeat_interval

    @property
    def sampled_units(self) -> list[int]:
        return [unit for unit in range(self.units) if self.sample_mask >> unit & 1]

    def unit_price(self) -> int:
        """USD units one unit of this job pays at the awarded price."""
        return self.price_per_unit_second * self.seconds_per_unit


@dataclass(frozen=True)
class Bid:
    provider: str
    price_per_unit_second: int
    stake: int
    placed_at: int


@dataclass(frozen=True)
class UnitResult:
    """A unit's committed hash and, once checked, its verdict and the verifier's hash."""

    unit: int
    result_hash: bytes
    committed_at: int
    sampled: bool
    verdict: Verdict
    recomputed_hash: bytes
    verifier: str

    @property
    def committed(self) -> bool:
        return self.result_hash != b"\x00" * 32


@dataclass(frozen=True)
class MarketParams:
    """The Market's current owner-set parameters."""

    min_provider_stake: int
    heartbeat_slash: int
    wrong_result_slash: int
    sample_rate_bps: int
    verify_window: int
