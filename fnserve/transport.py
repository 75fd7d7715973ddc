"""HTTP transport for the SDK: JSON over a keep-alive connection pool (urllib3)."""

from __future__ import annotations

import copy
import json
import socket
import weakref
from typing import Any, Callable
from urllib.parse import urlencode

import urllib3

from fnserve.errors import FnserveError, ServiceUnavailable, error_from_dict


class Transport:
    """One method per HTTP verb; answers are decoded JSON, errors raised as FnserveError."""

    def __init__(self, base_url: str, token: str | None, timeout: float = 30.0,
                 refresh_token: Callable[[], str] | None = None):
        """``refresh_token``, when given, supplies a token before the first request and a new
        one after a 401 ``invalid_token`` (Globus tokens expire); the request is then retried once."""
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.refresh_token = refresh_token
        self.timeout = timeout
        self.pool = urllib3.PoolManager(num_pools=4, maxsize=8, retries=False)
        self._connections: weakref.WeakSet[Any] | None = None  # tracked only by fork()
        self._aborted = False

    def fork(self) -> "Transport":
        """A transport like this one (same service, token, class) with its own connections,
        which :meth:`abort` can break off: for a thread that long-polls and must be stoppable."""
        other = copy.copy(self)
        other.pool = urllib3.PoolManager(num_pools=1, maxsize=1, retries=False)
        other._aborted = False
        connections: weakref.WeakSet[Any] = weakref.WeakSet()
        other._connections = connections
        pool = other.pool.connection_from_url(self.base_url)
        base = pool.ConnectionCls

        def connect(conn: Any) -> None:
            base.connect(conn)
            connections.add(conn)

        # The pool makes its connections from this class: each one is noted once connected.
        pool.ConnectionCls = type(f"Tracked{base.__name__}", (base,), {"connect": connect})
        return other

    def abort(self) -> None:
        """Break off this (forked) transport's requests in flight, from any thread; later
        requests fail at once. A blocked long-poll returns with ``ServiceUnavailable``."""
        self._aborted = True
        for conn in list(self._connections or ()):
            sock = getattr(conn, "sock", None)
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # already closed

    def request(self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        if self._aborted:
            raise ServiceUnavailable("the request was aborted (the client is shutting down)", code="request_aborted")
        if self.refresh_token is not None and not self.token:
            self.token = self.refresh_token()
        try:
            return self._request(method, path, body, params, timeout)
        except FnserveError as exc:
            if self.refresh_token is None or exc.code != "invalid_token":
                raise
            self.token = self.refresh_token()
            return self._request(method, path, body, params, timeout)

    def _request(self, method: str, path: str, body: Any, params: dict[str, Any] | None, timeout: float | None) -> Any:
        url = self.base_url + path
        if params:
            url += "?" + urlencode(params)
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None
        if body is not None:
            data = json.dumps(body, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        try:
            resp = self.pool.request(method, url, body=data, headers=headers, timeout=timeout or self.timeout, preload_content=True)
        except urllib3.exceptions.HTTPError as exc:
            raise ServiceUnavailable(
                f"cannot reach the fnserve service at {self.base_url} ({type(exc).__name__}); "
                "is it running? (`fnserve up` starts a local one)",
                code="service_unreachable",
            ) from exc
        return self._decode(resp)

    @staticmethod
    def _decode(resp: urllib3.BaseHTTPResponse) -> Any:
        return decode_answer(resp.status, resp.data)

    def get(self, path: str, **params: Any) -> Any:
        timeout = params.pop("_timeout", None)
        return self.request("GET", path, params=params or None, timeout=timeout)

    def post(self, path: str, body: Any, timeout: float | None = None) -> Any:
        return self.request("POST", path, body=body, timeout=timeout)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)


# A wait rides out the service being briefly unavailable (Redis restarting or failing over, a
# web replica restarting): first retry after 0.2 s, doubling to 5 s, given up after 120 s without
# an answer when the wait has no deadline of its own.
UNAVAILABLE_FIRST, UNAVAILABLE_MAX, UNAVAILABLE_GIVE_UP = 0.2, 5.0, 120.0


def unavailable_retry(previous: float | None, unavailable_for: float, left: float | None, retry_after: float = 0.0) -> float | None:
    """Seconds to wait before asking again after a ``ServiceUnavailable`` answer, or None to give
    up: ``previous`` is the last delay (None: first failure), ``unavailable_for`` how long the
    service has been failing, ``left`` the seconds left before the caller's deadline (None: none),
    ``retry_after`` what the service asked for."""
    if left is not None and left <= 0:
        return None
    if left is None and unavailable_for >= UNAVAILABLE_GIVE_UP:
        return None
    delay = UNAVAILABLE_FIRST if previous is None else min(previous * 2, UNAVAILABLE_MAX)
    delay = max(delay, retry_after)
    return delay if left is None else min(delay, left)


def decode_answer(status: int, data: bytes) -> Any:
    """A REST answer's JSON, or its error raised as the matching :class:`FnserveError`."""
    try:
        payload = json.loads(data) if data else None
    except ValueError:
        payload = None
    if status >= 400:
        if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
            raise error_from_dict(payload["error"], status)
        err = FnserveError(f"HTTP {status} from the service", code="http_error")
        err.http_status = status
        raise err
    return payload
