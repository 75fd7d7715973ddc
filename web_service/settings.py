"""Configuration of the web service, read from ``FNSERVE_*`` environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

MIB = 1024 * 1024


def fnserve_home() -> Path:
    """``$FNSERVE_HOME``, or ``~/.fnserve``: where the embedded service keeps its state."""
    return Path(os.environ.get("FNSERVE_HOME") or Path.home() / ".fnserve")


def default_database_url() -> str:
    return f"sqlite:///{fnserve_home() / 'service' / 'registry.db'}"


@dataclass(frozen=True)
class Settings:
    """Everything the web service needs to know to start.

    Example::

        Settings(database_url="postgresql+psycopg://fnserve@db/fnserve",
                 redis_url="redis://redis:6379/0")
    """

    database_url: str = field(default_factory=default_database_url)
    redis_url: str = field(default="redis://127.0.0.1:6379/0", repr=False)  # may hold a password
    max_payload_bytes: int = 10 * MIB  # one function body, or one task's arguments
    result_ttl: int = 7 * 24 * 3600  # seconds a finished task stays readable
    forwarder_address: str = "tcp://127.0.0.1:55001"  # what endpoints are told to connect to
    max_wait: float = 60.0  # cap of a long-poll, seconds
    auth_mode: str = "local"
    max_batch: int = 10_000  # tasks in one POST /v1/tasks
    # Whole request body; bigger than one payload because a batch carries many (base64: 4/3).
    max_request_bytes: int = 64 * MIB
    # How long a verified token / an ownership lookup is trusted in-process (see auth.py).
    cache_seconds: float = 5.0
    migrate_on_start: bool = True
    # Per-user token bucket over every authenticated request (0: off): requests/s and burst.
    rate_limit: float = 0.0
    rate_burst: float = 100.0
    # Globus mode (auth_mode="globus"): the service's confidential client (introspects tokens),
    # the scope tokens must carry, and the native-app client id the SDK logs in with.
    globus_client_id: str = ""
    globus_client_secret: str = field(default="", repr=False)
    globus_scope: str = ""
    globus_native_client_id: str = ""
    # The forwarder's CurveZMQ certificate (zmq.auth format: FILE and FILE_secret), created on
    # first start; the web service reads only its public half to hand to new endpoints.
    forwarder_key_file: str = field(default_factory=lambda: str(fnserve_home() / "service" / "forwarder.key"))
    # CurveZMQ on the forwarder; off is allowed only when it binds to loopback.
    forwarder_curve: bool = True
    # Long-polls: open at once per user (across every web worker; past it 429 too_many_waits),
    # and per web worker process (past it 503 service_busy; bounds sockets and Redis connections).
    max_waits_per_user: int = 32
    max_open_waits: int = 256
    # Longest walltime a task may ask for (s); more is 400 invalid_request.
    max_walltime: float = 30 * 24 * 3600.0  # 30 days
    # Largest serialized result the forwarder records (an endpoint's own limit may be lower).
    max_result_bytes: int = 10 * MIB
    # Requests whose token is not already verified in this process (unknown tokens, no token,
    # the public routes): per client address, requests/s and burst, checked before any SQL.
    # ``proxy_hops``: trusted reverse proxies in front (their X-Forwarded-For names the client).
    anon_rate_limit: float = 20.0
    anon_rate_burst: float = 200.0
    proxy_hops: int = 0
    access_log: bool = True  # one INFO line per request on the logger fnserve.access
    # GET /metrics: with a token, only requests bearing it; without, loopback only (web_service/metrics.py).
    metrics_token: str = field(default="", repr=False)
    # Events a trigger takes (webhook calls and fires): per trigger, events/s and burst; and the
    # largest event body (it is stored with the event and becomes the tasks' arguments).
    trigger_rate_limit: float = 50.0
    trigger_rate_burst: float = 500.0
    max_event_bytes: int = 256 * 1024
    # The object store (large arguments, results and files by reference; docs/data.md).
    # ``public_url``: this service's URL as workers reach it (sent in task messages; empty: workers
    # get no data plane and large payloads stay refused over the inline limit).
    public_url: str = ""
    objects_dir: str = field(default_factory=lambda: str(fnserve_home() / "service" / "objects"))
    object_quota_bytes: int = 50 * 1024 * MIB  # per user, bytes of live objects
    max_object_bytes: int = 16 * 1024 * MIB  # one object
    object_chunk_bytes: int = 16 * MIB  # one upload request at most
    # Bytes of deleted objects' files the disk backend keeps for new uploads to overwrite (their
    # page cache is reused instead of new pages filled; web_service/object_disk.py). 0: none.
    object_recycle_bytes: int = 4 * 1024 * MIB
    object_ttl: float = 24 * 3600.0  # default lifetime of an object, seconds
    max_object_ttl: float = 30 * 24 * 3600.0
    # HMAC key of task data tokens, shared by the web service and the forwarder (created on
    # first start; every replica must read the same file, or set it through a secret mount).
    data_key_file: str = field(default_factory=lambda: str(fnserve_home() / "service" / "data.key"))
    # Where objects' bytes live: "disk" (objects_dir) or "s3" (a bucket, through boto3).
    object_backend: str = "disk"
    s3_bucket: str = ""
    s3_endpoint_url: str = ""  # an S3-compatible server's URL (empty: AWS)
    s3_region: str = ""
    # Seconds a task may wait for an endpoint that is not connected before it fails with code
    # endpoint_not_connected (0: never; see web_service/stale_tasks.py).
    waiting_expiry: float = 24 * 3600.0
    # Redis through Sentinel (web_service/redis_client.py): sentinels as "host:port,host:port"
    # (empty: redis_url directly), the primary's service name, the sentinels' own password.
    redis_sentinels: str = ""
    redis_sentinel_service: str = "fnserve"
    redis_sentinel_password: str = field(default="", repr=False)
    # Replicas that must hold an accepted task / a recorded result before it is acknowledged
    # (Redis WAIT; 0: do not wait), and how long to wait for them (ms).
    redis_replicas_ack: int = 0
    redis_wait_ms: int = 2000

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "Settings":
        """Settings from ``FNSERVE_*`` variables, defaults for the ones not set."""
        env = os.environ if environ is None else environ

        def get(name: str, default: str) -> str:
            return env.get(f"FNSERVE_{name}") or default

        d = cls(database_url=env.get("FNSERVE_DATABASE_URL") or default_database_url())
        max_payload = int(get("MAX_PAYLOAD_BYTES", str(d.max_payload_bytes)))
        # A request must at least fit one maximal payload in base64 plus the JSON around it.
        min_request = max_payload * 4 // 3 + MIB
        return cls(
            database_url=d.database_url,
            redis_url=get("REDIS_URL", d.redis_url),
            max_payload_bytes=max_payload,
            result_ttl=int(get("RESULT_TTL", str(d.result_ttl))),
            forwarder_address=get("FORWARDER_ADDRESS", d.forwarder_address),
            max_wait=float(get("MAX_WAIT", str(d.max_wait))),
            auth_mode=get("AUTH_MODE", d.auth_mode),
            max_batch=int(get("MAX_BATCH", str(d.max_batch))),
            max_request_bytes=max(int(get("MAX_REQUEST_BYTES", str(d.max_request_bytes))), min_request),
            cache_seconds=float(get("CACHE_SECONDS", str(d.cache_seconds))),
            migrate_on_start=get("MIGRATE_ON_START", "1").lower() not in ("0", "false", "no"),
            rate_limit=float(get("RATE_LIMIT", str(d.rate_limit))),
            rate_burst=float(get("RATE_BURST", str(d.rate_burst))),
            globus_client_id=get("GLOBUS_CLIENT_ID", ""),
            globus_client_secret=get("GLOBUS_CLIENT_SECRET", ""),
            globus_scope=get("GLOBUS_SCOPE", ""),
            globus_native_client_id=get("GLOBUS_NATIVE_CLIENT_ID", ""),
            forwarder_key_file=get("FORWARDER_KEY_FILE", str(fnserve_home() / "service" / "forwarder.key")),
            forwarder_curve=get("FORWARDER_CURVE", "1").lower() not in ("0", "false", "no"),
            max_waits_per_user=int(get("MAX_WAITS_PER_USER", str(d.max_waits_per_user))),
            max_open_waits=int(get("MAX_OPEN_WAITS", str(d.max_open_waits))),
            max_walltime=float(get("MAX_WALLTIME", str(d.max_walltime))),
            max_result_bytes=int(get("MAX_RESULT_BYTES", str(d.max_result_bytes))),
            anon_rate_limit=float(get("ANON_RATE_LIMIT", str(d.anon_rate_limit))),
            anon_rate_burst=float(get("ANON_RATE_BURST", str(d.anon_rate_burst))),
            proxy_hops=int(get("PROXY_HOPS", str(d.proxy_hops))),
            waiting_expiry=float(get("WAITING_EXPIRY", str(d.waiting_expiry))),
            access_log=get("ACCESS_LOG", "1").lower() not in ("0", "false", "no"),
            metrics_token=get("METRICS_TOKEN", ""),
            trigger_rate_limit=float(get("TRIGGER_RATE_LIMIT", str(d.trigger_rate_limit))),
            trigger_rate_burst=float(get("TRIGGER_RATE_BURST", str(d.trigger_rate_burst))),
            max_event_bytes=int(get("MAX_EVENT_BYTES", str(d.max_event_bytes))),
            public_url=get("PUBLIC_URL", "").rstrip("/"),
            objects_dir=get("OBJECTS_DIR", d.objects_dir),
            object_quota_bytes=int(get("OBJECT_QUOTA_BYTES", str(d.object_quota_bytes))),
            max_object_bytes=int(get("MAX_OBJECT_BYTES", str(d.max_object_bytes))),
            object_chunk_bytes=min(int(get("OBJECT_CHUNK_BYTES", str(d.object_chunk_bytes))), 48 * MIB),
            object_recycle_bytes=int(get("OBJECT_RECYCLE_BYTES", str(d.object_recycle_bytes))),
            object_ttl=float(get("OBJECT_TTL", str(d.object_ttl))),
            max_object_ttl=float(get("MAX_OBJECT_TTL", str(d.max_object_ttl))),
            data_key_file=get("DATA_KEY_FILE", d.data_key_file),
            object_backend=get("OBJECT_BACKEND", d.object_backend),
            s3_bucket=get("S3_BUCKET", ""),
            s3_endpoint_url=get("S3_ENDPOINT_URL", ""),
            s3_region=get("S3_REGION", ""),
            redis_sentinels=get("REDIS_SENTINELS", ""),
            redis_sentinel_service=get("REDIS_SENTINEL_SERVICE", d.redis_sentinel_service),
            redis_sentinel_password=get("REDIS_SENTINEL_PASSWORD", ""),
            redis_replicas_ack=int(get("REDIS_REPLICAS_ACK", str(d.redis_replicas_ack))),
            redis_wait_ms=int(get("REDIS_WAIT_MS", str(d.redis_wait_ms))),
        )
