"""The :class:`~fnserve.client.Client`'s methods for sharing, endpoint allowlists and groups.

A mixin, so that ``client.py`` holds tasks and functions; each method is one REST call (or a
read then a write, for the add/remove helpers). See docs/security.md.
"""

from __future__ import annotations

from typing import Any, Iterable

from fnserve.transport import Transport


class AccessMethods:
    """Sharing (functions, endpoints, runtimes), endpoint allowlists and groups."""

    transport: Transport

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

    def share_trigger(self, trigger_id: str, **who: Any) -> dict[str, Any]:
        """Let users / groups bind rules to a trigger you own (with their own functions and
        endpoints) and read its history for their rules."""
        return self.share("trigger", trigger_id, **who)

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


def _collection(kind: str) -> str:
    if kind not in ("function", "endpoint", "runtime", "trigger"):
        raise ValueError(f"kind must be 'function', 'endpoint', 'runtime' or 'trigger', not {kind!r}")
    return kind + "s"
