"""`Chain.wait_until`, `now` and `clock_offset_s`: waiting for chain time for real, never moving the clock."""

from __future__ import annotations

import time

import pytest

from covey.chain import Chain
from covey.errors import ChainError
from tests.support import anvil_node


def test_wait_until_waits_real_time_and_mines_the_block_that_shows_it(chain: Chain) -> None:
    chain.mine()  # the shared anvil's clock may run ahead (other tests travel in time): start from a fresh block
    target = chain.timestamp() + 2
    started = time.monotonic()

    latest = chain.wait_until(target)

    elapsed = time.monotonic() - started
    assert latest >= target and chain.timestamp() >= target
    # Whole-second timestamps: up to a second early on the wall clock, and never long after.
    assert 0.9 <= elapsed <= 6, elapsed
    # Already there: no wait, no block.
    block = chain.block_number()
    started = time.monotonic()
    assert chain.wait_until(target - 1) == chain.timestamp()
    assert time.monotonic() - started < 1 and chain.block_number() == block


def test_the_embedded_clock_follows_wall_time(embedded_chain: Chain) -> None:
    assert abs(embedded_chain.clock_offset_s()) <= 1
    assert embedded_chain.clock_warning() is None
    assert abs(embedded_chain.now() - time.time()) <= 1


def test_a_clock_that_ran_ahead_is_waited_for_by_its_own_time(embedded_chain: Chain) -> None:
    embedded_chain.increase_time(10_000)  # a test's deliberate time travel: the clock stays ahead for good
    assert 10_000 <= embedded_chain.clock_offset_s() <= 10_001
    warning = embedded_chain.clock_warning()
    assert warning is not None and warning.startswith("the chain clock is 2.8 h ahead of wall time")
    target = embedded_chain.timestamp() + 2
    started = time.monotonic()

    assert embedded_chain.wait_until(target) >= target

    assert time.monotonic() - started <= 6  # two seconds of its clock, not 10,000 of the wall's


def test_a_public_chain_is_polled_for_its_own_blocks() -> None:
    with anvil_node("--chain-id", "4242", "--block-time", "1") as url:  # not a dev chain id: no mining on demand
        chain = Chain.from_rpc(url)
        assert not chain.is_local
        target = chain.now() + 2
        started = time.monotonic()

        assert chain.wait_until(target, timeout_s=30) >= target

        assert time.monotonic() - started <= 8
        with pytest.raises(ChainError, match="only allowed on a local dev chain"):
            chain.mine()
        with pytest.raises(ChainError, match="did not reach"):
            chain.wait_until(chain.now() + 3_600, timeout_s=1)


def test_over_rpc_an_idle_clock_that_ran_ahead_is_read_from_a_fresh_block() -> None:
    with anvil_node() as url:  # its own node: the shared one's clock stays where other tests left it
        chain = Chain.from_rpc(url)
        chain.increase_time(10_000)
        time.sleep(6)  # idle: the latest block now understates the clock's lead by six seconds
        target = chain.timestamp() + 8
        started = time.monotonic()

        assert chain.wait_until(target) >= target

        # Two seconds of the chain's clock are left, not the eight the idle latest block suggests.
        assert time.monotonic() - started <= 5
