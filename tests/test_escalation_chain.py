"""The alert chain in the cases where it used to stall, double-page or split in two."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from bot.scheduler import tick
from bot.store.models import Escalation, Message
from tests.test_red_flags_e2e import RED_FLAG, alerts, chain_phones, enrol, texted
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


def _refuse_next_send_to(fake_http, number, code=21211, text="Invalid 'To' Phone Number"):
    """The next request the SDK makes to `number` is refused with `code`."""
    real = fake_http.request
    pending = {"to": number}

    def request(method, url, params=None, data=None, **kw):
        if data and pending["to"] and data.get("To") == pending["to"]:
            pending["to"] = None
            fake_http.queue_error(400, code, text)
        return real(method, url, params=params, data=data, **kw)

    fake_http.request = request


def test_a_failed_alert_moves_an_upgraded_chain_on_at_once(client, rt, fake_http, clock):
    """Urgent for hours (its re-alerts went round the chain), then an emergency: the chain
    starts again at the first contact, and an alert that cannot reach them passes to the next
    contact at the next tick, as on any first lap, not after 15 minutes."""
    enrol(rt)
    oncall, coordinator, _ = chain_phones(rt)
    texted(client, "back pain is 9/10 and wakes me every night")
    assert rt.settings.care_team.urgent_ack_timeout_minutes == 120
    for _ in range(3):  # nobody acknowledges: every contact alerted once
        clock.advance(minutes=120)
        tick(rt)
    before = len(alerts(fake_http, coordinator))
    _refuse_next_send_to(fake_http, oncall)
    texted(client, "now my legs gave way")
    with rt.transaction() as s:
        esc = s.scalars(select(Escalation)).one()
        assert (esc.level, esc.chain_position) == ("emergency", 0)
    clock.advance(seconds=5)
    tick(rt)
    [alert] = alerts(fake_http, coordinator)[before:]
    assert alert.startswith("EMERGENCY")


def _report(client, sid, status="undelivered", code="30003"):
    """Twilio's signed status callback for message `sid`."""
    params = {"MessageSid": sid, "MessageStatus": status, "ErrorCode": code}
    url = PUBLIC_URL + "/webhooks/twilio/status"
    assert client.post("/webhooks/twilio/status", data=params, headers={
        "X-Twilio-Signature": sign(AUTH_TOKEN, url, params)}).status_code == 204


@pytest.mark.parametrize("how", ["refused", "undelivered"])
def test_the_next_contact_is_told_the_one_before_could_not_be_reached(client, rt, fake_http,
                                                                      clock, how):
    """The first alert never reached the on-call nurse (refused at once, or reported
    undelivered a minute later): the next contact, alerted at once, is told so, not "No ACK
    from" someone who never got it. The one after them, alerted as usual 15 minutes later,
    is told who did not acknowledge."""
    enrol(rt)
    oncall, coordinator, consultant = chain_phones(rt)
    if how == "refused":
        _refuse_next_send_to(fake_http, oncall)
    texted(client, RED_FLAG)  # 10:00 GMT
    if how == "undelivered":
        clock.advance(minutes=1)
        with rt.transaction() as s:
            sid = s.scalars(select(Message.provider_id).where(Message.kind == "alert")).one()
        _report(client, sid)
    clock.advance(seconds=5)
    tick(rt)
    [alert] = alerts(fake_http, coordinator)
    assert "Could not reach On-call oncology nurse at 10:00 GMT. Ada Lovelace" in alert
    assert "No ACK" not in alert
    clock.advance(minutes=15)
    tick(rt)
    [alert] = alerts(fake_http, consultant)
    assert "No ACK from MSCC coordinator since 10:0" in alert
    assert "Could not reach" not in alert


class TestOneContact:
    @pytest.fixture
    def settings_overrides(self):
        return {**TWILIO_SETTINGS, "care_team": {"escalation_chain": ["oncall"]}}

    def test_a_repeat_after_a_failed_alert_says_it_did_not_reach_them(self, client, rt,
                                                                       fake_http, clock):
        enrol(rt)
        [oncall] = chain_phones(rt)
        _refuse_next_send_to(fake_http, oncall)
        texted(client, RED_FLAG)
        clock.advance(seconds=5)
        tick(rt)
        refused, again = alerts(fake_http, oncall)
        assert "REPEAT" not in refused
        assert "REPEAT: could not reach you at 10:00 GMT. Ada Lovelace" in again
        clock.advance(minutes=15)
        tick(rt)
        assert "REPEAT: no ACK since 10:00 GMT. Ada Lovelace" in alerts(fake_http, oncall)[-1]


CONTACTS = [
    {"id": "oncall", "name": "On-call nurse", "phone": "+44 7700 900001", "channel": "whatsapp"},
    {"id": "coordinator", "name": "Coordinator", "phone": "+44 7700 900002", "channel": "sms"},
    {"id": "consultant", "name": "Consultant", "phone": "+44 7700 900003", "channel": "sms"},
]


class TestWhatsAppOnCall:
    @pytest.fixture
    def settings_overrides(self):
        return {**TWILIO_SETTINGS, "care_team": {"contacts": CONTACTS}}

    def test_an_alert_undelivered_on_whatsapp_goes_again_by_sms_and_pages_nobody_else(
            self, client, rt, fake_http, clock):
        """The callback says the WhatsApp alert did not arrive: the same contact gets it by
        SMS, and the next contact is not paged 5 s later as well (the chain moves on if the
        SMS fails too, or after the usual 15 minutes)."""
        enrol(rt)
        oncall, coordinator, _ = chain_phones(rt)
        texted(client, RED_FLAG)
        with rt.transaction() as s:
            sid = s.scalars(select(Message.provider_id).where(Message.kind == "alert")).one()
        params = {"MessageSid": sid, "MessageStatus": "undelivered", "ErrorCode": "63024"}
        url = PUBLIC_URL + "/webhooks/twilio/status"
        assert client.post("/webhooks/twilio/status", data=params, headers={
            "X-Twilio-Signature": sign(AUTH_TOKEN, url, params)}).status_code == 204
        clock.advance(seconds=5)
        tick(rt)
        assert [d["To"] for d in sent_to(fake_http, oncall)] == [f"whatsapp:{oncall}", oncall]
        assert sent_to(fake_http, coordinator) == []
        clock.advance(minutes=15)
        tick(rt)
        [alert] = alerts(fake_http, coordinator)  # the usual pace goes on
        assert "No ACK from On-call nurse since 10:00 GMT." in alert  # the SMS copy arrived

    def test_when_the_sms_copy_fails_too_the_chain_moves_on_at_once(
            self, client, rt, fake_http, clock):
        enrol(rt)
        oncall, coordinator, _ = chain_phones(rt)
        texted(client, RED_FLAG)
        with rt.transaction() as s:
            sid = s.scalars(select(Message.provider_id).where(Message.kind == "alert")).one()
        _refuse_next_send_to(fake_http, oncall)  # the SMS copy: refused
        params = {"MessageSid": sid, "MessageStatus": "undelivered", "ErrorCode": "63024"}
        url = PUBLIC_URL + "/webhooks/twilio/status"
        client.post("/webhooks/twilio/status", data=params, headers={
            "X-Twilio-Signature": sign(AUTH_TOKEN, url, params)})
        clock.advance(seconds=5)
        tick(rt)
        [alert] = alerts(fake_http, coordinator)
        assert "Could not reach On-call nurse at 10:00 GMT." in alert  # neither arrived


def test_a_red_flag_texted_before_enrolment_and_one_after_share_one_chain(
        client, rt, fake_http, clock):
    oncall, coordinator, consultant = chain_phones(rt)
    texted(client, "I cant feel my legs")  # the number is not enrolled yet
    enrol(rt)  # then it is, before anyone acknowledged
    clock.advance(minutes=2)
    texted(client, "and now I wet myself")
    with rt.transaction() as s:
        [esc] = s.scalars(select(Escalation)).all()
        assert esc.status == "open" and esc.phone is None
        assert esc.patient_id is not None  # the alerts now name the patient
        ref = esc.ref
    texted(client, f"ACK {ref}", sender=oncall)
    for _ in range(3):
        clock.advance(minutes=15)
        tick(rt)
    assert alerts(fake_http, coordinator) == [] and alerts(fake_http, consultant) == []


def test_one_escalation_whose_alert_cannot_be_written_holds_up_no_other(
        client, rt, fake_http, clock, monkeypatch):
    from bot.services import escalations
    from tests.test_webhooks import enrol as enrol_at

    enrol(rt)
    other = "+447700900555"
    enrol_at(rt, phone=other)
    texted(client, RED_FLAG)
    texted(client, RED_FLAG, sender=other)
    with rt.transaction() as s:
        broken, fine = (e.ref for e in s.scalars(select(Escalation).order_by(Escalation.id)))
    real = escalations._alert

    def alert(session, ctx, esc, now):
        if esc.ref == broken:
            raise RuntimeError("cannot write this one")
        return real(session, ctx, esc, now)

    monkeypatch.setattr(escalations, "_alert", alert)
    _, coordinator, _ = chain_phones(rt)
    clock.advance(minutes=15)
    report = tick(rt)
    assert report.failed == ["realerts"] and report.realerts == 1
    assert len(alerts(fake_http, coordinator)) == 1  # the other escalation's re-alert went
    body = client.get("/healthz").get_json()
    assert "scheduler: last tick failed: realerts" in body["problems"]
    with rt.transaction() as s:
        esc = s.scalars(select(Escalation).where(Escalation.ref == broken)).one()
        assert esc.chain_position == 0 and esc.next_alert_at <= clock.now()  # still due
    monkeypatch.setattr(escalations, "_alert", real)
    clock.advance(seconds=5)
    assert tick(rt).failed == []
    assert len(alerts(fake_http, coordinator)) == 2  # and it goes once it can


def test_an_ack_from_a_care_team_phone_also_enrolled_as_a_patient_acknowledges(
        client, rt, fake_http, clock):
    from tests.test_webhooks import enrol as enrol_at

    enrol(rt)
    oncall, coordinator, _ = chain_phones(rt)
    enrol_at(rt, phone=oncall)  # the on-call nurse enrolled their own phone to try the bot
    texted(client, RED_FLAG)
    with rt.transaction() as s:
        ref = s.scalars(select(Escalation.ref)).one()
    texted(client, f"ACK {ref}", sender=oncall)
    with rt.transaction() as s:
        esc = s.scalars(select(Escalation)).one()
        assert esc.status == "acknowledged"
    clock.advance(minutes=15)
    tick(rt)
    assert alerts(fake_http, coordinator) == []


def test_two_red_flags_at_once_from_a_number_not_enrolled_open_one_escalation(
        rt, fake_http, monkeypatch):
    import threading

    from bot.services.inbound import InboundMessage, handle_inbound_message

    if not rt.settings.database_url.startswith("postgres"):
        pytest.skip("concurrent writers: PostgreSQL only (SQLite takes one writer at a time)")
    from tests.test_escalation_races import _pause_first

    inside, release = _pause_first(monkeypatch)

    def red_flag(sid):
        with rt.transaction() as s:
            handle_inbound_message(s, rt.ctx, InboundMessage(
                "sms", "+447700900777", RED_FLAG, provider_id=sid), rt.clock.now())

    first = threading.Thread(target=red_flag, args=("SM" + "1" * 32,), name="first")
    first.start()
    assert inside.wait(10)
    second = threading.Thread(target=red_flag, args=("SM" + "2" * 32,), name="second")
    second.start()
    second.join(1.0)  # it waits for the first to finish
    release.set()
    first.join(10)
    second.join(10)
    with rt.transaction() as s:
        assert len(s.scalars(select(Escalation)).all()) == 1


def test_the_ack_receipt_names_who_the_alert_was_about(client, rt, fake_http):
    """A typo in the ref that happens to hit another open alert must show at once."""
    enrol(rt)
    oncall, _, _ = chain_phones(rt)
    texted(client, RED_FLAG)
    with rt.transaction() as s:
        esc = s.scalars(select(Escalation)).one()
        ref, name, phone = esc.ref, esc.patient.name, esc.patient.phone
    texted(client, f"ack {ref}", sender=oncall)
    receipt = alerts(fake_http, oncall)[-1]
    assert receipt.startswith("Thank you") and ref in receipt
    assert name in receipt and phone in receipt
