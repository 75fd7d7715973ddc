"""A site manager's side of the forwarder protocol, spoken by hand over a real ZMQ DEALER with
the CurveZMQ keys it is given: how tests play a well-behaved, a hostile or a stale endpoint."""

from __future__ import annotations

import time

import zmq
from zmq.utils.monitor import recv_monitor_message

from fnserve import messages as m


class Site:
    """A DEALER speaking the site manager's side, with the CurveZMQ keys it is given."""

    def __init__(self, address: str, server_public: str | None, public: str | None, secret: str | None):
        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if server_public:
            self.sock.curve_serverkey = server_public.encode()
            self.sock.curve_publickey = public.encode()
            self.sock.curve_secretkey = secret.encode()
        self.monitor = self.sock.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
            | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
        self.sock.connect(address)

    def handshake(self, timeout: float = 5.0) -> int:
        """The first handshake event ZMQ reports for this connection."""
        assert self.monitor.poll(int(timeout * 1000)), "no handshake event"
        return int(recv_monitor_message(self.monitor)["event"])

    def register(self, endpoint_id: str, secret: str):
        try:  # a DEALER with no completed handshake has no peer to queue for: do not block
            self.sock.send(m.encode(m.Register(endpoint_id=endpoint_id, secret=secret)), zmq.NOBLOCK)
        except zmq.Again:
            return None
        if not self.sock.poll(1500):
            return None
        return m.decode_from_forwarder(self.sock.recv())

    def close(self) -> None:
        self.sock.disable_monitor()
        self.monitor.close(0)
        self.sock.close(0)

    def send(self, msg) -> None:
        self.sock.send(m.encode(msg), zmq.NOBLOCK)

    def receive(self, timeout: float = 3.0):
        """The next message from the forwarder, or None if none comes within ``timeout``.

        The file-trigger watch list the forwarder sends every endpoint that registers (empty
        here) is skipped: this endpoint watches nothing, as a real site manager with none."""
        deadline = time.monotonic() + timeout
        while self.sock.poll(max(0, int((deadline - time.monotonic()) * 1000))):
            msg = m.decode_from_forwarder(self.sock.recv())
            if not isinstance(msg, m.WatchFolders):
                return msg
        return None
