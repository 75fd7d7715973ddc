"""The forwarder's wake relay: Redis 'wake' messages (endpoints with new work, cancels,
revocations) into the loop's inproc socket, surviving Redis restarts and failovers; and what a
batch of them asks the loop to do (:func:`sort_wakeups`, pure)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

import redis
import zmq

from web_service.task_store import CANCEL_WAKE, REVOKE_WAKE, WAKE_CHANNEL, WATCH_WAKE

log = logging.getLogger("web_service.forwarder")


@dataclass
class Wakeups:
    """What a batch of wake words asks for: endpoints to dispatch to, to relay cancels to, to
    revoke (deleted), whose file-trigger watch lists changed. ``"*"`` among ``endpoints``: Redis
    came back, anything may have happened meanwhile."""

    endpoints: set[str] = field(default_factory=set)
    cancels: set[str] = field(default_factory=set)
    revoked: set[str] = field(default_factory=set)
    watch_changed: set[str] = field(default_factory=set)


def sort_wakeups(words: list[str]) -> Wakeups:
    """Sort wake words by what they ask (pure). A cancel also dispatches (room was freed).

    >>> w = sort_wakeups(["e1", CANCEL_WAKE + "e2", REVOKE_WAKE + "e3", WATCH_WAKE + "e4"])
    >>> sorted(w.endpoints), sorted(w.cancels), sorted(w.revoked), sorted(w.watch_changed)
    (['e1', 'e2'], ['e2'], ['e3'], ['e4'])
    """
    out = Wakeups()
    for word in words:
        if word.startswith(REVOKE_WAKE):
            out.revoked.add(word[len(REVOKE_WAKE):])
            continue
        if word.startswith(WATCH_WAKE):
            out.watch_changed.add(word[len(WATCH_WAKE):])
            continue
        if word.startswith(CANCEL_WAKE):
            word = word[len(CANCEL_WAKE):]
            out.cancels.add(word)
        out.endpoints.add(word)
    return out


def read_wakeups(wake: zmq.Socket) -> list[str]:
    """Every wake word already relayed into the loop's socket (nothing waits for more)."""
    words = []
    while True:
        try:
            words.append(wake.recv(zmq.NOBLOCK).decode())
        except zmq.Again:
            return words


def relay_wakeups(ctx: zmq.Context, wake_addr: str, r: redis.Redis, stop: threading.Event) -> None:
    """Relay Redis 'wake' messages (endpoint ids) into the loop's inproc socket."""
    out = ctx.socket(zmq.PAIR)
    out.connect(wake_addr)
    pubsub = r.pubsub(ignore_subscribe_messages=True)
    try:
        pubsub.subscribe(WAKE_CHANNEL)
        while not stop.is_set():
            try:
                if not pubsub.subscribed:
                    # A resubscribe below failed (Redis still down): an unsubscribed pubsub
                    # never raises, it just waits, so no wake would ever come again.
                    pubsub.subscribe(WAKE_CHANNEL)
                    out.send(b"*")
                msg = pubsub.get_message(timeout=1.0)
            except redis.RedisError as exc:  # Redis restarting: keep trying, the loop re-drains on connect
                log.warning("wake channel: %s; retrying", exc)
                stop.wait(0.5)
                try:
                    pubsub.close()
                    pubsub = r.pubsub(ignore_subscribe_messages=True)
                    pubsub.subscribe(WAKE_CHANNEL)
                    out.send(b"*")  # re-check every connected endpoint
                except redis.RedisError as again:
                    log.debug("wake channel: still down: %s", type(again).__name__)
                continue
            if msg and msg.get("type") == "message":
                out.send(msg["data"])
    except zmq.ContextTerminated:
        pass  # the forwarder stopped while a wake was on its way: nobody is left to wake
    finally:
        pubsub.close()
        out.close(0)
