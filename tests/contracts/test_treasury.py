"""Treasury: emission per elapsed epoch (anyone triggers it, never past the cap) and module allowances."""

from __future__ import annotations

from web3.types import TxReceipt

from covey.chain import Chain, dev_accounts

COV = 10**18
USD = 10**6
CAP = 10**9 * COV
ZERO = "0x" + "00" * 20


def block_time(chain: Chain, receipt: TxReceipt) -> int:
    return int(chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"])


# -- emission -------------------------------------------------------------------------------------------


def test_emission_mints_one_allotment_per_whole_epoch_elapsed(suite) -> None:
    treasury, anyone = suite.treasury.functions, suite.people[5]
    assert treasury.emissionPerEpoch().call() == suite.emission_per_epoch
    assert treasury.epochLength().call() == suite.epoch_length_s
    assert suite.reverts(treasury.mintEmission(), anyone) == "treasury: no epoch elapsed"

    start = treasury.lastEmissionAt().call()
    supply_before = suite.cov.functions.totalSupply().call()
    # Two and a half epochs: two are minted, the half keeps counting toward the next.
    suite.chain.increase_time(suite.epoch_length_s * 5 // 2)
    assert treasury.emissionDue().call() == 2 * suite.emission_per_epoch
    receipt = suite.send(treasury.mintEmission(), anyone)
    [minted] = suite.events(suite.treasury, "EmissionMinted", receipt)
    assert (minted["epochs"], minted["amount"], minted["caller"]) == (2, 2 * suite.emission_per_epoch, anyone.address)
    assert suite.balance(suite.treasury.address) == 2 * suite.emission_per_epoch
    assert suite.cov.functions.totalSupply().call() == supply_before + 2 * suite.emission_per_epoch
    assert treasury.lastEmissionAt().call() == start + 2 * suite.epoch_length_s
    assert suite.reverts(treasury.mintEmission(), anyone) == "treasury: no epoch elapsed"

    suite.chain.increase_time(suite.epoch_length_s // 2 + 1)
    suite.send(treasury.mintEmission(), anyone)
    assert suite.balance(suite.treasury.address) == 3 * suite.emission_per_epoch


def test_emission_never_mints_past_the_cap(chain: Chain) -> None:
    owner, anyone = dev_accounts(2)
    # A token already 1,500 COV short of its cap, with 1,000 COV a minute scheduled.
    cov = chain.deploy("CoveyToken", CAP - 1_500 * COV, sender=owner)
    treasury = chain.deploy("Treasury", cov.address, sender=owner)
    chain.transact(cov.functions.setMinter(treasury.address), owner)
    chain.transact(treasury.functions.setEmission(1_000 * COV, 60), owner)

    chain.increase_time(3 * 60)
    assert treasury.functions.emissionDue().call() == 1_500 * COV
    chain.transact(treasury.functions.mintEmission(), anyone)
    assert cov.functions.totalSupply().call() == CAP
    assert cov.functions.balanceOf(treasury.address).call() == 1_500 * COV

    # At the cap, epochs still pass (and are consumed) but nothing more is minted.
    chain.increase_time(2 * 60)
    assert treasury.functions.mintEmission().call({"from": anyone.address}) == 0
    receipt = chain.transact(treasury.functions.mintEmission(), anyone)
    assert treasury.events.EmissionMinted().process_receipt(receipt)[0]["args"]["amount"] == 0
    assert cov.functions.totalSupply().call() == CAP


def test_a_new_schedule_first_mints_what_the_old_one_owed(suite) -> None:
    treasury, owner = suite.treasury.functions, suite.owner
    suite.chain.increase_time(suite.epoch_length_s + 10)
    receipt = suite.send(treasury.setEmission(5 * COV, 600), owner)
    assert suite.balance(suite.treasury.address) == suite.emission_per_epoch
    [schedule] = suite.events(suite.treasury, "EmissionSet", receipt)
    assert schedule == {"per_epoch": 5 * COV, "epoch_length_s": 600, "starts_at": block_time(suite.chain, receipt)}
    assert treasury.lastEmissionAt().call() == block_time(suite.chain, receipt)

    suite.chain.increase_time(1_200)
    suite.send(treasury.mintEmission(), owner)
    assert suite.balance(suite.treasury.address) == suite.emission_per_epoch + 10 * COV


def test_only_the_owner_sets_a_sane_schedule(suite) -> None:
    treasury, owner, stranger = suite.treasury.functions, suite.owner, suite.people[0]
    assert suite.reverts(treasury.setEmission(COV, 3_600), stranger) == "ownable: caller is not the owner"
    assert suite.reverts(treasury.setEmission(COV, 59), owner) == "treasury: epoch too short"
    assert suite.reverts(treasury.setEmission(CAP + 1, 3_600), owner) == "treasury: emission above cap"
    # Zero pauses emission: epochs pass, nothing is minted.
    suite.send(treasury.setEmission(0, 60), owner)
    suite.chain.increase_time(120)
    suite.send(treasury.mintEmission(), stranger)
    assert suite.balance(suite.treasury.address) == 0


# -- allowances and payments ----------------------------------------------------------------------------


def test_modules_pay_within_their_allowance_per_token(suite) -> None:
    treasury, owner = suite.treasury.functions, suite.owner
    arena, gateway, winner, host = suite.people[:4]
    suite.send(suite.cov.functions.transfer(suite.treasury.address, 1_000 * COV), owner)
    suite.send(suite.usd.functions.faucet(suite.treasury.address, 500 * USD), owner)

    receipt = suite.send(treasury.setAllowance(arena.address, suite.cov.address, 300 * COV), owner)
    assert suite.events(suite.treasury, "AllowanceSet", receipt) == [
        {"module": arena.address, "token": suite.cov.address, "amount": 300 * COV}
    ]
    receipt = suite.send(treasury.pay(suite.cov.address, winner.address, 200 * COV), arena)
    assert suite.balance(winner.address) == 200 * COV
    assert treasury.allowance(arena.address, suite.cov.address).call() == 100 * COV
    assert suite.events(suite.treasury, "Paid", receipt) == [
        {"module": arena.address, "token": suite.cov.address, "to": winner.address, "amount": 200 * COV}
    ]
    over = treasury.pay(suite.cov.address, winner.address, 100 * COV + 1)
    assert suite.reverts(over, arena) == "treasury: allowance exceeded"

    # An allowance is per token: Arena's COV allowance does not let it spend USD.
    assert suite.reverts(treasury.pay(suite.usd.address, winner.address, 1), arena) == "treasury: allowance exceeded"
    suite.send(treasury.setAllowance(gateway.address, suite.usd.address, 100 * USD), owner)
    suite.send(treasury.pay(suite.usd.address, host.address, 40 * USD), gateway)
    assert suite.usd.functions.balanceOf(host.address).call() == 40 * USD


def test_payment_reverts_name_the_rule(suite) -> None:
    treasury, owner = suite.treasury.functions, suite.owner
    module, stranger = suite.people[:2]
    suite.send(treasury.setAllowance(module.address, suite.cov.address, 10 * COV), owner)
    pay = treasury.pay(suite.cov.address, stranger.address, COV)
    assert suite.reverts(pay, module) == "treasury: insufficient balance"
    assert suite.reverts(pay, stranger) == "treasury: allowance exceeded"
    suite.send(suite.cov.functions.transfer(suite.treasury.address, 10 * COV), owner)
    assert suite.reverts(treasury.pay(suite.cov.address, ZERO, COV), module) == "treasury: pay to the zero address"
    assert suite.reverts(treasury.setAllowance(ZERO, suite.cov.address, 1), owner) == (
        "treasury: module is the zero address"
    )
    set_allowance = treasury.setAllowance(stranger.address, suite.cov.address, 1)
    assert suite.reverts(set_allowance, stranger) == "ownable: caller is not the owner"
    suite.send(pay, module)
    assert suite.balance(stranger.address) == COV
