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
    clock.set(datetime(2026, 3, 2, 9, 30, tzinfo=UTC))  # no reply since 08:55
    tick(rt)
    # The check-in waits on "is this pain new?" (a red-flag question): it is kept, and the
    # reminder goes as a notice (tests/test_reminder_beside_checkin.py).
    assert [(f, st) for f, _, st in _convs(rt)] == [("checkin", "waiting")]
    [notice] = _audits(rt, "schedule.notice")
    assert notice.details["node"] == "pain_new"
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
    # Nothing of it is GSM-7 text: the patient would get "Reminder from ...:  Reply 1 if done".
    ("reminder", {"reminder_text": "\U0001f48a \u23f0"}, "reminder_text"),
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


@pytest.mark.parametrize(("typed", "stored"), [
    ("Take your tablets \U0001f48a", "Take your tablets"),
    ("\U0001f48a Take your \U0001f48a tablets", "Take your tablets"),
])
def test_reminder_text_has_no_spaces_left_where_emoji_were_dropped(rt, clock, typed, stored):
    pid = _patient(rt, clock.now())
    with rt.transaction() as s:
        sched = add_schedule(s, rt.ctx, s.get(Patient, pid), "reminder", "10:00", 1,
                             clock.now(), "t", {"reminder_text": typed})
        assert sched.params["reminder_text"] == stored


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


# -- 6. a change of time, a check-in the patient is already doing, downtime, passing errors --


def _checkins_started(rt):
    return [started for flow, started, _ in _convs(rt) if flow == "checkin"]


def test_changing_the_checkin_time_after_it_ran_today_waits_for_next_week(rt, clock):
    clock.set(datetime(2026, 6, 1, 8, 0, tzinfo=UTC))  # Monday, London BST (UTC+1)
    pid = _patient(rt, clock.now())
    with rt.transaction() as s:
        save_schedule(s, rt.ctx, s.get(Patient, pid), "checkin", "10:00", 7, clock.now(), "t")
    _run(rt, clock, datetime(2026, 6, 1, 9, 30, tzinfo=UTC))  # ran at 10:00 local
    with rt.transaction() as s:  # moved to 14:00, same weekly rhythm
        result = save_schedule(s, rt.ctx, s.get(Patient, pid), "checkin", "14:00", 7,
                               clock.now(), "t")
        assert result.schedule.next_due_at == datetime(2026, 6, 8, 13, 0, tzinfo=UTC)
    _run(rt, clock, datetime(2026, 6, 1, 16, 0, tzinfo=UTC))
    assert _checkins_started(rt) == [datetime(2026, 6, 1, 9, 0, tzinfo=UTC)]


def test_saving_the_same_checkin_schedule_again_the_next_day_keeps_its_week(rt, clock):
    clock.set(datetime(2026, 6, 1, 8, 0, tzinfo=UTC))
    pid = _patient(rt, clock.now())
    with rt.transaction() as s:
        save_schedule(s, rt.ctx, s.get(Patient, pid), "checkin", "10:00", 7, clock.now(), "t")
    _run(rt, clock, datetime(2026, 6, 2, 7, 0, tzinfo=UTC))  # Tuesday 08:00 local
    with rt.transaction() as s:
        result = save_schedule(s, rt.ctx, s.get(Patient, pid), "checkin", "10:00", 7,
                               clock.now(), "t")
        assert result.replaced is not None
        assert result.schedule.next_due_at == datetime(2026, 6, 8, 9, 0, tzinfo=UTC)
    _run(rt, clock, datetime(2026, 6, 2, 12, 0, tzinfo=UTC))
    assert _checkins_started(rt) == [datetime(2026, 6, 1, 9, 0, tzinfo=UTC)]


def test_a_changed_schedule_that_last_ran_long_ago_starts_at_the_next_new_time(rt, clock):
    clock.set(datetime(2026, 6, 1, 8, 0, tzinfo=UTC))
    pid = _patient(rt, clock.now())
    with rt.transaction() as s:
        save_schedule(s, rt.ctx, s.get(Patient, pid), "checkin", "10:00", 7, clock.now(), "t")
    _run(rt, clock, datetime(2026, 6, 1, 9, 30, tzinfo=UTC))
    clock.set(datetime(2026, 6, 9, 7, 0, tzinfo=UTC))  # Tuesday of the next week, 08:00 local
    with rt.transaction() as s:
        result = save_schedule(s, rt.ctx, s.get(Patient, pid), "checkin", "14:00", 7,
                               clock.now(), "t")
        assert result.schedule.next_due_at == datetime(2026, 6, 9, 13, 0, tzinfo=UTC)


def test_a_checkin_the_patient_started_just_before_the_slot_serves_the_scheduled_one(rt, clock):
    clock.set(datetime(2026, 6, 1, 8, 50, tzinfo=UTC))  # Monday 09:50 local
    pid = _patient(rt, clock.now())
    with rt.transaction() as s:
        save_schedule(s, rt.ctx, s.get(Patient, pid), "checkin", "10:00", 7, clock.now(), "t")
    _reply(rt, clock, pid, "CHECKIN")  # the patient starts it themselves
    for answer in ["0", "no", "no"]:
        clock.advance(minutes=2)
        tick(rt)
        _reply(rt, clock, pid, answer)
    _run(rt, clock, datetime(2026, 6, 1, 9, 5, tzinfo=UTC), step=timedelta(minutes=1))
    for answer in ["no", "no", "no", "no", "no", "1", "no"]:
        clock.advance(minutes=1)
        tick(rt)
        _reply(rt, clock, pid, answer)
    _run(rt, clock, datetime(2026, 6, 1, 12, 0, tzinfo=UTC), step=timedelta(minutes=5))
    assert [(f, st) for f, _, st in _convs(rt)] == [("checkin", "completed")]
    [skip] = _audits(rt, "schedule.skip")
    assert "already" in skip.details["reason"]
    with rt.transaction() as s:
        sched = s.scalars(select(Schedule)).one()
        assert sched.next_due_at == datetime(2026, 6, 8, 9, 0, tzinfo=UTC)


def test_a_reminder_with_the_same_text_an_hour_apart_is_still_sent(rt, clock):
    """Only a check-in is served by the patient's own: each reminder schedule is sent."""
    clock.set(datetime(2026, 6, 1, 6, 0, tzinfo=UTC))
    pid = _patient(rt, clock.now())
    with rt.transaction() as s:
        p = s.get(Patient, pid)
        for at in ("09:00", "10:00"):
            save_schedule(s, rt.ctx, p, "reminder", at, 1, clock.now(), "t",
                          {"reminder_text": "Take your tablets."})
    clock.set(datetime(2026, 6, 1, 8, 0, tzinfo=UTC))
    tick(rt)
    _reply(rt, clock, pid, "1")
    clock.set(datetime(2026, 6, 1, 9, 0, tzinfo=UTC))
    tick(rt)
    assert [(f, st) for f, _, st in _convs(rt)] == [("reminder", "completed"),
                                                    ("reminder", "waiting")]


def test_after_downtime_a_stale_reminder_is_missed_not_sent_with_the_next(rt, clock, messenger):
    clock.set(datetime(2026, 6, 1, 6, 0, tzinfo=UTC))  # Monday 07:00 local
    pid = _patient(rt, clock.now())
    with rt.transaction() as s:
        save_schedule(s, rt.ctx, s.get(Patient, pid), "reminder", "09:00", 1, clock.now(), "t",
                      {"reminder_text": "Take your dexamethasone."})
    _run(rt, clock, datetime(2026, 6, 1, 7, 0, tzinfo=UTC))
    clock.set(datetime(2026, 6, 2, 7, 45, tzinfo=UTC))  # down until Tuesday 08:45 local
    _run(rt, clock, datetime(2026, 6, 2, 10, 0, tzinfo=UTC), step=timedelta(minutes=5))
    assert [started for _, started, _ in _convs(rt)] == [datetime(2026, 6, 2, 8, 0, tzinfo=UTC)]
    [missed] = _audits(rt, "schedule.missed")
    assert missed.details["slot"] == "2026-06-01T08:00:00+00:00"
    assert len([m for m in messenger.sent if "dexamethasone" in (m.body or "")]) == 1


def test_after_downtime_the_morning_reminder_is_not_sent_in_the_evening(rt, clock):
    clock.set(datetime(2026, 6, 1, 6, 0, tzinfo=UTC))
    pid = _patient(rt, clock.now())
    with rt.transaction() as s:
        p = s.get(Patient, pid)
        save_schedule(s, rt.ctx, p, "reminder", "08:30", 1, clock.now(), "t",
                      {"reminder_text": "Take your MORNING tablets."})
        save_schedule(s, rt.ctx, p, "reminder", "20:00", 1, clock.now(), "t",
                      {"reminder_text": "Take your EVENING tablets."})
    _run(rt, clock, datetime(2026, 6, 1, 7, 0, tzinfo=UTC))
    clock.set(datetime(2026, 6, 1, 18, 55, tzinfo=UTC))  # back at 19:55 local
    _run(rt, clock, datetime(2026, 6, 1, 19, 45, tzinfo=UTC), step=timedelta(minutes=5))
    with rt.transaction() as s:
        texts = [c.state["params"]["reminder_text"] for c in s.scalars(select(Conversation))]
        morning = s.scalars(select(Schedule).where(Schedule.local_time == "08:30")).one()
        assert morning.next_due_at == datetime(2026, 6, 2, 7, 30, tzinfo=UTC)
    assert texts == ["Take your EVENING tablets."]
    assert len(_audits(rt, "schedule.missed")) == 1


def test_after_a_short_downtime_a_reminder_is_still_caught_up(rt, clock):
    clock.set(datetime(2026, 6, 1, 6, 0, tzinfo=UTC))
    pid = _patient(rt, clock.now())
    with rt.transaction() as s:
        save_schedule(s, rt.ctx, s.get(Patient, pid), "reminder", "09:00", 1, clock.now(), "t",
                      {"reminder_text": "Take your tablets."})
    clock.set(datetime(2026, 6, 1, 9, 0, tzinfo=UTC))  # an hour late: 10:00 local
    tick(rt)
    assert [started for _, started, _ in _convs(rt)] == [datetime(2026, 6, 1, 9, 0, tzinfo=UTC)]
    assert not _audits(rt, "schedule.missed")


def test_after_downtime_a_checkin_is_caught_up_late_but_not_near_the_next_one(rt, clock):
    """A week without a check-in is worse than one a day late: a check-in is caught up while
    less than half its period late (a weekly one: three and a half days), then missed."""
    clock.set(datetime(2026, 6, 1, 6, 0, tzinfo=UTC))  # Monday 07:00 local
    a = _patient(rt, clock.now(), "+447700900501")
    b = _patient(rt, clock.now(), "+447700900502")
    with rt.transaction() as s:
        save_schedule(s, rt.ctx, s.get(Patient, a), "checkin", "10:00", 7, clock.now(), "t")
        save_schedule(s, rt.ctx, s.get(Patient, b), "checkin", "20:30", 7, clock.now(), "t")
    clock.set(datetime(2026, 6, 2, 6, 30, tzinfo=UTC))  # down until Tuesday 07:30 local
    tick(rt)
    with rt.transaction() as s:
        started = sorted(c.patient_id for c in s.scalars(select(Conversation)))
    assert started == [a, b]  # both caught up (held until 08:00 by quiet hours)
    assert _audits(rt, "schedule.missed") == []

    clock.set(datetime(2026, 6, 12, 10, 30, tzinfo=UTC))  # down again until Friday 11:30 local
    tick(rt)
    missed = _audits(rt, "schedule.missed")
    # Monday 8 June's check-ins are over 3.5 days late: missed, not sent just before the next.
    assert sorted(m.details["slot"] for m in missed) == [
        "2026-06-08T09:00:00+00:00", "2026-06-08T19:30:00+00:00"]
    with rt.transaction() as s:
        assert len(s.scalars(select(Conversation)).all()) == 2
        by = {x.patient_id: x.next_due_at for x in s.scalars(select(Schedule))}
    assert by == {a: datetime(2026, 6, 15, 9, 0, tzinfo=UTC),
                  b: datetime(2026, 6, 15, 19, 30, tzinfo=UTC)}


def _lock_timeout():
    from sqlalchemy.exc import OperationalError

    return OperationalError("SELECT ... FOR UPDATE", {},
                            Exception("canceling statement due to lock timeout"))


def test_a_passing_database_error_leaves_the_schedule_due_for_the_next_tick(rt, clock,
                                                                           monkeypatch):
    clock.set(datetime(2026, 6, 1, 8, 0, tzinfo=UTC))
    pid = _patient(rt, clock.now())
    with rt.transaction() as s:
        save_schedule(s, rt.ctx, s.get(Patient, pid), "checkin", "10:00", 7, clock.now(), "t")
    real = conversations.start_flow
    failures = iter([True])

    def flaky(*args, **kwargs):
        ids = real(*args, **kwargs)  # writes, then the database gives up
        if next(failures, False):
            raise _lock_timeout()
        return ids

    monkeypatch.setattr(conversations, "start_flow", flaky)
    clock.set(datetime(2026, 6, 1, 9, 0, 1, tzinfo=UTC))
    report = tick(rt)
    assert report.failed == [] and _convs(rt) == []
    with rt.transaction() as s:
        sched = s.scalars(select(Schedule)).one()
        assert sched.next_due_at == datetime(2026, 6, 1, 9, 0, tzinfo=UTC)  # still due
    assert not _audits(rt, "schedule.error")
    [retry] = _audits(rt, "schedule.retry")
    assert retry.details["error"] == "OperationalError"
    clock.advance(seconds=5)
    tick(rt)
    assert [(f, st) for f, _, st in _convs(rt)] == [("checkin", "waiting")]
    with rt.transaction() as s:
        assert s.scalars(select(Schedule)).one().next_due_at == datetime(
            2026, 6, 8, 9, 0, tzinfo=UTC)


def test_a_database_error_that_does_not_pass_is_given_up_and_reported(rt, clock, monkeypatch):
    from bot.services import schedules

    clock.set(datetime(2026, 6, 1, 8, 0, tzinfo=UTC))
    pid = _patient(rt, clock.now())
    with rt.transaction() as s:
        save_schedule(s, rt.ctx, s.get(Patient, pid), "checkin", "10:00", 7, clock.now(), "t")

    def broken(*args, **kwargs):
        raise _lock_timeout()

    monkeypatch.setattr(conversations, "start_flow", broken)
    clock.set(datetime(2026, 6, 1, 9, 0, tzinfo=UTC))
    failed = []
    for _ in range(schedules.TRANSIENT_TRIES):
        failed.append(tick(rt).failed)  # the scheduler's tick, as it runs in production
        clock.advance(seconds=5)
    # Retried quietly, then given up: the tick names the step, so /healthz shows it.
    assert failed[:-1] == [[]] * (schedules.TRANSIENT_TRIES - 1)
    assert failed[-1] == ["schedules"]
    assert len(_audits(rt, "schedule.retry")) == schedules.TRANSIENT_TRIES - 1
    [err] = _audits(rt, "schedule.error")
    assert err.details["error"] == "OperationalError" and err.details["gave_up"] is True
    with rt.transaction() as s:
        assert s.scalars(select(Schedule)).one().next_due_at == datetime(
            2026, 6, 8, 9, 0, tzinfo=UTC)


class TestAPatientRowLockedOnPostgresql:
    @pytest.fixture
    def settings_overrides(self):
        return {"database_limits": {"lock_timeout_seconds": 0.5}}

    def test_the_due_checkin_is_sent_on_the_next_tick(self, rt, clock):
        """The scheduler does not wait for a patient row another transaction holds (a
        coordinator's change locks the patient, then the schedules: waiting could deadlock):
        this week's check-in is tried again on the next tick, not moved to next week."""
        from bot.store.db import make_engine

        if rt.engine.dialect.name != "postgresql":
            pytest.skip("row locks: PostgreSQL only (SQLite takes one writer at a time)")
        clock.set(datetime(2026, 6, 1, 8, 0, tzinfo=UTC))
        pid = _patient(rt, clock.now())
        with rt.transaction() as s:
            save_schedule(s, rt.ctx, s.get(Patient, pid), "checkin", "10:00", 7, clock.now(), "t")
        clock.set(datetime(2026, 6, 1, 9, 0, 1, tzinfo=UTC))
        other = make_engine(rt.settings.database_url)
        with other.connect() as stuck:
            stuck.begin()
            stuck.execute(select(Patient.id).where(Patient.id == pid).with_for_update())
            report = tick(rt)
            stuck.rollback()
        other.dispose()
        assert report.failed == [] and _convs(rt) == []
        assert _audits(rt, "schedule.wait") and not _audits(rt, "schedule.error")
        clock.advance(seconds=5)
        tick(rt)
        assert [(f, st) for f, _, st in _convs(rt)] == [("checkin", "waiting")]
        with rt.transaction() as s:
            assert s.scalars(select(Schedule)).one().next_due_at == datetime(
                2026, 6, 8, 9, 0, tzinfo=UTC)


def test_a_skipped_occurrence_is_not_a_run_to_count_from(rt, clock):
    """Paused at the time of the check-in, so nothing was sent: a coordinator who resumes the
    patient and saves the schedule again gets the next check-in at the next local time, not a
    week after a run that never happened."""
    clock.set(datetime(2026, 6, 1, 8, 0, tzinfo=UTC))  # Monday 09:00 London
    pid = _patient(rt, clock.now())
    with rt.transaction() as s:
        save_schedule(s, rt.ctx, s.get(Patient, pid), "checkin", "10:00", 7, clock.now(), "t")
        s.get(Patient, pid).status = "paused"
    clock.set(datetime(2026, 6, 1, 9, 0, tzinfo=UTC))  # 10:00: skipped, the patient is paused
    tick(rt)
    [skip] = _audits(rt, "schedule.skip")
    with rt.transaction() as s:
        assert s.scalars(select(Schedule)).one().last_run_at is None
        s.get(Patient, pid).status = "active"
        save_schedule(s, rt.ctx, s.get(Patient, pid), "checkin", "12:00", 7, clock.now(), "t")
    with rt.transaction() as s:
        assert s.scalars(select(Schedule).where(Schedule.active)).one().next_due_at == datetime(
            2026, 6, 1, 11, 0, tzinfo=UTC)  # today at 12:00
    assert skip.details["reason"]


# -- a first day: a weekday or a date the schedule first runs on ----------------------------


def _weekday(at, zone="Europe/London"):
    from zoneinfo import ZoneInfo
    return at.astimezone(ZoneInfo(zone)).strftime("%A")


def test_a_weekly_checkin_from_monday_stays_on_mondays_across_the_clock_change(rt, clock):
    from bot.services.schedules import schedule_weekday
    clock.set(datetime(2026, 3, 4, 12, 0, tzinfo=UTC))  # Wednesday; London BST from 29 March
    pid = _patient(rt, clock.now())
    with rt.transaction() as s:
        sched = save_schedule(s, rt.ctx, s.get(Patient, pid), "checkin", "10:00", 7,
                              clock.now(), "coordinator", first_day="Monday").schedule
        assert sched.next_due_at == datetime(2026, 3, 9, 10, 0, tzinfo=UTC)
        assert schedule_weekday(sched, "Europe/London") == "monday"
        sched_id = sched.id
    for _ in range(5):  # 9, 16, 23, 30 March (BST) and 6 April
        with rt.transaction() as s:
            due = s.get(Schedule, sched_id).next_due_at
        clock.set(due - timedelta(days=1))  # the last check-in, unanswered, times out
        tick(rt)
        clock.set(due)
        tick(rt)
    started = _checkins_started(rt)
    assert started == [datetime(2026, 3, 9, 10, 0, tzinfo=UTC),
                       datetime(2026, 3, 16, 10, 0, tzinfo=UTC),
                       datetime(2026, 3, 23, 10, 0, tzinfo=UTC),
                       datetime(2026, 3, 30, 9, 0, tzinfo=UTC),  # 10:00 BST
                       datetime(2026, 4, 6, 9, 0, tzinfo=UTC)]
    assert {_weekday(at) for at in started} == {"Monday"}
    [added] = _audits(rt, "schedule.add")
    assert added.actor == "coordinator" and added.details["first_day"] == "Monday"


@pytest.mark.parametrize(("first_day", "due"), [
    ("mon", datetime(2026, 3, 2, 10, 0, tzinfo=UTC)),  # today, 10:00 is still to come
    ("tue", datetime(2026, 3, 3, 10, 0, tzinfo=UTC)),
    ("SUNDAY", datetime(2026, 3, 8, 10, 0, tzinfo=UTC)),
    ("2026-03-02", datetime(2026, 3, 2, 10, 0, tzinfo=UTC)),
    (" 2026-03-12 ", datetime(2026, 3, 12, 10, 0, tzinfo=UTC)),
])
def test_the_first_day_sets_the_first_run_at_the_local_time(rt, clock, first_day, due):
    from bot.services.schedules import schedule_weekday
    clock.set(datetime(2026, 3, 2, 8, 0, tzinfo=UTC))  # Monday 08:00 London
    pid = _patient(rt, clock.now())
    with rt.transaction() as s:
        sched = save_schedule(s, rt.ctx, s.get(Patient, pid), "checkin", "10:00", 14,
                              clock.now(), "t", first_day=first_day).schedule
        assert sched.next_due_at == due
        assert schedule_weekday(sched, "Europe/London") == _weekday(due).lower()


def test_only_a_whole_number_of_weeks_has_a_weekday(rt, clock):
    from bot.services.schedules import schedule_weekday
    pid = _patient(rt, clock.now())
    with rt.transaction() as s:
        sched = save_schedule(s, rt.ctx, s.get(Patient, pid), "checkin", "10:00", 3,
                              clock.now(), "t", first_day="friday").schedule
        assert _weekday(sched.next_due_at) == "Friday"
        assert schedule_weekday(sched, "Europe/London") is None


@pytest.mark.parametrize(("first_day", "says"), [
    ("someday", "a weekday"),
    ("", "a weekday"),
    ("2026-02-30", "a weekday"),
    ("2026-3-9", "a weekday"),
    ("2026-03-01", "in the past"),
    ("2027-03-10", "at most a year ahead"),
])
def test_a_bad_first_day_is_refused_naming_it(rt, clock, first_day, says):
    clock.set(datetime(2026, 3, 2, 8, 0, tzinfo=UTC))
    pid = _patient(rt, clock.now())
    with rt.transaction() as s, pytest.raises(InvalidField) as exc:
        save_schedule(s, rt.ctx, s.get(Patient, pid), "checkin", "10:00", 7, clock.now(), "t",
                      first_day=first_day)
    assert exc.value.field == "first_day" and says in exc.value.message
    assert _audits(rt, "schedule.add") == []


def test_today_as_first_day_after_its_time_has_passed_is_refused(rt, clock):
    clock.set(datetime(2026, 3, 2, 11, 0, tzinfo=UTC))  # Monday 11:00 London
    pid = _patient(rt, clock.now())
    with rt.transaction() as s, pytest.raises(InvalidField) as exc:
        save_schedule(s, rt.ctx, s.get(Patient, pid), "checkin", "10:00", 7, clock.now(), "t",
                      first_day="2026-03-02")
    assert exc.value.field == "first_day" and "has passed" in exc.value.message
    with rt.transaction() as s:  # the weekday: next Monday
        sched = save_schedule(s, rt.ctx, s.get(Patient, pid), "checkin", "10:00", 7,
                              clock.now(), "t", first_day="monday").schedule
        assert sched.next_due_at == datetime(2026, 3, 9, 10, 0, tzinfo=UTC)


def test_a_first_day_moves_a_checkin_that_ran_but_never_to_the_day_it_ran(rt, clock):
    clock.set(datetime(2026, 6, 3, 8, 0, tzinfo=UTC))  # Wednesday, London BST
    pid = _patient(rt, clock.now())
    with rt.transaction() as s:
        save_schedule(s, rt.ctx, s.get(Patient, pid), "checkin", "10:00", 7, clock.now(), "t")
    _run(rt, clock, datetime(2026, 6, 3, 9, 30, tzinfo=UTC))  # ran Wednesday 10:00 local
    assert _checkins_started(rt) == [datetime(2026, 6, 3, 9, 0, tzinfo=UTC)]
    with rt.transaction() as s:  # weekly on Mondays from now on: next Monday, 5 days on
        result = save_schedule(s, rt.ctx, s.get(Patient, pid), "checkin", "14:00", 7,
                               clock.now(), "t", first_day="monday")
        assert result.schedule.next_due_at == datetime(2026, 6, 8, 13, 0, tzinfo=UTC)
    [change] = _audits(rt, "schedule.change")
    assert change.details["first_day"] == "monday"
    assert change.details["after"]["at"] == "14:00"
    with rt.transaction() as s:  # Wednesday again: not today (it ran today), next week
        result = save_schedule(s, rt.ctx, s.get(Patient, pid), "checkin", "14:00", 7,
                               clock.now(), "t", first_day="wed")
        assert result.schedule.next_due_at == datetime(2026, 6, 10, 13, 0, tzinfo=UTC)
    with rt.transaction() as s, pytest.raises(InvalidField) as exc:
        save_schedule(s, rt.ctx, s.get(Patient, pid), "checkin", "14:00", 7, clock.now(), "t",
                      first_day="2026-06-03")
    assert exc.value.field == "first_day" and "already ran" in exc.value.message
