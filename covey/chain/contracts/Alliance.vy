# pragma version ~=0.4.3
"""
@title Covey Alliance (federated learning)
@custom:contract-name Alliance
@license Apache-2.0
@notice Staked participants train one model together without sharing
        data. The chain coordinates and judges; it never sees data or
        weights, only hashes of the canonical update bytes in the store.

        A round, after `openRound` and `startRound`:
        1. proposing: the drawn proposers `commitUpdate(updateHash)`, the
           sha256 of their canonical update bytes; they upload the bytes
           only once proposals close, so nobody can copy an update.
        2. committing votes: each drawn voter fetches every committed update,
           checks its hash, recomputes the robust aggregate, scores every
           update on its own data and commits
           `keccak256(abi_encode(acceptMask, modelHash, salt, voter))`:
           bit i of `acceptMask` accepts proposer i's update, `modelHash` is
           the global model the voter computed this round starts from.
        3. revealing votes: `revealVote(acceptMask, modelHash, salt)`.
        4. `finalizeRound` (anyone): a stake-weighted tally per update and
           for `modelHash`; pays and slashes; the round's accepted set is
           fixed on chain.
        A phase ends at its deadline, or as soon as everyone in it acted.

        No trusted aggregator. Aggregation is a deterministic function
        (rule `aggregationRule`) of committed updates, so nobody posts an
        aggregate: the model after round r is
        `model(r-1) + aggregate(rule, updates accepted in round r)` (or
        `model(r-1)` when none is accepted), which every participant
        computes from chain state and the store. Round r+1's voters put the
        hash of that model in their commit-revealed vote, and the
        stake-weighted majority confirms it (`modelAfterRound`,
        `globalModel`). After the last training round, one closing round
        with voters only confirms the final model. Voters who back another
        hash are on the losing side.

        Randomness. `openRound` snapshots every member's effective stake
        and fixes a future block N = block.number + 1. `startRound` (any
        block after N, anyone) seeds the draw with
        keccak256(blockhash(N), allianceId, round). The EVM exposes
        `block.prevrandao` only for the block being executed, so the seed
        uses the hash of block N's header, which commits to N's prevrandao
        (its mixHash) and is readable for 256 blocks. Why a participant
        cannot bias the draw: N's hash is unknown when N and the stake
        weights are fixed, and from then on it is the same for every caller,
        every later block and every argument; stake changed after the
        snapshot does not count, and `openRound` cannot be repeated while a
        round is armed. If nobody starts the round within 256 blocks the
        hash is gone and `startRound` re-arms to a new future block instead
        of drawing, so skipping a draw needs 256 blocks in which no member
        calls `startRound`. What a block producer can do: the producer of
        block N can choose among the blocks it could publish (transactions,
        order, extra data, timestamp) and so among seeds, or withhold the
        block; on a dev chain the single node decides everything. A producer
        colluding with a participant is the residual risk (a VRF or a
        members' commit-reveal beacon would remove it).

        Money. Round reward = rewardPool / rounds left (training rounds
        left plus the closing round). In a training round proposers of
        accepted updates share `PROPOSER_SHARE_BPS` of it equally; voters
        on the winning side share the rest by stake x (1 + questions they
        agreed on). Rewards go through `Staking.distributeReward` so
        delegators get their share (directly when the pool has no shares).
        Slashed (`penalty` each, at most the stake): proposers of rejected
        updates and drawn proposers who committed nothing; voters who never
        revealed, backed a losing model hash, or sided with the losing side
        on more than half of the decided updates. Staking sends slashed COV
        to the Treasury; the Alliance takes it back into the pool with
        `Treasury.pay`, within the allowance the Treasury grants it.
        Unpaid shares and dust stay in the pool; after the closing round
        the pool goes back to the creator.

        Tally. An update is accepted when voters holding more than half of
        the revealed stake accept it, rejected when more than half reject
        it, undecided otherwise; nothing is decided (nobody paid or slashed
        as proposer) unless the revealed stake is more than half of the
        committee's.

        Committee size: a round draws `votersPerRound` voters and up to
        `proposersPerRound` proposers; when fewer members are eligible (say
        a poisoner was slashed below `minStake`) it draws fewer proposers,
        down to one, rather than stall; voters are never fewer.

        Bounds: `MAX_MEMBERS` members per alliance (the snapshot loop),
        `MAX_PROPOSERS` and `MAX_VOTERS` per round (the draw is
        O((P + V) x members), the tally O(P x V + V^2)).

        Functions:
        - `createAlliance`, `addToPool`, `join`,
        - `openRound`, `startRound`, `commitUpdate`, `commitVote`,
          `revealVote`, `finalizeRound`,
        - views: `alliance`, `allianceCount`, `members`, `isMember`,
          `snapshotWeights`, `phase`, `round`, `committee`, `proposals`,
          `votes`, `roleIn`, `acceptedUpdates`, `rejectedUpdates`,
          `globalModel`, `modelAfterRound`, `voteCommitment`.
"""


from ethereum.ercs import IERC20


# ------------------------------------------------------------------ interfaces


# @dev One Staking pool as `Staking.pools` returns it.
struct StakingPool:
    tokens: uint256
    shares: uint256
    unbonding_tokens: uint256
    unbonding_shares: uint256
    reward_per_share: uint256


interface IStaking:
    def effectiveStake(operator: address, role: uint8) -> uint256: view
    def pools(operator: address, role: uint8) -> StakingPool: view
    def slash(account: address, role: uint8, amount: uint256, reason: String[64]) -> uint256: nonpayable
    def distributeReward(operator: address, role: uint8, amount: uint256): nonpayable


interface ITreasury:
    def pay(token: address, to: address, amount: uint256): nonpayable
    def allowance(module: address, token: address) -> uint256: view


# ------------------------------------------------------------------ constants


# @dev Members per alliance; bounds the stake snapshot and the draw.
MAX_MEMBERS: public(constant(uint256)) = 64

# @dev Proposers per round; bounds the tally (and fits a uint256 accept mask).
MAX_PROPOSERS: public(constant(uint256)) = 16

# @dev Voters per round; bounds the tally's O(V^2) model-hash count.
MAX_VOTERS: public(constant(uint256)) = 16

# @dev Training rounds per alliance (a sanity bound; rounds are not looped over).
MAX_ROUNDS: public(constant(uint256)) = 10_000

# @dev The longest phase a creator may set: 30 days.
MAX_PHASE_DURATION: public(constant(uint256)) = 30 * 86_400

# @dev Aggregation rule ids 0..MAX_RULE_ID: 0 covey_default, 1 fedavg,
#      2 coordinate_median, 3 trimmed_mean, 4 krum, 5 multi_krum,
#      6 covey_trust (see `covey.alliance.rules`).
MAX_RULE_ID: public(constant(uint8)) = 6

# @dev The denominator of every basis-point number.
BPS: public(constant(uint256)) = 10_000

# @dev The proposers' part of a training round's reward (60%); voters get the rest.
PROPOSER_SHARE_BPS: public(constant(uint256)) = 6_000

# @dev Blocks between `openRound` and the block whose hash seeds the draw.
RANDOMNESS_DELAY_BLOCKS: public(constant(uint256)) = 1

# @dev BLOCKHASH sees this many ancestors; an older randomness block re-arms.
BLOCKHASH_WINDOW: constant(uint256) = 256

# @dev The Staking role participants stake for (`covey.chain.roles.Role.PARTICIPANT`).
ROLE_PARTICIPANT: public(constant(uint8)) = 4

# @dev Alliance states.
STATE_IDLE: public(constant(uint8)) = 0
STATE_ARMED: public(constant(uint8)) = 1
STATE_ACTIVE: public(constant(uint8)) = 2
STATE_COMPLETE: public(constant(uint8)) = 3

# @dev Phases as `phase` reports them.
PHASE_IDLE: public(constant(uint8)) = 0
PHASE_ARMED: public(constant(uint8)) = 1
PHASE_PROPOSING: public(constant(uint8)) = 2
PHASE_COMMITTING: public(constant(uint8)) = 3
PHASE_REVEALING: public(constant(uint8)) = 4
PHASE_FINALISABLE: public(constant(uint8)) = 5
PHASE_COMPLETE: public(constant(uint8)) = 6

# @dev What finalisation decided about an update.
UPDATE_PENDING: public(constant(uint8)) = 0
UPDATE_ACCEPTED: public(constant(uint8)) = 1
UPDATE_REJECTED: public(constant(uint8)) = 2
UPDATE_UNDECIDED: public(constant(uint8)) = 3
UPDATE_MISSING: public(constant(uint8)) = 4

# @dev What finalisation decided about a voter.
VOTER_PENDING: public(constant(uint8)) = 0
VOTER_WINNING: public(constant(uint8)) = 1
VOTER_LOSING: public(constant(uint8)) = 2
VOTER_SILENT: public(constant(uint8)) = 3

# @dev Slash reasons passed to `Staking.slash`.
REASON_NO_UPDATE: constant(String[64]) = "alliance: no update committed"
REASON_REJECTED: constant(String[64]) = "alliance: update rejected"
REASON_SILENT: constant(String[64]) = "alliance: vote not revealed"
REASON_LOSING: constant(String[64]) = "alliance: vote on losing side"

# @dev Payments and slashes one finalisation can make.
MAX_SETTLEMENTS: constant(uint256) = MAX_PROPOSERS + MAX_VOTERS


# ------------------------------------------------------------------ structs


# @dev What a creator chooses for an alliance.
struct AllianceParams:
    specHash: bytes32
    initialModelHash: bytes32
    rewardPool: uint256
    rounds: uint256
    proposersPerRound: uint256
    votersPerRound: uint256
    minStake: uint256
    slashBps: uint256
    proposeDuration: uint256
    commitDuration: uint256
    revealDuration: uint256
    aggregationRule: uint8


# @dev An alliance: its parameters and where it stands.
struct Alliance:
    creator: address
    specHash: bytes32
    initialModelHash: bytes32
    rounds: uint256
    proposersPerRound: uint256
    votersPerRound: uint256
    minStake: uint256
    penalty: uint256
    proposeDuration: uint256
    commitDuration: uint256
    revealDuration: uint256
    aggregationRule: uint8
    rewardPool: uint256
    memberCount: uint256
    currentRound: uint256
    state: uint8
    randomnessBlock: uint256
    snapshotStake: uint256
    eligibleCount: uint256
    modelHash: bytes32
    modelRound: uint256
    totalPaid: uint256
    totalSlashed: uint256
    totalRecovered: uint256
    refunded: uint256


# @dev One round. Phases end at `proposeEnd`, `commitEnd`, `revealEnd`
# (moved earlier when everyone in a phase has acted).
struct Round:
    seed: bytes32
    randomnessBlock: uint256
    startedAt: uint256
    proposeEnd: uint256
    commitEnd: uint256
    revealEnd: uint256
    proposerCount: uint256
    voterCount: uint256
    committedCount: uint256
    committedMask: uint256
    votesCommitted: uint256
    votesRevealed: uint256
    committeeStake: uint256
    revealedStake: uint256
    acceptedMask: uint256
    rejectedMask: uint256
    modelHash: bytes32
    modelStake: uint256
    modelConfirmed: bool
    reward: uint256
    proposerPaid: uint256
    voterPaid: uint256
    slashed: uint256
    recovered: uint256
    finalized: bool


# @dev A drawn proposer and its update.
struct Proposal:
    proposer: address
    weight: uint256
    updateHash: bytes32
    committed: bool
    status: uint8
    acceptStake: uint256
    rejectStake: uint256
    payout: uint256
    slashed: uint256


# @dev A drawn voter and its vote.
struct Vote:
    voter: address
    weight: uint256
    commitment: bytes32
    committed: bool
    revealed: bool
    acceptMask: uint256
    modelHash: bytes32
    agreed: uint256
    outcome: uint8
    payout: uint256
    slashed: uint256


# ------------------------------------------------------------------ events


# @dev An alliance was created; its pool is already held by the Alliance.
event AllianceCreated:
    allianceId: indexed(uint256)
    creator: indexed(address)
    specHash: bytes32
    initialModelHash: bytes32
    rounds: uint256
    proposersPerRound: uint256
    votersPerRound: uint256
    minStake: uint256
    penalty: uint256
    aggregationRule: uint8


# @dev COV was added to an alliance's pool; `rewardPool` is the new total.
event PoolFunded:
    allianceId: indexed(uint256)
    funder: indexed(address)
    amount: uint256
    rewardPool: uint256


# @dev `member` joined with `stake` COV of participant stake behind it.
event MemberJoined:
    allianceId: indexed(uint256)
    member: indexed(address)
    stake: uint256


# @dev A round was opened: weights snapshotted, the draw fixed to block `randomnessBlock`.
event RoundOpened:
    allianceId: indexed(uint256)
    round: indexed(uint256)
    randomnessBlock: uint256
    eligibleCount: uint256
    snapshotStake: uint256


# @dev The randomness block fell out of BLOCKHASH's window; the draw moved to `randomnessBlock`.
event RandomnessRearmed:
    allianceId: indexed(uint256)
    round: indexed(uint256)
    randomnessBlock: uint256


# @dev A round started: the committee is drawn and the phase deadlines set.
event RoundStarted:
    allianceId: indexed(uint256)
    round: indexed(uint256)
    seed: bytes32
    proposers: DynArray[address, MAX_PROPOSERS]
    voters: DynArray[address, MAX_VOTERS]
    proposeEnd: uint256
    commitEnd: uint256
    revealEnd: uint256


# @dev Every actor of a phase acted, so it ended early; the later deadlines moved with it.
event PhaseClosedEarly:
    allianceId: indexed(uint256)
    round: indexed(uint256)
    phase: uint8
    commitEnd: uint256
    revealEnd: uint256


# @dev Proposer number `index` committed the hash of its update.
event UpdateCommitted:
    allianceId: indexed(uint256)
    round: indexed(uint256)
    proposer: indexed(address)
    index: uint256
    updateHash: bytes32


# @dev A voter committed its hidden vote.
event VoteCommitted:
    allianceId: indexed(uint256)
    round: indexed(uint256)
    voter: indexed(address)
    commitment: bytes32


# @dev A voter revealed its vote.
event VoteRevealed:
    allianceId: indexed(uint256)
    round: indexed(uint256)
    voter: indexed(address)
    acceptMask: uint256
    modelHash: bytes32


# @dev The tally's verdict on one update (see the `UPDATE_*` constants).
event UpdateSettled:
    allianceId: indexed(uint256)
    round: indexed(uint256)
    proposer: indexed(address)
    index: uint256
    updateHash: bytes32
    status: uint8
    acceptStake: uint256
    rejectStake: uint256


# @dev The voters confirmed `modelHash` as the model produced by round `round - 1` (0: the initial model).
event ModelConfirmed:
    allianceId: indexed(uint256)
    round: indexed(uint256)
    modelHash: bytes32
    stake: uint256


# @dev `account` was paid `amount` COV for `round`, through `Staking.distributeReward`.
event Rewarded:
    allianceId: indexed(uint256)
    round: indexed(uint256)
    account: indexed(address)
    amount: uint256
    asProposer: bool


# @dev `account` was slashed `slashed` COV of the `requested` penalty.
event Slashed:
    allianceId: indexed(uint256)
    round: indexed(uint256)
    account: indexed(address)
    requested: uint256
    slashed: uint256
    reason: String[64]


# @dev Slashed COV came back from the Treasury into the pool (`recovered` of `slashed`).
event SlashRecovered:
    allianceId: indexed(uint256)
    round: indexed(uint256)
    slashed: uint256
    recovered: uint256


# @dev A round was settled.
event RoundFinalized:
    allianceId: indexed(uint256)
    round: indexed(uint256)
    acceptedMask: uint256
    rejectedMask: uint256
    reward: uint256
    paid: uint256
    slashed: uint256
    recovered: uint256
    rewardPool: uint256


# @dev The closing round settled; what was left of the pool went to the creator.
event AllianceCompleted:
    allianceId: indexed(uint256)
    modelHash: bytes32
    refunded: uint256


# ------------------------------------------------------------------ storage


# @dev The COV token rewards are paid in.
token: public(immutable(IERC20))

# @dev The Staking contract: stake checks, rewards and slashing; the Alliance is one of its modules.
staking: public(immutable(IStaking))

# @dev The Treasury, which receives slashed stake and pays it back into pools.
treasury: public(immutable(ITreasury))

# @dev Alliances ever created; ids run from 1 to `allianceCount`.
allianceCount: public(uint256)

# @dev Alliance id -> alliance.
_alliances: HashMap[uint256, Alliance]

# @dev Alliance id -> members in join order.
_members: HashMap[uint256, DynArray[address, MAX_MEMBERS]]

# @dev Alliance id -> account -> member.
_isMember: HashMap[uint256, HashMap[address, bool]]

# @dev Alliance id -> each member's draw weight at the last `openRound` (0 = below the minimum stake).
_weights: HashMap[uint256, DynArray[uint256, MAX_MEMBERS]]

# @dev Alliance id -> round -> round.
_rounds: HashMap[uint256, HashMap[uint256, Round]]

# @dev Alliance id -> round -> proposer index -> proposal.
_proposals: HashMap[uint256, HashMap[uint256, HashMap[uint256, Proposal]]]

# @dev Alliance id -> round -> voter index -> vote.
_votes: HashMap[uint256, HashMap[uint256, HashMap[uint256, Vote]]]

# @dev Alliance id -> round -> account -> proposer index + 1 (0 = not a proposer).
_proposerSlot: HashMap[uint256, HashMap[uint256, HashMap[address, uint256]]]

# @dev Alliance id -> round -> account -> voter index + 1 (0 = not a voter).
_voterSlot: HashMap[uint256, HashMap[uint256, HashMap[address, uint256]]]

# @dev Alliance id -> round -> update hash -> committed in this round.
_updateSeen: HashMap[uint256, HashMap[uint256, HashMap[bytes32, bool]]]


# ------------------------------------------------------------------ setup


@deploy
def __init__(token_: IERC20, staking_: IStaking, treasury_: ITreasury):
    """
    @notice Deploy wired to the suite. Then register it as a Staking module
            (it slashes and rewards) and give it a COV allowance at the
            Treasury (it takes slashed stake back into pools).
    @param token_ The COV token.
    @param staking_ The Staking contract.
    @param treasury_ The Treasury.
    """
    assert token_.address != empty(address), "alliance: token is the zero address"
    assert staking_.address != empty(address), "alliance: staking is the zero address"
    assert treasury_.address != empty(address), "alliance: treasury is the zero address"
    token = token_
    staking = staking_
    treasury = treasury_


# ------------------------------------------------------------------ alliances


@external
@nonreentrant
def createAlliance(params: AllianceParams) -> uint256:
    """
    @notice Create an alliance and fund its pool with `params.rewardPool`
            COV from the caller (approve the Alliance first).
    @param params Model spec hash, initial global model hash (sha256 of its
           canonical bytes in the store), reward pool, training rounds,
           proposers and voters per round, minimum participant stake,
           slash in basis points of the minimum stake, phase durations in
           seconds and the aggregation rule id.
    @return uint256 The new alliance's id.
    """
    assert params.specHash != empty(bytes32), "alliance: empty spec hash"
    assert params.initialModelHash != empty(bytes32), "alliance: empty model hash"
    assert params.rounds >= 1 and params.rounds <= MAX_ROUNDS, "alliance: rounds out of range"
    assert params.proposersPerRound >= 1 and params.proposersPerRound <= MAX_PROPOSERS, "alliance: proposers out of range"
    assert params.votersPerRound >= 1 and params.votersPerRound <= MAX_VOTERS, "alliance: voters out of range"
    assert params.minStake > 0, "alliance: zero minimum stake"
    assert params.slashBps <= BPS, "alliance: slash above 100%"
    assert params.proposeDuration >= 1 and params.proposeDuration <= MAX_PHASE_DURATION, "alliance: bad propose duration"
    assert params.commitDuration >= 1 and params.commitDuration <= MAX_PHASE_DURATION, "alliance: bad commit duration"
    assert params.revealDuration >= 1 and params.revealDuration <= MAX_PHASE_DURATION, "alliance: bad reveal duration"
    assert params.aggregationRule <= MAX_RULE_ID, "alliance: unknown aggregation rule"

    alliance_id: uint256 = self.allianceCount + 1
    self.allianceCount = alliance_id
    penalty: uint256 = params.minStake * params.slashBps // BPS
    self._alliances[alliance_id] = Alliance(
        creator=msg.sender,
        specHash=params.specHash,
        initialModelHash=params.initialModelHash,
        rounds=params.rounds,
        proposersPerRound=params.proposersPerRound,
        votersPerRound=params.votersPerRound,
        minStake=params.minStake,
        penalty=penalty,
        proposeDuration=params.proposeDuration,
        commitDuration=params.commitDuration,
        revealDuration=params.revealDuration,
        aggregationRule=params.aggregationRule,
        rewardPool=params.rewardPool,
        memberCount=0,
        currentRound=0,
        state=STATE_IDLE,
        randomnessBlock=0,
        snapshotStake=0,
        eligibleCount=0,
        modelHash=params.initialModelHash,
        modelRound=0,
        totalPaid=0,
        totalSlashed=0,
        totalRecovered=0,
        refunded=0,
    )
    log AllianceCreated(
        allianceId=alliance_id,
        creator=msg.sender,
        specHash=params.specHash,
        initialModelHash=params.initialModelHash,
        rounds=params.rounds,
        proposersPerRound=params.proposersPerRound,
        votersPerRound=params.votersPerRound,
        minStake=params.minStake,
        penalty=penalty,
        aggregationRule=params.aggregationRule,
    )
    log PoolFunded(allianceId=alliance_id, funder=msg.sender, amount=params.rewardPool, rewardPool=params.rewardPool)
    if params.rewardPool > 0:
        assert extcall token.transferFrom(msg.sender, self, params.rewardPool, default_return_value=True), "alliance: transfer failed"
    return alliance_id


@external
@nonreentrant
def addToPool(allianceId: uint256, amount: uint256):
    """
    @notice Add `amount` COV from the caller to an unfinished alliance's pool (approve first).
    @param allianceId The alliance.
    @param amount The COV to add (not zero).
    """
    self._check_alliance(allianceId)
    assert self._alliances[allianceId].state != STATE_COMPLETE, "alliance: already complete"
    assert amount > 0, "alliance: zero amount"
    pool: uint256 = self._alliances[allianceId].rewardPool + amount
    self._alliances[allianceId].rewardPool = pool
    log PoolFunded(allianceId=allianceId, funder=msg.sender, amount=amount, rewardPool=pool)
    assert extcall token.transferFrom(msg.sender, self, amount, default_return_value=True), "alliance: transfer failed"


@external
def join(allianceId: uint256):
    """
    @notice Join an unfinished alliance; needs at least `minStake` COV of
            effective participant stake. A member joining while a round is
            armed or running is drawn from the next `openRound` on.
    @param allianceId The alliance.
    """
    self._check_alliance(allianceId)
    assert self._alliances[allianceId].state != STATE_COMPLETE, "alliance: already complete"
    assert not self._isMember[allianceId][msg.sender], "alliance: already a member"
    count: uint256 = self._alliances[allianceId].memberCount
    assert count < MAX_MEMBERS, "alliance: full"
    stake: uint256 = staticcall staking.effectiveStake(msg.sender, ROLE_PARTICIPANT)
    assert stake >= self._alliances[allianceId].minStake, "alliance: stake below minimum"
    self._isMember[allianceId][msg.sender] = True
    self._members[allianceId].append(msg.sender)
    self._alliances[allianceId].memberCount = count + 1
    log MemberJoined(allianceId=allianceId, member=msg.sender, stake=stake)


# ------------------------------------------------------------------ rounds


@external
def openRound(allianceId: uint256):
    """
    @notice Open the next round (anyone): snapshot every member's effective
            stake as its draw weight and fix the future block whose hash
            seeds the draw. Members below `minStake` now are not drawn; it
            needs `votersPerRound` eligible members plus one proposer.
    @param allianceId The alliance.
    """
    self._check_alliance(allianceId)
    a: Alliance = self._alliances[allianceId]
    assert a.state != STATE_COMPLETE, "alliance: already complete"
    assert a.state == STATE_IDLE, "alliance: round in progress"
    weights: DynArray[uint256, MAX_MEMBERS] = []
    total: uint256 = 0
    eligible: uint256 = 0
    for member: address in self._members[allianceId]:
        stake: uint256 = staticcall staking.effectiveStake(member, ROLE_PARTICIPANT)
        if stake < a.minStake:
            stake = 0
        else:
            eligible += 1
        weights.append(stake)
        total += stake
    round_number: uint256 = a.currentRound + 1
    assert eligible >= self._committee_size(a, round_number), "alliance: not enough eligible members"

    randomness_block: uint256 = block.number + RANDOMNESS_DELAY_BLOCKS
    self._weights[allianceId] = weights
    self._alliances[allianceId].currentRound = round_number
    self._alliances[allianceId].state = STATE_ARMED
    self._alliances[allianceId].randomnessBlock = randomness_block
    self._alliances[allianceId].snapshotStake = total
    self._alliances[allianceId].eligibleCount = eligible
    self._rounds[allianceId][round_number].randomnessBlock = randomness_block
    log RoundOpened(
        allianceId=allianceId,
        round=round_number,
        randomnessBlock=randomness_block,
        eligibleCount=eligible,
        snapshotStake=total,
    )


@external
def startRound(allianceId: uint256) -> bool:
    """
    @notice Start the opened round (anyone, in any block after the
            randomness block): draw the proposers and voters by stake and
            set the phase deadlines. If the randomness block is older than
            256 blocks its hash is gone: the draw moves to the next block
            and this returns False without starting.
    @param allianceId The alliance.
    @return bool True when the round started.
    """
    self._check_alliance(allianceId)
    a: Alliance = self._alliances[allianceId]
    assert a.state == STATE_ARMED, "alliance: round not opened"
    assert block.number > a.randomnessBlock, "alliance: randomness block not mined yet"
    round_number: uint256 = a.currentRound
    if block.number - a.randomnessBlock > BLOCKHASH_WINDOW:
        rearmed: uint256 = block.number + RANDOMNESS_DELAY_BLOCKS
        self._alliances[allianceId].randomnessBlock = rearmed
        self._rounds[allianceId][round_number].randomnessBlock = rearmed
        log RandomnessRearmed(allianceId=allianceId, round=round_number, randomnessBlock=rearmed)
        return False

    seed: bytes32 = keccak256(abi_encode(blockhash(a.randomnessBlock), allianceId, round_number))
    # Fewer eligible members than a full committee draws fewer proposers, never fewer voters.
    proposer_count: uint256 = 0
    if round_number <= a.rounds:
        proposer_count = min(a.proposersPerRound, a.eligibleCount - a.votersPerRound)
    drawn: DynArray[uint256, MAX_SETTLEMENTS] = self._draw(
        seed, self._weights[allianceId], a.snapshotStake, proposer_count + a.votersPerRound
    )

    proposers: DynArray[address, MAX_PROPOSERS] = []
    voters: DynArray[address, MAX_VOTERS] = []
    committee_stake: uint256 = 0
    for k: uint256 in range(len(drawn), bound=MAX_SETTLEMENTS):
        member: address = self._members[allianceId][drawn[k]]
        weight: uint256 = self._weights[allianceId][drawn[k]]
        if k < proposer_count:
            self._proposals[allianceId][round_number][k] = Proposal(
                proposer=member,
                weight=weight,
                updateHash=empty(bytes32),
                committed=False,
                status=UPDATE_PENDING,
                acceptStake=0,
                rejectStake=0,
                payout=0,
                slashed=0,
            )
            self._proposerSlot[allianceId][round_number][member] = k + 1
            proposers.append(member)
        else:
            v: uint256 = k - proposer_count
            self._votes[allianceId][round_number][v] = Vote(
                voter=member,
                weight=weight,
                commitment=empty(bytes32),
                committed=False,
                revealed=False,
                acceptMask=0,
                modelHash=empty(bytes32),
                agreed=0,
                outcome=VOTER_PENDING,
                payout=0,
                slashed=0,
            )
            self._voterSlot[allianceId][round_number][member] = v + 1
            voters.append(member)
            committee_stake += weight

    # The closing round has no proposals: it opens straight into vote commits.
    propose_end: uint256 = block.timestamp
    if proposer_count > 0:
        propose_end += a.proposeDuration
    commit_end: uint256 = propose_end + a.commitDuration
    reveal_end: uint256 = commit_end + a.revealDuration
    self._alliances[allianceId].state = STATE_ACTIVE
    r: Round = self._rounds[allianceId][round_number]
    r.seed = seed
    r.startedAt = block.timestamp
    r.proposeEnd = propose_end
    r.commitEnd = commit_end
    r.revealEnd = reveal_end
    r.proposerCount = proposer_count
    r.voterCount = len(voters)
    r.committeeStake = committee_stake
    self._rounds[allianceId][round_number] = r
    log RoundStarted(
        allianceId=allianceId,
        round=round_number,
        seed=seed,
        proposers=proposers,
        voters=voters,
        proposeEnd=propose_end,
        commitEnd=commit_end,
        revealEnd=reveal_end,
    )
    return True


@external
def commitUpdate(allianceId: uint256, updateHash: bytes32):
    """
    @notice Commit your update (proposers of the running round, while
            proposals are open). Upload the canonical update bytes to the
            store only after proposals close, so nobody can copy them.
    @param allianceId The alliance.
    @param updateHash The sha256 of the canonical update bytes (their store digest).
    """
    round_number: uint256 = self._active_round(allianceId)
    r: Round = self._rounds[allianceId][round_number]
    assert block.timestamp < r.proposeEnd, "alliance: proposals closed"
    slot: uint256 = self._proposerSlot[allianceId][round_number][msg.sender]
    assert slot != 0, "alliance: not a proposer"
    index: uint256 = slot - 1
    assert not self._proposals[allianceId][round_number][index].committed, "alliance: already proposed"
    assert updateHash != empty(bytes32), "alliance: empty update hash"
    assert not self._updateSeen[allianceId][round_number][updateHash], "alliance: duplicate update"

    self._updateSeen[allianceId][round_number][updateHash] = True
    self._proposals[allianceId][round_number][index].updateHash = updateHash
    self._proposals[allianceId][round_number][index].committed = True
    r.committedCount += 1
    r.committedMask |= 1 << index
    log UpdateCommitted(
        allianceId=allianceId, round=round_number, proposer=msg.sender, index=index, updateHash=updateHash
    )
    if r.committedCount == r.proposerCount:
        a: Alliance = self._alliances[allianceId]
        r.proposeEnd = block.timestamp
        r.commitEnd = block.timestamp + a.commitDuration
        r.revealEnd = r.commitEnd + a.revealDuration
        log PhaseClosedEarly(
            allianceId=allianceId, round=round_number, phase=PHASE_PROPOSING, commitEnd=r.commitEnd, revealEnd=r.revealEnd
        )
    self._rounds[allianceId][round_number] = r


@external
def commitVote(allianceId: uint256, commitment: bytes32):
    """
    @notice Commit your hidden vote (voters of the running round, after
            proposals close and before vote commits close).
    @param allianceId The alliance.
    @param commitment `keccak256(abi_encode(acceptMask, modelHash, salt, voter))`
           with `acceptMask` a uint256 (bit i accepts proposer i's update),
           `modelHash` the model this round starts from, `salt` a secret
           bytes32 and `voter` your address (so nobody can replay it).
    """
    round_number: uint256 = self._active_round(allianceId)
    r: Round = self._rounds[allianceId][round_number]
    assert block.timestamp >= r.proposeEnd, "alliance: proposals still open"
    assert block.timestamp < r.commitEnd, "alliance: vote commits closed"
    slot: uint256 = self._voterSlot[allianceId][round_number][msg.sender]
    assert slot != 0, "alliance: not a voter"
    index: uint256 = slot - 1
    assert not self._votes[allianceId][round_number][index].committed, "alliance: already voted"
    assert commitment != empty(bytes32), "alliance: empty commitment"

    self._votes[allianceId][round_number][index].commitment = commitment
    self._votes[allianceId][round_number][index].committed = True
    r.votesCommitted += 1
    log VoteCommitted(allianceId=allianceId, round=round_number, voter=msg.sender, commitment=commitment)
    if r.votesCommitted == r.voterCount:
        r.commitEnd = block.timestamp
        r.revealEnd = block.timestamp + self._alliances[allianceId].revealDuration
        log PhaseClosedEarly(
            allianceId=allianceId, round=round_number, phase=PHASE_COMMITTING, commitEnd=r.commitEnd, revealEnd=r.revealEnd
        )
    self._rounds[allianceId][round_number] = r


@external
def revealVote(allianceId: uint256, acceptMask: uint256, modelHash: bytes32, salt: bytes32):
    """
    @notice Reveal your committed vote (after vote commits close, before reveals close).
    @param allianceId The alliance.
    @param acceptMask Bit i set accepts proposer i's update; only committed updates may be accepted.
    @param modelHash The hash of the global model this round starts from, as you computed it.
    @param salt The salt of your commitment.
    """
    round_number: uint256 = self._active_round(allianceId)
    r: Round = self._rounds[allianceId][round_number]
    assert block.timestamp >= r.commitEnd, "alliance: vote commits still open"
    assert block.timestamp < r.revealEnd, "alliance: reveals closed"
    slot: uint256 = self._voterSlot[allianceId][round_number][msg.sender]
    assert slot != 0, "alliance: not a voter"
    index: uint256 = slot - 1
    vote: Vote = self._votes[allianceId][round_number][index]
    assert vote.committed, "alliance: no vote committed"
    assert not vote.revealed, "alliance: already revealed"
    assert keccak256(abi_encode(acceptMask, modelHash, salt, msg.sender)) == vote.commitment, "alliance: reveal does not match commitment"
    assert acceptMask & ~r.committedMask == 0, "alliance: vote for an update never committed"

    vote.revealed = True
    vote.acceptMask = acceptMask
    vote.modelHash = modelHash
    self._votes[allianceId][round_number][index] = vote
    r.votesRevealed += 1
    r.revealedStake += vote.weight
    log VoteRevealed(
        allianceId=allianceId, round=round_number, voter=msg.sender, acceptMask=acceptMask, modelHash=modelHash
    )
    if r.votesRevealed == r.votesCommitted:
        r.revealEnd = block.timestamp
        log PhaseClosedEarly(
            allianceId=allianceId, round=round_number, phase=PHASE_REVEALING, commitEnd=r.commitEnd, revealEnd=r.revealEnd
        )
    self._rounds[allianceId][round_number] = r


@external
@nonreentrant
def finalizeRound(allianceId: uint256):
    """
    @notice Settle the running round once reveals are over (anyone): tally
            each update and the model hash by revealed stake, pay the round
            reward, slash, take slashed stake back into the pool, and leave
            the alliance ready for `openRound` (or complete it after the
            closing round, refunding the rest of the pool to the creator).
    @param allianceId The alliance.
    """
    round_number: uint256 = self._active_round(allianceId)
    a: Alliance = self._alliances[allianceId]
    r: Round = self._rounds[allianceId][round_number]
    assert block.timestamp >= r.revealEnd, "alliance: round not over"

    # ---- checks and bookkeeping in memory
    quorum: bool = r.revealedStake * 2 > r.committeeStake
    votes: DynArray[Vote, MAX_VOTERS] = []
    for v: uint256 in range(r.voterCount, bound=MAX_VOTERS):
        votes.append(self._votes[allianceId][round_number][v])

    # The model hash: the one backed by more than half of the revealed stake, if any.
    winner: bytes32 = empty(bytes32)
    winner_stake: uint256 = 0
    if quorum:
        winner, winner_stake = self._majority_hash(votes, r.revealedStake)
    model_decided: bool = winner_stake > 0

    proposals: DynArray[Proposal, MAX_PROPOSERS] = []
    accepted_count: uint256 = 0
    decided_updates: uint256 = 0
    for i: uint256 in range(r.proposerCount, bound=MAX_PROPOSERS):
        p: Proposal = self._proposals[allianceId][round_number][i]
        bit: uint256 = 1 << i
        if not p.committed:
            p.status = UPDATE_MISSING
        elif not quorum:
            p.status = UPDATE_UNDECIDED
        else:
            for vote: Vote in votes:
                if vote.revealed:
                    if vote.acceptMask & bit != 0:
                        p.acceptStake += vote.weight
                    else:
                        p.rejectStake += vote.weight
            if p.acceptStake * 2 > r.revealedStake:
                p.status = UPDATE_ACCEPTED
                r.acceptedMask |= bit
                accepted_count += 1
                decided_updates += 1
            elif p.rejectStake * 2 > r.revealedStake:
                p.status = UPDATE_REJECTED
                r.rejectedMask |= bit
                decided_updates += 1
            else:
                p.status = UPDATE_UNDECIDED
        proposals.append(p)

    # Voters: agreement with every decided question; silent ones and the losing side are slashed.
    total_merit: uint256 = 0
    merits: DynArray[uint256, MAX_VOTERS] = []
    for v: uint256 in range(len(votes), bound=MAX_VOTERS):
        merit: uint256 = 0
        if not votes[v].revealed:
            votes[v].outcome = VOTER_SILENT
        else:
            agreed_updates: uint256 = 0
            decided_mask: uint256 = r.acceptedMask | r.rejectedMask
            agreed_bits: uint256 = ~(votes[v].acceptMask ^ r.acceptedMask) & decided_mask
            for i: uint256 in range(r.proposerCount, bound=MAX_PROPOSERS):
                if agreed_bits & (1 << i) != 0:
                    agreed_updates += 1
            wrong_model: bool = model_decided and votes[v].modelHash != winner
            agreed: uint256 = agreed_updates
            if model_decided and not wrong_model:
                agreed += 1
            votes[v].agreed = agreed
            if wrong_model or (agreed_updates * 2 < decided_updates):
                votes[v].outcome = VOTER_LOSING
            else:
                votes[v].outcome = VOTER_WINNING
                merit = votes[v].weight * (agreed + 1)
        merits.append(merit)
        total_merit += merit

    # Money: this round's reward, split between accepted proposers and winning voters.
    rounds_left: uint256 = a.rounds + 2 - round_number
    reward: uint256 = a.rewardPool // rounds_left
    proposer_part: uint256 = 0
    if r.proposerCount > 0:
        proposer_part = reward * PROPOSER_SHARE_BPS // BPS
    voter_part: uint256 = reward - proposer_part
    proposer_paid: uint256 = 0
    voter_paid: uint256 = 0
    slash_total: uint256 = 0
    for i: uint256 in range(len(proposals), bound=MAX_PROPOSERS):
        if proposals[i].status == UPDATE_ACCEPTED:
            proposals[i].payout = proposer_part // accepted_count
            proposer_paid += proposals[i].payout
        elif proposals[i].status == UPDATE_REJECTED or proposals[i].status == UPDATE_MISSING:
            proposals[i].slashed = self._slashable(proposals[i].proposer, a.penalty)
            slash_total += proposals[i].slashed
    for v: uint256 in range(len(votes), bound=MAX_VOTERS):
        if votes[v].outcome == VOTER_WINNING and total_merit > 0:
            votes[v].payout = voter_part * merits[v] // total_merit
            voter_paid += votes[v].payout
        elif votes[v].outcome == VOTER_LOSING or votes[v].outcome == VOTER_SILENT:
            votes[v].slashed = self._slashable(votes[v].voter, a.penalty)
            slash_total += votes[v].slashed
    recovered: uint256 = min(slash_total, staticcall treasury.allowance(self, token.address))

    # ---- effects
    for i: uint256 in range(len(proposals), bound=MAX_PROPOSERS):
        self._proposals[allianceId][round_number][i] = proposals[i]
    for v: uint256 in range(len(votes), bound=MAX_VOTERS):
        self._votes[allianceId][round_number][v] = votes[v]
    paid: uint256 = proposer_paid + voter_paid
    pool: uint256 = a.rewardPool - paid + recovered
    r.modelHash = winner
    r.modelStake = winner_stake
    r.modelConfirmed = model_decided
    r.reward = reward
    r.proposerPaid = proposer_paid
    r.voterPaid = voter_paid
    r.slashed = slash_total
    r.recovered = recovered
    r.finalized = True
    self._rounds[allianceId][round_number] = r
    if model_decided:
        self._alliances[allianceId].modelHash = winner
        self._alliances[allianceId].modelRound = round_number - 1
    self._alliances[allianceId].totalPaid = a.totalPaid + paid
    self._alliances[allianceId].totalSlashed = a.totalSlashed + slash_total
    self._alliances[allianceId].totalRecovered = a.totalRecovered + recovered
    refund: uint256 = 0
    if round_number > a.rounds:
        refund = pool
        pool = 0
        self._alliances[allianceId].state = STATE_COMPLETE
        self._alliances[allianceId].refunded = refund
    else:
        self._alliances[allianceId].state = STATE_IDLE
    self._alliances[allianceId].rewardPool = pool

    for i: uint256 in range(len(proposals), bound=MAX_PROPOSERS):
        log UpdateSettled(
            allianceId=allianceId,
            round=round_number,
            proposer=proposals[i].proposer,
            index=i,
            updateHash=proposals[i].updateHash,
            status=proposals[i].status,
            acceptStake=proposals[i].acceptStake,
            rejectStake=proposals[i].rejectStake,
        )
    if model_decided:
        log ModelConfirmed(allianceId=allianceId, round=round_number, modelHash=winner, stake=winner_stake)

    # ---- interactions: rewards (through Staking, so delegators share), slashes, recovery, refund
    if paid > 0:
        assert extcall token.approve(staking.address, paid, default_return_value=True), "alliance: approve failed"
    for i: uint256 in range(len(proposals), bound=MAX_PROPOSERS):
        if proposals[i].payout > 0:
            self._reward(allianceId, round_number, proposals[i].proposer, proposals[i].payout, True)
    for v: uint256 in range(len(votes), bound=MAX_VOTERS):
        if votes[v].payout > 0:
            self._reward(allianceId, round_number, votes[v].voter, votes[v].payout, False)

    taken_total: uint256 = 0
    for i: uint256 in range(len(proposals), bound=MAX_PROPOSERS):
        if proposals[i].slashed > 0:
            reason: String[64] = REASON_REJECTED
            if proposals[i].status == UPDATE_MISSING:
                reason = REASON_NO_UPDATE
            taken_total += self._slash(allianceId, round_number, proposals[i].proposer, a.penalty, reason)
    for v: uint256 in range(len(votes), bound=MAX_VOTERS):
        if votes[v].slashed > 0:
            reason: String[64] = REASON_LOSING
            if votes[v].outcome == VOTER_SILENT:
                reason = REASON_SILENT
            taken_total += self._slash(allianceId, round_number, votes[v].voter, a.penalty, reason)
    assert taken_total == slash_total, "alliance: slash mismatch"
    if slash_total > 0:
        log SlashRecovered(allianceId=allianceId, round=round_number, slashed=slash_total, recovered=recovered)
    if recovered > 0:
        extcall treasury.pay(token.address, self, recovered)

    log RoundFinalized(
        allianceId=allianceId,
        round=round_number,
        acceptedMask=r.acceptedMask,
        rejectedMask=r.rejectedMask,
        reward=reward,
        paid=paid,
        slashed=slash_total,
        recovered=recovered,
        rewardPool=pool,
    )
    if round_number > a.rounds:
        log AllianceCompleted(allianceId=allianceId, modelHash=self._alliances[allianceId].modelHash, refunded=refund)
        if refund > 0:
            assert extcall token.transfer(a.creator, refund, default_return_value=True), "alliance: transfer failed"


# ------------------------------------------------------------------ views


@external
@view
def alliance(allianceId: uint256) -> Alliance:
    """
    @notice An alliance's parameters and state.
    """
    self._check_alliance(allianceId)
    return self._alliances[allianceId]


@external
@view
def members(allianceId: uint256) -> DynArray[address, MAX_MEMBERS]:
    """
    @notice Members in join order (the order of `snapshotWeights`).
    """
    self._check_alliance(allianceId)
    return self._members[allianceId]


@external
@view
def isMember(allianceId: uint256, account: address) -> bool:
    """
    @notice Whether `account` joined the alliance.
    """
    return self._isMember[allianceId][account]


@external
@view
def snapshotWeights(allianceId: uint256) -> DynArray[uint256, MAX_MEMBERS]:
    """
    @notice Each member's draw weight at the last `openRound` (members who joined later have none).
    """
    self._check_alliance(allianceId)
    return self._weights[allianceId]


@external
@view
def phase(allianceId: uint256) -> uint8:
    """
    @notice Where the alliance is now (see the `PHASE_*` constants).
    """
    self._check_alliance(allianceId)
    state: uint8 = self._alliances[allianceId].state
    if state == STATE_COMPLETE:
        return PHASE_COMPLETE
    if state == STATE_IDLE:
        return PHASE_IDLE
    if state == STATE_ARMED:
        return PHASE_ARMED
    r: Round = self._rounds[allianceId][self._alliances[allianceId].currentRound]
    if block.timestamp < r.proposeEnd:
        return PHASE_PROPOSING
    if block.timestamp < r.commitEnd:
        return PHASE_COMMITTING
    if block.timestamp < r.revealEnd:
        return PHASE_REVEALING
    return PHASE_FINALISABLE


@external
@view
def round(allianceId: uint256, roundNumber: uint256) -> Round:
    """
    @notice A round's seed, deadlines, counters, tally and settlement.
    """
    self._check_round(allianceId, roundNumber)
    return self._rounds[allianceId][roundNumber]


@external
@view
def committee(allianceId: uint256, roundNumber: uint256) -> (DynArray[address, MAX_PROPOSERS], DynArray[address, MAX_VOTERS]):
    """
    @notice The drawn proposers (index = bit in `acceptMask`) and voters of a started round.
    """
    self._check_round(allianceId, roundNumber)
    r: Round = self._rounds[allianceId][roundNumber]
    proposers: DynArray[address, MAX_PROPOSERS] = []
    voters: DynArray[address, MAX_VOTERS] = []
    for i: uint256 in range(r.proposerCount, bound=MAX_PROPOSERS):
        proposers.append(self._proposals[allianceId][roundNumber][i].proposer)
    for v: uint256 in range(r.voterCount, bound=MAX_VOTERS):
        voters.append(self._votes[allianceId][roundNumber][v].voter)
    return proposers, voters


@external
@view
def proposals(allianceId: uint256, roundNumber: uint256) -> DynArray[Proposal, MAX_PROPOSERS]:
    """
    @notice Every proposal of a round in proposer order, with its verdict and settlement.
    """
    self._check_round(allianceId, roundNumber)
    result: DynArray[Proposal, MAX_PROPOSERS] = []
    for i: uint256 in range(self._rounds[allianceId][roundNumber].proposerCount, bound=MAX_PROPOSERS):
        result.append(self._proposals[allianceId][roundNumber][i])
    return result


@external
@view
def votes(allianceId: uint256, roundNumber: uint256) -> DynArray[Vote, MAX_VOTERS]:
    """
    @notice Every vote of a round in voter order (masks and hashes once revealed).
    """
    self._check_round(allianceId, roundNumber)
    result: DynArray[Vote, MAX_VOTERS] = []
    for v: uint256 in range(self._rounds[allianceId][roundNumber].voterCount, bound=MAX_VOTERS):
        result.append(self._votes[allianceId][roundNumber][v])
    return result


@external
@view
def roleIn(allianceId: uint256, roundNumber: uint256, account: address) -> (uint8, uint256):
    """
    @notice `account`'s part in a round: (0, 0) none, (1, index) proposer, (2, index) voter.
    """
    slot: uint256 = self._proposerSlot[allianceId][roundNumber][account]
    if slot != 0:
        return 1, slot - 1
    slot = self._voterSlot[allianceId][roundNumber][account]
    if slot != 0:
        return 2, slot - 1
    return 0, 0


@external
@view
def acceptedUpdates(allianceId: uint256, roundNumber: uint256) -> DynArray[bytes32, MAX_PROPOSERS]:
    """
    @notice The hashes of the updates a finalised round accepted, in proposer order: the set aggregated into the model.
    """
    return self._updates_in(allianceId, roundNumber, True)


@external
@view
def rejectedUpdates(allianceId: uint256, roundNumber: uint256) -> DynArray[bytes32, MAX_PROPOSERS]:
    """
    @notice The hashes of the updates a finalised round rejected, in proposer order.
    """
    return self._updates_in(allianceId, roundNumber, False)


@external
@view
def globalModel(allianceId: uint256) -> (bytes32, uint256):
    """
    @notice The latest confirmed global model hash and the round that produced it (0 = the initial model).
    """
    self._check_alliance(allianceId)
    return self._alliances[allianceId].modelHash, self._alliances[allianceId].modelRound


@external
@view
def modelAfterRound(allianceId: uint256, roundNumber: uint256) -> bytes32:
    """
    @notice The confirmed hash of the model round `roundNumber` produced (0: the initial model);
            empty until the next round's voters confirm it.
    """
    self._check_alliance(allianceId)
    if roundNumber == 0:
        return self._alliances[allianceId].initialModelHash
    nxt: Round = self._rounds[allianceId][roundNumber + 1]
    if nxt.finalized and nxt.modelConfirmed:
        return nxt.modelHash
    return empty(bytes32)


@external
@pure
def voteCommitment(acceptMask: uint256, modelHash: bytes32, salt: bytes32, voter: address) -> bytes32:
    """
    @notice The commitment `commitVote` expects, for nodes to check their hashing.
    @return bytes32 `keccak256(abi_encode(acceptMask, modelHash, salt, voter))`.
    """
    return keccak256(abi_encode(acceptMask, modelHash, salt, voter))


# ------------------------------------------------------------------ internals


@internal
@view
def _check_alliance(allianceId: uint256):
    assert allianceId >= 1 and allianceId <= self.allianceCount, "alliance: unknown alliance"


@internal
@view
def _check_round(allianceId: uint256, roundNumber: uint256):
    self._check_alliance(allianceId)
    assert roundNumber >= 1 and roundNumber <= self._alliances[allianceId].currentRound, "alliance: unknown round"


@internal
@view
def _active_round(allianceId: uint256) -> uint256:
    """
    @dev The number of the running round; reverts unless one is running.
    """
    self._check_alliance(allianceId)
    assert self._alliances[allianceId].state == STATE_ACTIVE, "alliance: no round running"
    return self._alliances[allianceId].currentRound


@internal
@pure
def _committee_size(a: Alliance, round_number: uint256) -> uint256:
    """
    @dev The fewest eligible members a round needs: every voter, and one proposer unless it is the closing round.
    """
    if round_number > a.rounds:
        return a.votersPerRound
    return a.votersPerRound + 1


@internal
@pure
def _draw(
    seed: bytes32, snapshot: DynArray[uint256, MAX_MEMBERS], total: uint256, count: uint256
) -> DynArray[uint256, MAX_SETTLEMENTS]:
    """
    @dev `count` distinct member indices drawn with probability proportional
         to weight, without replacement: draw k picks the member whose
         cumulative-weight interval holds keccak256(seed, k) mod the weight
         left, then removes that member's weight. `openRound` guaranteed at
         least `count` members of positive weight.
    """
    weights: DynArray[uint256, MAX_MEMBERS] = snapshot
    remaining: uint256 = total
    drawn: DynArray[uint256, MAX_SETTLEMENTS] = []
    for k: uint256 in range(count, bound=MAX_SETTLEMENTS):
        target: uint256 = convert(keccak256(abi_encode(seed, k)), uint256) % remaining
        cumulative: uint256 = 0
        chosen: uint256 = 0
        for i: uint256 in range(len(weights), bound=MAX_MEMBERS):
            if weights[i] == 0:
                continue
            cumulative += weights[i]
            if target < cumulative:
                chosen = i
                break
        remaining -= weights[chosen]
        weights[chosen] = 0
        drawn.append(chosen)
    return drawn


@internal
@pure
def _majority_hash(votes: DynArray[Vote, MAX_VOTERS], revealed_stake: uint256) -> (bytes32, uint256):
    """
    @dev The model hash backed by more than half of the revealed stake, with
         that stake; (empty, 0) when no hash has a majority.
    """
    for vote: Vote in votes:
        if not vote.revealed:
            continue
        backing: uint256 = 0
        for other: Vote in votes:
            if other.revealed and other.modelHash == vote.modelHash:
                backing += other.weight
        if backing * 2 > revealed_stake:
            return vote.modelHash, backing
    return empty(bytes32), 0


@internal
@view
def _slashable(account: address, penalty: uint256) -> uint256:
    """
    @dev What `Staking.slash` will take for `penalty`: at most the pool's bonded plus unbonding COV.
    """
    pool: StakingPool = staticcall staking.pools(account, ROLE_PARTICIPANT)
    return min(penalty, pool.tokens + pool.unbonding_tokens)


@internal
@view
def _updates_in(allianceId: uint256, roundNumber: uint256, accepted: bool) -> DynArray[bytes32, MAX_PROPOSERS]:
    self._check_round(allianceId, roundNumber)
    mask: uint256 = self._rounds[allianceId][roundNumber].rejectedMask
    if accepted:
        mask = self._rounds[allianceId][roundNumber].acceptedMask
    result: DynArray[bytes32, MAX_PROPOSERS] = []
    for i: uint256 in range(self._rounds[allianceId][roundNumber].proposerCount, bound=MAX_PROPOSERS):
        if mask & (1 << i) != 0:
            result.append(self._proposals[allianceId][roundNumber][i].updateHash)
    return result


@internal
def _reward(allianceId: uint256, round_number: uint256, account: address, amount: uint256, as_proposer: bool):
    """
    @dev Pay through `Staking.distributeReward`: delegators share, and a pool
         without shares pays the account the whole amount.
    """
    log Rewarded(allianceId=allianceId, round=round_number, account=account, amount=amount, asProposer=as_proposer)
    extcall staking.distributeReward(account, ROLE_PARTICIPANT, amount)


@internal
def _slash(allianceId: uint256, round_number: uint256, account: address, penalty: uint256, reason: String[64]) -> uint256:
    taken: uint256 = extcall staking.slash(account, ROLE_PARTICIPANT, penalty, reason)
    log Slashed(allianceId=allianceId, round=round_number, account=account, requested=penalty, slashed=taken, reason=reason)
    return taken
