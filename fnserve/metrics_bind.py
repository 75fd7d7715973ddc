"""Where a process serves its Prometheus metrics: ``HOST:PORT`` from a setting, and the server.

Used by the forwarder (``FNSERVE_FORWARDER_METRICS``) and the site manager (``metrics:`` in the
endpoint config, or ``FNSERVE_SITE_METRICS``). The web service serves ``/metrics`` on its own
port instead (web_service/metrics.py). ``prometheus_client`` is imported only when a server
starts: plain ``pip install fnserve`` does not need it.
"""

from __future__ import annotations

import ipaddress
from typing import Any


class MetricsBindError(ValueError):
    """A metrics address that is not ``HOST:PORT``."""


def parse_bind(text: str) -> tuple[str, int]:
    """``"127.0.0.1:9101"`` -> ``("127.0.0.1", 9101)``; ``":9101"`` means loopback, not every
    interface (metrics name endpoints: an operator opens them wider on purpose).

    >>> parse_bind("[::1]:9101")
    ('::1', 9101)
    """
    host, sep, port = text.strip().rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise MetricsBindError(f"metrics address {text!r} is not HOST:PORT (e.g. 127.0.0.1:9101)")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve_metrics(bind: str, registry: Any = None) -> tuple[str, int]:
    """Serve ``registry`` (default: prometheus_client's) on ``bind`` from a daemon thread;
    returns the (host, port) bound (port 0 picks a free one)."""
    import prometheus_client

    host, port = parse_bind(bind)
    kwargs = {} if registry is None else {"registry": registry}
    server, _thread = prometheus_client.start_http_server(port, addr=host, **kwargs)
    return host, server.server_address[1]
