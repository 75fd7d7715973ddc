"""What reaches the service's logs: control characters escaped, and the access log.

User input (paths, names, messages from endpoints) can carry newlines and terminal escapes; raw,
they forge log lines or rewrite an operator's terminal. :func:`install_log_escaping` escapes
them in every record's message on the root handlers (tracebacks, formatted separately, keep their
own newlines).

The access log (logger ``fnserve.access``, one INFO line per request, ``FNSERVE_ACCESS_LOG=0``
turns it off) names the method, the path (never the query string), the status, the duration,
the user id (``-`` when the token was not verified) and the client address; never a token.
"""

from __future__ import annotations

import logging
import re
import time

from flask import Flask, Response, g, request

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def printable(text: str) -> str:
    """``text`` with control characters (C0, DEL, C1, Unicode line separators) as ``\\xNN`` /
    ``\\uNNNN`` escapes: one log record stays one line, and no escape sequence reaches a terminal."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}", text)


class EscapeControlCharacters(logging.Filter):
    """A handler filter: the record's formatted message, escaped by :func:`printable`."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        safe = printable(message)
        if safe != message or record.args:
            record.msg, record.args = safe, None
        return True


def install_log_escaping(logger: logging.Logger | None = None) -> None:
    """Add the escaping filter to every handler of ``logger`` (the root logger by default)."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, EscapeControlCharacters) for f in handler.filters):
            handler.addFilter(EscapeControlCharacters())


access_log = logging.getLogger("fnserve.access")


def register_access_log(app: Flask) -> None:
    """Log every request that reaches the app once it is answered."""

    @app.before_request
    def _start() -> None:
        g.access_t0 = time.perf_counter()

    @app.after_request
    def _log(resp: Response) -> Response:
        started = g.get("access_t0")
        ms = (time.perf_counter() - started) * 1e3 if started is not None else 0.0
        ident = g.get("identity")
        access_log.info("%s %s %d %.1fms user=%s addr=%s", request.method, printable(request.path), resp.status_code, ms,
                        ident.user_id if ident is not None else "-", request.remote_addr or "-")
        return resp


__all__ = ["EscapeControlCharacters", "access_log", "install_log_escaping", "printable", "register_access_log"]
