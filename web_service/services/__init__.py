"""The service layer: what the REST routes do, without HTTP.

Each function takes the registry session and/or the task store explicitly, checks ownership,
and raises :mod:`fnserve.errors` subclasses with stable codes.
"""

from web_service.ttl_cache import TTLCache

# (kind, id) -> owner id of a live function ("function") or endpoint ("endpoint").
OwnershipCache = TTLCache[tuple[str, str], str]

__all__ = ["OwnershipCache"]
