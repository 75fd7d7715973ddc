"""What software an endpoint runs, reported to the forwarder when it registers."""

from __future__ import annotations

import platform

from fnserve.version import PROTOCOL_VERSION, __version__


def software_versions() -> dict[str, str]:
    """What this endpoint runs, reported to the forwarder at registration."""
    versions = {
        "fnserve": __version__,
        "protocol": str(PROTOCOL_VERSION),
        "python": platform.python_version(),
    }
    try:
        import parsl

        versions["parsl"] = parsl.__version__
    except ImportError:
        pass
    return versions
