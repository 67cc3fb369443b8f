"""What a patient hears after a red flag, and what the care team reads in an alert: follow-up
texts while it is unresolved, START before consent, the alert's quote and name."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from bot.domain import gsm7
from bot.services.context import readable_phone
from bot.services.escalations import resolve
from bot.services.patients import Enrolment, enrol_patient
from bot.store.models import Escalation, Message, Patient
from tests.test_red_flags_e2e import PHONE, alerts, chain_phones, enrol, texted
from tests.twilio_support import (  # noqa: F401 - fixtures
    fake_http,
    messenger,
    sent_to,
    settings_overrides,
)


def _enrol(rt, name="Ada Lovelace", language="en", consented=True, status="active"):
    with rt.transaction() as s:
        p = enrol_patient(s, Enrolment(PHONE, name, "Europe/London", language=language),
                          languages=["en", "es"], now=rt.clock.now(), actor="test")
        p.status = status
        if consented:
            p.consent_at = rt.clock.now()


def _told(fake_http) -> list[str]:
    return [d["Body"] for d in sent_to(fake_http, PHONE)]


def _only_escalation(rt) -> Escalation:
    with rt.transaction() as s:
        return s.scalars(select(Escalation)).one()


def _expected(rt, key, language="en", name="Ada"):
    values = {**rt.ctx.patient_values(None), "name": name}
    return rt.ctx.texts.render(key, language, **values)


@pytest.mark.parametrize("language", ["en", "es"])
def test_after_an_emergency_the_patients_replies_get_the_hotline_not_a_checkin_invite(
        client, rt, fake_http, language):
    _enrol(rt, language=language)
    texted(client, "my legs gave way")
    after = _expected(rt, "after_emergency", language)
    assert readable_phone(rt.settings.clinic.acute_oncology_hotline) in after
    assert "CHECKIN" not in after and gsm7.is_gsm7(after) and gsm7.segments(after) <= 2

    for text in ["ok I've called them", "ok ambulance is coming",
                 "called them, and I have a temperature of 38.5 too"]:  # urgent: joins it
        told = len(_told(fake_http))
        texted(client, text)
        assert _told(fake_http)[told:] == [after], text

    # "your care team has your message": so it waits for them to read
    with rt.transaction() as s:
        to_read = s.scalars(select(Message.body).where(Message.status == "to_read")).all()
    assert "ok ambulance is coming" in to_read

    # acknowledged is not resolved: the same
    esc = _only_escalation(rt)
    texted(client, f"ACK {esc.ref}", sender=chain_phones(rt)[0])
    texted(client, "they are here now")
    assert _told(fake_http)[-1] == after
    # a new urgent flag now opens its own escalation (the team is alerted); the patient
    # hears the hotline again, not "we will call you today"
    told = len(_told(fake_http))
    texted(client, "and now a temperature of 38.9")
    assert _told(fake_http)[told:] == [after]
    # a keyword still starts what it starts
    texted(client, "CHECKIN")
    assert _told(fake_http)[-1] != after

    with rt.transaction() as s:
        for open_one in s.scalars(select(Escalation)):
            resolve(s, open_one.ref, "admitted", rt.clock.now(), actor="test", by="Nurse Jo")
    texted(client, "STOP")
    texted(client, "START")
    texted(client, "thanks for everything")
    assert _told(fake_http)[-1] == _expected(rt, "received", language)


@pytest.mark.parametrize("language", ["en", "es"])
def test_while_an_urgent_red_flag_is_open_a_reply_says_the_team_will_call(client, rt,
                                                                          fake_http, language):
    _enrol(rt, language=language)
    texted(client, "back pain is 9/10 and wakes me every night")
    assert _only_escalation(rt).level == "urgent"
    told = len(_told(fake_http))
    texted(client, "ok thank you")
    after = _expected(rt, "after_urgent", language)
    assert _told(fake_http)[told:] == [after]
    assert "CHECKIN" not in after and gsm7.segments(after) <= 2


def test_start_from_a_patient_who_never_consented_asks_for_consent_and_yes_records_it(
        client, rt, fake_http):
    _enrol(rt, consented=False, status="opted_out")
    texted(client, "START")
    with rt.transaction() as s:
        assert s.scalars(select(Patient.status)).one() == "active"
    told = _told(fake_http)
    assert not any(t.startswith("Welcome back") for t in told)
    assert told[0].startswith("Hi Ada") and told[-1].startswith("Do you agree")

    texted(client, "YES")
    with rt.transaction() as s:
        assert s.scalars(select(Patient.consent_at)).one() is not None
    assert _told(fake_http)[-1].startswith("Thank you, Ada. Your first check-in")

    # a patient who had consented and opted out is welcomed back as before
    texted(client, "STOP")
    texted(client, "START")
    assert _told(fake_http)[-1].startswith("Welcome back, Ada")


def test_start_from_an_active_patient_who_never_consented_asks_for_consent(client, rt,
                                                                           fake_http):
    _enrol(rt, consented=False)
    texted(client, "start")
    assert _told(fake_http)[-1].startswith("Do you agree")
    texted(client, "yes")
    with rt.transaction() as s:
        assert s.scalars(select(Patient.consent_at)).one() is not None


def test_an_alert_quotes_the_words_around_the_red_flag_not_the_greeting(client, rt,
                                                                        fake_http):
    enrol(rt)
    oncall = chain_phones(rt)[0]
    texted(client, "Hello, hope you are well. Just letting you know that since Sunday I have "
                   "been getting worse and since last night my legs gave way twice when I stood "
                   "up, thank you")
    [alert] = alerts(fake_http, oncall)
    said = alert.split('Said: "', 1)[1].split('" Reply', 1)[0]
    assert "my legs gave way" in said and "Hello" not in said
    assert said.startswith("...") and len(said) <= 60
    assert gsm7.segments(alert) <= 2


def test_an_alert_quotes_each_flag_of_a_long_message_it_has_room_for(client, rt, fake_http):
    enrol(rt)
    oncall = chain_phones(rt)[0]
    texted(client, "Hi there, sorry to bother you on a Sunday. My legs are numb. The pain "
                   "in my back is the usual. Oh, and I wet myself this morning.")
    [alert] = alerts(fake_http, oncall)
    said = alert.split('Said: "', 1)[1].split('" Reply', 1)[0]
    assert "legs are numb" in said and "wet myself" in said and " ... " in said
    assert len(said) <= 60 and gsm7.segments(alert) <= 2


def test_a_long_name_is_cut_between_words_in_the_alert_and_the_receipt(client, rt, fake_http):
    _enrol(rt, name="Maximilian-Alexander Worthington-Smythe")
    oncall = chain_phones(rt)[0]
    texted(client, "my legs gave way")
    [alert] = alerts(fake_http, oncall)
    assert f"Maximilian-Alexander {PHONE}" in alert and "Worth" not in alert
    texted(client, "ACK " + _only_escalation(rt).ref, sender=oncall)
    receipt = alerts(fake_http, oncall)[-1]
    assert f"(Maximilian-Alexander, {PHONE})" in receipt


def test_before_consent_a_reply_after_an_emergency_gets_the_hotline_not_the_welcome(
        client, rt, fake_http):
    # A new patient, not yet agreed to check-ins, texts a red flag, then "what do I do": the
    # three welcome texts and "do you agree?" were the wrong answer to someone in an emergency.
    _enrol(rt, consented=False)
    texted(client, "i cant move my legs since this morning")
    assert _only_escalation(rt).level == "emergency"
    after = _expected(rt, "after_emergency")
    for text in ["what do i do", "yes", "ok"]:
        told = len(_told(fake_http))
        texted(client, text)
        assert _told(fake_http)[told:] == [after], text
    with rt.transaction() as s:
        to_read = s.scalars(select(Message.body).where(Message.status == "to_read")).all()
        assert s.scalars(select(Patient.consent_at)).one() is None
    assert "what do i do" in to_read

    # Asking for check-ins (the keyword) still starts the consent conversation, and once the
    # red flag is resolved any text does, as before.
    texted(client, "CHECKIN")
    assert _told(fake_http)[-1].startswith("Do you agree")
    texted(client, "STOP")
    with rt.transaction() as s:
        resolve(s, _only_escalation(rt).ref, "seen in A&E", rt.clock.now(), actor="test",
                by="Nurse Jo")
    texted(client, "START")
    assert _told(fake_http)[-1].startswith("Do you agree")
    texted(client, "yes")
    with rt.transaction() as s:
        assert s.scalars(select(Patient.consent_at)).one() is not None
