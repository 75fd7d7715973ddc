"""Functions to register with `fnserve register examples/functions.py:NAME`.

The whole file travels with the function (source strategy), so helpers and imports at the top
are available to it on the endpoint.
"""

import math


def _mean(values):
    return sum(values) / len(values)


def mean_and_std(values):
    """Mean and (population) standard deviation of a list of numbers."""
    m = _mean(values)
    return {"mean": m, "std": math.sqrt(_mean([(v - m) ** 2 for v in values]))}


def integrate(a, b, n=100_000):
    """Integrate sin(x) from a to b with the midpoint rule."""
    h = (b - a) / n
    return h * sum(math.sin(a + (i + 0.5) * h) for i in range(n))


def fails(message="this function always raises"):
    raise RuntimeError(message)


def count_primes(n, chunks=5):
    """Count the primes below n, reporting progress after each chunk as a live output.

    Watch it while it runs: `fnserve watch TASK_ID`, `Client.watch_outputs(task_id)`, or
    `GET /v1/tasks/TASK_ID/outputs?wait=30` (see examples/curl_call.sh).
    """
    import fnserve

    found = 0
    step = max(1, n // chunks)
    for start in range(0, n, step):
        stop = min(n, start + step)
        found += sum(1 for k in range(max(start, 2), stop) if all(k % d for d in range(2, math.isqrt(k) + 1)))
        fnserve.report(checked=stop, primes=found)
    return found
