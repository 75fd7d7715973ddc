"""The dashboard in a real browser against the real embedded stack.

Debian's chromium, driven by Playwright through its ``executable_path`` (no browser is
downloaded), talks to `fnserve up` (Redis, gunicorn web service, forwarder, a local endpoint on
Parsl) started once for the module. Everything a page shows live must arrive without a reload:
each check sets a marker on ``window`` first and finds it still there afterwards.

Screenshots of every page go to ``$FNSERVE_SCREENSHOT_DIR`` (docs/img to refresh the ones the
docs show) or else to a temporary folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fnserve.errors import RemoteExecutionError
from fnserve.testing.stack import Stack
from tests.integration.stack_support import REPO, running_stack

playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (fnserve[test])")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
XSS_NAME = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'
LIVE = 15_000  # ms: what a live update may take (heartbeats come every 2 s)


def _admin(stack: Stack, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "web_service.admin", *args], env=stack.env, capture_output=True,
                         text=True, timeout=60, cwd=REPO, check=True)
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium chromium-driver (scripts/test.sh does)")
    with running_stack(tmp_path_factory.mktemp("dashboard-home")) as st:
        yield st


@pytest.fixture(scope="module")
def browser(stack: Stack) -> Iterator[object]:
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get("FNSERVE_SCREENSHOT_DIR") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def screenshot(page: object, shots: Path, name: str) -> None:
    path = shots / f"dashboard-{name}.png"
    page.screenshot(path=str(path), full_page=True)  # type: ignore[attr-defined]
    assert path.stat().st_size > 5000


def log_in(browser: object, stack: Stack, token: str) -> object:
    """A fresh browser context (its own cookies), logged in through the login form."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})  # type: ignore[attr-defined]
    page = context.new_page()
    page.goto(stack.url + "/")  # the root sends the browser to the dashboard, which asks for a login
    assert "/dashboard/login" in page.url
    page.fill("#token", token)
    page.click("form button[type=submit]")
    page.wait_for_url("**/dashboard/endpoints")
    return page


def mark(page: object) -> None:
    page.evaluate("window.__notReloaded = true")  # type: ignore[attr-defined]


def not_reloaded(page: object) -> bool:
    return page.evaluate("window.__notReloaded === true")  # type: ignore[attr-defined,no-any-return]


@pytest.fixture(scope="module")
def alice(browser: object, stack: Stack) -> object:
    stack.cli("service", "user", "operator", stack.client().whoami()["username"])  # the stack's own user
    return log_in(browser, stack, stack.token)


def test_login_sets_a_strict_httponly_session_and_never_puts_the_token_in_a_url(alice, stack):
    cookies = {c["name"]: c for c in alice.context.cookies()}
    session = cookies["fns_dashboard"]
    assert session["httpOnly"] and session["sameSite"] == "Strict" and session["path"] == "/dashboard"
    assert stack.token not in alice.url and stack.token not in session["value"]
    resp = alice.goto(stack.url + "/dashboard/endpoints")
    csp = resp.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert alice.locator(f'tr[data-id="{stack.endpoint_id}"]').get_attribute("data-connected") == "yes"


def test_a_task_goes_from_waiting_to_success_live_and_the_endpoint_goes_disconnected_and_back(browser, alice, stack, shots):
    fc = stack.client()

    def triple(x):
        return 3 * x

    fid = fc.register_function(triple)
    endpoints = alice
    endpoints.goto(stack.url + "/dashboard/endpoints")
    row = f'tr[data-id="{stack.endpoint_id}"]'
    endpoints.wait_for_selector(f'{row}[data-connected="yes"]')
    tasks = endpoints.context.new_page()
    tasks.goto(stack.url + "/dashboard/tasks")
    for page in (endpoints, tasks):
        mark(page)
        page.wait_for_selector('#live-status[data-state="live"]')

    stack.cli("endpoint", "stop", "local")
    endpoints.wait_for_selector(f'{row}[data-connected="no"]', timeout=LIVE)
    assert "disconnected" in endpoints.inner_text(row)
    screenshot(endpoints, shots, "endpoints-disconnected")

    task_id = fc.run(fid, stack.endpoint_id, 14)
    tasks.wait_for_selector(f'tr[data-id="{task_id}"][data-state="waiting-for-endpoint"]', timeout=LIVE)
    endpoints.wait_for_selector(f'{row} td[data-field="waiting"]:text-is("1")', timeout=LIVE)

    stack.cli("endpoint", "start", "local")
    tasks.wait_for_selector(f'tr[data-id="{task_id}"][data-state="success"]', timeout=90_000)
    endpoints.wait_for_selector(f'{row}[data-connected="yes"]', timeout=LIVE)
    assert fc.get_result(task_id, timeout=30) == 42
    assert not_reloaded(tasks) and not_reloaded(endpoints)
    assert "triple" in tasks.inner_text(f'tr[data-id="{task_id}"]')
    screenshot(endpoints, shots, "endpoints")
    endpoints.goto(f"{stack.url}/dashboard/endpoints/{stack.endpoint_id}")
    endpoints.wait_for_selector("text=Runtimes and warm pools")
    screenshot(endpoints, shots, "endpoint")
    tasks.close()


def test_a_task_page_shows_live_outputs_then_the_result_and_its_timeline(alice, stack, tmp_path, shots):
    fc = stack.client()
    gate = tmp_path / "gate"

    def staged(gate_path):
        import os
        import time

        import fnserve

        fnserve.report(stage="started", progress=0.5)
        while not os.path.exists(gate_path):  # the test opens the gate once it saw the first output
            time.sleep(0.05)
        fnserve.report(stage="finishing", progress=1.0)
        print("all done")
        return {"answer": 42}

    # JSON arguments and result: the page shows a JSON result (a dill one only by its size).
    task_id = fc.submit(fc.register_function(staged), stack.endpoint_id, [str(gate)], serializer="json-data")
    page = alice
    page.goto(f"{stack.url}/dashboard/tasks/{task_id}")
    mark(page)
    page.wait_for_selector('#outputs li >> text=started', timeout=60_000)
    assert page.locator("#outputs li").count() == 1
    gate.write_text("open")
    page.wait_for_selector('#outputs li >> text=finishing', timeout=LIVE)
    page.wait_for_selector('#task-state:text("success")', timeout=LIVE)
    assert not_reloaded(page)
    assert '"answer": 42' in page.inner_text("pre.result")
    assert "all done" in page.inner_text("pre.stream")
    assert page.locator("svg.timeline rect.hop").count() >= 4  # per-hop timeline, from the real timings
    assert "running" in page.text_content("svg.timeline")
    screenshot(page, shots, "task")


def test_a_failed_task_shows_its_remote_traceback(alice, stack, shots):
    fc = stack.client()

    def ratio(a, b):
        return a / b

    task_id = fc.run(fc.register_function(ratio), stack.endpoint_id, 1, 0)
    with pytest.raises(RemoteExecutionError):
        fc.get_result(task_id, timeout=60)
    alice.goto(f"{stack.url}/dashboard/tasks/{task_id}")
    assert alice.inner_text("#task-state") == "failed"
    traceback = alice.inner_text("pre.traceback")
    assert "ZeroDivisionError" in traceback and "return a / b" in traceback
    screenshot(alice, shots, "task-failed")


def test_user_controlled_text_is_shown_as_text_and_never_runs(alice, stack):
    fc = stack.client()

    def shout():
        print('<script>window.__xss = 3</script><b onmouseover="window.__xss = 4">out</b>')
        return "<script>window.__xss = 5</script>"

    fid = fc.register_function(shout, name=XSS_NAME, description=XSS_NAME)
    task_id = fc.submit(fid, stack.endpoint_id, serializer="json-data")
    fc.get_result(task_id, timeout=60)
    for path in ("/dashboard/functions", f"/dashboard/functions/{fid}", "/dashboard/tasks", f"/dashboard/tasks/{task_id}"):
        alice.goto(stack.url + path)
        alice.wait_for_load_state("load")
        assert alice.evaluate("window.__xss") is None, path
        assert alice.locator("script:not([src])").count() == 0, path  # no script element made from data
    assert XSS_NAME in alice.inner_text("main")  # the function's name, shown literally
    assert "<script>window.__xss = 3</script>" in alice.inner_text("pre.stream")
    assert "window.__xss = 5" in alice.inner_text("pre.result")


def test_usage_functions_and_operators_pages(alice, stack, shots):
    fc = stack.client()
    deadline = time.monotonic() + 30
    while fc.usage()["user"]["tasks"] < 3:  # usage rows follow results by about a second
        assert time.monotonic() < deadline, fc.usage()
        time.sleep(0.2)
    alice.goto(stack.url + "/dashboard/tasks")
    assert alice.locator("tbody tr[data-state]").count() >= 4
    screenshot(alice, shots, "tasks")
    alice.goto(stack.url + "/dashboard/usage")
    assert alice.locator(f'section[data-id="{stack.endpoint_id}"] svg rect.bar').count() >= 7  # a week of days
    screenshot(alice, shots, "usage")
    alice.goto(stack.url + "/dashboard/functions")
    assert "triple" in alice.inner_text("table")
    screenshot(alice, shots, "functions")
    alice.goto(stack.url + "/dashboard/operators")
    alice.wait_for_selector("text=Service health")
    assert "redis ok" in alice.inner_text("main") and "database ok" in alice.inner_text("main")
    screenshot(alice, shots, "operators")


def test_another_user_sees_none_of_it_and_cannot_open_it_by_url(browser, alice, stack, shots):
    fc = stack.client()
    task_id = fc.run(fc.register_function(lambda: 1, name="alices_private_fn"), stack.endpoint_id)
    fid = fc.get_task(task_id)["function_id"]
    bob = log_in(browser, stack, _admin(stack, "add-user", "bob"))
    for path in ("/dashboard/endpoints", "/dashboard/tasks", "/dashboard/functions", "/dashboard/usage"):
        bob.goto(stack.url + path)
        text = bob.content()
        for secret in (stack.endpoint_id, task_id, fid, "alices_private_fn", "triple"):
            assert secret not in text, (path, secret)
    assert bob.locator("nav >> text=Operators").count() == 0
    for path in (f"/dashboard/tasks/{task_id}", f"/dashboard/endpoints/{stack.endpoint_id}", f"/dashboard/functions/{fid}",
                 "/dashboard/operators"):
        resp = bob.goto(stack.url + path)
        assert resp.status in (403, 404), (path, resp.status)
        assert "alices_private_fn" not in bob.content() and "ratio" not in bob.content()
    screenshot(bob, shots, "forbidden")
    bob.context.close()
