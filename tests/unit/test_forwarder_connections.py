"""The forwarder's connection bookkeeping, without sockets."""

from web_service.forwarder import Connections


def test_silent_endpoint_expires_after_threshold():
    c = Connections(heartbeat_threshold=10)
    c.register("ep1", b"id1", now=100)
    c.register("ep2", b"id2", now=105)
    assert c.expired(109) == []
    assert c.expired(111) == ["ep1"]
    c.seen(b"id1", now=111)
    assert c.expired(112) == []


def test_reregistering_endpoint_replaces_old_identity():
    c = Connections(heartbeat_threshold=10)
    c.register("ep1", b"old", now=1)
    old = c.register("ep1", b"new", now=2)
    assert old is not None and old.identity == b"old"
    assert c.seen(b"old", now=3) is None
    assert c.by_endpoint["ep1"].identity == b"new"


def test_expiry_check_time_follows_the_oldest_connection():
    c = Connections(heartbeat_threshold=10)
    assert c.next_deadline(0) == 10
    c.register("ep1", b"a", now=100)
    c.register("ep2", b"b", now=103)
    assert 110 <= c.next_deadline(105) < 110.1
    c.seen(b"a", now=106)  # heard from: its deadline moves on, the other one is now first
    assert 113 <= c.next_deadline(106) < 113.1
    assert c.expired(113.5) == ["ep2"]
