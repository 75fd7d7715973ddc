"""Whether a failed task runs again (pure logic).

Retries happen in the site manager, not the forwarder: the site manager is the one that sees a
worker or block die (Parsl raises ManagerLost / the scaling loop reports a lost block), it still
holds the task message, and rerunning locally keeps the forwarder's view simple (one dispatch,
one result). If the site manager itself dies, the forwarder re-dispatches its in-flight tasks,
which covers that level of failure without a second retry counter.
"""

from __future__ import annotations

import msgspec

from fnserve.messages import ResultMessage

# System failures worth another attempt: the task did not fail, what ran it did.
RETRYABLE = frozenset({"worker_lost"})


def should_retry(result: ResultMessage, attempts: int, max_retries: int) -> bool:
    """True when ``result`` is a system failure and the task has retries left.

    ``attempts`` counts runs so far (1 after the first), so a task runs at most
    ``1 + max_retries`` times.
    """
    return (not result.ok and result.error is not None and result.error.code in RETRYABLE
            and attempts <= max_retries)


def final_result(result: ResultMessage, attempts: int, max_retries: int) -> ResultMessage:
    """The result to report once no retry follows: a system failure names the attempt count."""
    if result.ok or result.error is None or result.error.code not in RETRYABLE:
        return result
    message = f"{result.error.message} (gave up after {attempts} attempt(s); max_retries={max_retries})"
    return msgspec.structs.replace(result, error=msgspec.structs.replace(result.error, message=message))


__all__ = ["RETRYABLE", "final_result", "should_retry"]
