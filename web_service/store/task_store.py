"""TaskStore: all task-related Redis I/O, for the REST service and the forwarder.

The key layout is in :mod:`web_service.store.keys`, the task's shape in
:mod:`web_service.store.record`, the rules in :mod:`web_service.store.rules` and the Lua
scripts that apply them in ``scripts/``. The methods live by side: submit
(:mod:`.submit`), reads and waits (:mod:`.reads`), the forwarder's (:mod:`.dispatch`) and
endpoint status (:mod:`.status`).

Every multi-key change is one pipeline or one Lua script, so a task is never half-moved:
accepted tasks are written before the REST call answers, a dispatched task is always in the
in-flight set until its result is recorded, and the first result recorded wins.
"""

from __future__ import annotations

from typing import Any

import redis

from web_service.store.dispatch import DispatchSide
from web_service.store.keys import DEFAULT_RESULT_TTL
from web_service.store.reads import ReadSide
from web_service.store.scripts import TASK_SCRIPTS, register
from web_service.store.status import StatusSide
from web_service.store.submit import SubmitSide


class TaskStore(SubmitSide, ReadSide, DispatchSide, StatusSide):
    """All task-related Redis I/O, for the REST service and the forwarder."""

    def __init__(self, client: redis.Redis, result_ttl: int = DEFAULT_RESULT_TTL):
        self.r = client
        self.result_ttl = result_ttl
        self.scripts = {name: register(client, name) for name in TASK_SCRIPTS}
        # Function bodies never change under an id: the forwarder keeps the ones it dispatched.
        self._bodies: dict[str, bytes] = {}
        self._log_upkeep: dict[str, float] = {}  # owner -> last TTL renewal of their submission log
        self.idle_subscribers: list[Any] = []  # pub/sub connections kept for the next wait (reads.Completions)
        # The data plane (set by the forwarder): each dispatched task carries the service's URL
        # and a data token for it (web_service.object_rules), so that its worker moves large
        # arguments and results through the object store.
        self.data_url: str = ""
        self.data_key: bytes = b""

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> "TaskStore":
        return cls(redis.Redis.from_url(url), **kwargs)
