"""The site manager's I/O loop: one ZMQ DEALER to the forwarder, the engine, and signals.

All decisions live in :class:`site_manager.session.Session`; this module only moves bytes,
watches the clock and carries out the actions the session returns.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from concurrent.futures import Future
from typing import Any

import zmq

from fnserve.errors import FnserveError
from fnserve.messages import (
    Disconnect,
    TaskMessage,
    decode_from_forwarder,
    encode,
)
from site_manager.config import EndpointConfig
from site_manager.engine_like import EngineLike
from site_manager.engine_submit import result_of, submit_task
from site_manager.resources import endpoint_offers
from site_manager.runtime_pool import RuntimePool
from site_manager.failures import failure_result
from site_manager.inbox import Inbox, ResultInbox
from site_manager.outputs import OutputRelay, advertised_host
from node_manager import parent_watch
from node_manager.running import tasks_started
from site_manager.cancel import control_dir, kill_tasks
from site_manager.walltime import overdue
from site_manager.ledger_store import LedgerStore
from site_manager.metrics import NoMetrics, SiteMetrics, site_metrics
from site_manager.actions import Action, Exit, Kill, Reconnect, Send, Submit, Watch
from site_manager.result_ledger import ResultLedger
from site_manager.session import Backoff, Session
from site_manager.start_reports import RUNNING_REPORT_DELAY
from site_manager.status import EngineStatus
from site_manager.drain import Drain, stop_on_signals
from site_manager.engine_tasks import EngineTasks
from site_manager.software import software_versions

logger = logging.getLogger(__name__)

# Seconds between checks for tasks past their walltime (only while such tasks run).
WALLTIME_CHECK = 1.0

class SiteManager:
    """Connects out to the forwarder and runs the tasks it sends on the engine.

    ``run()`` blocks until the forwarder refuses us (exit status 2) or a stop is requested
    with :meth:`stop` / SIGTERM / SIGINT (exit status 0 after draining).
    """

    def __init__(self, config: EndpointConfig, engine: EngineLike | None = None) -> None:
        self.config = config
        multi_user = config.multi_user
        # One engine per runtime (the host one, plus the config's `runtimes:`): warm pools; on a
        # multi-user endpoint, the relay to the user endpoints that run them as their accounts.
        if engine is None and multi_user is not None:
            from site_manager.user_processes import UserEndpoints

            engine = UserEndpoints(config)
        self.engine: EngineLike = engine or RuntimePool.from_config(config)
        # What one worker of each executor offers (a multi-user endpoint's depend on each user's config).
        self.offers = endpoint_offers(config) if multi_user is None else {}
        self.session = Session(
            endpoint_id=config.endpoint_id,
            secret=config.secret,
            software=software_versions(),
            heartbeat_period=config.heartbeat_period,
            heartbeat_threshold=config.heartbeat_threshold,
            backoff=Backoff(config.reconnect_delay, config.reconnect_max_delay),
            max_retries=config.max_retries,
            capacity=config.task_capacity,
            # Unacked results survive a kill -9 of this process (replayed after a restart).
            ledger=ResultLedger(LedgerStore(config.run_path / "unacked_results.sqlite")),
            allowed_serializers=None if config.allowed_serializers is None else list(config.allowed_serializers),
            watch_folders=list(config.triggers.allowed_folders),
            # A multi-user endpoint's MPI mode is each user endpoint's: not known here (-1).
            mpi_nodes=config.mpi.nodes_per_block if config.mpi is not None else (0 if multi_user is None else -1),
            offers={n: o.to_dict() for n, o in self.offers.items()} if multi_user is None else None,
            user_config_schema=multi_user.schema_text() if multi_user is not None else "",
            forwarder=config.forwarder,
            running_after=RUNNING_REPORT_DELAY,
        )
        self.inbox = ResultInbox()
        # File triggers: settled files from the watcher's threads (started on the first watch list).
        self.file_inbox: Inbox[Any] = Inbox()
        self.files: Any = None
        self.control_dir = control_dir(config.endpoint_id)
        self._context = zmq.Context()
        self._socket: zmq.Socket[bytes] | None = None
        self._reconnect_at: float | None = 0.0  # connect at once
        self._stop_requested = threading.Event()
        self._drain: Drain | None = None  # a stop under way
        self._walltime_check_at: float | None = None  # set while tasks with a walltime run
        self._poller = zmq.Poller()
        self._poller.register(self.inbox.fileno(), zmq.POLLIN)
        self._poller.register(self.file_inbox.fileno(), zmq.POLLIN)
        # Side channel for fnserve.report() from workers (HTEX carries only tasks and results).
        self.outputs = OutputRelay(self._context, *advertised_host(config.provider.type, config.engine.options))
        self._poller.register(self.outputs.socket, zmq.POLLIN)
        self._poller.register(self.outputs.zap, zmq.POLLIN)
        self.exit_reason = ""
        self.metrics: SiteMetrics | NoMetrics = NoMetrics()  # served once run() starts
        # Tasks handed to the engine, and the block each started in: re-run at once if it dies.
        self.engine_tasks = EngineTasks()

    # -- public ------------------------------------------------------------------------------

    def run(self) -> int:
        """Start the engine and serve until stopped; returns the process exit status."""
        stop_on_signals(self.stop)
        bind = self.config.metrics or os.environ.get("FNSERVE_SITE_METRICS", "")
        try:
            self.metrics = site_metrics(bind, lambda: len(self.session.running), logger)
        except OSError as exc:
            self.exit_reason = f"cannot serve metrics on {bind}: {exc.strerror or exc} (the endpoint config's metrics: HOST:PORT)"
            logger.error("%s", self.exit_reason)
            return 1
        # Children started from here (interchange, local worker pools) end when this process
        # does (node_manager.parent_watch); a restarted engine needs to know which tasks started.
        os.environ[parent_watch.ENV] = parent_watch.identity()
        self.engine.started_probe = self._started
        self.engine.start()
        try:
            return self._loop()
        finally:
            self._close_socket()
            if self.files is not None:
                self.files.stop()
            self.engine.shutdown()
            self.inbox.close()
            self.file_inbox.close()
            self.outputs.close()
            self._context.term()

    def stop(self) -> None:
        """Ask the loop to drain and exit (any thread, signal handlers included)."""
        self._stop_requested.set()
        self.inbox.wake()

    # -- loop --------------------------------------------------------------------------------

    def _loop(self) -> int:
        while True:
            now = time.monotonic()
            if self._reconnect_at is not None and now >= self._reconnect_at:
                self._connect()
            actions = self._wait_and_collect(self._poll_timeout(now))
            actions += self.session.tick(
                time.monotonic(), time.time(), self._engine_status
            )
            actions += self._enforce_walltimes(time.monotonic())
            if self._stop_requested.is_set() and self._drain is None:
                self._drain = Drain(self.session, self.engine, self.config.drain_timeout, time.monotonic())
            code = self._perform(actions)
            if code is not None:
                return code
            if self._drain is not None and self._drain.finished(time.monotonic()):
                return self._leave(self._drain)

    def _enforce_walltimes(self, now: float) -> list[Action]:
        """Kill the workers of tasks past walltime + grace (checked every WALLTIME_CHECK s,
        and only while tasks with a walltime run)."""
        if self._walltime_check_at is None or now < self._walltime_check_at:
            if self._walltime_check_at is None and self.session.walltimes():
                self._walltime_check_at = now + WALLTIME_CHECK
            return []
        walltimes = self.session.walltimes()
        self._walltime_check_at = now + WALLTIME_CHECK if walltimes else None
        if not walltimes:
            return []
        started = {t: at for t, (_, at) in tasks_started(self.control_dir, set(walltimes)).items()}
        late = overdue(started, walltimes, time.time(), self.config.walltime_grace)
        if late:
            logger.warning("task(s) %s ran past walltime + %g s grace: killing their workers", ", ".join(late),
                           self.config.walltime_grace)
        return self.session.walltime_passed(late, self.config.walltime_grace)

    def _poll_timeout(self, now: float) -> float:
        deadlines = [
            d
            for d in (
                self.session.next_deadline(),
                self._reconnect_at,
                self._walltime_check_at,
                # Stopping: the drain's deadline, or asking the workers again whether they run anything.
                None if self._drain is None else self._drain.wake_at(),
            )
            if d is not None
        ]
        return max(0.0, min(deadlines) - now) if deadlines else 1.0

    def _wait_and_collect(self, timeout: float) -> list[Action]:
        # Round up: waking a fraction of a millisecond early would spin until the deadline.
        ready = dict(self._poller.poll(math.ceil(timeout * 1000)))
        actions: list[Action] = []
        if self._socket is not None and self._socket in ready:
            actions += self._receive_all()
        if self.outputs.zap in ready:
            self.outputs.answer_zap()  # a worker connecting to the live-output socket
        if self.outputs.socket in ready or self.inbox.fileno() in ready:
            # Before results: a task's last outputs reach the forwarder ahead of its result.
            outputs = self.outputs.drain()
            named = self.engine_tasks.note_blocks(outputs)
            if named:
                self.engine.saw_blocks(named)
            actions += self.session.outputs_ready(outputs, time.monotonic())
        if self.inbox.fileno() in ready:
            results = self.inbox.drain()
            if results:
                self.metrics.results(results)
                actions += self.session.results_ready(results, time.time())
        if self.file_inbox.fileno() in ready:
            settled = self.file_inbox.drain()
            if settled:
                actions += self.session.files_ready(settled)
        return actions

    def _receive_all(self) -> list[Action]:
        assert self._socket is not None
        actions: list[Action] = []
        while True:  # everything already queued, so one wake-up serves a burst
            try:
                frame = self._socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                return actions
            try:
                msg = decode_from_forwarder(frame)
            except FnserveError as exc:
                logger.warning("dropping a message from the forwarder: %s", exc)
                continue
            logger.debug("received %s", type(msg).__name__)
            actions += self.session.received(msg, time.monotonic(), time.time())

    def _perform(self, actions: list[Action]) -> int | None:
        for action in actions:
            if isinstance(action, Send):
                self._send(action.message)
            elif isinstance(action, Submit):
                self._submit(action.task)
            elif isinstance(action, Kill):
                cancel = getattr(self.engine, "cancel", None)  # a multi-user endpoint's: each user endpoint stops its own
                if cancel is not None:
                    cancel(action.task_ids)
                else:
                    kill_tasks(self.control_dir, action.task_ids)
            elif isinstance(action, Watch):
                self._watch(list(action.watches))
            elif isinstance(action, Reconnect):
                logger.warning(
                    "reconnecting in %.1f s: %s", action.delay, action.reason
                )
                self._close_socket()
                self._reconnect_at = time.monotonic() + action.delay
            elif isinstance(action, Exit):
                logger.error("%s", action.reason)
                self.exit_reason = action.reason
                return action.code
        return None

    def _watch(self, watches: list[Any]) -> None:
        if self.files is None:
            if not watches:
                return
            from site_manager.file_watch import FileWatcher  # watchdog: only when file triggers exist

            self.files = FileWatcher(list(self.config.triggers.allowed_folders), self.file_inbox)
        self.files.update(watches)

    def _started(self, task_ids: set[str]) -> set[str]:
        """Tasks a worker started: its note in the control dir (this node), or its start marker."""
        return set(tasks_started(self.control_dir, task_ids)) | (task_ids & self.session.started)

    def _engine_status(self) -> EngineStatus:
        # Heartbeat pace: also the moment to replace lost blocks (no DataFlowKernel does it).
        status = self.engine.status()
        self.engine_tasks.fail_those_of_ended_blocks(self.engine)
        if self.engine.scale():
            status = self.engine.status()
        return status

    # -- I/O helpers ---------------------------------------------------------------------------

    def _connect(self) -> None:
        self._reconnect_at = None
        sock = self._context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        if self.config.forwarder_public_key:  # CurveZMQ: encrypted; the forwarder checks our key
            sock.curve_serverkey = self.config.forwarder_public_key.encode()
            sock.curve_publickey = self.config.curve_public_key.encode()
            sock.curve_secretkey = self.config.curve_secret_key.encode()
        address = self.session.forwarder or self.config.forwarder  # sent on by a forwarder, or configured
        sock.connect(address)
        self._socket = sock
        self._poller.register(sock, zmq.POLLIN)
        logger.info(
            "connecting to forwarder %s as endpoint %s",
            address,
            self.config.endpoint_id,
        )
        self._perform(self.session.connected(time.monotonic()))

    def _close_socket(self, linger_ms: int = 0) -> None:
        if self._socket is not None:
            self._poller.unregister(self._socket)
            self._socket.close(linger=linger_ms)
            self._socket = None

    def _send(self, message: Any) -> None:
        if self._socket is None:
            return  # disconnected: results stay in the ledger and are resent after Registered
        try:
            self._socket.send(encode(message), zmq.NOBLOCK)
        except zmq.Again:
            # The forwarder is not reading (queue full): treat it as a lost connection.
            logger.warning(
                "forwarder is not accepting messages; dropping the connection"
            )
            self._perform(
                self.session.connection_lost("send queue to the forwarder is full")
            )

    def _submit(self, task: TaskMessage) -> None:
        task.timings["site_received"] = time.time()
        self.metrics.received()
        task_id = task.task_id
        try:
            task.outputs_address = self.outputs.address
            task.outputs_keys = self.outputs.keys
            task.control_dir = str(self.control_dir)
            task.max_result_bytes = self.config.max_result_bytes
            task.walltime_grace = self.config.walltime_grace
            future = submit_task(self.engine, task, self.config, self.offers)
        except Exception as exc:  # noqa: BLE001 - engine in a bad state: fail the task clearly
            logger.error("engine refused task %s: %s", task_id, exc)
            self.inbox.put(failure_result(task_id, exc, task.timings))
            return
        self.engine_tasks.add(task_id, future)

        def done(fut: Future[bytes]) -> None:
            self.engine_tasks.forget(task_id, fut)
            self.inbox.put(result_of(task_id, fut, task.timings))

        future.add_done_callback(done)

    # -- shutdown ----------------------------------------------------------------------------

    def _leave(self, drain: Drain) -> int:
        drain.log_leaving()
        self._send(Disconnect(reason="endpoint shutting down"))
        self._close_socket(linger_ms=1000)  # give the goodbye a moment to leave
        logger.info("site manager stopped")
        return 0
