"""The node manager: runs one task message inside a worker process.

It runs inside Parsl HTEX workers on compute nodes, often inside containers, so it imports only
the small ``fnserve`` core and the standard library: see :func:`node_manager.execute.execute_task`.
"""

from node_manager.execute import execute_task

__all__ = ["execute_task"]
