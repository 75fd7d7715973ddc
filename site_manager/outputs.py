"""The side channel for live outputs: workers push ``fnserve.report()`` messages to a PULL socket
here, and the site manager relays them to the forwarder in batches.

HTEX carries only a task and its result, so the node manager sends reports on its own: the
address of this socket travels in each :class:`~fnserve.messages.TaskMessage`
(``outputs_address``). Workers on the same host (the ``local`` provider) reach it on loopback;
workers on compute nodes reach it at the address HTEX's interchange uses (``engine.address``)
or this host's name.
"""

from __future__ import annotations

import logging
import socket

import zmq

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


class OutputRelay:
    """A bound PULL socket; :meth:`drain` returns the reports waiting on it."""

    def __init__(self, context: zmq.Context, bind_host: str = "127.0.0.1", advertise: str | None = None) -> None:
        self.socket: zmq.Socket[bytes] = context.socket(zmq.PULL)
        self.socket.setsockopt(zmq.LINGER, 0)
        # A peer sending more than one report's worth in a message is dropped by ZMQ itself.
        self.socket.setsockopt(zmq.MAXMSGSIZE, MAX_REPORT_BYTES + 4096)
        port = self.socket.bind_to_random_port(f"tcp://{bind_host}")
        self.address = f"tcp://{advertise or bind_host}:{port}"
        self.dropped = 0

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
