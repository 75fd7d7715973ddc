"""Serializer policy against code smuggled in as data, on the embedded stack (real site manager,
real workers): arguments that are a pickle of ``os.system`` sent to an endpoint that runs only
allowed functions, or that only loads JSON arguments; and a result that is a pickle of
``os.system`` read by a client that accepts data-only results. Each would run a shell command
when loaded; a marker file counts how often one did.
"""

from __future__ import annotations

import pytest
import yaml
from stack_support import running_stack

from fnserve.client import Client
from fnserve.errors import SerializationError, TaskFailed

pytestmark = pytest.mark.integration

ECHO = "def echo(x):\n    return x\n"
# Returns an object whose unpickling runs a shell command in whoever loads the result.
HOSTILE_RESULT = '''
def hostile(marker):
    import os

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo loaded >> " + marker,))

    return Payload()
'''


class Smuggled:
    """An argument whose unpickling (in the worker, before the function runs) runs a command."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"echo argument-ran >> {self.marker}",))


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("serializers") / "home") as st:
        yield st


def test_an_endpoint_that_runs_only_allowed_functions_refuses_dill_arguments_at_submit(stack):
    fc = stack.client()
    fid = fc.register_source(ECHO, "echo")
    marker = stack.tmp / "restricted-marker"
    fc.set_allowed_functions(stack.endpoint_id, [fid])
    try:
        with pytest.raises(SerializationError) as refused:
            fc.submit(fid, stack.endpoint_id, [Smuggled(str(marker))])
        assert refused.value.code == "serializer_not_allowed" and refused.value.http_status == 400
        assert "'dill-data' is not allowed" in str(refused.value) and "json-data" in str(refused.value)
        assert "runs only allowed functions" in str(refused.value)
        # Plain JSON arguments still run.
        assert fc.get_result(fc.submit(fid, stack.endpoint_id, [{"a": [1, 2]}], serializer="json-data"), timeout=60) == {"a": [1, 2]}
        assert not marker.exists()
    finally:
        fc.set_allowed_functions(stack.endpoint_id, None)


def _fails_unloaded(fc, task_ids, marker) -> None:
    for task_id in task_ids:
        with pytest.raises(TaskFailed) as failed:
            fc.get_result(task_id, timeout=90)
        assert failed.value.code == "serializer_not_allowed", failed.value
        assert "'dill-data' is not allowed" in str(failed.value)
    assert not marker.exists(), marker.read_text()


def test_workers_refuse_code_arguments_queued_before_the_endpoint_was_restricted(stack):
    """Tasks queued while the endpoint was down, before its owner restricted it to allowed
    functions: dispatch marks them data-only and the worker loads nothing but the header."""
    fc = stack.client()
    fid = fc.register_source(ECHO, "echo")
    marker = stack.tmp / "queued-marker"
    stack.cli("endpoint", "stop", "local")
    queued = [fc.submit(fid, stack.endpoint_id, [Smuggled(str(marker))]) for _ in range(2)]
    fc.set_allowed_functions(stack.endpoint_id, [fid])
    try:
        stack.cli("endpoint", "start", "local")
        _fails_unloaded(fc, queued, marker)
    finally:
        fc.set_allowed_functions(stack.endpoint_id, None)


def test_an_endpoint_admits_only_the_serializers_its_admin_allows(stack):
    """``allowed_serializers`` in the endpoint config: workers refuse other strategies (tasks
    queued before it was set), and the service refuses them at submit once the endpoint said so."""
    fc = stack.client()
    fid = fc.register_source(ECHO, "echo")
    marker = stack.tmp / "config-marker"
    stack.cli("endpoint", "stop", "local")
    queued = [fc.submit(fid, stack.endpoint_id, [Smuggled(str(marker))])]
    config = stack.home / "endpoints/local/config.yaml"
    data = yaml.safe_load(config.read_text())
    data["allowed_serializers"] = ["dill-code", "source", "json-data"]
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    stack.cli("endpoint", "start", "local")
    _fails_unloaded(fc, queued, marker)
    with pytest.raises(SerializationError) as refused:
        fc.submit(fid, stack.endpoint_id, [Smuggled(str(marker))])
    assert refused.value.code == "serializer_not_allowed" and "allowed_serializers" in str(refused.value)
    assert fc.get_result(fc.submit(fid, stack.endpoint_id, [5], serializer="json-data"), timeout=60) == 5


def test_a_client_accepting_only_data_refuses_a_code_capable_result_unloaded(stack):
    owner = stack.client()
    fid = owner.register_source(HOSTILE_RESULT, "hostile")
    echo = owner.register_source(ECHO, "echo")
    marker = stack.tmp / "result-marker"
    careful = Client(stack.url, stack.token, allowed_result_serializers=["json-data"])
    task_id = careful.submit(fid, stack.endpoint_id, [str(marker)], serializer="json-data")
    with pytest.raises(SerializationError) as refused:
        careful.get_result(task_id, timeout=60)
    assert refused.value.code == "serializer_not_allowed" and "'dill-data' is not allowed" in str(refused.value)
    assert not marker.exists()
    # JSON results still come back (the client asks endpoints for JSON results).
    assert careful.get_result(careful.submit(echo, stack.endpoint_id, [[1, "two"]], serializer="json-data"), timeout=60) == [1, "two"]
