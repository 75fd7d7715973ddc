"""The whole system as a user meets it: `fnserve up`, the CLI, the SDK and plain curl.

Real processes throughout: redis-server, the web service (gunicorn), the ZMQ forwarder, the
site manager with Parsl's HighThroughputExecutor on LocalProvider, and node managers in its
workers. Runs once with the registry on SQLite (the embedded default) and once on PostgreSQL.
"""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest
from stack_support import running_stack

from fnserve.errors import RemoteExecutionError


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stack(request, tmp_path_factory):
    home = tmp_path_factory.mktemp("fnserve-home")
    database_url = None
    if request.param == "postgresql":
        admin = request.getfixturevalue("postgres_admin")
        import sqlalchemy as sa

        name = f"fnserve_e2e_{uuid.uuid4().hex[:10]}"
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        database_url = str(admin.url.set(database=name).render_as_string(hide_password=False))
    with running_stack(home, database_url) as stack:
        yield stack


def test_cli_registers_and_runs_a_function(stack):
    fid = stack.cli("register", "examples/functions.py:mean_and_std").stdout.strip()
    out = stack.cli("run", fid, "--endpoint", stack.endpoint_id, "[1, 2, 3, 4]")
    assert json.loads(out.stdout) == {"mean": 2.5, "std": pytest.approx(1.118033988749895)}
    listed = stack.cli("functions").stdout
    assert fid in listed and "mean_and_std" in listed
    assert "connected" in stack.cli("endpoints").stdout


def test_function_registered_with_cli_runs_through_sdk_and_curl(stack):
    fid = stack.cli("register", "examples/functions.py:integrate").stdout.strip()
    fc = stack.client()
    assert fc.get_result(fc.run(fid, stack.endpoint_id, 0.0, 3.141592653589793), timeout=60) == pytest.approx(2.0, abs=1e-6)

    auth = ["-H", f"Authorization: Bearer {stack.token}"]
    body = json.dumps({"tasks": [{"function_id": fid, "endpoint_id": stack.endpoint_id, "args": [0, 1], "kwargs": {"n": 10}}]})
    submitted = subprocess.run(["curl", "-sS", "-f", *auth, "-H", "Content-Type: application/json", "-d", body, f"{stack.url}/v1/tasks"],
                               capture_output=True, text=True, check=True)
    task_id = json.loads(submitted.stdout)["task_ids"][0]
    got = subprocess.run(["curl", "-sS", "-f", *auth, f"{stack.url}/v1/tasks/{task_id}?wait=30"], capture_output=True, text=True, check=True)
    task = json.loads(got.stdout)
    assert task["state"] == "success"
    assert task["result_json"] == pytest.approx(0.4596976941, abs=1e-3)  # 1 - cos(1), midpoint rule n=10


def test_remote_exception_is_reraised_with_remote_traceback(stack):
    fid = stack.cli("register", "examples/functions.py:fails").stdout.strip()
    fc = stack.client()
    with pytest.raises(RemoteExecutionError) as info:
        fc.get_result(fc.run(fid, stack.endpoint_id, "boom"), timeout=60)
    err = info.value
    assert err.remote_type.endswith("RuntimeError") and err.remote_message == "boom"
    assert "raise RuntimeError(message)" in err.remote_traceback
    cli = stack.cli("run", fid, "--endpoint", stack.endpoint_id, '"from the CLI"', check=False)
    # One line by default; the remote traceback on request.
    assert cli.returncode == 1 and cli.stderr.startswith("remote error: RuntimeError: from the CLI") and cli.stderr.count("\n") == 1
    cli = stack.cli("run", fid, "--endpoint", stack.endpoint_id, '"from the CLI"', "--traceback", check=False)
    assert cli.returncode == 1 and "from the CLI" in cli.stderr and "Traceback" in cli.stderr


def test_sdk_batch_submission_and_results(stack):
    fc = stack.client()

    def cube(x):
        print("cubing", x)
        return x ** 3

    fid = fc.register_function(cube)
    batch = fc.create_batch()
    for x in range(20):
        batch.add(fid, stack.endpoint_id, args=(x,))
    ids = fc.batch_run(batch)
    results = fc.get_batch_result(ids, timeout=60)
    assert [results[i]["result"] for i in ids] == [x ** 3 for x in range(20)]
    task = fc.get_task(ids[3])
    assert task["stdout"] == "cubing 3\n"
    assert set(task["timestamps"]) >= {"submitted", "dispatched", "finished"}
    assert {"worker_started", "worker_finished"} <= set(task["timings"])
    status = stack.cli("status", ids[3]).stdout
    assert '"state": "success"' in status


def test_tasks_submitted_while_endpoint_is_down_run_when_it_starts(stack):
    fc = stack.client()

    def double(x):
        return 2 * x

    fid = fc.register_function(double)
    stack.cli("endpoint", "stop", "local")
    assert fc.get_endpoint_status(stack.endpoint_id)["connected"] is False
    ids = [fc.run(fid, stack.endpoint_id, x) for x in range(5)]
    assert {fc.get_task(i)["state"] for i in ids} == {"waiting-for-endpoint"}
    assert fc.get_endpoint_status(stack.endpoint_id)["tasks_waiting"] == 5
    stack.cli("endpoint", "start", "local")
    results = fc.get_batch_result(ids, timeout=120)
    assert [results[i]["result"] for i in ids] == [0, 2, 4, 6, 8]
    assert fc.get_endpoint_status(stack.endpoint_id)["connected"] is True


def test_call_returns_the_value_in_one_request_and_reraises(stack):
    fc = stack.client()

    def divide(a, b):
        return a / b

    fid = fc.register_function(divide)
    assert fc.call(fid, stack.endpoint_id, 1, 4) == 0.25
    with pytest.raises(RemoteExecutionError) as info:
        fc.call(fid, stack.endpoint_id, 1, 0)
    assert info.value.remote_type.endswith("ZeroDivisionError") and "return a / b" in info.value.remote_traceback


def test_a_warm_call_runs_four_redis_scripts(stack):
    """The Redis work of a warm ``Client.call`` (docs/performance.md, "The warm path, profiled"):
    admission, accept, claim and record, one script run each. The forwarder records a result
    and logs its usage in one run, and claims again after it only when tasks wait (it ran a
    sixth script, an empty claim, and a separate XADD per call before); a no-op ends before its
    start is reported, so no "running" script runs for it (a fifth before) and its record takes
    its start time from the result."""
    import redis

    from fnserve._redis_server import redis_auth

    r = redis.Redis.from_url(redis_auth(stack.home / "service").socket_url())
    fc = stack.client()

    def noop():
        return None

    fid = fc.register_function(noop)
    for _ in range(3):
        fc.call(fid, stack.endpoint_id)
    r.config_resetstat()
    calls = 20
    for _ in range(calls):
        fc.call(fid, stack.endpoint_id)
    stats = r.info("commandstats")
    per_call = {k.removeprefix("cmdstat_"): v["calls"] / calls for k, v in stats.items()}
    assert per_call.get("evalsha", 0) <= 4.2, per_call  # 6.0, then 5.0 before
    assert per_call.get("get", 0) <= 1.2, per_call  # the forwarder's ownership check, once a dispatch: 2.0 before
    task_id = fc.run(fid, stack.endpoint_id)
    fc.get_result(task_id, timeout=30)
    stamps = fc.get_task(task_id)["timestamps"]
    assert stamps["dispatched"] <= stamps["running"] <= stamps["finished"], stamps  # it ran, and says when
