"""Execute one task message and pack its result: what a worker process runs for every task.

Parsl's worker pool calls :func:`execute_task` with the bytes of an encoded
:class:`~fnserve.messages.TaskMessage` (the site manager submits it as a custom
``task_executor``), and ships the returned bytes (an encoded
:class:`~fnserve.messages.ResultMessage`) back unchanged.
"""

from __future__ import annotations

import linecache
import os
import resource
import signal
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from fnserve import oob_frames, outputs, proxies, serialize
from fnserve.data_refs import DEFAULT_REF_THRESHOLD, result_route
from fnserve.errors import FnserveError, SerializationError
from fnserve.shell import ShellFunction
from fnserve.messages import (
    RemoteError,
    ResultMessage,
    TaskMessage,
    decode_task,
    encode_result,
)
from node_manager import allowance, output_files, parent_watch, running, watchdog
from node_manager.capture import OutputCapture
from node_manager.fd_capture import FdCapture
from node_manager.peak_memory import TaskMemory
from node_manager.placement import placement
from node_manager.task_errors import qualified_name, serialization_error, system_error, user_error

class FunctionCache:
    """A bounded LRU map from function id to the deserialized function.

    A warm worker deserializes a function once; later tasks of the same function reuse it.
    ``hits`` and ``misses`` count lookups (misses are deserializations).
    """

    def __init__(self, maxsize: int = 128) -> None:
        self.maxsize = maxsize
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[str, Callable[..., Any]] = OrderedDict()

    def get(self, function_id: str, buf: bytes) -> Callable[..., Any]:
        """The function for ``function_id``, deserializing ``buf`` only on a miss."""
        fn = self._entries.get(function_id)
        if fn is not None:
            self._entries.move_to_end(function_id)
            self.hits += 1
            return fn
        fn = _load_function(buf)
        self.misses += 1
        self._entries[function_id] = fn
        if len(self._entries) > self.maxsize:
            self._entries.popitem(last=False)
        return fn

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, function_id: object) -> bool:
        return function_id in self._entries

    def clear(self) -> None:
        self._entries.clear()
        self.hits = self.misses = 0


function_cache = FunctionCache()


class WalltimeExceeded(BaseException):
    """Raised inside the user's function when its walltime passes.

    A ``BaseException`` so that a user's ``except Exception`` cannot swallow it.
    """


def _load_function(buf: bytes) -> Callable[..., Any]:
    fn = serialize.deserialize_function(buf)
    header = serialize.parse_header(buf)
    if header.strategy == serialize.SOURCE:
        _register_source(buf[header.length :])
    return fn


def _register_source(body: bytes) -> None:
    # Source-strategy functions are compiled from a string; putting it in linecache lets their
    # tracebacks show the user's lines like any file-based function.
    name, _, source = body.partition(b"\n")
    lines = source.decode("utf-8", "replace").splitlines(keepends=True)
    filename = f"<fnserve:{name.decode('ascii', 'replace')}>"
    linecache.cache[filename] = (len(source), None, lines, filename)


DEFAULT_MAX_RESULT_BYTES = 10 * 1024 * 1024  # when the site manager sets no limit
_REF_HEADER = f"{serialize.MAGIC} {serialize.REF} ".encode()


def execute_task(task_bytes: bytes) -> bytes:
    """Run one encoded ``TaskMessage`` and return the encoded ``ResultMessage``.

    Never raises: a failure to decode, deserialize, run or serialize is reported in the result
    as a :class:`~fnserve.messages.RemoteError` with a stable ``code``.
    """
    received = time.time()
    task_id = ""
    try:
        task = decode_task(task_bytes)
        task_id = task.task_id
        result = _run(task, received)
    except BaseException as exc:  # noqa: BLE001 - last resort: this function must always answer
        result = ResultMessage(task_id=task_id, ok=False, error=system_error(exc))
    result.placement = placement()
    try:
        return encode_result(result)
    except Exception as exc:  # noqa: BLE001 - e.g. lone surrogates in captured output
        fallback = ResultMessage(
            task_id=task_id, ok=False, error=system_error(exc), timings=result.timings, placement=result.placement
        )
        return encode_result(fallback)


def _run(task: TaskMessage, received: float) -> ResultMessage:
    # A ProxyStore connector to the service's object store writes with this task's data token.
    with proxies.task_context(task.data_url, task.data_token):
        return _run_task(task, received)


def _run_task(task: TaskMessage, received: float) -> ResultMessage:
    timings = dict(task.timings)
    timings["worker_received"] = received
    try:
        if task.allowed_serializers is not None:
            # Headers only: a buffer this endpoint does not accept is never loaded (a dill
            # argument can run code before the allowed function is even called).
            serialize.check_allowed(task.function, task.allowed_serializers, "the function")
            serialize.check_allowed(task.payload, task.allowed_serializers, "the arguments")
        fn = function_cache.get(task.function_id, task.function)
        payload: bytes | bytearray = task.payload
        if payload.startswith(_REF_HEADER):
            from node_manager import data_plane

            payload = data_plane.fetch_arguments(task)
            timings["arguments_fetched"] = time.time()
        args, kwargs, call_options = serialize.deserialize_call(payload)
        if serialize.parse_header(bytes(payload[:64])).strategy != serialize.DILL_DATA:
            # A ProxyStore config names a class to import: only a code-capable payload may ask for it.
            call_options = {}
        del payload
    except SerializationError as exc:
        timings["worker_finished"] = time.time()
        return ResultMessage(
            task_id=task.task_id,
            ok=False,
            error=serialization_error(exc, "function or arguments"),
            timings=timings,
        )
    except FnserveError as exc:  # the object store refused or could not serve the arguments
        timings["worker_finished"] = time.time()
        return ResultMessage(task_id=task.task_id, ok=False, timings=timings, error=RemoteError(
            code=exc.code, type=type(exc).__name__, message=f"the arguments passed by reference: {exc.message}"))

    if task.mpi_launcher:
        from node_manager import mpi_env

        mpi_env.set_prefix(task.mpi_launcher)
    if parent_watch.orphaned():
        # Its site manager died after handing the task out: the restarted one sends it again, so
        # it must not start here (its result would have nowhere to go and it would run twice).
        # This worker ends; its pool follows (parent_watch.watch).
        os._exit(0)
    running.mark(task.control_dir, task.task_id)
    if running.take_cancelled(task.control_dir, task.task_id):
        running.mark(task.control_dir, "")  # this worker does not run it: no kill is meant for it
        timings["worker_finished"] = time.time()
        return ResultMessage(
            task_id=task.task_id, ok=False, timings=timings,
            error=RemoteError(code="cancelled", type="TaskCancelled",
                              message="the task was cancelled before it started; it did not run"),
        )
    # The task's state becomes "running"; its block is named so that the task is re-run at once if the block dies.
    where = placement()
    outputs.announce_start(task.task_id, task.outputs_address, {k: where[k] for k in ("runtime", "block") if k in where},
                            keys=task.outputs_keys)
    timings["worker_started"] = time.time()
    usage_before = resource.getrusage(resource.RUSAGE_SELF)
    memory = TaskMemory()
    capture = OutputCapture()
    fd_capture = FdCapture()
    value: Any = None
    error: RemoteError | None = None
    # From outside too: a helper process SIGKILLs this worker at walltime + grace, should the
    # function defeat the alarm below (node_manager.watchdog).
    armed = task.walltime is not None and task.walltime > 0 and watchdog.arm(task.walltime + _grace(task))
    with fd_capture, capture:
        try:
            # fnserve.report() inside the function sends live outputs to the site manager.
            # Files the function writes in fnserve.output_dir() are shipped as they close, the
            # last ones before the reports' end marker.
            with outputs.reporting(task.task_id, task.outputs_address, task.outputs_keys), output_files.shipping(task), \
                    allowance.narrowed(task.resource_specification):
                try:
                    if isinstance(fn, ShellFunction):  # its walltime is the command's: return code 124
                        from node_manager import shell

                        value = shell.run(fn, args, kwargs, task.task_id, task.walltime, task.control_dir)
                    else:
                        value = _call_with_walltime(fn, args, kwargs, task.walltime)
                finally:
                    if armed:
                        watchdog.disarm()
        except FnserveError as exc:
            if not isinstance(fn, ShellFunction):
                error = user_error(exc)
            else:  # bad arguments for its template: a stable code naming the placeholder
                error = RemoteError(code=exc.code, type=qualified_name(type(exc)), message=exc.message,
                                    args=[exc.message])
        except WalltimeExceeded:
            error = RemoteError(
                code="walltime_exceeded",
                type="WalltimeExceeded",
                message=f"task ran longer than its walltime of {task.walltime:g} s and was stopped",
            )
        except BaseException as exc:  # noqa: BLE001 - whatever the user's code raises is its result
            error = user_error(exc)
    finished = time.time()
    usage_after = resource.getrusage(resource.RUSAGE_SELF)
    timings["worker_finished"] = finished

    result = ResultMessage(
        task_id=task.task_id,
        ok=error is None,
        error=error,
        stdout=capture.stdout + fd_capture.stdout,
        stderr=capture.stderr + fd_capture.stderr,
        timings=timings,
        resources={
            "wall_time": finished - timings["worker_started"],
            "cpu_time": _cpu_seconds(usage_after) - _cpu_seconds(usage_before),
            "max_rss_kb": memory.peak_kb(usage_after),  # this task's peak, not the worker's
        },
    )
    if error is None:
        parts: list[Any] = []
        try:
            if call_options.get("result_proxy"):  # the caller's ProxyStore store takes a large result
                value = proxies.proxy_result(value, call_options["result_proxy"])
            parts = _serialize_result(value, task.result_strategy)
        except SerializationError as exc:
            result.ok = False
            result.error = serialization_error(
                exc, "return value", code="result_not_serializable"
            )
        except Exception as exc:  # noqa: BLE001 - the caller's ProxyStore store refused or is unreachable
            result.ok = False
            result.error = RemoteError(code="result_upload_failed", type=type(exc).__name__,
                                       message=f"the result could not be put into the ProxyStore store: {exc}")
        size = oob_frames.total(parts)
        limit = task.max_result_bytes or DEFAULT_MAX_RESULT_BYTES
        threshold = task.ref_threshold if task.ref_threshold is not None else DEFAULT_REF_THRESHOLD
        route = result_route(size, threshold, limit, bool(task.data_url and task.data_token))
        if route == "reference":
            from node_manager import data_plane

            try:
                # The parts go up as views of the value: a large array is never copied here.
                result.data = data_plane.store_result(task, parts)
                timings["result_stored"] = time.time()
            except FnserveError as exc:
                result.ok, result.data = False, b""
                result.error = RemoteError(code="result_upload_failed", type=type(exc).__name__,
                                           message=f"the result could not be stored in the object store: {exc}")
        elif route == "too_large":
            # Refused here, in the worker: the big buffer is dropped and the worker lives on.
            result.ok, result.data = False, b""
            result.error = RemoteError(
                code="result_too_large", type="ResultTooLarge",
                message=f"the task's result is {size} bytes serialized, over the endpoint's limit of "
                        f"{limit} bytes (max_result_bytes) for results sent inline, and this task has no "
                        "object store to pass it by reference (the service sets FNSERVE_PUBLIC_URL for "
                        "that; docs/data.md); return less data or write it to shared storage",
            )
        elif result.ok:
            result.data = oob_frames.join(parts)
    return result


def _cpu_seconds(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


def _serialize_result(value: Any, strategy: str | None) -> list[oob_frames.Part]:
    if strategy == serialize.JSON_DATA:
        try:
            return serialize.serialize_data_parts(value, serialize.JSON_DATA)
        except SerializationError:
            pass  # not JSON-able: dill still lets a Python caller read it
    return serialize.serialize_data_parts(value, serialize.DILL_DATA)


# -- walltime -------------------------------------------------------------------------------

DEFAULT_WALLTIME_GRACE = 5.0  # when the site manager sets none (site_manager.walltime)


def _grace(task: TaskMessage) -> float:
    return task.walltime_grace if task.walltime_grace is not None else DEFAULT_WALLTIME_GRACE


def _call_with_walltime(
    fn: Callable[..., Any],
    args: list[Any],
    kwargs: dict[str, Any],
    walltime: float | None,
) -> Any:
    if not walltime or walltime <= 0:
        return fn(*args, **kwargs)
    if threading.current_thread() is threading.main_thread():
        return _call_with_alarm(fn, args, kwargs, walltime)
    return _call_with_async_raise(fn, args, kwargs, walltime)


def _raise_walltime(signum: int, frame: Any) -> None:
    raise WalltimeExceeded()


def _call_with_alarm(
    fn: Callable[..., Any], args: list[Any], kwargs: dict[str, Any], walltime: float
) -> Any:
    # HTEX workers run tasks in the main thread of their own process, so a real-time interval
    # timer interrupts the function even inside long C calls that check signals (time.sleep).
    previous = signal.signal(signal.SIGALRM, _raise_walltime)
    signal.setitimer(signal.ITIMER_REAL, walltime)
    try:
        return fn(*args, **kwargs)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _call_with_async_raise(
    fn: Callable[..., Any], args: list[Any], kwargs: dict[str, Any], walltime: float
) -> Any:
    # Signals only reach the main thread; elsewhere, ask the interpreter to raise in this thread.
    # It takes effect at the next bytecode, so a long C call finishes first.
    import ctypes

    thread_id = threading.get_ident()
    done = threading.Event()

    def expire() -> None:
        if not done.is_set():
            ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(thread_id), ctypes.py_object(WalltimeExceeded)
            )

    timer = threading.Timer(walltime, expire)
    timer.daemon = True
    timer.start()
    try:
        return fn(*args, **kwargs)
    finally:
        done.set()
        timer.cancel()


__all__ = ["FunctionCache", "WalltimeExceeded", "execute_task", "function_cache"]
