"""Run the web service: gunicorn (threads) by default, or Werkzeug's threaded server.

    python -m web_service.server --bind 127.0.0.1:8780 [--workers 2 --threads 32]

Settings come from the environment (see :mod:`web_service.settings`). Long-poll requests hold a
thread each while they wait, so give gunicorn enough threads for the waiting clients.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any


def serve_gunicorn(bind: str, workers: int, threads: int) -> None:
    from gunicorn.app.base import BaseApplication

    class Application(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in {
                "bind": bind, "workers": workers, "threads": threads, "worker_class": "gthread",
                "timeout": 120, "graceful_timeout": 20, "keepalive": 75, "accesslog": None,
            }.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            # Built in each worker after the fork, so no DB or Redis connection is shared.
            from web_service.app import create_app

            return create_app()

    Application().run()


def serve_werkzeug(bind: str) -> None:
    from werkzeug.serving import run_simple

    from web_service.app import create_app

    host, port = bind.rsplit(":", 1)
    run_simple(host, int(port), create_app(), threaded=True, use_reloader=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="fnserve web service")
    parser.add_argument("--bind", default="127.0.0.1:8780")
    parser.add_argument("--server", choices=["gunicorn", "werkzeug"], default="gunicorn")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=32)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.server == "gunicorn":
        serve_gunicorn(args.bind, args.workers, args.threads)
    else:
        serve_werkzeug(args.bind)


if __name__ == "__main__":
    main()
