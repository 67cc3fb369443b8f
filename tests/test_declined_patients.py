"""A patient whose welcome ended without their consent (they said NO; or it went unanswered,
the question and its reminder timed out; or their replies were not understood) and who later
texts the clinic: their words are listed for the care team to read (as a consented patient's
text outside a check-in is), and they get one short reply (who we are, that the message is
saved, reply YES to agree, the hotline) instead of the three welcome texts again; a YES then
gives consent. A plain YES is consent: from a patient who answered the welcome's question
(NO, or not understood) within `defaults.consent_yes_after_decline_days` (30) it records
consent at once; otherwise (never answered, or long ago) the welcome again, as before. Nothing
to read either way. Red flags are alerted whatever the consent."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from bot.domain import gsm7
from bot.services.conversations import active_conversation, start_flow
from bot.services.health import mark_read, messages_to_read
from bot.services.patients import Enrolment, enrol_patient
from bot.store.models import AuditLog, Escalation, Patient, Schedule
from tests.simulator_support import sent_to_phone, texted_from

PHONE = "+447700900123"
DECLINED = "Thank you for letting us know. We will not send you check-in messages."
UNCLEAR = "Sorry, we could not understand your replies, so we will not send you check-in"
REMINDER = "Reminder from Spine Oncology Clinic: reply YES"
# How the welcome ended without consent: NO, replies not understood, no reply at all.
ENDINGS = ["no", "not understood", "timed out"]
GREETING = "Hi Ada, this is Spine Oncology Clinic."
CONSENT_AGAIN = ("Thank you, Ada. This is Spine Oncology Clinic: your message has been saved "
                 "for your care team. To get symptom check-ins by text, reply YES. Urgent "
                 "symptoms: call {hotline}.")


def _texted(client, *bodies):
    texted_from(client, PHONE, *bodies)


def _to_patient(messenger):
    return sent_to_phone(messenger, PHONE)


def _declined(client, rt, messenger, language="en", ending="no") -> int:
    """A patient enrolled whose welcome then ended without consent, as `ending` says."""
    from bot.scheduler import tick

    with rt.transaction() as s:
        p = enrol_patient(s, Enrolment(PHONE, "Ada Lovelace", "Europe/London",
                                       language=language),
                          languages=["en", "es"], now=rt.clock.now(), actor="test")
        s.flush()
        start_flow(s, rt.ctx, p, "welcome", rt.clock.now())
        pid = p.id
    if ending == "no":
        _texted(client, "no")
        assert _to_patient(messenger)[-1].startswith(
            DECLINED if language == "en" else "Gracias por decirnoslo.")
    elif ending == "not understood":
        _texted(client, "hmm", "yes and no", "maybe later")
        assert _to_patient(messenger)[-1].startswith(UNCLEAR)
        # Replies not understood at the consent question are listed for the team (see
        # test_consent_question.py): read here, so that what follows lists only what is new.
        with rt.transaction() as s:
            listed = messages_to_read(s)
            assert [m.body for m in listed] == ["maybe later", "yes and no", "hmm"]
            for m in listed:
                mark_read(s, m.id, "Nurse Jo", rt.clock.now(), actor="test")
    else:
        rt.clock.advance(hours=49)
        tick(rt)
        assert _to_patient(messenger)[-1].startswith(REMINDER)
        told = len(_to_patient(messenger))
        rt.clock.advance(hours=49)
        tick(rt)
        assert len(_to_patient(messenger)) == told  # ended without another text
    with rt.transaction() as s:
        assert active_conversation(s, pid) is None
    assert _to_read(rt) == []
    return pid


def _to_read(rt):
    with rt.transaction() as s:
        return [m.body for m in messages_to_read(s)]


def _consent_at(rt, pid):
    with rt.transaction() as s:
        return s.get(Patient, pid).consent_at


@pytest.mark.parametrize("ending", ENDINGS)
@pytest.mark.parametrize("words", ["actually can someone call me, I changed my mind",
                                   "I've been feeling awful", "can someone call me"])
def test_a_declined_patients_words_are_listed_and_get_one_short_reply(client, rt, messenger,
                                                                      words, ending):
    pid = _declined(client, rt, messenger, ending=ending)
    told = len(_to_patient(messenger))
    _texted(client, words)
    assert _to_read(rt) == [words]
    hotline = rt.ctx.patient_values(None)["hotline"]
    assert _to_patient(messenger)[told:] == [CONSENT_AGAIN.format(hotline=hotline)]
    assert _consent_at(rt, pid) is None
    _texted(client, "yes")  # the short reply asked for it: consent, no second welcome
    assert _consent_at(rt, pid) is not None
    assert _to_patient(messenger)[-1].startswith("Thank you, Ada. Your first check-in")
    assert _to_read(rt) == [words]


def test_the_short_reply_is_plain_text_in_two_segments_at_most(rt):
    for language in ("en", "es"):
        body = rt.ctx.texts.render("awaiting_consent", language, name="x" * 20,
                                   clinic_name="x" * 40, hotline="x" * 16)
        assert gsm7.is_gsm7(body) and gsm7.segments(body) <= 2


def test_in_spanish(client, rt, messenger):
    pid = _declined(client, rt, messenger, language="es")
    told = len(_to_patient(messenger))
    _texted(client, "me encuentro fatal")
    [reply] = _to_patient(messenger)[told:]
    assert reply.startswith("Gracias, Ada. Le escribe Spine Oncology Clinic")
    assert "responda SI" in reply
    _texted(client, "si")
    assert _consent_at(rt, pid) is not None


@pytest.mark.parametrize("ending", ENDINGS)
def test_more_words_after_the_short_reply_are_listed_too(client, rt, messenger, ending):
    pid = _declined(client, rt, messenger, ending=ending)
    _texted(client, "I've been feeling awful", "the pain is much worse this week")
    assert _to_read(rt) == ["the pain is much worse this week", "I've been feeling awful"]
    assert _consent_at(rt, pid) is None


def _consent_audits(rt, pid):
    with rt.transaction() as s:
        return s.scalars(select(AuditLog).where(AuditLog.action == "patient.consent",
                                                AuditLog.subject_id == str(pid))).all()


def _checkin_schedules(rt, pid):
    with rt.transaction() as s:
        return s.scalars(select(Schedule).where(Schedule.patient_id == pid,
                                                Schedule.flow_id == "checkin")).all()


@pytest.mark.parametrize("ending", ["no", "not understood"])
@pytest.mark.parametrize("yes", ["yes", "YES", "Yes.", "yse", "yesss", "Yes please"])
def test_a_plain_yes_after_saying_no_records_consent(client, rt, messenger, ending, yes):
    # They had the welcome and answered its question (NO, or words not understood): their
    # YES now answers it. Consent as the welcome's YES gives it: audited, the thanks, the
    # weekly check-in scheduled; no welcome again, nothing to read.
    pid = _declined(client, rt, messenger, ending=ending)
    rt.clock.advance(days=3)
    told = len(_to_patient(messenger))
    _texted(client, yes)
    assert _to_patient(messenger)[told:] == [
        "Thank you, Ada. Your first check-in will come soon. You can also text CHECKIN at "
        "any time to start one."]
    assert _consent_at(rt, pid) == rt.clock.now()
    [audited] = _consent_audits(rt, pid)
    assert audited.actor == f"patient:{pid}" and audited.at == rt.clock.now()
    assert audited.details["after_decline"] is True
    assert len(_checkin_schedules(rt, pid)) == 1
    assert _to_read(rt) == []
    with rt.transaction() as s:
        assert active_conversation(s, pid) is None


def test_a_plain_si_after_saying_no_records_consent_in_spanish(client, rt, messenger):
    pid = _declined(client, rt, messenger, language="es")
    told = len(_to_patient(messenger))
    _texted(client, "Si")
    [thanks] = _to_patient(messenger)[told:]
    assert thanks.startswith("Gracias, Ada. Pronto recibira su primera consulta.")
    assert _consent_at(rt, pid) is not None


def test_a_yes_after_the_short_reply_went_unanswered_still_counts(client, rt, messenger):
    # Said NO, later wrote (the short reply asked for a YES, and its wait ended): the NO
    # was within the limit, so their YES counts.
    from bot.scheduler import tick

    pid = _declined(client, rt, messenger)
    _texted(client, "I've been feeling awful")
    rt.clock.advance(hours=49)
    tick(rt)
    with rt.transaction() as s:
        assert active_conversation(s, pid) is None
    told = len(_to_patient(messenger))
    _texted(client, "yes")
    assert [b[:25] for b in _to_patient(messenger)[told:]] == ["Thank you, Ada. Your firs"]
    assert _consent_at(rt, pid) is not None


@pytest.mark.parametrize("text", ["ok", "okay", "Ok thanks"])
def test_ok_after_saying_no_is_no_consent(client, rt, messenger, text):
    # "OK" to "We will not send you check-in messages" says the patient heard it: asked
    # again with the whole welcome (as before), consent only from its answer.
    pid = _declined(client, rt, messenger)
    told = len(_to_patient(messenger))
    _texted(client, text)
    again = _to_patient(messenger)[told:]
    assert len(again) == 3 and again[0].startswith(GREETING)
    assert _consent_at(rt, pid) is None and _consent_audits(rt, pid) == []


def test_a_plain_yes_after_the_welcome_went_unanswered_gets_the_welcome_again(
        client, rt, messenger):
    # Never a reply to the welcome: nothing says they read it, so it is sent again.
    pid = _declined(client, rt, messenger, ending="timed out")
    told = len(_to_patient(messenger))
    _texted(client, "yes")
    again = _to_patient(messenger)[told:]
    assert len(again) == 3 and again[0].startswith(GREETING)
    assert again[-1].startswith("Do you agree")
    assert _consent_at(rt, pid) is None
    assert _to_read(rt) == []
    _texted(client, "yes")
    assert _consent_at(rt, pid) is not None


@pytest.mark.parametrize("days, welcomed_again", [(29, False), (31, True)])
def test_a_plain_yes_long_after_saying_no_gets_the_welcome_again(client, rt, messenger, days,
                                                                 welcomed_again):
    assert rt.settings.defaults.consent_yes_after_decline_days == 30  # the default
    pid = _declined(client, rt, messenger)
    rt.clock.advance(days=days)
    told = len(_to_patient(messenger))
    _texted(client, "yes")
    again = _to_patient(messenger)[told:]
    if welcomed_again:
        assert len(again) == 3 and again[0].startswith(GREETING)
        assert _consent_at(rt, pid) is None
        _texted(client, "yes")  # the welcome's own question
    else:
        assert len(again) == 1 and again[0].startswith("Thank you, Ada. Your first")
    assert _consent_at(rt, pid) is not None
    assert len(_consent_audits(rt, pid)) == 1
    assert _to_read(rt) == []


@pytest.mark.parametrize("settings_overrides", [
    {"defaults": {"consent_yes_after_decline_days": 0}}])
def test_with_the_limit_at_zero_a_yes_after_no_always_gets_the_welcome_again(
        client, rt, messenger, settings_overrides):
    pid = _declined(client, rt, messenger)
    told = len(_to_patient(messenger))
    _texted(client, "yes")
    assert len(_to_patient(messenger)[told:]) == 3
    assert _consent_at(rt, pid) is None


def test_yes_after_no_and_stop_is_start_as_before(client, rt, messenger):
    # Opted out as well: YES is START (opt-out is not the consent decline), which for a
    # patient who never consented opts in and sends the welcome with its question.
    pid = _declined(client, rt, messenger)
    _texted(client, "STOP")
    told = len(_to_patient(messenger))
    _texted(client, "YES")
    again = _to_patient(messenger)[told:]
    assert len(again) == 3 and again[0].startswith(GREETING)
    with rt.transaction() as s:
        p = s.get(Patient, pid)
        assert (p.status, p.consent_at) == ("active", None)


@pytest.mark.parametrize("ending", ENDINGS)
def test_stop_is_not_listed(client, rt, messenger, ending):
    pid = _declined(client, rt, messenger, ending=ending)
    _texted(client, "STOP")
    assert _to_read(rt) == []
    with rt.transaction() as s:
        assert s.get(Patient, pid).status == "opted_out"


def test_an_emergency_from_a_declined_patient_is_alerted(client, rt, messenger):
    pid = _declined(client, rt, messenger)
    told = len(_to_patient(messenger))
    _texted(client, "my legs have gone weak and I can't walk")
    with rt.transaction() as s:
        [esc] = s.scalars(select(Escalation)).all()
        assert (esc.level, esc.patient_id) == ("emergency", pid)
        assert active_conversation(s, pid) is None
    [instruction] = _to_patient(messenger)[told:]  # no welcome, no consent question
    assert "this could be serious" in instruction
    oncall = rt.settings.care_team.contact(rt.settings.care_team.escalation_chain[0]).phone
    assert any(m.body.startswith("EMERGENCY") for m in messenger.sent if m.to == oncall)


@pytest.mark.parametrize("ending", ENDINGS)
def test_an_urgent_red_flag_from_a_declined_patient_is_alerted_and_listed(client, rt,
                                                                         messenger, ending):
    pid = _declined(client, rt, messenger, ending=ending)
    told = len(_to_patient(messenger))
    _texted(client, "I have had a fever of 38.5 since last night")
    with rt.transaction() as s:
        [esc] = s.scalars(select(Escalation)).all()
        assert (esc.level, esc.patient_id) == ("urgent", pid)
    [instruction] = _to_patient(messenger)[told:]  # the same-day call, then nothing more
    assert "Your care team will call you today" in instruction
    assert _to_read(rt) == ["I have had a fever of 38.5 since last night"]


def test_the_short_question_unanswered_ends_without_another_text(client, rt, messenger):
    from bot.scheduler import tick

    pid = _declined(client, rt, messenger)
    _texted(client, "I've been feeling awful")
    told = len(_to_patient(messenger))
    rt.clock.advance(hours=49)
    tick(rt)
    assert _to_patient(messenger)[told:] == []  # no "Reminder": they said no
    with rt.transaction() as s:
        assert active_conversation(s, pid) is None
    assert _consent_at(rt, pid) is None


def test_yes_after_no_while_an_emergency_is_unresolved_gets_the_hotline_not_consent(
        client, rt, messenger):
    # "yes" after the emergency instruction ("have you called?") is no consent: it gets the
    # hotline again, as any text outside a conversation does while the red flag is open.
    pid = _declined(client, rt, messenger)
    _texted(client, "my legs have gone weak and I can't walk")
    told = len(_to_patient(messenger))
    _texted(client, "yes")
    [reply] = _to_patient(messenger)[told:]
    assert reply == rt.ctx.text_for(None, "after_emergency", name="Ada")
    assert _consent_at(rt, pid) is None and _consent_audits(rt, pid) == []
