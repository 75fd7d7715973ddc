"""Walltime enforced from outside the task inside a podman container, where the site manager
cannot see the worker's processes (another PID namespace): the watchdog beside each worker
(node_manager.watchdog) kills a worker whose task ignores SIGALRM and catches BaseException in
a loop. The task fails ``walltime_exceeded`` once (not retried), soon after walltime + grace; the
container's pool replaces the worker and the next task on that runtime succeeds."""

from __future__ import annotations

import time

import pytest
import yaml
from runtime_support import add_runtimes, build_image, have_podman
from stack_support import running_stack

from fnserve.errors import TaskFailed

pytestmark = pytest.mark.integration

STUBBORN = '''
def stubborn():
    import os, signal, time
    import fnserve
    signal.signal(signal.SIGALRM, signal.SIG_IGN)
    fnserve.report(pid=os.getpid())
    while True:
        try:
            while True:
                time.sleep(0.05)
        except BaseException:
            pass
'''

PROBE = '''
def probe(pid):
    import os
    with open("/proc/1/cmdline", "rb") as f:
        in_container = b"node_manager.pool" in f.read()
    return {"pid": os.getpid(), "container": in_container, "old_alive": os.path.exists(f"/proc/{pid}")}
'''

WALLTIME, GRACE = 1.0, 2.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    if not have_podman():
        pytest.fail("podman is not installed: scripts/test.sh installs it (apt-get install podman runc)")
    image = build_image()
    tmp = tmp_path_factory.mktemp("walltime-pod")
    with running_stack(tmp / "home") as st:
        config = tmp / "home/endpoints/local/config.yaml"
        add_runtimes(config, {"pod": {"type": "podman", "image": image, "max_idletime": 600}})
        data = yaml.safe_load(config.read_text())
        data["walltime_grace"] = GRACE
        data["engine"].update(heartbeat_period=1, heartbeat_threshold=4)
        config.write_text(yaml.safe_dump(data, sort_keys=False))
        st.cli("endpoint", "restart", "local")
        st.image = image
        yield st


def test_a_task_defeating_the_alarm_in_a_podman_container_is_killed_fails_walltime_exceeded_and_the_worker_is_replaced(stack):
    fc = stack.client()
    fc.register_runtime(name="pod", type="podman", image=stack.image)
    stubborn = fc.register_source(STUBBORN, "stubborn", runtime="pod")
    probe = fc.register_source(PROBE, "probe", runtime="pod")
    assert fc.call(probe, stack.endpoint_id, 0)["container"]  # the runtime is warm, really in podman

    started = time.monotonic()
    task_id = fc.submit(stubborn, stack.endpoint_id, [], walltime=WALLTIME, serializer="json-data")
    with pytest.raises(TaskFailed) as failed:
        fc.get_result(task_id, timeout=60)
    took = time.monotonic() - started
    assert failed.value.code == "walltime_exceeded", failed.value
    assert WALLTIME + GRACE <= took < WALLTIME + GRACE + 6, took
    # It ran once (one start, one pid reported): not retried after its worker was killed.
    outs = fc.get_outputs(task_id)["outputs"]
    pids = [o["values"]["pid"] for o in outs if "pid" in (o.get("values") or {})]
    assert len(pids) == 1, outs
    # The next task on the runtime succeeds, in a fresh worker of the same container; the killed
    # worker process is gone.
    after = fc.call(probe, stack.endpoint_id, pids[0])
    assert after["container"] and after["pid"] != pids[0] and not after["old_alive"], after
