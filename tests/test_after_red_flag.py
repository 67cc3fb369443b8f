"""What the care team reads in an alert: the patient's words around the red flag, their name."""

from __future__ import annotations

from sqlalchemy import select

from bot.domain import gsm7
from bot.services.patients import Enrolment, enrol_patient
from bot.store.models import Escalation
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


def _only_escalation(rt) -> Escalation:
    with rt.transaction() as s:
        return s.scalars(select(Escalation)).one()


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
