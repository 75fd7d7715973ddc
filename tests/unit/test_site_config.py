"""Endpoint configuration from dicts and YAML files."""

from __future__ import annotations

from pathlib import Path

import pytest

from site_manager.config import ConfigError, EndpointConfig, load_config

BASE = {
    "forwarder": "tcp://127.0.0.1:55001",
    "endpoint_id": "ep-1",
    "secret": "top-secret",
}


def test_defaults() -> None:
    config = EndpointConfig.from_dict(BASE)
    assert (config.heartbeat_period, config.heartbeat_threshold) == (2.0, 10.0)
    assert config.engine.max_workers_per_node == 1 and config.provider.type == "local"


def test_yaml_with_engine_and_provider_sections(tmp_path: Path) -> None:
    path = tmp_path / "ep.yaml"
    path.write_text(
        "forwarder: tcp://fwd.example.org:55001\nendpoint_id: ep-2\nsecret: s\nrun_dir: ~/ep\n"
        "engine:\n  max_workers_per_node: 4\n  max_blocks: 2\n"
        "provider:\n  type: local\n  worker_init: source venv/bin/activate\n"
    )
    config = load_config(path)
    # Block counts under engine (configs from before the scaling section) still count.
    assert config.engine.max_workers_per_node == 4 and config.scaling.max_blocks == 2
    assert config.provider.options == {"worker_init": "source venv/bin/activate"}
    assert config.run_path == Path.home() / "ep"


def test_secret_is_not_in_the_repr() -> None:
    assert "top-secret" not in repr(EndpointConfig.from_dict(BASE))


def test_provider_options_reach_the_parsl_provider(tmp_path: Path) -> None:
    from parsl.providers import LocalProvider

    from site_manager.engine import make_provider

    config = EndpointConfig.from_dict(
        {
            **BASE,
            "engine": {"init_blocks": 0, "max_blocks": 3},
            "provider": {"type": "local", "worker_init": "true"},
        }
    )
    provider = make_provider(config.provider, config.scaling, tmp_path)
    assert isinstance(provider, LocalProvider)
    # The admin's worker_init runs after the umask that keeps block files private.
    assert (provider.init_blocks, provider.max_blocks, provider.worker_init) == (
        0,
        3,
        "umask 077\ntrue",
    )
    assert provider.script_dir == str(tmp_path)


@pytest.mark.parametrize(
    "change, words",
    [
        ({"forwarder": "127.0.0.1:55001"}, "tcp://"),
        ({"colour": "blue"}, "unknown endpoint config keys: colour"),
        ({"provider": {"type": "cloud9"}}, "unknown provider type 'cloud9'"),
        ({"engine": {"workers": 3}}, "engine: unknown key 'workers' for HighThroughputExecutor; allowed: .*max_workers_per_node"),
        ({"engine": {"min_blocks": 2, "max_blocks": 1}}, "min_blocks"),
        ({"heartbeat_period": 5, "heartbeat_threshold": 2}, "heartbeat"),
    ],
)
def test_bad_config_is_refused_with_a_clear_message(change: dict, words: str) -> None:
    with pytest.raises(ConfigError, match=words) as err:
        EndpointConfig.from_dict({**BASE, **change})
    assert err.value.code == "invalid_endpoint_config"


def test_missing_required_keys_are_named() -> None:
    with pytest.raises(ConfigError, match="missing: endpoint_id, secret"):
        EndpointConfig.from_dict({"forwarder": "tcp://x:1"})


def test_unreadable_yaml_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_task_capacity_defaults_to_enough_for_every_worker_and_can_be_set():
    from site_manager.config import EndpointConfig

    base = {"forwarder": "tcp://127.0.0.1:1", "endpoint_id": "e", "secret": "s"}
    assert EndpointConfig.from_dict(base).task_capacity == 4096  # small endpoint: the floor
    big = EndpointConfig.from_dict({**base, "engine": {"max_workers_per_node": 64},
                                    "scaling": {"max_blocks": 10, "nodes_per_block": 4, "init_blocks": 0}})
    assert big.task_capacity == 4 * 64 * 4 * 10
    assert EndpointConfig.from_dict({**base, "max_tasks_held": 16}).task_capacity == 16
    with pytest.raises(ConfigError) as info:
        EndpointConfig.from_dict({**base, "max_tasks_held": -1})
    assert info.value.details["key"] == "max_tasks_held"
