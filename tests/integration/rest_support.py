"""Helpers shared by the REST tests (their fixtures: tests/integration/conftest.py).

Everything is real: the Flask app over a real Redis and a real SQLite / PostgreSQL database.
"""

from __future__ import annotations

import base64
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from fnserve import serialize
from web_service.state import ServiceState

MAX_PAYLOAD = 64 * 1024
MAX_REQUEST = 512 * 1024
MAX_BATCH = 50


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
