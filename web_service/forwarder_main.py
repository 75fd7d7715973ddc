"""Start a forwarder from the environment (``python -m web_service.forwarder``)."""

from __future__ import annotations

import logging

from web_service.forwarder import Forwarder
from web_service.forwarder_pool import ForwarderPool
from web_service.redis_client import redis_from_settings
from web_service.task_store import TaskStore

log = logging.getLogger("web_service.forwarder")


def main() -> None:
    """``python -m web_service.forwarder``: serve site managers with settings from the environment.

    Binds ``FNSERVE_FORWARDER_BIND`` (default: the port of ``FNSERVE_FORWARDER_ADDRESS`` on all
    interfaces); serves Prometheus metrics on ``FNSERVE_FORWARDER_METRICS`` (``HOST:PORT``; unset:
    none; see web_service/forwarder_metrics.py). Joins the forwarder pool as
    ``FNSERVE_FORWARDER_ADVERTISE`` (the address endpoints reach it at; default
    ``FNSERVE_FORWARDER_ADDRESS``; web_service/forwarder_pool.py). Stops cleanly on SIGTERM / SIGINT.
    """
    import os
    import signal

    from web_service.registry.db import migrate, session_factory
    from web_service.curve_keys import server_keys
    from web_service.services.endpoints import endpoint_for_key, verify_endpoint_secret
    from web_service.usage import UsageWriter
    from web_service.settings import Settings
    from web_service.log_safety import install_log_escaping

    from fnserve.private_files import private_umask

    private_umask()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_log_escaping()  # endpoints send text (reasons, names) that may reach the log
    settings = Settings.from_env()
    if settings.migrate_on_start:
        migrate(settings.database_url)
    sessions = session_factory(settings.database_url)

    def verify(endpoint_id: str, secret: str) -> bool:
        with sessions() as session:
            return verify_endpoint_secret(session, endpoint_id, secret)

    def key_owner(public_key: str) -> str | None:
        with sessions() as session:
            return endpoint_for_key(session, public_key)

    port = settings.forwarder_address.rsplit(":", 1)[-1]
    bind = os.environ.get("FNSERVE_FORWARDER_BIND") or f"tcp://0.0.0.0:{port}"
    from web_service.quotas import QuotaChecker
    from web_service.triggers.files import FileTriggerBridge

    client = redis_from_settings(settings)
    store = TaskStore(client, result_ttl=settings.result_ttl)
    # The address endpoints reach this forwarder at (its id in the forwarder pool).
    advertise = os.environ.get("FNSERVE_FORWARDER_ADVERTISE") or settings.forwarder_address
    fwd = Forwarder(
        store, verify, bind,
        heartbeat_period=float(os.environ.get("FNSERVE_HEARTBEAT_PERIOD", "2")),
        heartbeat_threshold=float(os.environ.get("FNSERVE_HEARTBEAT_THRESHOLD", "10")),
        server_keys=server_keys(settings.forwarder_key_file) if settings.forwarder_curve else None,
        endpoint_for_key=key_owner, max_result_bytes=settings.max_result_bytes,
        # File triggers: watch lists to endpoints, their events into the registry (docs/triggers.md).
        file_triggers=FileTriggerBridge(sessions, store, QuotaChecker(store.r, settings.cache_seconds)),
        waiting_expiry=settings.waiting_expiry,
        pool=ForwarderPool(client, advertise),
        replicas_ack=settings.redis_replicas_ack, replicas_timeout=settings.redis_wait_ms,
    )
    metrics_bind = os.environ.get("FNSERVE_FORWARDER_METRICS")
    if metrics_bind:
        from prometheus_client import REGISTRY

        from fnserve.metrics_bind import serve_metrics
        from web_service.forwarder_metrics import ForwarderCollector

        REGISTRY.register(ForwarderCollector(fwd))
        host, metrics_port = serve_metrics(metrics_bind)
        log.info("forwarder metrics on http://%s:%d/metrics", host, metrics_port)
    if settings.public_url:
        from web_service.object_store import load_data_key

        fwd.store.data_url, fwd.store.data_key = settings.public_url, load_data_key(settings.data_key_file)
    writer = UsageWriter(fwd.store.r, sessions).start()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: fwd.stop())
    try:
        fwd.run()
    finally:
        writer.stop()
