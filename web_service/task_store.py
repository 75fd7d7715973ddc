"""The task store's old import path, kept because much of the code base imports it: everything
lives in :mod:`web_service.store` (keys, the task's shape, the rules, the Lua scripts, TaskStore)."""

from web_service.store import *  # noqa: F401,F403
from web_service.store import __all__  # noqa: F401
