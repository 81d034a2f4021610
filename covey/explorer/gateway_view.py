"""Gateway read models: models served by staked hosts (HostRegistry), prices and subsidy, payouts, and the
x402 payments agents settled on chain (USDToken authorisations, one per paid request, many per batch).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from covey.explorer.queries import Event, Explorer

HOSTS = "HostRegistry"
BPS = 10_000


@dataclass
class Host:
    host: str
    registered: Event
    last_heartbeat: int | None = None
    removed: Event | None = None
    payouts: int = 0
    revenue: int = 0  # USD agents paid, passed on by gateways
    subsidy: int = 0  # USD the Treasury added
    mismatches: int = 0
    slashed: int = 0

    @property
    def model_id(self) -> str:
        return str(self.registered["modelId"])

    @property
    def price_per_1k(self) -> int:
        return int(self.registered["pricePer1kTokens"])


@dataclass
class Model:
    """One model id and the hosts serving it."""

    model_id: str
    hosts: list[Host] = field(default_factory=list)

    @property
    def live_hosts(self) -> list[Host]:
        return [h for h in self.hosts if h.removed is None]

    @property
    def price_per_1k(self) -> int | None:
        prices = [h.price_per_1k for h in self.live_hosts]
        return min(prices) if prices else None

    @property
    def payouts(self) -> int:
        return sum(h.payouts for h in self.hosts)

    @property
    def revenue(self) -> int:
        return sum(h.revenue for h in self.hosts)

    @property
    def subsidy(self) -> int:
        return sum(h.subsidy for h in self.hosts)


@dataclass(frozen=True)
class Payee:
    """Who x402 payments went to (the gateways' pay-to addresses): paid requests and USD received."""

    payee: str
    requests: int
    revenue: int
    batched: int  # of those, settled through the PaymentBatcher


@dataclass(frozen=True)
class Gateway:
    hosts_deployed: bool
    models: list[Model]
    subsidy_bps: int | None
    payees: list[Payee]
    requests: int
    revenue: int
    batches: int
    recent: list[Event]


def gateway(explorer: Explorer) -> Gateway:
    deployed = HOSTS in explorer.contracts()
    hosts: dict[str, Host] = {}
    subsidy_bps: int | None = None
    for e in explorer.of(HOSTS):
        account = str(e.args.get("host", ""))
        if e.event == "HostRegistered":
            previous = hosts.get(account)
            hosts[account] = Host(account, e)
            if previous is not None and previous.removed is None:
                _carry(previous, hosts[account])
        elif e.event == "SubsidySet":
            subsidy_bps = int(e["subsidy_bps"])
        elif account in hosts:
            host = hosts[account]
            if e.event == "HostHeartbeat":
                host.last_heartbeat = int(e["at"])
            elif e.event == "HostRemoved":
                host.removed = e
            elif e.event == "HostPaid":
                host.payouts += 1
                host.revenue += int(e["amount"])
                host.subsidy += int(e["subsidy"])
            elif e.event == "MismatchReported":
                host.mismatches += 1
                host.slashed += int(e["slashed"])
    if deployed:
        live_rate = explorer.live.view(HOSTS, "subsidyBps", head_block=explorer.status().head_block)
        subsidy_bps = int(live_rate) if live_rate is not None else subsidy_bps
    models: dict[str, Model] = {}
    for host in hosts.values():
        models.setdefault(host.model_id, Model(host.model_id)).hosts.append(host)
    payees, requests, revenue, batches = _payments(explorer)
    recent = explorer.events("contract IN (?, ?)", (HOSTS, "PaymentBatcher"), limit=20, newest_first=True)
    return Gateway(
        hosts_deployed=deployed,
        models=sorted(models.values(), key=lambda m: m.model_id),
        subsidy_bps=subsidy_bps,
        payees=payees,
        requests=requests,
        revenue=revenue,
        batches=batches,
        recent=recent,
    )


def _carry(old: Host, new: Host) -> None:
    """A host that re-registers (a new price or endpoint) keeps its totals."""
    new.payouts, new.revenue, new.subsidy = old.payouts, old.revenue, old.subsidy
    new.mismatches, new.slashed, new.last_heartbeat = old.mismatches, old.slashed, old.last_heartbeat


def _payments(explorer: Explorer) -> tuple[list[Payee], int, int, int]:
    """x402 settlements, per payee: each USDToken `AuthorizationUsed` and the `Transfer` it caused.

    `transferWithAuthorization` logs `AuthorizationUsed` and then the `Transfer`, so the transfer is the
    next log of the same transaction: an exact pairing even when one payer pays many times in one batch.
    Summed in SQL (USD amounts fit SQLite's integers) so thousands of payments cost milliseconds.
    """
    rows = (
        explorer.db()
        .execute(
            """
        SELECT json_extract(t.args, '$.receiver') AS payee, COUNT(*) AS requests,
               SUM(json_extract(t.args, '$.value')) AS revenue,
               SUM(EXISTS (SELECT 1 FROM events s WHERE s.tx_hash = a.tx_hash AND s.event = 'PaymentSettled'))
        FROM events a
        JOIN events t ON t.tx_hash = a.tx_hash AND t.log_index = a.log_index + 1
        WHERE a.contract = 'USDToken' AND a.event = 'AuthorizationUsed'
          AND t.contract = 'USDToken' AND t.event = 'Transfer'
        GROUP BY payee ORDER BY revenue DESC
        """
        )
        .fetchall()
    )
    payees = [
        Payee(str(payee), int(requests), int(revenue), int(batched)) for payee, requests, revenue, batched in rows
    ]
    batches = explorer.count("contract = 'PaymentBatcher' AND event = 'BatchSettled'")
    return payees, sum(p.requests for p in payees), sum(p.revenue for p in payees), batches
