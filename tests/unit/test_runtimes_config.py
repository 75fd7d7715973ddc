"""The `runtimes:` endpoint config section, worker launch commands, routing and start backoff (pure)."""

from __future__ import annotations

import shlex

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


def test_podman_wraps_the_worker_pool_with_the_log_dir_mounted_and_braces_kept_for_parsl():
    rt = RuntimeConfig("sci", "podman", image="localhost/img:1", run_options=("--cpus=2",))
    cmd = launch_command(rt, PARSL_CMD, ["/run/ep"])
    assert cmd.startswith("podman run --rm --network host -v /run/ep:/run/ep --cpus=2 localhost/img:1 python3 -m node_manager.pool ")
    # Parsl fills these in later: they must survive untouched.
    assert cmd.endswith("{debug} -a {addresses} --logdir={logdir} --block_id={{block_id}}")
    assert cmd.format(debug="", addresses="a", logdir="/l").endswith("--block_id={block_id}")


def test_venv_runs_its_own_interpreter_isolated_from_the_endpoints_path():
    cmd = launch_command(RuntimeConfig("env", "venv", python="/opt/my env/bin/python"), PARSL_CMD, ["/run"])
    assert shlex.split(cmd.format(debug="", addresses="a", logdir="/l"))[:4] == ["/opt/my env/bin/python", "-I", "-m", "node_manager.pool"]


def test_other_container_runtimes_and_the_host():
    ch = launch_command(RuntimeConfig("c", "charliecloud", image="/img/dir"), PARSL_CMD, ["/run"])
    assert ch.startswith('env USER="$(id -un)" ch-run --unset-env=PYTHONPATH -b /run:/run /img/dir -- python3 -m node_manager.pool ')
    ap = launch_command(RuntimeConfig("a", "apptainer", image="/img/x.sif", command="/opt/bin/apptainer"), PARSL_CMD, ["/run"])
    assert ap.startswith("/opt/bin/apptainer exec --cleanenv --bind /run /img/x.sif python3 -m node_manager.pool ")
    assert launch_command(RuntimeConfig("host"), PARSL_CMD, []) is None


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
