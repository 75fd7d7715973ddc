"""MPI tasks: the request rules, the fit check, the routing between the host engine and Parsl's MPI
mode, OpenMPI's prefix, and the endpoint config's mpi section (pure, no processes)."""

from __future__ import annotations

import pytest

from fnserve.resources import (
    MpiRequest,
    ResourceSpecError,
    check_fit,
    mpi_request,
    openmpi_prefix,
    wants_mpi,
)
from fnserve.shell import MPIFunction
from node_manager.mpi_env import set_prefix
from site_manager.config import ConfigError, EndpointConfig, MpiConfig
from site_manager.failures import failure_result
from site_manager.resources import route_mpi


@pytest.mark.parametrize("spec, expected", [
    ({"num_nodes": 2, "ranks_per_node": 4}, (2, 4, 8)),
    ({"num_nodes": 2, "num_ranks": 6}, (2, 3, 6)),
    ({"num_ranks": 3}, (1, 3, 3)),
    ({"ranks_per_node": 2}, (1, 2, 2)),
    ({"num_nodes": 2}, (2, 1, 2)),
    ({"num_nodes": 2, "ranks_per_node": 4, "num_ranks": 7}, (2, 4, 7)),
])
def test_counts_are_derived_from_each_other(spec, expected):
    req = mpi_request(spec)
    assert (req.num_nodes, req.ranks_per_node, req.num_ranks) == expected


@pytest.mark.parametrize("spec, field", [
    ({"num_nodes": 0}, "num_nodes"), ({"num_ranks": "2"}, "num_ranks"), ({"ranks_per_node": True}, "ranks_per_node"),
    ({"num_nodes": 2, "num_ranks": 3}, "num_ranks"), ({"num_nodes": 1, "ranks_per_node": 2, "num_ranks": 3}, "num_ranks"),
    ({"num_ranks": 2, "launcher_options": 5}, "launcher_options"), ({"num_ranks": 2, "launcher_options": "a\nb"}, "launcher_options"),
])
def test_bad_requests_name_their_field(spec, field):
    with pytest.raises(ResourceSpecError) as info:
        mpi_request(spec)
    assert info.value.code == "invalid_resource_specification" and info.value.details["field"].endswith(field)


def test_a_request_larger_than_any_block_never_fits():
    check_fit(MpiRequest(2, 1, 2), nodes_per_block=2)
    with pytest.raises(ResourceSpecError) as info:
        check_fit(MpiRequest(3, 1, 3), nodes_per_block=2)
    assert info.value.code == "resources_never_fit" and info.value.details["limit"] == 2


def test_routing_between_host_engine_and_mpi_mode():
    mpi = MpiConfig(nodes_per_block=1, launcher_options="--oversubscribe")
    assert route_mpi(None, mpi) is None and route_mpi({}, mpi) is None and route_mpi({"priority": 3}, mpi) is None
    assert not wants_mpi({"priority": 3}) and wants_mpi({"num_ranks": 1})
    req = route_mpi({"num_ranks": 2}, mpi)
    assert req == MpiRequest(1, 2, 2, "--oversubscribe")
    assert req.parsl_spec() == {"num_nodes": 1, "ranks_per_node": 2, "num_ranks": 2, "launcher_options": "--oversubscribe"}
    assert route_mpi({"num_ranks": 2, "launcher_options": "-x FOO"}, mpi).launcher_options == "-x FOO"
    with pytest.raises(ResourceSpecError, match="resources_never_fit|2 nodes"):
        route_mpi({"num_nodes": 2}, mpi)
    # No mpi section: one rank runs as a plain task, more is refused with its own code.
    assert route_mpi({"num_nodes": 1, "ranks_per_node": 1}, None) is None
    with pytest.raises(ResourceSpecError) as info:
        route_mpi({"num_ranks": 2}, None)
    assert info.value.code == "mpi_not_enabled"
    # The task fails with that code and message, not a generic engine error.
    failed = failure_result("t", info.value)
    assert failed.error.code == "mpi_not_enabled" and "no mpi section" in failed.error.message


def test_openmpi_prefix_from_what_parsl_put_in_the_environment():
    assert openmpi_prefix(4, 2, ["n1", "n2"], "--oversubscribe") == \
        "mpiexec -n 4 --map-by ppr:2:node --host n1:2,n2:2 --oversubscribe"
    env = {"PARSL_MPI_NODELIST": "c1", "PARSL_NUM_RANKS": "2", "PARSL_RANKS_PER_NODE": "2", "PARSL_LAUNCHER_OPTIONS": "",
           "PARSL_MPI_PREFIX": "mpiexec -n 2 -ppn 2 -hosts c1 "}
    set_prefix("openmpi", env)
    assert env["PARSL_MPI_PREFIX"] == "mpiexec -n 2 --map-by ppr:2:node --host c1:2"
    untouched = dict(env, PARSL_MPI_PREFIX="srun --ntasks 2")
    set_prefix("srun", untouched)
    assert untouched["PARSL_MPI_PREFIX"] == "srun --ntasks 2"  # Parsl's own composition stands


def test_mpi_section_of_the_endpoint_config():
    base = {"forwarder": "tcp://127.0.0.1:1", "endpoint_id": "e", "secret": "s"}
    cfg = EndpointConfig.from_dict({**base, "mpi": {"nodes_per_block": 2, "max_workers_per_block": 2}})
    assert cfg.mpi == MpiConfig(nodes_per_block=2, max_workers_per_block=2)
    assert cfg.mpi.parsl_launcher == "mpiexec" and cfg.mpi.scaling.nodes_per_block == 2
    assert EndpointConfig.from_dict(base).mpi is None
    for bad, key in (({"launcher": "mpirun"}, "mpi.launcher"), ({"nodes_per_block": 0}, "mpi.nodes_per_block"),
                     ({"max_blocks": 0, "init_blocks": 1}, "mpi.init_blocks"), ({"typo": 1}, "mpi.typo")):
        with pytest.raises(ConfigError) as info:
            EndpointConfig.from_dict({**base, "mpi": bad})
        assert info.value.details["key"] == key, (bad, info.value.details)


def test_mpi_function_runs_its_command_under_the_launcher_prefix():
    fn = MPIFunction("./hello {n}")
    assert fn.command == "$PARSL_MPI_PREFIX ./hello {n}" and fn.placeholders == ["n"] and fn.__name__ == "hello"
    assert MPIFunction("$PARSL_MPI_PREFIX python3 x.py").command == "$PARSL_MPI_PREFIX python3 x.py"
