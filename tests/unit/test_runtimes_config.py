"""The `runtimes:` endpoint config section, worker launch commands, routing and start backoff (pure)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from site_manager.config import ConfigError, EndpointConfig
from site_manager.runtimes import (
    PoolHealth,
    RuntimeConfig,
    launch_command,
    parse_runtimes,
    route,
)

PARSL_CMD = "process_worker_pool.py {debug} -a {addresses} --logdir={logdir} --block_id={{block_id}}"
BASE = {"forwarder": "tcp://127.0.0.1:1", "endpoint_id": "e", "secret": "s"}


def test_runtimes_section_is_parsed_into_configs_with_hot_spares():
    cfg = EndpointConfig.from_dict({**BASE, "runtimes": {
        "sci": {"type": "podman", "image": "img", "min_warm_workers": 3, "max_blocks": 4, "run_options": "--cpus 2"},
        "env": {"type": "venv", "python": "/opt/env/bin/python"},
    }})
    sci = cfg.runtimes["sci"]
    assert (sci.type, sci.image, sci.run_options) == ("podman", "img", ("--cpus", "2"))
    assert sci.min_blocks(workers_per_block=2) == 2  # 3 hot spares need 2 blocks of 2 workers
    assert cfg.runtimes["env"].min_blocks(2) == 0


@pytest.mark.parametrize("section, key", [
    ({"x": {"type": "lxc"}}, "runtimes.x.type"),
    ({"x": {"type": "podman"}}, "runtimes.x.image"),
    ({"x": {"type": "venv"}}, "runtimes.x.python"),
    ({"x": {"type": "host", "imgae": "typo"}}, "runtimes.x.imgae"),
    ({"host": {"type": "podman", "image": "i"}}, "runtimes.host"),
    ({"x": {"type": "host", "max_blocks": 0}}, "runtimes.x.max_blocks"),
])
def test_bad_runtimes_name_the_key(section, key):
    with pytest.raises(ConfigError) as err:
        parse_runtimes(section)
    assert err.value.details["key"] == key


def test_a_runtime_launches_its_block_script_and_keeps_parsls_fields_for_later():
    rt = RuntimeConfig("sci", "podman", image="localhost/img:1")
    cmd = launch_command(rt, PARSL_CMD, Path("/run/{ep}/block.sh"))
    # Parsl fills these in later (the block id last): they must survive untouched.
    first = cmd.format(debug="", addresses="a", logdir="/l")
    assert first == "bash '/run/{{ep}}/block.sh' {block_id}  -a a --logdir=/l --block_id={block_id}"
    assert shlex.split(first.format(block_id=3)) == ["bash", "/run/{ep}/block.sh", "3", "-a", "a", "--logdir=/l", "--block_id=3"]
    assert launch_command(RuntimeConfig("host"), PARSL_CMD, Path("/x")) is None


@pytest.mark.parametrize("section, key", [
    ({"x": {"type": "podman", "image": "i", "pull": "sometimes"}}, "runtimes.x.pull"),
    ({"x": {"type": "docker", "image": "i", "gpus": "tpu"}}, "runtimes.x.gpus"),
    ({"x": {"type": "venv", "python": "/p", "gpus": "nvidia"}}, "runtimes.x.gpus"),
    ({"x": {"type": "apptainer", "image": "/i.sif", "env": {"A": "1,2"}}}, "runtimes.x.env.A"),
    ({"x": {"type": "apptainer", "image": "/i.sif", "env": {"1A": "x"}}}, "runtimes.x.env"),
    ({"bad name!": {"type": "host"}}, "runtimes"),
])
def test_new_runtime_keys_are_checked(section, key):
    with pytest.raises(ConfigError) as err:
        parse_runtimes(section)
    assert err.value.details["key"] == key


def test_failed_starts_back_off_exponentially_up_to_a_cap_and_success_resets():
    h = PoolHealth(initial=2.0, cap=5.0)
    assert h.usable(0.0)
    h.start_failed(10.0, "no image")
    assert not h.usable(11.9) and h.usable(12.0) and h.error == "no image"
    h.start_failed(12.0, "no image")
    assert h.retry_at == 16.0
    h.start_failed(16.0, "no image")
    assert h.retry_at == 21.0  # capped at 5 s
    h.started()
    assert h.usable(0.0) and h.failures == 0


def test_routing_prefers_a_warm_fallback_over_a_cold_start():
    configured = {"host", "a", "b"}
    assert route(None, configured, set()) == "host"
    assert route("a", configured, set(), {"a": ("b",)}) == "a"  # nothing warm: cold start of its own
    assert route("a", configured, {"b"}, {"a": ("b",)}) == "b"
    assert route("a", configured, {"a", "b"}, {"a": ("b",)}) == "a"
    assert route("gpu", configured, {"a"}) is None
