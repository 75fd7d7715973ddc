"""The queue of registrations a forwarder has not accepted yet (web_service/forwarder_registrations.py)."""

from __future__ import annotations

from fnserve import messages as m
from web_service.forwarder_registrations import RegistrationQueue


def _reg(endpoint_id: str) -> m.Register:
    return m.Register(endpoint_id=endpoint_id, secret="s")


def test_registrations_are_taken_oldest_first_and_a_reconnect_keeps_its_place_with_the_new_connection():
    q = RegistrationQueue()
    q.add(b"a1", _reg("a"), "")
    q.add(b"b1", _reg("b"), "")
    q.add(b"a2", _reg("a"), "")  # a's site manager gave up and reconnected: one entry, the newest connection
    assert len(q) == 2
    first = q.take()
    assert (first.identity, first.register.endpoint_id) == (b"a2", "a")
    assert q.take().identity == b"b1" and not q


def test_waiting_site_managers_are_told_at_once_then_once_per_period():
    q = RegistrationQueue()
    q.add(b"a1", _reg("a"), "")
    assert q.keepalive(100.0, 2.0) == [b"a1"]
    q.add(b"b1", _reg("b"), "")
    assert q.keepalive(101.0, 2.0) == [b"b1"]  # a was told a second ago
    assert q.keepalive(102.0, 2.0) == [b"a1"]
    q.add(b"a2", _reg("a"), "")  # a new connection has heard nothing yet
    assert q.keepalive(102.5, 2.0) == [b"a2"]


def test_a_connection_that_says_goodbye_before_it_is_accepted_is_forgotten():
    q = RegistrationQueue()
    q.add(b"a1", _reg("a"), "")
    assert q.discard(b"a1") and not q
    assert not q.discard(b"zz")
