"""What Globus Compute users reach for, on the real embedded stack (`fnserve up`: Redis,
gunicorn, forwarder, a site manager on Parsl HTEX): registered functions through the Executor,
task groups and reload_tasks(), max_retries and resource_specification, bulk status, a mutable
batch_size, and an asyncio client that uses no threads."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import pytest
from stack_support import running_stack
from executor_support import counting_client
from test_faults import _wait_for_pids, pid_recorder

from fnserve.aio import AsyncClient
from fnserve.aio_executor import AsyncExecutor
from fnserve.client import Client
from fnserve.errors import TaskFailed
from fnserve.executor import Executor


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("parity")) as stack:
        yield stack


@pytest.fixture
def client(stack):
    """The counting client, on this module's stack."""
    return counting_client(stack)


def napper():
    """A function that sleeps (nested, so dill ships it by value to the workers)."""

    def nap(seconds):
        import time

        time.sleep(seconds)
        return seconds

    return nap


def test_submit_to_registered_function_runs_a_function_by_its_id(stack, client):
    def add(a, b=0):
        return a + b

    fid = client.register_function(add)
    with Executor(endpoint_id=stack.endpoint_id, client=client) as ex:
        assert ex.submit_to_registered_function(fid, args=(2,), kwargs={"b": 3}).result(timeout=60) == 5
        assert ex.submit_to_registered_function(function_id=fid, args=[7]).result(timeout=60) == 7
        # As in Globus Compute: tell the executor a function's id, and it registers nothing.
        registered = client.transport.counts[("POST", "/v1/functions")]
        assert ex.register_function(add, function_id=fid) == fid
        assert ex.submit(add, 1, b=1).result(timeout=60) == 2
        assert client.transport.counts[("POST", "/v1/functions")] == registered


def test_reload_tasks_gives_futures_back_to_a_new_executor(stack, client):
    nap = napper()
    first = Executor(stack.endpoint_id, client)
    done = [first.submit(nap, 0) for _ in range(3)]
    slow = first.submit(nap, 3)
    assert [f.result(timeout=60) for f in done] == [0, 0, 0]
    assert slow.submitted(timeout=60)
    group = first.task_group_id
    first.shutdown(wait=False)  # as a kernel restart would leave it: nothing waits any more

    later = Executor(stack.endpoint_id, Client(stack.url, stack.token), task_group_id=group)
    futures = later.reload_tasks()
    assert [f.task_id for f in futures] == [f.task_id for f in done + [slow]]
    assert all(f.done() for f in futures[:3]) and [f.result() for f in futures[:3]] == [0, 0, 0]
    assert not futures[3].done()
    assert futures[3].result(timeout=60) == 3  # completed by the new executor's result reader
    assert futures[3].task["task_group_id"] == group
    later.shutdown()
    assert Executor(stack.endpoint_id, client).reload_tasks(group)[3].result(timeout=5) == 3


def test_max_retries_and_resource_specification_travel_with_each_task(stack, client, tmp_path):
    spec = {"num_nodes": 1, "ranks_per_node": 1}  # one rank: runs on an endpoint without MPI mode
    marker = tmp_path / "pids"
    with Executor(stack.endpoint_id, client, max_retries=0, resource_specification=spec) as ex:
        future = ex.submit(pid_recorder(), str(marker))
        os.kill(_wait_for_pids(marker, 1)[0], signal.SIGKILL)  # the worker is lost: with 0 retries, the task fails
        with pytest.raises(TaskFailed) as info:
            future.result(timeout=90)
    assert info.value.code == "worker_lost" and "max_retries=0" in str(info.value)
    assert len(marker.read_text().split()) == 1  # not rerun (the endpoint's default is 2 retries)
    task = client.get_task(future.task_id)
    assert task["max_retries"] == 0 and task["resource_specification"] == spec
    with pytest.raises(TypeError):
        Executor(stack.endpoint_id, client, resource_specification={"bad": object()})


def test_get_batch_result_answers_at_once_with_pending_and_finished_tasks(stack, client):
    def twice(x):
        return 2 * x

    fid = client.register_function(twice)
    slow = client.register_function(napper())
    done = [client.submit(fid, stack.endpoint_id, (i,)) for i in range(3)]
    client.wait(done, timeout=60)
    pending = client.submit(slow, stack.endpoint_id, (5,))
    t0 = time.monotonic()
    status = client.get_batch_result(done + [pending])
    assert time.monotonic() - t0 < 3  # a status read, not a wait
    assert [status[t]["result"] for t in done] == [0, 2, 4] and not any(status[t]["pending"] for t in done)
    assert status[done[0]]["status"] == "success" and "completion_t" in status[done[0]]
    assert status[pending]["pending"] is True and "result" not in status[pending]
    client.cancel(pending)


def test_batch_size_can_be_changed_on_a_live_executor(stack, client):
    def one(_):
        return 1

    with Executor(stack.endpoint_id, client, batch_delay=0.2) as ex:
        assert ex.batch_size == 1000
        ex.batch_size = 10
        assert sum(f.result(timeout=60) for f in [ex.submit(one, i) for i in range(30)]) == 30
        with pytest.raises(ValueError):
            ex.batch_size = 0
    assert client.transport.counts[("POST", "/v1/tasks")] >= 3


def test_async_executor_awaits_results_without_a_single_thread(stack):
    def square(x):
        return x * x

    def fails(x):
        raise KeyError(x)

    before = set(threading.enumerate())
    seen: list[set[threading.Thread]] = []

    async def main():
        async with AsyncClient(stack.url, stack.token) as fc:
            async with AsyncExecutor(stack.endpoint_id, fc, batch_size=25) as ex:
                first = ex.submit(square, 7)
                assert await first == 49 and first.task_id
                assert await ex.map(square, range(60)) == [x * x for x in range(60)]
                with pytest.raises(KeyError):
                    await ex.submit(fails, "k")
                seen.append(set(threading.enumerate()))
            fid = await fc.register_function(square)
            task_id = await fc.submit(fid, stack.endpoint_id, (9,))
            assert await fc.get_result(task_id, timeout=60) == 81
            assert (await fc.get_batch_result([task_id]))[task_id]["result"] == 81

    asyncio.run(main())
    assert seen and seen[0] <= before  # no thread was started for any of it
