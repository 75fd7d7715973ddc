"""Kubernetes: the `kubernetes` template becomes Parsl's KubernetesProvider with the right pod spec.

STAND-IN: no Kubernetes cluster can run here. The provider is built for real (our template, our
config loader, Parsl's KubernetesProvider and the kubernetes client with a kubeconfig that names
an unreachable server); only the API server's `create_namespaced_pod` is replaced by a recorder,
so the test sees the exact pod the endpoint would create.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fnserve.cli.endpoint_templates import render
from site_manager.config import EndpointConfig
from site_manager.engine import make_provider

CREDS = {"forwarder": "tcp://fnserve.example.org:55001", "endpoint_id": "ep-k8s", "secret": "s"}
KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: not-a-real-token}}]
contexts: [{name: x, context: {cluster: c, user: u, namespace: science}}]
current-context: x
"""


def use_kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the kubernetes client at a kubeconfig (its default path is read at import time)."""
    (tmp_path / "kubeconfig").write_text(KUBECONFIG)
    monkeypatch.setattr("kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION", str(tmp_path / "kubeconfig"))


class RecordingApi:
    """Stands in for the Kubernetes API server: records the pods it is asked to create."""

    def __init__(self) -> None:
        self.pods: list[tuple[str, object]] = []

    def create_namespaced_pod(self, namespace: str, body: object) -> object:
        self.pods.append((namespace, body))
        return type("V1Pod", (), {"status": "Pending"})()  # what the provider logs of the answer


def test_kubernetes_template_builds_the_provider_and_the_pod_it_would_create(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    use_kubeconfig(tmp_path, monkeypatch)
    data = yaml.safe_load(render("kubernetes", str(tmp_path / "run"), worker_init="echo pod up"))
    config = EndpointConfig.from_dict({**data, **CREDS})
    assert config.engine.options == {"address": "fnserve-endpoint.science.svc.cluster.local", "worker_port": 54000}
    provider = make_provider(config.provider, config.scaling, tmp_path, config.launcher, config.worker_init)
    assert type(provider).__name__ == "KubernetesProvider" and provider.max_blocks == 4
    api = RecordingApi()
    provider.kube_client = api
    job = provider.submit("process_worker_pool.py -a fnserve-endpoint.science.svc.cluster.local --block_id=0", 1, "fnserve.block-0")
    ((namespace, pod),) = api.pods
    assert namespace == "science"
    assert pod.metadata.name.startswith("fnserve.block-0.") and pod.metadata.name.endswith(job)
    (container,) = pod.spec.containers
    assert container.image == "registry.example.org/fnserve-worker:latest"
    script = " ".join(container.args or container.command or [])
    assert "echo pod up" in script and "process_worker_pool.py -a fnserve-endpoint.science.svc.cluster.local" in script
    assert container.resources.requests == {"cpu": "1", "memory": "1Gi"}
    assert container.resources.limits == {"cpu": "4", "memory": "8Gi"}
