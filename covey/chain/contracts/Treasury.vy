# pragma version ~=0.4.3
"""
@title Covey Treasury
@custom:contract-name Treasury
@license Apache-2.0
@notice Holds COV (emission, slashed stake) and any other ERC-20 (e.g. cUSD
        for inference subsidies), and is the only account allowed to mint
        COV. Emission follows an owner-set schedule that anyone can trigger;
        modules spend within per-token allowances the owner grants.
        Functions:
        - anyone: `mintEmission`, `emissionDue`,
        - modules: `pay`,
        - owner: `setEmission`, `setAllowance`, `transfer_ownership`,
          `renounce_ownership`,
        - views: `cov`, `emissionPerEpoch`, `epochLength`, `lastEmissionAt`,
          `allowance`, `owner`.
"""


from ethereum.ercs import IERC20

from snekmate.auth import ownable
initializes: ownable

exports: (
    ownable.owner,
    ownable.transfer_ownership,
    ownable.renounce_ownership,
)


# @dev The part of CoveyToken the Treasury needs: its supply, its cap and minting.
interface ICoveyToken:
    def mint(to: address, amount: uint256): nonpayable
    def totalSupply() -> uint256: view
    def cap() -> uint256: view


# ------------------------------------------------------------------ events


# @dev `epochs` whole epochs elapsed and `amount` COV was minted to the Treasury
# (less than `epochs * emissionPerEpoch` only when the token's cap is reached).
event EmissionMinted:
    epochs: uint256
    amount: uint256
    caller: indexed(address)


# @dev The owner set a new emission schedule, which starts counting at `starts_at`.
event EmissionSet:
    per_epoch: uint256
    epoch_length_s: uint256
    starts_at: uint256


# @dev The owner set what `module` may still pay out of `token`.
event AllowanceSet:
    module: indexed(address)
    token: indexed(address)
    amount: uint256


# @dev `module` paid `amount` of `token` to `to` out of its allowance.
event Paid:
    module: indexed(address)
    token: indexed(address)
    to: indexed(address)
    amount: uint256


# ------------------------------------------------------------------ storage


# @dev The shortest epoch the schedule accepts, so an epoch count can never explode.
MIN_EPOCH_LENGTH: public(constant(uint256)) = 60

# @dev The COV token, minted by this contract.
cov: public(immutable(ICoveyToken))

# @dev COV minted per elapsed epoch (0 pauses emission).
emissionPerEpoch: public(uint256)

# @dev Seconds per epoch.
epochLength: public(uint256)

# @dev The end of the last epoch already minted; emission counts whole epochs from here.
lastEmissionAt: public(uint256)

# @dev What each module may still pay out of each token: module -> token -> amount.
allowance: public(HashMap[address, HashMap[address, uint256]])


# ------------------------------------------------------------------ setup


@deploy
def __init__(cov_: ICoveyToken):
    """
    @param cov_ The COV token (its owner must then make this contract the minter).
    @notice Emission starts paused (zero per epoch, one-day epochs) until `setEmission`.
    """
    ownable.__init__()
    cov = cov_
    self.epochLength = 86_400
    self.lastEmissionAt = block.timestamp


# ------------------------------------------------------------------ owner


@external
def setEmission(per_epoch: uint256, epoch_length_s: uint256):
    """
    @notice Set the emission schedule. Whole epochs elapsed under the old
            schedule are minted first; the new one starts counting now.
    @param per_epoch COV (wei) minted per epoch; at most the token's cap.
    @param epoch_length_s Seconds per epoch, at least `MIN_EPOCH_LENGTH`.
    """
    ownable._check_owner()
    assert epoch_length_s >= MIN_EPOCH_LENGTH, "treasury: epoch too short"
    assert per_epoch <= staticcall cov.cap(), "treasury: emission above cap"
    self._mint_due()
    self.emissionPerEpoch = per_epoch
    self.epochLength = epoch_length_s
    self.lastEmissionAt = block.timestamp
    log EmissionSet(per_epoch=per_epoch, epoch_length_s=epoch_length_s, starts_at=block.timestamp)


@external
def setAllowance(module: address, token: address, amount: uint256):
    """
    @notice Let `module` pay out up to `amount` of `token` (replaces the old allowance).
    """
    ownable._check_owner()
    assert module != empty(address), "treasury: module is the zero address"
    self.allowance[module][token] = amount
    log AllowanceSet(module=module, token=token, amount=amount)


# ------------------------------------------------------------------ emission


@external
@nonreentrant
def mintEmission() -> uint256:
    """
    @notice Mint the emission of every whole epoch elapsed since the last
            mint to the Treasury, never past the token's cap. Anyone may call.
    @return uint256 The COV minted.
    """
    assert self._epochs_due() > 0, "treasury: no epoch elapsed"
    return self._mint_due()


@external
@view
def emissionDue() -> uint256:
    """
    @notice The COV `mintEmission` would mint now.
    """
    due: uint256 = self._epochs_due() * self.emissionPerEpoch
    return min(due, self._room_under_cap())


# ------------------------------------------------------------------ modules


@external
@nonreentrant
def pay(token: address, to: address, amount: uint256):
    """
    @notice Pay `amount` of `token` to `to` out of the caller's allowance.
    """
    remaining: uint256 = self.allowance[msg.sender][token]
    assert amount <= remaining, "treasury: allowance exceeded"
    assert to != empty(address), "treasury: pay to the zero address"
    assert amount <= staticcall IERC20(token).balanceOf(self), "treasury: insufficient balance"
    self.allowance[msg.sender][token] = remaining - amount
    log Paid(module=msg.sender, token=token, to=to, amount=amount)
    # `default_return_value` accepts tokens that return nothing (USDT-style).
    assert extcall IERC20(token).transfer(to, amount, default_return_value=True), "treasury: transfer failed"


# ------------------------------------------------------------------ internals


@internal
@view
def _epochs_due() -> uint256:
    return (block.timestamp - self.lastEmissionAt) // self.epochLength


@internal
@view
def _room_under_cap() -> uint256:
    return staticcall cov.cap() - staticcall cov.totalSupply()


@internal
def _mint_due() -> uint256:
    """
    @dev Mint whole elapsed epochs (capped) and advance the clock by exactly
         those epochs, so a partial epoch keeps counting.
    """
    epochs: uint256 = self._epochs_due()
    if epochs == 0:
        return 0
    self.lastEmissionAt += epochs * self.epochLength
    amount: uint256 = min(epochs * self.emissionPerEpoch, self._room_under_cap())
    log EmissionMinted(epochs=epochs, amount=amount, caller=msg.sender)
    if amount > 0:
        extcall cov.mint(self, amount)
    return amount
