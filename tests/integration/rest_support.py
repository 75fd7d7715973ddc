"""Fixtures and helpers shared by the REST tests (imported by the test_rest_* modules).

Everything is real: the Flask app over a real Redis and a real SQLite / PostgreSQL database.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any, Iterator

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from fnserve import serialize
from web_service.admin import add_user
from web_service.app import create_app
from web_service.settings import Settings
from web_service.state import ServiceState
from web_service.task_store import TaskStore

MAX_PAYLOAD = 64 * 1024
MAX_REQUEST = 512 * 1024
MAX_BATCH = 50


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


def state(app: Flask) -> ServiceState:
    return app.extensions["fnserve"]  # type: ignore[no-any-return]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def b64(buf: bytes) -> str:
    return base64.b64encode(buf).decode()


def source_function(name: str = "double", body: str = "return 2 * x") -> bytes:
    return serialize.serialize_source(f"def {name}(x):\n    {body}\n", name)


def register_function(client: FlaskClient, headers: dict[str, str], name: str = "double", **extra: Any) -> str:
    resp = client.post("/v1/functions", json={"name": name, "function": b64(source_function()), **extra}, headers=headers)
    assert resp.status_code == 201, resp.json
    return str(resp.json["function_id"])


def register_endpoint(client: FlaskClient, headers: dict[str, str], name: str = "laptop") -> dict[str, Any]:
    resp = client.post("/v1/endpoints", json={"name": name}, headers=headers)
    assert resp.status_code == 201, resp.json
    return resp.json  # type: ignore[no-any-return]


def assert_error(resp: Any, status: int, code: str) -> dict[str, Any]:
    """The response is our JSON error with ``status`` and ``code``; returns the error object."""
    assert resp.status_code == status, (resp.status_code, resp.get_data(as_text=True))
    assert resp.is_json, resp.get_data(as_text=True)
    error = resp.json["error"]
    assert error["code"] == code, error
    assert error["message"]
    return error  # type: ignore[no-any-return]
