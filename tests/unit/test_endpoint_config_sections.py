"""The engine / provider / launcher / scaling sections, the templates, and the errors for bad keys."""

from __future__ import annotations

import pytest
import yaml

from fnserve.cli.endpoint_templates import TEMPLATES, render
from site_manager.config import ConfigError, EndpointConfig, load_config

BASE = {"forwarder": "tcp://127.0.0.1:55001", "endpoint_id": "ep-1", "secret": "top-secret"}


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_every_template_is_a_valid_config_that_builds_its_parsl_provider(template: str, tmp_path, monkeypatch) -> None:
    from site_manager.engine import make_provider

    if template == "kubernetes":  # a kubeconfig naming no reachable cluster: the provider only reads it
        from tests.unit.test_kubernetes_provider import use_kubeconfig

        use_kubeconfig(tmp_path, monkeypatch)
    config = EndpointConfig.from_dict({**yaml.safe_load(render(template, str(tmp_path / "run"))), **BASE})
    provider = make_provider(config.provider, config.scaling, tmp_path, config.launcher, config.worker_init)
    expected = {"local": "LocalProvider", "slurm": "SlurmProvider", "pbs": "PBSProProvider", "kubernetes": "KubernetesProvider"}[template]
    assert type(provider).__name__ == expected
    assert provider.nodes_per_block == config.scaling.nodes_per_block
    assert config.run_path == tmp_path / "run"


def test_slurm_sections_map_onto_parsl_classes(tmp_path) -> None:
    from parsl.launchers import SrunLauncher
    from parsl.providers import SlurmProvider

    from site_manager.engine import make_provider

    config = EndpointConfig.from_dict({
        **BASE,
        "engine": {"max_workers_per_node": 8, "cores_per_worker": 2, "mem_per_worker": 4, "prefetch_capacity": 3,
                   "heartbeat_period": 10, "heartbeat_threshold": 60, "address": "10.0.0.5"},
        "provider": {"type": "slurm", "partition": "compute", "account": "proj42", "walltime": "02:00:00",
                     "exclusive": False},
        "launcher": {"type": "srun", "overrides": "--cpu-bind=none"},
        "scaling": {"init_blocks": 0, "min_blocks": 0, "max_blocks": 8, "nodes_per_block": 4, "max_idletime": 300},
        "worker_init": "module load python",
    })
    assert (config.engine.cores_per_worker, config.engine.mem_per_worker, config.engine.prefetch_capacity) == (2, 4, 3)
    assert config.engine.options == {"address": "10.0.0.5"}  # any other HighThroughputExecutor argument
    provider = make_provider(config.provider, config.scaling, tmp_path, config.launcher, config.worker_init)
    assert isinstance(provider, SlurmProvider) and isinstance(provider.launcher, SrunLauncher)
    assert (provider.partition, provider.account, provider.walltime) == ("compute", "proj42", "02:00:00")
    assert (provider.nodes_per_block, provider.max_blocks, provider.init_blocks) == (4, 8, 0)
    assert provider.launcher.overrides == "--cpu-bind=none"
    assert "module load python" in provider.worker_init


def test_kubernetes_is_accepted_without_a_launcher() -> None:
    config = EndpointConfig.from_dict({**BASE, "provider": {"type": "kubernetes", "image": "fnserve/worker:latest"}})
    assert config.provider.options == {"image": "fnserve/worker:latest"}
    with pytest.raises(ConfigError, match="kubernetes provider takes no launcher"):
        EndpointConfig.from_dict({**BASE, "provider": {"type": "kubernetes", "image": "x"}, "launcher": {"type": "srun"}})
    with pytest.raises(ConfigError, match="KubernetesProvider needs image"):
        EndpointConfig.from_dict({**BASE, "provider": {"type": "kubernetes"}})


@pytest.mark.parametrize(
    "change, words, key",
    [
        ({"provider": {"type": "slurm", "partiton": "debug"}},
         "provider: unknown key 'partiton' for SlurmProvider; allowed: account, .*partition", "provider.partiton"),
        ({"provider": {"type": "lsf"}}, "unknown provider type 'lsf'; known: kubernetes, local, pbspro, slurm, torque",
         "provider.type"),
        ({"launcher": {"type": "mpirun"}}, "unknown launcher type 'mpirun'; known: aprun, mpiexec, single_node, srun",
         "launcher.type"),
        ({"launcher": {"type": "srun", "overides": "-n 1"}},
         "launcher: unknown key 'overides' for SrunLauncher; allowed: debug, overrides", "launcher.overides"),
        ({"scaling": {"max_idle": 5}}, "scaling: unknown key 'max_idle'; allowed: cancel_timeout, init_blocks, max_blocks, max_idletime",
         "scaling.max_idle"),
        ({"provider": {"type": "slurm", "max_blocks": 3}}, "provider.max_blocks is set by the endpoint: put it in the 'scaling'",
         "provider.max_blocks"),
        ({"provider": {"type": "slurm", "launcher": "srun"}}, "put it in the 'launcher' section", "provider.launcher"),
        ({"engine": {"label": "x"}}, "engine: unknown key 'label'", "engine.label"),
        ({"engine": {"heartbeat_period": 30, "heartbeat_threshold": 10}}, "heartbeat_period < engine.heartbeat_threshold",
         "engine.heartbeat_period"),
        ({"scaling": {"min_blocks": 0, "max_blocks": 1, "init_blocks": 2}}, "init_blocks must lie between", "scaling.init_blocks"),
        ({"engine": {"max_blocks": 2}, "scaling": {"max_blocks": 3}}, "max_blocks is set in both", "engine.max_blocks"),
        ({"worker_init": "a", "provider": {"type": "local", "worker_init": "b"}}, "worker_init is set both", "provider.worker_init"),
    ],
)
def test_bad_keys_are_named_with_the_allowed_values(change: dict, words: str, key: str) -> None:
    with pytest.raises(ConfigError, match=words) as err:
        EndpointConfig.from_dict({**BASE, **change})
    assert err.value.code == "invalid_endpoint_config"
    assert err.value.details["key"] == key


def test_identity_can_live_in_a_separate_credentials_file(tmp_path) -> None:
    (tmp_path / "config.yaml").write_text(render("local", str(tmp_path / "run")))
    (tmp_path / "credentials.yaml").write_text(yaml.safe_dump(BASE))
    config = load_config(tmp_path / "config.yaml", tmp_path / "credentials.yaml")
    assert (config.endpoint_id, config.secret, config.forwarder) == ("ep-1", "top-secret", "tcp://127.0.0.1:55001")
    with pytest.raises(ConfigError, match="missing: forwarder, endpoint_id, secret"):
        load_config(tmp_path / "config.yaml")
