"""The REST contract holds under generated and hostile input: schemathesis against the live service.

A real `fnserve up` stack (gunicorn, Redis, SQLite registry, forwarder, local endpoint) in a
temporary home; schemathesis reads `GET /v1/openapi.json` from it and sends generated requests
(valid and invalid bodies, query strings and path ids) with a valid bearer token. It fails on any
5xx, a status code or content type the document does not list, or a body that does not match the
documented schema. The number of examples is bounded so the run stays well under 2 minutes.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
import requests
from stack_support import running_stack

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, monkeypatch_module):
    # Long-polls capped at 1 s: generated `wait` values must not stall the run.
    monkeypatch_module.setenv("FNSERVE_MAX_WAIT", "1")
    with running_stack(tmp_path_factory.mktemp("contract")) as s:
        yield s


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_openapi_document_is_public_and_names_every_operation(stack):
    resp = requests.get(f"{stack.url}/v1/openapi.json", timeout=10)
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("application/json")
    doc = resp.json()
    assert doc["openapi"].startswith("3.") and "/v1/tasks" in doc["paths"]
    assert doc["paths"]["/v1/tasks/{task_id}/cancel"]["post"]["responses"]["200"]


def _real_ids(stack) -> dict[str, str]:
    """Ids of live resources, so generated requests reach the code behind the 404s: a function,
    an endpoint (not the stack's own, which a generated DELETE may remove), a queued task and
    a group and an object, all of the token's user."""
    client = stack.client()
    fid = client.register_function(_contract_probe)
    headers = {"Authorization": f"Bearer {stack.token}"}
    ep = requests.post(f"{stack.url}/v1/endpoints", json={"name": "contract"}, headers=headers, timeout=10).json()
    task_id = client.submit(fid, ep["endpoint_id"], (1,))
    requests.post(f"{stack.url}/v1/groups", json={"name": "contract-group"}, headers=headers, timeout=10)
    obj = client.objects.put(b"contract object", strategy="dill-data")
    trig = requests.post(f"{stack.url}/v1/triggers", json={"name": "contract", "kind": "webhook", "rules": [
        {"function_id": fid, "endpoint_id": ep["endpoint_id"]}]}, headers=headers, timeout=10).json()
    return {"function_id": fid, "endpoint_id": ep["endpoint_id"], "task_id": task_id, "ident": fid,
            "name": "contract-group", "trigger_id": trig["trigger_id"], "rule_id": trig["rules"][0]["rule_id"],
            "object_id": obj.object_id}


def _contract_probe(x: int) -> int:
    return x


def test_schemathesis_finds_no_server_errors_or_contract_violations(stack, tmp_path):
    st = shutil.which("st") or shutil.which("schemathesis")
    assert st, "schemathesis is part of the test extra: pip install -e '.[test]'"
    report = tmp_path / "report.json"
    config = tmp_path / "schemathesis.toml"
    config.write_text("[parameters]\n" + "".join(f'"path.{k}" = "{v}"\n' for k, v in _real_ids(stack).items()))
    out = subprocess.run([
        st, "--config-file", str(config), "run", f"{stack.url}/v1/openapi.json",
        "--header", f"Authorization: Bearer {stack.token}",
        "--checks", CHECKS, "--max-examples", "15", "--seed", "6",
        "--phases", "examples,coverage,fuzzing", "--request-timeout", "10", "--max-time", "60",
        "--generation-deterministic", "--continue-on-failure",
        "--report", "ndjson", "--report-ndjson-path", str(report),
    ], capture_output=True, text=True, timeout=170)
    tail = (out.stdout + out.stderr)[-8000:]
    assert out.returncode == 0, f"schemathesis found failures:\n{tail}"
    # It really exercised the API: many operations tested, not an empty run.
    assert "passed" in out.stdout, tail
    print(out.stdout[-3000:])
