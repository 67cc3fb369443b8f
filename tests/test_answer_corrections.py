"""A patient who corrects a number at the next question ("3", then "sorry I meant 8"): the
answer is changed, its red flags are raised as the flow would have raised them (pain 8 is
severe pain, urgent tier), the patient is told the correction was recorded and the question
waiting is asked again. Only an explicit correction with a number in the previous question's
range counts; anything else goes to the question waiting, as before."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from bot.domain import answers, gsm7
from bot.services.conversations import active_conversation
from bot.store.models import Answer, AuditLog, Escalation, Patient
from tests.test_answers_in_alerts import PAIN_NEW, PHONE, _enrol, _texted

PAIN_Q = "Since your last check-in, what was your worst pain?"
NUMBNESS_START = "Since your last check-in, have you had any new numbness"
YESNO_SORRY = "Sorry, we did not understand. Please reply YES or NO."


def _to_patient(messenger):
    return [m.body for m in messenger.sent if m.to == PHONE]


def _state(rt):
    with rt.transaction() as s:
        pid = s.scalars(select(Patient.id)).one()
        conv = active_conversation(s, pid)
        answers_ = [(a.question_key, a.value) for a in s.scalars(select(Answer)
                                                                  .order_by(Answer.id))]
        escalations = [(e.level, e.flags, e.words) for e in s.scalars(select(Escalation))]
        return (conv.current_node if conv else None, dict(conv.state["answers"]) if conv
                else None, list(conv.state["flags"]) if conv else None, answers_, escalations)


@pytest.mark.parametrize("correction", [
    "sorry I meant 8", "Sorry, I meant 8", "I meant 8", "correction: 8", "8 not 3",
    "oops i meant eight", "perdon, queria decir 8", "Perdón, quería decir 8"])
def test_a_corrected_pain_score_is_recorded_and_raises_severe_pain(client, rt, messenger,
                                                                  correction):
    _enrol(rt)
    _texted(client, "CHECKIN", "3")
    assert _to_patient(messenger)[-1].startswith(PAIN_NEW)
    told = len(_to_patient(messenger))
    _texted(client, correction)
    node, state_answers, flags, stored, escalations = _state(rt)
    assert node == "pain_new"  # the question waiting, asked again
    assert state_answers == {"worst_pain": 8}
    assert flags == ["severe_pain"]
    assert stored == [("worst_pain", 3), ("worst_pain", 8)]  # the last one counts
    [(level, esc_flags, words)] = escalations
    assert (level, esc_flags) == ("urgent", ["severe_pain"])
    assert words.startswith(f"Q: {PAIN_Q} A: ") and "(8 on a scale of 0 to 10)" in words
    note, again = _to_patient(messenger)[told:]
    assert note == "Thank you, Ada. We have changed your answer to the last question to 8."
    assert again.startswith(PAIN_NEW)
    with rt.transaction() as s:
        [audit] = s.scalars(select(AuditLog).where(
            AuditLog.action == "conversation.answer_corrected")).all()
        assert {k: audit.details[k] for k in ("node", "key", "previous", "value", "flags")} == {
            "node": "pain", "key": "worst_pain", "previous": 3, "value": 8,
            "flags": ["severe_pain"]}


def test_the_check_in_then_goes_on_and_ends_with_the_urgent_end(client, rt, messenger):
    _enrol(rt)
    _texted(client, "CHECKIN", "3", "sorry I meant 8", "no", "no", "no", "no", "no",
            "no", "no", "no", "no", "no", "no", "no", "1", "nothing else")
    assert "will contact you today" in _to_patient(messenger)[-1]
    node, _answers, _flags, stored, escalations = _state(rt)
    assert node is None and len(escalations) == 1
    assert ("worst_pain", 8) in stored


def test_a_correction_to_a_branch_the_flow_skipped_asks_what_it_would_have_asked(
        client, rt, messenger):
    _enrol(rt)
    _texted(client, "CHECKIN", "0")  # no pain: straight to "any new numbness?"
    assert _to_patient(messenger)[-1].startswith(NUMBNESS_START)
    told = len(_to_patient(messenger))
    _texted(client, "sorry I meant 8")
    node, state_answers, flags, _stored, escalations = _state(rt)
    assert (node, state_answers, flags) == ("pain_new", {"worst_pain": 8}, ["severe_pain"])
    assert [e[:2] for e in escalations] == [("urgent", ["severe_pain"])]
    note, asked = _to_patient(messenger)[told:]
    assert note.endswith("to 8.") and asked.startswith(PAIN_NEW)


def test_a_correction_down_keeps_the_red_flag_already_raised(client, rt, messenger):
    # The alert has gone; a red flag is never taken back by the bot (a nurse judges it).
    _enrol(rt)
    _texted(client, "CHECKIN", "8", "I meant 3")
    node, state_answers, flags, _stored, escalations = _state(rt)
    assert (node, state_answers, flags) == ("pain_new", {"worst_pain": 3}, ["severe_pain"])
    assert len(escalations) == 1


def test_the_note_is_in_spanish_for_a_spanish_speaker(client, rt, messenger):
    _enrol(rt, language="es")
    _texted(client, "CHECKIN", "3")
    told = len(_to_patient(messenger))
    _texted(client, "perdon, queria decir 8")
    note, again = _to_patient(messenger)[told:]
    assert note == "Gracias, Ada. Hemos cambiado su respuesta a la pregunta anterior: 8."
    assert again.startswith("¿Es un dolor nuevo")
    assert _state(rt)[1] == {"worst_pain": 8}


@pytest.mark.parametrize("reply", [
    "8",                # no correction phrase: a reply to "is this pain new?", not understood
    "I meant 11",       # out of the question's range
    "9 not 4",          # the answer was 3, not 4
    "I meant 3",        # the same answer
    "I meant 8 or 9",   # two numbers
    "I meant 5 or so",
    "I meant yes",
])
def test_anything_else_goes_to_the_question_waiting_as_before(client, rt, messenger, reply):
    _enrol(rt)
    _texted(client, "CHECKIN", "3", reply)
    node, state_answers, flags, _stored, escalations = _state(rt)
    assert state_answers["worst_pain"] == 3 and flags == [] and escalations == []
    assert node == "pain_new"
    assert _to_patient(messenger)[-1] == YESNO_SORRY


def test_only_at_the_next_question(client, rt, messenger):
    _enrol(rt)
    _texted(client, "CHECKIN", "3", "no", "I meant 8")  # at "worse at night?" now
    node, state_answers, flags, _stored, escalations = _state(rt)
    assert (node, state_answers["worst_pain"], flags, escalations) == ("pain_night", 3, [], [])
    assert _to_patient(messenger)[-1] == YESNO_SORRY


def test_not_after_the_next_question_moved_on_unanswered(client, rt, messenger):
    # "is this pain new?" not understood three times: the flow moved on without its answer.
    _enrol(rt)
    _texted(client, "CHECKIN", "3", "hmm", "hmm", "hmm", "I meant 8")
    node, state_answers, _flags, _stored, _escalations = _state(rt)
    assert (node, state_answers["worst_pain"]) == ("pain_night", 3)


def test_a_correction_after_a_reply_not_understood_at_the_next_question_counts(
        client, rt, messenger):
    _enrol(rt)
    _texted(client, "CHECKIN", "3", "hmm", "I meant 8")
    node, state_answers, flags, _stored, _escalations = _state(rt)
    assert (node, state_answers, flags) == ("pain_new", {"worst_pain": 8}, ["severe_pain"])


@pytest.mark.parametrize("text,previous,expected", [
    ("sorry I meant 8", 3, 8), ("I mean 8", 3, 8), ("correction 8", 3, 8),
    ("8 not 3", 3, 8), ("i meant 8 not 3", 3, 8), ("queria decir ocho", 3, 8),
    ("quise decir 8", 3, 8), ("I meant 8/10", 3, 8), ("8 no 3", 3, 8), ("I meant 0", 3, 0),
    ("8 not 4", 3, None), ("I meant 8 not 4", 3, None), ("I meant 3", 3, None),
    ("8", 3, None), ("meant", 3, None), ("I meant 8 and 9", 3, None), ("I meant 12", 3, None),
    ("I meant 8 but it is better now", 3, None), ("not 3", 3, None),
    # The number said with its subject, or "actually": these went to "is this pain new?",
    # not understood there, and the pain stayed 3.
    ("the pain is 8 not 3", 3, 8), ("it was 8 not 3", 3, 8), ("its 8 not 3", 3, 8),
    ("oh my pain was 8 not 3", 3, 8), ("actually 8", 3, 8), ("Actually it was 8", 3, 8),
    ("sorry I meant the pain was 8", 3, 8), ("el dolor es 8, no 3", 3, 8),
    ("the pain is 8", 3, None), ("it was 8", 3, None), ("actually 3", 3, None),
    ("its 8 not 4", 3, None), ("actually no", 3, None),
])
def test_the_correction_parser(text, previous, expected):
    assert answers.parse_correction(text, 0, 10, previous) == expected


def test_the_note_fits_in_one_segment_of_plain_text(rt):
    for language in ("en", "es"):
        body = rt.ctx.texts.render("corrected", language, name="x" * 20, value="10")
        assert gsm7.is_gsm7(body) and gsm7.segments(body) == 1


def test_a_correction_with_a_question_mark_is_a_correction_not_a_request(client, rt,
                                                                          messenger):
    _enrol(rt)
    _texted(client, "CHECKIN", "3")
    told = len(_to_patient(messenger))
    _texted(client, "sorry, I meant 8?")
    note, again = _to_patient(messenger)[told:]
    assert note.endswith("to 8.") and again.startswith(PAIN_NEW)
    assert _state(rt)[1] == {"worst_pain": 8}
