"""The Python SDK: register functions, run them on endpoints, get results.

Example::

    from fnserve import Client

    def add(a, b):
        return a + b

    fc = Client()                          # service URL and token from ~/.fnserve/client.yaml
    fid = fc.register_function(add)
    tid = fc.run(fid, endpoint_id, 1, 2)
    fc.get_result(tid, timeout=30)         # -> 3

Results are delivered by long-poll: ``get_result`` blocks in the service until the result is
recorded (no client-side sleeping or polling). A function that raised is re-raised here as its
own type when that class is imported here, else as :class:`~fnserve.errors.RemoteExecutionError`,
with the remote traceback attached (:mod:`fnserve.remote_errors`).
"""

from __future__ import annotations

import os
import time
import warnings
from typing import Any, Callable, Iterable, Iterator

from fnserve import globus_tokens, oob_frames, serialize
from fnserve.config import ClientConfig
from fnserve.errors import FnserveError, NotFound, ServiceUnavailable, TaskPending, Unauthorized, error_from_dict
from fnserve.argument_uploads import InFlightUploads
from fnserve.client_access import AccessMethods
from fnserve.client_triggers import TriggerMethods
from fnserve.data_refs import DEFAULT_REF_THRESHOLD, ObjectRef, by_reference
from fnserve.object_transfer import ObjectStoreClient
from fnserve.oob_frames import Part
from fnserve.output_files import is_file_output
from fnserve.task_results import status_entry, result_of
from fnserve.task_specs import Batch, b64, task_spec
from fnserve.transport import Transport, unavailable_retry

# The service caps one long-poll (FNSERVE_MAX_WAIT); longer waits chain several.
_LONG_POLL = 30.0
# A service too old to announce its limits has these defaults.
_DEFAULT_LIMITS = {"max_payload_bytes": 10 * 1024 * 1024, "max_request_bytes": 64 * 1024 * 1024, "max_batch": 10_000}


class Client(AccessMethods, TriggerMethods):
    """A connection to an fnserve service, acting as one user."""

    def __init__(self, service_url: str | None = None, token: str | None = None, *, timeout: float = 60.0,
                 config: ClientConfig | None = None, allowed_result_serializers: Iterable[str] | None = None,
                 ref_threshold: int | None = DEFAULT_REF_THRESHOLD, object_ttl: float | None = None,
                 proxy_store: Any = None, proxy_threshold: int = DEFAULT_REF_THRESHOLD):
        """``token`` overrides the configured one. With a Globus login (``fnserve login``) or
        ``FNSERVE_CLIENT_ID``/``FNSERVE_CLIENT_SECRET`` set, tokens come from globus-sdk and are
        renewed when they expire.

        ``allowed_result_serializers``: the strategies this client loads results from, e.g.
        ``["json-data"]`` when the endpoint's owner is not someone you trust with your process:
        a dill result is code the endpoint chose. Others are refused (``serializer_not_allowed``)
        without being loaded, and tasks ask for JSON results.

        ``ref_threshold``: arguments whose serialized size passes it (bytes; default 4 MiB) are
        uploaded to the service's object store and the task carries a reference (None: never;
        they are then limited to the inline ``max_payload_bytes``). ``object_ttl``: seconds
        such uploads live (default: the service's). Results are resolved the same way.

        ``proxy_store``: a ProxyStore ``Store``; each argument whose serialized size passes
        ``proxy_threshold`` (bytes, default 4 MiB) goes as a proxy from it, resolved lazily on
        the worker, and a result that large comes back through it (``fnserve.proxies``)."""
        self.allowed_result_serializers = serialize.parse_policy(
            None if allowed_result_serializers is None else list(allowed_result_serializers), "allowed_result_serializers")
        cfg = config or ClientConfig.load()
        self.service_url = service_url or cfg.service_url
        refresh = None
        if not token and (cfg.auth == "globus" or (not cfg.token and globus_tokens.headless())):
            refresh = globus_tokens.token_source(cfg, self.service_url)
        self.transport = Transport(self.service_url, token or (None if refresh else cfg.token), timeout=timeout,
                                   refresh_token=refresh)
        self._limits: dict[str, int] | None = None
        self.ref_threshold = ref_threshold
        self.object_ttl = object_ttl
        self._objects: ObjectStoreClient | None = None
        self._uploads = InFlightUploads(lambda: self.objects)
        self.proxy_store = proxy_store
        self.proxy_threshold = proxy_threshold

    # -- service --------------------------------------------------------------------------------

    def version(self) -> dict[str, Any]:
        return self.transport.get("/v1/version")  # type: ignore[no-any-return]

    def limits(self) -> dict[str, int]:
        """The service's size limits (read once): ``max_payload_bytes`` (one task's arguments),
        ``max_request_bytes`` (one request), ``max_batch`` (tasks per request)."""
        if self._limits is None:
            found = self.version().get("limits") or {}
            self._limits = {**_DEFAULT_LIMITS, **{k: int(v) for k, v in found.items() if k in _DEFAULT_LIMITS}}
        return self._limits

    def token(self) -> str:
        """The bearer token this client sends (renewed first if it is a Globus token that expired)."""
        if not self.transport.token and self.transport.refresh_token is not None:
            self.transport.token = self.transport.refresh_token()
        if not self.transport.token:
            raise Unauthorized("no token is configured for this client", code="missing_token")
        return self.transport.token

    # -- functions ------------------------------------------------------------------------------

    def register_function(self, function: Callable[..., Any], name: str | None = None, description: str = "", *,
                          serializer: str | None = None, runtime: str | None = None, function_name: str | None = None) -> str:
        """Register ``function`` and return its id. ``serializer``: ``"dill-code"`` (dill only),
        ``"source"`` (source text only) or ``"auto"`` (the default: dill, else source text with a
        warning, see :func:`fnserve.serialize.serialize_function`). ``runtime``: id or name of the
        runtime its tasks run in unless a task names another. ``function_name`` is Globus
        Compute's spelling of ``name``."""
        buf = serialize.serialize_function(function, serializer)
        return self._register(buf, name or function_name or function.__name__, description, runtime)

    def register_source(self, source: str, entry_point: str, name: str | None = None, description: str = "", *,
                        runtime: str | None = None) -> str:
        """Register the function ``entry_point`` defined in ``source`` (e.g. a whole .py file)."""
        return self._register(serialize.serialize_source(source, entry_point), name or entry_point, description, runtime)

    def register_shell(self, command: str, name: str | None = None, description: str = "", *, sandbox: bool = False,
                       walltime: float | None = None, max_output_bytes: int | None = None, runtime: str | None = None) -> str:
        """Register a command line with ``{placeholders}`` as a shell function (see
        :class:`fnserve.ShellFunction`); its tasks pass one keyword argument per placeholder::

            fid = client.register_shell("wc -l {path}", walltime=30)
            client.get_result(client.run(fid, endpoint_id, path="/etc/passwd"))["stdout"]
        """
        from fnserve.shell import DEFAULT_MAX_OUTPUT_BYTES, ShellFunction

        fn = ShellFunction(command, sandbox=sandbox, walltime=walltime, name=name,
                           max_output_bytes=DEFAULT_MAX_OUTPUT_BYTES if max_output_bytes is None else max_output_bytes)
        return self.register_function(fn, description=description, runtime=runtime)

    def _register(self, buf: bytes, name: str, description: str, runtime: str | None = None) -> str:
        body = {"name": name, "function": b64(buf), **({"description": description} if description else {}),
                **({"runtime": runtime} if runtime else {})}
        return str(self.transport.post("/v1/functions", body)["function_id"])

    # -- runtimes -------------------------------------------------------------------------------

    def register_runtime(self, name: str, type: str, image: str = "", description: str = "") -> str:
        """Register a runtime and return its id.

        ``type``: host, venv, apptainer, singularity, podman, docker or charliecloud; ``image``:
        the image location, or for ``venv`` the interpreter's path. Endpoints run it when their
        admin configured a runtime of the same ``name`` (see docs/runtimes.md)::

            rid = client.register_runtime("sci-py311", "podman", image="localhost/fnserve-worker:latest")
            fid = client.register_function(simulate, runtime=rid)
        """
        body = {"name": name, "type": type, **({"image": image} if image else {}),
                **({"description": description} if description else {})}
        return str(self.transport.post("/v1/runtimes", body)["runtime_id"])

    def get_runtime(self, runtime: str) -> dict[str, Any]:
        """A runtime by id or name."""
        return self.transport.get(f"/v1/runtimes/{runtime}")  # type: ignore[no-any-return]

    def list_runtimes(self, shared: bool = False) -> list[dict[str, Any]]:
        """Your runtimes; with ``shared``, also those others shared with you."""
        return list(self.transport.get("/v1/runtimes", **({"shared": "true"} if shared else {}))["runtimes"])

    def delete_runtime(self, runtime: str) -> None:
        self.transport.delete(f"/v1/runtimes/{runtime}")

    def share_runtime(self, runtime_id: str, **who: Any) -> dict[str, Any]:
        return self.share("runtime", runtime_id, **who)

    def get_function(self, function_id: str) -> dict[str, Any]:
        return self.transport.get(f"/v1/functions/{function_id}")  # type: ignore[no-any-return]

    def list_functions(self, shared: bool = False) -> list[dict[str, Any]]:
        """Your functions; with ``shared``, also those others shared with you."""
        return list(self.transport.get("/v1/functions", **({"shared": "true"} if shared else {}))["functions"])

    def delete_function(self, function_id: str) -> None:
        self.transport.delete(f"/v1/functions/{function_id}")

    # -- endpoints ------------------------------------------------------------------------------

    def register_endpoint(self, name: str, description: str = "") -> dict[str, Any]:
        """Register an endpoint; the answer holds its ``endpoint_id`` and its ``secret`` (shown once)."""
        body = {"name": name, **({"description": description} if description else {})}
        return self.transport.post("/v1/endpoints", body)  # type: ignore[no-any-return]

    def list_endpoints(self, shared: bool = False) -> list[dict[str, Any]]:
        """Your endpoints; with ``shared``, also those others shared with you."""
        return list(self.transport.get("/v1/endpoints", **({"shared": "true"} if shared else {}))["endpoints"])

    def get_endpoint(self, endpoint_id: str) -> dict[str, Any]:
        return self.transport.get(f"/v1/endpoints/{endpoint_id}")  # type: ignore[no-any-return]

    def get_endpoint_status(self, endpoint_id: str) -> dict[str, Any]:
        """Connected or not, tasks waiting and in flight, and what the site manager reports."""
        return self.transport.get(f"/v1/endpoints/{endpoint_id}/status")  # type: ignore[no-any-return]

    def delete_endpoint(self, endpoint_id: str) -> None:
        self.transport.delete(f"/v1/endpoints/{endpoint_id}")

    # -- identity and accounting ----------------------------------------------------------------

    def whoami(self) -> dict[str, Any]:
        """``{"user_id", "username", "auth_mode"}`` of the caller."""
        return self.transport.get("/v1/whoami")  # type: ignore[no-any-return]

    def usage(self, since: str | float | None = None, until: str | float | None = None) -> dict[str, Any]:
        """Your totals over a period (ISO 8601 times or unix seconds; default the last 30 days),
        and per-endpoint totals for the endpoints you own."""
        params = {k: v for k, v in (("since", since), ("until", until)) if v is not None}
        return self.transport.get("/v1/usage", **params)  # type: ignore[no-any-return]

    # -- tasks ----------------------------------------------------------------------------------

    def run(self, function_id: str, endpoint_id: str, *args: Any, **kwargs: Any) -> str:
        """Run a registered function on an endpoint; returns the task id at once."""
        return self.submit(function_id, endpoint_id, args, kwargs)

    def submit(self, function_id: str, endpoint_id: str, args: Iterable[Any] = (), kwargs: dict[str, Any] | None = None, *,
               runtime: str | None = None, walltime: float | None = None, serializer: str | None = None,
               max_retries: int | None = None, task_group_id: str | None = None,
               resource_specification: dict[str, Any] | None = None,
               user_endpoint_config: dict[str, Any] | None = None) -> str:
        """Like :meth:`run`, with options: ``runtime``, ``walltime`` (s), ``serializer``,
        ``max_retries`` (reruns after a lost worker; default: the endpoint's setting),
        ``task_group_id``, ``resource_specification`` (a JSON object for the endpoint: a
        worker's ``cores``, ``memory`` in MB, ``gpus``, ``walltime``; MPI ranks) and
        ``user_endpoint_config`` (a multi-user endpoint's template values, e.g. ``{"partition": "debug"}``)."""
        spec = task_spec(function_id, endpoint_id, tuple(args), kwargs, runtime, walltime, serializer,
                          self._json_results, self._by_reference_in_flight, self._prepare_call, max_retries=max_retries,
                          task_group_id=task_group_id, resource_specification=resource_specification,
                          user_endpoint_config=user_endpoint_config)
        return str(self._post_then_finish_uploads({"tasks": [spec]})["task_ids"][0])

    def create_batch(self, task_group_id: str | None = None, resource_specification: dict[str, Any] | None = None) -> Batch:
        return Batch(task_group_id=None if task_group_id is None else str(task_group_id),
                     resource_specification=resource_specification, json_results=self._json_results,
                     reference=self._by_reference, prepare=self._prepare_call)

    def batch_run(self, batch: Batch, *, atomic: bool = True) -> list[Any]:
        """Submit a whole batch in one request; returns task ids in the order added.

        ``atomic`` (the default): all or nothing, a bad task raises its error (its
        ``details["errors"]`` names every bad task). ``atomic=False``: the good tasks run; the
        list holds, in place of each refused task's id, the :class:`FnserveError` that refused it."""
        if not batch.tasks:
            return []
        answer = self.transport.post("/v1/tasks", {"tasks": batch.tasks, "atomic": atomic})
        errors = {e["index"]: error_from_dict(e, int(e.get("status", 400))) for e in answer.get("errors") or []}
        return [tid if tid else errors.get(i, FnserveError("refused")) for i, tid in enumerate(answer["task_ids"])]

    def get_task_group(self, task_group_id: str, offset: int = 0, limit: int = 1000) -> dict[str, Any]:
        """A page of your tasks in a task group, oldest first: ``{"task_group_id", "tasks",
        "total", "next_offset"}`` (``next_offset`` is None on the last page)."""
        return self.transport.get(f"/v1/task_groups/{task_group_id}/tasks", offset=offset, limit=limit)  # type: ignore[no-any-return]

    def get_task(self, task_id: str) -> dict[str, Any]:
        """The task's state, timestamps, and its result or error once finished."""
        return self.transport.get(f"/v1/tasks/{task_id}")  # type: ignore[no-any-return]

    def cancel(self, task_id: str) -> dict[str, Any]:
        return self.transport.post(f"/v1/tasks/{task_id}/cancel", {})  # type: ignore[no-any-return]

    def wait(self, task_ids: list[str], timeout: float | None = None, return_when: str = "ALL_COMPLETED") -> list[dict[str, Any]]:
        """Block until the tasks finish (or the first one, with FIRST_COMPLETED) or ``timeout`` passes."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay: float | None = None
        failing_since = 0.0
        while True:
            left = _LONG_POLL if deadline is None else max(0.0, min(_LONG_POLL, deadline - time.monotonic()))
            try:
                tasks = self.transport.post(
                    "/v1/tasks/results", {"task_ids": list(task_ids), "wait": left, "return_when": return_when},
                    timeout=left + self.transport.timeout,
                )["tasks"]
            except ServiceUnavailable as exc:
                # Asking is harmless (a read): ride out a Redis failover or a web replica restart.
                now = time.monotonic()
                failing_since = failing_since if delay is not None else now
                delay = unavailable_retry(delay, now - failing_since, None if deadline is None else deadline - now,
                                          float(exc.details.get("retry_after", 0)))
                if delay is None or exc.code == "request_aborted":
                    raise
                time.sleep(delay)  # the service is down: not on the path of a result
                continue
            delay = None
            done = [t for t in tasks if t["state"] in ("success", "failed", "cancelled")]
            if len(done) == len(tasks) or (return_when == "FIRST_COMPLETED" and done) or left <= 0 or (
                deadline is not None and time.monotonic() >= deadline
            ):
                return list(tasks)

    def get_result(self, task_id: str, timeout: float | None = None, lazy: bool = False) -> Any:
        """Wait for a task and return its result; re-raise its remote exception.

        Raises :class:`TaskPending` if ``timeout`` seconds pass first.
        """
        task = self.wait([task_id], timeout)[0]
        return result_of(task, self.allowed_result_serializers, self.fetch_result, lazy)

    def watch_files(self, task_id: str, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """Yield the task's output files (``{"file", "object_id", "size", "sha256"}``) as the
        function closes them in ``fnserve.output_dir()``, until the task ends."""
        for out in self.watch_outputs(task_id, timeout):
            if is_file_output(out["values"]):
                yield out["values"]

    def list_files(self, task_id: str) -> list[dict[str, Any]]:
        """The output files the task has shipped so far (the latest entry per file name)."""
        files: dict[str, dict[str, Any]] = {}
        for out in self.get_outputs(task_id)["outputs"]:
            if not out.get("truncated") and is_file_output(out["values"]):
                files[out["values"]["file"]] = out["values"]
        return list(files.values())

    def download_file(self, entry: dict[str, Any], dest: str | os.PathLike[str] = ".") -> str:
        """Download an output file (an entry of :meth:`watch_files`) into folder ``dest`` under
        its own name (or to ``dest`` itself if it is not a folder); returns the path written."""
        name = str(entry["file"])
        target = os.path.join(dest, name) if os.path.isdir(dest) or str(dest).endswith(os.sep) else os.fspath(dest)
        if os.path.isabs(name) or ".." in name.split("/"):
            raise FnserveError(f"output file name {name!r} is not a plain relative path", code="invalid_file_name")
        os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
        ref = ObjectRef(str(entry["object_id"]), int(entry["size"]), str(entry["sha256"]), "file")
        self.objects.get_to_file(ref, target)
        return target

    @property
    def objects(self) -> ObjectStoreClient:
        """The service's object store as this user (``put``, ``get``, ``info``, ``delete``)."""
        if self._objects is None:
            if self.transport.refresh_token is not None and not self.transport.token:
                self.transport.token = self.transport.refresh_token()
            self._objects = ObjectStoreClient(self.service_url, self.transport.token or "", pool=self.transport.pool)
        self._objects.token = self.transport.token or ""
        return self._objects

    def _by_reference(self, parts: list[Part]) -> bytes:
        """The payload ``parts`` make, or a reference to it in the object store when it is over
        ``ref_threshold`` (the parts are uploaded one after the other, never joined)."""
        if not by_reference(oob_frames.total(parts), self.ref_threshold):
            return oob_frames.join(parts)
        header = serialize.parse_header(bytes(parts[0][:64]))
        ref = self.objects.put(parts, strategy=header.strategy, ttl=self.object_ttl, name="task arguments")
        return ref.to_buffer(serialize.PYTHON_VERSION)

    def _by_reference_in_flight(self, parts: list[Part]) -> bytes:
        """Like :meth:`_by_reference`, but the upload runs in a thread while the task is sent: the
        worker's download follows it (:mod:`fnserve.argument_uploads`)."""
        return self._uploads.reference(parts, self.ref_threshold, self.object_ttl)

    def _post_then_finish_uploads(self, body: dict[str, Any], timeout: float | None = None) -> Any:
        return self._uploads.send(lambda: self.transport.post("/v1/tasks", body, timeout=timeout))

    def _prepare_call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        """Large arguments as ProxyStore proxies, and the options asking the worker to proxy a
        large result (nothing when the client has no ``proxy_store``)."""
        if self.proxy_store is None:
            return args, kwargs, None
        from fnserve import proxies

        args, kwargs = proxies.proxy_arguments(args, kwargs, self.proxy_store, self.proxy_threshold)
        return args, kwargs, {"result_proxy": proxies.result_spec(self.proxy_store, self.proxy_threshold)}

    def fetch_object(self, ref: ObjectRef) -> bytearray:
        """The bytes a reference names (checked against its size and SHA-256)."""
        return self.objects.get(ref)

    def fetch_result(self, ref: ObjectRef) -> bytearray:
        """A task's result passed by reference: downloaded, checked against its size and SHA-256,
        then deleted from the object store. A result is delivered once: the service does not
        keep its bytes (disk, page cache, quota) once a client has them."""
        try:
            buf = self.objects.get(ref)
        except FnserveError as exc:
            if exc.code != "object_not_found":
                raise
            raise NotFound(f"the result (object {ref.object_id}) is no longer in the object store: a result passed "
                           "by reference is deleted once a client has downloaded it (keep the value get_result "
                           "returned), or the worker's upload of it failed", code="object_not_found",
                           details={"object_id": ref.object_id}) from None
        try:
            self.objects.delete(ref.object_id)
        except FnserveError:
            pass  # it goes at its TTL
        return buf

    def get_batch_result(self, task_ids: list[str], timeout: float = 0.0) -> dict[str, dict[str, Any]]:
        """The status of many tasks at once, as Globus Compute's method of the same name answers:
        ``{task_id: {"pending": bool, "status": state, "result" | "exception": ...}}``.

        Answers at once by default; with ``timeout`` (s), first waits that long for them all to
        finish. Any number of ids (read 1,000 per request)."""
        out: dict[str, dict[str, Any]] = {}
        for start in range(0, len(task_ids), 1000):
            for task in self.wait(task_ids[start:start + 1000], timeout):
                out[task["task_id"]] = status_entry(task, self.allowed_result_serializers)
        return out

    def call(self, function_id: str, endpoint_id: str, *args: Any, user_endpoint_config: dict[str, Any] | None = None,
             **kwargs: Any) -> Any:
        """Run and wait for the result, in one request while it finishes within a long-poll.
        ``user_endpoint_config``: a multi-user endpoint's template values (as for :meth:`submit`;
        not passed to the function)."""
        spec = task_spec(function_id, endpoint_id, args, kwargs, None, None, None, self._json_results,
                         self._by_reference_in_flight, self._prepare_call, user_endpoint_config=user_endpoint_config)
        answer = self._post_then_finish_uploads({"tasks": [spec], "wait": _LONG_POLL}, timeout=_LONG_POLL + self.transport.timeout)
        task = answer["tasks"][0]
        if task["state"] in ("success", "failed", "cancelled"):
            return result_of(task, self.allowed_result_serializers, self.fetch_result)
        return self.get_result(task["task_id"])

    @property
    def _json_results(self) -> bool:
        """Ask endpoints for JSON results when this client refuses dill ones."""
        allowed = self.allowed_result_serializers
        return allowed is not None and serialize.DILL_DATA not in allowed

    # -- live outputs ---------------------------------------------------------------------------

    def get_outputs(self, task_id: str, since: str | None = None, wait: float = 0.0) -> dict[str, Any]:
        """Live outputs the task published with ``fnserve.report(...)`` after cursor ``since``.

        With ``wait`` > 0 the service holds the request until an output arrives or the task ends
        (a long-poll: no polling interval). Answers ``{"task_id", "state", "outputs": [{"seq",
        "time", "values"}], "cursor", "complete", "truncated"}``: pass ``cursor`` back as
        ``since``; nothing more will come once ``complete`` is true. Example::

            page = fc.get_outputs(task_id, wait=30)
            while True:
                for out in page["outputs"]:
                    print(out["values"])
                if page["complete"]:
                    break
                page = fc.get_outputs(task_id, since=page["cursor"], wait=30)
        """
        params: dict[str, Any] = {"wait": wait} if wait else {}
        if since:
            params["since"] = since
        return self.transport.get(f"/v1/tasks/{task_id}/outputs", **params,  # type: ignore[no-any-return]
                                  _timeout=wait + self.transport.timeout)

    def watch_outputs(self, task_id: str, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """Yield the task's outputs (``{"seq", "time", "values"}``) as they arrive, until it ends.

        Raises :class:`TaskPending` if ``timeout`` seconds pass first. A task that passed its
        output limit warns once (``RuntimeWarning``) where outputs were dropped.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        cursor: str | None = None
        while True:
            left = _LONG_POLL if deadline is None else max(0.0, min(_LONG_POLL, deadline - time.monotonic()))
            page = self.get_outputs(task_id, since=cursor, wait=left)
            cursor = page["cursor"]
            for out in page["outputs"]:
                if out.get("truncated"):
                    warnings.warn(f"task {task_id}: {out.get('message', 'outputs truncated')}", RuntimeWarning, stacklevel=2)
                else:
                    yield out
            if page["complete"]:
                return
            if deadline is not None and time.monotonic() >= deadline:
                raise TaskPending(f"task {task_id} is still {page['state']}", details={"state": page["state"]})
