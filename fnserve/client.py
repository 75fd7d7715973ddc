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
recorded (no client-side sleeping or polling). A function that raised is re-raised here as
:class:`~fnserve.errors.RemoteExecutionError` with the remote traceback attached.
"""

from __future__ import annotations

import base64
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

from fnserve import serialize
from fnserve.config import ClientConfig
from fnserve.errors import RemoteExecutionError, TaskCancelled, TaskFailed, TaskPending
from fnserve.transport import Transport

# A json-data header, to check a result the service already sent as JSON against a policy.
_JSON_HEADER = serialize.serialize_data(None, serialize.JSON_DATA)
# The service caps one long-poll (FNSERVE_MAX_WAIT); longer waits chain several.
_LONG_POLL = 30.0


def _b64(buf: bytes) -> str:
    return base64.b64encode(buf).decode("ascii")


@dataclass
class Batch:
    """Several task submissions sent in one request (see :meth:`Client.batch_run`)."""

    tasks: list[dict[str, Any]] = field(default_factory=list)

    def add(self, function_id: str, endpoint_id: str, args: Iterable[Any] = (), kwargs: dict[str, Any] | None = None, *,
            runtime: str | None = None, walltime: float | None = None, serializer: str | None = None) -> None:
        self.tasks.append(_task_spec(function_id, endpoint_id, tuple(args), kwargs, runtime, walltime, serializer))

    def __len__(self) -> int:
        return len(self.tasks)


def _task_spec(function_id: str, endpoint_id: str, args: tuple[Any, ...], kwargs: dict[str, Any] | None,
               runtime: str | None, walltime: float | None, serializer: str | None, json_results: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "function_id": str(function_id),
        "endpoint_id": str(endpoint_id),
        "payload": _b64(serialize.serialize_args(args, kwargs, strategy=serializer or serialize.DILL_DATA)),
        "result_format": "json" if serializer == serialize.JSON_DATA or json_results else "python",
    }
    if runtime:
        spec["runtime"] = runtime
    if walltime is not None:
        spec["walltime"] = walltime
    return spec


class Client:
    """A connection to an fnserve service, acting as one user."""

    def __init__(self, service_url: str | None = None, token: str | None = None, *, timeout: float = 60.0,
                 config: ClientConfig | None = None, allowed_result_serializers: Iterable[str] | None = None):
        """``token`` overrides the configured one. With a Globus login (``fnserve login``) or
        ``FNSERVE_CLIENT_ID``/``FNSERVE_CLIENT_SECRET`` set, tokens come from globus-sdk and are
        renewed when they expire.

        ``allowed_result_serializers``: the strategies this client loads results from, e.g.
        ``["json-data"]`` when the endpoint's owner is not someone you trust with your process:
        a dill result is code the endpoint chose. Others are refused (``serializer_not_allowed``)
        without being loaded, and tasks ask for JSON results."""
        self.allowed_result_serializers = serialize.parse_policy(
            None if allowed_result_serializers is None else list(allowed_result_serializers), "allowed_result_serializers")
        cfg = config or ClientConfig.load()
        self.service_url = service_url or cfg.service_url
        refresh = None
        if not token and (cfg.auth == "globus" or (not cfg.token and _headless())):
            refresh = _globus_tokens(cfg, self.service_url)
        self.transport = Transport(self.service_url, token or (None if refresh else cfg.token), timeout=timeout,
                                   refresh_token=refresh)

    # -- service --------------------------------------------------------------------------------

    def version(self) -> dict[str, Any]:
        return self.transport.get("/v1/version")  # type: ignore[no-any-return]

    # -- functions ------------------------------------------------------------------------------

    def register_function(self, function: Callable[..., Any], name: str | None = None, description: str = "", *,
                          serializer: str | None = None, runtime: str | None = None) -> str:
        """Register ``function`` and return its id. ``serializer``: ``"dill-code"`` or ``"source"``.
        ``runtime``: id or name of the runtime its tasks run in unless a task names another."""
        buf = serialize.serialize_function(function, serializer)
        return self._register(buf, name or function.__name__, description, runtime)

    def register_source(self, source: str, entry_point: str, name: str | None = None, description: str = "", *,
                        runtime: str | None = None) -> str:
        """Register the function ``entry_point`` defined in ``source`` (e.g. a whole .py file)."""
        return self._register(serialize.serialize_source(source, entry_point), name or entry_point, description, runtime)

    def _register(self, buf: bytes, name: str, description: str, runtime: str | None = None) -> str:
        body = {"name": name, "function": _b64(buf), **({"description": description} if description else {}),
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

    # -- sharing, allowlists, groups ------------------------------------------------------------

    def get_sharing(self, kind: str, resource_id: str) -> dict[str, Any]:
        """Who a ``"function"`` or ``"endpoint"`` you own is shared with:
        ``{"public": bool, "users": [...], "groups": [...]}``."""
        return self.transport.get(f"/v1/{_collection(kind)}/{resource_id}/sharing")  # type: ignore[no-any-return]

    def set_sharing(self, kind: str, resource_id: str, *, public: bool = False, users: Iterable[str] = (),
                    groups: Iterable[str] = ()) -> dict[str, Any]:
        """Replace who a function or endpoint you own is shared with (usernames, group names)."""
        body = {"public": public, "users": list(users), "groups": list(groups)}
        return self.transport.request("PUT", f"/v1/{_collection(kind)}/{resource_id}/sharing", body=body)  # type: ignore[no-any-return]

    def share(self, kind: str, resource_id: str, *, users: Iterable[str] = (), groups: Iterable[str] = (),
              public: bool | None = None) -> dict[str, Any]:
        """Add users / groups (and optionally make it public) to what is already shared.

        Example: ``fc.share("function", fid, users=["bob"])``."""
        now = self.get_sharing(kind, resource_id)
        return self.set_sharing(kind, resource_id, public=now["public"] if public is None else public,
                                users=sorted(set(now["users"]) | set(users)), groups=sorted(set(now["groups"]) | set(groups)))

    def unshare(self, kind: str, resource_id: str, *, users: Iterable[str] = (), groups: Iterable[str] = (),
                public: bool = False) -> dict[str, Any]:
        """Remove users / groups (and, with ``public=True``, public access)."""
        now = self.get_sharing(kind, resource_id)
        return self.set_sharing(kind, resource_id, public=now["public"] and not public,
                                users=sorted(set(now["users"]) - set(users)), groups=sorted(set(now["groups"]) - set(groups)))

    def share_function(self, function_id: str, **who: Any) -> dict[str, Any]:
        return self.share("function", function_id, **who)

    def share_endpoint(self, endpoint_id: str, **who: Any) -> dict[str, Any]:
        return self.share("endpoint", endpoint_id, **who)

    def get_allowed_functions(self, endpoint_id: str) -> dict[str, Any]:
        """``{"restricted": bool, "function_ids": [...]}`` of an endpoint you own."""
        return self.transport.get(f"/v1/endpoints/{endpoint_id}/allowed_functions")  # type: ignore[no-any-return]

    def set_allowed_functions(self, endpoint_id: str, function_ids: Iterable[str] | None) -> dict[str, Any]:
        """Restrict an endpoint you own to ``function_ids`` (then only they run there, for anyone);
        ``None`` lifts the restriction."""
        body: dict[str, Any] = {"restricted": False} if function_ids is None else {"restricted": True, "function_ids": list(function_ids)}
        return self.transport.request("PUT", f"/v1/endpoints/{endpoint_id}/allowed_functions", body=body)  # type: ignore[no-any-return]

    def allow_functions(self, endpoint_id: str, *function_ids: str) -> dict[str, Any]:
        """Add functions to an endpoint's allowlist (restricting it if it was not)."""
        now = self.get_allowed_functions(endpoint_id)
        return self.set_allowed_functions(endpoint_id, sorted(set(now["function_ids"]) | set(function_ids)))

    def disallow_functions(self, endpoint_id: str, *function_ids: str) -> dict[str, Any]:
        now = self.get_allowed_functions(endpoint_id)
        return self.set_allowed_functions(endpoint_id, sorted(set(now["function_ids"]) - set(function_ids)))

    def create_group(self, name: str) -> dict[str, Any]:
        return self.transport.post("/v1/groups", {"name": name})  # type: ignore[no-any-return]

    def list_groups(self) -> list[dict[str, Any]]:
        return list(self.transport.get("/v1/groups")["groups"])

    def add_group_members(self, name: str, *usernames: str) -> dict[str, Any]:
        return self.transport.post(f"/v1/groups/{name}/members", {"add": list(usernames)})  # type: ignore[no-any-return]

    def remove_group_members(self, name: str, *usernames: str) -> dict[str, Any]:
        return self.transport.post(f"/v1/groups/{name}/members", {"remove": list(usernames)})  # type: ignore[no-any-return]

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
               max_retries: int | None = None) -> str:
        """Like :meth:`run`, with options: ``runtime``, ``walltime`` (s), ``serializer``, and
        ``max_retries`` (reruns after a lost worker; default: the endpoint's setting)."""
        spec = _task_spec(function_id, endpoint_id, tuple(args), kwargs, runtime, walltime, serializer, self._json_results)
        if max_retries is not None:
            spec["max_retries"] = max_retries
        return str(self.transport.post("/v1/tasks", {"tasks": [spec]})["task_ids"][0])

    def create_batch(self) -> Batch:
        return Batch()

    def batch_run(self, batch: Batch) -> list[str]:
        """Submit a whole batch in one request; returns task ids in the order added."""
        if not batch.tasks:
            return []
        return list(self.transport.post("/v1/tasks", {"tasks": batch.tasks})["task_ids"])

    def get_task(self, task_id: str) -> dict[str, Any]:
        """The task's state, timestamps, and its result or error once finished."""
        return self.transport.get(f"/v1/tasks/{task_id}")  # type: ignore[no-any-return]

    def cancel(self, task_id: str) -> dict[str, Any]:
        return self.transport.post(f"/v1/tasks/{task_id}/cancel", {})  # type: ignore[no-any-return]

    def wait(self, task_ids: list[str], timeout: float | None = None, return_when: str = "ALL_COMPLETED") -> list[dict[str, Any]]:
        """Block until the tasks finish (or the first one, with FIRST_COMPLETED) or ``timeout`` passes."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = _LONG_POLL if deadline is None else max(0.0, min(_LONG_POLL, deadline - time.monotonic()))
            tasks = self.transport.post(
                "/v1/tasks/results", {"task_ids": list(task_ids), "wait": left, "return_when": return_when},
                timeout=left + self.transport.timeout,
            )["tasks"]
            done = [t for t in tasks if t["state"] in ("success", "failed", "cancelled")]
            if len(done) == len(tasks) or (return_when == "FIRST_COMPLETED" and done) or left <= 0 or (
                deadline is not None and time.monotonic() >= deadline
            ):
                return list(tasks)

    def get_result(self, task_id: str, timeout: float | None = None) -> Any:
        """Wait for a task and return its result; re-raise its remote exception.

        Raises :class:`TaskPending` if ``timeout`` seconds pass first.
        """
        task = self.wait([task_id], timeout)[0]
        return result_of(task, self.allowed_result_serializers)

    def get_batch_result(self, task_ids: list[str], timeout: float | None = None) -> dict[str, dict[str, Any]]:
        """Wait for several tasks; returns ``{task_id: {"state", "result" | "exception"}}``."""
        out: dict[str, dict[str, Any]] = {}
        for task in self.wait(task_ids, timeout):
            entry: dict[str, Any] = {"state": task["state"]}
            try:
                entry["result"] = result_of(task, self.allowed_result_serializers)
            except (RemoteExecutionError, TaskFailed, TaskCancelled, TaskPending) as exc:
                entry["exception"] = exc
            out[task["task_id"]] = entry
        return out

    def call(self, function_id: str, endpoint_id: str, *args: Any, **kwargs: Any) -> Any:
        """Run and wait for the result, in one request while it finishes within a long-poll."""
        spec = _task_spec(function_id, endpoint_id, args, kwargs, None, None, None, self._json_results)
        answer = self.transport.post("/v1/tasks", {"tasks": [spec], "wait": _LONG_POLL}, timeout=_LONG_POLL + self.transport.timeout)
        task = answer["tasks"][0]
        if task["state"] in ("success", "failed", "cancelled"):
            return result_of(task, self.allowed_result_serializers)
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


def _headless() -> bool:
    import os

    return bool(os.environ.get("FNSERVE_CLIENT_ID") and os.environ.get("FNSERVE_CLIENT_SECRET"))


def _globus_tokens(cfg: ClientConfig, service_url: str) -> Callable[[], str]:
    from fnserve import login

    path = login.tokens_path()  # fixed now: the token store of the home this client was made in

    def token() -> str:
        current = cfg
        if not current.globus:  # headless with no login: ask the service which scope it needs
            auth = login.service_auth(service_url)
            current = ClientConfig(service_url=service_url, auth="globus", globus={
                "scope": auth.get("scope", ""), "native_client_id": auth.get("native_client_id", "")})
        else:
            current = ClientConfig(service_url=service_url, auth="globus", globus=cfg.globus)
        return login.globus_access_token(current, path)

    return token


def _collection(kind: str) -> str:
    if kind not in ("function", "endpoint", "runtime"):
        raise ValueError(f"kind must be 'function', 'endpoint' or 'runtime', not {kind!r}")
    return kind + "s"


def result_of(task: dict[str, Any], allowed: tuple[str, ...] | None = None) -> Any:
    """The value of a finished task object from the REST API, or the error it ended with.

    ``allowed``: the serializer strategies to load a result from (None: any); another one raises
    :class:`~fnserve.errors.SerializationError` (``serializer_not_allowed``) unloaded.
    """
    state = task["state"]
    if state == "success":
        if "result_json" in task:
            serialize.check_allowed(_JSON_HEADER, allowed, f"the result of task {task['task_id']}")
            return task["result_json"]
        if not task.get("result"):
            return None
        buf = base64.b64decode(task["result"])
        serialize.check_allowed(buf, allowed, f"the result of task {task['task_id']}")
        return serialize.deserialize_data(buf)
    error = task.get("error") or {}
    if state == "failed" and error.get("code") == "user_exception":
        raise RemoteExecutionError(error.get("type", "Exception"), error.get("message", ""), error.get("traceback", ""), task["task_id"])
    if state == "failed":
        raise TaskFailed(f"task {task['task_id']} failed: {error.get('message', 'unknown error')}", code=error.get("code", "task_failed"), details=error)
    if state == "cancelled":
        raise TaskCancelled(f"task {task['task_id']} was cancelled")
    raise TaskPending(f"task {task['task_id']} is still {state}", details={"state": state})
