"""Entry points: :func:`run` for the CLI, :func:`main` for ``python -m site_manager``."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from site_manager.config import ConfigError, EndpointConfig, load_config

logger = logging.getLogger("site_manager")


def run(config: EndpointConfig | dict[str, Any]) -> int:
    """Run a site manager until it is stopped (SIGTERM/SIGINT) or refused; returns an exit status.

    0: stopped cleanly. 2: the forwarder refused this endpoint (reason logged and printed).
    """
    from fnserve.private_files import check_private, private_dir, private_umask
    from site_manager.manager import SiteManager

    if not isinstance(config, EndpointConfig):
        config = EndpointConfig.from_dict(config)
    # Everything this endpoint and its children (interchange, worker pools, batch jobs) write is
    # private; say so when a state folder was left readable by other accounts.
    private_umask()
    for problem in check_private([private_dir(config.run_path)]):
        logger.warning("%s", problem)
    manager = SiteManager(config)
    status = manager.run()
    if status != 0 and manager.exit_reason:
        print(f"fnserve site manager: {manager.exit_reason}", file=sys.stderr)
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m site_manager",
        description="Run an fnserve endpoint's site manager.",
    )
    parser.add_argument("--config", required=True, help="endpoint config YAML file")
    parser.add_argument(
        "--credentials", help="YAML file with endpoint_id, secret and forwarder (kept out of the config)"
    )
    parser.add_argument(
        "--check", action="store_true", help="validate the config, print the Parsl objects it makes, and exit"
    )
    parser.add_argument(
        "--reap-jobs", type=float, metavar="SECONDS",
        help="cancel the batch jobs a stopped site manager left in the queue, wait up to SECONDS for them to "
             "leave it, and exit 3 naming those that did not (the CLI runs this after stop)",
    )
    parser.add_argument(
        "--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR (default INFO)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = load_config(args.config, args.credentials)
        if args.check:
            print(describe(config))
            return 0
        if args.reap_jobs is not None:
            return reap_jobs(config, args.reap_jobs)
    except ConfigError as exc:
        print(f"fnserve site manager: {exc.message}", file=sys.stderr)
        return 1
    return run(config)


def reap_jobs(config: EndpointConfig, timeout: float) -> int:
    """Cancel what the endpoint's job records still list; 0 when the queue holds none of them, else 3."""
    import tempfile
    from pathlib import Path

    from site_manager.batch_jobs import describe_left, reap, records_under
    from site_manager.engine import make_provider

    if not records_under(config.run_path):
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        provider = make_provider(config.provider, config.scaling, Path(tmp), config.launcher, config.worker_init,
                                 config.engine)
        left = reap(provider, config.run_path, timeout)
    if left:
        print(f"fnserve site manager: batch job(s) still in the queue after {timeout:g} s of cancelling: "
              f"{describe_left(left)}", file=sys.stderr)
        return 3
    return 0


def describe(config: EndpointConfig) -> str:
    """Build the Parsl provider (and its launcher) a config makes, as Parsl's ``repr`` shows it.

    Raises :class:`ConfigError` when Parsl refuses an option value (a wrong type, a missing
    optional module such as ``kubernetes``).
    """
    import tempfile
    from pathlib import Path

    from site_manager.engine import make_provider

    try:
        with tempfile.TemporaryDirectory() as tmp:
            provider = make_provider(config.provider, config.scaling, Path(tmp), config.launcher, config.worker_init,
                                     config.engine)
    except Exception as exc:
        raise ConfigError(f"Parsl refused the {config.provider.type} provider settings: {exc}") from exc
    return f"provider: {provider!r}"
