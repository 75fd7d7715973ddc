"""Fixtures of the integration tests (shared ones: tests/conftest.py).

- the REST app: ``settings``, ``app``, ``client`` (Flask's test client), ``store``, and the users
  ``alice`` and ``bob``, over a real Redis and a real SQLite / PostgreSQL database (helpers:
  rest_support.py);
- ``forwarder``: the forwarder on real ZMQ sockets and a real Redis, on its own thread.

A module that defines a fixture of the same name (e.g. ``client`` in test_executor.py) uses its own.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Iterator

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from tests.integration.rest_support import MAX_BATCH, MAX_PAYLOAD, MAX_REQUEST, bearer, state
from web_service.admin import add_user
from web_service.app import create_app
from web_service.forwarder import Forwarder
from web_service.settings import Settings
from web_service.task_store import TaskStore

# Endpoint secrets the ``forwarder`` fixture accepts.
FORWARDER_SECRETS = {"ep1": "s3cret"}


@pytest.fixture
def settings(database_url: str, redis_url: str, tmp_path: Path) -> Settings:
    return Settings(
        forwarder_key_file=str(tmp_path / "forwarder.key"),
        database_url=database_url, redis_url=redis_url, max_payload_bytes=MAX_PAYLOAD,
        max_request_bytes=MAX_REQUEST, max_batch=MAX_BATCH, max_wait=5.0,
        forwarder_address="tcp://forwarder.example:55001",
        # Route-coverage tests send hundreds of refused requests from one address; the
        # per-address limit has its own tests (test_security_service.py).
        anon_rate_limit=0.0,
    )


@pytest.fixture
def app(settings: Settings, redis_client: redis.Redis) -> Iterator[Flask]:
    app = create_app(settings)
    yield app
    state(app).engine.dispose()
    state(app).store.r.close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def store(app: Flask) -> TaskStore:
    return state(app).store


@pytest.fixture
def alice(app: Flask, settings: Settings) -> dict[str, str]:
    return bearer(add_user(settings, "alice"))


@pytest.fixture
def bob(app: Flask, settings: Settings) -> dict[str, str]:
    return bearer(add_user(settings, "bob"))


@pytest.fixture
def forwarder(redis_client: redis.Redis) -> Iterator[tuple[Forwarder, TaskStore]]:
    """A forwarder on an ephemeral port (endpoint ep1, secret s3cret), and its task store."""
    store = TaskStore(redis_client)
    fwd = Forwarder(store, lambda e, s: FORWARDER_SECRETS.get(e) == s, "tcp://127.0.0.1:0", heartbeat_period=0.2,
                    heartbeat_threshold=0.6)
    th = threading.Thread(target=fwd.run, daemon=True)
    th.start()
    assert fwd.bound.wait(5)
    yield fwd, store
    fwd.stop()
    th.join(10)
    assert not th.is_alive()
