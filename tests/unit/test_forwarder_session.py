"""The forwarder's protocol decisions, fed as events with no sockets, no Redis and no clock."""

from __future__ import annotations

from fnserve import messages as m
from web_service.forwarder_pool import assign
from web_service.forwarder_session import Accept, ForwarderSession, Handle, Lose, Reply, expiry_due, silence_clock

A, B = "tcp://a:1", "tcp://b:1"
REG = m.Register(endpoint_id="ep1", secret="s")


def test_a_wrong_secret_is_refused_and_nothing_is_bound():
    s = ForwarderSession(10.0)
    [reply] = s.register(b"id1", REG, "", verified=False, now=0.0)
    assert isinstance(reply, Reply) and isinstance(reply.message, m.Refused) and reply.message.code == "invalid_credentials"
    assert s.connections.by_endpoint == {}


def test_a_verified_site_manager_is_accepted_and_a_second_one_replaces_the_first():
    s = ForwarderSession(10.0)
    [accept] = s.register(b"id1", REG, "", verified=True, now=0.0)
    assert isinstance(accept, Accept) and accept.conn.identity == b"id1"
    told, accept2 = s.register(b"id2", REG, "", verified=True, now=1.0)
    assert told == Reply(b"id1", m.Disconnect(reason="another site manager registered for this endpoint"))
    assert isinstance(accept2, Accept) and s.connections.by_endpoint["ep1"].identity == b"id2"


def test_messages_from_an_unregistered_identity_ask_it_to_register():
    [reply] = ForwarderSession(10.0).received(b"x", m.Heartbeat(sent_at=0.0), "", 0.0)
    assert isinstance(reply.message, m.Disconnect) and not reply.message.connect_to


def test_a_message_with_another_endpoints_key_is_refused():
    s = ForwarderSession(10.0)
    s.register(b"id1", REG, "key-of-ep1", verified=True, now=0.0)
    [reply] = s.received(b"id1", m.ResultBatch(results=[]), "key-of-ep2", 1.0)
    assert isinstance(reply.message, m.Refused)


def test_results_from_the_registered_site_manager_go_to_the_store_and_keep_it_alive():
    s = ForwarderSession(10.0)
    s.register(b"id1", REG, "", verified=True, now=0.0)
    [handle] = s.received(b"id1", m.ResultBatch(results=[]), "", 8.0)
    assert isinstance(handle, Handle) and handle.conn.endpoint_id == "ep1"
    assert s.expire(12.0) == []
    assert s.expire(18.5) == [Lose("ep1", "no heartbeat within the threshold")]
    assert s.connections.by_endpoint == {}


def test_a_site_manager_that_says_goodbye_is_lost_at_once():
    s = ForwarderSession(10.0)
    s.register(b"id1", REG, "", verified=True, now=0.0)
    assert s.received(b"id1", m.Disconnect(reason="bye"), "", 1.0) == [Lose("ep1", "bye")]


def _pair() -> tuple[str, str]:
    """An endpoint id each forwarder serves when both are alive."""
    ids = [f"ep{i}" for i in range(100)]
    return next(e for e in ids if assign(e, [A, B]) == A), next(e for e in ids if assign(e, [A, B]) == B)


def test_in_a_pool_an_endpoint_served_elsewhere_is_sent_there_without_being_bound():
    on_a, on_b = _pair()
    s = ForwarderSession(10.0, me=A)
    s.live = [A, B]
    [reply] = s.register(b"id", m.Register(endpoint_id=on_b, secret="s"), "", verified=True, now=0.0)
    assert reply.message == m.Disconnect(reason="served by another forwarder", connect_to=B)
    assert s.connections.by_endpoint == {}
    assert isinstance(s.register(b"id2", m.Register(endpoint_id=on_a, secret="s"), "", verified=True, now=0.0)[0], Accept)


def test_when_the_other_forwarder_is_gone_this_one_takes_its_endpoints():
    _, on_b = _pair()
    s = ForwarderSession(10.0, me=A)
    s.live = [A]  # B's liveness key expired
    assert isinstance(s.register(b"id", m.Register(endpoint_id=on_b, secret="s"), "", verified=True, now=0.0)[0], Accept)


def test_an_endpoint_a_new_forwarder_now_serves_is_sent_there_at_its_heartbeat_with_no_requeue():
    _, on_b = _pair()
    s = ForwarderSession(10.0, me=A)
    s.live = [A]
    s.register(b"id", m.Register(endpoint_id=on_b, secret="s"), "", verified=True, now=0.0)
    s.live = [A, B]  # B joined
    [reply] = s.received(b"id", m.Heartbeat(sent_at=1.0), "", 1.0)
    assert reply.message.connect_to == B  # a Reply, not a Lose: its tasks are not requeued here
    assert s.connections.by_endpoint == {}


def test_a_forwarder_that_stops_sends_each_endpoint_to_its_next_forwarder():
    on_a, _ = _pair()
    s = ForwarderSession(10.0, me=A)
    s.live = [A, B]
    s.register(b"id", m.Register(endpoint_id=on_a, secret="s"), "", verified=True, now=0.0)
    assert s.withdraw([B]) == [Reply(b"id", m.Disconnect(reason="this forwarder is stopping", connect_to=B))]
    assert s.withdraw([]) == []


def test_silence_is_judged_up_to_when_the_socket_was_last_read_empty_not_wall_time():
    s = ForwarderSession(10.0)
    s.register(b"id1", REG, "", verified=True, now=0.0)
    # The forwarder was busy from t=5 to t=30 (last read its socket empty at 5): the endpoint's
    # heartbeats may be waiting unread, so it is not silent.
    assert s.expire(30.0, drained_at=5.0) == []
    assert s.connections.by_endpoint.keys() == {"ep1"}
    # Read empty at 10.5 with nothing from it since 0: silent for 10.5 s by then.
    assert s.expire(30.0, drained_at=10.5) == [Lose("ep1", "no heartbeat within the threshold")]


def test_the_silence_clock_is_the_earlier_of_now_and_the_last_empty_read():
    assert silence_clock(now=30.0, drained_at=5.0) == 5.0
    assert silence_clock(now=30.0, drained_at=31.0) == 30.0


def test_expiry_is_looked_for_once_the_silence_clock_reaches_the_earliest_deadline():
    assert not expiry_due(check_at=10.0, now=9.0, drained_at=9.0)
    assert not expiry_due(check_at=10.0, now=40.0, drained_at=9.5)  # behind: wait for an empty read
    assert expiry_due(check_at=10.0, now=40.0, drained_at=10.0)
    assert expiry_due(check_at=10.0, now=10.0, drained_at=12.0)


def test_a_forwarder_that_never_catches_up_still_loses_an_endpoint_silent_past_the_lag_cap():
    """Saturated for good (the socket never read empty since 5.0): with no cap nobody would ever
    expire, and a dead site manager would be sent tasks for good; the clock lags at most max_lag."""
    assert silence_clock(now=100.0, drained_at=5.0, max_lag=30.0) == 70.0
    assert not expiry_due(check_at=80.0, now=100.0, drained_at=5.0, max_lag=30.0)
    assert expiry_due(check_at=60.0, now=100.0, drained_at=5.0, max_lag=30.0)
    s = ForwarderSession(10.0)
    s.register(b"id1", REG, "", verified=True, now=0.0)
    assert s.expire(100.0, drained_at=5.0) == []
    assert s.expire(100.0, drained_at=5.0, max_lag=30.0) == [Lose("ep1", "no heartbeat within the threshold")]
