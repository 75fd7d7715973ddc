"""fnserve.Executor against the real embedded stack (`fnserve up`: Redis, gunicorn, forwarder,
site manager on Parsl HTEX): futures, map, remote exceptions, cancel, shutdown, automatic
registration, batching, and results pushed over the completions long-poll."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
import warnings
from collections import Counter
from pathlib import Path

import pytest
from executor_support import counting_client
from stack_support import running_stack

from fnserve.errors import NotFound, PayloadTooLarge, RemoteExecutionError, SerializationError
from fnserve.executor import Executor
from fnserve.remote_errors import RemoteTraceback
from fnserve.serialize import SourceFallbackWarning


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("fnserve-home")) as stack:
        yield stack


@pytest.fixture
def client(stack):
    return counting_client(stack)


def test_futures_complete_and_map_keeps_order(stack, client):
    def square(x):
        return x * x

    with Executor(stack.endpoint_id, client) as ex:
        fut = ex.submit(square, 12)
        assert isinstance(fut, concurrent.futures.Future)
        assert fut.result(timeout=60) == 144
        assert list(ex.map(square, range(40), timeout=120)) == [x * x for x in range(40)]
        task = fut.task
        assert task["state"] == "success" and fut.task_id == task["task_id"]
        # Timestamps from submit to delivery, and the hops in between.
        assert set(task["timestamps"]) >= {"submitted", "dispatched", "finished", "delivered"}
        assert task["timestamps"]["submitted"] <= task["timestamps"]["finished"] <= task["timestamps"]["delivered"]
        assert {"forwarder_dispatched", "worker_started", "worker_finished"} <= set(task["timings"])


def test_remote_exception_is_raised_with_the_remote_traceback(stack, client):
    def fails(message):
        raise KeyError(message)

    with Executor(stack.endpoint_id, client) as ex:
        fut = ex.submit(fails, "missing")
        with pytest.raises(RemoteExecutionError) as info:
            fut.result(timeout=60)
        assert isinstance(fut.exception(), RemoteExecutionError)
    err = info.value
    assert err.remote_type.endswith("KeyError") and "missing" in err.remote_message
    assert "raise KeyError(message)" in err.remote_traceback and err.task_id == fut.task_id


def test_functions_are_registered_once_per_content(stack, client):
    def triple(x):
        return 3 * x

    def quadruple(x):
        return 4 * x

    before = len(client.list_functions())
    with Executor(stack.endpoint_id, client) as ex:
        assert [f.result(timeout=60) for f in [ex.submit(triple, i) for i in range(20)]] == [3 * i for i in range(20)]
    with Executor(stack.endpoint_id, client) as ex:  # a second executor in the same process
        assert ex.submit(triple, 5).result(timeout=60) == 15
        assert ex.submit(quadruple, 5).result(timeout=60) == 20
    assert len(client.list_functions()) == before + 2
    assert client.transport.counts[("POST", "/v1/functions")] == 2


def test_submissions_are_batched_and_results_pushed_without_per_task_requests(stack, client):
    def inc(x):
        return x + 1

    n = 600
    with Executor(stack.endpoint_id, client, batch_size=250) as ex:
        futures = [ex.submit(inc, i) for i in range(n)]
        assert [f.result(timeout=120) for f in futures] == [i + 1 for i in range(n)]
    counts = client.transport.counts
    submits = counts[("POST", "/v1/tasks")]
    assert 3 <= submits < 60  # at most 250 per request; far fewer requests than tasks
    # The service's view: tasks accepted by one request share one submit timestamp.
    tasks = client.wait([f.task_id for f in futures[:500]])  # one read of the records (max batch)
    per_request = Counter(t["timestamps"]["submitted"] for t in tasks)
    assert max(per_request.values()) <= 250 and sum(per_request.values()) == 500
    assert len({f.task["timestamps"]["submitted"] for f in futures}) == submits
    # Results came through the completions long-poll only: nothing asked about a task by id.
    assert counts[("GET", "/v1/tasks/{id}")] == 0 and counts[("POST", "/v1/tasks/results")] == 1  # the check above
    assert counts[("GET", "/v1/tasks/completions")] < n


def test_cancel_a_queued_task_in_the_service_and_not_a_finished_one(stack, client):
    def nap(seconds):
        import time

        time.sleep(seconds)
        return seconds

    ex = Executor(stack.endpoint_id, client)
    blockers = [ex.submit(nap, 3) for _ in range(2)]  # both workers busy: the next one waits
    queued = ex.submit(nap, 0)
    task_id = queued.submitted(timeout=60)
    assert task_id is not None and not queued.running()
    assert queued.cancel() is True
    assert queued.cancelled() and queued.done()
    assert client.wait([task_id], timeout=30)[0]["state"] == "cancelled"  # cancelled in the service too
    done = ex.submit(nap, 0)
    assert done.result(timeout=60) == 0
    assert done.cancel() is False  # finished: nothing to cancel
    concurrent.futures.wait([queued, done], timeout=5)  # a cancelled future counts as done
    ex.shutdown(wait=True)
    assert [b.result() for b in blockers] == [3, 3]


def test_shutdown_waits_for_every_task_then_refuses_new_ones(stack, client):
    def echo(x):
        return x

    ex = Executor(stack.endpoint_id, client)
    futures = [ex.submit(echo, i) for i in range(30)]
    ex.shutdown(wait=True)
    assert all(f.done() for f in futures) and [f.result() for f in futures] == list(range(30))
    with pytest.raises(RuntimeError):
        ex.submit(echo, 1)
    assert not [t for t in threading.enumerate() if t.name.startswith("fnserve-executor")]


def test_shutdown_with_cancel_futures_cancels_what_has_not_run(stack, client):
    def nap(seconds):
        import time

        time.sleep(seconds)

    ex = Executor(stack.endpoint_id, client)
    futures = [ex.submit(nap, 2) for _ in range(6)]  # 2 workers: most are still waiting
    ex.shutdown(wait=True, cancel_futures=True)
    assert all(f.done() for f in futures)
    assert sum(f.cancelled() for f in futures) >= 3


def test_usable_from_a_running_event_loop_like_jupyter(stack, client):
    def add(a, b):
        return a + b

    async def notebook_cell():
        with Executor(stack.endpoint_id, client) as ex:
            value = await asyncio.wrap_future(ex.submit(add, 2, b=3))
            return value, ex.submit(add, 1, 1).result(timeout=60)  # blocking in the loop works too

    assert asyncio.run(notebook_cell()) == (5, 2)


def test_progress_bar_counts_finished_tasks(stack, client, capsys):
    def one(_):
        return 1

    with Executor(stack.endpoint_id, client, progress=True) as ex:
        assert sum(ex.map(one, range(25))) == 25
    err = capsys.readouterr().err
    assert "fnserve" in err and "25/25" in err


# -- batches: a bad task fails alone ----------------------------------------------------------------

MIB = 1024 * 1024


def test_one_oversized_argument_fails_only_its_own_future(stack, client, monkeypatch):
    def size(data):
        return len(data)

    monkeypatch.setattr(client, "ref_threshold", None)  # arguments inline: the 10 MiB limit holds

    with Executor(stack.endpoint_id, client) as ex:
        futures = [ex.submit(size, b"x" * (11 * MIB if i == 20 else i)) for i in range(41)]
        concurrent.futures.wait(futures, timeout=120)
    assert isinstance(futures[20].exception(), PayloadTooLarge)
    assert "max_payload_bytes" in str(futures[20].exception())
    assert [f.result() for i, f in enumerate(futures) if i != 20] == [i for i in range(41) if i != 20]


def test_arguments_each_under_the_limit_are_split_into_requests_under_the_request_limit(stack, client, monkeypatch):
    def size(data):
        return len(data)

    monkeypatch.setattr(client, "ref_threshold", None)  # inline, so that requests grow large

    with Executor(stack.endpoint_id, client) as ex:
        futures = [ex.submit(size, bytes([i]) * (9 * MIB)) for i in range(8)]  # 8 x 12 MiB of base64 > 64 MiB
        assert [f.result(timeout=180) for f in futures] == [9 * MIB] * 8
    assert client.transport.counts[("POST", "/v1/tasks")] >= 2


@pytest.mark.parametrize("bad", ["endpoint", "size"])
def test_leaving_the_with_block_after_a_refused_submit_does_not_wait_for_the_long_poll(stack, client, bad, monkeypatch):
    def size(data):
        return len(data)

    monkeypatch.setattr(client, "ref_threshold", None)  # an 11 MiB argument inline is refused

    endpoint = "00000000-0000-4000-8000-000000000000" if bad == "endpoint" else stack.endpoint_id
    t0 = time.monotonic()
    with Executor(endpoint, client) as ex:  # the long-poll waits up to 30 s for results
        future = ex.submit(size, b"x" * (11 * MIB if bad == "size" else 1))
        assert future.exception(timeout=60) is not None
    assert time.monotonic() - t0 < 10  # shutdown broke the useless long-poll off (it hung 30 s)
    assert isinstance(future.exception(), NotFound if bad == "endpoint" else PayloadTooLarge)
    assert not [t for t in threading.enumerate() if t.name.startswith("fnserve-executor")]


def test_an_argument_and_a_result_over_the_inline_limit_go_by_reference(stack, client):
    def grow(data):
        return data * 2

    with Executor(stack.endpoint_id, client) as ex:
        future = ex.submit(grow, b"x" * (11 * MIB))
        assert future.result(timeout=180) == b"x" * (22 * MIB)
    assert len(client.get_task(future.task_id)["result"]) < 1024  # a reference, not 22 MiB


# -- futures follow concurrent.futures --------------------------------------------------------------


def test_a_future_is_running_while_its_task_runs_and_then_cannot_be_cancelled(stack, client):
    def nap(seconds):
        import time

        time.sleep(seconds)
        return seconds

    threads_with_http: list[str] = []
    request = client.transport.request

    def noting_thread(method, path, *args, **kwargs):
        if path.endswith("/cancel"):
            threads_with_http.append(threading.current_thread().name)
        return request(method, path, *args, **kwargs)

    client.transport.request = noting_thread
    states = []
    with Executor(stack.endpoint_id, client) as ex:
        future = ex.submit(nap, 3)
        future.add_done_callback(lambda f: states.append(f._state))
        assert not future.running()
        deadline = time.monotonic() + 60
        while not future.running() and time.monotonic() < deadline:  # the test waits for the endpoint
            time.sleep(0.05)
        assert future.running() and not future.done()
        assert client.get_task(future.task_id)["state"] == "running"  # the service says so too
        assert future.cancel() is False and not future.cancelled()  # as the standard library: too late
        assert future.result(timeout=60) == 3
    assert states == ["FINISHED"] and threads_with_http == []


def test_a_quick_task_costs_one_results_request_and_its_record_says_when_it_ran(stack, client):
    """A warm no-op ends within the moment its start marker is held (site_manager/start_reports.py):
    no "running" entry ends the Executor's long-poll a moment before the result, so each task
    costs its submit and one results request (about 2.3 before: a second one per task), and the
    task still shows when it started, between its dispatch and its end."""

    def noop():
        return None

    with Executor(stack.endpoint_id, client) as ex:
        for _ in range(3):
            ex.submit(noop).result(timeout=60)
        before = dict(ex.requests)
        tasks = 20
        for _ in range(tasks):
            future = ex.submit(noop)
            assert future.result(timeout=60) is None
        stamps = client.get_task(future.task_id)["timestamps"]
        assert ex.requests["completions"] - before["completions"] <= tasks * 1.2, ex.requests
        assert stamps["dispatched"] <= stamps["running"] <= stamps["finished"], stamps


def test_map_timeout_cancels_the_calls_that_did_not_start(stack, client):
    def record(i):
        return i

    # An endpoint with no site manager connected: its tasks wait in the service's queue.
    idle = client.register_endpoint("idle-for-map")["endpoint_id"]
    ex = Executor(idle, client)
    results = ex.map(record, range(4), timeout=0.5)
    with pytest.raises(concurrent.futures.TimeoutError):
        next(results)
    t0 = time.monotonic()
    ex.shutdown(wait=True)
    assert time.monotonic() - t0 < 10
    # All four reached the service within the half second, and all four are cancelled there:
    # none will ever run, the timed-out first one included (it stayed queued before).
    sent = client.get_task_group(ex.task_group_id)["tasks"]
    assert len(sent) == 4
    assert [t["state"] for t in client.wait([t["task_id"] for t in sent], timeout=30)] == ["cancelled"] * 4


def test_a_serialization_error_is_set_on_the_future_not_raised_by_submit(stack, client):
    def echo(x):
        return x

    with Executor(stack.endpoint_id, client) as ex:
        future = ex.submit(echo, (i for i in range(3)))  # dill cannot serialize a generator
        assert isinstance(future.exception(timeout=10), SerializationError)
        assert future.done() and not future.cancelled()
        assert ex.submit(echo, 5).result(timeout=60) == 5


def test_chunksize_runs_that_many_calls_per_task(stack, client):
    def square(x):
        return x * x

    with Executor(stack.endpoint_id, client) as ex:
        assert list(ex.map(square, range(10), chunksize=4, timeout=120)) == [x * x for x in range(10)]
        with pytest.raises(ValueError):
            ex.map(square, range(3), chunksize=0)
    assert client.get_task_group(ex.task_group_id)["total"] == 3  # 4 + 4 + 2 calls


# -- remote exceptions as their own type --------------------------------------------------------------


def test_remote_exceptions_are_raised_as_their_own_type_with_the_remote_traceback_as_cause(stack, client):
    from sdk_domain_errors import MyDomainError

    def raise_value_error(x):
        raise ValueError(f"bad value {x}")

    def raise_domain_error(helpers, code):
        import sys

        sys.path.insert(0, helpers)
        from sdk_domain_errors import MyDomainError

        raise MyDomainError("the sample is contaminated", code)

    def raise_local_class():
        class Unreachable(Exception):
            pass

        raise Unreachable("defined inside the function")

    helpers = str(Path(__file__).parent)
    with Executor(stack.endpoint_id, client) as ex:
        value_error = ex.submit(raise_value_error, 7)
        domain = ex.submit(raise_domain_error, helpers, 42)
        local = ex.submit(raise_local_class)
        with pytest.raises(ValueError, match="bad value 7") as info:
            value_error.result(timeout=60)
        with pytest.raises(MyDomainError) as domain_info:
            domain.result(timeout=60)
        with pytest.raises(RemoteExecutionError) as local_info:
            local.result(timeout=60)
    err = info.value
    assert isinstance(err, RemoteExecutionError) and type(err).__name__ == "ValueError" and str(err) == "bad value 7"
    assert isinstance(err.__cause__, RemoteTraceback) and 'raise ValueError(f"bad value {x}")' in err.__cause__.tb
    assert err.remote_traceback == err.__cause__.tb and err.task_id == value_error.task_id
    assert domain_info.value.code == 42 and domain_info.value.args == ("the sample is contaminated", 42)
    assert "raise MyDomainError" in domain_info.value.__cause__.tb
    assert not isinstance(local_info.value, ValueError) and "Unreachable" in local_info.value.remote_type
    assert "defined inside the function" in str(local_info.value) and local_info.value.__cause__ is not None


# -- registering: no silent fallback from dill to source text ---------------------------------------


def test_a_function_dill_cannot_serialize_falls_back_to_source_only_with_a_warning(stack, client):
    def self_contained(x, _cache=(i for i in range(3))):  # dill cannot serialize the generator default
        return 2 * x

    state = (i for i in range(3))

    def uses_state(x):  # its source alone would fail remotely with a NameError
        return next(state) + x

    with pytest.warns(SourceFallbackWarning, match="dill could not serialize"):
        fid = client.register_function(self_contained)
    assert client.get_function(fid)["strategy"] == "source"
    assert client.get_result(client.submit(fid, stack.endpoint_id, (21,)), timeout=60) == 42
    with pytest.raises(SerializationError, match="uses state from around it") as info:
        client.register_function(uses_state)
    assert info.value.code == "not_serializable"
    with pytest.raises(SerializationError):
        client.register_function(self_contained, serializer="dill-code")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # choosing the source strategy is not warned about
        client.register_function(self_contained, serializer="source")
    with Executor(stack.endpoint_id, client) as ex:
        assert isinstance(ex.submit(uses_state, 1).exception(timeout=10), SerializationError)
