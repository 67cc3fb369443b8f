"""Recurring flows per patient (weekly check-in, reminders) set by coordinators."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from bot.domain.schedule import next_occurrence, parse_hhmm
from bot.services import conversations
from bot.services.audit import audit
from bot.services.context import ServiceContext
from bot.services.patients import InvalidField
from bot.store.claims import claim_due
from bot.store.models import Patient, Schedule


def add_schedule(session: Session, ctx: ServiceContext, patient: Patient, flow_id: str,
                 local_time: str, every_days: int, now: datetime, actor: str,
                 params: dict[str, Any] | None = None) -> Schedule:
    """Schedule `flow_id` for the patient every `every_days` at `local_time` in their zone."""
    if flow_id not in ctx.flows:
        raise InvalidField("flow", f"unknown flow {flow_id!r}")
    try:
        parse_hhmm(local_time)
    except ValueError:
        raise InvalidField("at", f"expected HH:MM, got {local_time!r}") from None
    if not 1 <= every_days <= 366:
        raise InvalidField("every_days", "must be 1 to 366")
    sched = Schedule(
        patient_id=patient.id, flow_id=flow_id, every_days=every_days, local_time=local_time,
        params=params or {}, active=True,
        next_due_at=next_occurrence(now, patient.timezone, local_time, every_days),
    )
    session.add(sched)
    session.flush()
    audit(session, now, actor, "schedule.add", "schedule", sched.id, patient_id=patient.id,
          flow=flow_id, at=local_time, every_days=every_days)
    return sched


def run_due_schedules(session: Session, ctx: ServiceContext, now: datetime,
                      limit: int = 200) -> list[int]:
    """Start every due scheduled flow once, and move each schedule to its next time."""
    due = claim_due(session, Schedule, Schedule.active.is_(True), Schedule.next_due_at <= now,
                    order_by=Schedule.next_due_at, limit=limit)
    ids: list[int] = []
    for sched in due:
        patient = session.get(Patient, sched.patient_id)
        # After downtime, catch up once rather than once per missed occurrence.
        sched.last_run_at = now
        sched.next_due_at = next_occurrence(now, patient.timezone, sched.local_time,
                                            sched.every_days, last=sched.next_due_at)
        reason = _skip_reason(session, patient)
        if reason:
            audit(session, now, "system", "schedule.skip", "schedule", sched.id, reason=reason)
            continue
        ids += conversations.start_flow(session, ctx, patient, sched.flow_id, now,
                                        routine=True, params=sched.params)
    return ids


def _skip_reason(session: Session, patient: Patient) -> str | None:
    if patient.status != "active":
        return f"patient {patient.status}"
    if patient.consent_at is None:
        return "no consent yet"
    if patient.number_invalid_at is not None:
        return "number invalid"
    if conversations.active_conversation(session, patient.id) is not None:
        return "a conversation is still open"
    return None
