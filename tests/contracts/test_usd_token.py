"""USDToken: a 6-decimal dollar whose EIP-3009 authorisations behave exactly like USDC's, plus a local faucet.

Every authorisation here is signed independently with `eth_account.Account.sign_typed_data`, the way an
x402 client signs a payment, against the domain the contract reports.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from eth_abi import encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

from covey.chain import Chain, dev_accounts
from covey.errors import ChainError
from tests.support import anvil_node

USD = 10**6

DOMAIN_TYPE = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]
AUTHORIZATION_FIELDS = [
    {"name": "from", "type": "address"},
    {"name": "to", "type": "address"},
    {"name": "value", "type": "uint256"},
    {"name": "validAfter", "type": "uint256"},
    {"name": "validBefore", "type": "uint256"},
    {"name": "nonce", "type": "bytes32"},
]


def sign_authorization(
    suite: Any,
    signer: LocalAccount,
    *,
    payer: str,
    to: str,
    value: int,
    valid_after: int = 0,
    valid_before: int | None = None,
    nonce: bytes | None = None,
    primary_type: str = "TransferWithAuthorization",
) -> tuple[Any, ...]:
    """Sign an EIP-3009 authorisation as a wallet would; return the contract call's arguments."""
    valid_before = suite.chain.timestamp() + 3_600 if valid_before is None else valid_before
    nonce = os.urandom(32) if nonce is None else nonce
    signed = Account.sign_typed_data(
        signer.key,
        full_message={
            "types": {"EIP712Domain": DOMAIN_TYPE, primary_type: AUTHORIZATION_FIELDS},
            "primaryType": primary_type,
            "domain": usd_domain(suite),
            "message": {
                "from": payer,
                "to": to,
                "value": value,
                "validAfter": valid_after,
                "validBefore": valid_before,
                "nonce": nonce,
            },
        },
    )
    return (payer, to, value, valid_after, valid_before, nonce, *vrs(signed))


def sign_cancel(suite: Any, signer: LocalAccount, authorizer: str, nonce: bytes) -> tuple[Any, ...]:
    signed = Account.sign_typed_data(
        signer.key,
        full_message={
            "types": {
                "EIP712Domain": DOMAIN_TYPE,
                "CancelAuthorization": [
                    {"name": "authorizer", "type": "address"},
                    {"name": "nonce", "type": "bytes32"},
                ],
            },
            "primaryType": "CancelAuthorization",
            "domain": usd_domain(suite),
            "message": {"authorizer": authorizer, "nonce": nonce},
        },
    )
    return (authorizer, nonce, *vrs(signed))


def usd_domain(suite: Any) -> dict[str, Any]:
    """The EIP-712 domain as standard tooling builds it: from the token's own `name()` and `version()`."""
    usd = suite.usd
    return {
        "name": usd.functions.name().call(),
        "version": usd.functions.version().call(),
        "chainId": suite.chain.chain_id,
        "verifyingContract": usd.address,
    }


def vrs(signed: Any) -> tuple[int, bytes, bytes]:
    return signed.v, signed.r.to_bytes(32, "big"), signed.s.to_bytes(32, "big")


def usd_balance(suite: Any, address: str) -> int:
    return int(suite.usd.functions.balanceOf(address).call())


# -- metadata and domain --------------------------------------------------------------------------------


def test_metadata_and_eip712_domain_match_usdc_conventions(suite) -> None:
    usd = suite.usd
    assert (usd.functions.name().call(), usd.functions.symbol().call()) == ("Covey USD", "cUSD")
    assert usd.functions.decimals().call() == 6
    assert usd.functions.version().call() == "2"
    fields, name, version, chain_id, verifying, _salt, _extensions = usd.functions.eip712Domain().call()
    assert fields == b"\x0f"
    assert (name, version, chain_id) == ("Covey USD", "2", suite.chain.chain_id)
    assert Web3.to_checksum_address(verifying) == usd.address

    domain_typehash = Web3.keccak(
        text="EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
    )
    expected = Web3.keccak(
        encode(
            ["bytes32", "bytes32", "bytes32", "uint256", "address"],
            [domain_typehash, Web3.keccak(text="Covey USD"), Web3.keccak(text="2"), suite.chain.chain_id, usd.address],
        )
    )
    assert usd.functions.DOMAIN_SEPARATOR().call() == expected


def test_typehashes_are_byte_for_byte_usdcs(suite) -> None:
    usd = suite.usd
    fields = "address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce"
    assert usd.functions.TRANSFER_WITH_AUTHORIZATION_TYPEHASH().call() == Web3.keccak(
        text=f"TransferWithAuthorization({fields})"
    )
    assert usd.functions.RECEIVE_WITH_AUTHORIZATION_TYPEHASH().call() == Web3.keccak(
        text=f"ReceiveWithAuthorization({fields})"
    )
    assert usd.functions.CANCEL_AUTHORIZATION_TYPEHASH().call() == Web3.keccak(
        text="CancelAuthorization(address authorizer,bytes32 nonce)"
    )


# -- EIP-3009 -------------------------------------------------------------------------------------------


def test_a_signed_authorisation_moves_funds_exactly_once(suite) -> None:
    payer, merchant, relayer = suite.people[:3]
    suite.send(suite.usd.functions.faucet(payer.address, 10 * USD), payer)
    args = sign_authorization(suite, payer, payer=payer.address, to=merchant.address, value=3 * USD)
    nonce = args[5]
    assert suite.usd.functions.authorizationState(payer.address, nonce).call() is False

    # A facilitator (the relayer) submits and pays the gas; the payer never sends a transaction.
    receipt = suite.send(suite.usd.functions.transferWithAuthorization(*args), relayer)
    print(f"\ntransferWithAuthorization gas: {receipt['gasUsed']:,}")
    assert receipt["gasUsed"] < 100_000
    assert usd_balance(suite, payer.address) == 7 * USD
    assert usd_balance(suite, merchant.address) == 3 * USD
    [used] = suite.events(suite.usd, "AuthorizationUsed", receipt)
    assert (used["authorizer"], used["nonce"]) == (payer.address, nonce)
    assert suite.usd.functions.authorizationState(payer.address, nonce).call() is True

    again = suite.usd.functions.transferWithAuthorization(*args)
    assert suite.reverts(again, relayer) == "usd: authorization is used or canceled"
    assert usd_balance(suite, merchant.address) == 3 * USD


def test_expired_early_and_forged_authorisations_are_rejected(suite) -> None:
    payer, merchant, relayer, thief = suite.people[:4]
    suite.send(suite.usd.functions.faucet(payer.address, 10 * USD), payer)
    now = suite.chain.timestamp()
    transfer = suite.usd.functions.transferWithAuthorization

    expired = sign_authorization(suite, payer, payer=payer.address, to=merchant.address, value=USD, valid_before=now)
    assert suite.reverts(transfer(*expired), relayer) == "usd: authorization is expired"

    early = sign_authorization(
        suite, payer, payer=payer.address, to=merchant.address, value=USD, valid_after=now + 1_000
    )
    assert suite.reverts(transfer(*early), relayer) == "usd: authorization is not yet valid"

    # The thief signs an authorisation claiming to come from the payer.
    forged = sign_authorization(suite, thief, payer=payer.address, to=thief.address, value=USD)
    assert suite.reverts(transfer(*forged), thief) == "usd: invalid signature"

    # A genuine signature with one field changed in transit no longer matches.
    genuine = sign_authorization(suite, payer, payer=payer.address, to=merchant.address, value=USD)
    tampered = (genuine[0], genuine[1], 2 * USD, *genuine[3:])
    assert suite.reverts(transfer(*tampered), relayer) == "usd: invalid signature"
    assert usd_balance(suite, payer.address) == 10 * USD

    # Once its window opens, the early authorisation goes through.
    suite.chain.increase_time(1_001)
    suite.send(transfer(*early), relayer)
    assert usd_balance(suite, merchant.address) == USD


def test_a_cancelled_authorisation_can_never_be_used(suite) -> None:
    payer, merchant, relayer = suite.people[:3]
    suite.send(suite.usd.functions.faucet(payer.address, 10 * USD), payer)
    args = sign_authorization(suite, payer, payer=payer.address, to=merchant.address, value=USD)
    nonce = args[5]

    # Only the authorizer's own signature cancels.
    forged_cancel = sign_cancel(suite, merchant, payer.address, nonce)
    assert suite.reverts(suite.usd.functions.cancelAuthorization(*forged_cancel), merchant) == "usd: invalid signature"

    cancel = sign_cancel(suite, payer, payer.address, nonce)
    receipt = suite.send(suite.usd.functions.cancelAuthorization(*cancel), relayer)
    [canceled] = suite.events(suite.usd, "AuthorizationCanceled", receipt)
    assert (canceled["authorizer"], canceled["nonce"]) == (payer.address, nonce)

    transfer = suite.usd.functions.transferWithAuthorization(*args)
    assert suite.reverts(transfer, relayer) == "usd: authorization is used or canceled"
    assert suite.reverts(suite.usd.functions.cancelAuthorization(*cancel), relayer) == (
        "usd: authorization is used or canceled"
    )
    assert usd_balance(suite, merchant.address) == 0


def test_receive_with_authorisation_only_by_the_payee(suite) -> None:
    payer, merchant, relayer = suite.people[:3]
    suite.send(suite.usd.functions.faucet(payer.address, 10 * USD), payer)
    args = sign_authorization(
        suite, payer, payer=payer.address, to=merchant.address, value=4 * USD, primary_type="ReceiveWithAuthorization"
    )
    receive = suite.usd.functions.receiveWithAuthorization(*args)
    assert suite.reverts(receive, relayer) == "usd: caller must be the payee"

    # The two kinds are not interchangeable: a receive signature does not authorise a relayed transfer.
    transfer = suite.usd.functions.transferWithAuthorization(*args)
    assert suite.reverts(transfer, relayer) == "usd: invalid signature"

    suite.send(receive, merchant)
    assert usd_balance(suite, merchant.address) == 4 * USD
    assert suite.reverts(receive, merchant) == "usd: authorization is used or canceled"


def test_authorisations_need_funds(suite) -> None:
    payer, merchant = suite.people[:2]
    args = sign_authorization(suite, payer, payer=payer.address, to=merchant.address, value=USD)
    transfer = suite.usd.functions.transferWithAuthorization(*args)
    assert suite.reverts(transfer, merchant) == "erc20: transfer amount exceeds balance"
    # A failed attempt does not burn the nonce.
    assert suite.usd.functions.authorizationState(payer.address, args[5]).call() is False


# -- faucet ---------------------------------------------------------------------------------------------


def test_faucet_mints_up_to_its_cap_per_call(suite) -> None:
    someone = suite.people[0]
    cap = suite.usd.functions.faucetCap().call()
    assert cap == 1_000_000 * USD
    suite.send(suite.usd.functions.faucet(someone.address, cap), someone)
    assert usd_balance(suite, someone.address) == cap
    assert suite.reverts(suite.usd.functions.faucet(someone.address, cap + 1), someone) == (
        "usd: faucet amount above cap"
    )


@pytest.fixture(scope="module")
def public_chain() -> Iterator[Chain]:
    """An anvil node posing as a public chain (Base Sepolia's id), where no faucet may mint."""
    with anvil_node("--chain-id", "84532") as url:
        yield Chain.from_rpc(url)


def test_faucet_refuses_on_a_public_chain(public_chain: Chain) -> None:
    deployer = dev_accounts(1)[0]
    usd = public_chain.deploy("USDToken", sender=deployer)
    with pytest.raises(ChainError) as refused:
        public_chain.transact(usd.functions.faucet(deployer.address, USD), deployer)
    assert refused.value.reason == "usd: faucet only on local chains"
