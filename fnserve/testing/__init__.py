"""Helpers for testing and benchmarking fnserve itself (not needed to use it).

:mod:`fnserve.testing.stack` starts and stops a whole fnserve stack on this machine (``fnserve up``
in a throwaway ``FNSERVE_HOME``: Redis, the web service, the forwarder, endpoints local or on
Slurm), the one harness that tests/integration and benchmarks/ share. It lives in the package
(as ``flask.testing`` does) so that both import it the same way once fnserve is installed,
``pip install -e .`` from a clone included, without path tricks.
"""
