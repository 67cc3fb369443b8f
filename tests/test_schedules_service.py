"""Scheduled flows: nothing silently dropped, one bad schedule does not stop the others, one
schedule per patient and flow, inputs checked."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from bot.domain.flows import FlowLibrary
from bot.scheduler import tick
from bot.services import conversations
from bot.services.dispatcher import Pacer
from bot.services.patients import Enrolment, InvalidField, enrol_patient, onboard_patient
from bot.services.schedules import add_schedule, run_due_schedules, save_schedule
from bot.store.models import AuditLog, Conversation, Patient, Schedule

PHONE = "+447700900500"


@pytest.fixture(autouse=True)
def _fast_pacer(rt):
    rt.dispatcher.pacer = Pacer(1000)  # every routine message goes out on the tick it is due


def _patient(rt, now, phone=PHONE):
    with rt.transaction() as s:
        p = enrol_patient(s, Enrolment(phone, "Ana", "Europe/London"), languages=["en", "es"],
                          now=now, actor="t")
        p.consent_at = now
        return p.id


def _run(rt, clock, until, step=timedelta(minutes=30)):
    while clock.now() < until:
        tick(rt)
        clock.advance(seconds=step.total_seconds())


def _convs(rt):
    with rt.transaction() as s:
        return [(c.flow_id, c.started_at, c.status)
                for c in s.scalars(select(Conversation).order_by(Conversation.id))]


def _audits(rt, action):
    with rt.transaction() as s:
        return s.scalars(select(AuditLog).where(AuditLog.action == action)).all()


def _reply(rt, clock, pid, text):
    with rt.transaction() as s:
        p = s.get(Patient, pid)
        p.last_inbound_at = clock.now()
        conversations.handle_patient_text(s, rt.ctx, p, text, clock.now(), channel="sms",
                                          already_answered=False)


# -- 1. an open conversation no longer swallows a due schedule ------------------------------


def test_an_ignored_daily_reminder_does_not_block_the_weekly_checkin(rt, clock):
    clock.set(datetime(2026, 3, 2, 8, 0, tzinfo=UTC))  # Monday, London = UTC
    pid = _patient(rt, clock.now())
    with rt.transaction() as s:
        p = s.get(Patient, pid)
        add_schedule(s, rt.ctx, p, "reminder", "09:00", 1, clock.now(), "t",
                     {"reminder_text": "Take your tablets."})
        add_schedule(s, rt.ctx, p, "checkin", "10:00", 7, clock.now(), "t")
    _run(rt, clock, datetime(2026, 3, 2, 12, 0, tzinfo=UTC))
    convs = _convs(rt)
    assert [(f, st) for f, _, st in convs] == [("reminder", "superseded"), ("checkin", "waiting")]
    [audit] = _audits(rt, "conversation.superseded")
    assert audit.details["flow"] == "reminder"
    assert not _audits(rt, "schedule.skip")


def test_the_daily_reminder_runs_on_the_spring_forward_day(rt, clock):
    clock.set(datetime(2026, 3, 27, 7, 0, tzinfo=UTC))  # DST starts Sunday 29 March
    pid = _patient(rt, clock.now())
    with rt.transaction() as s:
        add_schedule(s, rt.ctx, s.get(Patient, pid), "reminder", "09:00", 1, clock.now(), "t",
                     {"reminder_text": "Take your tablets."})
    _run(rt, clock, datetime(2026, 3, 30, 7, 0, tzinfo=UTC))
    starts = [started for flow, started, _ in _convs(rt)]
    assert starts == [datetime(2026, 3, 27, 9, 0, tzinfo=UTC), datetime(2026, 3, 28, 9, 0, tzinfo=UTC),
                      datetime(2026, 3, 29, 8, 0, tzinfo=UTC)]  # 09:00 BST
    assert not _audits(rt, "schedule.skip")


def test_a_patient_in_the_middle_of_a_checkin_gets_the_reminder_30_minutes_later(rt, clock):
    clock.set(datetime(2026, 3, 2, 8, 0, tzinfo=UTC))
    pid = _patient(rt, clock.now())
    with rt.transaction() as s:
        add_schedule(s, rt.ctx, s.get(Patient, pid), "reminder", "09:00", 1, clock.now(), "t",
                     {"reminder_text": "Take your tablets."})
    clock.set(datetime(2026, 3, 2, 8, 50, tzinfo=UTC))
    _reply(rt, clock, pid, "CHECKIN")
    clock.set(datetime(2026, 3, 2, 8, 55, tzinfo=UTC))
    _reply(rt, clock, pid, "3")  # worst pain 3: the check-in goes on
    clock.set(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
    tick(rt)
    assert [(f, st) for f, _, st in _convs(rt)] == [("checkin", "waiting")]
    [defer] = _audits(rt, "schedule.defer")
    assert defer.details["until"] == "2026-03-02T09:30:00+00:00"
    with rt.transaction() as s:
        sched = s.scalars(select(Schedule)).one()
        assert sched.next_due_at == datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
    clock.set(datetime(2026, 3, 2, 9, 30, tzinfo=UTC))  # no reply since 08:55: superseded
    tick(rt)
    assert [(f, st) for f, _, st in _convs(rt)] == [("checkin", "superseded"),
                                                    ("reminder", "waiting")]
    with rt.transaction() as s:  # the same rhythm afterwards: tomorrow 09:00, not 09:30
        sched = s.scalars(select(Schedule)).one()
        assert sched.next_due_at == datetime(2026, 3, 3, 9, 0, tzinfo=UTC)


def test_two_schedules_due_together_are_sent_one_after_the_other(rt, clock):
    clock.set(datetime(2026, 3, 2, 8, 0, tzinfo=UTC))
    pid = _patient(rt, clock.now())
    with rt.transaction() as s:
        p = s.get(Patient, pid)
        add_schedule(s, rt.ctx, p, "reminder", "10:00", 7, clock.now(), "t",
                     {"reminder_text": "Take your tablets."})
        add_schedule(s, rt.ctx, p, "checkin", "10:00", 7, clock.now(), "t")
    clock.set(datetime(2026, 3, 2, 10, 0, tzinfo=UTC))
    tick(rt)
    assert len(_convs(rt)) == 1  # the other one is deferred, not dropped
    clock.set(datetime(2026, 3, 2, 10, 30, tzinfo=UTC))
    tick(rt)
    assert [st for _, _, st in _convs(rt)] == ["superseded", "waiting"]
    with rt.transaction() as s:
        assert {x.next_due_at for x in s.scalars(select(Schedule))} == {
            datetime(2026, 3, 9, 10, 0, tzinfo=UTC)}


def test_a_schedule_runs_once_per_occurrence(rt, clock):
    clock.set(datetime(2026, 3, 2, 8, 0, tzinfo=UTC))
    pid = _patient(rt, clock.now())
    with rt.transaction() as s:
        add_schedule(s, rt.ctx, s.get(Patient, pid), "checkin", "10:00", 7, clock.now(), "t")
    clock.set(datetime(2026, 3, 2, 10, 0, tzinfo=UTC))
    tick(rt)
    tick(rt)
    clock.set(datetime(2026, 3, 2, 11, 0, tzinfo=UTC))
    tick(rt)
    assert len(_convs(rt)) == 1


# -- 2. one bad schedule does not stop the others -------------------------------------------


def test_a_schedule_for_a_removed_flow_does_not_block_the_others(rt, clock, caplog):
    clock.set(datetime(2026, 3, 2, 8, 0, tzinfo=UTC))
    a = _patient(rt, clock.now(), "+447700900501")
    b = _patient(rt, clock.now(), "+447700900502")
    with rt.transaction() as s:
        add_schedule(s, rt.ctx, s.get(Patient, a), "reminder", "09:00", 1, clock.now(), "t",
                     {"reminder_text": "x"})
        add_schedule(s, rt.ctx, s.get(Patient, b), "checkin", "09:00", 7, clock.now(), "t")
    lib = rt.ctx.flows
    rt.ctx.flows = FlowLibrary([f for f in lib.current() if f.id != "reminder"], lib.variables)
    clock.set(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
    with caplog.at_level(logging.INFO):
        report = tick(rt)
    assert report.failed == []
    assert [(f, st) for f, _, st in _convs(rt)] == [("checkin", "waiting")]
    [err] = _audits(rt, "schedule.error")
    assert err.details["flow"] == "reminder" and err.details["deactivated"] is True
    with rt.transaction() as s:
        bad = s.scalars(select(Schedule).where(Schedule.flow_id == "reminder")).one()
        assert not bad.active
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors and all("+44" not in r.getMessage() for r in caplog.records)


def test_a_schedule_that_raises_is_moved_on_and_the_others_run(rt, clock, monkeypatch):
    clock.set(datetime(2026, 3, 2, 8, 0, tzinfo=UTC))
    a = _patient(rt, clock.now(), "+447700900501")
    b = _patient(rt, clock.now(), "+447700900502")
    with rt.transaction() as s:
        add_schedule(s, rt.ctx, s.get(Patient, a), "checkin", "09:00", 7, clock.now(), "t")
        add_schedule(s, rt.ctx, s.get(Patient, b), "checkin", "09:00", 7, clock.now(), "t")
    real = conversations.start_flow

    def flaky(session, ctx, patient, *args, **kwargs):
        ids = real(session, ctx, patient, *args, **kwargs)  # writes, then fails
        if patient.id == a:
            raise RuntimeError("boom")
        return ids

    monkeypatch.setattr(conversations, "start_flow", flaky)
    clock.set(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
    with rt.transaction() as s:
        run_due_schedules(s, rt.ctx, clock.now())
    with rt.transaction() as s:
        convs = s.scalars(select(Conversation)).all()
        assert [c.patient_id for c in convs] == [b]  # a's half-done work was rolled back
        nxt = {x.patient_id: (x.active, x.next_due_at) for x in s.scalars(select(Schedule))}
    assert nxt[a] == (True, datetime(2026, 3, 9, 9, 0, tzinfo=UTC))
    assert _audits(rt, "schedule.error")[0].details["error"] == "RuntimeError"


def test_a_conversation_whose_timeout_fails_does_not_block_the_others(rt, clock, monkeypatch):
    clock.set(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
    a = _patient(rt, clock.now(), "+447700900501")
    b = _patient(rt, clock.now(), "+447700900502")
    for pid in (a, b):
        with rt.transaction() as s:
            conversations.start_flow(s, rt.ctx, s.get(Patient, pid), "checkin", clock.now())
    real = conversations.advance

    def flaky(session, ctx, patient, *args, **kwargs):
        if patient.id == a:
            raise RuntimeError("boom")
        return real(session, ctx, patient, *args, **kwargs)

    monkeypatch.setattr(conversations, "advance", flaky)
    clock.advance(hours=25)
    with rt.transaction() as s:
        conversations.process_due_timeouts(s, rt.ctx, clock.now())
    with rt.transaction() as s:
        by = {c.patient_id: (c.status, c.current_node) for c in s.scalars(select(Conversation))}
    assert by[a][0] == "expired"
    assert by[b] == ("waiting", "pain_reminder")
    assert _audits(rt, "conversation.error")[0].details["error"] == "RuntimeError"


# -- 4. one schedule per patient and flow ---------------------------------------------------


def test_adding_a_checkin_schedule_again_replaces_the_one_consent_made(rt, clock):
    clock.set(datetime(2026, 3, 2, 11, 0, tzinfo=UTC))
    with rt.transaction() as s:
        p, _ = onboard_patient(s, rt.ctx, Enrolment(PHONE, "Ana", "Europe/London"),
                               clock.now(), "t")
        conversations.handle_patient_text(s, rt.ctx, p, "YES", clock.now(), channel="sms",
                                          already_answered=False)
        result = save_schedule(s, rt.ctx, p, "checkin", "14:00", 7, clock.now(), "cli:jo")
        assert result.replaced == {"at": "10:00", "every_days": 7, "params": {}}
        [sched] = s.scalars(select(Schedule).where(Schedule.active.is_(True))).all()
        assert (sched.local_time, sched.next_due_at) == (
            "14:00", datetime(2026, 3, 2, 14, 0, tzinfo=UTC))
    [change] = _audits(rt, "schedule.change")
    assert change.actor == "cli:jo" and change.details["before"]["at"] == "10:00"


def test_reminders_with_different_texts_are_separate_schedules(rt, clock):
    pid = _patient(rt, clock.now())
    with rt.transaction() as s:
        p = s.get(Patient, pid)
        add_schedule(s, rt.ctx, p, "reminder", "08:00", 1, clock.now(), "t",
                     {"reminder_text": "Morning tablets."})
        add_schedule(s, rt.ctx, p, "reminder", "20:00", 1, clock.now(), "t",
                     {"reminder_text": "Evening tablets."})
        again = save_schedule(s, rt.ctx, p, "reminder", "20:00", 2, clock.now(), "t",
                              {"reminder_text": "Evening tablets."})
        assert again.replaced is not None
        assert len(s.scalars(select(Schedule).where(Schedule.active.is_(True))).all()) == 2


# -- 5. inputs -------------------------------------------------------------------------------


@pytest.mark.parametrize(("flow", "params", "field"), [
    ("reminder", {}, "reminder_text"),
    ("reminder", {"reminder_text": "   "}, "reminder_text"),
    ("reminder", {"reminder_text": "x" * 101}, "reminder_text"),
    ("checkin", {"reminder_text": "x"}, "reminder_text"),
    ("welcome", {}, "flow"),
])
def test_bad_schedule_input_is_refused_naming_the_field(rt, clock, flow, params, field):
    pid = _patient(rt, clock.now())
    with rt.transaction() as s, pytest.raises(InvalidField) as exc:
        add_schedule(s, rt.ctx, s.get(Patient, pid), flow, "10:00", 1, clock.now(), "t", params)
    assert exc.value.field == field


def test_reminder_text_at_its_max_length_is_accepted_and_made_gsm7(rt, clock):
    pid = _patient(rt, clock.now())
    text = "Take your \u2018evening\u2019 tablets " + "x" * 72
    with rt.transaction() as s:
        sched = add_schedule(s, rt.ctx, s.get(Patient, pid), "reminder", "10:00", 1,
                             clock.now(), "t", {"reminder_text": text})
        assert sched.params["reminder_text"].startswith("Take your 'evening' tablets")
        assert len(sched.params["reminder_text"]) == 100


def test_a_time_in_quiet_hours_is_accepted_with_a_warning(rt, clock):
    pid = _patient(rt, clock.now())
    with rt.transaction() as s:
        result = save_schedule(s, rt.ctx, s.get(Patient, pid), "checkin", "22:30", 7,
                               clock.now(), "t")
    assert result.schedule.id and len(result.warnings) == 1
    assert "quiet hours" in result.warnings[0]


def test_consent_no_clears_consent_so_no_checkin_follows(rt, clock):
    clock.set(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
    with rt.transaction() as s:
        p, _ = onboard_patient(s, rt.ctx, Enrolment(PHONE, "Ana", "Europe/London"),
                               clock.now(), "t")
        conversations.handle_patient_text(s, rt.ctx, p, "YES", clock.now(), channel="sms",
                                          already_answered=False)
        pid = p.id
        # e.g. the consent question asked again later, and the answer is now NO
        conversations.start_flow(s, rt.ctx, p, "welcome", clock.now())
        conversations.handle_patient_text(s, rt.ctx, p, "NO", clock.now(), channel="sms",
                                          already_answered=False)
        assert s.get(Patient, pid).consent_at is None
    assert _audits(rt, "patient.consent_withdrawn")
    clock.set(datetime(2026, 3, 3, 10, 0, tzinfo=UTC))  # the weekly check-in's first run
    tick(rt)
    assert [f for f, _, _ in _convs(rt)] == ["welcome", "welcome"]
    assert _audits(rt, "schedule.skip")[0].details["reason"] == "no consent yet"
