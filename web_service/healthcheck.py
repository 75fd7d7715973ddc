"""``python -m web_service.healthcheck``: exit 0 when the web service on this host answers
``GET /v1/health`` with 200 (Redis and the registry reachable), else 1 with the reason.

The service image's HEALTHCHECK (deploy/Containerfile). It probes the port of
``$FNSERVE_WEB_BIND`` (what ``python -m web_service.server`` binds by default) on loopback.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def health_url(bind: str) -> str:
    """``0.0.0.0:8780`` -> ``http://127.0.0.1:8780/v1/health`` (a wildcard bind answers on loopback)."""
    host, _, port = bind.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}/v1/health"


def main() -> int:
    url = health_url(os.environ.get("FNSERVE_WEB_BIND") or "127.0.0.1:8780")
    try:
        with urllib.request.urlopen(url, timeout=4) as resp:
            return 0 if resp.status == 200 else 1
    except urllib.error.HTTPError as exc:
        print(f"{url}: {exc.code} {exc.read()[:300]!r}", file=sys.stderr)
    except OSError as exc:
        print(f"{url}: {exc}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
