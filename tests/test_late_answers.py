"""A reply that comes after a check-in closed unanswered ("we have not heard back, so this
check-in is now closed") and answers its last question with a red flag (a YES to "any new
numbness?" a day late) goes through the same rules as an answer in time: the patient gets the
instruction, the team the alert with the question. Before, it was only listed to read."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select

from bot.scheduler import tick
from bot.services.health import messages_to_read
from bot.store.models import AuditLog, Conversation, Escalation
from tests.test_answers_in_alerts import PHONE, _enrol, _texted

CLOSED = "We have not heard back, so this check-in is now closed."
START = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def _to_patient(messenger):
    return [m.body for m in messenger.sent if m.to == PHONE]


def _escalations(rt):
    with rt.transaction() as s:
        return [(e.level, e.flags, e.words) for e in s.scalars(select(Escalation))]


def _closed_unanswered(client, rt, clock, messenger, *answers):
    """A check-in answered up to a question, then left: its wait runs out and it closes."""
    clock.set(START)
    _enrol(rt)
    _texted(client, "CHECKIN", *answers)
    clock.advance(hours=24, minutes=1)
    tick(rt)
    assert _to_patient(messenger)[-1].startswith(CLOSED)
    with rt.transaction() as s:
        assert s.scalars(select(Conversation.status)).all() == ["completed"]


def test_a_late_yes_to_an_emergency_question_alerts_as_an_answer_in_time_would(
        client, rt, clock, messenger):
    _closed_unanswered(client, rt, clock, messenger, "0")  # left at "any new numbness?"
    clock.advance(hours=3)
    _texted(client, "yes")
    [(level, flags, words)] = _escalations(rt)
    assert (level, flags) == ("emergency", ["sensory_loss"])
    assert words == ("Q: Since your last check-in, have you had any new numbness, tingling or "
                     "pins and needles in your arms, legs, buttocks or feet? A: yes")
    assert "this could be serious" in _to_patient(messenger)[-1]
    oncall = rt.settings.care_team.contact(rt.settings.care_team.escalation_chain[0]).phone
    [alert] = [m.body for m in messenger.sent if m.to == oncall]
    assert alert.startswith("EMERGENCY") and "Q: Since your last check-in" in alert
    with rt.transaction() as s:
        [late] = s.scalars(select(AuditLog).where(
            AuditLog.action == "conversation.late_answer")).all()
        assert (late.details["node"], late.details["level"]) == ("numbness", "emergency")
    _texted(client, "yes")  # once only: the question is spent, no second escalation
    assert len(_escalations(rt)) == 1


def test_a_late_yes_to_an_urgent_question_gets_the_same_day_call(client, rt, clock, messenger):
    _closed_unanswered(client, rt, clock, messenger, "3")  # left at "is this pain new?"
    clock.advance(hours=1)
    _texted(client, "y")
    [(level, flags, words)] = _escalations(rt)
    assert (level, flags) == ("urgent", ["new_back_pain"])
    assert words == "Q: Is this pain new, or different from your usual pain? A: y (Yes)"
    assert _to_patient(messenger)[-1].startswith("Ada, thank you for telling us. Your care "
                                                 "team will call you today.")


def test_a_late_no_is_listed_to_read_as_before(client, rt, clock, messenger):
    _closed_unanswered(client, rt, clock, messenger, "0")
    clock.advance(hours=1)
    _texted(client, "no")
    assert _escalations(rt) == []
    assert _to_patient(messenger)[-1].startswith("Thank you, Ada. Your message has been saved")
    with rt.transaction() as s:
        assert [m.body for m in messages_to_read(s)] == ["no"]


def test_a_yes_after_the_window_is_listed_to_read(client, rt, clock, messenger):
    _closed_unanswered(client, rt, clock, messenger, "0")
    clock.advance(hours=24, minutes=1)
    _texted(client, "yes")
    assert _escalations(rt) == []
    with rt.transaction() as s:
        assert [m.body for m in messages_to_read(s)] == ["yes"]


def test_a_check_in_answered_to_its_end_leaves_no_question_open(client, rt, clock, messenger):
    clock.set(START)
    _enrol(rt)
    _texted(client, "CHECKIN", "0", *["no"] * 12)
    with rt.transaction() as s:
        conv = s.scalars(select(Conversation)).one()
        assert conv.status == "completed" and "timed_out_at" not in conv.state
    clock.advance(hours=1)
    _texted(client, "yes")
    assert _escalations(rt) == []


def test_a_reply_after_a_reminder_timed_out_asks_nothing(client, rt, clock, messenger):
    """A question with no red flag (the reminder's "done?") is not read late."""
    from bot.services.conversations import start_flow
    from bot.store.models import Patient

    clock.set(START)
    _enrol(rt)
    with rt.transaction() as s:
        p = s.scalars(select(Patient)).one()
        start_flow(s, rt.ctx, p, "reminder", clock.now(), routine=True,
                   params={"reminder_text": "Take your tablets"})
    clock.advance(hours=24, minutes=1)
    tick(rt)
    clock.advance(hours=1)
    _texted(client, "yes")
    assert _escalations(rt) == []
