"""The Executor's decisions, without sockets: when batches go out, and matching completions."""

from __future__ import annotations

import pytest

from fnserve import serialize
from fnserve.batching import BatchPolicy, Outstanding, completions_wanted


def test_a_lone_task_goes_at_once_and_a_burst_goes_in_full_batches():
    policy = BatchPolicy(batch_size=100)
    assert policy.decide(0, 0.0) is None
    assert policy.decide(1, 0.0) == 1
    assert policy.decide(250, 0.0) == 100
    assert policy.decide(99, 0.0) == 99


def test_max_delay_waits_for_company_until_the_oldest_has_waited_enough():
    policy = BatchPolicy(batch_size=100, max_delay=0.010)
    assert policy.decide(3, 0.004) == pytest.approx(0.006)
    assert policy.decide(3, 0.010) == 3
    assert policy.decide(100, 0.0) == 100  # full: no reason to wait
    assert policy.decide(3, 0.0, closing=True) == 3  # shutdown flushes


def test_policy_refuses_nonsense():
    with pytest.raises(ValueError):
        BatchPolicy(batch_size=0)
    with pytest.raises(ValueError):
        BatchPolicy(max_delay=-1)


def test_completions_resolve_their_futures_once_and_ignore_other_clients_tasks():
    out: Outstanding[str] = Outstanding()
    out.posting()
    assert out.sent([("t1", "f1"), ("t2", "f2")]) == []
    assert out.completed([("t1", "r1"), ("elsewhere", "x")]) == [("f1", "r1")]
    assert out.completed([("t1", "again"), ("t2", "r2")]) == [("f2", "r2")]
    assert len(out) == 0


def test_a_completion_read_before_its_submit_returns_is_matched_when_it_does():
    out: Outstanding[str] = Outstanding()
    out.posting()
    assert out.posting_now
    assert out.completed([("t1", "r1"), ("foreign", "x")]) == []
    assert out.sent([("t1", "f1")]) == [("f1", "r1")]
    assert not out.posting_now
    out.posting()
    assert out.sent([("foreign", "f9")]) == []  # the stale early completion was dropped
    assert out.ids() == ["foreign"]


def test_forget_stops_waiting_for_a_task():
    out: Outstanding[str] = Outstanding()
    out.posting()
    out.sent([("t1", "f1")])
    assert out.forget("t1") == "f1"
    assert out.completed([("t1", "r1")]) == []


class Point:
    def __init__(self, x):
        self.x = x


@pytest.mark.parametrize("value", [None, 1, 2.5, "s", b"b", [1, (2, 3)], {"a": [1, {"b": None}]}])
def test_plain_arguments_take_the_fast_path_and_round_trip(value):
    buf = serialize.serialize_args((value,), {"k": value})
    assert serialize.deserialize_args(buf) == ([value], {"k": value})


def test_other_objects_still_go_through_dill():
    buf = serialize.serialize_args((Point(3), lambda y: y + 1))
    (point, fn), _ = serialize.deserialize_args(buf)
    assert point.x == 3 and fn(1) == 2


def test_results_are_gathered_only_when_many_tasks_are_outstanding():
    assert completions_wanted(1, 0.05) == (1, 0.0)
    assert completions_wanted(63, 0.05) == (1, 0.0)
    assert completions_wanted(1000, 0.05) == (250, 0.05)
    assert completions_wanted(100_000, 0.05) == (2000, 0.05)
    assert completions_wanted(1000, 0.0) == (1, 0.0)
