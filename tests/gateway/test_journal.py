"""The settlement journal keeps every answered payment across crashes, and nothing else."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from covey.gateway.x402.errors import JournalBusyError, JournalError
from covey.gateway.x402.journal import JOURNAL_FILE, PaymentJournal


def accept(journal: PaymentJournal, key: str) -> None:
    journal.append_accepted(key, {"payload": key}, {"amount": "1"})


def pending_keys(directory: Path) -> list[str]:
    journal = PaymentJournal(directory)
    try:
        return [entry.key for entry in journal.pending()]
    finally:
        journal.close()


def test_pending_payments_survive_a_reopen_and_settled_ones_are_forgotten(tmp_path: Path) -> None:
    journal = PaymentJournal(tmp_path)
    for key in ("a", "b", "c"):
        accept(journal, key)
    journal.append_settled([("b", True, "0xb", None)])
    journal.close()

    reopened = PaymentJournal(tmp_path)

    assert [entry.key for entry in reopened.pending()] == ["a", "c"]
    assert reopened.pending()[0].payload == {"payload": "a"}
    assert len((tmp_path / JOURNAL_FILE).read_text().splitlines()) == 2  # compacted on open
    reopened.close()


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
