"""The site manager's unacked-results ledger on disk (a real SQLite file): what a process that
was killed left unacked is loaded by the next one, in order, once each; acked results are gone."""

from __future__ import annotations

from fnserve.messages import ResultMessage
from site_manager.ledger_store import LedgerStore
from site_manager.session import ResultLedger


def _result(task_id: str, value: bytes = b"x") -> ResultMessage:
    return ResultMessage(task_id=task_id, ok=True, data=value)


def test_unacked_results_survive_a_new_process_in_order(tmp_path):
    path = tmp_path / "run" / "unacked_results.sqlite"
    ledger = ResultLedger(LedgerStore(path))
    ledger.add_many([_result("a", b"1"), _result("b", b"2"), _result("c", b"3")])
    assert ledger.ack(["b", "unknown"]) == 1

    # No close(): the first process is gone as after kill -9; a new one opens the same file.
    reloaded = ResultLedger(LedgerStore(path))
    assert reloaded.task_ids() == ["a", "c"]
    assert [r.data for r in reloaded.pending()] == [b"1", b"3"]


def test_the_first_result_of_a_task_wins_on_disk_too(tmp_path):
    path = tmp_path / "unacked.sqlite"
    ledger = ResultLedger(LedgerStore(path))
    ledger.add(_result("a", b"first"))
    ledger.add(_result("a", b"second"))
    ledger.add_many([_result("b", b"one"), _result("b", b"two")])
    assert [r.data for r in ResultLedger(LedgerStore(path)).pending()] == [b"first", b"one"]


def test_a_fully_acked_ledger_reloads_empty(tmp_path):
    path = tmp_path / "unacked.sqlite"
    ledger = ResultLedger(LedgerStore(path))
    ledger.add_many([_result(str(i)) for i in range(500)])
    ledger.ack(str(i) for i in range(500))
    assert len(ResultLedger(LedgerStore(path))) == 0
