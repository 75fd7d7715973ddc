"""Live outputs: ``fnserve.report(**values)`` publishes progress from inside a running function.

Example (the function runs on an endpoint; a notebook reads the outputs while it runs)::

    def equilibrate(n_steps):
        import fnserve
        for step in range(0, n_steps, 100):
            ...
            fnserve.report(step=step, temperature=t, potential_energy=e)
        return final_structure

    # client side
    for out in fc.watch_outputs(task_id):
        print(out["seq"], out["values"]["temperature"])

Values must be JSON values (numbers, strings, booleans, ``None``, lists, dicts with string keys);
NumPy scalars and arrays are converted with ``tolist()``. Anything else raises ``TypeError`` at
the call, naming the key. One report may be at most :data:`MAX_REPORT_BYTES` encoded; a task's
reports together at most ``FNSERVE_TASK_OUTPUT_BYTES`` (default 1 MiB): past it, one
``truncated`` marker is sent and later reports are dropped.

Outside a worker, ``report`` does nothing (and costs a global lookup), so a function runs
unchanged on a laptop. In a worker it never blocks: each report is queued on a ZMQ PUSH socket to
the site manager and dropped if that queue is full or the channel is down. Live outputs are
best effort; the result of the task is not.

Use :func:`capture` to check a function's reports locally (it validates like a worker does).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from fnserve.messages import TaskOutput, encode_output

log = logging.getLogger(__name__)

MAX_REPORT_BYTES = 64 * 1024
DEFAULT_TASK_OUTPUT_BYTES = 1024 * 1024
OUTPUT_LIMIT_ENV = "FNSERVE_TASK_OUTPUT_BYTES"
# Reports queued per worker before new ones are dropped (the site manager reads them at once).
_SEND_HWM = 10_000
_MAX_DEPTH = 32


class OutputError(ValueError):
    """A report that cannot be sent: too large once encoded."""


def task_output_limit() -> int:
    """The per-task output budget in bytes (``FNSERVE_TASK_OUTPUT_BYTES``, default 1 MiB)."""
    try:
        return max(0, int(os.environ.get(OUTPUT_LIMIT_ENV, DEFAULT_TASK_OUTPUT_BYTES)))
    except ValueError:
        return DEFAULT_TASK_OUTPUT_BYTES


def report(**values: Any) -> None:
    """Publish ``values`` as one live output of the running task (a no-op outside a worker).

    Raises ``TypeError`` for values that are not JSON values and :class:`OutputError` for a
    report over :data:`MAX_REPORT_BYTES`; never blocks and never fails because the channel to
    the client is down.
    """
    reporter = _current
    if reporter is None:
        return
    reporter.report(values)


def check_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` as plain JSON values (NumPy converted); ``TypeError`` names the first bad one."""
    return {str(k): _jsonable(v, k, 0) for k, v in values.items()}


def _jsonable(value: Any, path: str, depth: int) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if depth > _MAX_DEPTH:
        raise TypeError(f"fnserve.report: {path} is nested more than {_MAX_DEPTH} levels deep")
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"fnserve.report: {path} has a key {k!r} that is not a string; JSON objects have string keys")
            out[k] = _jsonable(v, f"{path}.{k}", depth + 1)
        return out
    # NumPy scalars and arrays (not imported here: a worker that never uses NumPy never pays).
    if type(value).__module__ == "numpy" and callable(getattr(value, "tolist", None)):
        return _jsonable(value.tolist(), path, depth)
    raise TypeError(
        f"fnserve.report: {path} is a {type(value).__module__}.{type(value).__qualname__}; outputs must be JSON "
        "values (numbers, strings, booleans, None, lists, dicts with string keys): convert it first, "
        "e.g. float(x), x.value_in_unit(unit), str(x) or x.tolist()"
    )


class _Channel:
    """A ZMQ PUSH socket to the site manager, one per worker process, address and keys.

    ``keys`` (server public key, client secret key; z85): the site manager's socket admits only
    CurveZMQ clients holding them (site_manager.outputs)."""

    def __init__(self, address: str, keys: tuple[str, ...] | None = None) -> None:
        import zmq  # only when a task reports: keeps the node manager's import time small

        self._zmq = zmq
        self.pid = os.getpid()
        self._context: Any = zmq.Context.instance()
        self._socket = self._context.socket(zmq.PUSH)
        self._socket.setsockopt(zmq.SNDHWM, _SEND_HWM)
        self._socket.setsockopt(zmq.LINGER, 1000)  # a worker exiting still flushes for a moment
        if keys:
            server_public, client_secret = (k.encode() for k in keys)
            self._socket.curve_serverkey = server_public
            self._socket.curve_secretkey = client_secret
            self._socket.curve_publickey = zmq.curve_public(client_secret)
        self._socket.connect(address)

    def send(self, buf: bytes) -> bool:
        try:
            self._socket.send(buf, self._zmq.NOBLOCK)
            return True
        except self._zmq.ZMQError:  # queue full (Again) or socket unusable: drop, never block
            return False


_channels: dict[tuple[str, tuple[str, ...] | None], _Channel] = {}


def _channel(address: str, keys: list[str] | tuple[str, ...] | None = None) -> _Channel | None:
    key = (address, tuple(keys) if keys else None)
    ch = _channels.get(key)
    if ch is not None and ch.pid == os.getpid():
        return ch
    try:
        ch = _Channel(address, key[1])
    except Exception:  # noqa: BLE001 - no zmq, bad address or keys: live outputs are best effort
        return None
    _channels[key] = ch
    return ch


class _Reporter:
    """The outputs of one running task: numbering, budget and sending."""

    def __init__(self, task_id: str, send: Any, limit: int) -> None:
        self.task_id = task_id
        self.pid = os.getpid()
        self._send = send  # bytes -> bool
        self.limit = limit
        self.seq = 0
        self.sent_bytes = 0
        self.truncated = False
        self._lock = threading.Lock()  # a function may report from its own threads

    def report(self, values: dict[str, Any]) -> None:
        if os.getpid() != self.pid:
            return  # a forked child of the task: its inherited socket is not ours to use
        clean = check_values(values)
        with self._lock:
            msg = TaskOutput(task_id=self.task_id, seq=self.seq, time=time.time(), values=clean)
            try:
                buf = encode_output(msg)
            except (OverflowError, ValueError, TypeError) as exc:  # e.g. an int beyond 64 bits
                raise OutputError(f"fnserve.report: cannot encode these values: {exc}") from None
            if len(buf) > MAX_REPORT_BYTES:
                raise OutputError(
                    f"fnserve.report: one report may be at most {MAX_REPORT_BYTES} bytes encoded, this one is "
                    f"{len(buf)}; report summaries and return large data as the task's result"
                )
            if self.truncated:
                return
            if self.sent_bytes + len(buf) > self.limit:
                self.truncated = True
                self._mark("truncated")
                return
            self.seq += 1
            self.sent_bytes += len(buf)
            self._send(buf)

    def finish(self) -> None:
        """The function returned: say so (only if it reported), so readers know nothing follows."""
        with self._lock:
            if self.seq or self.truncated:
                self._mark("end")

    def _mark(self, kind: str) -> None:
        self._send(encode_output(TaskOutput(task_id=self.task_id, seq=self.seq, time=time.time(), kind=kind)))


_current: _Reporter | None = None


def announce_start(task_id: str, address: str | None, where: dict[str, str] | None = None,
                   keys: list[str] | None = None) -> None:
    """Tell the site manager that a worker starts running ``task_id`` now (a ``start`` marker on
    the outputs channel, used by the node manager): from it the task's state becomes
    ``running``, and ``where`` (the worker's runtime and block) lets the site manager re-run it
    at once should that block die. Best effort and never blocking, like every output."""
    if not address:
        return
    ch = _channel(address, keys)
    if ch is not None:
        ch.send(encode_output(TaskOutput(task_id=task_id, seq=-1, time=time.time(), kind="start", values=dict(where or {}))))


@contextmanager
def reporting(task_id: str, address: str | None, keys: list[str] | None = None) -> Iterator[None]:
    """Route ``report()`` calls to ``address`` (with CurveZMQ ``keys``) while the block runs
    (used by the node manager).

    The channel is opened on the first report only, so tasks that never report cost nothing.
    """
    global _current
    if not address:
        yield
        return

    def send(buf: bytes) -> bool:
        ch = _channel(address, keys)
        return ch.send(buf) if ch is not None else False

    reporter = _Reporter(task_id, send, task_output_limit())
    _current = reporter
    try:
        yield
    finally:
        _current = None
        try:
            reporter.finish()
        except Exception as exc:  # noqa: BLE001 - the end marker is a courtesy; the result matters
            log.debug("live outputs: end marker not sent: %s", type(exc).__name__)


@contextmanager
def capture(limit: int | None = None) -> Iterator[list[dict[str, Any]]]:
    """Collect ``report()`` calls locally, validated as in a worker (for tests and notebooks).

    Example::

        with fnserve.outputs.capture() as outs:
            equilibrate(200)
        assert outs[-1]["values"]["step"] == 200
    """
    import msgspec

    global _current
    collected: list[dict[str, Any]] = []

    def keep(buf: bytes) -> bool:
        out = msgspec.msgpack.decode(buf, type=TaskOutput)
        collected.append(msgspec.structs.asdict(out))
        return True

    previous = _current
    _current = _Reporter("local", keep, task_output_limit() if limit is None else limit)
    try:
        yield collected
    finally:
        _current = previous


__all__ = ["MAX_REPORT_BYTES", "OutputError", "capture", "check_values", "report", "reporting", "task_output_limit"]
