# pragma version ~=0.4.3
"""
@title Covey Staking
@custom:contract-name Staking
@license Apache-2.0
@notice COV staked per role (0 trainer, 1 validator, 2 host, 3 provider,
        4 participant), with delegation, operator commission, an unbonding
        delay and O(1) pro-rata slashing by registered modules.

        Every (operator, role) has one pool: bonded `tokens` owned by
        `shares`, held by the operator (its self-stake) and its delegators,
        plus an unbonding bucket with its own tokens and shares. A slash cuts
        the bonded tokens and the bucket's tokens in proportion, so every
        share, bonded or unbonding, loses the same fraction without a loop.

        Functions:
        - staker: `stake`, `unbond`, `delegate`, `undelegate`, `withdraw`,
          `claimRewards`, `setCommission`,
        - modules: `slash`, `distributeReward`,
        - owner: `setModule`, `setUnbondingDelay`, `setCommissionDelay`,
          `setTreasury`, `transfer_ownership`, `renounce_ownership`,
        - views: `stakeOf`, `effectiveStake`, `delegationOf`, `pendingUnbonds`,
          `pendingRewards`, `commissionOf`, `totalStaked`, `pools`, `sharesOf`,
          `isModule`, `unbondingDelay`, `commissionDelay`, `treasury`, `token`,
          `owner`.
@dev Rounding always favours the pool: shares minted on deposit and tokens
     paid on exit round down, shares burnt on exit round up. Conversions use
     one virtual share and one virtual token (as OpenZeppelin's ERC-4626
     offset does), so a pool slashed to zero tokens still accepts new stake at
     a sane price instead of dividing by zero.
"""


from ethereum.ercs import IERC20

from snekmate.auth import ownable
initializes: ownable

exports: (
    ownable.owner,
    ownable.transfer_ownership,
    ownable.renounce_ownership,
)

from snekmate.utils import math


# ------------------------------------------------------------------ events


# @dev An account bonded `amount` COV as self-stake for `role`, receiving `shares`.
event Staked:
    account: indexed(address)
    role: indexed(uint8)
    amount: uint256
    shares: uint256


# @dev A delegator bonded `amount` COV to `operator`'s pool for `role`, receiving `shares`.
event Delegated:
    delegator: indexed(address)
    operator: indexed(address)
    role: indexed(uint8)
    amount: uint256
    shares: uint256


# @dev `amount` COV left `operator`'s bonded pool for its unbonding bucket on
# behalf of `account`; withdrawable from `release_at` (minus later slashes).
event UnbondingStarted:
    account: indexed(address)
    operator: indexed(address)
    role: indexed(uint8)
    amount: uint256
    release_at: uint256


# @dev A matured unbonding entry paid `amount` COV to `account`.
event Withdrawn:
    account: indexed(address)
    operator: indexed(address)
    role: indexed(uint8)
    amount: uint256


# @dev `operator` queued a commission of `rate_bps`, effective from `effective_at`.
event CommissionChangeQueued:
    operator: indexed(address)
    rate_bps: uint256
    effective_at: uint256


# @dev `module` slashed `amount` COV from `account`'s pool for `role` (bonded
# and unbonding, pro rata) and sent it to the Treasury.
event Slashed:
    account: indexed(address)
    role: indexed(uint8)
    amount: uint256
    reason: String[64]
    module: indexed(address)


# @dev `module` paid `amount` COV of rewards to `operator`'s pool for `role`:
# `operator_amount` (self-stake share plus commission) went to the operator,
# `delegators_amount` accrues to the delegators' shares.
event RewardDistributed:
    operator: indexed(address)
    role: indexed(uint8)
    module: indexed(address)
    amount: uint256
    operator_amount: uint256
    commission: uint256
    delegators_amount: uint256


# @dev A delegator claimed `amount` COV of accrued rewards from `operator`'s pool.
event RewardsClaimed:
    delegator: indexed(address)
    operator: indexed(address)
    role: indexed(uint8)
    amount: uint256


# @dev The owner allowed (`enabled`) or disallowed a module to slash and reward.
event ModuleSet:
    module: indexed(address)
    enabled: bool


# @dev The owner changed the unbonding delay for entries created from now on.
event UnbondingDelaySet:
    delay_s: uint256


# @dev The owner changed the delay before a commission change takes effect.
event CommissionDelaySet:
    delay_s: uint256


# @dev The owner changed where slashed COV goes.
event TreasurySet:
    treasury: indexed(address)


# ------------------------------------------------------------------ types


# @dev One (operator, role) pool. `reward_per_share` is the delegators'
# cumulative reward per bonded share, scaled by `_REWARD_PRECISION`.
struct Pool:
    tokens: uint256
    shares: uint256
    unbonding_tokens: uint256
    unbonding_shares: uint256
    reward_per_share: uint256


# @dev A pending exit: `shares` of `operator`'s unbonding bucket for `role`.
struct Unbonding:
    operator: address
    role: uint8
    shares: uint256
    release_at: uint256


# @dev What `pendingUnbonds` shows: an entry with its current token value.
struct UnbondingView:
    operator: address
    role: uint8
    shares: uint256
    tokens: uint256
    release_at: uint256


# @dev An operator's commission: the rate in force and a queued change (`pending_at` 0 = none).
struct Commission:
    rate_bps: uint256
    pending_bps: uint256
    pending_at: uint256


# ------------------------------------------------------------------ constants


# @dev Roles are 0..4 (trainer, validator, host, provider, participant).
_NUM_ROLES: constant(uint8) = 5

# @dev Unbonding entries per account; bounds the loop in `withdraw` and `pendingUnbonds`.
MAX_UNBONDINGS: public(constant(uint256)) = 32

# @dev The highest commission an operator may charge: 50%.
MAX_COMMISSION_BPS: public(constant(uint256)) = 5_000

# @dev Bounds on the owner-set delays (a delay of 1 s keeps dev chains fast).
MIN_UNBONDING_DELAY: public(constant(uint256)) = 1
MAX_UNBONDING_DELAY: public(constant(uint256)) = 60 * 86_400
MAX_COMMISSION_DELAY: public(constant(uint256)) = 30 * 86_400

# @dev Basis points in one whole.
_BPS: constant(uint256) = 10_000

# @dev Scale of `reward_per_share`; 1e27 keeps sub-wei rewards per share meaningful for pools up to the cap.
_REWARD_PRECISION: constant(uint256) = 10**27


# ------------------------------------------------------------------ storage


# @dev The staked token (COV).
token: public(immutable(IERC20))

# @dev Where slashed COV is sent.
treasury: public(address)

# @dev Seconds between `unbond`/`undelegate` and `withdraw`, fixed per entry when it is created.
unbondingDelay: public(uint256)

# @dev Seconds between `setCommission` and the new rate taking effect.
commissionDelay: public(uint256)

# @dev Contracts (Arena, Alliance, Market...) allowed to slash and distribute rewards.
isModule: public(HashMap[address, bool])

# @dev The pool of each operator and role.
pools: public(HashMap[address, HashMap[uint8, Pool]])

# @dev Bonded shares: holder -> operator -> role -> shares (holder == operator is self-stake).
sharesOf: public(HashMap[address, HashMap[address, HashMap[uint8, uint256]]])

# @dev A delegator's `reward_per_share` at its last checkpoint (holder -> operator -> role).
_reward_per_share_paid: HashMap[address, HashMap[address, HashMap[uint8, uint256]]]

# @dev Rewards accrued at checkpoints and not yet claimed (holder -> operator -> role).
_rewards_owed: HashMap[address, HashMap[address, HashMap[uint8, uint256]]]

# @dev Each account's pending exits, at most `MAX_UNBONDINGS`.
_unbondings: HashMap[address, DynArray[Unbonding, MAX_UNBONDINGS]]

# @dev Each operator's commission (one rate for all its roles).
_commissions: HashMap[address, Commission]

# @dev Bonded COV per role, over all pools.
_total_bonded: HashMap[uint8, uint256]


# ------------------------------------------------------------------ setup


@deploy
def __init__(token_: IERC20, treasury_: address, unbonding_delay_s: uint256, commission_delay_s: uint256):
    """
    @param token_ The COV token.
    @param treasury_ Where slashed stake goes.
    @param unbonding_delay_s Initial unbonding delay (within bounds).
    @param commission_delay_s Initial commission delay (within bounds).
    """
    ownable.__init__()
    token = token_
    self._set_treasury(treasury_)
    self._set_unbonding_delay(unbonding_delay_s)
    self._set_commission_delay(commission_delay_s)


# ------------------------------------------------------------------ owner


@external
def setModule(module: address, enabled: bool):
    """
    @notice Allow or disallow `module` to call `slash` and `distributeReward`.
    """
    ownable._check_owner()
    assert module != empty(address), "staking: module is the zero address"
    self.isModule[module] = enabled
    log ModuleSet(module=module, enabled=enabled)


@external
def setUnbondingDelay(delay_s: uint256):
    """
    @notice Set the unbonding delay for future entries (existing ones keep theirs).
    """
    ownable._check_owner()
    self._set_unbonding_delay(delay_s)


@external
def setCommissionDelay(delay_s: uint256):
    """
    @notice Set the delay before future commission changes take effect.
    """
    ownable._check_owner()
    self._set_commission_delay(delay_s)


@external
def setTreasury(treasury_: address):
    """
    @notice Set where slashed COV goes.
    """
    ownable._check_owner()
    self._set_treasury(treasury_)


# ------------------------------------------------------------------ staking


@external
@nonreentrant
def stake(role: uint8, amount: uint256):
    """
    @notice Bond `amount` COV (approved beforehand) as your own stake for `role`.
    """
    self._check_role(role)
    assert amount > 0, "staking: zero amount"
    shares: uint256 = self._bond(msg.sender, msg.sender, role, amount)
    log Staked(account=msg.sender, role=role, amount=amount, shares=shares)
    assert extcall token.transferFrom(msg.sender, self, amount), "staking: transfer failed"


@external
@nonreentrant
def delegate(operator: address, role: uint8, amount: uint256):
    """
    @notice Bond `amount` COV (approved beforehand) to `operator`'s pool for
            `role`; it earns the pool's rewards minus the operator's
            commission and shares the pool's slashes.
    """
    self._check_role(role)
    assert amount > 0, "staking: zero amount"
    assert operator != msg.sender, "staking: cannot delegate to self"
    assert self.sharesOf[operator][operator][role] > 0, "staking: operator has no self-stake"
    shares: uint256 = self._bond(msg.sender, operator, role, amount)
    log Delegated(delegator=msg.sender, operator=operator, role=role, amount=amount, shares=shares)
    assert extcall token.transferFrom(msg.sender, self, amount), "staking: transfer failed"


@external
@nonreentrant
def unbond(role: uint8, amount: uint256):
    """
    @notice Start withdrawing `amount` COV of your self-stake for `role`;
            it stays slashable until `withdraw` after the unbonding delay.
    """
    self._check_role(role)
    self._start_unbonding(msg.sender, msg.sender, role, amount)


@external
@nonreentrant
def undelegate(operator: address, role: uint8, amount: uint256):
    """
    @notice Start withdrawing `amount` COV delegated to `operator` for `role`.
    """
    self._check_role(role)
    assert operator != msg.sender, "staking: use unbond for self-stake"
    self._start_unbonding(msg.sender, operator, role, amount)


@external
@nonreentrant
def withdraw() -> uint256:
    """
    @notice Pay out every matured unbonding entry of the caller.
    @return uint256 The COV paid.
    """
    entries: DynArray[Unbonding, MAX_UNBONDINGS] = self._unbondings[msg.sender]
    assert len(entries) > 0, "staking: nothing to withdraw"
    remaining: DynArray[Unbonding, MAX_UNBONDINGS] = []
    total: uint256 = 0
    for entry: Unbonding in entries:
        if entry.release_at > block.timestamp:
            remaining.append(entry)
            continue
        pool: Pool = self.pools[entry.operator][entry.role]
        amount: uint256 = self._unbonding_value(entry.shares, pool)
        pool.unbonding_tokens -= amount
        pool.unbonding_shares -= entry.shares
        self.pools[entry.operator][entry.role] = pool
        total += amount
        log Withdrawn(account=msg.sender, operator=entry.operator, role=entry.role, amount=amount)
    assert len(remaining) < len(entries), "staking: unbonding not finished"
    self._unbondings[msg.sender] = remaining
    # An entry slashed to nothing pays 0; it is still cleared above.
    if total > 0:
        assert extcall token.transfer(msg.sender, total), "staking: transfer failed"
    return total


@external
@nonreentrant
def claimRewards(operator: address, role: uint8) -> uint256:
    """
    @notice Claim the delegation rewards accrued in `operator`'s pool for `role`.
    @return uint256 The COV paid.
    """
    self._check_role(role)
    pool: Pool = self.pools[operator][role]
    held: uint256 = self.sharesOf[msg.sender][operator][role]
    self._checkpoint(msg.sender, operator, role, held, pool.reward_per_share)
    amount: uint256 = self._rewards_owed[msg.sender][operator][role]
    assert amount > 0, "staking: no rewards to claim"
    self._rewards_owed[msg.sender][operator][role] = 0
    log RewardsClaimed(delegator=msg.sender, operator=operator, role=role, amount=amount)
    assert extcall token.transfer(msg.sender, amount), "staking: transfer failed"
    return amount


@external
def setCommission(rate_bps: uint256):
    """
    @notice Queue a new commission for all your pools; it takes effect after
            `commissionDelay`, so delegators can leave before a raise applies.
    """
    assert rate_bps <= MAX_COMMISSION_BPS, "staking: commission above max"
    commission: Commission = self._current_commission(msg.sender)
    commission.pending_bps = rate_bps
    commission.pending_at = block.timestamp + self.commissionDelay
    self._commissions[msg.sender] = commission
    log CommissionChangeQueued(operator=msg.sender, rate_bps=rate_bps, effective_at=commission.pending_at)


# ------------------------------------------------------------------ modules


@external
@nonreentrant
def slash(account: address, role: uint8, amount: uint256, reason: String[64]) -> uint256:
    """
    @notice Take up to `amount` COV from `account`'s pool for `role`, pro rata
            from its bonded stake and its unbonding bucket, and send it to the
            Treasury. Delegators and pending exits lose the same fraction.
    @return uint256 The COV actually slashed (less than `amount` when the pool holds less).
    """
    assert self.isModule[msg.sender], "staking: caller is not a module"
    self._check_role(role)
    pool: Pool = self.pools[account][role]
    at_stake: uint256 = pool.tokens + pool.unbonding_tokens
    slashed: uint256 = min(amount, at_stake)
    # Nothing to take is not an error: a module settling many accounts must not revert on one.
    if slashed == 0:
        return 0
    from_bonded: uint256 = math._mul_div(slashed, pool.tokens, at_stake, False)
    pool.tokens -= from_bonded
    pool.unbonding_tokens -= slashed - from_bonded
    self.pools[account][role] = pool
    self._total_bonded[role] -= from_bonded
    log Slashed(account=account, role=role, amount=slashed, reason=reason, module=msg.sender)
    assert extcall token.transfer(self.treasury, slashed), "staking: transfer failed"
    return slashed


@external
@nonreentrant
def distributeReward(operator: address, role: uint8, amount: uint256):
    """
    @notice Pull `amount` COV from the calling module and reward `operator`'s
            pool for `role`: the self-stake's share and the commission on the
            delegators' share go to the operator now; the rest accrues to the
            delegators (`claimRewards`). A pool without delegators, or with no
            shares at all (an open task's unstaked trainer, everyone unbonded),
            pays the operator the whole amount.
    """
    assert self.isModule[msg.sender], "staking: caller is not a module"
    self._check_role(role)
    assert amount > 0, "staking: zero amount"
    pool: Pool = self.pools[operator][role]
    commission: uint256 = 0
    to_delegators: uint256 = 0
    delegated_shares: uint256 = pool.shares - self.sharesOf[operator][operator][role]
    if delegated_shares > 0:
        delegators_gross: uint256 = math._mul_div(amount, delegated_shares, pool.shares, False)
        rate_bps: uint256 = self._current_commission(operator).rate_bps
        commission = delegators_gross * rate_bps // _BPS
        net: uint256 = delegators_gross - commission
        increment: uint256 = math._mul_div(net, _REWARD_PRECISION, delegated_shares, False)
        # A reward too small to move the per-share counter goes to the operator rather than vanish.
        if increment > 0:
            pool.reward_per_share += increment
            self.pools[operator][role] = pool
            to_delegators = net
    to_operator: uint256 = amount - to_delegators
    log RewardDistributed(
        operator=operator,
        role=role,
        module=msg.sender,
        amount=amount,
        operator_amount=to_operator,
        commission=commission,
        delegators_amount=to_delegators,
    )
    assert extcall token.transferFrom(msg.sender, self, amount), "staking: transfer failed"
    if to_operator > 0:
        assert extcall token.transfer(operator, to_operator), "staking: transfer failed"


# ------------------------------------------------------------------ views


@external
@view
def stakeOf(account: address, role: uint8) -> uint256:
    """
    @notice `account`'s bonded self-stake for `role`, in COV.
    """
    return self._bonded_value(self.sharesOf[account][account][role], self.pools[account][role])


@external
@view
def effectiveStake(operator: address, role: uint8) -> uint256:
    """
    @notice The bonded COV behind `operator` for `role`: self-stake plus delegations.
    """
    return self.pools[operator][role].tokens


@external
@view
def delegationOf(delegator: address, operator: address, role: uint8) -> uint256:
    """
    @notice The bonded COV `delegator` has with `operator` for `role`.
    """
    return self._bonded_value(self.sharesOf[delegator][operator][role], self.pools[operator][role])


@external
@view
def pendingUnbonds(account: address) -> DynArray[UnbondingView, MAX_UNBONDINGS]:
    """
    @notice `account`'s unbonding entries with their current COV value and release time.
    """
    views: DynArray[UnbondingView, MAX_UNBONDINGS] = []
    for entry: Unbonding in self._unbondings[account]:
        value: uint256 = self._unbonding_value(entry.shares, self.pools[entry.operator][entry.role])
        views.append(
            UnbondingView(
                operator=entry.operator,
                role=entry.role,
                shares=entry.shares,
                tokens=value,
                release_at=entry.release_at,
            )
        )
    return views


@external
@view
def pendingRewards(delegator: address, operator: address, role: uint8) -> uint256:
    """
    @notice The COV `delegator` can claim now from `operator`'s pool for `role`.
    """
    return self._rewards_owed[delegator][operator][role] + self._accrued(
        delegator, operator, role, self.sharesOf[delegator][operator][role], self.pools[operator][role].reward_per_share
    )


@external
@view
def commissionOf(operator: address) -> (uint256, uint256, uint256):
    """
    @notice `operator`'s commission in basis points: the rate in force now,
            and a queued rate with the time it takes effect (0, 0 if none).
    """
    commission: Commission = self._current_commission(operator)
    return commission.rate_bps, commission.pending_bps, commission.pending_at


@external
@view
def totalStaked(role: uint8) -> uint256:
    """
    @notice Bonded COV over all pools for `role`.
    """
    return self._total_bonded[role]


# ------------------------------------------------------------------ internals


@internal
@pure
def _check_role(role: uint8):
    assert role < _NUM_ROLES, "staking: unknown role"


@internal
@pure
def _bonded_value(shares: uint256, pool: Pool) -> uint256:
    if pool.shares == 0:
        return 0
    return math._mul_div(shares, pool.tokens + 1, pool.shares + 1, False)


@internal
@pure
def _unbonding_value(shares: uint256, pool: Pool) -> uint256:
    if pool.unbonding_shares == 0:
        return 0
    return math._mul_div(shares, pool.unbonding_tokens + 1, pool.unbonding_shares + 1, False)


@internal
def _bond(holder: address, operator: address, role: uint8, amount: uint256) -> uint256:
    """
    @dev Add `amount` COV to the pool and mint its shares (rounded down) to `holder`.
    """
    pool: Pool = self.pools[operator][role]
    shares: uint256 = amount
    # An empty pool (perhaps holding sub-wei dust left by rounding) starts again at 1:1.
    if pool.shares > 0:
        shares = math._mul_div(amount, pool.shares + 1, pool.tokens + 1, False)
    assert shares > 0, "staking: amount too small"
    held: uint256 = self.sharesOf[holder][operator][role]
    self._checkpoint(holder, operator, role, held, pool.reward_per_share)
    self.sharesOf[holder][operator][role] = held + shares
    pool.tokens += amount
    pool.shares += shares
    self.pools[operator][role] = pool
    self._total_bonded[role] += amount
    return shares


@internal
def _start_unbonding(holder: address, operator: address, role: uint8, amount: uint256):
    """
    @dev Move `amount` COV of `holder`'s bonded shares into the pool's unbonding bucket.
    """
    assert amount > 0, "staking: zero amount"
    assert len(self._unbondings[holder]) < MAX_UNBONDINGS, "staking: too many unbonding entries"
    pool: Pool = self.pools[operator][role]
    held: uint256 = self.sharesOf[holder][operator][role]
    burnt: uint256 = math._mul_div(amount, pool.shares + 1, pool.tokens + 1, True)
    assert burnt <= held, "staking: amount exceeds stake"
    # Leftover shares worth less than one wei would linger (and earn rewards) forever: burn them too.
    if self._bonded_value(held - burnt, pool) == 0:
        burnt = held
    self._checkpoint(holder, operator, role, held, pool.reward_per_share)
    self.sharesOf[holder][operator][role] = held - burnt
    pool.tokens -= amount
    pool.shares -= burnt
    bucket_shares: uint256 = amount
    if pool.unbonding_shares > 0:
        bucket_shares = math._mul_div(amount, pool.unbonding_shares + 1, pool.unbonding_tokens + 1, False)
    pool.unbonding_tokens += amount
    pool.unbonding_shares += bucket_shares
    self.pools[operator][role] = pool
    self._total_bonded[role] -= amount
    release_at: uint256 = block.timestamp + self.unbondingDelay
    self._unbondings[holder].append(
        Unbonding(operator=operator, role=role, shares=bucket_shares, release_at=release_at)
    )
    log UnbondingStarted(account=holder, operator=operator, role=role, amount=amount, release_at=release_at)


@internal
@view
def _accrued(holder: address, operator: address, role: uint8, held: uint256, reward_per_share: uint256) -> uint256:
    # The operator's own shares are paid directly in `distributeReward`, never through the counter.
    if holder == operator:
        return 0
    paid: uint256 = self._reward_per_share_paid[holder][operator][role]
    return math._mul_div(held, reward_per_share - paid, _REWARD_PRECISION, False)


@internal
def _checkpoint(holder: address, operator: address, role: uint8, held: uint256, reward_per_share: uint256):
    """
    @dev Book the rewards `held` shares earned since the last checkpoint; call before shares change.
    """
    # Self-stake is paid directly by `distributeReward`; skipping it saves the operator two writes.
    if holder == operator:
        return
    # Rounding each interval down (rather than subtracting rounded totals) keeps the sum of all
    # claims at or below what `distributeReward` set aside.
    accrued: uint256 = self._accrued(holder, operator, role, held, reward_per_share)
    if accrued > 0:
        self._rewards_owed[holder][operator][role] += accrued
    self._reward_per_share_paid[holder][operator][role] = reward_per_share


@internal
@view
def _current_commission(operator: address) -> Commission:
    """
    @dev The commission with a matured queued change applied.
    """
    commission: Commission = self._commissions[operator]
    if commission.pending_at != 0 and commission.pending_at <= block.timestamp:
        commission.rate_bps = commission.pending_bps
        commission.pending_bps = 0
        commission.pending_at = 0
    return commission


@internal
def _set_unbonding_delay(delay_s: uint256):
    assert delay_s >= MIN_UNBONDING_DELAY and delay_s <= MAX_UNBONDING_DELAY, "staking: unbonding delay out of bounds"
    self.unbondingDelay = delay_s
    log UnbondingDelaySet(delay_s=delay_s)


@internal
def _set_commission_delay(delay_s: uint256):
    assert delay_s <= MAX_COMMISSION_DELAY, "staking: commission delay out of bounds"
    self.commissionDelay = delay_s
    log CommissionDelaySet(delay_s=delay_s)


@internal
def _set_treasury(treasury_: address):
    assert treasury_ != empty(address), "staking: treasury is the zero address"
    self.treasury = treasury_
    log TreasurySet(treasury=treasury_)
