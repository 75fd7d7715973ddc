"""fnserve.Executor against the real embedded stack (`fnserve up`: Redis, gunicorn, forwarder,
site manager on Parsl HTEX): futures, map, remote exceptions, cancel, shutdown, automatic
registration, batching, and results pushed over the completions long-poll."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections import Counter

import pytest
from stack_support import running_stack

from fnserve.client import Client
from fnserve.errors import RemoteExecutionError
from fnserve.executor import Executor
from fnserve.transport import Transport


class CountingTransport(Transport):
    """The real HTTP transport, counting the requests it makes by (method, route)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.counts: Counter[tuple[str, str]] = Counter()
        self._count_lock = threading.Lock()

    def request(self, method, path, *args, **kwargs):
        # Task ids are the last path segment of per-task routes: group them as "{id}".
        route = "/v1/tasks/{id}" if path.startswith("/v1/tasks/") and path.count("/") == 3 and not path.endswith(("/results", "/completions")) else path
        with self._count_lock:
            self.counts[(method, route)] += 1
        return super().request(method, path, *args, **kwargs)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("fnserve-home")) as stack:
        yield stack


@pytest.fixture
def client(stack):
    fc = Client(stack.url, stack.token)
    fc.transport = CountingTransport(stack.url, stack.token, timeout=60)
    return fc


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


def test_cancel_a_queued_or_running_task(stack, client):
    def nap(seconds):
        import time

        time.sleep(seconds)
        return seconds

    ex = Executor(stack.endpoint_id, client)
    running = ex.submit(nap, 3)
    task_id = running.submitted(timeout=60)
    assert task_id is not None
    assert running.cancel() is True
    assert running.cancelled() and client.get_task(task_id)["state"] == "cancelled"
    done = ex.submit(nap, 0)
    assert done.result(timeout=60) == 0
    assert done.cancel() is False  # finished: nothing to cancel
    concurrent.futures.wait([running, done], timeout=5)  # a cancelled future counts as done
    ex.shutdown(wait=True)


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
