# pragma version ~=0.4.3
"""
@title Covey Arena (task market)
@custom:contract-name Arena
@license Apache-2.0
@notice A creator posts a task with a COV reward pool. Staked trainers
        commit to a model (`keccak256(abi_encode(weightsHash, salt,
        trainer))`) before the submission deadline and reveal it after, so
        nobody can copy a submission. Staked validators score every revealed
        submission off chain, commit to their scores and reveal them after
        the score-commit deadline. `finalize` takes the stake-weighted
        median of the revealed scores as each submission's consensus score,
        ranks the submissions, pays the top K trainers and the validators
        through `Staking.distributeReward` (so delegators get their share),
        slashes junk, silent and far-off participants through
        `Staking.slash`, and returns whatever is not paid to the creator.
        Scores are fixed point with 6 decimals and higher is always better.
        Payout schedule (see docs/arena-contract.md):
        - trainers share `TRAINER_SHARE_BPS` of the pool: with n = min(topK,
          eligible submissions) paid trainers, rank i (0-based) gets
          2**(n-1-i) / (2**n - 1) of it,
        - validators share the rest in proportion to stake weight x
          closeness, closeness = max(0, tolerance - mean absolute deviation)
          / tolerance,
        - rounding dust and unpaid parts go back to the creator.
        Functions:
        - `createTask`, `addToPool`, `fundFromTreasury` (owner),
        - `commitSubmission`, `revealSubmission`,
        - `commitScores`, `revealScores`,
        - `finalize`,
        - views: `task`, `taskCount`, `phase`, `submissions`, `submission`,
          `submissionIndexOf`, `validatorsOf`, `validator`, `revealedScores`,
          `consensusModel`, `submissionCommitment`, `scoresCommitment`,
        - `owner`, `transfer_ownership`, `renounce_ownership` (snekmate `ownable`).
"""


from ethereum.ercs import IERC20

from snekmate.auth import ownable
initializes: ownable

exports: (
    ownable.owner,
    ownable.transfer_ownership,
    ownable.renounce_ownership,
)


# ------------------------------------------------------------------ interfaces


# @dev One Staking pool as `Staking.pools` returns it; the Arena only reads `shares`.
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


# ------------------------------------------------------------------ constants


# @dev The most submissions one task accepts; bounds `finalize`'s gas.
MAX_SUBMISSIONS: public(constant(uint256)) = 64

# @dev The most validators one task accepts; bounds the median's insertion sort.
MAX_VALIDATORS: public(constant(uint256)) = 16

# @dev The largest score a validator may reveal (2**128), so sums of deviations never overflow.
MAX_SCORE: public(constant(uint256)) = 2**128

# @dev Scores are fixed point with this many decimals (e.g. 2.5 -> 2_500_000).
SCORE_DECIMALS: public(constant(uint256)) = 6

# @dev The denominator of every basis-point constant.
BPS: public(constant(uint256)) = 10_000

# @dev The trainers' part of the reward pool (80%); validators get the rest.
TRAINER_SHARE_BPS: public(constant(uint256)) = 8_000

# @dev The share of `minTrainerStake` slashed from a trainer who submits junk or never reveals (50%).
TRAINER_SLASH_BPS: public(constant(uint256)) = 5_000

# @dev The share of `minValidatorStake` slashed from a validator who is far off or never reveals (50%).
VALIDATOR_SLASH_BPS: public(constant(uint256)) = 5_000

# @dev The fixed-point scale of a validator's closeness to consensus (1e18 = exactly on consensus).
CLOSENESS_SCALE: public(constant(uint256)) = 10**18

# @dev Staking roles (the `uint8` values of `covey.chain.roles.Role`).
ROLE_TRAINER: public(constant(uint8)) = 0
ROLE_VALIDATOR: public(constant(uint8)) = 1

# @dev Task phases as `phase` reports them, in the order they happen.
PHASE_COMMITTING: public(constant(uint8)) = 0
PHASE_REVEALING: public(constant(uint8)) = 1
PHASE_SCORING: public(constant(uint8)) = 2
PHASE_REVEALING_SCORES: public(constant(uint8)) = 3
PHASE_FINALISABLE: public(constant(uint8)) = 4
PHASE_FINALISED: public(constant(uint8)) = 5

# @dev Slash reasons passed to `Staking.slash` and logged in `Slashed`.
REASON_NO_REVEAL: constant(String[64]) = "arena: submission not revealed"
REASON_JUNK: constant(String[64]) = "arena: submission below baseline"
REASON_NO_SCORES: constant(String[64]) = "arena: scores not revealed"
REASON_FAR_OFF: constant(String[64]) = "arena: scores far from consensus"

# @dev The most payments / slashes one `finalize` makes (every trainer and every validator).
MAX_PARTICIPANTS: constant(uint256) = MAX_SUBMISSIONS + MAX_VALIDATORS


# ------------------------------------------------------------------ structs


struct Task:
    creator: address
    specHash: bytes32
    rewardPool: uint256
    submitDeadline: uint256
    revealDeadline: uint256
    scoreCommitDeadline: uint256
    scoreRevealDeadline: uint256
    topK: uint256
    minTrainerStake: uint256
    minValidatorStake: uint256
    baselineScore: uint256
    tolerance: uint256
    trainerPenalty: uint256
    validatorPenalty: uint256
    submissionCount: uint256
    revealedCount: uint256
    validatorCount: uint256
    revealedValidatorCount: uint256
    finalized: bool
    hasWinner: bool
    winnerIndex: uint256
    trainerPaid: uint256
    validatorPaid: uint256
    refunded: uint256


struct Submission:
    trainer: address
    commitment: bytes32
    weightsHash: bytes32
    uri: String[256]
    revealed: bool
    consensusScore: uint256
    rank: uint256
    payout: uint256
    slashed: uint256


struct Validator:
    validator: address
    commitment: bytes32
    weight: uint256
    revealed: bool
    meanDeviation: uint256
    payout: uint256
    slashed: uint256


# ------------------------------------------------------------------ events


# @dev Emitted when a task is posted; the pool is already held by the Arena.
event TaskCreated:
    taskId: indexed(uint256)
    creator: indexed(address)
    specHash: indexed(bytes32)
    rewardPool: uint256
    submitDeadline: uint256
    revealDeadline: uint256
    scoreCommitDeadline: uint256
    scoreRevealDeadline: uint256
    topK: uint256
    minTrainerStake: uint256
    minValidatorStake: uint256
    baselineScore: uint256
    tolerance: uint256


# @dev Emitted whenever COV is added to a task's pool (a funded creation included); `rewardPool` is the new total.
event PoolFunded:
    taskId: indexed(uint256)
    funder: indexed(address)
    amount: uint256
    rewardPool: uint256


# @dev Emitted when a trainer commits to a submission; `index` is its place in submission order.
event SubmissionCommitted:
    taskId: indexed(uint256)
    trainer: indexed(address)
    index: uint256
    commitment: bytes32


# @dev Emitted when a trainer reveals the weights hash and URI that match its commitment.
event SubmissionRevealed:
    taskId: indexed(uint256)
    trainer: indexed(address)
    index: uint256
    weightsHash: bytes32
    uri: String[256]


# @dev Emitted when an earlier commitment reveals the same weights: the later
#      reveal at `index` was a copy, loses its place and is slashed as unrevealed.
event SubmissionDisplaced:
    taskId: indexed(uint256)
    trainer: indexed(address)
    index: uint256
    weightsHash: bytes32
    byIndex: uint256


# @dev Emitted when a validator commits to its scores; `weight` is its effective stake at that moment.
event ScoresCommitted:
    taskId: indexed(uint256)
    validator: indexed(address)
    weight: uint256
    commitment: bytes32


# @dev Emitted when a validator reveals scores matching its commitment, one per revealed submission.
event ScoresRevealed:
    taskId: indexed(uint256)
    validator: indexed(address)
    scores: DynArray[uint256, MAX_SUBMISSIONS]


# @dev Emitted by `finalize` for each revealed submission: its consensus score and rank (1 = best).
event ConsensusReached:
    taskId: indexed(uint256)
    index: indexed(uint256)
    trainer: indexed(address)
    consensusScore: uint256
    rank: uint256
    eligible: bool


# @dev Emitted for each trainer paid (through `Staking.distributeReward`, so delegators share).
event TrainerPaid:
    taskId: indexed(uint256)
    trainer: indexed(address)
    rank: uint256
    amount: uint256


# @dev Emitted for each validator paid (through `Staking.distributeReward`, as trainers are).
event ValidatorPaid:
    taskId: indexed(uint256)
    validator: indexed(address)
    meanDeviation: uint256
    amount: uint256


# @dev Emitted for each slash; `requested` is the penalty, `slashed` what the Staking actually took
# (less, down to 0, when the pool holds less).
event Slashed:
    taskId: indexed(uint256)
    account: indexed(address)
    role: uint8
    requested: uint256
    slashed: uint256
    reason: String[64]


# @dev Emitted when the unpaid part of the pool goes back to the creator.
event RemainderReturned:
    taskId: indexed(uint256)
    creator: indexed(address)
    amount: uint256


# @dev Emitted once per task when it is settled; `winner` is empty when no submission was eligible.
event TaskFinalized:
    taskId: indexed(uint256)
    winner: indexed(address)
    trainerPaid: uint256
    validatorPaid: uint256
    refunded: uint256


# ------------------------------------------------------------------ storage


# @dev The COV token pools are paid in.
token: public(immutable(IERC20))

# @dev The Staking contract: stake checks, rewards (with delegation) and slashing; the Arena is one of its modules.
staking: public(immutable(IStaking))

# @dev The Treasury that may top up pools through `fundFromTreasury`.
treasury: public(immutable(ITreasury))

# @dev The number of tasks ever created; task ids run from 1 to `taskCount`.
taskCount: public(uint256)

# @dev Task id -> task.
_tasks: HashMap[uint256, Task]

# @dev Task id -> submission index -> submission, in commit order.
_submissions: HashMap[uint256, HashMap[uint256, Submission]]

# @dev Task id -> trainer -> submission index + 1 (0 = no submission).
_submissionSlot: HashMap[uint256, HashMap[address, uint256]]

# @dev Task id -> weights hash -> index + 1 of the revealed submission that owns them (0 = none).
_weightsOwner: HashMap[uint256, HashMap[bytes32, uint256]]

# @dev Task id -> validator index -> validator, in commit order.
_validators: HashMap[uint256, HashMap[uint256, Validator]]

# @dev Task id -> validator -> validator index + 1 (0 = not a validator of the task).
_validatorSlot: HashMap[uint256, HashMap[address, uint256]]

# @dev Task id -> validator -> revealed scores, one per revealed submission in submission order.
_scores: HashMap[uint256, HashMap[address, DynArray[uint256, MAX_SUBMISSIONS]]]


# ------------------------------------------------------------------ setup


@deploy
def __init__(token_: IERC20, staking_: IStaking, treasury_: ITreasury):
    """
    @notice Deploy the Arena wired to the suite. It must then be registered
            as a Staking module (it slashes and pays rewards) and, to use
            `fundFromTreasury`, given an allowance at the Treasury.
    @param token_ The COV token.
    @param staking_ The Staking contract.
    @param treasury_ The Treasury.
    """
    assert token_.address != empty(address), "arena: token is the zero address"
    assert staking_.address != empty(address), "arena: staking is the zero address"
    ownable.__init__()
    token = token_
    staking = staking_
    treasury = treasury_


# ------------------------------------------------------------------ tasks


@external
@nonreentrant
def createTask(
    specHash: bytes32,
    rewardPool: uint256,
    submitDeadline: uint256,
    revealDeadline: uint256,
    scoreCommitDeadline: uint256,
    scoreRevealDeadline: uint256,
    topK: uint256,
    minTrainerStake: uint256,
    minValidatorStake: uint256,
    baselineScore: uint256,
    tolerance: uint256,
) -> uint256:
    """
    @notice Post a task and fund its pool with `rewardPool` COV from the
            caller (approve the Arena first).
    @param specHash The hash of the task spec in the artifact store.
    @param rewardPool The COV paid out at `finalize` (more can be added by `addToPool`).
    @param submitDeadline Trainers commit before this timestamp.
    @param revealDeadline Trainers reveal from `submitDeadline` until this timestamp.
    @param scoreCommitDeadline Validators commit scores from `revealDeadline` until this timestamp.
    @param scoreRevealDeadline Validators reveal scores from `scoreCommitDeadline` until this timestamp.
    @param topK How many trainers are paid (1 to `MAX_SUBMISSIONS`).
    @param minTrainerStake The trainer-role effective stake a trainer needs.
    @param minValidatorStake The validator-role effective stake a validator needs.
    @param baselineScore Submissions whose consensus score is below it are junk.
    @param tolerance The mean absolute deviation from consensus at which a validator earns nothing.
    @return uint256 The new task's id.
    """
    assert submitDeadline > block.timestamp, "arena: deadline in the past"
    assert (
        revealDeadline > submitDeadline
        and scoreCommitDeadline > revealDeadline
        and scoreRevealDeadline > scoreCommitDeadline
    ), "arena: deadlines not increasing"
    assert topK >= 1, "arena: topK is zero"
    assert topK <= MAX_SUBMISSIONS, "arena: topK above max submissions"
    assert tolerance > 0, "arena: zero tolerance"
    assert tolerance <= MAX_SCORE, "arena: tolerance too large"

    task_id: uint256 = self.taskCount + 1
    self.taskCount = task_id
    self._tasks[task_id] = Task(
        creator=msg.sender,
        specHash=specHash,
        rewardPool=rewardPool,
        submitDeadline=submitDeadline,
        revealDeadline=revealDeadline,
        scoreCommitDeadline=scoreCommitDeadline,
        scoreRevealDeadline=scoreRevealDeadline,
        topK=topK,
        minTrainerStake=minTrainerStake,
        minValidatorStake=minValidatorStake,
        baselineScore=baselineScore,
        tolerance=tolerance,
        trainerPenalty=minTrainerStake * TRAINER_SLASH_BPS // BPS,
        validatorPenalty=minValidatorStake * VALIDATOR_SLASH_BPS // BPS,
        submissionCount=0,
        revealedCount=0,
        validatorCount=0,
        revealedValidatorCount=0,
        finalized=False,
        hasWinner=False,
        winnerIndex=0,
        trainerPaid=0,
        validatorPaid=0,
        refunded=0,
    )
    log TaskCreated(
        taskId=task_id,
        creator=msg.sender,
        specHash=specHash,
        rewardPool=rewardPool,
        submitDeadline=submitDeadline,
        revealDeadline=revealDeadline,
        scoreCommitDeadline=scoreCommitDeadline,
        scoreRevealDeadline=scoreRevealDeadline,
        topK=topK,
        minTrainerStake=minTrainerStake,
        minValidatorStake=minValidatorStake,
        baselineScore=baselineScore,
        tolerance=tolerance,
    )
    if rewardPool > 0:
        log PoolFunded(taskId=task_id, funder=msg.sender, amount=rewardPool, rewardPool=rewardPool)
        assert extcall token.transferFrom(msg.sender, self, rewardPool, default_return_value=True), "arena: transfer failed"
    return task_id


@external
@nonreentrant
def addToPool(taskId: uint256, amount: uint256):
    """
    @notice Add `amount` COV from the caller to a task's pool (approve the
            Arena first); anyone may, until the task is finalised.
    @param taskId The task.
    @param amount The COV to add (not zero).
    """
    new_pool: uint256 = self._credit_pool(taskId, amount)
    log PoolFunded(taskId=taskId, funder=msg.sender, amount=amount, rewardPool=new_pool)
    assert extcall token.transferFrom(msg.sender, self, amount, default_return_value=True), "arena: transfer failed"


@external
@nonreentrant
def fundFromTreasury(taskId: uint256, amount: uint256):
    """
    @notice Top up a task's pool from the Treasury (owner only), within the
            allowance the Treasury grants the Arena as one of its modules.
    @param taskId The task.
    @param amount The COV to add (not zero).
    """
    ownable._check_owner()
    new_pool: uint256 = self._credit_pool(taskId, amount)
    log PoolFunded(taskId=taskId, funder=treasury.address, amount=amount, rewardPool=new_pool)
    extcall treasury.pay(token.address, self, amount)


# ------------------------------------------------------------------ trainers


@external
@nonreentrant
def commitSubmission(taskId: uint256, commitment: bytes32):
    """
    @notice Commit to a submission before the submission deadline; one per
            trainer per task.
    @param taskId The task.
    @param commitment `keccak256(abi_encode(weightsHash, salt, trainer))`:
           the trainer's address in it stops anyone replaying the commitment.
    """
    self._check_task(taskId)
    assert block.timestamp < self._tasks[taskId].submitDeadline, "arena: submissions closed"
    assert commitment != empty(bytes32), "arena: empty commitment"
    assert self._submissionSlot[taskId][msg.sender] == 0, "arena: already submitted"
    index: uint256 = self._tasks[taskId].submissionCount
    assert index < MAX_SUBMISSIONS, "arena: task full"
    stake: uint256 = staticcall staking.effectiveStake(msg.sender, ROLE_TRAINER)
    assert stake >= self._tasks[taskId].minTrainerStake, "arena: trainer stake too low"

    self._tasks[taskId].submissionCount = index + 1
    self._submissionSlot[taskId][msg.sender] = index + 1
    self._submissions[taskId][index].trainer = msg.sender
    self._submissions[taskId][index].commitment = commitment
    log SubmissionCommitted(taskId=taskId, trainer=msg.sender, index=index, commitment=commitment)


@external
@nonreentrant
def revealSubmission(taskId: uint256, weightsHash: bytes32, salt: bytes32, uri: String[256]):
    """
    @notice Reveal a committed submission between the submission and the
            reveal deadline. The earliest commitment owns given weights: a
            later commitment cannot reveal the same `weightsHash`, and if it
            revealed first, the earlier one's reveal displaces it (it then
            counts as unrevealed and is slashed at `finalize`). So a copy of
            leaked weights cannot take the original's place by revealing first.
    @param taskId The task.
    @param weightsHash The hash of the weights file (its artifact id).
    @param salt The salt used in the commitment.
    @param uri Where validators fetch the weights.
    """
    self._check_task(taskId)
    assert block.timestamp >= self._tasks[taskId].submitDeadline, "arena: reveal not open"
    assert block.timestamp < self._tasks[taskId].revealDeadline, "arena: reveal closed"
    slot: uint256 = self._submissionSlot[taskId][msg.sender]
    assert slot != 0, "arena: no submission"
    index: uint256 = slot - 1
    assert not self._submissions[taskId][index].revealed, "arena: already revealed"
    expected: bytes32 = keccak256(abi_encode(weightsHash, salt, msg.sender))
    assert expected == self._submissions[taskId][index].commitment, "arena: bad reveal"
    owner: uint256 = self._weightsOwner[taskId][weightsHash]
    assert owner == 0 or owner - 1 > index, "arena: duplicate weights"
    assert len(uri) > 0, "arena: empty uri"

    if owner != 0:
        displaced: uint256 = owner - 1
        self._submissions[taskId][displaced].revealed = False
        self._tasks[taskId].revealedCount -= 1
        log SubmissionDisplaced(
            taskId=taskId,
            trainer=self._submissions[taskId][displaced].trainer,
            index=displaced,
            weightsHash=weightsHash,
            byIndex=index,
        )
    self._weightsOwner[taskId][weightsHash] = index + 1
    self._submissions[taskId][index].weightsHash = weightsHash
    self._submissions[taskId][index].uri = uri
    self._submissions[taskId][index].revealed = True
    self._tasks[taskId].revealedCount += 1
    log SubmissionRevealed(taskId=taskId, trainer=msg.sender, index=index, weightsHash=weightsHash, uri=uri)


# ------------------------------------------------------------------ validators


@external
@nonreentrant
def commitScores(taskId: uint256, commitment: bytes32):
    """
    @notice Commit to scores between the reveal and the score-commit
            deadline. The validator's effective stake now is its weight in
            the median and in the validators' payout.
    @param taskId The task.
    @param commitment `keccak256(abi_encode(scores, salt, validator))` with
           `scores` a `uint256[]`, one per revealed submission in submission order.
    """
    self._check_task(taskId)
    assert block.timestamp >= self._tasks[taskId].revealDeadline, "arena: scoring not open"
    assert block.timestamp < self._tasks[taskId].scoreCommitDeadline, "arena: scoring closed"
    assert self._tasks[taskId].revealedCount > 0, "arena: nothing to score"
    assert commitment != empty(bytes32), "arena: empty commitment"
    assert self._validatorSlot[taskId][msg.sender] == 0, "arena: already committed"
    assert self._submissionSlot[taskId][msg.sender] == 0, "arena: trainer cannot validate"
    index: uint256 = self._tasks[taskId].validatorCount
    assert index < MAX_VALIDATORS, "arena: validators full"
    weight: uint256 = staticcall staking.effectiveStake(msg.sender, ROLE_VALIDATOR)
    assert weight >= self._tasks[taskId].minValidatorStake, "arena: validator stake too low"
    assert weight > 0, "arena: no validator stake"

    self._tasks[taskId].validatorCount = index + 1
    self._validatorSlot[taskId][msg.sender] = index + 1
    self._validators[taskId][index].validator = msg.sender
    self._validators[taskId][index].commitment = commitment
    self._validators[taskId][index].weight = weight
    log ScoresCommitted(taskId=taskId, validator=msg.sender, weight=weight, commitment=commitment)


@external
@nonreentrant
def revealScores(taskId: uint256, scores: DynArray[uint256, MAX_SUBMISSIONS], salt: bytes32):
    """
    @notice Reveal committed scores between the score-commit and the
            score-reveal deadline.
    @param taskId The task.
    @param scores One score per revealed submission, in submission order
           (6 decimals, higher is better, at most `MAX_SCORE`).
    @param salt The salt used in the commitment.
    """
    self._check_task(taskId)
    assert block.timestamp >= self._tasks[taskId].scoreCommitDeadline, "arena: score reveal not open"
    assert block.timestamp < self._tasks[taskId].scoreRevealDeadline, "arena: score reveal closed"
    slot: uint256 = self._validatorSlot[taskId][msg.sender]
    assert slot != 0, "arena: no score commitment"
    index: uint256 = slot - 1
    assert not self._validators[taskId][index].revealed, "arena: scores already revealed"
    assert len(scores) == self._tasks[taskId].revealedCount, "arena: wrong score count"
    expected: bytes32 = keccak256(abi_encode(scores, salt, msg.sender))
    assert expected == self._validators[taskId][index].commitment, "arena: bad reveal"
    for score: uint256 in scores:
        assert score <= MAX_SCORE, "arena: score too large"

    self._validators[taskId][index].revealed = True
    self._scores[taskId][msg.sender] = scores
    self._tasks[taskId].revealedValidatorCount += 1
    log ScoresRevealed(taskId=taskId, validator=msg.sender, scores=scores)


# ------------------------------------------------------------------ settlement


@external
@nonreentrant
def finalize(taskId: uint256):
    """
    @notice Settle a task after the score-reveal deadline; anyone may call,
            once. Computes consensus scores and ranks, pays trainers and
            validators, slashes, and returns the rest to the creator. All
            state is written before any token transfer or Staking call.
    @param taskId The task.
    """
    self._check_task(taskId)
    t: Task = self._tasks[taskId]
    assert block.timestamp >= t.scoreRevealDeadline, "arena: not finalisable yet"
    assert not t.finalized, "arena: already finalised"

    # Validators who revealed, in commit order, with their stake weights.
    voters: DynArray[address, MAX_VALIDATORS] = []
    weights: DynArray[uint256, MAX_VALIDATORS] = []
    for v: uint256 in range(t.validatorCount, bound=MAX_VALIDATORS):
        if self._validators[taskId][v].revealed:
            voters.append(self._validators[taskId][v].validator)
            weights.append(self._validators[taskId][v].weight)
    judged: bool = len(voters) > 0

    # Consensus per revealed submission; `order` maps score position -> submission index.
    order: DynArray[uint256, MAX_SUBMISSIONS] = []
    consensus: DynArray[uint256, MAX_SUBMISSIONS] = []
    deviation_sums: uint256[MAX_VALIDATORS] = empty(uint256[MAX_VALIDATORS])
    for i: uint256 in range(t.submissionCount, bound=MAX_SUBMISSIONS):
        if not self._submissions[taskId][i].revealed:
            continue
        position: uint256 = len(order)
        score: uint256 = 0
        if judged:
            column: DynArray[uint256, MAX_VALIDATORS] = []
            for voter: address in voters:
                column.append(self._scores[taskId][voter][position])
            score = self._weighted_median(column, weights)
            for v: uint256 in range(len(column), bound=MAX_VALIDATORS):
                deviation_sums[v] += self._distance(column[v], score)
        order.append(i)
        consensus.append(score)

    # Ranks (positions into `order`, best first, ties to the earlier commit); eligible ones form a prefix.
    ranking: DynArray[uint256, MAX_SUBMISSIONS] = self._rank(consensus)
    eligible_count: uint256 = 0
    if judged:
        for position: uint256 in ranking:
            if consensus[position] >= t.baselineScore:
                eligible_count += 1
    paid_count: uint256 = min(t.topK, eligible_count)
    trainer_part: uint256 = t.rewardPool * TRAINER_SHARE_BPS // BPS
    validator_part: uint256 = t.rewardPool - trainer_part
    denominator: uint256 = (1 << paid_count) - 1

    # Effects: every record and total is written here, before any external call.
    payees: DynArray[address, MAX_PARTICIPANTS] = []
    payee_roles: DynArray[uint8, MAX_PARTICIPANTS] = []
    payee_amounts: DynArray[uint256, MAX_PARTICIPANTS] = []
    culprits: DynArray[address, MAX_PARTICIPANTS] = []
    culprit_roles: DynArray[uint8, MAX_PARTICIPANTS] = []
    culprit_reasons: DynArray[String[64], MAX_PARTICIPANTS] = []
    trainer_paid: uint256 = 0
    validator_paid: uint256 = 0

    for r: uint256 in range(len(ranking), bound=MAX_SUBMISSIONS):
        position: uint256 = ranking[r]
        index: uint256 = order[position]
        trainer: address = self._submissions[taskId][index].trainer
        score: uint256 = consensus[position]
        rank: uint256 = 0
        if judged:
            rank = r + 1
            self._submissions[taskId][index].rank = rank
            self._submissions[taskId][index].consensusScore = score
        eligible: bool = judged and r < eligible_count
        if r < paid_count:
            amount: uint256 = trainer_part * (1 << (paid_count - 1 - r)) // denominator
            self._submissions[taskId][index].payout = amount
            trainer_paid += amount
            if amount > 0:
                payees.append(trainer)
                payee_roles.append(ROLE_TRAINER)
                payee_amounts.append(amount)
        elif judged and not eligible:
            self._submissions[taskId][index].slashed = t.trainerPenalty
            if t.trainerPenalty > 0:
                culprits.append(trainer)
                culprit_roles.append(ROLE_TRAINER)
                culprit_reasons.append(REASON_JUNK)
        if judged:
            log ConsensusReached(
                taskId=taskId, index=index, trainer=trainer, consensusScore=score, rank=rank, eligible=eligible
            )

    for i: uint256 in range(t.submissionCount, bound=MAX_SUBMISSIONS):
        if not self._submissions[taskId][i].revealed:
            self._submissions[taskId][i].slashed = t.trainerPenalty
            if t.trainerPenalty > 0:
                culprits.append(self._submissions[taskId][i].trainer)
                culprit_roles.append(ROLE_TRAINER)
                culprit_reasons.append(REASON_NO_REVEAL)

    # Validators: merit = weight x closeness; far-off and silent validators are slashed.
    merits: DynArray[uint256, MAX_VALIDATORS] = []
    total_merit: uint256 = 0
    allowed_deviation: uint256 = t.tolerance * len(order)
    for v: uint256 in range(len(voters), bound=MAX_VALIDATORS):
        merit: uint256 = 0
        if deviation_sums[v] <= allowed_deviation:
            closeness: uint256 = (allowed_deviation - deviation_sums[v]) * CLOSENESS_SCALE // allowed_deviation
            merit = weights[v] * closeness
        merits.append(merit)
        total_merit += merit

    voter: uint256 = 0
    for v: uint256 in range(t.validatorCount, bound=MAX_VALIDATORS):
        account: address = self._validators[taskId][v].validator
        if not self._validators[taskId][v].revealed:
            self._validators[taskId][v].slashed = t.validatorPenalty
            if t.validatorPenalty > 0:
                culprits.append(account)
                culprit_roles.append(ROLE_VALIDATOR)
                culprit_reasons.append(REASON_NO_SCORES)
            continue
        self._validators[taskId][v].meanDeviation = deviation_sums[voter] // len(order)
        if deviation_sums[voter] > allowed_deviation:
            self._validators[taskId][v].slashed = t.validatorPenalty
            if t.validatorPenalty > 0:
                culprits.append(account)
                culprit_roles.append(ROLE_VALIDATOR)
                culprit_reasons.append(REASON_FAR_OFF)
        elif total_merit > 0:
            amount: uint256 = validator_part * merits[voter] // total_merit
            self._validators[taskId][v].payout = amount
            validator_paid += amount
            if amount > 0:
                payees.append(account)
                payee_roles.append(ROLE_VALIDATOR)
                payee_amounts.append(amount)
        voter += 1

    refund: uint256 = t.rewardPool - trainer_paid - validator_paid
    winner: address = empty(address)
    self._tasks[taskId].finalized = True
    self._tasks[taskId].trainerPaid = trainer_paid
    self._tasks[taskId].validatorPaid = validator_paid
    self._tasks[taskId].refunded = refund
    if eligible_count > 0:
        self._tasks[taskId].hasWinner = True
        self._tasks[taskId].winnerIndex = order[ranking[0]]
        winner = self._submissions[taskId][order[ranking[0]]].trainer

    # Interactions: rewards through the Staking (delegators get their share), then slashes, then the refund.
    paid_total: uint256 = trainer_paid + validator_paid
    if paid_total > 0:
        assert extcall token.approve(staking.address, paid_total, default_return_value=True), "arena: approve failed"
    for p: uint256 in range(len(payees), bound=MAX_PARTICIPANTS):
        extcall staking.distributeReward(payees[p], payee_roles[p], payee_amounts[p])
        if payee_roles[p] == ROLE_TRAINER:
            index: uint256 = self._submissionSlot[taskId][payees[p]] - 1
            log TrainerPaid(
                taskId=taskId,
                trainer=payees[p],
                rank=self._submissions[taskId][index].rank,
                amount=payee_amounts[p],
            )
        else:
            index: uint256 = self._validatorSlot[taskId][payees[p]] - 1
            log ValidatorPaid(
                taskId=taskId,
                validator=payees[p],
                meanDeviation=self._validators[taskId][index].meanDeviation,
                amount=payee_amounts[p],
            )
    for c: uint256 in range(len(culprits), bound=MAX_PARTICIPANTS):
        penalty: uint256 = t.trainerPenalty
        if culprit_roles[c] == ROLE_VALIDATOR:
            penalty = t.validatorPenalty
        taken: uint256 = extcall staking.slash(culprits[c], culprit_roles[c], penalty, culprit_reasons[c])
        log Slashed(
            taskId=taskId,
            account=culprits[c],
            role=culprit_roles[c],
            requested=penalty,
            slashed=taken,
            reason=culprit_reasons[c],
        )
    if refund > 0:
        log RemainderReturned(taskId=taskId, creator=t.creator, amount=refund)
        assert extcall token.transfer(t.creator, refund, default_return_value=True), "arena: transfer failed"
    log TaskFinalized(
        taskId=taskId, winner=winner, trainerPaid=trainer_paid, validatorPaid=validator_paid, refunded=refund
    )


# ------------------------------------------------------------------ views


@external
@view
def task(taskId: uint256) -> Task:
    """
    @notice A task's parameters, counters and settlement totals.
    @param taskId The task.
    @return Task The task.
    """
    self._check_task(taskId)
    return self._tasks[taskId]


@external
@view
def phase(taskId: uint256) -> uint8:
    """
    @notice Where the task is now: 0 committing, 1 revealing, 2 scoring,
            3 revealing scores, 4 finalisable, 5 finalised.
    @param taskId The task.
    @return uint8 The phase (see the `PHASE_*` constants).
    """
    self._check_task(taskId)
    if self._tasks[taskId].finalized:
        return PHASE_FINALISED
    if block.timestamp < self._tasks[taskId].submitDeadline:
        return PHASE_COMMITTING
    if block.timestamp < self._tasks[taskId].revealDeadline:
        return PHASE_REVEALING
    if block.timestamp < self._tasks[taskId].scoreCommitDeadline:
        return PHASE_SCORING
    if block.timestamp < self._tasks[taskId].scoreRevealDeadline:
        return PHASE_REVEALING_SCORES
    return PHASE_FINALISABLE


@external
@view
def submissions(taskId: uint256) -> DynArray[Submission, MAX_SUBMISSIONS]:
    """
    @notice Every submission of a task in commit order (the order scores follow, skipping unrevealed ones).
    @param taskId The task.
    @return DynArray The submissions.
    """
    self._check_task(taskId)
    result: DynArray[Submission, MAX_SUBMISSIONS] = []
    for i: uint256 in range(self._tasks[taskId].submissionCount, bound=MAX_SUBMISSIONS):
        result.append(self._submissions[taskId][i])
    return result


@external
@view
def submission(taskId: uint256, index: uint256) -> Submission:
    """
    @notice One submission of a task.
    @param taskId The task.
    @param index Its place in commit order.
    @return Submission The submission.
    """
    self._check_task(taskId)
    assert index < self._tasks[taskId].submissionCount, "arena: unknown submission"
    return self._submissions[taskId][index]


@external
@view
def submissionIndexOf(taskId: uint256, trainer: address) -> uint256:
    """
    @notice The index of a trainer's submission in a task.
    @param taskId The task.
    @param trainer The trainer.
    @return uint256 The index in commit order.
    """
    self._check_task(taskId)
    slot: uint256 = self._submissionSlot[taskId][trainer]
    assert slot != 0, "arena: no submission"
    return slot - 1


@external
@view
def validatorsOf(taskId: uint256) -> DynArray[Validator, MAX_VALIDATORS]:
    """
    @notice Every validator that committed scores to a task, in commit order.
    @param taskId The task.
    @return DynArray The validators with weight, reveal flag and settlement.
    """
    self._check_task(taskId)
    result: DynArray[Validator, MAX_VALIDATORS] = []
    for v: uint256 in range(self._tasks[taskId].validatorCount, bound=MAX_VALIDATORS):
        result.append(self._validators[taskId][v])
    return result


@external
@view
def validator(taskId: uint256, index: uint256) -> Validator:
    """
    @notice One validator of a task.
    @param taskId The task.
    @param index Its place in commit order.
    @return Validator The validator record.
    """
    self._check_task(taskId)
    assert index < self._tasks[taskId].validatorCount, "arena: unknown validator"
    return self._validators[taskId][index]


@external
@view
def revealedScores(taskId: uint256, validator: address) -> DynArray[uint256, MAX_SUBMISSIONS]:
    """
    @notice A validator's revealed scores (empty until revealed), one per
            revealed submission in submission order.
    @param taskId The task.
    @param validator The validator.
    @return DynArray The scores.
    """
    self._check_task(taskId)
    return self._scores[taskId][validator]


@external
@view
def consensusModel(taskId: uint256) -> (address, bytes32, String[256], uint256):
    """
    @notice The task's winning model once finalised: its trainer, weights
            hash, URI and consensus score. Reverts when there is none.
    @param taskId The task.
    @return address The trainer.
    @return bytes32 The weights hash.
    @return String The weights URI.
    @return uint256 The consensus score.
    """
    self._check_task(taskId)
    assert self._tasks[taskId].finalized, "arena: not finalised"
    assert self._tasks[taskId].hasWinner, "arena: no consensus model"
    index: uint256 = self._tasks[taskId].winnerIndex
    return (
        self._submissions[taskId][index].trainer,
        self._submissions[taskId][index].weightsHash,
        self._submissions[taskId][index].uri,
        self._submissions[taskId][index].consensusScore,
    )


@external
@pure
def submissionCommitment(weightsHash: bytes32, salt: bytes32, trainer: address) -> bytes32:
    """
    @notice The commitment `commitSubmission` expects, for off-chain nodes to check their hashing.
    @param weightsHash The weights hash.
    @param salt A secret random salt.
    @param trainer The trainer who will reveal.
    @return bytes32 `keccak256(abi_encode(weightsHash, salt, trainer))`.
    """
    return keccak256(abi_encode(weightsHash, salt, trainer))


@external
@pure
def scoresCommitment(scores: DynArray[uint256, MAX_SUBMISSIONS], salt: bytes32, validator: address) -> bytes32:
    """
    @notice The commitment `commitScores` expects, for off-chain nodes to check their hashing.
    @param scores One score per revealed submission in submission order.
    @param salt A secret random salt.
    @param validator The validator who will reveal.
    @return bytes32 `keccak256(abi_encode(scores, salt, validator))`.
    """
    return keccak256(abi_encode(scores, salt, validator))


# ------------------------------------------------------------------ internals


@internal
@view
def _check_task(taskId: uint256):
    """
    @dev Reverts unless `taskId` names an existing task.
    """
    assert taskId >= 1 and taskId <= self.taskCount, "arena: unknown task"


@internal
def _credit_pool(taskId: uint256, amount: uint256) -> uint256:
    """
    @dev Adds `amount` to an unfinalised task's pool and returns the new pool.
    """
    self._check_task(taskId)
    assert not self._tasks[taskId].finalized, "arena: already finalised"
    assert amount > 0, "arena: zero amount"
    new_pool: uint256 = self._tasks[taskId].rewardPool + amount
    self._tasks[taskId].rewardPool = new_pool
    return new_pool


@internal
@pure
def _distance(a: uint256, b: uint256) -> uint256:
    """
    @dev The absolute difference |a - b|.
    """
    if a >= b:
        return a - b
    return b - a


@internal
@pure
def _weighted_median(
    scores: DynArray[uint256, MAX_VALIDATORS], weights: DynArray[uint256, MAX_VALIDATORS]
) -> uint256:
    """
    @dev The lower stake-weighted median: sort the scores ascending (stable
         insertion sort, at most `MAX_VALIDATORS` values) and return the
         first score at which the cumulative weight reaches half the total.
         When exactly half the weight lies at or below a score, that lower
         score wins, so inflating a score takes strictly more than half.
    """
    sorted_scores: DynArray[uint256, MAX_VALIDATORS] = scores
    sorted_weights: DynArray[uint256, MAX_VALIDATORS] = weights
    count: uint256 = len(sorted_scores)
    total: uint256 = 0
    for w: uint256 in weights:
        total += w
    for i: uint256 in range(1, count, bound=MAX_VALIDATORS):
        key_score: uint256 = sorted_scores[i]
        key_weight: uint256 = sorted_weights[i]
        j: uint256 = i
        for k: uint256 in range(i, bound=MAX_VALIDATORS):
            if sorted_scores[j - 1] <= key_score:
                break
            sorted_scores[j] = sorted_scores[j - 1]
            sorted_weights[j] = sorted_weights[j - 1]
            j -= 1
            if j == 0:
                break
        sorted_scores[j] = key_score
        sorted_weights[j] = key_weight
    cumulative: uint256 = 0
    for i: uint256 in range(count, bound=MAX_VALIDATORS):
        cumulative += sorted_weights[i]
        if cumulative * 2 >= total:
            return sorted_scores[i]
    return sorted_scores[count - 1]


@internal
@pure
def _rank(consensus: DynArray[uint256, MAX_SUBMISSIONS]) -> DynArray[uint256, MAX_SUBMISSIONS]:
    """
    @dev Positions into `consensus` ordered best first (highest score); a
         stable insertion sort, so equal scores keep commit order and the
         earlier commit ranks higher.
    """
    ranking: DynArray[uint256, MAX_SUBMISSIONS] = []
    for i: uint256 in range(len(consensus), bound=MAX_SUBMISSIONS):
        ranking.append(i)
    if len(ranking) < 2:
        return ranking
    for i: uint256 in range(1, len(ranking), bound=MAX_SUBMISSIONS):
        key: uint256 = ranking[i]
        j: uint256 = i
        for k: uint256 in range(i, bound=MAX_SUBMISSIONS):
            if consensus[ranking[j - 1]] >= consensus[key]:
                break
            ranking[j] = ranking[j - 1]
            j -= 1
            if j == 0:
                break
        ranking[j] = key
    return ranking
