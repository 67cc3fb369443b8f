"""Twilio edges found in review: each test shows what the bot did wrong before its fix."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from bot.store.models import Escalation, Message, Patient
from tests.test_webhooks import INBOUND, PHONE, count, enrol, sid, texted
from tests.twilio_signing import sign
from tests.twilio_support import (  # noqa: F401 - fixtures
    AUTH_TOKEN,
    PUBLIC_URL,
    TWILIO_SETTINGS,
    fake_http,
    messenger,
    sent_to,
    settings_overrides,
)

NURSE = "+447700900001"


class TestAnAlertRefusedWith63016AtSend:
    @pytest.fixture
    def settings_overrides(self):
        return {**TWILIO_SETTINGS, "care_team": {"contacts": [
            {"id": "oncall", "name": "On-call nurse", "phone": NURSE, "channel": "whatsapp"},
            {"id": "coordinator", "name": "Coordinator", "phone": "+447700900002"},
            {"id": "consultant", "name": "Consultant", "phone": "+447700900003"}]}}

    def test_goes_by_template_and_by_sms_at_once(self, client, rt, fake_http):
        """Twilio refusing the alert's free text with 63016 at once (the bot thought the
        nurse's window open) must do what the same 63016 in a status callback does: the
        template and, not waiting to learn whether it got through, an SMS."""
        from bot.services.escalations import escalate

        texted(client, "hello", sender=NURSE, channel="whatsapp")  # the nurse's window is open
        pid = enrol(rt)
        with rt.transaction() as s:
            _, ids = escalate(s, rt.ctx, s.get(Patient, pid), "emergency", ["limb_weakness"],
                              "my legs gave way", rt.clock.now())
        before = len(fake_http.requests)
        fake_http.queue_error(400, 63016, "Outside the allowed window")
        rt.dispatcher.dispatch_ids(ids)
        rt.dispatcher.dispatch_due()
        sent = [r.data for r in fake_http.requests[before:]]
        assert [d["To"] for d in sent].count(f"whatsapp:{NURSE}") == 2  # refused, template
        assert len([d for d in sent if "ContentSid" in d]) == 1
        [sms] = [d for d in sent if d["To"] == NURSE]
        with rt.transaction() as s:
            ref = s.scalars(select(Escalation.ref)).one()
        assert ref in sms["Body"]


def test_a_webhook_url_given_to_twilio_with_a_trailing_slash_still_takes_the_message(
        client, rt, fake_http):
    """The number's webhook pasted into Twilio's console as .../message/ was answered 404:
    Twilio does not retry a 404, so every message, red flags included, was lost. It is now
    taken (signed for the URL as Twilio called it, slash and all); a bad signature there is
    still refused."""
    enrol(rt)
    params = {"MessageSid": sid(), "From": PHONE, "Body": "my legs gave way"}
    url = PUBLIC_URL + INBOUND + "/"
    res = client.post(INBOUND + "/", data=params,
                      headers={"X-Twilio-Signature": sign(AUTH_TOKEN, url, params)})
    assert res.status_code == 200
    assert count(rt, Message, Message.direction == "in") == 1
    assert count(rt, Escalation) == 1
    # signed for the URL without the slash: not the URL Twilio called
    params = {**params, "MessageSid": sid()}
    res = client.post(INBOUND + "/", data=params, headers={
        "X-Twilio-Signature": sign(AUTH_TOKEN, PUBLIC_URL + INBOUND, params)})
    assert res.status_code == 403
    assert count(rt, Message, Message.direction == "in") == 1
