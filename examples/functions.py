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
