"""Delivery status callbacks: stored once per (sid, status); a message's status never goes back."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from bot.config import Settings
from bot.services.audit import audit
from bot.services.context import ServiceContext
from bot.services.outbox import Draft, enqueue
from bot.store.db import lock_keys
from bot.store.models import Message, OutboxItem, Patient, StatusEvent
from bot.store.statuses import advance_status

FAILED = ("failed", "undelivered")


def _insert_once(session: Session, sid: str, status: str, code: int | None, now: datetime) -> bool:
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    stmt = (insert(StatusEvent)
            .values(provider_id=sid, status=status, error_code=code, received_at=now)
            .on_conflict_do_nothing(index_elements=["provider_id", "status"])
            .returning(StatusEvent.id))
    return session.execute(stmt).scalar() is not None


def record_status(session: Session, ctx: ServiceContext, sid: str, status: str,
                  code: int | None, now: datetime) -> list[int]:
    """Apply one callback. Returns outbox ids of any SMS fallback it queued."""
    # Taken by the dispatcher too when it records a SID: a callback racing that record waits
    # for it (then finds the message), or goes first (then the dispatcher finds the event).
    lock_keys(session, [sid])
    if not _insert_once(session, sid, status, code, now):
        return []
    message = session.scalars(select(Message).where(Message.provider_id == sid)).first()
    if message is None:
        return []  # the dispatcher applies it when it records the SID
    before = message.status
    message.status = advance_status(message.status, status)
    message.updated_at = now
    if code:
        message.error_code = code
    if status not in FAILED or before in FAILED:
        return []
    return after_failure(session, ctx.settings, message, status, code, now)


def after_failure(session: Session, settings: Settings, message: Message, status: str,
                  code: int | None, now: datetime) -> list[int]:
    """What a failed delivery sets off: opt-out on 21610, an audit record, the SMS fallback
    for WhatsApp. Runs once per message, whether the callback came before or after the
    dispatcher recorded the SID. Returns outbox ids of any SMS fallback it queued."""
    patient = session.get(Patient, message.patient_id) if message.patient_id else None
    if code == 21610 and patient is not None and patient.status != "opted_out":
        patient.status = "opted_out"
        audit(session, now, "system", "patient.opted_out", "patient", patient.id,
              source="carrier", code=code)
    audit(session, now, "system", "message.undelivered", "message", message.id,
          status=status, code=code)
    if (message.channel == "whatsapp" and settings.twilio.sms_fallback_for_whatsapp
            and patient is not None and patient.status != "opted_out" and message.body):
        item = session.scalars(select(OutboxItem).where(
            OutboxItem.message_id == message.id)).first()
        fallback = enqueue(session, Draft(
            to=message.address, channel="sms", body=message.body, kind=message.kind,
            priority=item.priority if item else 1, routine=item.routine if item else False,
            patient_id=patient.id, conversation_id=message.conversation_id), now)
        return [fallback.id]
    return []
