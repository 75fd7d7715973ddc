"""The service layer: what the REST routes do, without HTTP.

Each function takes the registry session and/or the task store explicitly, checks ownership,
and raises :mod:`fnserve.errors` subclasses with stable codes.
"""

from web_service.services.access import AccessCache

# (kind, id) -> access snapshot of a live function or endpoint (owner, grants, allowlist).
OwnershipCache = AccessCache

__all__ = ["OwnershipCache"]
