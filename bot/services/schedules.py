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

A check-in the patient is already doing, or has just done, serves the occurrence: a
conversation of the same flow (and the same text, for a reminder) that is open or completed and
started since the occurrence's slot, or, for a flow without a text of its own (the check-in),
up to SERVED_WINDOW before it. The occurrence counts as run (`schedule.skip`, with the
conversation) and no second one follows.

An occurrence is caught up only while it is still timely (after the scheduler was down, or
after long deferrals). A schedule with a text of its own (a reminder, often medication: "take
your morning tablets") must reach the patient within REMINDER_GRACE of its slot and on the same
local day as it would have on time. A check-in is worth more late than not at all: it is
caught up while less than half its period late (a weekly one: up to three and a half days),
so never close to the next one. Quiet hours count: a message held until morning arrives then.
Otherwise it is not sent: `schedule.missed`, logged, and the schedule moves to its next regular
time.

Replacing a schedule that has run (a new time or rhythm, or the same one saved again) counts
from its last run: the next occurrence is on a local day at least `every_days` after it, so a
change never brings a second check-in the same day or week. A new schedule starts at the next
local time. Either may be given a first day (a weekday or a date, see save_schedule): it then
first runs that day, never on the local day of its last run, and every `every_days` after.

So nothing scheduled is silently dropped. Each due schedule runs in its own savepoint. A
passing database error (lock or statement timeout, deadlock, serialization failure, lost
connection) leaves the schedule due, to be tried again on the next tick (`schedule.retry`);
after TRANSIENT_TRIES tries for the same occurrence it counts as failed. A failed schedule
(say, its flow is no longer in the library) is audited, logged and moved on, and the others
still run. Schedules that failed after passing errors are listed in
`session.info[FAILED_INFO_KEY]` for the caller to report.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from bot.domain import engine, gsm7
from bot.domain.flow_lint import VARIABLE
from bot.domain.schedule import (
    first_occurrence,
    in_quiet_hours,
    next_occurrence,
    next_occurrence_after_run,
    parse_first_day,
    parse_hhmm,
    previous_occurrence,
    quiet_hours_end,
    time_in_quiet_hours,
    weekday_of,
)
from bot.services import conversations
from bot.services.audit import audit
from bot.services.context import ServiceContext
from bot.services.outbox import PRIORITY_ROUTINE, Draft, enqueue, heard_on_whatsapp
from bot.services.patients import InvalidField, is_discharged
from bot.store.claims import claim_due
from bot.store.models import (
    MAX_ID,
    AuditLog,
    Conversation,
    Message,
    OutboxItem,
    Patient,
    Schedule,
)

log = logging.getLogger(__name__)

# A patient who replied (or was sent a message) this recently is in the middle of a
# conversation: a due schedule waits this long rather than interrupting.
ACTIVE_WINDOW = timedelta(minutes=30)
DEFER_BY = timedelta(minutes=30)
UNSENT = ("pending", "sending")
# How late a reminder (a schedule with a text of its own, often medication: "take your
# morning tablets" must not arrive in the evening, nor next to the next dose) may still be sent
# after downtime or deferrals; never more than half its period, never on a later local day. A
# check-in may be up to half its period late.
REMINDER_GRACE = timedelta(hours=2)
# A check-in the patient started themselves this long before its slot serves the occurrence.
SERVED_WINDOW = timedelta(hours=6)
SERVING = ("active", "waiting", "completed")
# A passing database error leaves the schedule due for the next tick, this many tries in all
# for one occurrence (about a minute at the default 5 s tick); then it counts as failed.
TRANSIENT_TRIES = 10
# session.info key: ids of schedules that failed after passing errors, in this transaction.
FAILED_INFO_KEY = "schedules.failed"
# Serialization failure, deadlock, lock not available (lock_timeout), query cancelled
# (statement_timeout); class 08 is a lost connection.
_TRANSIENT_SQLSTATES = {"40001", "40P01", "55P03", "57014"}
_HHMM = re.compile(r"^\d{1,2}:\d{2}$")
# A first day further ahead than this is taken for a typo (2062 for 2026).
FIRST_DAY_AHEAD = timedelta(days=366)


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


def _check_first_day(first_day: Any) -> int | date:
    """A first day as parse_first_day reads it, else InvalidField("first_day")."""
    try:
        if isinstance(first_day, str):
            return parse_first_day(first_day)
    except ValueError:
        pass
    raise InvalidField("first_day", "expected a weekday (monday to sunday, or mon to sun) or a "
                                    f"date YYYY-MM-DD, got {first_day!r}")


def _first_run(day: int | date, now: datetime, zone: str, local_time: str,
               last_run: datetime | None) -> datetime:
    """The first run on the first day `day` (see first_occurrence): never on the local day of
    the schedule's last run, nor in the past, nor more than FIRST_DAY_AHEAD away."""
    tz = ZoneInfo(zone)
    today = now.astimezone(tz).date()
    ran_on = last_run.astimezone(tz).date() if last_run is not None else None
    if isinstance(day, date):
        if day < today:
            raise InvalidField("first_day", f"{day.isoformat()} is in the past (today is "
                                            f"{today.isoformat()} in the patient's zone)")
        if day - today > FIRST_DAY_AHEAD:
            raise InvalidField("first_day", f"{day.isoformat()} is too far off: at most a year "
                                            "ahead")
        if day == ran_on:
            raise InvalidField("first_day", f"this schedule already ran on {day.isoformat()}: "
                                            "choose a later day")
    try:
        return first_occurrence(now, zone, local_time, day, not_on=ran_on)
    except ValueError:
        raise InvalidField("first_day", f"{local_time} on {day} has passed in the patient's "
                                        "zone: choose a later day") from None


def schedule_weekday(sched: Schedule, zone: str) -> str | None:
    """The weekday ("monday") the schedule runs on when every_days is whole weeks, else None."""
    return weekday_of(sched.next_due_at, zone, sched.local_time, sched.every_days)


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
        # Spaces are tidied after to_gsm7, which drops emoji and leaves the spaces around them.
        text = " ".join(gsm7.to_gsm7(value).split())
        if not text:
            raise InvalidField(key, "has nothing a text message can carry (emoji and symbols "
                                    "are dropped): write it in words")
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
                  params: dict[str, Any] | None = None,
                  first_day: str | None = None) -> ScheduleResult:
    """Schedule `flow_id` for the patient every `every_days` at `local_time` in their zone,
    replacing the patient's active schedule of that flow (see the module docstring).

    `first_day` (a weekday, "monday" or "mon", or a date YYYY-MM-DD): the first run is at
    `local_time` that day (a weekday: the next one), the later ones every `every_days` from
    it, so a weekly schedule keeps the weekday. It may come sooner than `every_days` after the
    last run of the schedule it replaces, never the same local day (a weekday then means the
    next week; that date is refused).

    The patient, then their schedules, are locked and read afresh (PostgreSQL), as a discharge
    or a new zone locks them: a save made while the scheduler is running this schedule waits
    for that run and counts from it (a stale copy would set the schedule due again the same
    day: a second check-in), two saves at once cannot both add a check-in, and a discharge
    committed meanwhile is seen."""
    patient = session.get(Patient, patient.id, with_for_update=True, populate_existing=True)
    if is_discharged(patient):
        # The scheduler would skip it: say so now rather than keep a schedule that never runs.
        raise InvalidField("patient", "this patient was discharged: re-admit them before "
                                      "setting a schedule")
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
    day = _check_first_day(first_day) if first_day is not None else None
    warnings = [w for w in [quiet_hours_warning(ctx, local_time)] if w]
    next_due = next_occurrence(now, patient.timezone, local_time, every_days)
    existing = [s for s in session.scalars(select(Schedule).where(
        Schedule.patient_id == patient.id, Schedule.flow_id == flow_id,
        Schedule.active.is_(True)).order_by(Schedule.id).with_for_update()
        .execution_options(populate_existing=True)) if _same_schedule(s, clean, local_time)]
    runs = [s.last_run_at for s in existing if s.last_run_at is not None]
    # Audited with the schedule: the first day as given, and the first run it gave.
    chosen: dict[str, Any] = {}
    if day is not None:
        next_due = _first_run(day, now, patient.timezone, local_time, max(runs, default=None))
        chosen = {"first_day": first_day.strip(), "next_due_at": next_due.isoformat()}
    elif runs:  # it has run: count on from its last run, not from now
        next_due = next_occurrence_after_run(now, patient.timezone, local_time, every_days,
                                             max(runs))
    if existing:
        sched, *extra = existing
        before = _describe(sched)
        sched.local_time, sched.every_days, sched.params = local_time, every_days, clean
        sched.next_due_at = next_due
        audit(session, now, actor, "schedule.change", "schedule", sched.id,
              patient_id=patient.id, flow=flow_id, before=before, after=_describe(sched),
              **chosen)
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
          flow=flow_id, at=local_time, every_days=every_days, **chosen)
    return ScheduleResult(sched, warnings=warnings)


def add_schedule(session: Session, ctx: ServiceContext, patient: Patient, flow_id: str,
                 local_time: str, every_days: int, now: datetime, actor: str,
                 params: dict[str, Any] | None = None,
                 first_day: str | None = None) -> Schedule:
    """save_schedule, returning only the schedule."""
    return save_schedule(session, ctx, patient, flow_id, local_time, every_days, now, actor,
                         params, first_day).schedule




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
    """Stop a schedule (kept, inactive, for the record). Raises ScheduleNotFound.

    What its last run started and has not been sent yet (held for quiet hours; never tried,
    so surely not on the patient's phone) is stopped too: the "take your night tablets" held until 08:00 must
    not arrive after the coordinator removed it because that medicine was stopped. A run the
    patient has been sent anything of stays open: their answers (and any red flag in them)
    still count. The schedule is locked (PostgreSQL) and read afresh, so a run in progress is
    waited for and seen."""
    if not 0 < schedule_id <= MAX_ID:  # no such row (and the drivers refuse such an int)
        raise ScheduleNotFound(schedule_id)
    sched = session.get(Schedule, schedule_id, with_for_update=True, populate_existing=True)
    if sched is None or not sched.active:
        raise ScheduleNotFound(schedule_id)
    sched.active = False
    stopped = _stop_unsent_run(session, sched, now)
    audit(session, now, actor, "schedule.remove", "schedule", sched.id,
          patient_id=sched.patient_id, flow=sched.flow_id,
          **({"stopped_unsent": stopped} if stopped else {}))
    return sched


def _stop_unsent_run(session: Session, sched: Schedule, now: datetime) -> list[int]:
    """Cancel what the schedule's last run wrote when none of it has gone to the patient (see
    remove_schedule); returns the ids of the messages cancelled. Its conversation is closed
    as interrupted, so a later text from the patient is not taken as its answer."""
    if sched.last_run_at is None:
        return []
    convs = [c for c in session.scalars(select(Conversation).where(
        Conversation.patient_id == sched.patient_id, Conversation.flow_id == sched.flow_id,
        Conversation.status.in_(conversations.OPEN),
        Conversation.started_at == sched.last_run_at).with_for_update())
        if dict((c.state or {}).get("params") or {}) == dict(sched.params or {})]
    conv_ids = [c.id for c in convs]
    rows = select(OutboxItem).join(Message, Message.id == OutboxItem.message_id)
    if conv_ids:
        rows = rows.where(Message.conversation_id.in_(conv_ids))
    else:  # a reminder sent as a notice beside an open question (_remind_beside)
        rows = rows.where(OutboxItem.patient_id == sched.patient_id,
                          OutboxItem.kind == "reminder_notice", Message.conversation_id.is_(None),
                          OutboxItem.created_at == sched.last_run_at)
    items = list(session.scalars(rows.order_by(OutboxItem.id).with_for_update(of=OutboxItem)))
    if not items or any(item.status != "pending" or item.attempts for item in items):
        # Nothing written, or some of it is going or went (a send that failed may still have
        # reached them): the patient may have it, and may answer it.
        return []
    for conv in convs:
        conv.status, conv.wait_deadline, conv.updated_at = "interrupted", None, now
        conv.state = {**conv.state, "interrupted": f"schedule {sched.id} removed"}
    conversations._cancel_rows(session, items, now,
                               f"schedule {sched.id} removed before this was sent")
    return [item.message_id for item in items]


# -- running due schedules -------------------------------------------------------------------


def run_due_schedules(session: Session, ctx: ServiceContext, now: datetime,
                      limit: int = 200) -> list[int]:
    """Start every due scheduled flow once, and move each schedule to its next time.

    Each schedule runs in its own savepoint: one that fails is audited, logged and moved on
    (deactivated if its flow is gone), and the others still run. A passing database error
    leaves it due for the next tick, up to TRANSIENT_TRIES tries (see the module docstring).
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
    # falls due gets one check-in, not two. The schedule is locked already (claim_due), and a
    # coordinator's action locks the patient first, then their schedules (discharge, a new
    # zone): a patient locked now is left for the next tick rather than waited for, which
    # could deadlock.
    patient = session.scalars(
        select(Patient).where(Patient.id == sched.patient_id)
        .with_for_update(skip_locked=True).execution_options(populate_existing=True)).first()
    if patient is None:
        log.info("schedule %s: its patient is being changed; left for the next tick", sched.id)
        audit(session, now, "system", "schedule.wait", "schedule", sched.id,
              patient_id=sched.patient_id, flow=sched.flow_id,
              reason="the patient's row is locked by another change; tried again next tick")
        return []
    reason = _skip_reason(patient)
    if reason:  # nothing reaches the patient: not a run to count the next one from
        _advance(sched, patient, now, ran_at=None)
        audit(session, now, "system", "schedule.skip", "schedule", sched.id, reason=reason)
        return []
    slot = previous_occurrence(sched.next_due_at, patient.timezone, sched.local_time)
    late = _missed_by(ctx, sched, patient, slot, now)
    if late is not None:
        _advance(sched, patient, now, ran_at=None)
        log.warning("schedule %s (flow %s): the occurrence of %s was missed (%d min late); "
                    "next %s", sched.id, sched.flow_id, slot.isoformat(),
                    late.total_seconds() // 60, sched.next_due_at.isoformat())
        audit(session, now, "system", "schedule.missed", "schedule", sched.id,
              patient_id=patient.id, flow=sched.flow_id, slot=slot.isoformat(),
              late_minutes=int(late.total_seconds() // 60),
              next_due_at=sched.next_due_at.isoformat(),
              reason="too late to send: the time for it has passed")
        return []
    served = _served_by(session, sched, patient, slot)
    if served is not None:
        _advance(sched, patient, now, ran_at=served.started_at)
        audit(session, now, "system", "schedule.skip", "schedule", sched.id,
              reason=f"the patient already did this {sched.flow_id} "
                     f"(conversation {served.id}, started {served.started_at.isoformat()})",
              conversation_id=served.id, slot=slot.isoformat())
        return []
    conv = conversations.active_conversation(session, patient.id)
    if conv is not None:
        busy_until = _busy_until(session, ctx, patient, conv, now)
        if busy_until is not None:
            regular = _next_regular(sched, patient, now)
            if busy_until >= regular:
                _advance(sched, patient, now, ran_at=None)
                audit(session, now, "system", "schedule.skip", "schedule", sched.id,
                      reason="the patient was still in a conversation at the next occurrence")
                return []
            sched.next_due_at = busy_until
            audit(session, now, "system", "schedule.defer", "schedule", sched.id,
                  until=busy_until.isoformat(), conversation_id=conv.id,
                  reason="the patient is in the middle of a conversation")
            return []
        if _keeps_the_question(session, ctx, sched, patient, conv, now):
            return _remind_beside(session, ctx, sched, patient, conv, now)
        conversations.supersede(session, conv, now, by=f"schedule {sched.id} ({sched.flow_id})")
    ids = conversations.start_flow(session, ctx, patient, sched.flow_id, now, routine=True,
                                   params=sched.params)
    _advance(sched, patient, now, ran_at=now)
    return ids


def _keeps_the_question(session: Session, ctx: ServiceContext, sched: Schedule,
                        patient: Patient, conv: Conversation, now: datetime) -> bool:
    """Whether a reminder falling due must leave the open conversation as it is: it waits on a
    question whose answer can raise a red flag ("any new weakness?"). Superseded, the patient's
    late YES to it would be taken as the reminder's "done" and the red flag lost.

    Only a reminder (a flow with a text of its own) that can go as plain text: by SMS, or on
    WhatsApp inside the 24-hour window (outside it the reminder's template starts the flow)."""
    if not (sched.params or {}).get("reminder_text") or not conv.current_node:
        return False
    if patient.channel == "whatsapp" and not heard_on_whatsapp(session, patient.phone, now):
        return False
    flow = conversations.flow_for(session, ctx, conv)
    return engine.can_raise_flags(flow, conv.current_node)


def _remind_beside(session: Session, ctx: ServiceContext, sched: Schedule, patient: Patient,
                   conv: Conversation, now: datetime) -> list[int]:
    """Send the reminder's words as a notice that asks for no reply, and keep the open
    question (see _keeps_the_question). The occurrence counts as run."""
    params = engine.with_sentences(dict(sched.params), ctx.flows.variables)  # a full stop
    reminder = gsm7.to_gsm7(str(params["reminder_text"]))
    body = ctx.text_for(patient, "reminder_notice", reminder_text=reminder)
    item = enqueue(session, Draft(
        to=patient.phone, channel=patient.channel, body=body, kind="reminder_notice",
        priority=PRIORITY_ROUTINE, routine=True, patient_id=patient.id), now)
    _advance(sched, patient, now, ran_at=now)
    audit(session, now, "system", "schedule.notice", "schedule", sched.id,
          patient_id=patient.id, flow=sched.flow_id, conversation_id=conv.id,
          node=conv.current_node, message_id=item.message_id,
          reason="the patient has a red-flag question open: sent as a notice, the question "
                 "kept")
    return [item.id]


def _next_regular(sched: Schedule, patient: Patient, now: datetime) -> datetime:
    """The next time on the schedule's own rhythm, strictly after `now`.

    After downtime this catches up once rather than once per missed occurrence; after a
    deferral (10:00 run at 10:30) it counts from the slot being served (10:00).
    """
    slot = previous_occurrence(sched.next_due_at, patient.timezone, sched.local_time)
    return next_occurrence(now, patient.timezone, sched.local_time, sched.every_days, last=slot)


def _advance(sched: Schedule, patient: Patient, now: datetime, ran_at: datetime | None) -> None:
    """Move the schedule to its next regular time. `ran_at`: when it ran, or None when nothing
    reached the patient (missed, failed): then last_run_at is left as it was."""
    sched.next_due_at = _next_regular(sched, patient, now)
    if ran_at is not None:
        sched.last_run_at = ran_at


def _grace(sched: Schedule) -> timedelta:
    half_period = timedelta(days=sched.every_days) / 2
    return min(REMINDER_GRACE, half_period) if sched.params else half_period


def _missed_by(ctx: ServiceContext, sched: Schedule, patient: Patient, slot: datetime,
               now: datetime) -> timedelta | None:
    """How late the occurrence of `slot` would reach the patient if started now, when that is
    too late to send it (see _grace; a reminder never on a later local day); otherwise
    None.

    Quiet hours count: what is started in them goes out when they end, as it would have on
    time for a slot inside them."""
    q = ctx.settings.quiet_hours
    on_time = quiet_hours_end(slot, patient.timezone, q.start, q.end)
    if_now = quiet_hours_end(now, patient.timezone, q.start, q.end)
    late = if_now - on_time
    tz = ZoneInfo(patient.timezone)
    another_day = if_now.astimezone(tz).date() != on_time.astimezone(tz).date()
    if late > _grace(sched) or (sched.params and another_day):
        return late
    return None


def _served_by(session: Session, sched: Schedule, patient: Patient,
               slot: datetime) -> Conversation | None:
    """The patient's conversation that stands for this occurrence, if any: the same flow and
    params, open or completed, started since `slot`, or (a flow without a text of its own,
    one schedule per patient: the check-in the patient started themselves) within
    SERVED_WINDOW before it, never more than half the period."""
    params = dict(sched.params or {})
    window = timedelta(0) if params else min(SERVED_WINDOW, timedelta(days=sched.every_days) / 2)
    for conv in session.scalars(select(Conversation).where(
            Conversation.patient_id == patient.id, Conversation.flow_id == sched.flow_id,
            Conversation.status.in_(SERVING), Conversation.started_at >= slot - window)
            .order_by(Conversation.id.desc())):
        if dict((conv.state or {}).get("params") or {}) == params:
            return conv
    return None


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


def is_transient(exc: BaseException) -> bool:
    """A database error that may pass by itself: lock or statement timeout, deadlock,
    serialization failure, a lost connection."""
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated or isinstance(exc, OperationalError):
        return True
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None) or ""
    return code in _TRANSIENT_SQLSTATES or code.startswith("08")


def _tries_before(session: Session, sched_id: int, due_at: datetime) -> int:
    """Passing errors already met by this occurrence (its `schedule.retry` audits)."""
    rows = session.scalars(select(AuditLog.details).where(
        AuditLog.action == "schedule.retry", AuditLog.subject_type == "schedule",
        AuditLog.subject_id == str(sched_id), AuditLog.at >= due_at))
    return sum(1 for d in rows if (d or {}).get("due_at") == due_at.isoformat())


def _after_failure(session: Session, ctx: ServiceContext, sched_id: int, flow_id: str,
                   due_at: datetime, now: datetime, exc: Exception) -> None:
    """A passing database error: leave the schedule due, for the next tick, up to
    TRANSIENT_TRIES tries. Otherwise audit the failure and move the schedule on, so that it
    cannot fail on every tick."""
    sched = session.get(Schedule, sched_id)
    error = type(exc).__name__
    tries = None
    if is_transient(exc):
        tries = _tries_before(session, sched_id, due_at) + 1
        if tries < TRANSIENT_TRIES:
            sched.next_due_at = due_at
            log.warning("schedule %s (flow %s) met %s (try %d of %d); tried again next tick",
                        sched_id, flow_id, error, tries, TRANSIENT_TRIES)
            audit(session, now, "system", "schedule.retry", "schedule", sched_id,
                  patient_id=sched.patient_id, flow=flow_id, error=error,
                  due_at=due_at.isoformat(), tries=tries)
            return
        session.info.setdefault(FAILED_INFO_KEY, []).append(sched_id)
    gone = flow_id not in ctx.flows
    # No phone numbers or message bodies: the ids and the kind of error only.
    log.error("schedule %s (flow %s) failed with %s%s; %s", sched_id, flow_id, error,
              f" after {tries} tries" if tries else "",
              "deactivated: the flow is gone" if gone else "moved on")
    sched.next_due_at = due_at
    _advance(sched, session.get(Patient, sched.patient_id), now, ran_at=None)
    if gone:
        sched.active = False
    detail = None if isinstance(exc, DBAPIError) else str(exc)[:200]
    audit(session, now, "system", "schedule.error", "schedule", sched_id,
          patient_id=sched.patient_id, flow=flow_id, error=error, detail=detail,
          deactivated=gone, next_due_at=None if gone else sched.next_due_at.isoformat(),
          gave_up=tries is not None, tries=tries)
