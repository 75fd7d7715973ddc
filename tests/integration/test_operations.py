"""Operating a real stack: `fnserve up` with 2 gunicorn workers, the forwarder and a local
endpoint serving Prometheus metrics.

- N tasks run, then every /metrics is scraped over HTTP and its counters must equal what was
  done (deltas against a scrape taken first); the Grafana dashboard uses only metrics that exist.
- `fnserve endpoint enable-on-boot` writes a unit that `systemd-analyze verify` accepts. systemd
  itself does not run here: the stand-in starts the unit's ExecStart= with only the unit's
  Environment= (as systemd would), runs a task through it, and stops it as KillMode=mixed does
  (SIGTERM to the main process alone): it must exit 0 and leave no process behind.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families
from stack_support import REPO, running_stack

from fnserve.task_results import result_of

N = 12  # tasks
M = 30  # health requests, each on a fresh connection (spread over both web workers)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _http(url: str, method: str = "GET", path: str = "/", body: dict | None = None,
          headers: dict[str, str] | None = None) -> tuple[int, str]:
    """One request on a fresh connection (so gunicorn's workers share them out)."""
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=90)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data, headers={**({"Content-Type": "application/json"} if data else {}), **(headers or {})})
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


class Scrape:
    """One scrape: sample values by (name, labels)."""

    def __init__(self, url: str, path: str = "/metrics"):
        status, self.text = _http(url, path=path)
        assert status == 200, self.text
        self.samples: dict[tuple[str, frozenset], float] = {}
        for family in text_string_to_metric_families(self.text):
            for s in family.samples:
                self.samples[(s.name, frozenset(s.labels.items()))] = s.value

    def get(self, name: str, **labels: str) -> float:
        return self.samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    ports = {"forwarder": _free_port(), "site": _free_port()}
    env = {"FNSERVE_WEB_WORKERS": "2", "FNSERVE_FORWARDER_METRICS": f"127.0.0.1:{ports['forwarder']}",
           "FNSERVE_SITE_METRICS": f"127.0.0.1:{ports['site']}"}
    with running_stack(tmp_path_factory.mktemp("fnserve-home"), extra_env=env) as stack:
        stack.forwarder_metrics = f"http://127.0.0.1:{ports['forwarder']}"
        stack.site_metrics = f"http://127.0.0.1:{ports['site']}"
        yield stack


def echo(x):
    return x


def _scrapes(stack) -> tuple[Scrape, Scrape, Scrape]:
    return Scrape(stack.url), Scrape(stack.forwarder_metrics), Scrape(stack.site_metrics)


def test_counters_equal_the_tasks_run(stack):
    fc = stack.client()
    fid = fc.register_function(echo, serializer="source")
    marker = f"payload-{uuid.uuid4().hex}"  # must never reach a metric
    web0, fwd0, site0 = _scrapes(stack)

    task_ids = [fc.run(fid, stack.endpoint_id, marker) for _ in range(N)]
    auth = {"Authorization": f"Bearer {stack.token}"}
    status, body = _http(stack.url, "POST", "/v1/tasks/results", {"task_ids": task_ids, "wait": 60}, auth)
    assert status == 200, body
    tasks = json.loads(body)["tasks"]
    assert [t["state"] for t in tasks] == ["success"] * N
    assert {result_of(t, None) for t in tasks} == {marker}
    web, fwd, site = _scrapes(stack)

    def delta(after: Scrape, before: Scrape, name: str, **labels: str) -> float:
        return after.get(name, **labels) - before.get(name, **labels)

    # The web service: requests by route template and code, the long-poll, the results served.
    assert delta(web, web0, "fnserve_web_http_requests_total", route="/v1/tasks", method="POST", code="202") == N
    assert delta(web, web0, "fnserve_web_http_requests_total", route="/v1/tasks/results", method="POST", code="200") == 1
    assert delta(web, web0, "fnserve_web_longpoll_waits_total", outcome="admitted") == 1
    assert web.get("fnserve_web_longpoll_waits_open") == 0
    assert delta(web, web0, "fnserve_web_result_bytes_count") == N
    assert delta(web, web0, "fnserve_web_http_request_duration_seconds_count", route="/v1/tasks") == N

    # The forwarder: tasks by state, the hops, one connected endpoint with nothing left queued.
    assert delta(fwd, fwd0, "fnserve_forwarder_tasks_total", state="dispatched") == N
    assert delta(fwd, fwd0, "fnserve_forwarder_tasks_total", state="success") == N
    assert delta(fwd, fwd0, "fnserve_forwarder_tasks_total", state="failed") == 0
    assert delta(fwd, fwd0, "fnserve_forwarder_dispatch_delay_seconds_count") == N
    assert delta(fwd, fwd0, "fnserve_forwarder_round_trip_seconds_count") == N
    assert delta(fwd, fwd0, "fnserve_forwarder_result_bytes_count") == N
    assert delta(fwd, fwd0, "fnserve_forwarder_result_bytes_sum") >= N * len(marker)
    assert fwd.get("fnserve_forwarder_connected_endpoints") == 1
    assert fwd.get("fnserve_forwarder_queued_tasks", endpoint_id=stack.endpoint_id) == 0
    assert fwd.get("fnserve_forwarder_inflight_tasks", endpoint_id=stack.endpoint_id) == 0

    # The site manager: attempts and outcomes, nothing running, every hop observed per task.
    assert delta(site, site0, "fnserve_site_tasks_total", outcome="received") == N
    assert delta(site, site0, "fnserve_site_tasks_total", outcome="success") == N
    assert site.get("fnserve_site_tasks_running") == 0
    for hop in ("forwarder_to_site", "site_to_worker", "worker_run", "worker_to_site"):
        assert delta(site, site0, "fnserve_site_hop_seconds_count", hop=hop) == N, hop

    # Nothing of a task or a user is in any of them: no payload, token, task or function id.
    for scrape in (web, fwd, site):
        for secret in (marker, stack.token, fid, *task_ids):
            assert secret not in scrape.text


def test_every_gunicorn_worker_counts_into_one_total(stack):
    """Two workers answer requests and scrapes; every scrape must show all of them."""
    before = Scrape(stack.url).get("fnserve_web_http_requests_total", route="/v1/health", method="GET", code="200")
    for _ in range(M):
        assert _http(stack.url, path="/v1/health")[0] == 200
    for _ in range(4):  # fresh connections: the scrapes land on either worker
        after = Scrape(stack.url).get("fnserve_web_http_requests_total", route="/v1/health", method="GET", code="200")
        assert after - before == M
    # Both workers keep their values in one folder (prometheus_client's multiprocess mode).
    master = int((stack.home / "service" / "run" / "web.pid").read_text())
    workers = [p.pid for p in psutil.Process(master).children()]
    assert len(workers) == 2
    folders = set()
    for pid in workers:
        maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
        dbs = {Path(line.split()[-1]) for line in maps if line.endswith(f"_{pid}.db")}
        assert dbs, f"worker {pid} maps no metrics file"
        folders |= {db.parent for db in dbs}
    assert len(folders) == 1


def test_metrics_refused_through_a_proxy_and_unknown_routes_share_one_label(stack):
    status, body = _http(stack.url, path="/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
    assert status == 403 and json.loads(body)["error"]["code"] == "metrics_forbidden"
    probe = f"/no-such-{uuid.uuid4().hex}"
    assert _http(stack.url, path=probe)[0] == 404
    text = Scrape(stack.url).text
    assert probe not in text
    assert 'route="<unmatched>"' in text


def test_the_grafana_dashboard_uses_only_metrics_that_exist(stack):
    exposed = set()
    for scrape in _scrapes(stack):
        exposed |= {name for name, _ in scrape.samples}
    dashboard = json.loads((REPO / "deploy/grafana/fnserve-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {name for e in exprs for name in re.findall(r"fnserve_[a-z_]+", e)}
    assert len(used) >= 12
    assert used - exposed == set()
    assert dashboard["__inputs"][0]["pluginId"] == "prometheus"


def _unit(text: str) -> tuple[list[str], dict[str, str]]:
    """ExecStart= and Environment= of a unit, read as systemd reads them."""
    argv: list[str] = []
    env: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key == "ExecStart":
            argv = [a.replace("%%", "%") for a in shlex.split(value)]
        elif key == "Environment":
            name, _, val = shlex.split(value)[0].partition("=")
            env[name] = val
    return argv, env


def test_enable_on_boot_writes_a_unit_that_runs_the_endpoint(stack, tmp_path):
    units = tmp_path / "units"
    out = stack.cli("endpoint", "enable-on-boot", "local", "--unit-dir", str(units))
    path = units / "fnserve-endpoint-local.service"
    assert str(path) in out.stdout and "systemctl daemon-reload" in out.stdout
    text = path.read_text()
    assert "User=root" in text and "KillMode=mixed" in text and "RestartPreventExitStatus=2" in text
    verify = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, check=False)
    assert verify.returncode == 0 and verify.stderr.strip() == "", verify.stderr

    stack.cli("endpoint", "stop", "local")
    argv, env = _unit(text)
    assert env["FNSERVE_HOME"] == str(stack.home)
    # What systemd would start: ExecStart= with the unit's environment and little else.
    proc = subprocess.Popen(argv, env={"HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8", **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        fc = stack.client()
        deadline = time.monotonic() + 90
        while not fc.get_endpoint_status(stack.endpoint_id).get("connected"):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the unit's site manager did not connect"
            time.sleep(0.2)
        fid = fc.register_function(echo, serializer="source")
        assert fc.get_result(fc.run(fid, stack.endpoint_id, "from the unit"), timeout=60) == "from the unit"
        children = psutil.Process(proc.pid).children(recursive=True)
        assert children, "the site manager runs its interchange and workers as children"
        proc.send_signal(signal.SIGTERM)  # KillMode=mixed: the main process alone
        assert proc.wait(timeout=60) == 0
        gone, alive = psutil.wait_procs(children, timeout=10)
        assert alive == [], f"left behind: {alive}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    stack.cli("endpoint", "disable-on-boot", "local", "--unit-dir", str(units))
    assert not path.exists()


def test_service_units_verify():
    """deploy/systemd's units, with their venv path pointed at this Python (the stand-in for
    an /opt/fnserve/venv install)."""
    import sys

    target = Path("/tmp") / f"fnserve-units-{uuid.uuid4().hex[:8]}"
    target.mkdir()
    try:
        for unit in sorted((REPO / "deploy/systemd").glob("*.service")):
            text = unit.read_text().replace("/opt/fnserve/venv/bin/python", sys.executable)
            (target / unit.name).write_text(text)
            verify = subprocess.run(["systemd-analyze", "verify", str(target / unit.name)], capture_output=True, text=True, check=False)
            assert verify.returncode == 0 and verify.stderr.strip() == "", verify.stderr
    finally:
        shutil.rmtree(target)
