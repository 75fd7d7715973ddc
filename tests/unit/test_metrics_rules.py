"""The rules behind the metrics: who may read /metrics, labels, bind addresses, hop durations,
what a recorded batch counts; and the web service's /metrics route on a real Flask app."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fnserve.messages import ResultMessage, TaskMessage
from fnserve.metrics_bind import MetricsBindError, is_loopback, parse_bind
from site_manager.metrics import hop_durations
from web_service import forwarder_metrics
from web_service.metrics import UNMATCHED, may_read_metrics, route_label
from web_service.server import prepare_multiprocess_dir


@pytest.mark.parametrize("addr, auth, forwarded, token, ok", [
    ("127.0.0.1", "", False, "", True),
    ("::1", "", False, "", True),
    ("10.1.2.3", "", False, "", False),          # another host, no token configured
    ("127.0.0.1", "", True, "", False),          # a proxy on this host relays someone else
    (None, "", False, "", False),
    ("10.1.2.3", "Bearer s3cret", False, "s3cret", True),
    ("10.1.2.3", "bearer s3cret", True, "s3cret", True),
    ("127.0.0.1", "", False, "s3cret", False),   # a token, once set, is needed from loopback too
    ("10.1.2.3", "Bearer wrong", False, "s3cret", False),
    ("10.1.2.3", "Basic s3cret", False, "s3cret", False),
])
def test_who_may_read_metrics(addr, auth, forwarded, token, ok):
    assert may_read_metrics(addr, auth, forwarded, token) is ok


def test_route_label_is_the_template_or_one_label_for_no_route():
    assert route_label("/v1/tasks/<task_id>") == "/v1/tasks/<task_id>"
    assert route_label(None) == UNMATCHED


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:9101", ("127.0.0.1", 9101)), (":9101", ("127.0.0.1", 9101)), ("[::1]:9102", ("::1", 9102)),
    ("0.0.0.0:0", ("0.0.0.0", 0)),
])
def test_parse_bind(text, expected):
    assert parse_bind(text) == expected


@pytest.mark.parametrize("text", ["9101", "host:", "host:http", "127.0.0.1:70000", ""])
def test_parse_bind_refuses_what_is_not_host_port(text):
    with pytest.raises(MetricsBindError, match="HOST:PORT"):
        parse_bind(text)


def test_loopback():
    assert is_loopback("127.0.0.2") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.org") and not is_loopback("10.0.0.1")


def test_hop_durations_cover_the_hops_present_and_never_go_negative():
    t = {"forwarder_dispatched": 10.0, "site_received": 9.99, "worker_started": 10.5, "worker_finished": 12.0}
    assert hop_durations(t) == pytest.approx({"forwarder_to_site": 0.0, "site_to_worker": 0.51, "worker_run": 1.5})


def _value(name: str, **labels: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_recorded_batch_counts_outcomes_rejects_and_duplicates():
    before = {s: _value("fnserve_forwarder_tasks_total", state=s) for s in ("success", "failed", "duplicate", "rejected")}
    sizes0 = _value("fnserve_forwarder_result_bytes_count")
    trips0 = _value("fnserve_forwarder_round_trip_seconds_count")
    results = [
        ResultMessage(task_id="a", ok=True, data=b"x" * 100, timings={"forwarder_dispatched": 1.0}),
        ResultMessage(task_id="b", ok=False),
        ResultMessage(task_id="c", ok=True),  # already finished: a duplicate
        ResultMessage(task_id="d", ok=True),  # rejected (not held by the endpoint)
    ]
    forwarder_metrics.count_recorded(results, ["a", "b"], 1, now=3.0)
    after = {s: _value("fnserve_forwarder_tasks_total", state=s) for s in before}
    assert {s: after[s] - before[s] for s in before} == {"success": 1, "failed": 1, "duplicate": 1, "rejected": 1}
    assert _value("fnserve_forwarder_result_bytes_count") - sizes0 == 2
    assert _value("fnserve_forwarder_round_trip_seconds_count") - trips0 == 1


def test_dispatch_delay_is_observed_only_for_tasks_with_a_submit_time():
    n0 = _value("fnserve_forwarder_dispatch_delay_seconds_count")
    d0 = _value("fnserve_forwarder_tasks_total", state="dispatched")
    task = TaskMessage(task_id="t", function_id="f", function=b"", payload=b"")
    forwarder_metrics.count_dispatched([(task, 5.0), (task, 0.0)], now=6.0)
    assert _value("fnserve_forwarder_dispatch_delay_seconds_count") - n0 == 1
    assert _value("fnserve_forwarder_tasks_total", state="dispatched") - d0 == 2


def test_multiprocess_folder_is_emptied_and_exported(tmp_path, monkeypatch):
    folder = tmp_path / "prom"
    folder.mkdir()
    (folder / "counter_1.db").write_bytes(b"old")
    (folder / "keep.txt").write_text("not ours")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(folder))
    assert prepare_multiprocess_dir("/unused") == str(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["keep.txt"]
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    fresh = tmp_path / "fresh"
    assert prepare_multiprocess_dir(str(fresh)) == str(fresh)
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(fresh) and oct(fresh.stat().st_mode & 0o777) == "0o700"


def test_values_of_processes_that_exited_still_count_in_multiprocess_mode(tmp_path):
    """Two short-lived processes count requests; a third sums them (as /metrics does)."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    count = ("from web_service.metrics import REQUESTS; REQUESTS.labels('/v1/health', 'GET', '200').inc({n})")
    for n in (3, 4):
        subprocess.run([sys.executable, "-c", count.format(n=n)], env=env, check=True)
    read = ("from prometheus_client import generate_latest; from web_service.metrics import registry; "
            "print(generate_latest(registry()).decode())")
    text = subprocess.run([sys.executable, "-c", read], env=env, check=True, capture_output=True, text=True).stdout
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples[("fnserve_web_http_requests_total", (("code", "200"), ("method", "GET"), ("route", "/v1/health")))] == 7


def test_metrics_route_answers_loopback_and_the_token_and_refuses_others(tmp_path):
    from web_service.app import create_app
    from web_service.settings import Settings

    db = f"sqlite:///{tmp_path / 'r.db'}"
    # No Redis is contacted: /metrics and the version route read none.
    app = create_app(Settings(database_url=db, redis_url="redis://127.0.0.1:1/0", access_log=False))
    client = app.test_client()
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "127.0.0.1"}).status_code == 200
    refused = client.get("/metrics", environ_base={"REMOTE_ADDR": "192.0.2.1"})
    assert refused.status_code == 403 and refused.json["error"]["code"] == "metrics_forbidden"
    assert "FNSERVE_METRICS_TOKEN" in refused.json["error"]["message"]

    app = create_app(Settings(database_url=db, redis_url="redis://127.0.0.1:1/0", access_log=False, metrics_token="t0k"))
    client = app.test_client()
    remote = {"REMOTE_ADDR": "192.0.2.1"}
    assert client.get("/metrics", environ_base=remote).status_code == 403
    ok = client.get("/metrics", environ_base=remote, headers={"Authorization": "Bearer t0k"})
    assert ok.status_code == 200 and ok.content_type.startswith("text/plain")
    client.get("/v1/version", environ_base=remote)
    text = client.get("/metrics", environ_base=remote, headers={"Authorization": "Bearer t0k"}).text
    assert 'fnserve_web_http_requests_total{code="200",method="GET",route="/v1/version"}' in text
