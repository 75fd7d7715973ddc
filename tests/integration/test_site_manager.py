"""The site manager as a real process against a test-controlled ZMQ ROUTER playing the forwarder.

Real Parsl HTEX workers on the LocalProvider run the tasks; nothing is mocked.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
import yaml
import zmq

from fnserve import serialize
from fnserve.messages import (
    Ack,
    Disconnect,
    EndpointStatus,
    Heartbeat,
    Refused,
    Register,
    Registered,
    ResultBatch,
    ResultMessage,
    TaskBatch,
    TaskMessage,
    TaskStatusBatch,
    decode_from_site,
    encode,
)

REPO = Path(__file__).resolve().parents[2]
ENDPOINT_ID = "ep-test-1"
SECRET = "s3cret-do-not-log"
HB_PERIOD = 0.2
HB_THRESHOLD = 1.5


class FakeForwarder:
    """A ROUTER socket that speaks the forwarder's side of the protocol, step by step."""

    def __init__(self, context: zmq.Context, port: int | None = None) -> None:
        self.socket = context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        if port is None:
            self.port = self.socket.bind_to_random_port("tcp://127.0.0.1")
        else:
            self.socket.bind(f"tcp://127.0.0.1:{port}")
            self.port = port
        self.peer: bytes | None = None
        self.registered: set[bytes] = set()
        self.heartbeats = 0
        self.statuses: list[EndpointStatus] = []
        self.running: list[str] = []  # ids the site manager reported started by a worker

    def send(self, msg: msgspec.Struct) -> None:
        assert self.peer is not None
        self.socket.send_multipart([self.peer, encode(msg)])

    def expect(self, kind: type, timeout: float = 30.0) -> msgspec.Struct:
        """The next message of type ``kind``, answering heartbeats and keeping statuses meanwhile."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self.socket.poll(left * 1000):
                raise AssertionError(
                    f"no {kind.__name__} from the site manager within {timeout} s"
                )
            self.peer, frame = self.socket.recv_multipart()
            msg = decode_from_site(frame)
            if isinstance(msg, kind):
                return msg
            if isinstance(msg, Heartbeat) and self.peer not in self.registered:
                # A peer this forwarder never registered (it restarted): make it register again.
                self.send(Disconnect(reason="not registered here"))
            elif isinstance(msg, Heartbeat):
                self.heartbeats += 1
                self.send(Heartbeat(sent_at=time.time()))
            elif isinstance(msg, EndpointStatus):
                self.statuses.append(msg)
            elif isinstance(msg, TaskStatusBatch):
                self.running += msg.running

    def register(self) -> Register:
        reg = self.expect(Register)
        assert self.peer is not None
        self.registered.add(self.peer)
        self.send(
            Registered(heartbeat_period=HB_PERIOD, heartbeat_threshold=HB_THRESHOLD)
        )
        return reg  # type: ignore[return-value]

    def results(self, count: int, timeout: float = 30.0) -> dict[str, ResultMessage]:
        found: dict[str, ResultMessage] = {}
        deadline = time.monotonic() + timeout
        while len(found) < count:
            batch = self.expect(ResultBatch, max(0.1, deadline - time.monotonic()))
            found.update({r.task_id: r for r in batch.results})  # type: ignore[attr-defined]
        return found

    def ignore(self, seconds: float) -> None:
        """Read and drop everything for ``seconds``: a forwarder that has gone silent."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self.socket.poll(left * 1000):
                self.socket.recv_multipart()

    def close(self) -> None:
        self.socket.close(linger=0)


@pytest.fixture
def context() -> Iterator[zmq.Context]:
    ctx = zmq.Context()
    yield ctx
    ctx.term()


@pytest.fixture
def forwarder(context: zmq.Context) -> Iterator[FakeForwarder]:
    fwd = FakeForwarder(context)
    yield fwd
    fwd.close()


class SiteProcess:
    def __init__(self, tmp_path: Path, port: int) -> None:
        config = {
            "forwarder": f"tcp://127.0.0.1:{port}",
            "endpoint_id": ENDPOINT_ID,
            "secret": SECRET,
            "heartbeat_period": HB_PERIOD,
            "heartbeat_threshold": HB_THRESHOLD,
            "reconnect_delay": 0.1,
            "reconnect_max_delay": 1.0,
            "drain_timeout": 5,
            "run_dir": str(tmp_path / "endpoint"),
            "engine": {
                "max_workers_per_node": 2,
                "worker_heartbeat_period": 1,
                "worker_heartbeat_threshold": 5,
            },
            "provider": {"type": "local"},
        }
        config_file = tmp_path / "endpoint.yaml"
        config_file.write_text(yaml.safe_dump(config))
        self.log_path = tmp_path / "site_manager.log"
        env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        )
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "site_manager",
                    "--config",
                    str(config_file),
                    "--log-level",
                    os.environ.get("FNSERVE_TEST_LOG_LEVEL", "DEBUG"),
                ],
                cwd=tmp_path,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so teardown reaches every child
            )

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # leftovers of the group, if any
        except ProcessLookupError:
            pass
        self.proc.wait(10)


@pytest.fixture
def start_site(tmp_path: Path) -> Iterator:
    procs: list[SiteProcess] = []

    def start(port: int) -> SiteProcess:
        proc = SiteProcess(tmp_path, port)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.stop()  # graceful first, so the site manager cancels its worker blocks


def by_value(source: str, name: str) -> bytes:
    """A dill-code buffer of a function defined in __main__, so dill ships it by value."""
    namespace: dict = {"__name__": "__main__"}
    exec(compile(source, "<test>", "exec"), namespace)  # noqa: S102 - test-owned source
    return serialize.serialize_function(namespace[name], serialize.DILL_CODE)


def task(
    task_id: str, fn: bytes, args: tuple, strategy: str | None = None, **fields: object
) -> TaskMessage:
    return TaskMessage(
        task_id=task_id,
        function_id=f"fn-{task_id}",
        function=fn,
        payload=serialize.serialize_args(args, {}, strategy),
        **fields,
    )  # type: ignore[arg-type]


def test_runs_a_batch_and_reports_values_errors_status_then_stops_cleanly(
    forwarder: FakeForwarder, start_site
) -> None:
    site = start_site(forwarder.port)
    reg = forwarder.register()
    assert reg.endpoint_id == ENDPOINT_ID and reg.secret == SECRET
    assert reg.software["python"].startswith(serialize.PYTHON_VERSION)

    failing = (
        "def explode(n):\n    total = n * 2\n    raise KeyError(f'missing {total}')\n"
    )
    tasks = [
        task("t-add", by_value("def add(a, b):\n    return a + b\n", "add"), (2, 3)),
        task(
            "t-json",
            serialize.serialize_source(
                "def hello(who):\n    print('hi', who)\n    return {'hello': who}\n",
                "hello",
            ),
            ("world",),
            serialize.JSON_DATA,
            result_strategy="json-data",
        ),
        task(
            "t-set",
            by_value("def sizes(s):\n    return sorted(len(x) for x in s)\n", "sizes"),
            ({"a", "bbb", "cc"},),
            serialize.DILL_DATA,
        ),
        task("t-raise", serialize.serialize_source(failing, "explode"), (21,)),
        task(
            "t-slow",
            serialize.serialize_source(
                "import time\ndef slow():\n    time.sleep(30)\n", "slow"
            ),
            (),
            walltime=0.5,
        ),
    ]
    forwarder.send(TaskBatch(tasks=tasks))

    results = forwarder.results(len(tasks))
    # A task still running a moment after its worker started it was reported running (before its
    # result); the quick ones end within that moment and are not (site_manager/start_reports.py):
    # their results carry when they started instead.
    assert "t-slow" in forwarder.running and set(forwarder.running) <= {t.task_id for t in tasks}
    assert all(results[t].timings.get("worker_started") for t in ("t-add", "t-json", "t-set", "t-raise"))

    assert serialize.deserialize_data(results["t-add"].data) == 5
    assert serialize.json_body(results["t-json"].data) == b'{"hello":"world"}'
    assert results["t-json"].stdout == "hi world\n"
    assert serialize.deserialize_data(results["t-set"].data) == [1, 2, 3]
    err = results["t-raise"].error
    assert not results["t-raise"].ok and err is not None
    assert (err.code, err.type, err.message) == (
        "user_exception",
        "KeyError",
        "'missing 42'",
    )
    assert "raise KeyError(f'missing {total}')" in err.traceback
    slow = results["t-slow"].error
    assert slow is not None and slow.code == "walltime_exceeded"
    for r in results.values():
        assert {
            "site_received",
            "worker_received",
            "worker_started",
            "worker_finished",
            "site_result",
        } <= set(r.timings)
    forwarder.send(Ack(task_ids=list(results)))

    # Heartbeats keep flowing, each with the endpoint's status.
    deadline = time.monotonic() + 10
    while not any(s.workers >= 2 and s.blocks_running == 1 for s in forwarder.statuses):
        assert time.monotonic() < deadline, (
            f"no status with live workers: {forwarder.statuses[-3:]}"
        )
        forwarder.statuses.append(forwarder.expect(EndpointStatus, 5))  # type: ignore[arg-type]
    assert forwarder.heartbeats > 0

    site.proc.send_signal(signal.SIGTERM)
    forwarder.expect(Disconnect, 20)
    assert site.stop() == 0
    assert SECRET not in site.log  # the secret never reaches the logs


def test_a_lost_worker_fails_its_task_with_worker_lost(
    forwarder: FakeForwarder, start_site
) -> None:
    start_site(forwarder.port)
    forwarder.register()
    crash = serialize.serialize_source(
        "import os\ndef crash():\n    os._exit(9)\n", "crash"
    )
    forwarder.send(TaskBatch(tasks=[task("t-crash", crash, ())]))
    result = forwarder.results(1, timeout=45)["t-crash"]
    assert not result.ok and result.error is not None
    assert result.error.code == "worker_lost"
    assert "lost" in result.error.message
    forwarder.send(Ack(task_ids=["t-crash"]))


def test_refused_registration_exits_with_a_clear_message(
    forwarder: FakeForwarder, start_site
) -> None:
    site = start_site(forwarder.port)
    forwarder.expect(Register)
    forwarder.send(
        Refused(code="unknown_endpoint", reason="endpoint ep-test-1 is not registered")
    )
    assert site.proc.wait(30) == 2
    assert (
        "refused" in site.log
        and "[unknown_endpoint] endpoint ep-test-1 is not registered" in site.log
    )


def test_unacked_results_are_resent_after_a_reconnect(
    context: zmq.Context, forwarder: FakeForwarder, start_site
) -> None:
    start_site(forwarder.port)
    forwarder.register()
    forwarder.send(
        TaskBatch(
            tasks=[task("t-1", by_value("def one():\n    return 1\n", "one"), ())]
        )
    )
    first = forwarder.results(1)["t-1"]  # ...and never acked: this forwarder dies
    port = forwarder.port
    forwarder.close()

    time.sleep(0.2)
    second = FakeForwarder(context, port)
    try:
        second.register()  # told by the new forwarder that it is unknown, it registered again
        resent = second.results(1, timeout=HB_THRESHOLD * 4 + 10)["t-1"]
        assert (
            resent.data == first.data and serialize.deserialize_data(resent.data) == 1
        )
        assert resent.timings == first.timings  # the same result, not a second run

        # A re-dispatch of a task whose result is still unacked is answered, not run again.
        second.send(
            TaskBatch(
                tasks=[task("t-1", by_value("def one():\n    return 1\n", "one"), ())]
            )
        )
        again = second.results(1, timeout=10)["t-1"]
        assert again.timings == first.timings
        second.send(Ack(task_ids=["t-1"]))
    finally:
        second.close()


def test_a_silent_forwarder_makes_the_site_manager_reconnect_and_register_again(
    forwarder: FakeForwarder, start_site
) -> None:
    start_site(forwarder.port)
    forwarder.register()
    forwarder.expect(Heartbeat, 10)
    first_peer = forwarder.peer
    forwarder.ignore(HB_THRESHOLD + 0.5)
    forwarder.register()
    assert forwarder.peer != first_peer  # a new connection, not the old one resumed
    forwarder.send(
        TaskBatch(
            tasks=[task("t-2", by_value("def two():\n    return 2\n", "two"), ())]
        )
    )
    assert serialize.deserialize_data(forwarder.results(1)["t-2"].data) == 2
    forwarder.send(Ack(task_ids=["t-2"]))
