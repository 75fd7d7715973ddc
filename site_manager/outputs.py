"""The side channel for live outputs: workers push ``fnserve.report()`` messages to a PULL socket
here, and the site manager relays them to the forwarder in batches.

HTEX carries only a task and its result, so the node manager sends reports on its own: the
address of this socket travels in each :class:`~fnserve.messages.TaskMessage`
(``outputs_address``). Workers on the same host (the ``local`` provider) reach it on loopback;
workers on compute nodes reach it at the address HTEX's interchange uses (``engine.address``)
or this host's name.

Only this endpoint's workers may speak on it: the socket is a CurveZMQ server, and its ZAP
handler admits one client key. Both keypairs are made when the site manager starts and kept in
its memory only; workers get the server's public key and the client's secret key in each task
message (``outputs_keys``), which reaches them over the interchange's own CurveZMQ channel. Any
other process (another account on this host, anyone who reaches the port) fails the handshake
before a byte of what it sends is read: it can neither forge a task's outputs or its start, nor
make this endpoint relay (and the service log) a flood of made-up ones.
"""

from __future__ import annotations

import logging
import hmac
import socket

import zmq
import zmq.utils.z85

from fnserve.errors import FnserveError
from fnserve.messages import TaskOutput, decode_output
from fnserve.outputs import MAX_REPORT_BYTES

logger = logging.getLogger(__name__)

# Reports read per wake-up; what is left is read on the next turn of the loop.
MAX_DRAIN = 5000


def advertised_host(provider_type: str, engine_options: dict[str, object]) -> tuple[str, str]:
    """(interface to bind, host name workers connect to) for a provider type."""
    if provider_type == "local":
        return "127.0.0.1", "127.0.0.1"
    address = engine_options.get("address")
    return "0.0.0.0", str(address) if address else socket.gethostname()


ZAP_ENDPOINT = "inproc://zeromq.zap.01"  # where libzmq asks a context's ZAP handler (RFC 27)


def zap_reply(frames: list[bytes], allowed_key: bytes) -> list[bytes]:
    """The ZAP handler's answer to one request: 200 for a CURVE client holding ``allowed_key``
    (raw 32 bytes), 400 for anything else.

    >>> zap_reply([b"1.0", b"7", b"", b"127.0.0.1", b"", b"CURVE", b"k" * 32], b"k" * 32)[2]
    b'200'
    >>> zap_reply([b"1.0", b"7", b"", b"127.0.0.1", b"", b"NULL"], b"k" * 32)[2]
    b'400'
    """
    version, request_id = (frames + [b"", b""])[:2]
    ok = (version == b"1.0" and len(frames) == 7 and frames[5] == b"CURVE"
          and hmac.compare_digest(frames[6], allowed_key))
    return [b"1.0", request_id, b"200" if ok else b"400", b"OK" if ok else b"not this endpoint's worker", b"", b""]


class OutputRelay:
    """A bound PULL socket (CurveZMQ, this endpoint's workers only); :meth:`drain` returns the
    reports waiting on it. ``keys`` is what a worker needs to connect (``outputs_keys``).

    ``zap`` is the context's ZAP handler socket: the owner's loop polls it and calls
    :meth:`answer_zap` (once per worker connection), so the relay needs no thread of its own."""

    def __init__(self, context: zmq.Context, bind_host: str = "127.0.0.1", advertise: str | None = None) -> None:
        server_public, server_secret = zmq.curve_keypair()
        client_public, client_secret = zmq.curve_keypair()
        self._allowed = zmq.utils.z85.decode(client_public)
        # ZAP is per context: this one handles our only server socket (the forwarder's is a client).
        self.zap: zmq.Socket[bytes] = context.socket(zmq.REP)
        self.zap.setsockopt(zmq.LINGER, 0)
        self.zap.bind(ZAP_ENDPOINT)
        self.keys = [server_public.decode(), client_secret.decode()]
        self.socket: zmq.Socket[bytes] = context.socket(zmq.PULL)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.curve_server = True
        self.socket.curve_secretkey = server_secret
        self.socket.curve_publickey = server_public
        # A peer sending more than one report's worth in a message is dropped by ZMQ itself.
        self.socket.setsockopt(zmq.MAXMSGSIZE, MAX_REPORT_BYTES + 4096)
        port = self.socket.bind_to_random_port(f"tcp://{bind_host}")
        self.address = f"tcp://{advertise or bind_host}:{port}"
        self.dropped = 0
        self.refused = 0

    def answer_zap(self) -> None:
        """Answer the handshakes waiting (each a worker, or someone else, connecting)."""
        while True:
            try:
                frames = self.zap.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            reply = zap_reply(frames, self._allowed)
            if reply[2] != b"200":
                self.refused += 1
                logger.warning("live outputs: refused a connection from %s that is not this endpoint's worker",
                               frames[3].decode("ascii", "replace") if len(frames) > 3 else "?")
            self.zap.send_multipart(reply)

    def drain(self, limit: int = MAX_DRAIN) -> list[TaskOutput]:
        outputs: list[TaskOutput] = []
        while len(outputs) < limit:
            try:
                frame = self.socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            try:
                outputs.append(decode_output(frame))
            except FnserveError as exc:
                self.dropped += 1
                logger.warning("dropping a malformed live output from a worker: %s", exc)
        return outputs

    def close(self) -> None:
        self.socket.close(linger=0)
        self.zap.close(linger=0)
