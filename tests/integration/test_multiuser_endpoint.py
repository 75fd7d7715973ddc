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
from stack_support import FNSERVE, REPO, running_stack

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


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    shared = Path(tempfile.mkdtemp(prefix="fnserve-mu-", dir="/tmp"))
    os.chmod(shared, 0o755)
    with os_account("fnsmua") as acct_a, os_account("fnsmub") as acct_b, \
            running_stack(tmp_path_factory.mktemp("mu") / "home") as stack:
        python = _user_python(shared)
        tokens = {u: stack.cli("service", "user", "add", u).stdout.strip().splitlines()[-1] for u in ("mu_alice", "mu_bob", "mu_carol")}
        admin = stack.client()
        reg = admin.register_endpoint("mep", "multi-user endpoint")
        eid = reg["endpoint_id"]
        admin.share_endpoint(eid, users=list(tokens))
        (shared / "identity-map").write_text(f"# identity account\nmu_bob {acct_b.name}\n")
        (shared / "template.yaml.j2").write_text(TEMPLATE)
        (shared / "schema.json").write_text(json.dumps(SCHEMA))
        config = {
            "forwarder": reg["forwarder_address"], "endpoint_id": eid, "secret": reg["secret"],
            **{k: reg[k] for k in ("forwarder_public_key", "curve_public_key", "curve_secret_key") if reg.get(k)},
            "run_dir": str(shared / "mep-run"),
            "multi_user": {
                "identity_mapping": [
                    {"source": "{username}", "match": "mu_alice", "output": acct_a.name, "literal": True},
                    {"mapping_file": str(shared / "identity-map")},
                ],
                "user_config_template": str(shared / "template.yaml.j2"),
                "user_config_schema": str(shared / "schema.json"),
                "python": python,
                "user_endpoints_dir": str(shared / "users"),
                "stop_timeout": 20,
            },
        }
        (shared / "mep.yaml").write_text(yaml.safe_dump(config))
        log = open(shared / "mep.log", "w")
        mep = subprocess.Popen([sys.executable, "-m", "site_manager", "--config", str(shared / "mep.yaml")],
                               env={**os.environ}, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 120
            while not admin.get_endpoint_status(eid).get("connected"):
                assert mep.poll() is None, (shared / "mep.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "the multi-user endpoint did not connect"
                time.sleep(0.5)
            clients = {u: Client(stack.url, t) for u, t in tokens.items()}
            yield {"stack": stack, "eid": eid, "clients": clients, "tokens": tokens, "a": acct_a, "b": acct_b, "shared": shared, "mep": mep}
        finally:
            mep.send_signal(signal.SIGTERM)
            try:
                mep.wait(90)
            except subprocess.TimeoutExpired:
                mep.kill()
                mep.wait()
            log.close()
            for path in [shared / "mep.log", *sorted(shared.glob("users/*/*/user_endpoint.log"))]:
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


def _user_endpoint_pid(account: str) -> int:
    pids = subprocess.run(["pgrep", "-u", account, "-f", "site_manager.user_endpoint"], capture_output=True,
                          text=True).stdout.split()
    assert pids, f"no user endpoint runs as {account}"
    return int(pids[0])


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
    users = site["shared"] / "users"
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
    marker = site["shared"] / "users" / acct.name / "runs.txt"
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
