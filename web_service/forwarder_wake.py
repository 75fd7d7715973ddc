"""The forwarder's wake relay: Redis 'wake' messages (endpoints with new work, cancels,
revocations) into the loop's inproc socket, surviving Redis restarts and failovers."""

from __future__ import annotations

import logging
import threading

import redis
import zmq

from web_service.task_store import WAKE_CHANNEL

log = logging.getLogger("web_service.forwarder")


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
