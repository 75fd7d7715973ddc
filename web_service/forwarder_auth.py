"""Who may talk to the forwarder: CurveZMQ (ZAP) admission of site managers by their endpoint's
key, and the rule that without keys the forwarder serves loopback (or ipc/inproc) only."""

from __future__ import annotations

import logging
from typing import Any, Callable

import zmq

log = logging.getLogger("web_service.forwarder")

SecretVerifier = Callable[[str, str], bool]
# CurveZMQ public key (Z85 text) -> the live endpoint it belongs to, or None.
KeyLookup = Callable[[str], "str | None"]
ZAP_DOMAIN = "fnserve"


def local_only(bind: str) -> bool:
    """Whether ``bind`` is reachable from this host only (plaintext is tolerated there).

    >>> local_only("tcp://127.0.0.1:0"), local_only("ipc:///tmp/f"), local_only("tcp://0.0.0.0:55001")
    (True, True, False)
    """
    if bind.startswith(("ipc://", "inproc://")):
        return True
    host = bind.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    return host in ("127.0.0.1", "localhost", "::1")


def check_bind(bind: str, server_keys: tuple[bytes, bytes] | None, endpoint_for_key: KeyLookup | None) -> None:
    """Refuse to serve plaintext off loopback, or CurveZMQ without a way to check keys."""
    if server_keys is None and not local_only(bind):
        raise ValueError(f"refusing to serve {bind} in plaintext: CurveZMQ keys are required off loopback")
    if server_keys is not None and endpoint_for_key is None:
        raise ValueError("CurveZMQ needs endpoint_for_key to authenticate site managers")


class EndpointKeys:
    """ZAP credentials provider: admits a CURVE client only if its public key belongs to a live
    endpoint. Runs on the authenticator's thread, once per connection (not per message)."""

    def __init__(self, endpoint_for_key: KeyLookup) -> None:
        self.endpoint_for_key = endpoint_for_key

    def callback(self, domain: str, key: bytes) -> bool:
        try:
            endpoint_id = self.endpoint_for_key(key.decode("ascii"))
        except Exception:
            log.exception("could not look up an endpoint key")
            return False
        if endpoint_id is None:
            log.warning("refused a CurveZMQ connection: the key belongs to no live endpoint")
        return endpoint_id is not None


def start_curve(ctx: zmq.Context, router: zmq.Socket, server_keys: tuple[bytes, bytes], keys: EndpointKeys) -> Any:
    """Turn on CurveZMQ on ``router`` with a ZAP authenticator asking ``keys``; returns the
    authenticator (stop it when the router closes)."""
    from zmq.auth.thread import ThreadAuthenticator

    authenticator = ThreadAuthenticator(ctx, log=logging.getLogger("fnserve.forwarder.zap"))
    authenticator.start()
    authenticator.configure_curve_callback(domain=ZAP_DOMAIN, credentials_provider=keys)
    public, secret = server_keys
    router.curve_server = True
    router.curve_publickey = public
    router.curve_secretkey = secret
    router.zap_domain = ZAP_DOMAIN.encode()
    return authenticator
