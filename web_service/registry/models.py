"""SQLAlchemy models of the registry.

Ids are uuid4 strings (portable between SQLite and PostgreSQL). Secrets are stored only as
sha256 hex digests. Functions and endpoints are soft-deleted (``deleted_at``) so that tasks and
logs that name them stay explainable. The schema itself is created by the Alembic migrations in
``web_service/migrations``; a test checks that they match these models.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

from sqlalchemy import Boolean, DateTime, Float, ForeignKey, Index, Integer, LargeBinary, MetaData, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    # The same constraint names as the hand-written migrations, so the two can be compared.
    metadata = MetaData(naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s",
    })


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    username: Mapped[str] = mapped_column(String(255), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Globus Auth identity id ("sub") of users created on first sight in globus mode.
    globus_sub: Mapped[str | None] = mapped_column(String(64), index=True, unique=True)
    # Set by the operator (`fnserve service user disable|delete`): the user's tokens stop working
    # within the token cache time. A deleted user stays as a disabled row (usage history names it).
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Operators see the service-wide Operators page of the dashboard (python -m web_service.admin set-operator).
    is_operator: Mapped[bool] = mapped_column(Boolean, default=False)


class Token(Base):
    __tablename__ = "tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex of the token
    label: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Function(Base):
    __tablename__ = "functions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text, default="")
    strategy: Mapped[str] = mapped_column(String(32))  # from the buffer's header
    python: Mapped[str] = mapped_column(String(16))  # Python version that made the buffer
    body: Mapped[bytes] = mapped_column(LargeBinary)  # the whole buffer, header included
    body_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Runtime its tasks run in when a task names none (see Runtime); None: the endpoint's default.
    runtime_id: Mapped[str | None] = mapped_column(String(36))


class Runtime(Base):
    """A named environment functions run in: a container image or a Python interpreter.

    The ``name`` is what travels to the endpoint (``TaskMessage.runtime``): an endpoint runs a
    runtime its site admin configured under that name (the site decides where the image lives
    locally; ``image`` here tells users and admins what it is and where to get it).
    """

    __tablename__ = "runtimes"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    type: Mapped[str] = mapped_column(String(32))  # host, venv, apptainer, singularity, podman, docker, charliecloud
    image: Mapped[str] = mapped_column(Text, default="")  # image location, or the interpreter's path for venv
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Endpoint(Base):
    __tablename__ = "endpoints"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text, default="")
    secret_hash: Mapped[str] = mapped_column(String(64))  # sha256 hex of the endpoint secret
    # Z85 CurveZMQ public key the site manager must connect with (its secret key is not kept).
    curve_public_key: Mapped[str | None] = mapped_column(String(40), index=True, unique=True)
    # When true, only functions in endpoint_allowed_functions may run here (even for the owner).
    restrict_functions: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Group(Base):
    """A named set of users that resources can be shared with; managed by its owner."""

    __tablename__ = "groups"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class GroupMember(Base):
    __tablename__ = "group_members"

    group_id: Mapped[str] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True)


class Grant(Base):
    """Who besides the owner may use a resource: one row per (resource, grantee).

    Generic over ``resource_type`` ("function", "endpoint", "runtime", ...), so a new kind of
    resource gets sharing without a new table. ``grantee_type`` is "user", "group" or "public"
    (then ``grantee_id`` is "*").
    """

    __tablename__ = "grants"
    __table_args__ = (
        UniqueConstraint("resource_type", "resource_id", "grantee_type", "grantee_id", name="uq_grants_resource"),
        Index("ix_grants_resource", "resource_type", "resource_id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    resource_type: Mapped[str] = mapped_column(String(32))
    resource_id: Mapped[str] = mapped_column(String(64))
    grantee_type: Mapped[str] = mapped_column(String(16))
    grantee_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class EndpointAllowedFunction(Base):
    """The allowlist of a restricted endpoint."""

    __tablename__ = "endpoint_allowed_functions"

    endpoint_id: Mapped[str] = mapped_column(ForeignKey("endpoints.id", ondelete="CASCADE"), primary_key=True)
    function_id: Mapped[str] = mapped_column(String(36), primary_key=True)


class Quota(Base):
    """Per-user limits set by the operator; a null limit means none."""

    __tablename__ = "quotas"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    period: Mapped[str] = mapped_column(String(16))  # hour | day | week | month (UTC, calendar-aligned)
    max_tasks: Mapped[int | None] = mapped_column(Integer)
    max_core_hours: Mapped[float | None] = mapped_column(Float)


class Usage(Base):
    """One finished task, for accounting (written by the forwarder's usage writer)."""

    __tablename__ = "usage"
    __table_args__ = (
        Index("ix_usage_user_id_finished_at", "user_id", "finished_at"),
        Index("ix_usage_endpoint_id_finished_at", "endpoint_id", "finished_at"),
        Index("ix_usage_finished_at", "finished_at"),  # service-wide error rates (Operators page)
    )

    task_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(36))
    function_id: Mapped[str] = mapped_column(String(64))
    endpoint_id: Mapped[str] = mapped_column(String(64))
    runtime: Mapped[str | None] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(16))
    wall_time: Mapped[float] = mapped_column(Float, default=0.0)  # seconds
    cpu_time: Mapped[float] = mapped_column(Float, default=0.0)  # seconds (user + system)
    max_rss_kb: Mapped[float] = mapped_column(Float, default=0.0)
    submitted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Trigger(Base):
    """Something that happens (a schedule comes due, a webhook is called) and fires its rules.

    ``config`` is the kind's settings as JSON text (validated by web_service.triggers.config).
    A webhook trigger's ``secret`` is kept as is: checking an HMAC signature needs the key
    itself (it is shown to the owner once, never returned again and never logged).
    ``last_scheduled_at``: the latest schedule time already turned into an event.
    """

    __tablename__ = "triggers"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(16))  # schedule | webhook
    config: Mapped[str] = mapped_column(Text, default="{}")
    secret: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_scheduled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class TriggerRule(Base):
    """Binds a trigger to a function on an endpoint: filters on the event, an argument template,
    and at most ``max_concurrency`` of its tasks unfinished at once (None: no limit).
    ``owner_id``: who bound it (the trigger's owner, or a user it is shared with); its tasks
    run as that user. None on rules made before triggers could be shared: the trigger's owner."""

    __tablename__ = "trigger_rules"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    trigger_id: Mapped[str] = mapped_column(ForeignKey("triggers.id", ondelete="CASCADE"), index=True)
    owner_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"), index=True)
    function_id: Mapped[str] = mapped_column(String(36))
    endpoint_id: Mapped[str] = mapped_column(String(36))
    args_template: Mapped[str] = mapped_column(Text)  # JSON: {"args": [...], "kwargs": {...}}
    filters: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of {field, op, value}
    max_concurrency: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class TriggerEvent(Base):
    """One event of a trigger, recorded before any task is made. ``event_key`` makes it happen
    once: the schedule time, the sender's event id, or the delivery's signature."""

    __tablename__ = "trigger_events"
    __table_args__ = (
        UniqueConstraint("trigger_id", "event_key", name="uq_trigger_events_key"),
        Index("ix_trigger_events_trigger_id_received_at", "trigger_id", "received_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    trigger_id: Mapped[str] = mapped_column(ForeignKey("triggers.id", ondelete="CASCADE"))
    event_key: Mapped[str] = mapped_column(String(200))
    data: Mapped[str] = mapped_column(Text)  # the event as JSON text
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class TriggerFiring(Base):
    """One rule fired by one event: the task it made (its id is fixed when the row is written,
    so submitting it again after a crash finds the task there and makes no second one).

    ``state``: pending (recorded, not yet in the task store), submitted, done (finished; tracked
    for rules with a concurrency limit), refused (with ``error_code`` / ``error_message``)."""

    __tablename__ = "trigger_firings"
    __table_args__ = (Index("ix_trigger_firings_state_created_at", "state", "created_at"),)

    event_id: Mapped[str] = mapped_column(ForeignKey("trigger_events.id", ondelete="CASCADE"), primary_key=True)
    rule_id: Mapped[str] = mapped_column(String(36), primary_key=True, index=True)
    task_id: Mapped[str] = mapped_column(String(36), unique=True)
    state: Mapped[str] = mapped_column(String(16))
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
