"""Server-sent events for the dashboard's live views, woken by Redis pub/sub.

A stream subscribes to the channels the task store already publishes (a user's finished and
submitted tasks, an endpoint's status changes) and blocks on them: nothing polls on an interval.
Changes that come in a burst are gathered for at most ``min_interval`` and sent as one update.
A stream ends after ``lifetime`` seconds (the browser's EventSource reconnects by itself after
``retry``) and starts with a full snapshot, so a reconnect misses nothing; a comment line every
``KEEPALIVE`` seconds lets the server notice a closed tab.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, Callable

import redis
from flask import Response, stream_with_context

KEEPALIVE = 15.0
RETRY_MS = 1000


def lifetime() -> float:
    """How long one stream lasts: the service's long-poll cap, within 5 to 60 seconds."""
    from web_service.state import current

    return max(5.0, min(60.0, current().settings.max_wait))


def event(name: str, data: Any) -> str:
    """One SSE message (JSON data on one line: no newline can break the framing)."""
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


@dataclass(frozen=True)
class Wake:
    """What woke a stream: the channels (or patterns' channels) and their messages."""

    messages: list[tuple[str, str]]
    timed_out: bool

    def channels(self) -> set[str]:
        return {c for c, _ in self.messages}

    def data_on(self, channel: str) -> list[str]:
        return [d for c, d in self.messages if c == channel]


class Listener:
    """A pub/sub subscription a stream blocks on."""

    def __init__(self, r: redis.Redis, channels: Iterable[str] = (), patterns: Iterable[str] = ()):
        self.pubsub = r.pubsub(ignore_subscribe_messages=True)
        self.channels: set[str] = set()
        self.follow(channels)
        if patterns:
            self.pubsub.psubscribe(*patterns)

    def follow(self, channels: Iterable[str]) -> None:
        """Subscribe to ``channels`` on top of the current ones."""
        new = set(channels) - self.channels
        if new:
            self.pubsub.subscribe(*sorted(new))
            self.channels |= new

    def unfollow(self, channels: Iterable[str]) -> None:
        gone = set(channels) & self.channels
        if gone:
            self.pubsub.unsubscribe(*sorted(gone))
            self.channels -= gone

    def wait(self, timeout: float, gather: float = 0.0) -> Wake:
        """Block until a message arrives (or ``timeout``), then keep taking messages for up to
        ``gather`` seconds more so that a burst becomes one update."""
        messages: list[tuple[str, str]] = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return Wake(messages, not messages)
            msg = self.pubsub.get_message(timeout=left)
            if msg is None or msg.get("type") not in ("message", "pmessage"):
                continue  # a subscribe confirmation, or the timeout
            messages.append((msg["channel"].decode(), msg["data"].decode()))
            if len(messages) == 1:
                deadline = time.monotonic() + gather

    def close(self) -> None:
        self.pubsub.close()


def stream(listener: Listener, snapshot: Callable[[], Iterator[str]], on_wake: Callable[[Wake], Iterator[str]],
           lifetime: float, min_interval: float = 0.5) -> Response:
    """An event stream: ``snapshot()`` first, then ``on_wake(wake)`` per wake-up, until
    ``lifetime`` passes. The stream holds a long-poll place of its user (429 / 503 past the
    caps of :mod:`web_service.waits`, before anything is sent); the place and the listener are
    given back when the stream ends or the client goes."""
    from flask import g

    from web_service.state import current

    held = ExitStack()
    try:
        held.enter_context(current().waits.admit(g.identity.user_id, lifetime))
    except BaseException:
        listener.close()
        raise
    held.callback(listener.close)

    def generate() -> Iterator[str]:
        try:
            yield f"retry: {RETRY_MS}\n\n"
            yield from snapshot()
            end = time.monotonic() + lifetime
            while (left := end - time.monotonic()) > 0:
                wake = listener.wait(min(KEEPALIVE, left), gather=min_interval)
                if wake.timed_out:
                    yield ": keepalive\n\n"
                    continue
                yield from on_wake(wake)
        finally:
            held.close()

    resp = Response(stream_with_context(generate()), mimetype="text/event-stream")
    resp.headers["X-Accel-Buffering"] = "no"  # proxies (nginx) must pass events at once
    resp.call_on_close(held.close)  # also when the stream is closed before it started
    return resp


__all__ = ["Listener", "Wake", "event", "lifetime", "stream"]
