"""The forwarder's dispatch backlog: endpoints owed a dispatch, each once, oldest first."""

from __future__ import annotations

from web_service.forwarder_backlog import DispatchBacklog


def test_endpoints_are_served_oldest_first_in_chunks_and_a_woken_one_keeps_its_place():
    b = DispatchBacklog()
    for e in ["a", "b", "c", "d", "e"]:
        b.add(e)
    b.add("a")  # woken again while waiting: once, in its first place
    assert len(b) == 5
    assert b.take(2) == ["a", "b"]
    b.add("a")  # sent a full batch: back in line, behind the others
    assert b.take(10) == ["c", "d", "e", "a"]
    assert not b and b.take(3) == []


def test_a_discarded_endpoint_is_not_served():
    b = DispatchBacklog()
    b.add("a")
    b.add("b")
    b.discard("a")
    b.discard("x")
    assert "a" not in b and b.take() == ["b"]
