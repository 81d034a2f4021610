"""The settlement journal keeps every answered payment across crashes, and remembers spent keys until they expire."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from covey.gateway.x402 import journal as journal_module
from covey.gateway.x402.errors import JournalBusyError, JournalError
from covey.gateway.x402.journal import JOURNAL_FILE, PaymentJournal

HORIZON_S = 660


def accept(journal: PaymentJournal, key: str, expires_at: int | None = None) -> None:
    expires_at = int(time.time()) + 600 if expires_at is None else expires_at
    journal.append_accepted(key, {"payload": key}, {"amount": "1"}, expires_at=expires_at)


def pending_keys(directory: Path) -> list[str]:
    journal = PaymentJournal(directory)
    try:
        return [entry.key for entry in journal.pending()]
    finally:
        journal.close()


def test_pending_payments_survive_a_reopen_and_settled_ones_stay_spent(tmp_path: Path) -> None:
    journal = PaymentJournal(tmp_path)
    for key in ("a", "b", "c"):
        accept(journal, key)
    journal.append_settled([("b", True, "0xb", None)])
    journal.close()

    reopened = PaymentJournal(tmp_path)

    assert [entry.key for entry in reopened.pending()] == ["a", "c"]
    assert reopened.pending()[0].payload == {"payload": "a"}
    assert [reopened.spent(key) for key in ("a", "b", "c", "d")] == [True, True, True, False]
    # Compacted on open: the header, b's spent key (its accept and settle lines collapse into one), a and c.
    ops = [json.loads(line)["op"] for line in (tmp_path / JOURNAL_FILE).read_text().splitlines()]
    assert ops == ["meta", "settle", "accept", "accept"]
    reopened.close()


def test_settled_keys_stay_spent_across_restarts_until_they_expire(tmp_path: Path) -> None:
    now = int(time.time())
    journal = PaymentJournal(tmp_path)
    accept(journal, "live", expires_at=now + 600)
    accept(journal, "expired", expires_at=now - journal_module.EXPIRY_SLACK_S - 10)
    journal.append_settled([("live", True, "0x1", None), ("expired", True, "0x2", None)])
    journal.close()

    for _restart in range(2):
        journal = PaymentJournal(tmp_path)
        assert journal.spent("live") and not journal.spent("expired") and journal.pending() == []
        journal.close()
    assert "expired" not in (tmp_path / JOURNAL_FILE).read_text()


def test_a_new_journal_vouches_only_for_payments_that_expire_after_its_horizon(tmp_path: Path) -> None:
    before = int(time.time())
    journal = PaymentJournal(tmp_path, horizon_s=HORIZON_S)
    horizon = journal.complete_after
    journal.close()

    assert before + HORIZON_S <= horizon <= int(time.time()) + HORIZON_S
    assert PaymentJournal(tmp_path, horizon_s=HORIZON_S).complete_after == horizon  # kept across restarts


def test_a_journal_written_before_spent_keys_were_kept_gets_a_fresh_horizon(tmp_path: Path) -> None:
    legacy = b'{"op":"accept","key":"a","payload":{},"requirements":{}}\n{"op":"settle","key":"a","success":true}\n'
    (tmp_path / JOURNAL_FILE).write_bytes(legacy)
    before = int(time.time())

    journal = PaymentJournal(tmp_path, horizon_s=HORIZON_S)

    # Its settled history is gone with the old format: payments that may have been in it go to the chain.
    assert journal.complete_after >= before + HORIZON_S
    assert journal.pending() == []
    journal.close()
    assert json.loads((tmp_path / JOURNAL_FILE).read_text().splitlines()[0])["op"] == "meta"


def test_evicting_a_spent_key_for_memory_moves_the_horizon_past_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_module, "MAX_SPENT_KEYS", 2)
    now = int(time.time())
    journal = PaymentJournal(tmp_path, horizon_s=0)
    for offset, key in enumerate(("k1", "k2", "k3")):
        accept(journal, key, expires_at=now + 10_000 + offset)
    journal.append_settled([(key, True, "0x", None) for key in ("k1", "k2", "k3")])

    assert [journal.spent(key) for key in ("k1", "k2", "k3")] == [False, True, True]
    assert journal.complete_after == now + 10_000  # k1 may come back: the record no longer vouches for it
    journal.close()


def test_a_torn_last_line_is_dropped_and_appends_continue(tmp_path: Path) -> None:
    journal = PaymentJournal(tmp_path)
    accept(journal, "a")
    journal.close()
    with open(tmp_path / JOURNAL_FILE, "ab") as handle:
        handle.write(b'{"op":"accept","key":"torn","payl')  # the crash hit mid-write: never answered

    reopened = PaymentJournal(tmp_path)
    accept(reopened, "b")
    reopened.close()

    assert pending_keys(tmp_path) == ["a", "b"]


def test_garbage_before_a_valid_record_is_corruption(tmp_path: Path) -> None:
    (tmp_path / JOURNAL_FILE).write_bytes(b'garbage\n{"op":"accept","key":"a","payload":{},"requirements":{}}\n')

    with pytest.raises(JournalError, match="corrupt at line 1"):
        PaymentJournal(tmp_path)


def test_a_second_process_cannot_open_the_same_journal(tmp_path: Path) -> None:
    journal = PaymentJournal(tmp_path)
    with pytest.raises(JournalBusyError):
        PaymentJournal(tmp_path)
    journal.close()
    PaymentJournal(tmp_path).close()


def test_concurrent_appends_all_become_durable(tmp_path: Path) -> None:
    journal = PaymentJournal(tmp_path)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: accept(journal, f"k{i}"), range(200)))
    journal.close()

    assert sorted(pending_keys(tmp_path)) == sorted(f"k{i}" for i in range(200))
