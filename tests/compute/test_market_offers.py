"""Market offers: staked providers register capacity and a price, change it, retire it; the views list them."""

from __future__ import annotations

import pytest

from covey.compute.client import Resources

COV = 10**18
MIN_STAKE = 100 * COV  # the bazaar fixture's minimum provider stake


def test_a_staked_provider_registers_an_offer_and_it_is_listed(bazaar) -> None:
    (alice,) = bazaar.people(1)
    bazaar.stake(alice, MIN_STAKE)
    receipt = bazaar.client.register_offer(alice, Resources(8, 16_384, 1), 12)

    (event,) = bazaar.events("OfferRegistered", receipt)
    assert event == {"provider": alice.address, "cpuCores": 8, "memoryMb": 16_384, "gpus": 1, "pricePerUnitSecond": 12}
    offer = bazaar.client.offer(alice.address)
    assert offer is not None and offer.active
    assert (offer.resources, offer.price_per_unit_second) == (Resources(8, 16_384, 1), 12)
    assert [o.provider for o in bazaar.client.offers()] == [alice.address]
    assert bazaar.client.offer(bazaar.owner.address) is None


def test_registering_again_replaces_the_offer_without_listing_it_twice(bazaar) -> None:
    alice = bazaar.provider(price=10)
    bazaar.client.register_offer(alice, Resources(2, 2048, 0), 7)
    offers = bazaar.client.offers()
    assert len(offers) == 1
    assert offers[0].price_per_unit_second == 7
    assert bazaar.market.functions.providerCount().call() == 1


def test_a_retired_offer_stays_listed_but_inactive(bazaar) -> None:
    alice, bob = bazaar.provider(10), bazaar.provider(11)
    receipt = bazaar.client.retire_offer(alice)
    assert bazaar.events("OfferRetired", receipt) == [{"provider": alice.address}]
    assert [o.provider for o in bazaar.client.offers(active_only=True)] == [bob.address]
    assert len(bazaar.client.offers()) == 2
    assert bazaar.reverts(bazaar.market.functions.retireOffer(), alice) == "market: no offer"


def test_offer_reverts(bazaar) -> None:
    (unstaked, small) = bazaar.people(2)
    register = bazaar.market.functions.registerOffer
    assert bazaar.reverts(register(4, 1024, 0, 10), unstaked) == "market: stake too low"
    bazaar.stake(small, MIN_STAKE - 1)
    assert bazaar.reverts(register(4, 1024, 0, 10), small) == "market: stake too low"
    assert bazaar.reverts(register(0, 1024, 0, 10), small) == "market: no capacity"
    assert bazaar.reverts(register(4, 1024, 0, 0), small) == "market: zero price"


def test_a_gpu_only_offer_is_capacity_too(bazaar) -> None:
    (gpu_box,) = bazaar.people(1)
    bazaar.stake(gpu_box, 2 * MIN_STAKE)
    bazaar.client.register_offer(gpu_box, Resources(0, 0, 2), 100)
    offer = bazaar.client.offer(gpu_box.address)
    assert offer is not None and offer.resources.gpus == 2
    assert bazaar.client.provider_stake(gpu_box.address) == 2 * MIN_STAKE
    assert bazaar.client.params().min_provider_stake == 100 * COV


def test_the_market_needs_a_token_and_a_staking_contract(bazaar) -> None:
    from covey.errors import ChainError

    zero = "0x" + "00" * 20
    usd, staking = bazaar.usd.address, bazaar.staking.address
    for args, reason in (
        ((zero, staking), "market: usd is the zero address"),
        ((usd, zero), "market: staking is the zero address"),
    ):
        with pytest.raises(ChainError) as caught:
            bazaar.chain.deploy("Market", *args, 0, 0, 0, 100, 60, sender=bazaar.owner)
        assert caught.value.reason == reason
    with pytest.raises(ChainError) as caught:
        bazaar.chain.deploy("Market", usd, staking, 0, 0, 0, 0, 60, sender=bazaar.owner)
    assert caught.value.reason == "market: sample rate out of bounds"
