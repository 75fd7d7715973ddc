"""Run the web service: gunicorn (gevent, else threads) by default, or Werkzeug's threaded server.

    python -m web_service.server --bind 127.0.0.1:8780 [--workers 2] [--worker-class gevent|gthread]

Settings come from the environment (see :mod:`web_service.settings`). Long-polls must not hold
what quick requests need (``GET /v1/health`` answers in milliseconds with hundreds of long-polls
open; see :mod:`web_service.waits` and benchmarks/longpoll_health.py):

- ``gevent`` (the default when gevent is installed, as ``fnserve[service]`` does): a waiting
  request is a parked greenlet blocked on a Redis socket; the worker holds up to
  ``FNSERVE_MAX_OPEN_WAITS`` of them plus 1000 other connections.
- ``gthread``: ``--threads`` request threads plus one more thread per allowed open wait
  (``FNSERVE_MAX_OPEN_WAITS``); waits past that are refused (503), so they can never take the
  threads that other requests need.

Metrics: ``GET /metrics`` on the same port (web_service/metrics.py); under gunicorn every
worker's values are summed (prometheus_client's multiprocess mode, in ``$PROMETHEUS_MULTIPROC_DIR``
or a private temporary folder removed at exit).
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
from typing import Any

from web_service.log_safety import install_log_escaping


def default_worker_class() -> str:
    """``$FNSERVE_WEB_WORKER_CLASS``, else gevent when it is installed, else gthread."""
    chosen = os.environ.get("FNSERVE_WEB_WORKER_CLASS")
    if chosen:
        return chosen
    return "gevent" if importlib.util.find_spec("gevent") is not None else "gthread"


def gunicorn_config(bind: str, workers: int, threads: int, worker_class: str, max_open_waits: int) -> dict[str, Any]:
    """Gunicorn's settings for the service (the ``accesslog`` is our own: see app.py)."""
    # keepalive: an idle client connection holds a worker's shutdown (SIGTERM, `fnserve service
    # restart`) until it times out: at 75 s a restart took 22 s (graceful_timeout), at 5 s 9.6-10.1 s,
    # at 2 s 5.7-5.8 s (benchmarks/chaos.py web_restart, quiet machine). A client
    # idle for longer reconnects (a TCP connect; a proxy in front keeps its own client connections).
    config: dict[str, Any] = {
        "bind": bind, "workers": workers, "worker_class": worker_class,
        "timeout": 120, "graceful_timeout": 20, "keepalive": 2, "accesslog": None,
    }
    if worker_class == "gevent":
        config["worker_connections"] = max_open_waits + 1000
    elif worker_class == "gthread":
        config["threads"] = threads + max_open_waits
    else:
        raise ValueError(f"worker class must be gevent or gthread, not {worker_class!r}")
    return config


# prometheus_client picks its value store when first imported: the multiprocess folder must be in
# the environment before that, so this module names it without importing prometheus_client.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_multiprocess_dir(default: str) -> str:
    """Before gunicorn forks its workers: ``$PROMETHEUS_MULTIPROC_DIR`` (else ``default``),
    created private and emptied of a previous run's values, and set in the environment the
    workers inherit, so that ``/metrics`` sums every worker (web_service/metrics.py)."""
    folder = os.environ.get(MULTIPROC_ENV) or default
    os.makedirs(folder, mode=0o700, exist_ok=True)
    for name in os.listdir(folder):
        if name.endswith(".db"):
            os.unlink(os.path.join(folder, name))
    os.environ[MULTIPROC_ENV] = folder
    return folder


def worker_exited(server: Any, worker: Any) -> None:
    """Gunicorn's ``child_exit`` hook: a dead worker's open-waits gauge stops counting (its
    counters stay: totals never go back)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def serve_gunicorn(bind: str, workers: int, threads: int, worker_class: str) -> None:
    import shutil
    import tempfile

    from gunicorn.app.base import BaseApplication

    from web_service.settings import Settings

    config = gunicorn_config(bind, workers, threads, worker_class, Settings.from_env().max_open_waits)
    own_dir = not os.environ.get(MULTIPROC_ENV)
    folder = prepare_multiprocess_dir(tempfile.mkdtemp(prefix="fnserve-metrics-") if own_dir else "")
    config["child_exit"] = worker_exited
    master = os.getpid()

    class Application(BaseApplication):
        def load_config(self) -> None:
            for key, value in config.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            # Built in each worker after the fork (and, for gevent, after its monkey-patching),
            # so no DB or Redis connection is shared.
            from web_service.app import create_app

            return create_app()

    try:
        Application().run()
    finally:
        if own_dir and os.getpid() == master:  # a worker leaves through here too (SystemExit)
            shutil.rmtree(folder, ignore_errors=True)


def serve_werkzeug(bind: str) -> None:
    from werkzeug.serving import run_simple

    from web_service.app import create_app

    host, port = bind.rsplit(":", 1)
    run_simple(host, int(port), create_app(), threaded=True, use_reloader=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="fnserve web service")
    parser.add_argument("--bind", default=os.environ.get("FNSERVE_WEB_BIND") or "127.0.0.1:8780",
                        help="HOST:PORT (default $FNSERVE_WEB_BIND, else 127.0.0.1:8780)")
    parser.add_argument("--server", choices=["gunicorn", "werkzeug"], default="gunicorn")
    parser.add_argument("--workers", type=int, default=int(os.environ.get("FNSERVE_WEB_WORKERS") or 1),
                        help="gunicorn worker processes (default $FNSERVE_WEB_WORKERS, else 1)")
    parser.add_argument("--worker-class", choices=["gevent", "gthread"], default=default_worker_class())
    parser.add_argument("--threads", type=int, default=32, help="gthread: request threads besides the long-poll ones")
    args = parser.parse_args(argv)
    from fnserve.private_files import private_umask

    private_umask()  # the registry database and anything else it writes: 0600 / 0700
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_log_escaping()
    if args.server == "gunicorn":
        serve_gunicorn(args.bind, args.workers, args.threads, args.worker_class)
    else:
        serve_werkzeug(args.bind)


if __name__ == "__main__":
    main()
