# pragma version ~=0.4.3
"""
@title Covey Token (COV)
@custom:contract-name CoveyToken
@license Apache-2.0
@notice The staking and reward token of Covey: an ERC-20 with EIP-2612
        `permit` (snekmate's `erc20` module) and a hard supply cap of
        1,000,000,000 COV that every mint respects. The deployer receives
        the genesis allocation in the constructor; afterwards exactly one
        minter (the Treasury, set once while the suite is wired) can mint.
        Functions:
        - ERC-20: `transfer`, `approve`, `transferFrom`, `balanceOf`,
          `allowance`, `totalSupply`, `name`, `symbol`, `decimals`,
        - `burn`, `burn_from` (burnt supply can be minted again, under the cap),
        - EIP-2612 / EIP-5267: `permit`, `nonces`, `DOMAIN_SEPARATOR`,
          `eip712Domain`,
        - `cap` (constant), `minter`, `setMinter` (owner, once), `mint` (minter),
        - `owner`, `transfer_ownership`, `renounce_ownership` (snekmate `ownable`).
"""


from snekmate.auth import ownable
initializes: ownable

from snekmate.tokens import erc20
initializes: erc20[ownable := ownable]


# snekmate's own `mint`, `set_minter` and `is_minter` are deliberately not
# exported: they would let the owner mint without the cap, so `mint` below
# replaces them with one capped, single-minter rule. (snekmate's constructor
# still logs `RoleMinterChanged(deployer, True)`; that flag grants nothing here.)
exports: (
    erc20.transfer,
    erc20.approve,
    erc20.transferFrom,
    erc20.balanceOf,
    erc20.allowance,
    erc20.totalSupply,
    erc20.name,
    erc20.symbol,
    erc20.decimals,
    erc20.burn,
    erc20.burn_from,
    erc20.permit,
    erc20.nonces,
    erc20.DOMAIN_SEPARATOR,
    erc20.eip712Domain,
    ownable.owner,
    ownable.transfer_ownership,
    ownable.renounce_ownership,
)


# ------------------------------------------------------------------ events


# @dev Emitted once, when the owner names the only account allowed to mint.
event MinterSet:
    minter: indexed(address)


# ------------------------------------------------------------------ storage


# @dev The hard cap on `totalSupply`: 1,000,000,000 COV with 18 decimals.
cap: public(constant(uint256)) = 10**9 * 10**18

# @dev The only account that may mint after genesis (the Treasury); empty until wired.
minter: public(address)


# ------------------------------------------------------------------ setup


@deploy
def __init__(genesis_amount: uint256):
    """
    @notice Deploy COV and mint `genesis_amount` (in wei of COV) to the deployer.
    @param genesis_amount The genesis allocation, at most `cap`; the rest can only
           be minted by the minter (the Treasury's emission schedule).
    """
    assert genesis_amount <= cap, "cov: genesis above cap"
    ownable.__init__()
    erc20.__init__("Covey", "COV", 18, "Covey", "1")
    if genesis_amount > 0:
        erc20._mint(msg.sender, genesis_amount)


# ------------------------------------------------------------------ roles


@external
def setMinter(new_minter: address):
    """
    @notice Name the only minter (the Treasury). Owner only, and only once, so
            nobody can later add a second source of supply.
    @param new_minter The minter's address (not zero).
    """
    ownable._check_owner()
    assert self.minter == empty(address), "cov: minter already set"
    assert new_minter != empty(address), "cov: minter is the zero address"
    self.minter = new_minter
    log MinterSet(minter=new_minter)


# ------------------------------------------------------------------ minting


@external
def mint(to: address, amount: uint256):
    """
    @notice Mint `amount` COV to `to`; only the minter, never past `cap`.
    @param to The receiver (not zero).
    @param amount The amount in wei of COV.
    """
    assert msg.sender == self.minter, "cov: caller is not the minter"
    assert erc20.totalSupply + amount <= cap, "cov: cap exceeded"
    erc20._mint(to, amount)
