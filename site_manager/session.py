"""The site manager's side of the forwarder protocol as a pure state machine.

:class:`Session` is fed events (connected, a message arrived, results are ready, time passed)
and answers with :data:`Action` instructions for the I/O loop to carry out. It owns no socket
and reads no clock, so every decision (when to heartbeat, when to reconnect, what to resend) is
tested by feeding events.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Callable

import msgspec

from fnserve.messages import (
    Ack,
    CancelTasks,
    Disconnect,
    FileEvent,
    FileEventBatch,
    FileEventsAck,
    Heartbeat,
    Refused,
    Register,
    Registered,
    ResultBatch,
    ResultMessage,
    TaskBatch,
    TaskMessage,
    TaskOutput,
    TaskOutputBatch,
    TaskStatusBatch,
    WatchFolders,
)
from fnserve.forwarders import next_forwarder
from site_manager.actions import Action, Exit, Kill, Reconnect, Send, Submit, Watch
from site_manager.result_ledger import ResultLedger
from site_manager.retries import final_result, should_retry
from site_manager.start_reports import StartReports
from site_manager.status import EngineStatus, endpoint_status
from site_manager.walltime import DEFAULT_GRACE, lost_past_walltime, walltime_result

# Results per ResultBatch when resending a backlog, to keep frames of a sane size.
RESEND_CHUNK = 256
EXIT_REFUSED = 2


# File events per FileEventBatch: a burst of files goes as a few large messages.
FILE_EVENT_CHUNK = 500


class Backoff:
    """Exponential delays, doubling from ``initial`` up to ``cap``; :meth:`reset` on success."""

    def __init__(self, initial: float = 0.5, cap: float = 30.0) -> None:
        self.initial = initial
        self.cap = cap
        self._next = initial

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self.cap)
        return delay

    def reset(self) -> None:
        self._next = self.initial


class State(enum.Enum):
    DISCONNECTED = "disconnected"
    REGISTERING = "registering"
    READY = "ready"
    CLOSED = "closed"


def _lost(result: ResultMessage) -> bool:
    return not result.ok and result.error is not None and result.error.code == "worker_lost"


def _grace(task: TaskMessage) -> float:
    return task.walltime_grace if task.walltime_grace is not None else DEFAULT_GRACE


def _batches(results: list[ResultMessage]) -> list[Action]:
    return [
        Send(ResultBatch(results=results[i : i + RESEND_CHUNK]))
        for i in range(0, len(results), RESEND_CHUNK)
    ]


def _status(started: list[tuple[str, float]]) -> Action:
    """Report these tasks running (``(task id, worker start time)``), from the earliest start."""
    return Send(TaskStatusBatch(running=[t for t, _ in started], started_at=min(at for _, at in started)))


def _file_batches(events: list[FileEvent]) -> list[Action]:
    return [Send(FileEventBatch(events=events[i : i + FILE_EVENT_CHUNK])) for i in range(0, len(events), FILE_EVENT_CHUNK)]


class Session:
    """Protocol state of one site manager across any number of connections.

    Times are plain floats from the caller's clock (the loop uses ``time.monotonic`` for
    deadlines, and stamps wire messages with wall-clock time itself).
    """

    def __init__(
        self,
        endpoint_id: str,
        secret: str,
        software: dict[str, str],
        heartbeat_period: float,
        heartbeat_threshold: float,
        backoff: Backoff | None = None,
        max_retries: int = 2,
        capacity: int = 0,
        ledger: ResultLedger | None = None,
        allowed_serializers: list[str] | None = None,
        watch_folders: list[str] | None = None,
        mpi_nodes: int = -1,
        forwarder: str = "",
        offers: dict[str, dict[str, float]] | None = None,
        user_config_schema: str = "",
        running_after: float = 0.0,
    ) -> None:
        self._register = Register(
            endpoint_id=endpoint_id, secret=secret, software=software, capacity=capacity,
            allowed_serializers=allowed_serializers, watch_folders=list(watch_folders or []), mpi_nodes=mpi_nodes,
            offers=offers, user_config_schema=user_config_schema,
        )
        # File events sent (or to send) and not yet acked, by key: resent after a reconnect.
        # Not kept on disk: after a restart the folder scan finds the same files again, and
        # their keys make them the same events at the service.
        self.file_events: OrderedDict[str, FileEvent] = OrderedDict()
        self.heartbeat_period = heartbeat_period
        self.heartbeat_threshold = heartbeat_threshold
        self.backoff = backoff or Backoff()
        self.state = State.DISCONNECTED
        self.ledger = ledger if ledger is not None else ResultLedger()
        self.running: set[str] = set()
        self.max_retries = max_retries
        # Running tasks' messages and runs so far: what a retry after a lost worker resubmits.
        self._tasks: dict[str, TaskMessage] = {}
        self._attempts: dict[str, int] = {}
        # When each running task's worker started it (its start marker's time, worker clock).
        self._started: dict[str, float] = {}
        # Cancelled while running, or already reported as past their walltime: their results
        # (the killed worker's 'lost' report) are dropped when they arrive.
        self.cancelled: set[str] = set()
        # Tasks a worker announced it started (its start marker came): what a stop waits for, and
        # what an engine that dies must report lost (it reruns the others free).
        self.started: set[str] = set()
        # Start markers held a moment before "running" is reported (site_manager.start_reports).
        self.start_reports = StartReports(running_after)
        self.draining = False
        # The forwarder connected to, and every live one it named (several forwarders:
        # web_service/forwarder_pool.py): where to go when this one goes silent.
        self.forwarder = forwarder
        self.forwarders: list[str] = [forwarder] if forwarder else []
        self._redirected = False  # sent on since the last registration (the next one waits)
        self._last_heard = 0.0
        self._next_heartbeat = 0.0

    # -- events ----------------------------------------------------------------------------

    def connected(self, now: float) -> list[Action]:
        """A new connection is open: introduce ourselves."""
        self.state = State.REGISTERING
        self._last_heard = now  # the registration gets a full threshold to be answered
        # Tasks still running here or with results not yet acked: not to be dispatched again.
        holding = sorted(self.running | set(self.ledger.task_ids()))
        return [Send(msgspec.structs.replace(self._register, holding=holding))]

    def received(
        self, msg: msgspec.Struct, now: float, wall_time: float
    ) -> list[Action]:
        """A message from the forwarder arrived."""
        if self.state is State.DISCONNECTED:
            # Queued behind a message that ended the connection (for example one 'register
            # again' per message we sent while the forwarder was away): that connection is over.
            return []
        self._last_heard = now
        if isinstance(msg, Registered):
            return self._on_registered(msg, now)
        if isinstance(msg, Refused):
            self.state = State.CLOSED
            return [
                Exit(
                    EXIT_REFUSED,
                    f"the forwarder refused this endpoint: [{msg.code}] {msg.reason}",
                )
            ]
        if isinstance(msg, TaskBatch):
            return self._on_tasks(msg.tasks, wall_time)
        if isinstance(msg, Ack):
            self.ledger.ack(msg.task_ids)
            return []
        if isinstance(msg, CancelTasks):
            return self._on_cancel(msg.task_ids)
        if isinstance(msg, WatchFolders):
            return [Watch(tuple(msg.watches))]
        if isinstance(msg, FileEventsAck):
            for key in msg.keys:
                self.file_events.pop(key, None)
            return []
        if isinstance(msg, Disconnect):
            if msg.connect_to:
                # Another forwarder serves this endpoint: go there now (at most the backoff's
                # first delay; forwarders that disagree for a moment do not spin us).
                self.state = State.DISCONNECTED
                self.forwarder = msg.connect_to
                delay = self.backoff.next() if self._redirected else 0.0
                self._redirected = True
                return [Reconnect(f"sent to forwarder {msg.connect_to}: {msg.reason or 'reassigned'}", delay, msg.connect_to)]
            return self.connection_lost(
                f"the forwarder asked us to disconnect: {msg.reason or 'no reason given'}"
            )
        return []  # Heartbeat: being heard is all it is for

    def results_ready(self, results: list[ResultMessage], wall_time: float | None = None) -> list[Action]:
        """Tasks finished: record them until acked, and send them if we are registered.

        ``wall_time`` (now, unix time): a task whose worker was lost after it ran past its
        walltime + grace failed ``walltime_exceeded`` (its watchdog killed it) and is not retried.
        """
        finished: list[ResultMessage] = []
        retries: list[Action] = []
        for result in results:
            if result.task_id in self.cancelled:
                # Cancelled while it ran: the service already ended it; nothing to retry or send.
                self.cancelled.discard(result.task_id)
                self._forget(result.task_id)
                continue
            task = self._tasks.get(result.task_id)
            if task is not None and wall_time is not None and _lost(result) and lost_past_walltime(
                    self._started.get(result.task_id), task.walltime, _grace(task), wall_time):
                result = walltime_result(result.task_id, task.walltime or 0.0, _grace(task), task.timings)
            if task is not None:
                attempts = self._attempts.get(result.task_id, 1)
                limit = self.max_retries if task.max_retries is None else task.max_retries
                if should_retry(result, attempts, limit) and not self.draining:
                    self._attempts[result.task_id] = attempts + 1
                    self.started.discard(result.task_id)  # queued again: not on a worker until it starts
                    retries.append(Submit(task))
                    continue  # still running, as far as anyone outside knows
                result = final_result(result, attempts, limit)
            self._forget(result.task_id)
            finished.append(result)
        fresh = self.ledger.add_many(finished)
        if self.state is not State.READY or not fresh:
            return retries  # kept in the ledger: resent once registered again
        # Not reported running (it ended within the moment its start marker is held, or before
        # that marker came): its record takes the start time from the result (record.lua).
        return retries + _batches(fresh)

    def files_ready(self, events: list[FileEvent]) -> list[Action]:
        """Watched files settled: keep them until acked, and send them if registered."""
        fresh = [e for e in events if e.key not in self.file_events]
        for e in fresh:
            self.file_events[e.key] = e
        if self.state is not State.READY or not fresh:
            return []
        return _file_batches(fresh)

    def outputs_ready(self, outputs: list[TaskOutput], now: float = 0.0) -> list[Action]:
        """Live outputs arrived from workers: relay them now if registered, else drop them.

        They are best effort (a client reads them while the task runs), so unlike results they
        are neither kept nor resent after a reconnect. A start marker is held for a moment
        (``now``: the loop's monotonic clock; site_manager.start_reports) before "running" is
        reported, unless the task sends outputs first.
        """
        starts = [o for o in outputs if o.kind == "start"]
        self.started.update(o.task_id for o in starts if o.task_id in self.running)
        for o in outputs:
            if o.kind == "start" and o.task_id in self.running:
                self._started[o.task_id] = o.time
        if self.state is not State.READY or not outputs:
            return []
        outputs = [o for o in outputs if o.kind != "start"] if starts else outputs
        markers = {o.task_id: o.time for o in reversed(starts) if o.task_id in self.running and o.task_id not in self.cancelled}
        report = self.start_reports.started([(t, markers[t]) for t in dict.fromkeys(o.task_id for o in starts) if t in markers], now)
        # An output of a task that runs must not reach the client before its state says so.
        report += self.start_reports.take({o.task_id for o in outputs})
        actions: list[Action] = [_status(report)] if report else []
        return actions + [
            Send(TaskOutputBatch(outputs=outputs[i : i + RESEND_CHUNK * 4]))
            for i in range(0, len(outputs), RESEND_CHUNK * 4)
        ]

    def tick(
        self, now: float, wall_time: float, status: Callable[[], EngineStatus]
    ) -> list[Action]:
        """Time passed: reconnect when the forwarder went silent, heartbeat when due."""
        if (
            self.state in (State.REGISTERING, State.READY)
            and now - self._last_heard > self.heartbeat_threshold
        ):
            # Silent: maybe dead. Try the next forwarder we know; it sends us on if need be.
            self.forwarder = next_forwarder(self.forwarders, self.forwarder)
            return self.connection_lost(
                f"nothing heard from the forwarder for {self.heartbeat_threshold:g} s"
            )
        actions: list[Action] = []
        if self.state is State.READY and len(self.start_reports):
            due = [(t, at) for t, at in self.start_reports.due(now) if t in self.running and t not in self.cancelled]
            actions += [_status(due)] if due else []
        if self.state is State.READY and now >= self._next_heartbeat:
            self._next_heartbeat = now + self.heartbeat_period
            return actions + [Send(Heartbeat(sent_at=wall_time)), Send(endpoint_status(status()))]
        return actions

    def walltimes(self) -> dict[str, float]:
        """Walltimes of the tasks running here that have one (for the outside watchdog)."""
        return {t: task.walltime for t, task in self._tasks.items()
                if task.walltime and t in self.running and t not in self.cancelled}

    def walltime_passed(self, task_ids: list[str], grace: float) -> list[Action]:
        """These tasks ran past walltime + grace: kill their workers and report them failed now
        (``walltime_exceeded``, never retried); the worker's 'lost' report is dropped later."""
        results = []
        for t in task_ids:
            task = self._tasks.get(t)
            if task is None or t not in self.running or t in self.cancelled:
                continue
            results.append(walltime_result(t, task.walltime or 0.0, grace, task.timings))
        if not results:
            return []
        killed = tuple(r.task_id for r in results)
        self.cancelled.update(killed)
        for t in killed:
            self.running.discard(t)  # ended here; _forget runs when the lost report comes
        fresh = self.ledger.add_many(results)
        actions: list[Action] = [Kill(killed)]
        return actions + (_batches(fresh) if self.state is State.READY else [])

    def start_drain(self) -> None:
        """Stop taking new tasks (shutdown): tasks that arrive now are left to the forwarder."""
        self.draining = True

    # -- queries -----------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When :meth:`tick` next has something to decide, or ``None`` while disconnected."""
        if self.state is State.READY:
            held = self.start_reports.next_due()
            return min(
                self._next_heartbeat, self._last_heard + self.heartbeat_threshold, *(() if held is None else (held,))
            )
        if self.state is State.REGISTERING:
            return self._last_heard + self.heartbeat_threshold
        return None

    @property
    def drained(self) -> bool:
        """Nothing running and every result acked."""
        return not self.running and not len(self.ledger)

    @property
    def started_done(self) -> bool:
        """Stopping: every task a worker started has finished and every result is acked. Tasks sent
        here that no worker started are handed back: the forwarder re-dispatches them after we leave."""
        return not (self.running & self.started) and not len(self.ledger)

    def handed_back(self) -> list[str]:
        """Tasks held here that no worker started (what a stop gives back to the service)."""
        return sorted(self.running - self.started)

    # -- helpers -----------------------------------------------------------------------------

    def _on_registered(self, msg: Registered, now: float) -> list[Action]:
        self.state = State.READY
        # The forwarder decides the heartbeat cadence once it knows us.
        self.heartbeat_period = msg.heartbeat_period
        self.heartbeat_threshold = msg.heartbeat_threshold
        if msg.forwarders:
            self.forwarders = list(msg.forwarders)
        self._redirected = False
        self._next_heartbeat = now
        self.backoff.reset()
        # First result wins at the forwarder, and an event key is recorded once: resend all.
        return _batches(self.ledger.pending()) + _file_batches(list(self.file_events.values()))

    def _on_tasks(self, tasks: list[TaskMessage], wall_time: float) -> list[Action]:
        if self.draining:
            return []  # not started here, so the forwarder re-dispatches them after we leave
        actions: list[Action] = []
        done: list[ResultMessage] = []
        for task in tasks:
            if task.task_id in self.running:
                continue  # a re-dispatch of a task we are still running
            previous = self.ledger.get(task.task_id)
            if previous is not None:
                done.append(
                    previous
                )  # a re-dispatch of a finished task: answer, don't rerun
                continue
            self.running.add(task.task_id)
            self._tasks[task.task_id] = task
            self._attempts[task.task_id] = 1
            actions.append(Submit(task))
        # "running" is reported when a worker starts a task (its start marker, in outputs_ready),
        # not here: a task queued behind busy workers can still be cancelled as not started.
        return actions + _batches(done)

    def _on_cancel(self, task_ids: list[str]) -> list[Action]:
        """The owner cancelled tasks we were sent: stop the ones still running here.

        Their results (the killed worker's 'lost' report, or a result that raced the cancel)
        are dropped when they come; a task that already finished is left alone.
        """
        running = tuple(t for t in task_ids if t in self.running and t not in self.cancelled)
        self.cancelled.update(running)
        return [Kill(running)] if running else []

    def _forget(self, task_id: str) -> None:
        self.running.discard(task_id)
        self.started.discard(task_id)
        self._tasks.pop(task_id, None)
        self._attempts.pop(task_id, None)
        self._started.pop(task_id, None)
        self.start_reports.drop(task_id)

    def connection_lost(self, reason: str) -> list[Action]:
        """The connection is unusable: reconnect after the next backoff delay."""
        self.state = State.DISCONNECTED
        return [Reconnect(reason, self.backoff.next(), self.forwarder)]
