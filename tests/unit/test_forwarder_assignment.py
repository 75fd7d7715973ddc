"""Which forwarder serves which endpoint (rendezvous hashing) and where a site manager goes
next: pure decisions, no Redis, no sockets."""

from __future__ import annotations

from collections import Counter

from fnserve.forwarders import next_forwarder
from web_service.forwarder_pool import assign, heartbeat_ttl

A, B, C, D = (f"tcp://f{i}:55001" for i in range(4))
ENDPOINTS = [f"ep-{i}" for i in range(2000)]


def test_no_forwarder_assigns_nothing():
    assert assign("ep-1", []) is None


def test_one_forwarder_serves_every_endpoint():
    assert {assign(e, [A]) for e in ENDPOINTS} == {A}


def test_assignment_does_not_depend_on_the_order_the_live_set_is_read_in():
    assert all(assign(e, [A, B, C]) == assign(e, [C, A, B]) == assign(e, {B, C, A}) for e in ENDPOINTS)


def test_endpoints_spread_evenly_over_the_forwarders():
    counts = Counter(assign(e, [A, B, C, D]) for e in ENDPOINTS)
    assert set(counts) == {A, B, C, D}
    assert all(400 <= n <= 600 for n in counts.values()), counts  # 500 each, give or take


def test_a_dead_forwarders_endpoints_move_and_no_other_endpoint_does():
    before = {e: assign(e, [A, B, C]) for e in ENDPOINTS}
    after = {e: assign(e, [A, C]) for e in ENDPOINTS}
    moved = {e for e in ENDPOINTS if before[e] != after[e]}
    assert moved == {e for e in ENDPOINTS if before[e] == B}
    # ... and spread over both survivors, not piled on one.
    assert Counter(after[e] for e in moved).keys() == {A, C}


def test_a_new_forwarder_takes_only_endpoints_it_outranks_about_a_share_of_them():
    before = {e: assign(e, [A, B]) for e in ENDPOINTS}
    after = {e: assign(e, [A, B, C]) for e in ENDPOINTS}
    moved = [e for e in ENDPOINTS if before[e] != after[e]]
    assert all(after[e] == C for e in moved)
    assert 500 <= len(moved) <= 830  # a third of 2,000, give or take


def test_a_silent_forwarder_is_followed_by_the_next_known_one_round_robin():
    assert next_forwarder([A, B, C], A) == B
    assert next_forwarder([A, B, C], C) == A
    assert next_forwarder([A], A) == A  # nothing else known: retry it
    assert next_forwarder([], A) == A
    assert next_forwarder([B, C], A) == B  # not in the list (the configured one): the first


def test_a_dead_forwarder_leaves_the_live_set_before_its_endpoints_give_up_on_it():
    assert heartbeat_ttl(10.0) < 10.0
    assert heartbeat_ttl(2.0) == 1.0


def test_sentinel_addresses_are_read_from_one_setting():
    from web_service.redis_client import sentinel_hosts

    assert sentinel_hosts("a:26379, b:26380,") == [("a", 26379), ("b", 26380)]
    assert sentinel_hosts("[::1]:26379") == [("::1", 26379)]


def test_a_sentinel_address_without_a_port_is_refused_with_the_setting_named():
    import pytest

    from web_service.redis_client import sentinel_hosts

    with pytest.raises(ValueError, match="FNSERVE_REDIS_SENTINELS"):
        sentinel_hosts("redis-sentinel")


def test_the_pool_counts_a_new_primary_named_to_a_connecting_connection():
    """A failover may reach a process only as a silent reconnect (redis-py reconnects a pooled
    connection closed while idle): the pool its connections ask for the primary counts it."""
    from web_service.redis_client import PrimaryTrackingPool, primary_changes

    named = [("10.0.0.1", 6379), ("10.0.0.1", 6379), ("10.0.0.2", 6379)]

    class Sentinels:  # stands in for redis.sentinel.Sentinel: the primary each lookup names
        def discover_master(self, service: str) -> tuple[str, int]:
            return named.pop(0)

    pool = PrimaryTrackingPool("fnserve", Sentinels())
    import redis

    client = redis.Redis(connection_pool=pool)
    conn = pool.make_connection()  # what a (re)connect asks: redis-py's own connection class
    assert conn.connection_pool.get_master_address() == ("10.0.0.1", 6379)
    assert conn.connection_pool.get_master_address() == ("10.0.0.1", 6379)
    assert primary_changes(client) == 0
    assert conn.connection_pool.get_master_address() == ("10.0.0.2", 6379)
    assert primary_changes(client) == 1
    assert primary_changes(redis.Redis()) == 0  # no Sentinel: no failover to see
