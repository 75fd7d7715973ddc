"""systemd unit files for endpoints (``fnserve endpoint enable-on-boot NAME``).

:func:`endpoint_unit` is pure: it turns where things are into the unit's text, so the text is
tested without systemd. The service's own units are static files in ``deploy/systemd/``.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

# The site manager's exit status when the forwarder refused the endpoint (deleted, wrong
# secret): restarting would be refused again, so systemd must not.
REFUSED_EXIT = 2


_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")


def unit_name(endpoint: str) -> str:
    """``fnserve-endpoint-NAME.service``; a name systemd would have to escape is refused."""
    if not _NAME.fullmatch(endpoint):
        raise ValueError(f"endpoint name {endpoint!r} cannot name a systemd unit: use letters, digits, '.', '-' and '_'")
    return f"fnserve-endpoint-{endpoint}.service"


def unit_dir(system: bool) -> Path:
    """``/etc/systemd/system`` for a system unit, else the user's own unit folder."""
    if system:
        return Path("/etc/systemd/system")
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "systemd" / "user"


def endpoint_unit(endpoint: str, argv: list[str], fnserve_home: str, path: str, user: str | None,
                  drain_timeout: float = 30.0, python_path: str = "") -> str:
    """The unit that runs endpoint ``endpoint``'s site manager (``argv``) in the foreground.

    ``user``: the account a system unit runs as (None: a user unit, run by that user's own
    systemd; ``loginctl enable-linger`` keeps it running without a login session). Stop sends
    SIGTERM to the site manager alone (it drains and stops its own interchange and blocks),
    then SIGKILL to whatever is left after ``drain_timeout`` + 30 s. ``python_path``: kept
    when this Python finds fnserve through ``$PYTHONPATH`` (a source checkout).
    """
    lines = [
        "# Written by `fnserve endpoint enable-on-boot`; `fnserve endpoint disable-on-boot` removes it.",
        "[Unit]",
        f"Description=fnserve endpoint {endpoint}",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=simple",
    ]
    if user:
        lines.append(f"User={user}")
    lines += [
        f"Environment={_quote_env('FNSERVE_HOME', fnserve_home)}",
        f"Environment={_quote_env('PATH', path)}",
        *([f"Environment={_quote_env('PYTHONPATH', python_path)}"] if python_path else []),
        "ExecStart=" + " ".join(_quote_exec(a) for a in argv),
        "UMask=0077",
        "KillMode=mixed",
        f"TimeoutStopSec={int(drain_timeout) + 30}",
        "Restart=on-failure",
        "RestartSec=5",
        f"RestartPreventExitStatus={REFUSED_EXIT}",
        "",
        "[Install]",
        f"WantedBy={'multi-user.target' if user else 'default.target'}",
        "",
    ]
    return "\n".join(lines)


def _quote_env(name: str, value: str) -> str:
    # systemd's Environment= takes "NAME=value" quoted as a whole when it holds spaces.
    text = f"{name}={value}"
    return f'"{text}"' if any(c in text for c in " \t\"'\\") else text


def _quote_exec(arg: str) -> str:
    # ExecStart= splits like a shell (double quotes), and expands % specifiers: escape them.
    arg = arg.replace("%", "%%")
    return shlex.quote(arg) if any(c in arg for c in " \t\"'\\;$") else arg


__all__ = ["REFUSED_EXIT", "endpoint_unit", "unit_dir", "unit_name"]
