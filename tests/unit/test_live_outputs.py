"""fnserve.report() inside a task: validation, the worker's side channel, budget and markers.

The channel is a real ZMQ PULL socket on loopback (what the site manager binds); the task runs
through the node manager's real ``execute_task``.
"""

from __future__ import annotations

import numpy as np
import pytest
import zmq

import fnserve
from fnserve import outputs, serialize
from fnserve.messages import (
    TaskMessage,
    TaskOutput,
    decode_output,
    decode_result,
    encode_output,
    encode_task,
)
from node_manager.execute import execute_task
from site_manager.outputs import OutputRelay
from site_manager.session import Send, Session, State


@pytest.fixture
def relay():
    ctx = zmq.Context()
    relay = OutputRelay(ctx, "127.0.0.1")
    yield relay
    relay.close()
    outputs._channels.clear()  # sockets of this context die with it
    ctx.term()


def received(relay: OutputRelay, n: int, timeout_ms: int = 5000) -> list[TaskOutput]:
    got: list[TaskOutput] = []
    poller = zmq.Poller()
    poller.register(relay.socket, zmq.POLLIN)
    poller.register(relay.zap, zmq.POLLIN)  # handshakes, answered as the site manager's loop does
    while len(got) < n and poller.poll(timeout_ms):
        relay.answer_zap()
        got += relay.drain()
    return got


def run_task(source: str, entry: str, to: OutputRelay | str | None, *args: object, walltime: float | None = None):
    address, keys = (to.address, to.keys) if isinstance(to, OutputRelay) else (to, None)
    task = TaskMessage(task_id="t-1", function_id=entry, function=serialize.serialize_source(source, entry),
                       payload=serialize.serialize_args(args, {}), outputs_address=address, outputs_keys=keys,
                       walltime=walltime)
    return decode_result(execute_task(encode_task(task)))


STEPS = """
import fnserve

def steps(n):
    for i in range(n):
        fnserve.report(step=i, energy=-1.5 * i, tags=["md", {"ok": True}], nothing=None)
    return n
"""


def test_report_outside_a_worker_is_a_no_op() -> None:
    assert fnserve.report(step=1, anything=object()) is None  # not even validated: costs nothing


def test_values_are_checked_and_numpy_is_converted() -> None:
    assert outputs.check_values({"t": np.float32(1.5), "a": np.arange(3), "n": {"k": (1, 2)}}) == {
        "t": 1.5, "a": [0, 1, 2], "n": {"k": [1, 2]}}
    with pytest.raises(TypeError, match=r"temperature is a .*Fraction.*float\(x\)"):
        from fractions import Fraction

        outputs.check_values({"temperature": Fraction(1, 3)})
    with pytest.raises(TypeError, match="key 1 that is not a string"):
        outputs.check_values({"d": {1: "x"}})


def test_capture_collects_reports_locally_and_rejects_bad_ones() -> None:
    with outputs.capture() as outs:
        fnserve.report(step=0, temperature=300.0)
        fnserve.report(step=1, temperature=301.0)
        with pytest.raises(TypeError):
            fnserve.report(state=object())
        with pytest.raises(outputs.OutputError, match="at most 65536 bytes"):
            fnserve.report(blob="x" * (outputs.MAX_REPORT_BYTES + 1))
    assert [o["values"]["temperature"] for o in outs] == [300.0, 301.0]
    assert [o["seq"] for o in outs] == [0, 1]
    fnserve.report(after=object())  # back to a no-op


def test_worker_sends_ordered_outputs_then_an_end_marker(relay: OutputRelay) -> None:
    result = run_task(STEPS, "steps", relay, 5)
    assert result.ok, result.error
    start, *got = received(relay, 7)
    assert (start.kind, start.seq) == ("start", -1)  # the worker started it: its state becomes running
    assert [o.kind for o in got] == ["output"] * 5 + ["end"]
    assert [o.seq for o in got[:5]] == [0, 1, 2, 3, 4]
    assert {o.task_id for o in got} == {"t-1"}
    assert got[3].values == {"step": 3, "energy": -4.5, "tags": ["md", {"ok": True}], "nothing": None}


def test_a_task_that_never_reports_sends_only_its_start_marker(relay: OutputRelay) -> None:
    result = run_task("def quiet(x):\n    return x\n", "quiet", relay, 1)
    assert result.ok
    assert [(o.task_id, o.kind) for o in received(relay, 2, timeout_ms=300)] == [("t-1", "start")]


def test_a_bad_value_fails_the_task_with_the_reason(relay: OutputRelay) -> None:
    src = "import fnserve\n\ndef bad():\n    fnserve.report(when=object())\n"
    result = run_task(src, "bad", relay)
    assert not result.ok and result.error.code == "user_exception"
    assert result.error.type == "TypeError" and "when is a builtins.object" in result.error.message


def test_budget_passes_once_then_a_truncated_marker(relay: OutputRelay, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(outputs.OUTPUT_LIMIT_ENV, "300")
    result = run_task(STEPS, "steps", relay, 50)
    assert result.ok
    got = received(relay, 100, timeout_ms=500)
    kinds = [o.kind for o in got]
    assert kinds[-2:] == ["truncated", "end"] and kinds.count("truncated") == 1
    kept = [o for o in got if o.kind == "output"]
    assert 0 < len(kept) < 50 and sum(len(encode_output(o)) for o in kept) <= 300


def test_channel_down_never_blocks_the_function() -> None:
    # Nothing listens there: reports queue in ZMQ and are dropped once the queue is full
    # (a blocking send would hang here until pytest-timeout).
    result = run_task(STEPS, "steps", "tcp://127.0.0.1:9", 20_000)
    assert result.ok and serialize.deserialize_data(result.data) == 20_000
    outputs._channels.clear()


def test_walltime_still_sends_the_end_marker(relay: OutputRelay) -> None:
    src = "import fnserve, time\n\ndef slow():\n    fnserve.report(started=True)\n    time.sleep(30)\n"
    result = run_task(src, "slow", relay, walltime=0.3)
    assert result.error is not None and result.error.code == "walltime_exceeded"
    assert [o.kind for o in received(relay, 3)] == ["start", "output", "end"]


def test_session_relays_outputs_only_when_registered() -> None:
    from fnserve.messages import Registered

    session = Session("ep", "secret", {}, 1.0, 5.0)
    out = [TaskOutput(task_id="t", seq=0, time=1.0, values={"a": 1})]
    session.connected(0.0)
    assert session.outputs_ready(out) == []  # not registered yet: dropped, not queued
    session.received(Registered(heartbeat_period=1.0, heartbeat_threshold=5.0), 0.0, 0.0)
    assert session.state is State.READY
    [action] = session.outputs_ready(out)
    assert isinstance(action, Send) and action.message.outputs == out


def test_relay_drops_malformed_frames(relay: OutputRelay) -> None:
    ctx = zmq.Context.instance()
    push = ctx.socket(zmq.PUSH)
    push.curve_serverkey = relay.keys[0].encode()
    push.curve_secretkey = relay.keys[1].encode()
    push.curve_publickey = zmq.curve_public(relay.keys[1].encode())
    push.connect(relay.address)
    push.send(b"not msgpack")
    push.send(encode_output(TaskOutput(task_id="t", seq=0, time=1.0, values={"x": 1})))
    got = received(relay, 1)
    push.close(0)
    assert [o.values for o in got] == [{"x": 1}] and relay.dropped == 1
    assert decode_output(encode_output(got[0])) == got[0]


def test_relay_admits_only_clients_with_the_workers_key(relay: OutputRelay) -> None:
    """Plaintext, or CurveZMQ with a key of one's own (even knowing the server's public key):
    the handshake fails and nothing sent is read. Another OS account's attack on the real site
    manager: tests/integration/test_attacks_local_account.py."""
    ctx = zmq.Context.instance()
    plain = ctx.socket(zmq.PUSH)
    stranger = ctx.socket(zmq.PUSH)
    stranger.curve_serverkey = relay.keys[0].encode()
    stranger.curve_publickey, stranger.curve_secretkey = zmq.curve_keypair()
    for sock in (plain, stranger):
        sock.connect(relay.address)
        sock.send(encode_output(TaskOutput(task_id="t-1", seq=0, time=1.0, values={"forged": True})), zmq.NOBLOCK)
    assert received(relay, 1, timeout_ms=1000) == []
    assert relay.refused >= 1  # the stranger's key reached the ZAP handler and was refused
    # The workers' key still gets through.
    assert run_task(STEPS, "steps", relay, 2).ok and len(received(relay, 4)) >= 2
    plain.close(0)
    stranger.close(0)
