"""Per-task resources: a task's worker request, the offers an endpoint says, where a task fits,
and what the worker narrows a task to (pure, no processes)."""

from __future__ import annotations

import os

import pytest

from fnserve.resources import ResourceSpecError
from fnserve.task_resources import Offer, WorkerRequest, check_offers, choose_executor, worker_request
from node_manager.allowance import THREAD_VARIABLES, cpus_for, narrowed
from site_manager.config import EndpointConfig
from site_manager.resources import _seconds, endpoint_offers, route_worker


def test_requests_are_read_and_checked_naming_the_field():
    assert worker_request(None) is None and worker_request({"num_ranks": 2}) is None
    assert worker_request({"cores": 2, "memory": 512.5, "gpus": 1, "walltime": 60}) == WorkerRequest(2, 512.5, 1, 60)
    for bad, field in (({"cores": 0}, "cores"), ({"cores": "2"}, "cores"), ({"gpus": 1.5}, "gpus"), ({"memory": True}, "memory"),
                       ({"walltime": float("inf")}, "walltime"), ({"cores": -1}, "cores")):
        with pytest.raises(ResourceSpecError) as info:
            worker_request(bad)
        assert info.value.code == "invalid_resource_specification" and info.value.details["field"].endswith(field)


def test_the_smallest_executor_that_holds_the_request_is_chosen():
    offers = {"host": Offer(cores=1, memory=2048), "big": Offer(cores=8, memory=65536), "gpu": Offer(cores=8, memory=65536, gpus=1)}
    assert choose_executor(None, offers) is None
    assert choose_executor(WorkerRequest(cores=1), offers) == "host"
    assert choose_executor(WorkerRequest(cores=2), offers) == "big"  # not the GPU one
    assert choose_executor(WorkerRequest(memory=4096), offers) == "big"
    assert choose_executor(WorkerRequest(gpus=1), offers) == "gpu"
    # Unknown memory or walltime (0) limits nothing.
    assert choose_executor(WorkerRequest(memory=1e6, walltime=1e6), {"any": Offer(cores=1)}) == "any"


def test_a_request_no_executor_holds_never_fits_and_says_what_is_missing():
    offers = {"host": Offer(cores=2, memory=4096, walltime=3600)}
    for request, words in ((WorkerRequest(cores=3), "3 cores"), (WorkerRequest(memory=8192), "8192 MB"),
                           (WorkerRequest(gpus=1), "1 GPUs"), (WorkerRequest(walltime=7200), "7200 s")):
        with pytest.raises(ResourceSpecError) as info:
            choose_executor(request, offers)
        assert info.value.code == "resources_never_fit" and words in info.value.message, info.value.message
        assert "ask for at most cores 2" in info.value.message and info.value.details["offers"]["host"]["cores"] == 2


def test_the_service_checks_only_what_the_endpoint_said():
    check_offers({"cores": 64}, None)  # not said (an older endpoint, a multi-user one): the endpoint decides
    check_offers({"cores": 2}, {"host": {"cores": 2, "memory": 0, "gpus": 0, "walltime": 0}})
    with pytest.raises(ResourceSpecError):
        check_offers({"cores": 3}, {"host": {"cores": 2}})


def _config(**sections):
    return EndpointConfig.from_dict({"forwarder": "tcp://h:1", "endpoint_id": "e", "secret": "s", **sections})


def test_an_endpoint_offers_what_its_engine_gives_each_worker():
    offers = endpoint_offers(_config(engine={"cores_per_worker": 2, "mem_per_worker": 1.5, "available_accelerators": 2},
                                     provider={"type": "local"}))
    assert offers == {"host": Offer(cores=2, memory=1536, gpus=1, walltime=0)}
    assert _seconds("01:30:00") == 5400 and _seconds("1-00:00:10") == 86410 and _seconds(60) == 60 and _seconds("soon") == 0
    route_worker({"cores": 2}, offers, None)
    with pytest.raises(ResourceSpecError):
        route_worker({"cores": 3}, offers, "host")


def test_the_worker_narrows_a_task_to_the_cores_it_asked_for_and_puts_it_back():
    assert cpus_for(2, {3, 1, 7}) == {1, 3} and cpus_for(0.5, {4, 5}) == {4} and cpus_for(9, {0, 1}) == {0, 1}
    # Tasks on a node's workers 0..3 asking for one core each get one CPU each, not all CPU 0.
    assert [cpus_for(1, {0, 1, 2, 3}, w) for w in range(4)] == [{0}, {1}, {2}, {3}]
    assert cpus_for(2, {0, 1, 2}, worker=1) == {2, 0}
    before = os.sched_getaffinity(0)
    env: dict[str, str] = {"OMP_NUM_THREADS": "8"}
    with narrowed({"cores": 1}, env):
        assert len(os.sched_getaffinity(0)) == 1 and all(env[v] == "1" for v in THREAD_VARIABLES)
    assert os.sched_getaffinity(0) == before and env == {"OMP_NUM_THREADS": "8"}
    with narrowed({"num_ranks": 2}, env):  # no cores asked: nothing changes
        assert os.sched_getaffinity(0) == before and env == {"OMP_NUM_THREADS": "8"}
