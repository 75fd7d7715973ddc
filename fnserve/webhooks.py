"""Signing webhook deliveries to a trigger (``POST /v1/hooks/{trigger_id}``).

A webhook trigger has a secret, shown once when it is created. A sender signs each delivery::

    X-Fnserve-Timestamp: 1764630000               (Unix seconds, when it was signed)
    X-Fnserve-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>." + raw body)>
    X-Fnserve-Event-Id: scan-4711                 (optional: the sender's id of the event)

The service refuses a delivery whose signature does not match or whose timestamp is more than
:data:`MAX_SKEW` seconds away from its clock (so a captured request cannot be replayed later).
Deliveries with the same event id fire once; without one, an exact re-send (same timestamp and
body, hence the same signature) fires once too.

Example (what an instrument's control system runs, here with ``requests``)::

    body = json.dumps({"scan": 4711, "path": "/data/scan4711.h5"}).encode()
    headers = fnserve.webhooks.sign(secret, body)
    requests.post(f"{service}/v1/hooks/{trigger_id}", data=body, headers=headers)
"""

from __future__ import annotations

import hashlib
import hmac
import time

TIMESTAMP_HEADER = "X-Fnserve-Timestamp"
SIGNATURE_HEADER = "X-Fnserve-Signature"
EVENT_ID_HEADER = "X-Fnserve-Event-Id"
#: Seconds a signed delivery stays acceptable (either way: clocks differ).
MAX_SKEW = 300


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>``: the HMAC-SHA256 of ``"<timestamp>." + body`` under ``secret``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def sign(secret: str, body: bytes, event_id: str | None = None, now: float | None = None) -> dict[str, str]:
    """The headers that make ``body`` a valid delivery for the trigger whose secret this is."""
    ts = str(int(time.time() if now is None else now))
    headers = {TIMESTAMP_HEADER: ts, SIGNATURE_HEADER: signature(secret, ts, body), "Content-Type": "application/json"}
    if event_id is not None:
        headers[EVENT_ID_HEADER] = event_id
    return headers


def check(secret: str, timestamp: str | None, given: str | None, body: bytes, now: float) -> str | None:
    """Why a delivery is refused (a message for the sender), or None when it is genuine."""
    if not timestamp or not given:
        return f"send the {TIMESTAMP_HEADER} and {SIGNATURE_HEADER} headers (see fnserve.webhooks.sign)"
    if not timestamp.isdigit() or len(timestamp) > 12:
        return f"{TIMESTAMP_HEADER} must be Unix seconds"
    if abs(now - int(timestamp)) > MAX_SKEW:
        return f"{TIMESTAMP_HEADER} is more than {MAX_SKEW} s from the service's clock: sign each delivery when sending it"
    if not hmac.compare_digest(signature(secret, timestamp, body).encode(), given.strip().encode()):
        return "the signature does not match this trigger's secret and the body"
    return None
