"""A reminder that falls due while the patient has a check-in question open whose answer can
raise a red flag ("any new numbness?") does not close that check-in: it goes as a notice that
asks for no reply, and the patient's later YES still reaches the care team as an emergency.
Before, the check-in was superseded and that YES was taken as the reminder's "done"."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from bot.domain import gsm7
from bot.scheduler import tick
from bot.services.dispatcher import Pacer
from bot.services.patients import Enrolment, enrol_patient
from bot.services.schedules import add_schedule
from bot.store.models import Answer, AuditLog, Conversation, Escalation, Patient, Schedule
from tests.test_answers_in_alerts import _texted
from tests.test_late_answers import _to_patient

PHONE = "+447700900123"
TABLETS = "Take your EVENING tablets"  # the notice adds the full stop, as the flow does
NOTICE = ("Reminder from Spine Oncology Clinic: Take your EVENING tablets. No need to reply to "
          "this one. Please do still answer the check-in question we sent you.")


@pytest.fixture(autouse=True)
def _fast_pacer(rt):
    rt.dispatcher.pacer = Pacer(1000)  # every routine message goes out on the tick it is due


def _enrol(rt, clock):
    with rt.transaction() as s:
        p = enrol_patient(s, Enrolment(PHONE, "Ada Lovelace", "Europe/London"),
                          languages=["en", "es"], now=clock.now(), actor="test")
        p.consent_at = clock.now()
        add_schedule(s, rt.ctx, p, "reminder", "18:00", 1, clock.now(), "test",
                     {"reminder_text": TABLETS})
        return p.id


def _convs(rt):
    with rt.transaction() as s:
        return [(c.flow_id, c.status, c.current_node)
                for c in s.scalars(select(Conversation).order_by(Conversation.id))]


def test_a_yes_after_the_reminder_still_answers_the_red_flag_question(client, rt, clock,
                                                                       messenger):
    clock.set(datetime(2026, 3, 2, 16, 0, tzinfo=UTC))  # London = UTC in March
    pid = _enrol(rt, clock)
    _texted(client, "CHECKIN")
    _texted(client, "0")  # no pain: next, "any new numbness?"
    assert _convs(rt) == [("checkin", "waiting", "numbness")]

    clock.set(datetime(2026, 3, 2, 18, 0, tzinfo=UTC))  # two hours on: the reminder is due
    tick(rt)
    assert _convs(rt) == [("checkin", "waiting", "numbness")]  # kept, no reminder flow
    assert _to_patient(messenger)[-1] == NOTICE
    assert gsm7.is_gsm7(NOTICE) and gsm7.segments(NOTICE) <= 2
    with rt.transaction() as s:
        [notice] = s.scalars(select(AuditLog).where(AuditLog.action == "schedule.notice")).all()
        assert (notice.details["node"], notice.details["flow"]) == ("numbness", "reminder")
        sched = s.scalars(select(Schedule)).one()
        # It ran: next the same time tomorrow, and not again today.
        assert sched.next_due_at == datetime(2026, 3, 3, 18, 0, tzinfo=UTC)
        assert sched.last_run_at == clock.now()
    tick(rt)
    assert _to_patient(messenger).count(NOTICE) == 1

    clock.set(datetime(2026, 3, 2, 18, 20, tzinfo=UTC))
    _texted(client, "yes")
    with rt.transaction() as s:
        esc = s.scalars(select(Escalation)).one()
        assert (esc.level, esc.flags, esc.patient_id) == ("emergency", ["sensory_loss"], pid)
        assert esc.words.startswith("Q: Since your last check-in, have you had any new numbness")
        answers = [(a.question_key, a.value) for a in s.scalars(select(Answer))]
        assert answers == [("worst_pain", 0), ("numbness", "yes")]  # not a reminder's "done"
    # The emergency instruction alone (the check-in's end has no text of its own).
    assert _to_patient(messenger)[-1].startswith("Ada, this could be serious")
    assert "Lie flat" in _to_patient(messenger)[-1]
    assert not any("We have alerted" in text for text in _to_patient(messenger))


def test_a_reminder_still_replaces_one_waiting_on_a_question_with_no_red_flag(client, rt, clock,
                                                                              messenger):
    """The morning reminder left unanswered: no red flag hangs on it, so the evening one
    replaces it as before (superseded), and is asked as a question."""
    clock.set(datetime(2026, 3, 2, 8, 0, tzinfo=UTC))
    pid = _enrol(rt, clock)
    with rt.transaction() as s:
        add_schedule(s, rt.ctx, s.get(Patient, pid), "reminder", "09:00", 1, clock.now(),
                     "test", {"reminder_text": "Take your MORNING tablets."})
    clock.set(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
    tick(rt)
    clock.set(datetime(2026, 3, 2, 18, 0, tzinfo=UTC))
    tick(rt)
    assert [c[:2] for c in _convs(rt)] == [("reminder", "superseded"), ("reminder", "waiting")]
    sent = _to_patient(messenger)
    assert NOTICE not in sent and sent[-1].startswith("Reminder from Spine Oncology Clinic: "
                                                      "Take your EVENING tablets. Reply 1")


def test_a_patient_who_stopped_gets_no_notice(client, rt, clock, messenger):
    clock.set(datetime(2026, 3, 2, 16, 0, tzinfo=UTC))
    pid = _enrol(rt, clock)
    _texted(client, "CHECKIN")
    _texted(client, "0")
    with rt.transaction() as s:
        s.get(Patient, pid).status = "paused"
    clock.set(datetime(2026, 3, 2, 18, 0, tzinfo=UTC))
    tick(rt)
    assert NOTICE not in _to_patient(messenger)
