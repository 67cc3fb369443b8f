"""A new patient's replies to the welcome's consent question ("Do you agree to get these
messages? Reply YES..."). Words the bot does not understand there ("I've been feeling awful
since the op", "who is this?") get the re-prompt, and are listed for the care team to read,
as a declined patient's later words are: they may be the only thing this patient ever tells
the clinic. A YES, a NO, or a keyword (CHECKIN) is an answer, not words to read. A red flag
in such a reply is alerted as anyone's."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from bot.services.conversations import active_conversation, start_flow
from bot.services.health import messages_to_read
from bot.services.patients import Enrolment, enrol_patient
from bot.store.models import Escalation, Patient
from tests.simulator_support import sent_to_phone, texted_from

PHONE = "+447700900123"
ASKED = "Do you agree to get these messages?"
REPROMPT = "Sorry, we did not understand. This is Spine Oncology Clinic"
UNCLEAR = "Sorry, we could not understand your replies"


def _texted(client, *bodies):
    texted_from(client, PHONE, *bodies)


def _to_patient(messenger):
    return sent_to_phone(messenger, PHONE)


def _to_read(rt):
    with rt.transaction() as s:
        return [m.body for m in messages_to_read(s)]


def _welcomed(rt, messenger, language="en") -> int:
    """A patient just enrolled: the welcome's texts went, the consent question waits."""
    with rt.transaction() as s:
        p = enrol_patient(s, Enrolment(PHONE, "Ada Lovelace", "Europe/London",
                                       language=language),
                          languages=["en", "es"], now=rt.clock.now(), actor="test")
        s.flush()
        ids = start_flow(s, rt.ctx, p, "welcome", rt.clock.now())
        pid = p.id
    rt.dispatch_soon(ids)
    if language == "en":
        assert _to_patient(messenger)[-1].startswith(ASKED)
    return pid


def _waiting_at(rt, pid):
    with rt.transaction() as s:
        conv = active_conversation(s, pid)
        return conv and (conv.flow_id, conv.current_node)


def _consent_at(rt, pid):
    with rt.transaction() as s:
        return s.get(Patient, pid).consent_at


@pytest.mark.parametrize("words", ["I've been feeling awful since the op", "who is this?",
                                   "can you ask the nurse about my dressing", "maybe later"])
def test_words_not_understood_at_the_consent_question_are_listed_for_the_team(
        client, rt, messenger, words):
    pid = _welcomed(rt, messenger)
    told = len(_to_patient(messenger))
    _texted(client, words)
    assert _to_read(rt) == [words]
    # Asked again, as before: the re-prompt, or (a question to the team: "who is this?")
    # that the team will read it and the question in its own words.
    assert _to_patient(messenger)[-1].startswith((REPROMPT, ASKED))
    assert len(_to_patient(messenger)) > told
    assert _waiting_at(rt, pid) == ("welcome", "consent")
    assert _consent_at(rt, pid) is None
    _texted(client, "yes")
    assert _consent_at(rt, pid) is not None
    assert _to_read(rt) == [words]  # the YES is an answer, not words to read


def test_every_reply_not_understood_is_listed_up_to_the_end(client, rt, messenger):
    pid = _welcomed(rt, messenger)
    _texted(client, "I've been feeling awful since the op", "what is this about",
            "my wound is weeping")
    assert _to_patient(messenger)[-1].startswith(UNCLEAR)
    assert _to_read(rt) == ["my wound is weeping", "what is this about",
                            "I've been feeling awful since the op"]
    assert _waiting_at(rt, pid) is None and _consent_at(rt, pid) is None


def test_in_spanish(client, rt, messenger):
    _welcomed(rt, messenger, language="es")
    _texted(client, "me encuentro fatal desde la operacion")
    assert _to_read(rt) == ["me encuentro fatal desde la operacion"]
    assert _to_patient(messenger)[-1].startswith("Perdone, no le hemos entendido.")


@pytest.mark.parametrize("answer", ["yes", "YES please", "ok", "no", "No thanks",
                                    "not interested", "CHECKIN"])
def test_an_answer_or_a_keyword_is_not_listed(client, rt, messenger, answer):
    _welcomed(rt, messenger)
    _texted(client, answer)
    assert _to_read(rt) == []


def test_an_emergency_at_the_consent_question_is_alerted(client, rt, messenger):
    pid = _welcomed(rt, messenger)
    told = len(_to_patient(messenger))
    _texted(client, "I've been feeling awful since the op and now I can't feel my legs")
    with rt.transaction() as s:
        [esc] = s.scalars(select(Escalation)).all()
        assert (esc.level, esc.patient_id) == ("emergency", pid)
    [instruction] = _to_patient(messenger)[told:]  # no re-prompt after it
    assert "this could be serious" in instruction
    assert _waiting_at(rt, pid) is None  # the welcome was interrupted
    oncall = rt.settings.care_team.contact(rt.settings.care_team.escalation_chain[0]).phone
    assert any(m.body.startswith("EMERGENCY") for m in messenger.sent if m.to == oncall)


def test_an_urgent_red_flag_at_the_consent_question_is_alerted_and_listed(client, rt,
                                                                         messenger):
    pid = _welcomed(rt, messenger)
    told = len(_to_patient(messenger))
    words = "I have had a fever of 38.5 since the op"
    _texted(client, words)
    with rt.transaction() as s:
        [esc] = s.scalars(select(Escalation)).all()
        assert (esc.level, esc.patient_id) == ("urgent", pid)
    assert "Your care team will call you today" in _to_patient(messenger)[told]
    oncall = rt.settings.care_team.contact(rt.settings.care_team.escalation_chain[0]).phone
    assert any(m.body.startswith("URGENT") for m in messenger.sent if m.to == oncall)
    assert _to_read(rt) == [words]
