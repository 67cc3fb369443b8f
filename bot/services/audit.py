"""Audit records: every admin action and every change to an escalation leaves one."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import String, and_, cast, func, or_, select
from sqlalchemy.orm import Session

from bot.store.models import AuditLog, Conversation, Escalation, Message, Patient, Schedule


def audit(
    session: Session,
    now: datetime,
    actor: str,
    action: str,
    subject_type: str,
    subject_id: object = None,
    **details: Any,
) -> None:
    session.add(
        AuditLog(
            at=now,
            actor=actor,
            action=action,
            subject_type=subject_type,
            subject_id=None if subject_id is None else str(subject_id),
            details=details,
        )
    )


# -- reading the audit log (CLI `checkin-bot audit`, the dashboard's Audit page) ------------
# Reading it is not itself audited: no read of the project is (transcripts, listings).

AUDIT_LIMIT = 50  # records listed unless told otherwise, newest first
DETAILS_CHARS = 160  # the short form of a record's details, at most


def about_patient(patient: Patient):
    """The condition for the records about `patient`: the patient row itself, what they did
    (actor patient:<id>), and their schedules, conversations, messages, red flags and number."""
    pid = patient.id
    return or_(
        and_(AuditLog.subject_type == "patient", AuditLog.subject_id == str(pid)),
        AuditLog.actor == f"patient:{pid}",
        and_(AuditLog.subject_type == "schedule", AuditLog.subject_id.in_(
            select(cast(Schedule.id, String)).where(Schedule.patient_id == pid))),
        and_(AuditLog.subject_type == "conversation", AuditLog.subject_id.in_(
            select(cast(Conversation.id, String)).where(Conversation.patient_id == pid))),
        and_(AuditLog.subject_type == "message", AuditLog.subject_id.in_(
            select(cast(Message.id, String)).where(Message.patient_id == pid))),
        and_(AuditLog.subject_type == "escalation", AuditLog.subject_id.in_(
            select(Escalation.ref).where(Escalation.patient_id == pid))),
        and_(AuditLog.subject_type == "number", AuditLog.subject_id == patient.phone),
    )


def audit_records(session: Session, *, patient: Patient | None = None, actor: str | None = None,
                  action: str | None = None, since: datetime | None = None,
                  limit: int = AUDIT_LIMIT) -> list[AuditLog]:
    """Audit records, newest first: about `patient`; by `actor` (the whole actor, "cli:jo",
    or the name after its kind, "jo", whatever the case); whose action starts with `action`
    ("schedule." or "schedule.add"); at or after `since`."""
    query = select(AuditLog)
    if patient is not None:
        query = query.where(about_patient(patient))
    if actor:
        who = actor.strip().lower()
        query = query.where(or_(func.lower(AuditLog.actor) == who,
                                func.lower(AuditLog.actor).endswith(":" + who, autoescape=True)))
    if action:
        query = query.where(AuditLog.action.startswith(action.strip(), autoescape=True))
    if since is not None:
        query = query.where(AuditLog.at >= since)
    return list(session.scalars(query.order_by(AuditLog.at.desc(), AuditLog.id.desc())
                                .limit(limit)))


def _digits(value: object) -> int | None:
    return int(value) if isinstance(value, int) or (
        isinstance(value, str) and value.isdigit() and len(value) < 12) else None


def patient_of(session: Session, row: AuditLog) -> Patient | None:
    """The patient a record is about, if any (None for staff, sign-ins, numbers not enrolled)."""
    kind, subject = row.subject_type, row.subject_id
    pid = None
    if kind == "patient":
        pid = _digits(subject)
    elif _digits((row.details or {}).get("patient_id")) is not None:
        pid = _digits(row.details["patient_id"])
    elif kind == "escalation" and subject:
        pid = session.scalar(select(Escalation.patient_id).where(Escalation.ref == subject))
    elif kind == "number" and subject:
        return session.scalars(select(Patient).where(Patient.phone == subject)).first()
    elif kind in ("schedule", "conversation", "message") and _digits(subject) is not None:
        model = {"schedule": Schedule, "conversation": Conversation, "message": Message}[kind]
        pid = session.scalar(select(model.patient_id).where(model.id == _digits(subject)))
    if pid is None and row.actor.startswith("patient:"):
        pid = _digits(row.actor.removeprefix("patient:"))
    return session.get(Patient, pid) if pid is not None else None


def describe(row: AuditLog, phone: Callable[[str], str] = str) -> str:
    """A record's subject and details in short: "schedule 4: flow checkin, at 10:00",
    "patient 3: name Ada -> Ada L". Phone numbers go through `phone` (the dashboard groups
    them to read); a long one ends in "...". Only what the record holds."""
    subject = row.subject_type
    if row.subject_id is not None:
        shown = phone(row.subject_id) if subject == "number" else row.subject_id
        subject = f"{subject} {shown}"
    # The patient is shown beside it (patient_of): their id would say it twice.
    parts = [_part(key, value, phone) for key, value in (row.details or {}).items()
             if key != "patient_id"]
    text = subject + (": " + ", ".join(parts) if parts else "")
    return text if len(text) <= DETAILS_CHARS else text[:DETAILS_CHARS - 3] + "..."


def _is_change(value: object) -> bool:
    return isinstance(value, dict) and bool(value) and set(value) <= {"from", "to"}


def _part(key: str, value: object, phone: Callable[[str], str]) -> str:
    """One detail: "status active -> paused"; changes={"name": {...}} as its changes."""
    if _is_change(value):
        old, new = value.get("from"), value.get("to")
        if key == "phone":
            old, new = (phone(v) if isinstance(v, str) else v for v in (old, new))
        return f"{key} {_short(old)} -> {_short(new)}"
    if isinstance(value, dict) and value and all(_is_change(v) for v in value.values()):
        return ", ".join(_part(k, v, phone) for k, v in value.items())
    return f"{key} {_short(value)}"


def _short(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_short(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} {_short(v)}" for k, v in value.items()) + "}"
    return str(value)
