"""Recurring flows per patient (weekly check-in, reminders) set by coordinators.

One schedule per patient and flow: adding a check-in schedule for a patient who already has
an active one replaces it (a change of time or frequency, audited as `schedule.change`).
Flows that take a text of their own (`reminder`) may have several schedules, one per text and
time: the morning and the evening tablets are two reminders; adding the same text at the same
time again replaces that one.

When a schedule falls due and the patient still has a conversation open:

* the patient is in the middle of it (replied, or was sent its last message, within the last
  30 minutes; or its last message is still waiting to go out, for instance held by quiet
  hours): this occurrence is deferred by 30 minutes (`schedule.defer`), and the schedule keeps
  its rhythm afterwards;
* otherwise the open conversation is waiting for a reply that has not come: it is closed as
  `superseded` (audited) and the due flow starts.

So nothing scheduled is silently dropped. Each due schedule runs in its own savepoint: one that
fails (say, its flow is no longer in the library) is audited, logged and moved on, and the
others still run.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from bot.domain import gsm7
from bot.domain.flow_lint import VARIABLE
from bot.domain.schedule import (
    in_quiet_hours,
    next_occurrence,
    parse_hhmm,
    previous_occurrence,
    quiet_hours_end,
    time_in_quiet_hours,
)
from bot.services import conversations
from bot.services.audit import audit
from bot.services.context import ServiceContext
from bot.services.patients import InvalidField
from bot.store.claims import claim_due
from bot.store.models import Conversation, Message, OutboxItem, Patient, Schedule

log = logging.getLogger(__name__)

# A patient who replied (or was sent a message) this recently is in the middle of a
# conversation: a due schedule waits this long rather than interrupting.
ACTIVE_WINDOW = timedelta(minutes=30)
DEFER_BY = timedelta(minutes=30)
UNSENT = ("pending", "sending")
_HHMM = re.compile(r"^\d{1,2}:\d{2}$")


@dataclass
class ScheduleResult:
    """What add/replace did: the schedule, what it replaced (or None), warnings to show."""

    schedule: Schedule
    replaced: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)


def _check_time(local_time: Any) -> str:
    if not isinstance(local_time, str) or not _HHMM.match(local_time.strip()):
        raise InvalidField("at", f"expected HH:MM, got {local_time!r}")
    try:
        t = parse_hhmm(local_time.strip())
    except ValueError:
        raise InvalidField("at", f"expected HH:MM, got {local_time!r}") from None
    return f"{t.hour:02d}:{t.minute:02d}"


def _flow_params(ctx: ServiceContext, patient: Patient, flow_id: str,
                 params: dict[str, Any] | None) -> dict[str, str]:
    """The values the flow's texts need beyond the patient's own, checked against
    flows/variables.yaml (required, plain GSM-7, at most max_length)."""
    flow = ctx.flows.get(flow_id)
    used = set(VARIABLE.findall(flow.to_json()))
    needed = sorted(used - set(ctx.patient_values(patient)))
    given = dict(params or {})
    for key in given:
        if key not in needed:
            raise InvalidField(key, f"the {flow_id} flow does not use {key}")
    out: dict[str, str] = {}
    for key in needed:
        value = given.get(key)
        if not isinstance(value, str) or not value.strip():
            raise InvalidField(key, f"required for the {flow_id} flow")
        text = gsm7.to_gsm7(" ".join(value.split()))
        variable = ctx.flows.variables.get(key)
        limit = variable.max_length if variable is not None else None
        if limit is not None and len(text) > limit:
            raise InvalidField(key, f"at most {limit} characters, got {len(text)}")
        out[key] = text
    return out


def _same_schedule(sched: Schedule, params: dict[str, str], local_time: str) -> bool:
    """Whether an active schedule of the same flow is the one being set again."""
    if not params:
        return True  # one check-in schedule per patient
    return (sched.params or {}) == params and sched.local_time == local_time


def _describe(sched: Schedule) -> dict[str, Any]:
    return {"at": sched.local_time, "every_days": sched.every_days,
            "params": dict(sched.params or {})}


def quiet_hours_warning(ctx: ServiceContext, local_time: str) -> str | None:
    q = ctx.settings.quiet_hours
    if time_in_quiet_hours(local_time, q.start, q.end):
        return (f"{local_time} is inside quiet hours ({q.start} to {q.end}): the messages "
                f"will wait until {q.end} in the patient's zone")
    return None


def save_schedule(session: Session, ctx: ServiceContext, patient: Patient, flow_id: str,
                  local_time: str, every_days: int, now: datetime, actor: str,
                  params: dict[str, Any] | None = None) -> ScheduleResult:
    """Schedule `flow_id` for the patient every `every_days` at `local_time` in their zone,
    replacing the patient's active schedule of that flow (see the module docstring)."""
    if not isinstance(flow_id, str) or flow_id not in ctx.flows:
        raise InvalidField("flow", f"unknown flow {flow_id!r}")
    if flow_id == conversations.CONSENT_FLOW:
        raise InvalidField("flow", "the welcome (consent) flow is sent at enrolment and "
                                   "cannot be scheduled")
    local_time = _check_time(local_time)
    if isinstance(every_days, bool) or not isinstance(every_days, int) \
            or not 1 <= every_days <= 366:
        raise InvalidField("every_days", "must be a whole number from 1 to 366")
    clean = _flow_params(ctx, patient, flow_id, params)
    warnings = [w for w in [quiet_hours_warning(ctx, local_time)] if w]
    next_due = next_occurrence(now, patient.timezone, local_time, every_days)
    existing = [s for s in session.scalars(select(Schedule).where(
        Schedule.patient_id == patient.id, Schedule.flow_id == flow_id,
        Schedule.active.is_(True)).order_by(Schedule.id)) if _same_schedule(s, clean, local_time)]
    if existing:
        sched, *extra = existing
        before = _describe(sched)
        sched.local_time, sched.every_days, sched.params = local_time, every_days, clean
        sched.next_due_at = next_due
        audit(session, now, actor, "schedule.change", "schedule", sched.id,
              patient_id=patient.id, flow=flow_id, before=before, after=_describe(sched))
        for dup in extra:  # duplicates from before this rule: keep one
            dup.active = False
            audit(session, now, actor, "schedule.remove", "schedule", dup.id,
                  patient_id=patient.id, flow=flow_id, reason=f"replaced by schedule {sched.id}")
        session.flush()
        return ScheduleResult(sched, replaced=before, warnings=warnings)
    sched = Schedule(
        patient_id=patient.id, flow_id=flow_id, every_days=every_days, local_time=local_time,
        params=clean, active=True, next_due_at=next_due,
    )
    session.add(sched)
    session.flush()
    audit(session, now, actor, "schedule.add", "schedule", sched.id, patient_id=patient.id,
          flow=flow_id, at=local_time, every_days=every_days)
    return ScheduleResult(sched, warnings=warnings)


def add_schedule(session: Session, ctx: ServiceContext, patient: Patient, flow_id: str,
                 local_time: str, every_days: int, now: datetime, actor: str,
                 params: dict[str, Any] | None = None) -> Schedule:
    """save_schedule, returning only the schedule."""
    return save_schedule(session, ctx, patient, flow_id, local_time, every_days, now, actor,
                         params).schedule


class ScheduleNotFound(LookupError):
    pass


def list_schedules(session: Session, patient_id: int | None = None,
                   include_inactive: bool = False) -> list[Schedule]:
    q = select(Schedule).order_by(Schedule.patient_id, Schedule.id)
    if patient_id is not None:
        q = q.where(Schedule.patient_id == patient_id)
    if not include_inactive:
        q = q.where(Schedule.active.is_(True))
    return list(session.scalars(q))


def remove_schedule(session: Session, schedule_id: int, now: datetime, actor: str) -> Schedule:
    """Stop a schedule (kept, inactive, for the record). Raises ScheduleNotFound."""
    sched = session.get(Schedule, schedule_id)
    if sched is None or not sched.active:
        raise ScheduleNotFound(schedule_id)
    sched.active = False
    audit(session, now, actor, "schedule.remove", "schedule", sched.id,
          patient_id=sched.patient_id, flow=sched.flow_id)
    return sched


# -- running due schedules -------------------------------------------------------------------


def run_due_schedules(session: Session, ctx: ServiceContext, now: datetime,
                      limit: int = 200) -> list[int]:
    """Start every due scheduled flow once, and move each schedule to its next time.

    Each schedule runs in its own savepoint: one that fails is audited, logged and moved on
    (deactivated if its flow is gone), and the others still run.
    """
    due = claim_due(session, Schedule, Schedule.active.is_(True), Schedule.next_due_at <= now,
                    order_by=Schedule.next_due_at, limit=limit)
    ids: list[int] = []
    for sched in due:
        sched_id, flow_id, due_at = sched.id, sched.flow_id, sched.next_due_at
        written = set(session.info.get("outbox", {}))
        try:
            with session.begin_nested():
                started = _run_one(session, ctx, sched, now)
        except Exception as exc:
            _forget_rolled_back(session, written)
            _after_failure(session, ctx, sched_id, flow_id, due_at, now, exc)
            continue
        ids += started
    return ids


def _run_one(session: Session, ctx: ServiceContext, sched: Schedule, now: datetime) -> list[int]:
    # Locked as the web path locks it: a patient texting CHECKIN as the scheduled check-in
    # falls due gets one check-in, not two.
    patient = session.get(Patient, sched.patient_id, with_for_update=True)
    reason = _skip_reason(patient)
    if reason:
        _advance(sched, patient, now)
        audit(session, now, "system", "schedule.skip", "schedule", sched.id, reason=reason)
        return []
    conv = conversations.active_conversation(session, patient.id)
    if conv is not None:
        busy_until = _busy_until(session, ctx, patient, conv, now)
        if busy_until is not None:
            regular = _next_regular(sched, patient, now)
            if busy_until >= regular:
                _advance(sched, patient, now)
                audit(session, now, "system", "schedule.skip", "schedule", sched.id,
                      reason="the patient was still in a conversation at the next occurrence")
                return []
            sched.next_due_at = busy_until
            audit(session, now, "system", "schedule.defer", "schedule", sched.id,
                  until=busy_until.isoformat(), conversation_id=conv.id,
                  reason="the patient is in the middle of a conversation")
            return []
        conversations.supersede(session, conv, now, by=f"schedule {sched.id} ({sched.flow_id})")
    ids = conversations.start_flow(session, ctx, patient, sched.flow_id, now, routine=True,
                                   params=sched.params)
    _advance(sched, patient, now)
    return ids


def _next_regular(sched: Schedule, patient: Patient, now: datetime) -> datetime:
    """The next time on the schedule's own rhythm, strictly after `now`.

    After downtime this catches up once rather than once per missed occurrence; after a
    deferral (10:00 run at 10:30) it counts from the slot being served (10:00).
    """
    slot = previous_occurrence(sched.next_due_at, patient.timezone, sched.local_time)
    return next_occurrence(now, patient.timezone, sched.local_time, sched.every_days, last=slot)


def _advance(sched: Schedule, patient: Patient, now: datetime) -> None:
    sched.next_due_at = _next_regular(sched, patient, now)
    sched.last_run_at = now


def _busy_until(session: Session, ctx: ServiceContext, patient: Patient, conv: Conversation,
                now: datetime) -> datetime | None:
    """When to try again if the patient is in the middle of `conv`, or None if `conv` is only
    waiting for a reply that has not come.

    In the middle: the patient replied, or the conversation sent (or wrote) a message, within
    ACTIVE_WINDOW; or its messages are being held by quiet hours, so the patient has not seen
    them yet (then: ACTIVE_WINDOW after quiet hours end). A message stuck unsent for longer
    (retries) does not hold the schedule up.
    """
    rows = session.execute(
        select(OutboxItem.status, OutboxItem.created_at, OutboxItem.sent_at)
        .join(Message, OutboxItem.message_id == Message.id)
        .where(Message.conversation_id == conv.id)).all()
    unsent = [created for status, created, _ in rows if status in UNSENT]
    q = ctx.settings.quiet_hours
    if unsent and in_quiet_hours(now, patient.timezone, q.start, q.end):
        return quiet_hours_end(now, patient.timezone, q.start, q.end) + DEFER_BY
    times = [conv.started_at, *unsent, *(sent for _, _, sent in rows if sent is not None)]
    if patient.last_inbound_at is not None:
        times.append(patient.last_inbound_at)
    if now - max(times) < ACTIVE_WINDOW:
        return now + DEFER_BY
    return None


def _skip_reason(patient: Patient) -> str | None:
    if patient.status != "active":
        return f"patient {patient.status}"
    if patient.consent_at is None:
        return "no consent yet"
    if patient.number_invalid_at is not None:
        return "number invalid"
    return None


def _forget_rolled_back(session: Session, written_before: set[int]) -> None:
    """Outbox rows written in a rolled-back savepoint are gone: drop them from session.info."""
    outbox = session.info.get("outbox")
    if outbox:
        for key in set(outbox) - written_before:
            del outbox[key]


def _after_failure(session: Session, ctx: ServiceContext, sched_id: int, flow_id: str,
                   due_at: datetime, now: datetime, exc: Exception) -> None:
    """Audit a schedule that failed and move it on, so that it cannot fail on every tick."""
    sched = session.get(Schedule, sched_id)
    patient = session.get(Patient, sched.patient_id)
    gone = flow_id not in ctx.flows
    # No phone numbers or message bodies: the ids and the kind of error only.
    log.error("schedule %s (flow %s) failed with %s; %s", sched_id, flow_id,
              type(exc).__name__, "deactivated: the flow is gone" if gone else "moved on")
    sched.next_due_at = due_at
    _advance(sched, patient, now)
    if gone:
        sched.active = False
    detail = None if isinstance(exc, DBAPIError) else str(exc)[:200]
    audit(session, now, "system", "schedule.error", "schedule", sched_id,
          patient_id=sched.patient_id, flow=flow_id, error=type(exc).__name__, detail=detail,
          deactivated=gone, next_due_at=None if gone else sched.next_due_at.isoformat())
