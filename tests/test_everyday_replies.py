"""Everyday replies through the real inbound path: carrier keywords and red-flag triage come
first, then the conversation parses what is left (see bot/services/inbound.py)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from bot.services.conversations import active_conversation, start_flow
from bot.services.health import messages_to_read
from bot.services.patients import Enrolment, onboard_patient
from bot.store.models import Answer, Escalation, Patient
from tests.twilio_signing import sign
from tests.twilio_support import (  # noqa: F401 - fixtures
    AUTH_TOKEN,
    PUBLIC_URL,
    fake_http,
    messenger,
    sent_to,
    settings_overrides,
)

PHONE = "+447700900123"
INBOUND = "/webhooks/twilio/message"
_n = iter(range(10**6))


def texted(client, body):
    params = {"MessageSid": f"SM{next(_n):032d}", "From": PHONE, "To": "+447700900999",
              "Body": body}
    res = client.post(INBOUND, data=params, headers={
        "X-Twilio-Signature": sign(AUTH_TOKEN, PUBLIC_URL + INBOUND, params)})
    assert res.status_code == 200


def welcomed(rt) -> int:
    with rt.transaction() as s:
        patient, _ = onboard_patient(s, rt.ctx, Enrolment(PHONE, "Joan Baker", "Europe/London"),
                                     rt.clock.now(), "test", respect_quiet_hours=False)
        return patient.id


def answers(rt, pid) -> dict:
    with rt.transaction() as s:
        return {a.question_key: a.value
                for a in s.scalars(select(Answer).where(Answer.patient_id == pid)
                                   .order_by(Answer.id))}


def patient(rt, pid):
    with rt.transaction() as s:
        p = s.get(Patient, pid)
        return p.status, p.consent_at


@pytest.mark.parametrize("reply", ["Yes x", "Yes ok", "ok", "okay"])
def test_an_everyday_yes_gives_consent(client, rt, fake_http, reply):
    pid = welcomed(rt)
    texted(client, reply)
    assert answers(rt, pid) == {"consent": "yes"}
    assert patient(rt, pid)[1] is not None


def test_please_stop_texting_me_declines_and_a_whole_message_stop_still_opts_out(
        client, rt, fake_http):
    pid = welcomed(rt)
    texted(client, "Please stop texting me")
    assert answers(rt, pid) == {"consent": "no"}
    assert patient(rt, pid) == ("active", None)
    texted(client, "STOP")
    assert patient(rt, pid)[0] == "opted_out"
    assert answers(rt, pid) == {"consent": "no"}  # the carrier keyword, not an answer


def _at_painkillers_question(rt, pid, client):
    with rt.transaction() as s:
        p = s.get(Patient, pid)
        p.consent_at = rt.clock.now()
        start_flow(s, rt.ctx, p, "checkin", rt.clock.now())
    for reply in ("3", "no", "no", "no", "no"):  # pain 3, not new, night, cough, spread
        texted(client, reply)


def test_not_really_with_a_reason_is_a_no_and_the_check_in_goes_on(client, rt, fake_http):
    pid = welcomed(rt)
    _at_painkillers_question(rt, pid, client)
    fake_http.reset()
    texted(client, "Not really, the tablets help x")
    assert answers(rt, pid)["pain_uncontrolled"] == "no"
    [question] = [d["Body"] for d in sent_to(fake_http, PHONE)]
    assert "numbness, tingling or pins and needles" in question


def test_no_with_a_red_flag_runs_the_emergency_path_and_records_no_answer(client, rt, fake_http):
    pid = welcomed(rt)
    _at_painkillers_question(rt, pid, client)
    texted(client, "Not really, the tablets help x")
    assert answers(rt, pid)["pain_uncontrolled"] == "no"  # now at the numbness question
    texted(client, "No, but my legs are weak")
    assert "numbness" not in answers(rt, pid)
    with rt.transaction() as s:
        esc = s.scalars(select(Escalation)).one()
        assert esc.level == "emergency" and "limb_weakness" in esc.flags
        assert active_conversation(s, pid) is None  # the emergency stopped the check-in


def _to_read(rt) -> list[str]:
    with rt.transaction() as s:
        return [m.body for m in messages_to_read(s)]


def _at_anything_else_question(rt, pid, client):
    with rt.transaction() as s:
        p = s.get(Patient, pid)
        p.consent_at = rt.clock.now()
        start_flow(s, rt.ctx, p, "checkin", rt.clock.now())
    # no pain; no numbness, weakness, balance, bladder, bowel, saddle, fever; tiredness 1
    for reply in ("0", "no", "no", "no", "no", "no", "no", "no", "1"):
        texted(client, reply)


def test_words_for_the_care_team_at_the_end_of_a_check_in_are_listed_for_them_to_read(
        client, rt, fake_http):
    # "Is there anything else you want your care team to know?" invites a message for the
    # team, and the check-in ends "your answers have gone to your care team": the message must
    # be listed for them to read, as the same words sent outside a check-in are. Before, it
    # was only stored as the check-in's answer, and nobody was told to read it.
    pid = welcomed(rt)
    _at_anything_else_question(rt, pid, client)
    said = "I've run out of my morphine, can someone call me please"
    texted(client, said)
    assert answers(rt, pid)["anything_else"] == said
    assert _to_read(rt) == [said]


@pytest.mark.parametrize("reply", ["no", "No thanks", "nope, all good x", "nada", "Nothing"])
def test_a_no_to_anything_else_is_not_listed_to_read(client, rt, fake_http, reply):
    pid = welcomed(rt)
    _at_anything_else_question(rt, pid, client)
    texted(client, reply)
    assert answers(rt, pid)["anything_else"] == reply
    assert _to_read(rt) == []


def _question_text(rt, node_id: str) -> str:
    return rt.ctx.flows.get("checkin").node(node_id).text["en"]


def _aside_note(rt, pid) -> str:
    with rt.transaction() as s:
        return rt.ctx.text_for(s.get(Patient, pid), "aside")


@pytest.mark.parametrize("question", [
    "Can I talk to a nurse?", "who is this?", "please can someone ring me",
    "\u00bfQui\u00e9n es?", "I want to speak to my doctor"])
def test_a_question_for_the_team_at_a_check_in_question_is_listed_and_the_question_asked_again(
        client, rt, fake_http, question):
    # Before, it got "Sorry, we did not understand. Please reply YES or NO." and nobody was
    # told of it: the patient's request for a nurse was lost.
    pid = welcomed(rt)
    _at_painkillers_question(rt, pid, client)
    fake_http.reset()
    texted(client, question)
    told = [d["Body"] for d in sent_to(fake_http, PHONE)]
    assert told == [_aside_note(rt, pid), _question_text(rt, "pain_painkillers")]
    assert "call Spine Oncology Clinic on" in told[0]
    assert _to_read(rt) == [question]
    assert "pain_uncontrolled" not in answers(rt, pid)
    texted(client, "no")
    assert answers(rt, pid)["pain_uncontrolled"] == "no"


def test_questions_at_a_red_flag_question_are_listed_and_still_count_as_not_understood(
        client, rt, fake_http):
    # Recall over precision, as before: three replies that do not answer "any new numbness?"
    # alert the team as a YES would. Each is listed for the team to read.
    pid = welcomed(rt)
    _at_painkillers_question(rt, pid, client)
    texted(client, "no")  # now at the numbness question
    asked = ["Can I talk to a nurse?", "who is this?", "can someone call me"]
    fake_http.reset()
    for question in asked:
        texted(client, question)
    assert sorted(_to_read(rt)) == sorted(asked)
    with rt.transaction() as s:
        esc = s.scalars(select(Escalation)).one()
        assert esc.level == "emergency" and esc.flags == ["sensory_loss"]
    # Whom to call, and the question again, after the first two; the last gets the alert's
    # own texts (the urgent-care instruction and "we have alerted your care team now") only.
    told = [d["Body"] for d in sent_to(fake_http, PHONE)]
    assert told[:4] == [_aside_note(rt, pid), _question_text(rt, "numbness")] * 2
    assert _aside_note(rt, pid) not in told[4:] and len(told) == 6


def test_a_misspelt_yes_to_a_red_flag_question_alerts_at_once(client, rt, fake_http):
    pid = welcomed(rt)
    _at_painkillers_question(rt, pid, client)
    texted(client, "no")  # now at the numbness question
    texted(client, "Yse")
    assert answers(rt, pid)["numbness"] == "yes"
    with rt.transaction() as s:
        esc = s.scalars(select(Escalation)).one()
        assert esc.level == "emergency" and esc.flags == ["sensory_loss"]


# The yes/no red-flag questions of the check-in, and the replies ("no", ...) that lead to each
# from the numbness question.
_TO_QUESTION = {"numbness": (), "weakness": ("no",), "balance": ("no", "no"),
                "bladder": ("no", "no", "no")}


@pytest.mark.parametrize(("language", "question", "reply", "flag"), [
    ("en", "weakness", "no, I use a stick now", "gait_balance"),
    ("en", "weakness", "no, my wife helps me walk", "gait_balance"),
    ("en", "weakness", "no, I am stuck in bed", "gait_balance"),
    ("en", "weakness", "No I need a frame now", "gait_balance"),
    ("en", "balance", "no, I am not steady", "gait_balance"),
    ("en", "bladder", "no, I need to strain", "bladder_dysfunction"),
    ("en", "bladder", "no, I have to rush to the loo", "bladder_dysfunction"),
    ("en", "bladder", "No, I dribble a bit", "bladder_dysfunction"),
    ("en", "bladder", "no, leaking a little", "bladder_dysfunction"),
    ("es", "weakness", "no, uso baston ahora", "gait_balance"),
    ("es", "bladder", "no, se me escapan unas gotas", "bladder_dysfunction"),
    ("es", "bladder", "no, tengo que correr al baño", "bladder_dysfunction"),
])
def test_no_with_a_red_flag_reason_at_a_red_flag_question_alerts_and_is_not_a_no(
        client, rt, fake_http, language, question, reply, flag):
    # "No, I use a stick now" to "any new weakness or difficulty walking?": the reason is the
    # red flag the question asks about. Before, it was recorded as a plain NO and nobody was
    # alerted.
    pid = welcomed(rt)
    with rt.transaction() as s:
        s.get(Patient, pid).language = language
    _at_painkillers_question(rt, pid, client)
    for answer in ("no", *_TO_QUESTION[question]):  # painkillers, then up to the question
        texted(client, answer)
    assert question not in answers(rt, pid)
    texted(client, reply)
    assert question not in answers(rt, pid)
    with rt.transaction() as s:
        esc = s.scalars(select(Escalation)).one()
        assert esc.level == "emergency" and flag in esc.flags
        assert active_conversation(s, pid) is None  # the emergency stopped the check-in


# -- words asking for no more messages: saved for the team, and told how to stop ------------

STOP_HOW = "reply with the one word STOP"


def _consented(rt) -> int:
    pid = welcomed(rt)
    with rt.transaction() as s:
        s.get(Patient, pid).consent_at = rt.clock.now()
    return pid


@pytest.mark.parametrize("text", ["Stop texting me please", "please dont text me anymore",
                                  "Please stop", "unsubscribe me"])
def test_stop_in_words_outside_a_checkin_is_told_how_to_stop(client, rt, fake_http, text):
    pid = _between_conversations(rt)
    fake_http.reset()
    texted(client, text)
    [reply] = [d["Body"] for d in sent_to(fake_http, PHONE)]
    assert STOP_HOW in reply and "CHECKIN" not in reply
    assert patient(rt, pid)[0] == "active"  # words are not the keyword: nothing is done
    with rt.transaction() as s:
        assert len(messages_to_read(s)) == 1


def _between_conversations(rt) -> int:
    """A consented patient with no conversation waiting (the welcome over)."""
    pid = _consented(rt)
    with rt.transaction() as s:
        conv = active_conversation(s, pid)
        if conv is not None:
            conv.status = "done"
    return pid


@pytest.mark.parametrize("text", ["Thanks!", "ok", "thank you x", "Ok thanks", "cheers",
                                  "\U0001f44d", "Muchas gracias", "vale gracias",
                                  "thanks \U0001f60a"])
def test_a_thank_you_between_check_ins_is_kept_but_not_answered_nor_listed(client, rt,
                                                                          fake_http, text):
    """A walkthrough: every "Thanks!" after a check-in got "your message has been saved for
    your care team" and went on the nurses' list to read: noise for them, and a reply that
    invites another thank-you."""
    from bot.store.models import Message

    pid = _between_conversations(rt)
    fake_http.reset()
    texted(client, text)
    assert sent_to(fake_http, PHONE) == []
    with rt.transaction() as s:
        assert messages_to_read(s) == []
        kept = s.scalars(select(Message).where(Message.patient_id == pid,
                                               Message.direction == "in")).all()
        assert kept[-1].body == text  # recorded all the same


@pytest.mark.parametrize("text", ["thanks, can you call me", "thanks but the pain is worse",
                                  "thanks for nothing", "ok \U0001f622", "ok?", "not ok"])
def test_anything_more_than_thanks_is_still_answered_and_listed(client, rt, fake_http, text):
    _between_conversations(rt)
    fake_http.reset()
    texted(client, text)
    assert sent_to(fake_http, PHONE) != []
    with rt.transaction() as s:
        assert len(messages_to_read(s)) == 1


def test_stop_in_words_at_a_checkin_question_is_told_how_then_asked_again(client, rt,
                                                                          fake_http):
    pid = _consented(rt)
    with rt.transaction() as s:
        ids = start_flow(s, rt.ctx, s.get(Patient, pid), "checkin", rt.clock.now())
    rt.dispatcher.dispatch_ids(ids)
    fake_http.reset()
    texted(client, "can you stop sending these")
    bodies = [d["Body"] for d in sent_to(fake_http, PHONE)]
    assert STOP_HOW in bodies[0] and "number from 0" in bodies[-1]


def test_a_declined_patient_asking_to_stop_is_not_asked_to_agree_again(client, rt, fake_http):
    pid = welcomed(rt)
    texted(client, "no")
    assert answers(rt, pid) == {"consent": "no"}
    fake_http.reset()
    texted(client, "please stop")
    [reply] = [d["Body"] for d in sent_to(fake_http, PHONE)]
    assert STOP_HOW in reply and "YES" not in reply


@pytest.mark.parametrize("text", ["please stop the pain", "can you stop the morphine",
                                  "my pain wont stop"])
def test_stop_about_something_else_is_no_request_to_stop(text):
    from bot.domain.answers import asks_to_stop

    assert not asks_to_stop(text)


def test_an_urgent_answer_in_a_checkin_is_logged_for_the_operator(client, rt, fake_http,
                                                                 caplog):
    # As a red flag in free text is: a WARNING naming the patient's id and flags, never the
    # number or the words.
    pid = _consented(rt)
    with rt.transaction() as s:
        ids = start_flow(s, rt.ctx, s.get(Patient, pid), "checkin", rt.clock.now())
    rt.dispatcher.dispatch_ids(ids)
    texted(client, "3")
    with caplog.at_level("WARNING"):
        texted(client, "yes")  # the pain is new
    with rt.transaction() as s:
        assert s.scalars(select(Escalation.level)).all() == ["urgent"]
    [line] = [r.getMessage() for r in caplog.records if "escalation" in r.getMessage()]
    assert line.startswith(f"urgent escalation patient={pid} ") and PHONE not in line
