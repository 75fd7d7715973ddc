"""REST bodies decoded into their Structs: refusals name the field the client wrote (pure)."""

from __future__ import annotations

import msgspec
import pytest

from fnserve.errors import BadRequest
from web_service.rest_bodies.decoding import decode
from web_service.rest_bodies.requests import RuntimeRegistration, Sharing, TaskRequest, TaskSubmission
from web_service.store.record import TaskSpec


def refusal(body, type_, prefix="") -> BadRequest:
    with pytest.raises(BadRequest) as info:
        decode(body, type_, prefix)
    assert info.value.code == "invalid_request"
    return info.value


@pytest.mark.parametrize("body, field, words", [
    ({"endpoint_id": "e"}, "tasks[2].function_id", "is required"),
    ({"function_id": 3, "endpoint_id": "e"}, "tasks[2].function_id", "must be a string, not int"),
    ({"function_id": "f" * 65, "endpoint_id": "e"}, "tasks[2].function_id", "at most 64 characters"),
    ({"function_id": "f", "endpoint_id": "e", "walltime": 0}, "tasks[2].walltime", "a number > 0"),
    ({"function_id": "f", "endpoint_id": "e", "walltime": True}, "tasks[2].walltime", "must be a number, not bool"),
    ({"function_id": "f", "endpoint_id": "e", "max_retries": 1.5}, "tasks[2].max_retries", "an integer"),
    ({"function_id": "f", "endpoint_id": "e", "args": None}, "tasks[2].args", "a list"),
    ("not an object", "tasks[2]", "an object"),
])
def test_a_bad_task_names_its_field_under_the_batch_prefix(body, field, words):
    err = refusal(body, TaskRequest, "tasks[2]")
    assert err.details["field"] == field and err.message.startswith(field) and words in err.message, err.message


def test_an_enum_refusal_lists_the_allowed_values():
    err = refusal({"function_id": "f", "endpoint_id": "e", "result_format": "xml"}, TaskRequest)
    assert err.details == {"field": "result_format", "allowed": ["json", "python"]}
    err = refusal({"name": "r", "type": "lxc", "image": "i"}, RuntimeRegistration)
    assert err.details["field"] == "type" and "podman" in err.message and "lxc" not in err.details["allowed"]


def test_list_items_and_the_body_itself_are_named():
    assert refusal({"users": ["a", ""]}, Sharing).details["field"] == "users[1]"
    assert refusal([], Sharing).details["field"] == "(body)"
    assert refusal({"tasks": []}, TaskSubmission).details["field"] == "tasks"


def test_good_bodies_decode_with_their_defaults():
    sub = decode({"tasks": [{"anything": 1}]}, TaskSubmission)
    assert sub.tasks == [{"anything": 1}] and sub.wait == 0 and sub.atomic is False
    req = decode({"function_id": "f", "endpoint_id": "e", "args": [1]}, TaskRequest)
    assert req.args == [1] and req.kwargs is msgspec.UNSET and req.walltime is None


def test_every_option_a_stored_task_has_can_be_sent_over_rest():
    # TaskSpec is the task as the service keeps it; TaskRequest its REST form. Only the result
    # strategy is spelt differently (result_format), and the arguments (payload or args/kwargs).
    spec = {f.name for f in msgspec.structs.fields(TaskSpec)} - {"result_strategy"}
    assert spec <= {f.name for f in msgspec.structs.fields(TaskRequest)}
