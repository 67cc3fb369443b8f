"""Review of sending: WhatsApp template variables, SMS fallback segments, and what Twilio
refuses that the fake must refuse too."""

from __future__ import annotations

import json

import pytest

from bot.messaging.fake_twilio_http import FakeTwilioHttpClient
from bot.messaging.twilio_messenger import TwilioMessenger
from bot.services.outbox import Draft, enqueue
from bot.services.patients import Enrolment, enrol_patient
from bot.store.models import Message, OutboxItem, Patient
from tests.twilio_support import (  # noqa: F401 - fixtures
    ACCOUNT_SID,
    AUTH_TOKEN,
    TWILIO_SETTINGS,
    WHATSAPP_FROM,
    fake_http,
    messenger,
    sent_to,
    settings_overrides,
)

PHONE = "+447700900123"
ONCALL = "+447700900001"
SERVICE = "MG" + "0" * 32

WHATSAPP_ONCALL = {
    "contacts": [
        {"id": "oncall", "name": "On-call nurse", "phone": ONCALL, "channel": "whatsapp"},
        {"id": "coordinator", "name": "Coordinator", "phone": "+447700900002"},
        {"id": "consultant", "name": "Consultant", "phone": "+447700900003"},
    ],
}
ALERT_NAMING_THE_PATIENT = {"alert": {"content_sid": "HX" + "0" * 31 + "4",
                                      "variables": {"1": "{ref}", "2": "{patient}"}}}


def _patient(rt, name="Ada Lovelace", channel="sms"):
    with rt.transaction() as s:
        p = enrol_patient(s, Enrolment(PHONE, name, "Europe/London", channel),
                          languages=["en", "es"], now=rt.clock.now(), actor="test")
        return p.id


def _item(rt, item_id):
    with rt.transaction() as s:
        item = s.get(OutboxItem, item_id)
        return item, s.get(Message, item.message_id)


# -- the fake refuses template variables as Twilio does (21656) ---------------------------------

@pytest.mark.parametrize("value", ["", "Ada\nLovelace", "Ada\tLovelace", "Ada     Lovelace"])
def test_the_fake_refuses_template_variables_twilio_refuses(value):
    from bot.messaging.base import OutgoingMessage, SendError

    fake = FakeTwilioHttpClient()
    m = TwilioMessenger.from_credentials(ACCOUNT_SID, AUTH_TOKEN, http_client=fake,
                                         whatsapp_from=WHATSAPP_FROM)
    with pytest.raises(SendError) as err:
        m.send(OutgoingMessage(to=PHONE, channel="whatsapp", content_sid="HX" + "0" * 32,
                               content_variables={"1": "ok", "2": value}))
    assert err.value.code == 21656 and err.value.kind == "permanent"
    assert fake.created == []


# -- a name typed with a line break or a tab still fills the template ---------------------------

class TestAnAlertNamingThePatient:
    @pytest.fixture
    def settings_overrides(self):
        return {**TWILIO_SETTINGS, "care_team": WHATSAPP_ONCALL,
                "twilio": {**TWILIO_SETTINGS["twilio"],
                           "whatsapp_templates": ALERT_NAMING_THE_PATIENT}}

    @pytest.mark.parametrize("name", ["Ada\nLovelace", "Ada\t Lovelace", "Ada      Lovelace"])
    def test_the_template_goes_with_the_name_on_one_line(self, rt, fake_http, name):
        from bot.services.escalations import escalate

        pid = _patient(rt)
        with rt.transaction() as s:
            # Written to the row: enrolment now refuses a control character in a name, but a
            # row stored before (or a pasted run of spaces) can still hold one.
            s.get(Patient, pid).name = name
        with rt.transaction() as s:
            esc, [item_id] = escalate(s, rt.ctx, s.get(Patient, pid), "emergency",
                                      ["limb_weakness"], "legs", rt.clock.now())
            ref = esc.ref
        rt.dispatcher.dispatch_due()
        [data] = sent_to(fake_http, ONCALL)
        assert data["To"] == f"whatsapp:{ONCALL}"
        assert json.loads(data["ContentVariables"]) == {"1": ref, "2": "Ada Lovelace"}
        item, _ = _item(rt, item_id)
        assert item.status == "sent" and item.channel == "whatsapp"


class TestAnEmptyTemplateVariable:
    """An emergency template naming the patient, to a number that is not enrolled (no name):
    Twilio refuses an empty variable, so the words go by SMS at once instead."""

    @pytest.fixture
    def settings_overrides(self):
        templates = {"emergency": {"content_sid": "HX" + "0" * 31 + "5",
                                   "variables": {"1": "{name}", "2": "{hotline}"}}}
        return {**TWILIO_SETTINGS, "twilio": {**TWILIO_SETTINGS["twilio"],
                                              "whatsapp_templates": templates}}

    def test_the_emergency_goes_by_sms_in_the_same_pass(self, rt, fake_http):
        from bot.services.outbox import PRIORITY_EMERGENCY

        carer = "+447700900555"
        with rt.transaction() as s:
            item_id = enqueue(s, Draft(to=carer, channel="whatsapp", body="Call 999 now",
                                       kind="emergency", priority=PRIORITY_EMERGENCY),
                              rt.clock.now()).id
        rt.dispatcher.dispatch_due()
        assert [d.get("Body") for d in sent_to(fake_http, carer)] == ["Call 999 now"]
        assert sent_to(fake_http, carer)[0]["To"] == carer
        item, message = _item(rt, item_id)
        assert item.status == "sent" and message.channel == "sms"


# -- an SMS fallback through a Messaging Service still has its segments -------------------------

class TestSmsFallbackThroughAMessagingService:
    """A Messaging Service answers num_segments "0" (the sender is picked later), so the
    segments recorded for an SMS are the bot's own count."""

    @pytest.fixture
    def settings_overrides(self):
        return {**TWILIO_SETTINGS, "twilio": {**TWILIO_SETTINGS["twilio"],
                                              "messaging_service_sid": SERVICE}}

    @pytest.fixture
    def messenger(self, fake_http):
        return TwilioMessenger.from_credentials(ACCOUNT_SID, AUTH_TOKEN, http_client=fake_http,
                                                messaging_service_sid=SERVICE)

    def test_a_whatsapp_reply_switched_to_sms_records_its_segments(self, rt, fake_http):
        from bot.domain.gsm7 import segments

        pid = _patient(rt, channel="whatsapp")
        body = "Thank you \u2014 your answers are saved. " * 6  # 2 segments as GSM-7
        with rt.transaction() as s:
            item_id = enqueue(s, Draft(to=PHONE, channel="whatsapp", body=body, kind="reply",
                                       patient_id=pid), rt.clock.now()).id
        fake_http.queue_error(400, 63024, "Invalid message recipient")  # not on WhatsApp
        rt.dispatcher.dispatch_due()
        rt.dispatcher.dispatch_due()
        whatsapp, sms = sent_to(fake_http, PHONE)
        assert whatsapp["To"] == f"whatsapp:{PHONE}" and sms["To"] == PHONE
        item, message = _item(rt, item_id)
        assert item.status == "sent" and message.channel == "sms"
        assert message.body == sms["Body"] and "\u2014" not in message.body
        assert message.segments == segments(message.body) == 2


# -- a message Twilio took but could not deliver is listed for the team -------------------------

def _failed(rt):
    from bot.services.dispatcher import failed_messages

    with rt.transaction() as s:
        return [(m.body, m.error_code) for _, m in failed_messages(s)]


def _last_out(rt):
    from sqlalchemy import select

    with rt.transaction() as s:
        m = s.scalars(select(Message).where(Message.direction == "out")
                      .order_by(Message.id.desc())).first()
        return m.provider_id, m.body


def test_a_reply_reported_undelivered_is_listed_for_the_team(client, rt, fake_http):
    from tests.test_webhooks import STATUS, enrol, post, texted

    enrol(rt)
    texted(client, "hello")
    provider_id, body = _last_out(rt)
    assert _failed(rt) == []
    post(client, STATUS, {"MessageSid": provider_id, "MessageStatus": "undelivered",
                          "ErrorCode": "30005"})  # unknown handset: nothing is sent again
    assert _failed(rt) == [(body, 30005)]


def test_an_emergency_instruction_reported_undelivered_shows_on_healthz(client, rt, fake_http):
    from tests.test_webhooks import STATUS, enrol, post, texted

    enrol(rt)
    texted(client, "I can't feel my legs and I've wet myself")
    with rt.transaction() as s:
        from sqlalchemy import select

        m = s.scalars(select(Message).where(Message.kind == "emergency")).one()
        provider_id, body = m.provider_id, m.body
    post(client, STATUS, {"MessageSid": provider_id, "MessageStatus": "failed",
                          "ErrorCode": "30008"})
    assert (body, 30008) in _failed(rt)
    health = client.get("/healthz").get_json()
    assert "emergency or urgent instruction(s) to patients could not be sent" in str(health)


def test_an_unreachable_phone_is_listed_once_the_bot_gives_up(client, rt, fake_http, clock):
    from bot.scheduler import tick
    from tests.test_webhooks import STATUS, enrol, post, texted

    enrol(rt)
    texted(client, "hello")
    provider_id, body = _last_out(rt)
    for n in range(1, 5):
        post(client, STATUS, {"MessageSid": provider_id, "MessageStatus": "undelivered",
                              "ErrorCode": "30003"})
        if n <= 3:  # sent again later: nothing for the team yet
            assert _failed(rt) == []
            clock.advance(minutes=15 * n)
            tick(rt)
            provider_id, _ = _last_out(rt)
    assert _failed(rt) == [(body, 30003)]


def test_a_whatsapp_message_followed_by_its_sms_copy_is_not_listed(client, rt, fake_http):
    from tests.test_webhooks import STATUS, enrol, post, texted

    enrol(rt, channel="whatsapp")
    texted(client, "hello", channel="whatsapp")
    provider_id, _ = _last_out(rt)
    post(client, STATUS, {"MessageSid": provider_id, "MessageStatus": "undelivered",
                          "ErrorCode": "63003"})
    assert [d["To"] for d in sent_to(fake_http, PHONE)] == [f"whatsapp:{PHONE}", PHONE]
    assert _failed(rt) == []
