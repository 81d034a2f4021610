# pragma version ~=0.4.3
"""
@title Covey USD (cUSD)
@custom:contract-name USDToken
@license Apache-2.0
@notice A 6-decimal stablecoin for local chains: the x402 payment asset when
        no real USDC exists. It behaves like USDC's FiatTokenV2 where x402
        relies on it: EIP-3009 authorisations with USDC's exact type hashes,
        and an EIP-712 domain named like the token with version "2".
        Functions:
        - ERC-20: `transfer`, `approve`, `transferFrom`, `balanceOf`,
          `allowance`, `totalSupply`, `name`, `symbol`, `decimals`,
        - EIP-2612 / EIP-5267: `permit`, `nonces`, `DOMAIN_SEPARATOR`,
          `eip712Domain`, `version`,
        - EIP-3009: `transferWithAuthorization`, `receiveWithAuthorization`,
          `cancelAuthorization`, `authorizationState`, and the type hash
          constants `TRANSFER_WITH_AUTHORIZATION_TYPEHASH`,
          `RECEIVE_WITH_AUTHORIZATION_TYPEHASH`, `CANCEL_AUTHORIZATION_TYPEHASH`,
        - `faucet` (anyone, local chains 31337 and 1337 only, capped per call),
        - `owner` (snekmate `ownable`, kept because snekmate's `erc20` uses it).
"""


from snekmate.auth import ownable
initializes: ownable

from snekmate.tokens import erc20
initializes: erc20[ownable := ownable]

from snekmate.utils import ecdsa

# `erc20` initialises the EIP-712 domain; EIP-3009 hashes against that same domain.
from snekmate.utils import eip712_domain_separator
uses: eip712_domain_separator


# No `mint` export: on a local chain the faucet is the only source of cUSD,
# and on a real chain the gateway uses the chain's USDC instead.
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
    erc20.permit,
    erc20.nonces,
    erc20.DOMAIN_SEPARATOR,
    erc20.eip712Domain,
    ownable.owner,
)


# ------------------------------------------------------------------ events


# @dev Emitted when an authorisation is executed; its nonce can never be used again.
event AuthorizationUsed:
    authorizer: indexed(address)
    nonce: indexed(bytes32)


# @dev Emitted when the authorizer cancels an unused authorisation.
event AuthorizationCanceled:
    authorizer: indexed(address)
    nonce: indexed(bytes32)


# ------------------------------------------------------------------ storage


# @dev The token and EIP-712 domain name; x402 signs against it, so both must agree.
NAME: constant(String[25]) = "Covey USD"

# @dev The EIP-712 domain version, "2" like USDC's FiatTokenV2.
VERSION: constant(String[20]) = "2"

# @dev EIP-3009 type hashes, byte for byte USDC's.
TRANSFER_WITH_AUTHORIZATION_TYPEHASH: public(constant(bytes32)) = keccak256(
    "TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)"
)
RECEIVE_WITH_AUTHORIZATION_TYPEHASH: public(constant(bytes32)) = keccak256(
    "ReceiveWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)"
)
CANCEL_AUTHORIZATION_TYPEHASH: public(constant(bytes32)) = keccak256(
    "CancelAuthorization(address authorizer,bytes32 nonce)"
)

# @dev The most one `faucet` call may mint: 1,000,000 cUSD.
faucetCap: public(constant(uint256)) = 1_000_000 * 10**6

# @dev True once an authorizer's nonce was used or cancelled (EIP-3009 nonces are random, not sequential).
authorizationState: public(HashMap[address, HashMap[bytes32, bool]])


# ------------------------------------------------------------------ setup


@deploy
def __init__():
    """
    @notice Deploy cUSD with no supply; the faucet mints on local chains.
    """
    ownable.__init__()
    erc20.__init__(NAME, "cUSD", 6, NAME, VERSION)


@external
@pure
def version() -> String[20]:
    """
    @notice The EIP-712 domain version ("2"), as USDC exposes it.
    """
    return VERSION


# ------------------------------------------------------------------ EIP-3009


@external
def transferWithAuthorization(
    from_: address,
    to: address,
    value_: uint256,
    validAfter: uint256,
    validBefore: uint256,
    nonce: bytes32,
    v: uint8,
    r: bytes32,
    s: bytes32,
):
    """
    @notice Move `value_` from `from_` to `to` with `from_`'s signed
            TransferWithAuthorization; anyone may submit it, once.
    @param from_ The payer, who signed.
    @param to The payee.
    @param value_ The amount (6 decimals).
    @param validAfter The authorisation is valid strictly after this time.
    @param validBefore The authorisation is valid strictly before this time.
    @param nonce A unique random 32-byte nonce chosen by the payer.
    """
    self._check_timing_and_nonce(from_, nonce, validAfter, validBefore)
    struct_hash: bytes32 = keccak256(
        abi_encode(TRANSFER_WITH_AUTHORIZATION_TYPEHASH, from_, to, value_, validAfter, validBefore, nonce)
    )
    self._check_signer(struct_hash, from_, v, r, s)
    self._use_authorization(from_, nonce)
    erc20._transfer(from_, to, value_)


@external
def receiveWithAuthorization(
    from_: address,
    to: address,
    value_: uint256,
    validAfter: uint256,
    validBefore: uint256,
    nonce: bytes32,
    v: uint8,
    r: bytes32,
    s: bytes32,
):
    """
    @notice Like `transferWithAuthorization`, but only the payee may submit it,
            so nobody can front-run a contract that pulls a payment.
    """
    assert to == msg.sender, "usd: caller must be the payee"
    self._check_timing_and_nonce(from_, nonce, validAfter, validBefore)
    struct_hash: bytes32 = keccak256(
        abi_encode(RECEIVE_WITH_AUTHORIZATION_TYPEHASH, from_, to, value_, validAfter, validBefore, nonce)
    )
    self._check_signer(struct_hash, from_, v, r, s)
    self._use_authorization(from_, nonce)
    erc20._transfer(from_, to, value_)


@external
def cancelAuthorization(authorizer: address, nonce: bytes32, v: uint8, r: bytes32, s: bytes32):
    """
    @notice Cancel an unused authorisation with the authorizer's signed
            CancelAuthorization, so it can never be executed.
    """
    assert not self.authorizationState[authorizer][nonce], "usd: authorization is used or canceled"
    struct_hash: bytes32 = keccak256(abi_encode(CANCEL_AUTHORIZATION_TYPEHASH, authorizer, nonce))
    self._check_signer(struct_hash, authorizer, v, r, s)
    self.authorizationState[authorizer][nonce] = True
    log AuthorizationCanceled(authorizer=authorizer, nonce=nonce)


# ------------------------------------------------------------------ faucet


@external
def faucet(to: address, amount: uint256):
    """
    @notice Mint test cUSD to `to`: anyone may call it, but only on a local
            dev chain (chain id 31337 or 1337) and at most `faucetCap` a call.
    """
    assert chain.id == 31337 or chain.id == 1337, "usd: faucet only on local chains"
    assert amount <= faucetCap, "usd: faucet amount above cap"
    erc20._mint(to, amount)


# ------------------------------------------------------------------ internals


@internal
@view
def _check_timing_and_nonce(authorizer: address, nonce: bytes32, valid_after: uint256, valid_before: uint256):
    # USDC's bounds are strict on both sides; keep them so signatures behave identically.
    assert block.timestamp > valid_after, "usd: authorization is not yet valid"
    assert block.timestamp < valid_before, "usd: authorization is expired"
    assert not self.authorizationState[authorizer][nonce], "usd: authorization is used or canceled"


@internal
@view
def _check_signer(struct_hash: bytes32, expected: address, v: uint8, r: bytes32, s: bytes32):
    digest: bytes32 = eip712_domain_separator._hash_typed_data_v4(struct_hash)
    signer: address = ecdsa._recover_vrs(digest, convert(v, uint256), convert(r, uint256), convert(s, uint256))
    assert signer == expected, "usd: invalid signature"


@internal
def _use_authorization(authorizer: address, nonce: bytes32):
    self.authorizationState[authorizer][nonce] = True
    log AuthorizationUsed(authorizer=authorizer, nonce=nonce)
