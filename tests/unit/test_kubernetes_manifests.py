"""The Kubernetes manifests (deploy/kubernetes), rendered and checked against the Kubernetes API
models of the official Python client. No cluster runs here: nothing is applied; what is proved
is that every document is a valid object of its kind (a misspelled or misplaced field would be
dropped by the model, and the round trip would differ) and that the parts fit together."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kubernetes.client import ApiClient

REPO = Path(__file__).resolve().parents[2]
MODELS = {("v1", "ConfigMap"): "V1ConfigMap", ("v1", "Service"): "V1Service", ("batch/v1", "Job"): "V1Job",
          ("apps/v1", "Deployment"): "V1Deployment", ("apps/v1", "StatefulSet"): "V1StatefulSet",
          ("policy/v1", "PodDisruptionBudget"): "V1PodDisruptionBudget"}


def render(*sets: str) -> list[dict]:
    out = subprocess.run([sys.executable, str(REPO / "deploy/kubernetes/render.py"), *(a for s in sets for a in ("--set", s))],
                         capture_output=True, text=True, check=False, cwd=REPO)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def test_every_document_is_a_valid_object_of_its_kind():
    api = ApiClient()
    docs = render()
    for doc in docs:
        model = MODELS[(doc["apiVersion"], doc["kind"])]
        obj = api.deserialize(json.dumps(doc), model, "application/json")
        assert api.sanitize_for_serialization(obj) == doc, f"{doc['kind']} {doc['metadata']['name']}: a field the model does not know"


def test_replicas_and_one_address_per_forwarder_come_from_the_values():
    docs = render("web.replicas=5", "forwarders.replicas=3")
    by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    assert by[("Deployment", "fnserve-web")]["spec"]["replicas"] == 5
    assert by[("StatefulSet", "fnserve-forwarder")]["spec"]["replicas"] == 3
    assert {n for k, n in by if k == "Service" and n.startswith("fnserve-forwarder-")} == {f"fnserve-forwarder-{i}" for i in range(3)}
    env = {e["name"]: e for e in by[("StatefulSet", "fnserve-forwarder")]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["FNSERVE_FORWARDER_ADVERTISE"]["value"].startswith("tcp://$(POD_NAME).")  # each pod its own pool id


def test_selectors_match_their_pods_and_nothing_runs_as_root():
    for doc in render():
        spec = doc.get("spec", {})
        template = spec.get("template")
        if template is None:
            continue
        pod_labels = template["metadata"]["labels"]
        if "selector" in spec:
            assert spec["selector"]["matchLabels"].items() <= pod_labels.items()
        assert template["spec"]["securityContext"]["runAsNonRoot"] is True


def test_pods_do_not_migrate_and_the_migration_job_does():
    docs = render()
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet"):
            env = {e["name"]: e.get("value") for e in doc["spec"]["template"]["spec"]["containers"][0]["env"]}
            assert env["FNSERVE_MIGRATE_ON_START"] == "0"
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "Job"] == ["fnserve-migrate-0-1-0"]


@pytest.mark.parametrize("setting, message", [
    ("settings.FNSERVE_REDIS_SENTINAL=a:1", "not read by the service"),
    ("settings.FNSERVE_REDIS_URL=redis://:pw@r/0", "belong in the Secret"),
])
def test_a_setting_the_service_does_not_read_or_a_secret_in_values_is_refused(setting, message):
    out = subprocess.run([sys.executable, str(REPO / "deploy/kubernetes/render.py"), "--set", setting],
                         capture_output=True, text=True, check=False, cwd=REPO)
    assert out.returncode != 0 and message in out.stderr


def test_the_compose_env_file_supplies_the_settings_but_not_its_secrets_or_deployment_lines():
    out = subprocess.run([sys.executable, str(REPO / "deploy/kubernetes/render.py"), "--env-file", str(REPO / "deploy/compose.env")],
                         capture_output=True, text=True, check=False, cwd=REPO)
    assert out.returncode == 0, out.stderr
    [config] = [d for d in yaml.safe_load_all(out.stdout) if d and d["kind"] == "ConfigMap"]
    compose_env = (REPO / "deploy/compose.env").read_text()
    assert "FNSERVE_REDIS_REPLICAS_ACK=2" in compose_env and config["data"]["FNSERVE_REDIS_REPLICAS_ACK"] == "2"
    assert not [k for k in config["data"] if k.startswith("DEPLOY_")]
    assert "FNSERVE_METRICS_TOKEN" not in config["data"] and "FNSERVE_REDIS_SENTINEL_PASSWORD" not in config["data"]
    assert "CHANGE-ME" not in out.stdout
