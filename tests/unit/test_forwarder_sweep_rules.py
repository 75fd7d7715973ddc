"""When a survivor sweeps a dead forwarder's leftover endpoints, and which: pure decisions, no
Redis (the script applying them against real Redis: tests/integration/test_forwarder_sweep.py)."""

from __future__ import annotations

from web_service.forwarder_sweep import sweeps_due, to_sweep

A, B, C = "tcp://a:1", "tcp://b:1", "tcp://c:1"


def test_a_forwarder_seen_dead_is_swept_only_once_the_grace_has_passed():
    assert sweeps_due({A: 100.0}, 109.9, 10.0, C, [C]) == []
    assert sweeps_due({A: 100.0}, 110.0, 10.0, C, [C]) == [A]


def test_each_dead_forwarder_counts_its_grace_from_when_it_was_seen_dead():
    assert sweeps_due({A: 100.0, B: 105.0}, 112.0, 10.0, C, [C]) == [A]
    assert sweeps_due({A: 100.0, B: 105.0}, 115.0, 10.0, C, [C]) == [A, B]


def test_a_forwarder_alive_again_is_not_swept():
    assert sweeps_due({A: 100.0}, 200.0, 10.0, C, [A, C]) == []


def test_a_forwarder_never_sweeps_itself():
    # Its own key lapsed while its loop was busy: it is back, and its endpoints are its own.
    assert sweeps_due({C: 100.0}, 200.0, 10.0, C, []) == []


def test_an_endpoint_still_owned_by_the_dead_forwarder_is_swept():
    assert to_sweep(A, A, dead_alive=False)


def test_an_endpoint_that_registered_anywhere_since_is_left_to_its_new_forwarder():
    assert not to_sweep(B, A, dead_alive=False)  # registered with a survivor: its registration settles its tasks
    assert not to_sweep(None, A, dead_alive=False)  # released (lost and settled) already


def test_nothing_is_swept_from_a_forwarder_alive_again():
    assert not to_sweep(A, A, dead_alive=True)
