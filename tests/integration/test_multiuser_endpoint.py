"""Multi-user endpoint, for real: root runs it, two fnserve users' tasks run as two OS accounts.

One stack for the module: `fnserve up` (web service, forwarder, Redis, its local endpoint), two
OS accounts made with useradd, three fnserve users (two mapped: one by an exact rule, one by a
mapping file; one mapped to nothing), and a multi-user endpoint run as root with a Jinja2 user
config template and a JSON schema. User endpoints run a Python every account can run: a venv of
the system's Python with this tree's fnserve[site] installed (root's own interpreter is under
/root, out of other accounts' reach, as on a real host).

Per-task resources ride the same stack: the embedded endpoint offers one core per worker (a task
asking for two is refused at submit), the user endpoints' template offers two.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from tests.os_accounts import OsAccount, os_account
from fnserve.testing.stack import FNSERVE
from stack_support import REPO, running_stack

from fnserve.client import Client
from fnserve.errors import FnserveError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a multi-user endpoint runs as root (it starts processes as other accounts)")

TEMPLATE = """\
engine:
  max_workers_per_node: {{ workers | default(1) }}
  cores_per_worker: 2
provider:
  type: local
scaling:
  init_blocks: 0
  max_blocks: 1
  max_idletime: 300
"""
SCHEMA = {"type": "object", "additionalProperties": False,
          "properties": {"workers": {"type": "integer", "minimum": 1, "maximum": 1}}}


def who_am_i(name: str) -> dict:
    """Runs in a task: the account it runs as, and a file it writes in its home."""
    import os

    path = os.path.join(os.environ["HOME"], name)
    with open(path, "w") as f:
        f.write("mine")
    mask = os.umask(0)
    os.umask(mask)
    return {"uid": os.getuid(), "gid": os.getgid(), "path": path, "owner": os.stat(path).st_uid, "home": os.environ["HOME"],
            "umask": mask, "root_env": "FNSERVE_HOME" in os.environ}


def allowance() -> dict:
    """Runs in a task: the CPUs and thread count it may use."""
    import os

    return {"cpus": len(os.sched_getaffinity(0)), "omp": os.environ.get("OMP_NUM_THREADS")}


def _user_python(folder: Path) -> str:
    """A venv every account can run: the system Python with this tree's fnserve[site] (pip)."""
    venv = folder / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120)
    out = subprocess.run([str(venv / "bin/pip"), "install", "-q", f"{REPO}[site]"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    subprocess.run(["chmod", "-R", "a+rX", str(folder)], check=True)
    return str(venv / "bin/python")


def _start_mep(stack, admin, tokens, shared: Path, name: str, rules: list, python: str, **multi_user):
    """Register a multi-user endpoint shared with ``tokens``' users and start it as root."""
    reg = admin.register_endpoint(name, "multi-user endpoint")
    eid = reg["endpoint_id"]
    admin.share_endpoint(eid, users=list(tokens))
    config = {
        "forwarder": reg["forwarder_address"], "endpoint_id": eid, "secret": reg["secret"],
        **{k: reg[k] for k in ("forwarder_public_key", "curve_public_key", "curve_secret_key") if reg.get(k)},
        "run_dir": str(shared / f"{name}-run"),
        "multi_user": {
            "identity_mapping": rules,
            "user_config_template": str(shared / "template.yaml.j2"),
            "user_config_schema": str(shared / "schema.json"),
            "python": python,
            "user_endpoints_dir": str(shared / f"users-{name}"),
            "stop_timeout": 20,
            **multi_user,
        },
    }
    (shared / f"{name}.yaml").write_text(yaml.safe_dump(config))
    log = open(shared / f"{name}.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "site_manager", "--config", str(shared / f"{name}.yaml")],
                            env={**os.environ}, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    return eid, proc, log


def _stop(proc: subprocess.Popen, log) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(90)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    shared = Path(tempfile.mkdtemp(prefix="fnserve-mu-", dir="/tmp"))
    os.chmod(shared, 0o755)
    with os_account("fnsmua") as acct_a, os_account("fnsmub") as acct_b, \
            running_stack(tmp_path_factory.mktemp("mu") / "home") as stack:
        python = _user_python(shared)
        tokens = {u: stack.cli("service", "user", "add", u).stdout.strip().splitlines()[-1] for u in ("mu_alice", "mu_bob", "mu_carol")}
        admin = stack.client()
        (shared / "identity-map").write_text(f"# identity account\nmu_bob {acct_b.name}\n")
        (shared / "template.yaml.j2").write_text(TEMPLATE)
        (shared / "schema.json").write_text(json.dumps(SCHEMA))
        alice = {"source": "{username}", "match": "mu_alice", "output": acct_a.name, "literal": True}
        meps = {
            "mep": _start_mep(stack, admin, tokens, shared, "mep", [alice, {"mapping_file": str(shared / "identity-map")}], python),
            # The same, but its user endpoints stop after 2 s without a task (alice only).
            "idle": _start_mep(stack, admin, tokens, shared, "idle", [alice], python, idle_timeout=2),
        }
        try:
            deadline = time.monotonic() + 120
            for name, (eid, proc, _) in meps.items():
                while not admin.get_endpoint_status(eid).get("connected"):
                    assert proc.poll() is None, (shared / f"{name}.log").read_text()[-3000:]
                    assert time.monotonic() < deadline, f"the multi-user endpoint {name} did not connect"
                    time.sleep(0.5)
            clients = {u: Client(stack.url, t) for u, t in tokens.items()}
            yield {"stack": stack, "eid": meps["mep"][0], "idle_eid": meps["idle"][0], "clients": clients, "tokens": tokens,
                   "a": acct_a, "b": acct_b, "shared": shared, "mep": meps["mep"][1]}
        finally:
            for _, proc, log in meps.values():
                _stop(proc, log)
            for path in [*sorted(shared.glob("*.log")), *sorted(shared.glob("users-*/*/*/user_endpoint.log"))]:
                print(f"--- {path} (last lines)\n" + "\n".join(path.read_text().splitlines()[-40:]))
            for acct in (acct_a, acct_b):  # the user endpoints and their workers end with it
                left = _processes_of(acct.name, wait=30)
                for pid in left:
                    os.kill(int(pid), signal.SIGKILL)
                assert not left, f"processes of {acct.name} left 30 s after the multi-user endpoint stopped: {left}"
            shutil.rmtree(shared, ignore_errors=True)


def _processes_of(account: str, wait: float) -> list[str]:
    """The account's processes still there after up to ``wait`` seconds (they exit as their parents do)."""
    deadline = time.monotonic() + wait
    while True:
        left = subprocess.run(["pgrep", "-u", account], capture_output=True, text=True).stdout.split()
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def _run(client: Client, eid: str, fn, *args, **options):
    fid = client.register_function(fn, serializer="source")
    tid = client.submit(fid, eid, args, **options)
    task = client.wait([tid], timeout=180)[0]
    return task, tid


def test_each_users_tasks_run_as_their_own_account_with_a_private_home_and_umask(site):
    results = {}
    for user, acct in (("mu_alice", site["a"]), ("mu_bob", site["b"])):
        client = site["clients"][user]
        fid = client.register_function(who_am_i, serializer="source")
        tid = client.submit(fid, site["eid"], [f"{user}.txt"])
        results[user] = (client.get_result(tid, timeout=180), pwd.getpwnam(acct.name))
    for user, (got, pw) in results.items():
        assert got["uid"] == pw.pw_uid and got["gid"] == pw.pw_gid, (user, got)
        assert got["owner"] == pw.pw_uid and os.stat(got["path"]).st_uid == pw.pw_uid  # the file is the account's
        assert got["umask"] == 0o077 and not got["root_env"], got  # umask 077, nothing of root's environment
        assert os.stat(got["home"]).st_mode & 0o777 == 0o700 and os.stat(got["home"]).st_uid == pw.pw_uid


def _user_endpoint_pids(account: str, mep: str = "mep") -> list[int]:
    """The account's user endpoints of one multi-user endpoint (by their folder, in their command line)."""
    return [int(p) for p in subprocess.run(["pgrep", "-u", account, "-f", f"site_manager.user_endpoint .*/users-{mep}/"],
                                           capture_output=True, text=True).stdout.split()]


def _user_endpoint_pid(account: str, mep: str = "mep") -> int:
    pids = _user_endpoint_pids(account, mep)
    assert pids, f"no user endpoint of {mep} runs as {account}"
    return pids[0]


PROBE = """
import os, sys
pid = int(sys.argv[1])
for what, attempt in (("signal", lambda: os.kill(pid, 0)), ("stdin", lambda: open(f"/proc/{pid}/fd/0", "wb")),
                      ("list", lambda: os.listdir(sys.argv[2])), ("read", lambda: open(sys.argv[3]).read())):
    try:
        attempt()
        print(what, "reached")
    except OSError as e:
        print(what, type(e).__name__)
"""


def test_one_account_cannot_reach_the_others_user_endpoint_or_files(site):
    users = site["shared"] / "users-mep"
    a: OsAccount = site["a"]
    b_folder = users / site["b"].name
    b_file = b_folder / "mu_bob.txt"  # in the account's home: its folder here (the test accounts have no home)
    assert b_file.exists(), "bob's task has not run yet (the test above runs it)"
    b_pid, a_pid = _user_endpoint_pid(site["b"].name), _user_endpoint_pid(a.name)
    probe = a.python(PROBE, str(b_pid), str(b_folder), str(b_file))
    assert probe.stdout.split("\n")[:4] == ["signal PermissionError", "stdin PermissionError", "list PermissionError",
                                           "read PermissionError"], probe
    # ... while its own user endpoint and folder are its own: the same probe reaches them.
    a_file = users / a.name / "mu_alice.txt"
    own = a.python(PROBE, str(a_pid), str(users / a.name), str(a_file))
    assert "signal reached" in own.stdout and "list reached" in own.stdout and "read reached" in own.stdout, own
    # The tasks' channel is two pipes: no socket in the file system another account could try.
    assert not [p for p in users.rglob("*") if p.is_socket()]


def test_an_identity_that_maps_to_no_account_is_refused_with_its_code(site):
    task, _ = _run(site["clients"]["mu_carol"], site["eid"], who_am_i, "carol.txt")
    assert task["state"] == "failed" and task["error"]["code"] == "identity_not_mapped", task
    assert "mu_carol" in task["error"]["message"] and "identity mapping" in task["error"]["message"]


def test_template_values_outside_the_schema_are_refused_at_submit(site):
    client = site["clients"]["mu_alice"]
    fid = client.register_function(who_am_i, serializer="source")
    for bad in ({"workers": 99}, {"partition": "x"}, {"workers": "1"}):
        with pytest.raises(FnserveError) as info:
            client.submit(fid, site["eid"], ["x"], user_endpoint_config=bad)
        assert info.value.code == "invalid_user_endpoint_config", info.value
        assert "user_endpoint_config" in info.value.message
    # A value inside it runs, from the CLI too (another user endpoint of the same account: other values).
    stack = site["stack"]
    env = {**stack.env, "FNSERVE_TOKEN": site["tokens"]["mu_alice"], "FNSERVE_SERVICE_URL": stack.url}
    out = subprocess.run([*FNSERVE, "run", fid, "--endpoint", site["eid"], '"cli.txt"', "--user-endpoint-config", '{"workers": 1}'],
                         env=env, capture_output=True, text=True, timeout=240, cwd=REPO, check=False)
    assert out.returncode == 0 and str(pwd.getpwnam(site["a"].name).pw_uid) in out.stdout, out


def test_a_task_asking_for_more_cores_than_a_worker_has_is_refused_at_submit(site):
    stack = site["stack"]
    client = stack.client()
    fid = client.register_function(allowance, serializer="source")
    with pytest.raises(FnserveError) as info:
        client.submit(fid, stack.endpoint_id, resource_specification={"cores": 2})
    assert info.value.code == "resources_never_fit" and "cores" in info.value.message, info.value
    assert client.get_result(client.submit(fid, stack.endpoint_id, resource_specification={"cores": 1}), timeout=120)["cpus"] == 1


def test_a_task_sees_the_cores_it_asked_for(site):
    client = site["clients"]["mu_alice"]
    fid = client.register_function(allowance, serializer="source")
    two = client.get_result(client.submit(fid, site["eid"], resource_specification={"cores": 2}), timeout=180)
    one = client.get_result(client.submit(fid, site["eid"], resource_specification={"cores": 1}), timeout=180)
    assert two == {"cpus": 2, "omp": "2"} and one == {"cpus": 1, "omp": "1"}, (two, one)
    task, _ = _run(client, site["eid"], allowance, resource_specification={"cores": 3})  # the user endpoint offers 2
    assert task["state"] == "failed" and task["error"]["code"] == "resources_never_fit", task


def count_runs(name: str) -> int:
    """Runs in a task: counts its runs in a file of its home; the first run waits to be killed."""
    import os
    import time

    path = os.path.join(os.environ["HOME"], name)
    with open(path, "a") as f:
        f.write("run\n")
    runs = len(open(path).read().splitlines())
    if runs == 1:
        time.sleep(120)
    return runs


def test_a_killed_user_endpoint_is_started_again_and_its_running_task_runs_again(site):
    client, acct = site["clients"]["mu_bob"], site["b"]
    marker = site["shared"] / "users-mep" / acct.name / "runs.txt"
    old = _user_endpoint_pid(acct.name)
    fid = client.register_function(count_runs, serializer="source")
    tid = client.submit(fid, site["eid"], ["runs.txt"])
    deadline = time.monotonic() + 120
    while not marker.exists():  # the first run started
        assert time.monotonic() < deadline, "the task did not start"
        time.sleep(0.2)
    os.kill(old, signal.SIGKILL)
    assert client.get_result(tid, timeout=180) == 2  # ran again (worker_lost is retried), once
    assert marker.read_text().count("run") == 2
    assert _user_endpoint_pid(acct.name) != old


def stays(name: str, ignore_alarm: bool = False) -> int:
    """Runs in a task: notes its pid in a file of its home, then sleeps (past a walltime too, if told)."""
    import os
    import signal
    import time

    if ignore_alarm:  # the worker's own walltime alarm cannot stop it: only a kill from outside can
        signal.signal(signal.SIGALRM, signal.SIG_IGN)
    with open(os.path.join(os.environ["HOME"], name), "w") as f:
        f.write(str(os.getpid()))
    time.sleep(30 if not ignore_alarm else 60)
    return os.getpid()


def _alive(pid: int) -> bool:
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def _wait_for(what: str, condition, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, what
        time.sleep(0.2)
    return value


def test_cancel_kills_a_running_task_on_its_user_endpoint_and_a_queued_one_never_starts(site):
    client, eid = site["clients"]["mu_alice"], site["eid"]
    home = site["shared"] / "users-mep" / site["a"].name
    fid = client.register_function(stays, serializer="source")
    running = client.submit(fid, eid, ["cancel-running.pid"])
    pid = int(_wait_for("the long task did not start", lambda: (home / "cancel-running.pid").exists() and
                        (home / "cancel-running.pid").read_text()))
    queued = client.submit(fid, eid, ["cancel-queued.pid"])  # behind it: the user endpoint has one worker
    _wait_for("the queued task did not reach the multi-user endpoint", lambda: client.get_task(queued)["state"] == "dispatched")
    assert client.cancel(queued)["state"] == "cancelled" and client.cancel(running)["state"] == "cancelled"
    _wait_for(f"the worker (pid {pid}) of the cancelled running task was not killed", lambda: not _alive(pid), timeout=20)
    # A task sent after them runs once the worker is replaced: by then the queued one was taken (and skipped).
    assert client.get_result(client.submit(client.register_function(who_am_i, serializer="source"), eid, ["after-cancel.txt"]),
                             timeout=120)["uid"] == pwd.getpwnam(site["a"].name).pw_uid
    assert not (home / "cancel-queued.pid").exists(), "the cancelled queued task ran"
    assert [client.get_task(t)["state"] for t in (running, queued)] == ["cancelled", "cancelled"]


def test_a_task_past_its_walltime_on_a_user_endpoint_is_killed_from_outside_and_fails_with_its_code(site):
    client, eid = site["clients"]["mu_alice"], site["eid"]
    home = site["shared"] / "users-mep" / site["a"].name
    fid = client.register_function(stays, serializer="source")
    began = time.monotonic()
    tid = client.submit(fid, eid, ["overstays.pid", True], walltime=2)
    task = client.wait([tid], timeout=90)[0]
    took = time.monotonic() - began
    assert task["state"] == "failed" and task["error"]["code"] == "walltime_exceeded", task
    assert took < 60, f"took {took:.0f} s (walltime 2 s + 5 s grace; it sleeps 60 s)"
    pid = int((home / "overstays.pid").read_text())
    _wait_for(f"the worker (pid {pid}) is still alive", lambda: not _alive(pid), timeout=10)


def test_client_call_takes_user_endpoint_config(site):
    client = site["clients"]["mu_alice"]
    fid = client.register_function(who_am_i, serializer="source")
    got = client.call(fid, site["eid"], "call.txt", user_endpoint_config={"workers": 1})
    assert got["uid"] == pwd.getpwnam(site["a"].name).pw_uid
    with pytest.raises(FnserveError) as info:
        client.call(fid, site["eid"], "call.txt", user_endpoint_config={"workers": 99})
    assert info.value.code == "invalid_user_endpoint_config"


def test_an_idle_user_endpoint_stops_and_the_next_task_starts_it_again(site):
    client, acct = site["clients"]["mu_alice"], site["a"]
    fid = client.register_function(who_am_i, serializer="source")
    uid = pwd.getpwnam(acct.name).pw_uid
    assert client.get_result(client.submit(fid, site["idle_eid"], ["idle-1.txt"]), timeout=180)["uid"] == uid
    # idle_timeout 2 s: its stdin is closed and it exits (taking its block with it).
    _wait_for("the idle user endpoint did not stop", lambda: not _user_endpoint_pids(acct.name, "idle"), timeout=60)
    assert client.get_result(client.submit(fid, site["idle_eid"], ["idle-2.txt"]), timeout=180)["uid"] == uid
    log = (site["shared"] / "idle.log").read_text()
    assert log.count("started user endpoint") == 2 and "idle for 2 s: stopping it" in log, log[-3000:]
