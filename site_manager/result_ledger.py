"""Results the site manager sent and the forwarder has not acked yet (:class:`ResultLedger`):
resent after a reconnect, kept on disk with a :class:`~site_manager.ledger_store.LedgerStore`."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import TYPE_CHECKING

from fnserve.messages import ResultMessage

if TYPE_CHECKING:
    from site_manager.ledger_store import LedgerStore


class ResultLedger:
    """Results sent (or waiting to be sent) and not yet acked by the forwarder, oldest first.

    With a ``store`` (site_manager.ledger_store.LedgerStore) every change is also written to
    disk, and what a previous process left unacked is loaded back at once.
    """

    def __init__(self, store: LedgerStore | None = None) -> None:
        self._unacked: OrderedDict[str, ResultMessage] = OrderedDict()
        self._store = store
        if store is not None:
            for result in store.load():
                self._unacked.setdefault(result.task_id, result)

    def add(self, result: ResultMessage) -> None:
        self.add_many([result])

    def add_many(self, results: list[ResultMessage]) -> list[ResultMessage]:
        """Keep new results, on disk first when stored; returns them. The first result for a
        task wins, against the ledger and within ``results``."""
        new: dict[str, ResultMessage] = {}
        for r in results:
            if r.task_id not in self._unacked:
                new.setdefault(r.task_id, r)
        fresh = list(new.values())
        if self._store is not None and fresh:
            self._store.add(fresh)
        self._unacked.update(new)
        return fresh

    def ack(self, task_ids: Iterable[str]) -> int:
        """Forget acked results; returns how many were known."""
        known = [t for t in task_ids if self._unacked.pop(t, None) is not None]
        if self._store is not None and known:
            self._store.ack(known)
        return len(known)

    def task_ids(self) -> list[str]:
        return list(self._unacked)

    def get(self, task_id: str) -> ResultMessage | None:
        return self._unacked.get(task_id)

    def pending(self) -> list[ResultMessage]:
        return list(self._unacked.values())

    def __len__(self) -> int:
        return len(self._unacked)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._unacked
