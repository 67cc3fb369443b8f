"""SQLAlchemy 2.0 typed models. Times are stored in UTC."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy import (
    true as sa_true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator):
    """Aware datetimes in, aware UTC datetimes out, on SQLite (which keeps no zone) and PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use aware UTC times")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON}


class Patient(Base):
    __tablename__ = "patients"

    id: Mapped[int] = mapped_column(primary_key=True)
    phone: Mapped[str] = mapped_column(String(20), unique=True)
    channel: Mapped[str] = mapped_column(String(10))  # sms | whatsapp
    name: Mapped[str] = mapped_column(String(80))
    timezone: Mapped[str] = mapped_column(String(64))
    language: Mapped[str] = mapped_column(String(8))
    # active | paused | opted_out | discharged
    status: Mapped[str] = mapped_column(String(12), default="active")
    consent_at: Mapped[datetime | None]
    # When the coordinator ended the patient's check-ins (patients.discharge_patient); kept
    # while they are opted out, cleared at re-admission.
    discharged_at: Mapped[datetime | None]
    number_invalid_at: Mapped[datetime | None]
    last_inbound_at: Mapped[datetime | None]
    created_at: Mapped[datetime]

    conversations: Mapped[list[Conversation]] = relationship(back_populates="patient")


class Conversation(Base):
    __tablename__ = "conversations"
    __table_args__ = (Index("ix_conversations_due", "status", "wait_deadline"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    flow_id: Mapped[str] = mapped_column(String(64))
    flow_revision: Mapped[int]
    current_node: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[dict[str, Any]]
    # active | waiting | completed | interrupted | expired
    status: Mapped[str] = mapped_column(String(12))
    started_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    wait_deadline: Mapped[datetime | None]

    patient: Mapped[Patient] = relationship(back_populates="conversations")


class FlowRevision(Base):
    """Every flow revision a conversation ever ran on, so it can finish on the one it started."""

    __tablename__ = "flow_revisions"
    __table_args__ = (UniqueConstraint("flow_id", "revision"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    flow_id: Mapped[str] = mapped_column(String(64))
    revision: Mapped[int]
    definition: Mapped[dict[str, Any]]
    loaded_at: Mapped[datetime]


# Patients' messages the bot could not handle, until a person has read them (a partial index:
# a handful of rows, found without scanning every message).
# The tables' INTEGER keys (32-bit on PostgreSQL): a larger id cannot exist, and the drivers
# refuse to compare with one (PostgreSQL: integer out of range; SQLite: beyond 64 bits).
MAX_ID = 2**31 - 1

UNPROCESSED = text("status = 'unprocessed'")
# A patient's free text the bot passed on to the team ("saved for your care team"), unread.
TO_READ = text("status = 'to_read'")


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        Index("ix_messages_address_created", "address", "created_at"),
        Index("ix_messages_unprocessed", "id", sqlite_where=UNPROCESSED,
              postgresql_where=UNPROCESSED),
        Index("ix_messages_to_read", "id", sqlite_where=TO_READ, postgresql_where=TO_READ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id"), index=True)
    conversation_id: Mapped[int | None] = mapped_column(ForeignKey("conversations.id"))
    direction: Mapped[str] = mapped_column(String(3))  # in | out
    channel: Mapped[str] = mapped_column(String(10))
    address: Mapped[str] = mapped_column(String(20))  # the other party's E.164 number
    body: Mapped[str | None] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(20), default="reply")
    # inbound MessageSid / outbound SID: unique, so a retried webhook is stored once
    provider_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    # in: received; out: queued|sending|sent|delivered|read|undelivered|failed|cancelled
    status: Mapped[str] = mapped_column(String(24))
    segments: Mapped[int | None]
    error_code: Mapped[int | None]
    # in: photos, voice notes... as Twilio sent them: [{"url": ..., "content_type": ...}]
    media: Mapped[list[dict[str, str]] | None] = mapped_column(JSON)
    # out: the escalation a care-team alert belongs to (a failed alert moves the chain on)
    escalation_id: Mapped[int | None] = mapped_column(ForeignKey("escalations.id"))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Answer(Base):
    __tablename__ = "answers"

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id"), index=True)
    question_key: Mapped[str] = mapped_column(String(64))
    value: Mapped[Any] = mapped_column(JSON)
    created_at: Mapped[datetime]


class OutboxItem(Base):
    """A message the bot decided to send, written in the transaction that decided it."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id"), unique=True)
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id"))
    to: Mapped[str] = mapped_column(String(20))
    channel: Mapped[str] = mapped_column(String(10))
    kind: Mapped[str] = mapped_column(String(20))
    # lower sends first: 0 emergency/alert, 1 reply, 5 routine
    priority: Mapped[int] = mapped_column(Integer, default=5)
    routine: Mapped[bool] = mapped_column(default=False)  # withheld from opted-out patients
    status: Mapped[str] = mapped_column(String(10))  # pending|sending|sent|failed|cancelled
    # None: as decided at send time; "template": WhatsApp template (after 63016)
    variant: Mapped[str | None] = mapped_column(String(12))
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime]
    claimed_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]

    message: Mapped[Message] = relationship()


class StatusEvent(Base):
    """One delivery status callback, stored once per (MessageSid, MessageStatus)."""

    __tablename__ = "status_events"
    __table_args__ = (
        UniqueConstraint("provider_id", "status"),
        # The scheduler looks for callbacks that came before their message's SID was recorded.
        Index("ix_status_events_waiting", "applied", "received_at"),
        # Before sending a row again, the dispatcher asks whether Twilio reported taking an
        # earlier attempt of it (a send whose answer we never read).
        Index("ix_status_events_outbox_ref", "outbox_ref"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    provider_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(24))
    error_code: Mapped[int | None]
    received_at: Mapped[datetime]
    # The outbox row and route named in the callback's URL (each send asks for
    # ?outbox=<id>&via=<sms|whatsapp|template>), as "<id>:<via>": a callback about a WhatsApp
    # attempt never speaks for the same row sent again by SMS. No foreign key: a callback
    # naming a row that is gone is still stored.
    outbox_ref: Mapped[str | None] = mapped_column(String(32))
    # False while no stored message carries this SID yet (the callback beat the dispatcher).
    applied: Mapped[bool] = mapped_column(default=True, server_default=sa_true())


class Schedule(Base):
    """A recurring flow for one patient (weekly check-in, reminders)."""

    __tablename__ = "schedules"
    __table_args__ = (Index("ix_schedules_due", "active", "next_due_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    flow_id: Mapped[str] = mapped_column(String(64))
    every_days: Mapped[int] = mapped_column(default=7)
    local_time: Mapped[str] = mapped_column(String(5))  # HH:MM in the patient's zone
    params: Mapped[dict[str, Any]]
    active: Mapped[bool] = mapped_column(default=True)
    next_due_at: Mapped[datetime]
    last_run_at: Mapped[datetime | None]


class Escalation(Base):
    __tablename__ = "escalations"
    __table_args__ = (Index("ix_escalations_due", "status", "next_alert_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    ref: Mapped[str] = mapped_column(String(12), unique=True)
    # None when the red flag came from a number that is not enrolled (a carer, a new phone):
    # then `phone` is that number.
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id"), index=True)
    phone: Mapped[str | None] = mapped_column(String(32), index=True)
    level: Mapped[str] = mapped_column(String(10))  # emergency | urgent
    flags: Mapped[list[str]] = mapped_column(JSON)
    words: Mapped[str | None] = mapped_column(Text)  # the patient's own words
    status: Mapped[str] = mapped_column(String(14))  # open | acknowledged | resolved
    chain_position: Mapped[int] = mapped_column(default=0)
    alerts_sent: Mapped[int] = mapped_column(default=0)
    next_alert_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    acknowledged_by: Mapped[str | None] = mapped_column(String(80))
    acknowledged_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    resolution_note: Mapped[str | None] = mapped_column(Text)

    patient: Mapped[Patient] = relationship()


class AuditLog(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(index=True)
    # "system", "cli:<user>", "user:<username>", "dashboard:<claimed name>", ...
    actor: Mapped[str] = mapped_column(String(80))
    action: Mapped[str] = mapped_column(String(40))
    subject_type: Mapped[str] = mapped_column(String(20))
    subject_id: Mapped[str | None] = mapped_column(String(40))
    details: Mapped[dict[str, Any]]


class DashboardSession(Base):
    """A signed-in dashboard session. The cookie carries a random id; this row, keyed by the
    id's SHA-256 (a copy of the table opens no session), says whether it still holds: signing
    out ends it at once, and it lasts a fixed time from sign-in however busy it is."""

    __tablename__ = "dashboard_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(80))
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    # The staff account signed in (None: a session of the shared admin token, or of the dev
    # messenger's open dashboard, with a claimed name).
    staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"), index=True)
    # The patients page's search (a patient's name or number) while this session keeps it:
    # here, not in a URL (history, access logs) nor in the cookie. Cleared on sign-out.
    search: Mapped[str | None] = mapped_column(String(80))


class Staff(Base):
    """A coordinator's own dashboard account (`checkin-bot staff ...`). While at least one is
    active, the dashboard asks for a username and password instead of the shared token."""

    __tablename__ = "staff"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(32), unique=True)
    display_name: Mapped[str] = mapped_column(String(80))
    password_hash: Mapped[str] = mapped_column(String(255))  # werkzeug.security's format
    active: Mapped[bool] = mapped_column(default=True, server_default=sa_true())
    created_at: Mapped[datetime]
    last_login_at: Mapped[datetime | None]


class StaffToken(Base):
    """A staff account's own API token (`checkin-bot staff token add`). Only the SHA-256 of the
    token is kept (it is random, so a copy of the table opens nothing); the API records its
    holder as "user:<username>". It works while not revoked and while the account is active."""

    __tablename__ = "staff_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str | None] = mapped_column(String(60))
    created_at: Mapped[datetime]
    last_used_at: Mapped[datetime | None]  # written at most once a minute
    revoked_at: Mapped[datetime | None]


class Heartbeat(Base):
    """When each background component last finished a round of its work (read by /healthz)."""

    __tablename__ = "heartbeats"

    component: Mapped[str] = mapped_column(String(40), primary_key=True)  # "scheduler"
    beat_at: Mapped[datetime]
    host: Mapped[str] = mapped_column(String(80))
    pid: Mapped[int]
    problem: Mapped[str | None] = mapped_column(String(200))  # e.g. "failed: timeouts"
