"""Alliance read models from the Alliance's events: runs, committee per round, votes, accepted and rejected
updates, rewards and slashes, and the global model after each round (with its accuracy when the model
scorer could evaluate it from the store).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from covey.explorer.errors import NotFound
from covey.explorer.queries import Event, Explorer

ALLIANCE = "Alliance"
UPDATE_LABELS = {0: "pending", 1: "accepted", 2: "rejected", 3: "undecided", 4: "missing"}


@dataclass
class Update:
    proposer: str
    index: int
    committed: Event
    settled: Event | None = None

    @property
    def status(self) -> str:
        return UPDATE_LABELS.get(int(self.settled["status"]), "?") if self.settled else "pending"


@dataclass
class Vote:
    voter: str
    committed: Event
    revealed: Event | None = None

    def accepts(self, index: int) -> bool | None:
        """Whether the revealed vote accepts update `index` (None before the reveal)."""
        return None if self.revealed is None else bool(int(self.revealed["acceptMask"]) >> index & 1)


@dataclass
class Round:
    number: int
    opened: Event | None = None
    started: Event | None = None
    updates: list[Update] = field(default_factory=list)
    votes: list[Vote] = field(default_factory=list)
    confirmed: Event | None = None  # confirms the model the previous round produced
    rewards: list[Event] = field(default_factory=list)
    slashes: list[Event] = field(default_factory=list)
    finalized: Event | None = None

    @property
    def proposers(self) -> list[str]:
        return [str(a) for a in self.started["proposers"]] if self.started else []

    @property
    def voters(self) -> list[str]:
        return [str(a) for a in self.started["voters"]] if self.started else []

    @property
    def accepted(self) -> int:
        return sum(1 for u in self.updates if u.status == "accepted")

    @property
    def rejected(self) -> int:
        return sum(1 for u in self.updates if u.status in ("rejected", "missing"))

    @property
    def paid(self) -> int:
        return int(self.finalized["paid"]) if self.finalized else 0

    @property
    def slashed(self) -> int:
        return int(self.finalized["slashed"]) if self.finalized else 0


@dataclass
class Run:
    alliance_id: int
    created: Event
    members: list[Event] = field(default_factory=list)
    rounds: list[Round] = field(default_factory=list)
    funding: list[Event] = field(default_factory=list)
    completed: Event | None = None
    reward_pool: int = 0
    models: dict[int, str] = field(default_factory=dict)  # round -> hash of the model after it (0: initial)
    accuracy: dict[int, float] = field(default_factory=dict)  # round -> accuracy of that model
    events: list[Event] = field(default_factory=list)

    @property
    def training_rounds(self) -> int:
        return int(self.created["rounds"])

    @property
    def state(self) -> str:
        if self.completed is not None:
            return "complete"
        if not self.rounds:
            return "recruiting"
        last = self.rounds[-1]
        return f"round {last.number} finalised" if last.finalized else f"round {last.number} running"


@dataclass(frozen=True)
class RunRow:
    alliance_id: int
    created: Event
    members: int
    rounds_done: int
    state: str
    final_accuracy: float | None


def alliance(explorer: Explorer, alliance_id: int) -> Run:
    """Run `alliance_id` round by round; `NotFound` if the Alliance never created it."""
    events = explorer.of(ALLIANCE, ref=alliance_id)
    created = next((e for e in events if e.event == "AllianceCreated"), None)
    if created is None:
        raise NotFound(f"the Alliance contract has no alliance {alliance_id}")
    run = Run(alliance_id, created, events=events, reward_pool=0)
    run.models[0] = str(created["initialModelHash"])
    rounds: dict[int, Round] = {}

    def round_of(e: Event) -> Round:
        number = int(e["round"])
        if number not in rounds:
            rounds[number] = Round(number)
        return rounds[number]

    for e in events:
        if e.event == "MemberJoined":
            run.members.append(e)
        elif e.event == "PoolFunded":
            run.funding.append(e)
            run.reward_pool = int(e["rewardPool"])
        elif e.event == "AllianceCompleted":
            run.completed = e
        elif e.event == "RoundOpened":
            round_of(e).opened = e
        elif e.event == "RoundStarted":
            round_of(e).started = e
        elif e.event == "UpdateCommitted":
            round_of(e).updates.append(Update(str(e["proposer"]), int(e["index"]), e))
        elif e.event == "UpdateSettled":
            current = round_of(e)
            match = next((u for u in current.updates if u.index == int(e["index"])), None)
            if match is None:
                current.updates.append(Update(str(e["proposer"]), int(e["index"]), e, e))
            else:
                match.settled = e
        elif e.event == "VoteCommitted":
            round_of(e).votes.append(Vote(str(e["voter"]), e))
        elif e.event == "VoteRevealed":
            vote = next((v for v in round_of(e).votes if v.voter == e["voter"]), None)
            if vote is not None:
                vote.revealed = e
        elif e.event == "ModelConfirmed":
            round_of(e).confirmed = e
            run.models[int(e["round"]) - 1] = str(e["modelHash"])
        elif e.event == "Rewarded":
            round_of(e).rewards.append(e)
        elif e.event == "Slashed":
            round_of(e).slashes.append(e)
        elif e.event == "RoundFinalized":
            round_of(e).finalized = e
            run.reward_pool = int(e["rewardPool"])
    run.rounds = [rounds[n] for n in sorted(rounds)]
    for current in run.rounds:
        current.updates.sort(key=lambda u: u.index)
    scorer = explorer.model_scores
    if scorer is not None:
        for number, model_hash in run.models.items():
            value = scorer.accuracy(str(created["specHash"]), model_hash)
            if value is not None:
                run.accuracy[number] = value
    return run


def alliances(explorer: Explorer) -> list[RunRow]:
    """Every alliance, newest first."""
    rows = []
    for created in reversed(explorer.of(ALLIANCE, "AllianceCreated")):
        run = alliance(explorer, int(created["allianceId"]))
        done = sum(1 for r in run.rounds if r.finalized is not None)
        last_scored = max(run.accuracy) if run.accuracy else None
        rows.append(
            RunRow(
                run.alliance_id,
                created,
                len(run.members),
                done,
                run.state,
                run.accuracy[last_scored] if last_scored is not None else None,
            )
        )
    return rows
