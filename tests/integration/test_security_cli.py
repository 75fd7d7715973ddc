"""The CLI commands of issue 5 against a real web service (Werkzeug in a thread, real Redis and
SQLite): login/whoami/logout, share, groups, allowlists, usage, and the operator's token and
quota commands (which run `python -m web_service.admin` as real subprocesses)."""

from __future__ import annotations

import json
import threading

import pytest
from click.testing import CliRunner
from werkzeug.serving import make_server

from fnserve.cli.main import main
from fnserve.client import Client
from web_service.admin import add_user
from web_service.app import create_app
from web_service.settings import Settings


@pytest.fixture
def service(tmp_path, redis_url, redis_client, monkeypatch):
    db = f"sqlite:///{tmp_path / 'registry.db'}"
    settings = Settings(database_url=db, redis_url=redis_url, forwarder_key_file=str(tmp_path / "forwarder.key"), cache_seconds=0.5)
    app = create_app(settings)
    http = make_server("127.0.0.1", 0, app, threaded=True)
    th = threading.Thread(target=http.serve_forever, daemon=True)
    th.start()
    monkeypatch.setenv("FNSERVE_DATABASE_URL", db)  # for the operator commands
    for var in ("FNSERVE_TOKEN", "FNSERVE_SERVICE_URL", "FNSERVE_CLIENT_ID", "FNSERVE_CLIENT_SECRET"):
        monkeypatch.delenv(var, raising=False)
    yield f"http://127.0.0.1:{http.server_port}", settings, tmp_path
    http.shutdown()
    th.join(5)


def _as(runner: CliRunner, home, *args: str, input: str | None = None):
    result = runner.invoke(main, list(args), env={"FNSERVE_HOME": str(home)}, input=input, catch_exceptions=False)
    return result


def test_cli_login_share_allowlist_usage_and_operator_commands(service, capfd):
    url, settings, tmp = service
    runner = CliRunner()
    ann_home, ben_home = tmp / "ann", tmp / "ben"
    ann_token, ben_token = add_user(settings, "ann"), add_user(settings, "ben")
    out = _as(runner, ann_home, "login", "--service", url, input=ann_token + "\n")  # the token is prompted for, hidden
    assert out.exit_code == 0 and "logged in" in out.output and "as ann (local)" in out.output
    assert ann_token not in out.output
    assert _as(runner, ben_home, "login", "--service", url, "--token", ben_token).exit_code == 0
    assert _as(runner, ann_home, "whoami").output.startswith("ann ")
    bad = _as(runner, tmp / "eve", "login", "--service", url, "--token", "fns_wrong")
    assert bad.exit_code == 1 and "invalid_token" in bad.output

    ann = Client(url, ann_token)
    fid = ann.register_source("def f(x):\n    return x\n", "f")
    eid = ann.register_endpoint("ep")["endpoint_id"]
    shared = json.loads(_as(runner, ann_home, "share", "function", fid, "--user", "ben").output)
    assert shared == {"public": False, "users": ["ben"], "groups": []}
    assert _as(runner, ann_home, "group", "create", "lab").exit_code == 0
    assert json.loads(_as(runner, ann_home, "group", "add", "lab", "ben").output)["members"] == ["ann", "ben"]
    assert _as(runner, ann_home, "share", "endpoint", eid, "--group", "lab").exit_code == 0
    assert json.loads(_as(runner, ann_home, "endpoint", "allow", eid, fid).output)["function_ids"] == [fid]
    assert json.loads(_as(runner, ann_home, "endpoint", "allowlist", eid).output)["restricted"] is True
    ben = Client(url, ben_token)
    # A restricted endpoint takes data-only (JSON) arguments (docs/security.md, serializer policy).
    ben.submit(fid, eid, (1,), serializer="json-data")
    refused = _as(runner, ben_home, "share", "function", fid, "--user", "eve")
    assert refused.exit_code == 1 and "owner_only" in refused.output
    assert json.loads(_as(runner, ann_home, "unshare", "function", fid, "--user", "ben").output)["users"] == []
    usage = _as(runner, ann_home, "usage")
    assert usage.exit_code == 0 and "ann" in usage.output and "endpoint ep" in usage.output

    # Operator commands run `python -m web_service.admin` (its output goes to the real stdout).
    capfd.readouterr()
    assert _as(runner, tmp, "service", "quota", "set", "ben", "--tasks", "100", "--core-hours", "2.5", "--period", "week").exit_code == 0
    assert _as(runner, tmp, "service", "quota", "show", "ben").exit_code == 0
    assert json.loads(capfd.readouterr().out.strip().splitlines()[-1]) == {"period": "week", "max_tasks": 100, "max_core_hours": 2.5}
    assert _as(runner, tmp, "service", "token", "list", "ben").exit_code == 0
    assert ben_token not in capfd.readouterr().out  # listed by id and label, never the token
    assert _as(runner, tmp, "service", "token", "revoke", input=ben_token + "\n").exit_code == 0
    assert "revoked" in capfd.readouterr().out
    import time

    time.sleep(settings.cache_seconds + 0.2)  # verified tokens are cached in-process this long
    gone = _as(runner, ben_home, "whoami")
    assert gone.exit_code == 1 and "invalid_token" in gone.output
    assert _as(runner, ann_home, "logout").output.strip() == "logged out"
    assert _as(runner, ann_home, "whoami").exit_code == 1
