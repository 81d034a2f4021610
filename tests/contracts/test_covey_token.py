"""CoveyToken: genesis to the deployer, a hard cap on every mint, one minter (the Treasury), EIP-2612 permit."""

from __future__ import annotations

import pytest
from eth_account import Account
from web3 import Web3

from covey.chain import Chain, dev_accounts
from covey.errors import ChainError

COV = 10**18
CAP = 10**9 * COV


def test_the_deployer_holds_the_genesis_and_the_treasury_is_the_only_minter(suite) -> None:
    cov = suite.cov
    assert cov.functions.name().call() == "Covey"
    assert cov.functions.symbol().call() == "COV"
    assert cov.functions.decimals().call() == 18
    assert cov.functions.cap().call() == CAP
    assert cov.functions.totalSupply().call() == suite.genesis_cov * COV
    assert suite.balance(suite.owner.address) == suite.genesis_cov * COV
    assert cov.functions.minter().call() == suite.treasury.address

    # Not even the owner can mint once the Treasury holds the role, and the role cannot move.
    assert suite.reverts(cov.functions.mint(suite.owner.address, 1), suite.owner) == "cov: caller is not the minter"
    assert suite.reverts(cov.functions.setMinter(suite.owner.address), suite.owner) == "cov: minter already set"


def test_transfers_move_balances_and_log_transfer_events(suite) -> None:
    alice, bob = suite.people[:2]
    suite.give_cov(alice, 10 * COV)
    receipt = suite.send(suite.cov.functions.transfer(bob.address, 4 * COV), alice)
    assert suite.balance(alice.address) == 6 * COV
    assert suite.balance(bob.address) == 4 * COV
    [transfer] = suite.events(suite.cov, "Transfer", receipt)
    assert (transfer["sender"], transfer["receiver"], transfer["value"]) == (alice.address, bob.address, 4 * COV)
    too_much = suite.cov.functions.transfer(bob.address, 7 * COV)
    assert suite.reverts(too_much, alice) == "erc20: transfer amount exceeds balance"


def test_every_mint_respects_the_cap(chain: Chain) -> None:
    owner, minter, holder = dev_accounts(3)
    # Genesis just under the cap: only 10 wei of room is left for the minter.
    cov = chain.deploy("CoveyToken", CAP - 10, sender=owner)
    receipt = chain.transact(cov.functions.setMinter(minter.address), owner)
    assert cov.events.MinterSet().process_receipt(receipt)[0]["args"]["minter"] == minter.address

    chain.transact(cov.functions.mint(holder.address, 10), minter)
    assert cov.functions.totalSupply().call() == CAP
    with pytest.raises(ChainError) as over_cap:
        chain.transact(cov.functions.mint(holder.address, 1), minter)
    assert over_cap.value.reason == "cov: cap exceeded"

    # Burning makes room again: the cap bounds supply, not lifetime minting.
    chain.transact(cov.functions.burn(5), holder)
    chain.transact(cov.functions.mint(holder.address, 5), minter)
    assert cov.functions.totalSupply().call() == CAP


def test_genesis_above_the_cap_and_bad_minters_are_refused(chain: Chain) -> None:
    owner, stranger = dev_accounts(2)
    with pytest.raises(ChainError) as too_big:
        chain.deploy("CoveyToken", CAP + 1, sender=owner)
    assert too_big.value.reason == "cov: genesis above cap"

    cov = chain.deploy("CoveyToken", 0, sender=owner)
    assert cov.functions.totalSupply().call() == 0
    with pytest.raises(ChainError) as not_owner:
        chain.transact(cov.functions.setMinter(stranger.address), stranger)
    assert not_owner.value.reason == "ownable: caller is not the owner"
    with pytest.raises(ChainError) as zero:
        chain.transact(cov.functions.setMinter("0x" + "00" * 20), owner)
    assert zero.value.reason == "cov: minter is the zero address"


def test_permit_approves_with_a_signature_once(suite) -> None:
    holder, spender = suite.people[:2]
    suite.give_cov(holder, 5 * COV)
    deadline = suite.chain.timestamp() + 3_600
    nonce = suite.cov.functions.nonces(holder.address).call()
    signed = Account.sign_typed_data(
        holder.key,
        full_message={
            "types": {
                "EIP712Domain": [
                    {"name": "name", "type": "string"},
                    {"name": "version", "type": "string"},
                    {"name": "chainId", "type": "uint256"},
                    {"name": "verifyingContract", "type": "address"},
                ],
                "Permit": [
                    {"name": "owner", "type": "address"},
                    {"name": "spender", "type": "address"},
                    {"name": "value", "type": "uint256"},
                    {"name": "nonce", "type": "uint256"},
                    {"name": "deadline", "type": "uint256"},
                ],
            },
            "primaryType": "Permit",
            "domain": {
                "name": "Covey",
                "version": "1",
                "chainId": suite.chain.chain_id,
                "verifyingContract": suite.cov.address,
            },
            "message": {
                "owner": holder.address,
                "spender": spender.address,
                "value": 3 * COV,
                "nonce": nonce,
                "deadline": deadline,
            },
        },
    )
    r, s = signed.r.to_bytes(32, "big"), signed.s.to_bytes(32, "big")
    permit = suite.cov.functions.permit(holder.address, spender.address, 3 * COV, deadline, signed.v, r, s)
    # Anyone may relay the permit: here the spender pays the gas.
    suite.send(permit, spender)
    assert suite.cov.functions.allowance(holder.address, spender.address).call() == 3 * COV
    suite.send(suite.cov.functions.transferFrom(holder.address, spender.address, 3 * COV), spender)
    assert suite.balance(spender.address) == 3 * COV
    # The nonce moved on, so the same signature no longer matches.
    assert suite.reverts(permit, spender) == "erc20: invalid signature"
    assert Web3.to_checksum_address(suite.cov.functions.eip712Domain().call()[4]) == suite.cov.address
