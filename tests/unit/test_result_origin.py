"""Who may report a task's result or live outputs: the rules the task store's scripts apply."""

from __future__ import annotations

import pytest

from web_service.result_origin import output_accepted, result_verdict


@pytest.mark.parametrize("state", ["dispatched", "running"])
def test_the_endpoint_holding_the_task_records_its_result(state):
    assert result_verdict(state, "ep-a", "ep-a", held=True, dispatched_before=True) == "record"


@pytest.mark.parametrize("state", ["waiting-for-endpoint", "dispatched", "running", "success"])
def test_another_endpoint_is_rejected_whatever_the_state(state):
    assert result_verdict(state, "ep-a", "ep-b", held=False, dispatched_before=True) == "reject"
    # Even if the id somehow sits in the reporter's in-flight set, the task is not its own.
    assert result_verdict(state, "ep-a", "ep-b", held=True, dispatched_before=True) == "reject"


def test_a_task_never_dispatched_and_an_unknown_id_are_rejected():
    assert result_verdict("waiting-for-endpoint", "ep-a", "ep-a", held=False, dispatched_before=False) == "reject"
    assert result_verdict(None, None, "ep-a", held=False, dispatched_before=False) == "reject"
    assert result_verdict(None, None, "ep-a", held=True, dispatched_before=True) == "reject"


def test_a_result_of_an_earlier_dispatch_to_the_same_endpoint_counts_after_a_requeue():
    # The endpoint lost its connection, the task waits again; the site manager replays its result.
    assert result_verdict("waiting-for-endpoint", "ep-a", "ep-a", held=False, dispatched_before=True) == "record"


@pytest.mark.parametrize("state", ["success", "failed", "cancelled"])
def test_a_finished_task_of_the_same_endpoint_is_a_duplicate(state):
    assert result_verdict(state, "ep-a", "ep-a", held=False, dispatched_before=True) == "duplicate"


def test_outputs_count_only_for_a_task_in_flight_on_the_reporter():
    assert output_accepted("ep-a", "ep-a", held=True)
    assert not output_accepted("ep-a", "ep-a", held=False)
    assert not output_accepted("ep-a", "ep-b", held=True)
    assert not output_accepted(None, "ep-b", held=False)


def test_a_late_output_of_a_task_just_finished_on_the_reporter_still_counts():
    assert output_accepted("ep-a", "ep-a", held=False, finished_ago=0.5, grace=2.0)
    assert not output_accepted("ep-a", "ep-a", held=False, finished_ago=30.0, grace=2.0)
    assert not output_accepted("ep-a", "ep-b", held=False, finished_ago=0.5, grace=2.0)
