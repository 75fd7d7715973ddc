"""Helpers for the dashboard's in-process tests: the real Flask app over real Redis and SQL,
logged in through the real login form."""

from __future__ import annotations

import re
from typing import Any

from flask.testing import FlaskClient

from web_service.dashboard.sessions import COOKIE


def token_of(headers: dict[str, str]) -> str:
    return headers["Authorization"].split(" ", 1)[1]


def form_csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


def log_in(client: FlaskClient, token: str, next_path: str = "") -> Any:
    """Log ``client`` in with the login form; returns the login answer (a redirect)."""
    csrf = form_csrf(client.get("/dashboard/login").get_data(as_text=True))
    resp = client.post("/dashboard/login", data={"csrf_token": csrf, "token": token, "next": next_path})
    assert resp.status_code == 302, resp.get_data(as_text=True)
    assert client.get_cookie(COOKIE, path="/dashboard") is not None
    return resp


def page_csrf(client: FlaskClient) -> str:
    """The session's CSRF token, as every page's logout form carries it."""
    return form_csrf(client.get("/dashboard/functions").get_data(as_text=True))


def read_events(resp: Any, until: str, limit: int = 50) -> str:
    """Text of a server-sent event stream up to and including the first event named ``until``."""
    seen = ""
    chunks = iter(resp.response)
    for _ in range(limit):
        chunk = next(chunks)
        seen += chunk.decode() if isinstance(chunk, bytes) else chunk
        if f"event: {until}\n" in seen and seen.endswith("\n\n"):
            return seen
    raise AssertionError(f"no {until!r} event in: {seen[:2000]}")
