"""The account page's read model: live balances and stakes, delegations both ways, rewards, slashes, history.

Rewards and slashes are read from the money-moving events that name the account (the index keeps every
account an event names), with the module payment in the same transaction saying which task or round paid.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from covey.chain.roles import Role
from covey.explorer.errors import NotFound
from covey.explorer.formatting import cov, short, usd
from covey.explorer.live import AccountFigures
from covey.explorer.queries import PAGE_SIZE, Event, Explorer, parse_address


@dataclass(frozen=True)
class Delegation:
    delegator: str
    operator: str
    role: str
    bonded: int
    rewards: int  # claimable now


@dataclass(frozen=True)
class Flow:
    """One reward or slash an account received, from its event."""

    event: Event
    source: str  # "Arena task 3", "Staking", ...
    amount: int
    note: str
    unit: str = "COV"


@dataclass
class Account:
    address: str
    name: str | None  # the suite contract at this address, if any
    figures: AccountFigures
    delegations: list[Delegation]  # as delegator
    delegators: list[Delegation]  # to this operator
    rewards: list[Flow]
    slashes: list[Flow]
    history: list[Event]
    history_total: int
    page: int
    pages: int
    roles_seen: list[str] = field(default_factory=list)


def account(explorer: Explorer, text: str, page: int = 1) -> Account:
    """The account page of `text`; `NotFound` for a malformed address or one the chain never saw."""
    address = parse_address(text)
    status = explorer.status()
    key = address.lower()
    total = int(explorer.db().execute("SELECT COUNT(*) FROM event_accounts WHERE account = ?", (key,)).fetchone()[0])
    figures = explorer.live.account(address, status.head_block)
    name = explorer.names().get(address)
    if total == 0 and not figures.is_contract and figures.eth_wei == 0 and not figures.cov and not figures.usd:
        raise NotFound(f"the address {address} has no balance and appears in no Covey event on this chain")
    pages = max(1, -(-total // PAGE_SIZE))
    page = min(max(1, page), pages)
    history = [
        Event.from_row(row)
        for row in explorer.db().execute(
            "SELECT e.* FROM event_accounts a JOIN events e ON e.id = a.event_id WHERE a.account = ?"
            " ORDER BY e.block DESC, e.log_index DESC LIMIT ? OFFSET ?",
            (key, PAGE_SIZE, (page - 1) * PAGE_SIZE),
        )
    ]
    named = _events_naming(explorer, key)
    return Account(
        address=address,
        name=name,
        figures=figures,
        delegations=_delegations(explorer, named, address, status.head_block, as_operator=False),
        delegators=_delegations(explorer, named, address, status.head_block, as_operator=True),
        rewards=_rewards(named, address, explorer.names()),
        slashes=_slashes(named, address),
        history=history,
        history_total=total,
        page=page,
        pages=pages,
        roles_seen=sorted(set(figures.self_stake) | set(figures.effective_stake)),
    )


def _events_naming(explorer: Explorer, account: str) -> list[Event]:
    """The money-moving events that name `account` (rewards, slashes, delegations), oldest first."""
    interesting = (
        "Delegated",
        "RewardDistributed",
        "RewardsClaimed",
        "Slashed",
        "TrainerPaid",
        "ValidatorPaid",
        "Rewarded",
        "JobSettled",
        "HostPaid",
    )
    return [
        Event.from_row(row)
        for row in explorer.db().execute(
            "SELECT e.* FROM event_accounts a JOIN events e ON e.id = a.event_id"
            f" WHERE a.account = ? AND e.event IN ({','.join('?' * len(interesting))})"
            " ORDER BY e.block, e.log_index",
            (account, *interesting),
        )
    ]


def _delegations(
    explorer: Explorer, named: list[Event], address: str, head: int, *, as_operator: bool
) -> list[Delegation]:
    pairs: dict[tuple[str, str, int], None] = {}
    for e in named:
        if e.contract == "Staking" and e.event == "Delegated":
            mine = e["operator"] if as_operator else e["delegator"]
            if mine == address:
                pairs[(e["delegator"], e["operator"], int(e["role"]))] = None
    result = []
    for delegator, operator, role in pairs:
        bonded, rewards = explorer.live.delegation(delegator, operator, role, head)
        result.append(Delegation(delegator, operator, _role_name(role), bonded, rewards))
    return result


def _role_name(value: int) -> str:
    try:
        return Role(value).name.lower()
    except ValueError:
        return f"role {value}"


def _rewards(events: list[Event], address: str, names: dict[str, str]) -> list[Flow]:
    """What reached `address` as rewards: its share of pool rewards (through the Staking), delegator claims,
    host payouts and compute pay."""
    # A module's pay event in the same transaction says which task or round a Staking reward came from.
    subjects = {
        (e.tx_hash, str(e.args.get("trainer") or e.args.get("validator") or e.args.get("account"))): e
        for e in events
        if (e.contract, e.event) in MODULE_PAYMENTS
    }
    flows = []
    for e in events:
        if e.contract == "Staking" and e.event == "RewardDistributed" and e["operator"] == address:
            paid = subjects.get((e.tx_hash, address))
            source = _subject(paid) if paid else f"{names.get(str(e['module']), 'a module')} via Staking"
            note = (
                f"{_role_name(int(e['role']))}: own share and commission of {cov(int(e['amount']))} paid to "
                f"the pool; {cov(int(e['delegators_amount']))} to delegators"
            )
            flows.append(Flow(e, source, int(e["operator_amount"]), note))
        elif e.contract == "Staking" and e.event == "RewardsClaimed" and e["delegator"] == address:
            note = f"delegator share claimed from {short(str(e['operator']))}"
            flows.append(Flow(e, "Staking", int(e["amount"]), note))
        elif e.contract == "HostRegistry" and e.event == "HostPaid" and e["host"] == address:
            note = f"inference revenue, with {usd(int(e['subsidy']))} Treasury subsidy"
            flows.append(Flow(e, "Gateway", int(e["amount"]) + int(e["subsidy"]), note, "USD"))
        elif e.contract == "Market" and e.event == "JobSettled" and e["provider"] == address and int(e["paid"]):
            flows.append(Flow(e, f"Compute job {e.ref}", int(e["paid"]), "verified units", "USD"))
    return flows


MODULE_PAYMENTS = frozenset({("Arena", "TrainerPaid"), ("Arena", "ValidatorPaid"), ("Alliance", "Rewarded")})


def _subject(e: Event) -> str:
    if e.contract == "Arena":
        return f"Arena task {e.ref}"
    return f"Alliance {e.ref} round {e.ref2}"


def _slashes(events: Iterable[Event], address: str) -> list[Flow]:
    flows = []
    for e in events:
        if e.contract == "Staking" and e.event == "Slashed" and e["account"] == address:
            flows.append(Flow(e, "Staking", int(e["amount"]), f"{_role_name(int(e['role']))}: {e['reason']}"))
    return flows
