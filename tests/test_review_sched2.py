"""Second review of scheduling: what a coordinator's change does to a scheduled message that
was started but is still held (quiet hours) and has not reached the patient."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from bot.scheduler import tick
from bot.services.dispatcher import Pacer
from bot.services.patients import Enrolment, enrol_patient
from bot.services.schedules import remove_schedule, save_schedule
from bot.store.models import AuditLog, Conversation, Patient

PHONE = "+447700900600"


@pytest.fixture(autouse=True)
def _fast_pacer(rt):
    rt.dispatcher.pacer = Pacer(1000)


def _patient(rt, now, phone=PHONE, zone="Europe/London"):
    with rt.transaction() as s:
        p = enrol_patient(s, Enrolment(phone, "Ana", zone), languages=["en", "es"],
                          now=now, actor="t")
        p.consent_at = now
        return p.id


def _to_patient(messenger, phone=PHONE):
    return [m.body for m in messenger.sent if m.to == phone]


def test_a_removed_reminder_held_for_quiet_hours_is_not_sent_next_morning(rt, clock,
                                                                          messenger):
    """The 22:30 "night tablets" reminder (inside quiet hours, saved with a warning) started
    at 22:30 and is held until 08:00. At 23:00 the coordinator removes it: the doctor stopped
    that medicine. Nothing of it has reached the patient, so nothing of it may arrive at
    08:00 telling them to take it."""
    clock.set(datetime(2026, 6, 1, 19, 0, tzinfo=UTC))  # Monday 20:00 London (BST)
    pid = _patient(rt, clock.now())
    with rt.transaction() as s:
        sched_id = save_schedule(s, rt.ctx, s.get(Patient, pid), "reminder", "22:30", 1,
                                 clock.now(), "t",
                                 {"reminder_text": "Take your night tablets."}).schedule.id
    clock.set(datetime(2026, 6, 1, 21, 30, tzinfo=UTC))  # 22:30: started, held
    tick(rt)
    assert _to_patient(messenger) == []
    clock.set(datetime(2026, 6, 1, 22, 0, tzinfo=UTC))  # 23:00: the coordinator removes it
    with rt.transaction() as s:
        remove_schedule(s, sched_id, clock.now(), "coordinator")
    clock.set(datetime(2026, 6, 2, 7, 0, tzinfo=UTC))  # Tuesday 08:00
    tick(rt)
    clock.set(datetime(2026, 6, 2, 7, 5, tzinfo=UTC))
    tick(rt)
    assert _to_patient(messenger) == []
    with rt.transaction() as s:
        conv = s.scalars(select(Conversation).where(Conversation.patient_id == pid)).one()
        assert conv.status not in ("active", "waiting")  # a later text is not its "done"
        assert s.scalars(select(AuditLog).where(
            AuditLog.action == "outbox.cancelled")).all()


def test_a_removed_checkin_already_seen_by_the_patient_stays_open(rt, clock, messenger):
    """Removing a schedule stops what has not reached the patient; a check-in they have
    already been sent stays open, so their answers (and any red flag in them) still count."""
    clock.set(datetime(2026, 6, 1, 8, 0, tzinfo=UTC))  # Monday 09:00 London
    pid = _patient(rt, clock.now())
    with rt.transaction() as s:
        sched_id = save_schedule(s, rt.ctx, s.get(Patient, pid), "checkin", "10:00", 7,
                                 clock.now(), "t").schedule.id
    clock.set(datetime(2026, 6, 1, 9, 0, tzinfo=UTC))
    tick(rt)
    sent = _to_patient(messenger)
    assert sent
    clock.set(datetime(2026, 6, 1, 9, 10, tzinfo=UTC))
    with rt.transaction() as s:
        remove_schedule(s, sched_id, clock.now(), "coordinator")
    with rt.transaction() as s:
        conv = s.scalars(select(Conversation).where(Conversation.patient_id == pid)).one()
        assert conv.status in ("active", "waiting")


def test_a_checkin_held_for_quiet_hours_when_the_patient_is_paused_does_not_wait_for_them(
        rt, clock, messenger):
    """The 07:30 check-in started and is held until 08:00; at 07:45 the coordinator pauses
    the patient (admitted to hospital). Its messages were then cancelled at 08:00, but the
    check-in stayed open, waiting on a question never sent: resumed the next day, the patient
    got "Reminder: your check-in is waiting" about a check-in they never had, and their texts
    were taken as its answers. Pausing now closes a conversation none of which has been sent."""
    from bot.services.patients import PatientChanges, update_patient

    clock.set(datetime(2026, 6, 1, 6, 0, tzinfo=UTC))  # Monday 07:00 London
    pid = _patient(rt, clock.now())
    with rt.transaction() as s:
        save_schedule(s, rt.ctx, s.get(Patient, pid), "checkin", "07:30", 7, clock.now(), "t")
    clock.set(datetime(2026, 6, 1, 6, 30, tzinfo=UTC))  # 07:30: started, held until 08:00
    tick(rt)
    clock.set(datetime(2026, 6, 1, 6, 45, tzinfo=UTC))
    with rt.transaction() as s:
        update_patient(s, s.get(Patient, pid), PatientChanges(status="paused"), ctx=rt.ctx,
                       now=clock.now(), actor="coordinator")
    clock.set(datetime(2026, 6, 1, 7, 0, tzinfo=UTC))
    tick(rt)
    with rt.transaction() as s:
        conv = s.scalars(select(Conversation).where(Conversation.patient_id == pid)).one()
        assert conv.status == "interrupted"
        update_patient(s, s.get(Patient, pid), PatientChanges(status="active"), ctx=rt.ctx,
                       now=clock.now(), actor="coordinator")
    clock.set(datetime(2026, 6, 2, 7, 0, tzinfo=UTC))  # Tuesday 08:00: no reminder of it
    tick(rt)
    assert _to_patient(messenger) == []


def test_removing_a_schedule_whose_last_run_is_over_cancels_nothing(rt, clock, messenger):
    """The run's conversation is over (the patient answered): removing the schedule stops it
    and touches nothing else."""
    clock.set(datetime(2026, 6, 1, 8, 0, tzinfo=UTC))  # Monday 09:00 London
    pid = _patient(rt, clock.now())
    with rt.transaction() as s:
        sched_id = save_schedule(s, rt.ctx, s.get(Patient, pid), "reminder", "10:00", 1,
                                 clock.now(), "t",
                                 {"reminder_text": "Take your tablets."}).schedule.id
    clock.set(datetime(2026, 6, 1, 9, 0, tzinfo=UTC))
    tick(rt)
    assert len(_to_patient(messenger)) == 1
    with rt.transaction() as s:
        conv = s.scalars(select(Conversation).where(Conversation.patient_id == pid)).one()
        conv.status = "completed"
    with rt.transaction() as s:
        remove_schedule(s, sched_id, clock.now(), "coordinator")
    with rt.transaction() as s:
        [removed] = s.scalars(select(AuditLog).where(AuditLog.action == "schedule.remove"))
        assert "stopped_unsent" not in removed.details
        assert not s.scalars(select(AuditLog).where(AuditLog.action == "outbox.cancelled")).all()
