"""Endpoint status in the task store: connection, heartbeats, the site manager's last report."""

from __future__ import annotations

import json
import time
from typing import Any

import msgspec
import redis
from redis.typing import EncodableT, FieldT

from fnserve.messages import EndpointStatus
from web_service.redis_replies import text
from web_service.store.keys import WAKE_CHANNEL, WATCH_WAKE, inflight_key, queue_key, status_channel, status_key


class StatusSide:
    r: redis.Redis

    def set_connected(self, endpoint_id: str, connected: bool, **info: Any) -> None:
        fields: dict[FieldT, EncodableT] = {"connected": int(connected), "changed_at": repr(time.time()), **{k: str(v) for k, v in info.items()}}
        # A disconnected endpoint reports no blocks or workers: its last report described a site
        # manager that is gone (stopped, or lost and to be replaced by a new one that reports anew).
        self._set_status(endpoint_id, fields, drop=() if connected else ("report",))

    def touch(self, endpoint_id: str, report: EndpointStatus | None = None) -> None:
        fields: dict[FieldT, EncodableT] = {"last_heartbeat": repr(time.time())}
        if report is not None:
            fields["report"] = msgspec.json.encode(report)
        self._set_status(endpoint_id, fields)

    def touch_many(self, reports: dict[str, EndpointStatus | None]) -> None:
        """:meth:`touch` for many endpoints in one round trip (a forwarder's pass of heartbeats)."""
        if not reports:
            return
        now = repr(time.time())
        pipe = self.r.pipeline(transaction=False)
        for endpoint_id, report in reports.items():
            fields: dict[FieldT, EncodableT] = {"last_heartbeat": now}
            if report is not None:
                fields["report"] = msgspec.json.encode(report)
            pipe.hset(status_key(endpoint_id), mapping=fields)
            pipe.publish(status_channel(endpoint_id), endpoint_id)
        pipe.execute()

    def _set_status(self, endpoint_id: str, fields: dict[FieldT, EncodableT], drop: tuple[str, ...] = ()) -> None:
        # One round trip; the publish lets live views follow the endpoint without polling.
        pipe = self.r.pipeline(transaction=False)
        pipe.hset(status_key(endpoint_id), mapping=fields)
        if drop:
            pipe.hdel(status_key(endpoint_id), *drop)
        pipe.publish(status_channel(endpoint_id), endpoint_id)
        pipe.execute()

    def set_restricted(self, endpoint_id: str, restricted: bool) -> None:
        """Note that the endpoint runs only allowed functions (dispatch then stamps its tasks
        data-only; see ``claim``)."""
        self.r.hset(status_key(endpoint_id), "restricted", int(restricted))

    def endpoint_status(self, endpoint_id: str) -> dict[str, Any]:
        raw = {text(k): v for k, v in self.r.hgetall(status_key(endpoint_id)).items()}
        pipe = self.r.pipeline(transaction=False)
        pipe.llen(queue_key(endpoint_id))
        pipe.scard(inflight_key(endpoint_id))
        queued, inflight = pipe.execute()
        status: dict[str, Any] = {
            "connected": raw.get("connected") == b"1",
            "last_heartbeat": float(raw["last_heartbeat"]) if "last_heartbeat" in raw else None,
            "connected_since" if raw.get("connected") == b"1" else "disconnected_since":
                float(raw["changed_at"]) if "changed_at" in raw else None,
            "tasks_waiting": int(queued),
            "tasks_in_flight": int(inflight),
        }
        if "report" in raw:
            # Every field, zeros included: the wire form leaves out fields at their defaults.
            report = msgspec.structs.asdict(msgspec.json.decode(raw["report"], type=EndpointStatus))
            report.pop("v", None)
            status["site"] = report
        return status


    def endpoint_runtimes(self, endpoint_id: str) -> dict[str, Any] | None:
        """The runtimes the endpoint's last status report lists (None: it has not reported any,
        or reported something unreadable)."""
        raw = self.r.hget(status_key(endpoint_id), "report")
        if not raw:
            return None
        try:
            runtimes = msgspec.json.decode(raw).get("runtimes")
        except (msgspec.DecodeError, AttributeError):
            return None
        return runtimes if isinstance(runtimes, dict) else None

    def endpoint_watch_folders(self, endpoint_id: str) -> list[str] | None:
        """The folders the endpoint's admin lets file triggers watch (None: it never connected)."""
        raw = self.r.hget(status_key(endpoint_id), "watch_folders")
        return None if raw is None else list(json.loads(raw))

    def wake_watchers(self, endpoint_id: str) -> None:
        """Tell the forwarders the endpoint's file triggers changed."""
        self.r.publish(WAKE_CHANNEL, WATCH_WAKE + endpoint_id)

    def is_connected(self, endpoint_id: str) -> bool:
        return self.r.hget(status_key(endpoint_id), "connected") == b"1"
