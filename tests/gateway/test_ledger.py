"""The balance ledger of off-chain verification: few chain reads, never more spendable than the chain holds."""

from __future__ import annotations

import time

from covey.gateway.x402.mechanisms.evm.ledger import BalanceLedger

TOKEN, PAYER = "0x" + "11" * 20, "0x" + "ab" * 20


class FakeChain:
    """A token balance that settlements lower, counting the reads the ledger makes."""

    def __init__(self, balance: int) -> None:
        self.balance = balance
        self.reads = 0

    def read(self, token: str, payer: str) -> int:
        self.reads += 1
        return self.balance


def test_a_balance_is_read_once_per_ttl_and_lowered_by_what_we_settle() -> None:
    chain = FakeChain(1_000)
    ledger = BalanceLedger(chain.read, ttl_s=60, min_fresh_interval_s=0)
    assert ledger.balance(TOKEN, PAYER) == 1_000

    sent_at = time.monotonic()
    chain.balance -= 300  # our batch transferred 300, read before it was sent
    ledger.settled(TOKEN, "0x" + "AB" * 20, 300, sent_at=sent_at)  # any address case

    assert ledger.balance(TOKEN, PAYER) == 700
    assert chain.reads == 1
    assert ledger.balance(TOKEN, PAYER, fresh=True) == 700 and chain.reads == 2


def test_a_reading_taken_after_a_transfer_was_sent_is_dropped_not_lowered_twice() -> None:
    chain = FakeChain(1_000)
    ledger = BalanceLedger(chain.read, ttl_s=60)
    sent_at = time.monotonic()
    chain.balance -= 300  # mined before the ledger's read: the reading already shows it
    assert ledger.balance(TOKEN, PAYER) == 700

    ledger.settled(TOKEN, PAYER, 300, sent_at=sent_at)

    assert ledger.balance(TOKEN, PAYER) == 700  # read again, not 400
    assert chain.reads == 2


def test_a_read_that_a_settlement_overlaps_is_taken_again() -> None:
    chain = FakeChain(1_000)
    ledger: BalanceLedger

    def racing_read(token: str, payer: str) -> int:
        seen = chain.read(token, payer)
        if chain.reads == 1:  # the first read returns the old balance while a settlement lands
            chain.balance -= 300
            ledger.settled(TOKEN, PAYER, 300, sent_at=time.monotonic())
        return seen

    ledger = BalanceLedger(racing_read, ttl_s=60)
    assert ledger.balance(TOKEN, PAYER) == 700
    assert chain.reads == 2


def test_an_expired_or_forgotten_balance_is_read_again() -> None:
    chain = FakeChain(1_000)
    ledger = BalanceLedger(chain.read, ttl_s=0.05)
    ledger.balance(TOKEN, PAYER)
    chain.balance = 5  # the payer moved its money elsewhere
    time.sleep(0.06)
    assert ledger.balance(TOKEN, PAYER) == 5
    chain.balance = 50
    ledger.forget(TOKEN, PAYER)
    assert ledger.balance(TOKEN, PAYER) == 50
    assert chain.reads == 3


def test_a_payer_refused_again_and_again_costs_one_read_per_interval() -> None:
    chain = FakeChain(0)
    ledger = BalanceLedger(chain.read, ttl_s=60, min_fresh_interval_s=30)
    for _ in range(20):
        assert ledger.balance(TOKEN, PAYER, fresh=True) == 0
    assert chain.reads == 1
