"""The task store's Lua scripts: read from ``scripts/*.lua`` and registered with Redis at start.

Each script runs as ``rules.lua_preamble()`` (state names and rule sets generated from
:mod:`web_service.store.rules`) + ``lib.lua`` (the shared Lua functions) + its own file, so no
script spells out a state name or a rule the Python side also holds.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import redis
from redis.commands.core import Script

from web_service.store.rules import lua_preamble

_DIR = Path(__file__).with_name("scripts")
TASK_SCRIPTS = ("accept", "claim", "record", "requeue", "running", "cancel", "sweep")


@cache
def source(name: str) -> str:
    """The full text of script ``name`` as Redis runs it."""
    return lua_preamble() + (_DIR / "lib.lua").read_text() + (_DIR / f"{name}.lua").read_text()


def register(client: redis.Redis, name: str) -> Script:
    """Script ``name`` registered with ``client`` (run by EVALSHA, loaded again after a Redis
    restart by redis-py)."""
    return client.register_script(source(name))
