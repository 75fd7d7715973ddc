"""The forwarder over real ZMQ sockets, with a real Redis; the test plays the site manager."""

from __future__ import annotations

import threading
import time

import zmq

from fnserve import messages as m
from fnserve.states import TaskState
from web_service.forwarder import Forwarder
from web_service.task_store import NewTask, TaskStore

SECRETS = {"ep1": "s3cret"}


class Site:
    """A minimal site manager speaking the wire protocol."""

    def __init__(self, address: str):
        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(address)

    def send(self, msg) -> None:
        self.sock.send(m.encode(msg))

    def recv(self, timeout: float = 5.0):
        assert self.sock.poll(int(timeout * 1000)), "no message from the forwarder"
        return m.decode_from_forwarder(self.sock.recv())

    def recv_type(self, kind, timeout: float = 5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.recv(deadline - time.monotonic())
            if isinstance(msg, kind):
                return msg
        raise AssertionError(f"no {kind.__name__}")

    def close(self) -> None:
        self.sock.close(0)


def _submit(store: TaskStore, n: int, start: int = 0) -> list[str]:
    store.cache_function("f", b"FN")
    ids = [f"t{i}" for i in range(start, start + n)]
    store.submit([NewTask(task_id=i, owner="u", function_id="f", endpoint_id="ep1", payload=b"x") for i in ids])
    return ids


def test_wrong_secret_is_refused(forwarder):
    fwd, _ = forwarder
    site = Site(fwd.address)
    site.send(m.Register(endpoint_id="ep1", secret="wrong"))
    reply = site.recv()
    assert isinstance(reply, m.Refused) and reply.code == "invalid_credentials"
    site.close()


def _registered_site(fwd) -> Site:
    """A site manager stand-in connected and registered as endpoint ep1 (first message: Registered)."""
    site = Site(fwd.address)
    site.send(m.Register(endpoint_id="ep1", secret="s3cret"))
    assert isinstance(site.recv(), m.Registered)
    return site


def test_tasks_waiting_for_endpoint_are_dispatched_when_it_connects(forwarder):
    fwd, store = forwarder
    ids = _submit(store, 3)
    site = _registered_site(fwd)
    batch = site.recv_type(m.TaskBatch)
    assert [t.task_id for t in batch.tasks] == ids
    assert batch.tasks[0].function == b"FN"
    assert store.get("t0").state is TaskState.DISPATCHED
    assert store.endpoint_status("ep1")["connected"] is True
    # New work while connected is pushed without asking.
    more = _submit(store, 2, start=3)
    assert [t.task_id for t in site.recv_type(m.TaskBatch).tasks] == more
    site.send(m.TaskStatusBatch(running=ids))
    site.send(m.ResultBatch(results=[m.ResultMessage(task_id=i, ok=True, data=b"r") for i in ids]))
    ack = site.recv_type(m.Ack)
    assert ack.task_ids == ids
    assert store.get("t0").state is TaskState.SUCCESS and store.get("t0").result == b"r"
    # A result sent twice (after a lost ack) is acked again and recorded once.
    site.send(m.ResultBatch(results=[m.ResultMessage(task_id="t0", ok=False)]))
    assert site.recv_type(m.Ack).task_ids == ["t0"]
    assert store.get("t0").state is TaskState.SUCCESS
    site.close()


def test_silent_endpoint_is_dropped_and_its_tasks_requeued(forwarder):
    fwd, store = forwarder
    site = _registered_site(fwd)
    _submit(store, 2)
    site.recv_type(m.TaskBatch)
    assert store.inflight("ep1") == {"t0", "t1"}
    site.close()  # says nothing more
    deadline = time.monotonic() + 5
    while store.endpoint_status("ep1")["connected"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.endpoint_status("ep1")["connected"] is False
    assert store.get("t0").state is TaskState.WAITING and store.queue_length("ep1") == 2
    # It comes back, holding t1 (still running there): only t0 is dispatched again.
    site = Site(fwd.address)
    site.send(m.Register(endpoint_id="ep1", secret="s3cret", holding=[]))
    site.recv_type(m.Registered)
    assert sorted(t.task_id for t in site.recv_type(m.TaskBatch).tasks) == ["t0", "t1"]
    site.close()


def test_reconnect_holding_tasks_does_not_redispatch_them(forwarder):
    fwd, store = forwarder
    site = _registered_site(fwd)
    _submit(store, 2)
    site.recv_type(m.TaskBatch)
    site.close()
    site = Site(fwd.address)  # a quick reconnect, before the heartbeat threshold
    site.send(m.Register(endpoint_id="ep1", secret="s3cret", holding=["t1"]))
    site.recv_type(m.Registered)
    assert [t.task_id for t in site.recv_type(m.TaskBatch).tasks] == ["t0"]
    assert store.inflight("ep1") == {"t0", "t1"}
    site.close()


def test_heartbeat_is_answered_and_unregistered_peer_told_to_register(forwarder):
    fwd, _ = forwarder
    site = Site(fwd.address)
    site.send(m.Heartbeat(sent_at=time.time()))
    assert isinstance(site.recv(), m.Disconnect)
    site.send(m.Register(endpoint_id="ep1", secret="s3cret"))
    site.recv_type(m.Registered)
    site.send(m.Heartbeat(sent_at=time.time()))
    assert isinstance(site.recv_type(m.Heartbeat), m.Heartbeat)
    site.close()


def test_an_endpoint_with_a_capacity_never_holds_more_yet_gets_every_task(forwarder):
    """Flow control: the forwarder sends no more than the capacity the site manager registered
    with; each result batch makes room for more, until all tasks ran, each exactly once."""
    fwd, store = forwarder
    ids = _submit(store, 50)
    site = Site(fwd.address)
    site.send(m.Register(endpoint_id="ep1", secret="s3cret", capacity=8))
    assert isinstance(site.recv(), m.Registered)
    held: set[str] = set()
    ran: list[str] = []
    most_held = 0
    while len(ran) < len(ids):
        msg = site.recv()
        if isinstance(msg, m.TaskBatch):
            held |= {t.task_id for t in msg.tasks}
            most_held = max(most_held, len(held))
            # Finish 3 at a time: results free room (2 = a quarter of 8 at least), and the
            # forwarder fills it.
            done = sorted(held)[:3]
            held -= set(done)
            ran += done
            site.send(m.ResultBatch(results=[m.ResultMessage(task_id=i, ok=True) for i in done]))
        elif isinstance(msg, m.Ack) and held and not site.sock.poll(200):
            # No new batch came (no room was made yet): finish what is held.
            done = sorted(held)
            held.clear()
            ran += done
            site.send(m.ResultBatch(results=[m.ResultMessage(task_id=i, ok=True) for i in done]))
    assert most_held == 8
    assert sorted(ran) == sorted(ids)  # every task, once
    acked: set[str] = set()
    while ran[-1] not in acked:  # the last results are recorded once acked
        acked |= set(site.recv_type(m.Ack).task_ids)
    assert all(store.get(i).state is TaskState.SUCCESS for i in ids)
    site.close()


def test_a_task_cancelled_after_dispatch_is_named_to_its_site_manager_once(forwarder):
    fwd, store = forwarder
    ids = _submit(store, 2)
    site = _registered_site(fwd)
    assert [t.task_id for t in site.recv_type(m.TaskBatch).tasks] == ids
    assert store.cancel("t0", "u") == "dispatched"
    assert site.recv_type(m.CancelTasks).task_ids == ["t0"]
    assert store.take_cancels("ep1") == []  # relayed once
    # A task cancelled while queued is simply never sent: nothing to relay.
    store.submit([NewTask(task_id="t9", owner="u", function_id="f", endpoint_id="ep2", payload=b"x")])
    assert store.cancel("t9", "u") == "waiting-for-endpoint"
    assert store.take_cancels("ep2") == []
    site.close()


def test_the_forwarder_outlives_a_redis_restart_and_has_site_managers_register_again(tmp_path):
    """Redis stopped (SIGTERM, AOF on) while a task is in flight, then started again on the same
    port and data: the forwarder keeps running, asks the site manager to register again, and
    takes the result that was held over the outage (recorded once)."""
    from fnserve._redis_server import free_port, start_redis

    port = free_port()
    proc, url = start_redis(tmp_path / "redis", port=port)
    store = TaskStore.from_url(url)
    fwd = Forwarder(store, lambda e, s: SECRETS.get(e) == s, "tcp://127.0.0.1:0", heartbeat_period=0.2, heartbeat_threshold=30)
    th = threading.Thread(target=fwd.run, daemon=True)
    th.start()
    try:
        assert fwd.bound.wait(5)
        ids = _submit(store, 1)
        site = _registered_site(fwd)
        assert [t.task_id for t in site.recv_type(m.TaskBatch).tasks] == ids

        proc.terminate()
        proc.wait(10)
        # The result comes while Redis is down: the forwarder cannot record it.
        site.send(m.ResultBatch(results=[m.ResultMessage(task_id="t0", ok=True, data=b"42")]))
        time.sleep(0.5)  # let the forwarder meet the outage (the test's pacing, not the system's)
        proc, _ = start_redis(tmp_path / "redis", port=port)

        again = site.recv_type(m.Disconnect, timeout=10)
        assert "register again" in again.reason
        assert th.is_alive()
        site.send(m.Register(endpoint_id="ep1", secret="s3cret", holding=["t0"]))
        site.recv_type(m.Registered)
        site.send(m.ResultBatch(results=[m.ResultMessage(task_id="t0", ok=True, data=b"42")]))
        assert site.recv_type(m.Ack).task_ids == ["t0"]
        rec = store.get("t0")
        assert rec.state is TaskState.SUCCESS
        site.close()
    finally:
        fwd.stop()
        th.join(10)
        proc.terminate()
        proc.wait(10)


def test_a_failing_task_store_script_has_the_site_manager_register_again_and_nothing_is_lost(forwarder):
    """A record (or claim) script that fails in Redis for one endpoint (here its queue key holds
    the wrong type) is not acked: the forwarder asks that site manager to register again, so it
    resends its unacked results and the registration settles its in-flight tasks. Without that
    the results would wait in its ledger, their tasks "dispatched", until some later reconnect."""
    from web_service.store.keys import queue_key

    fwd, store = forwarder
    ids = _submit(store, 2)
    site = _registered_site(fwd)
    assert [t.task_id for t in site.recv_type(m.TaskBatch).tasks] == ids
    store.r.set(queue_key("ep1"), "not a list")  # the record script fails at its LLEN
    site.send(m.ResultBatch(results=[m.ResultMessage(task_id=i, ok=True, data=b"r") for i in ids]))
    assert "register again" in site.recv_type(m.Disconnect).reason
    store.r.delete(queue_key("ep1"))
    site.send(m.Register(endpoint_id="ep1", secret="s3cret", holding=ids))
    site.recv_type(m.Registered)
    site.send(m.ResultBatch(results=[m.ResultMessage(task_id=i, ok=True, data=b"r") for i in ids]))
    assert site.recv_type(m.Ack).task_ids == ids
    assert all(store.get(i).state is TaskState.SUCCESS for i in ids)
    # Claim side: new work whose claim script fails -> register again; the tasks then go out once.
    store.r.set(queue_key("ep1"), "not a list")
    from web_service.store.keys import WAKE_CHANNEL

    store.r.publish(WAKE_CHANNEL, "ep1")  # as a submit would
    assert "register again" in site.recv_type(m.Disconnect).reason
    store.r.delete(queue_key("ep1"))
    more = _submit(store, 2, start=2)
    site.send(m.Register(endpoint_id="ep1", secret="s3cret", holding=[]))
    site.recv_type(m.Registered)
    assert sorted(t.task_id for t in site.recv_type(m.TaskBatch).tasks) == more
    site.close()
