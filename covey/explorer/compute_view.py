"""Compute market read models from the Market's events: offers, jobs, bids, heartbeats, results, verification.

A job's status follows its latest lifecycle event; the labels come from the contract's own `STATUS_*`
constants (read once), so a renumbered status never shows the wrong word.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from covey.explorer.errors import NotFound
from covey.explorer.queries import Event, Explorer

MARKET = "Market"


@dataclass(frozen=True)
class Offer:
    provider: str
    registered: Event
    active: bool

    @property
    def price(self) -> int:
        return int(self.registered["pricePerUnitSecond"])


@dataclass
class Job:
    """A job as its events tell it."""

    job_id: int
    posted: Event
    status: str = "open"
    bids: list[Event] = field(default_factory=list)
    awarded: Event | None = None
    heartbeats: list[Event] = field(default_factory=list)
    results: list[Event] = field(default_factory=list)
    verification: Event | None = None
    sample: Event | None = None
    verdicts: list[Event] = field(default_factory=list)
    missed: list[Event] = field(default_factory=list)
    slashes: list[Event] = field(default_factory=list)
    reposted: Event | None = None
    settled: Event | None = None
    cancelled: Event | None = None
    events: list[Event] = field(default_factory=list)

    @property
    def buyer(self) -> str:
        return str(self.posted["buyer"])

    @property
    def provider(self) -> str | None:
        return str(self.awarded["provider"]) if self.awarded else None

    @property
    def verified_ok(self) -> int:
        return sum(1 for v in self.verdicts if v["ok"])

    @property
    def verified_wrong(self) -> int:
        return sum(1 for v in self.verdicts if not v["ok"])

    @property
    def paid(self) -> int:
        return int(self.settled["paid"]) if self.settled else 0

    @property
    def slashed(self) -> int:
        return sum(int(s["slashed"]) for s in self.slashes)


@dataclass(frozen=True)
class Market:
    deployed: bool
    offers: list[Offer]
    jobs: list[Job]
    escrow: int | None  # USD held by the Market now (live)


def _status_labels(explorer: Explorer) -> dict[int, str]:
    return explorer.live.constants(MARKET, "STATUS_") or {}


def _jobs(explorer: Explorer, job_id: int | None = None) -> list[Job]:
    events = explorer.of(MARKET, ref=job_id) if job_id is not None else explorer.of(MARKET)
    labels = _status_labels(explorer)
    jobs: dict[int, Job] = {}
    for e in events:
        if e.event == "JobPosted":
            jobs[int(e["jobId"])] = Job(int(e["jobId"]), e)
        job = jobs.get(e.ref) if e.ref is not None else None
        if job is None:
            continue
        job.events.append(e)
        if e.event == "BidPlaced":
            job.bids.append(e)
        elif e.event == "JobAwarded":
            job.awarded, job.status = e, "running"
        elif e.event == "Heartbeat":
            job.heartbeats.append(e)
        elif e.event == "ResultCommitted":
            job.results.append(e)
        elif e.event == "VerificationOpened":
            job.verification, job.status = e, "verifying"
        elif e.event == "SampleDrawn":
            job.sample = e
        elif e.event == "UnitVerified":
            job.verdicts.append(e)
        elif e.event == "HeartbeatMissed":
            job.missed.append(e)
        elif e.event == "ProviderSlashed":
            job.slashes.append(e)
        elif e.event == "JobReposted":
            job.reposted = e
        elif e.event == "JobSettled":
            job.settled, job.status = e, labels.get(int(e["status"]), f"status {e['status']}")
        elif e.event == "JobCancelled":
            job.cancelled, job.status = e, "cancelled"
    return sorted(jobs.values(), key=lambda j: -j.job_id)


def market(explorer: Explorer) -> Market:
    """Offers (latest per provider), every job newest first, and the escrow the Market holds now."""
    deployed = MARKET in explorer.contracts()
    latest: dict[str, Event] = {}
    retired: dict[str, Event] = {}
    for e in explorer.of(MARKET, "OfferRegistered", "OfferRetired"):
        (latest if e.event == "OfferRegistered" else retired)[str(e["provider"])] = e
    offers = [
        Offer(provider, registered, provider not in retired or retired[provider].id < registered.id)
        for provider, registered in latest.items()
    ]
    offers.sort(key=lambda o: (not o.active, o.price))
    escrow = None
    if deployed:
        escrow = explorer.live.view(MARKET, "totalEscrow", head_block=explorer.status().head_block)
    return Market(deployed, offers, _jobs(explorer), escrow)


def job(explorer: Explorer, job_id: int) -> Job:
    """Job `job_id` with its bids, heartbeats, results and verdicts; `NotFound` if it was never posted."""
    found = _jobs(explorer, job_id)
    if not found:
        raise NotFound(f"the compute market has no job {job_id}")
    return found[0]
