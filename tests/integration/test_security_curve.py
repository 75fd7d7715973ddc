"""Endpoint credentials on the wire: the forwarder with CurveZMQ and a ZAP handler checking
endpoint keys against the registry. Real ZMQ sockets, real Redis, a real SQLite registry."""

from __future__ import annotations

import threading

import pytest
import zmq

from fnserve import messages as m
from web_service.auth import Identity, create_user
from web_service.curve_keys import new_keypair, server_keys
from web_service.forwarder import Forwarder
from web_service.registry.db import migrate, session_factory
from web_service.services.endpoints import delete_endpoint, endpoint_for_key, register_endpoint, verify_endpoint_secret
from web_service.task_store import TaskStore
from zmq_site import Site


@pytest.fixture
def registry(sqlite_url):
    migrate(sqlite_url)
    sessions = session_factory(sqlite_url)
    yield sessions
    sessions.kw["bind"].dispose()


@pytest.fixture
def endpoints(registry):
    """Two endpoints of one user: (endpoint_id, secret, public key, secret key) each."""
    with registry() as session:
        user, _ = create_user(session, "alice")
        who = Identity(user.id, "alice")
        out = []
        for name in ("a", "b"):
            ep, secret, curve_secret = register_endpoint(session, who, name)
            out.append((ep.id, secret, ep.curve_public_key, curve_secret))
    return who, out


@pytest.fixture
def forwarder(registry, redis_client, tmp_path):
    keys = server_keys(tmp_path / "forwarder.key")

    def verify(eid, secret):
        with registry() as s:
            return verify_endpoint_secret(s, eid, secret)

    def owner(key):
        with registry() as s:
            return endpoint_for_key(s, key)

    fwd = Forwarder(TaskStore(redis_client), verify, "tcp://127.0.0.1:0", heartbeat_period=0.5, heartbeat_threshold=3,
                    server_keys=keys, endpoint_for_key=owner)
    th = threading.Thread(target=fwd.run, daemon=True)
    th.start()
    assert fwd.bound.wait(5)
    yield fwd, keys[0].decode()
    fwd.stop()
    th.join(10)
    assert not th.is_alive()


def test_endpoint_with_its_own_keys_registers_over_an_encrypted_connection(forwarder, endpoints):
    fwd, server_public = forwarder
    _, [(eid, secret, public, curve_secret), _] = endpoints
    site = Site(fwd.address, server_public, public, curve_secret)
    try:
        assert site.handshake() == zmq.EVENT_HANDSHAKE_SUCCEEDED
        assert isinstance(site.register(eid, secret), m.Registered)
        assert fwd.store.endpoint_status(eid)["connected"] is True
    finally:
        site.close()


def test_unknown_key_is_rejected_by_zap_before_any_message(forwarder, endpoints):
    fwd, server_public = forwarder
    _, [(eid, secret, _, _), _] = endpoints
    stranger = Site(fwd.address, server_public, *new_keypair())
    try:
        assert stranger.handshake() == zmq.EVENT_HANDSHAKE_FAILED_AUTH
        assert stranger.register(eid, secret) is None  # even with the right secret: nothing gets through
        assert fwd.store.endpoint_status(eid)["connected"] is False
    finally:
        stranger.close()


def test_plaintext_client_and_wrong_server_key_get_no_connection(forwarder, endpoints):
    fwd, _ = forwarder
    _, [(eid, secret, public, curve_secret), _] = endpoints
    plain = Site(fwd.address, None, None, None)
    impostor_server = Site(fwd.address, new_keypair()[0], public, curve_secret)  # would talk to a fake forwarder
    try:
        assert plain.register(eid, secret) is None
        assert impostor_server.register(eid, secret) is None
        assert fwd.store.endpoint_status(eid)["connected"] is False
    finally:
        plain.close()
        impostor_server.close()


def test_one_endpoints_key_cannot_register_as_another_endpoint(forwarder, endpoints):
    fwd, server_public = forwarder
    _, [(eid_a, _, public_a, curve_secret_a), (eid_b, secret_b, _, _)] = endpoints
    site = Site(fwd.address, server_public, public_a, curve_secret_a)
    try:
        assert site.handshake() == zmq.EVENT_HANDSHAKE_SUCCEEDED  # a valid key...
        reply = site.register(eid_b, secret_b)  # ...even with B's stolen secret
        assert isinstance(reply, m.Refused) and reply.code == "invalid_credentials"
        assert fwd.store.endpoint_status(eid_b)["connected"] is False
    finally:
        site.close()


def test_deleted_endpoint_cannot_connect_again(forwarder, endpoints, registry):
    fwd, server_public = forwarder
    who, [(eid, secret, public, curve_secret), _] = endpoints
    with registry() as session:
        delete_endpoint(session, fwd.store, who, eid)
    site = Site(fwd.address, server_public, public, curve_secret)
    try:
        assert site.handshake() == zmq.EVENT_HANDSHAKE_FAILED_AUTH
    finally:
        site.close()


def test_plaintext_forwarder_refuses_to_bind_beyond_loopback(redis_client):
    store = TaskStore(redis_client)
    with pytest.raises(ValueError, match="plaintext"):
        Forwarder(store, lambda e, s: True, "tcp://0.0.0.0:55999")
    Forwarder(store, lambda e, s: True, "tcp://127.0.0.1:0")  # loopback: allowed (tests, embedded)
