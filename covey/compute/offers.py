"""What a provider offers and charges: `PricingRule` (its floor, undercutting, the network premium), and
`check_machine_has`, which refuses an offer larger than the machine it runs on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from covey.compute.records import Bid, Job
from covey.compute.resources import Resources
from covey.compute.sandbox import machine_capacity
from covey.errors import ValidationError


@dataclass(frozen=True)
class PricingRule:
    """How a provider prices work: never below `floor` (USD units per unit-second, also its offer price).

    With `undercut`, it bids one unit below the cheapest bid already placed, down to its floor, the way
    a reverse auction is usually played. A job that declares network access pays `network_premium` on top
    of the floor; with no premium set the provider does not sell network access at all.
    """

    floor: int
    undercut: bool = False
    network_premium: int | None = None

    def bid_for(self, job: Job, bids: Sequence[Bid], *, network: bool = False) -> int | None:
        """The price to bid on `job` given the bids so far, or None if the job pays too little (or wants a
        network this provider does not sell)."""
        if network and self.network_premium is None:
            return None
        floor = self.floor + (self.network_premium or 0) * network
        price = floor
        if self.undercut and bids:
            price = max(floor, min(bid.price_per_unit_second for bid in bids) - 1)
        return price if price <= job.max_price_per_unit_second else None


def check_machine_has(resources: Resources) -> None:
    """Refuse an offer this machine cannot honour (`ValidationError` naming what is short).

    The sandbox holds each unit to the cores, memory and GPUs its job declared, so an offer larger than
    the machine would win jobs whose units then starve or fail.
    """
    cores, memory_mb, gpus = machine_capacity(count_gpus=resources.gpus > 0)
    short = [
        f"{wanted} {what} offered but this machine has {have}"
        for what, wanted, have in (
            ("CPU cores", resources.cpu_cores, cores),
            ("MiB of memory", resources.memory_mb, memory_mb),
            ("GPUs", resources.gpus, gpus),
        )
        if wanted > have
    ]
    if short:
        raise ValidationError(f"cannot offer {', '.join(short)}")
