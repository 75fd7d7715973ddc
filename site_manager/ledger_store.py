"""The site manager's unacked results on disk, so that a kill -9 loses none of them.

A result enters the file before it is sent to the forwarder and leaves it when the forwarder
acks it; a site manager started again loads what is left, tells the forwarder it holds those
tasks (``Register.holding``: they are not dispatched again) and resends them once registered.
The forwarder records the first result of a task and ignores the rest, so a replay never makes
a duplicate.

SQLite (the standard library's) in WAL mode with ``synchronous=NORMAL``: each batch is one
transaction, durable when the process dies (kill -9, OOM); a crash of the whole machine may
lose the last batches, and those tasks are then dispatched again by the forwarder (the
endpoint's in-flight tasks are requeued when it does not come back holding them).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path

import msgspec

from fnserve.messages import ResultMessage
from fnserve.private_files import private_dir

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(ResultMessage)
_DELETE_CHUNK = 500  # ids per DELETE statement (SQLite's bound-parameter limit is far above)


class LedgerStore:
    """Unacked results in ``path`` (a SQLite file in the endpoint's run directory)."""

    def __init__(self, path: str | Path) -> None:
        private_dir(Path(path).parent)
        # 0600 from the start (SQLite gives its -wal and -shm files the database file's mode).
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        # Keyed by task id (one row per task: the first result wins); ``seq`` keeps the order.
        self._db.execute("CREATE TABLE IF NOT EXISTS unacked (task_id TEXT PRIMARY KEY, seq INTEGER, body BLOB) WITHOUT ROWID")
        self._seq = self._db.execute("SELECT coalesce(max(seq), 0) FROM unacked").fetchone()[0]

    def add(self, results: Iterable[ResultMessage]) -> None:
        rows = []
        for r in results:
            self._seq += 1
            rows.append((r.task_id, self._seq, _encoder.encode(r)))
        if rows:
            with self._db:  # one transaction per batch
                self._db.executemany("INSERT OR IGNORE INTO unacked (task_id, seq, body) VALUES (?, ?, ?)", rows)

    def ack(self, task_ids: Iterable[str]) -> None:
        ids = list(task_ids)
        with self._db:
            for i in range(0, len(ids), _DELETE_CHUNK):
                chunk = ids[i:i + _DELETE_CHUNK]
                self._db.execute(f"DELETE FROM unacked WHERE task_id IN ({','.join('?' * len(chunk))})", chunk)

    def load(self) -> list[ResultMessage]:
        """What was left unacked, oldest first."""
        return [_decoder.decode(body) for (body,) in self._db.execute("SELECT body FROM unacked ORDER BY seq")]
