"""Render the Kubernetes manifests of the fnserve service from values.yaml.

    python deploy/kubernetes/render.py [--values FILE] [--env-file deploy/compose.env] [--set forwarders.replicas=4 ...] > fnserve.yaml
    kubectl apply -f fnserve.yaml        # on your cluster (none runs where this is tested)

``settings:`` holds the service's own FNSERVE_* variables; a name the service does not read is
refused, so a typo fails here and not silently in the cluster. Secrets are never rendered: the
manifests name a Secret you create (see values.yaml).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

import jinja2
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

# Read by the processes themselves rather than web_service.settings.Settings.
PROCESS_SETTINGS = {"FNSERVE_WEB_BIND", "FNSERVE_WEB_WORKERS", "FNSERVE_WEB_WORKER_CLASS", "FNSERVE_FORWARDER_BIND",
                    "FNSERVE_FORWARDER_ADVERTISE", "FNSERVE_FORWARDER_METRICS", "FNSERVE_HEARTBEAT_PERIOD",
                    "FNSERVE_HEARTBEAT_THRESHOLD", "FNSERVE_HOME", "FNSERVE_TRIGGER_TICK", "FNSERVE_MIGRATE_ON_START"}
# Kept in the Secret, never in the rendered ConfigMap.
SECRET_SETTINGS = {"FNSERVE_DATABASE_URL", "FNSERVE_REDIS_URL", "FNSERVE_REDIS_SENTINEL_PASSWORD",
                   "FNSERVE_METRICS_TOKEN", "FNSERVE_GLOBUS_CLIENT_SECRET"}


def known_settings() -> set[str]:
    from web_service.settings import Settings

    return {f"FNSERVE_{f.name.upper()}" for f in dataclasses.fields(Settings)} | PROCESS_SETTINGS


def _set(values: dict[str, Any], assignment: str) -> None:
    path, _, raw = assignment.partition("=")
    *parents, last = path.split(".")
    node = values
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = yaml.safe_load(raw)


def settings_from_env_file(text: str) -> dict[str, str]:
    """The service settings of an env file such as deploy/compose.env: its ``FNSERVE_*`` lines
    but the secrets (those go in the Secret); ``DEPLOY_*`` lines (ports, images, passwords of
    one compose deployment) and comments are not the cluster's business."""
    settings = {}
    for line in text.splitlines():
        name, sep, value = line.strip().partition("=")
        if sep and name.startswith("FNSERVE_") and name not in SECRET_SETTINGS:
            settings[name] = value
    return settings


def render(values: dict[str, Any], version: str = "0") -> str:
    settings = {k: str(v) for k, v in (values.get("settings") or {}).items()}
    unknown = sorted(set(settings) - known_settings())
    if unknown:
        raise SystemExit(f"settings: not read by the service: {', '.join(unknown)} (see web_service/settings.py)")
    secret = sorted(set(settings) & SECRET_SETTINGS)
    if secret:
        raise SystemExit(f"settings: {', '.join(secret)} belong in the Secret {values['secret']!r}, not in values")
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True)
    return env.get_template("fnserve.yaml.j2").render(**{**values, "settings": settings, "version": version})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--values", default=str(HERE / "values.yaml"))
    parser.add_argument("--env-file", help="take the FNSERVE_* settings of this file (deploy/compose.env), but secrets")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--version", default=None, help="the image's version (names the migration job)")
    args = parser.parse_args()
    values = yaml.safe_load(Path(args.values).read_text())
    if args.env_file:
        values["settings"] = {**(values.get("settings") or {}), **settings_from_env_file(Path(args.env_file).read_text())}
    for assignment in args.set:
        _set(values, assignment)
    if args.version is None:
        from fnserve.version import __version__ as version
    else:
        version = args.version
    sys.stdout.write(render(values, version))


if __name__ == "__main__":
    main()
