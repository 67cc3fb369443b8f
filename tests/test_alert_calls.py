"""A phone call with each EMERGENCY alert to a contact with `call: true`, acknowledged by
pressing 1: config, outbox rows, the Calls request the real SDK makes, the signed webhooks."""

from __future__ import annotations

from xml.etree import ElementTree

import pytest
from sqlalchemy import func, select

from bot.config import ConfigError, load_settings
from bot.messaging.base import SendError
from bot.messaging.dev import DevMessenger
from bot.messaging.fake_twilio_http import FakeTwilioHttpClient
from bot.messaging.twilio_messenger import TwilioMessenger
from bot.scheduler import tick
from bot.services import voice
from bot.store.models import AuditLog, Escalation, Message, OutboxItem
from tests.test_red_flags_e2e import PHONE, RED_FLAG, enrol, texted
from tests.twilio_signing import sign
from tests.twilio_support import (  # noqa: F401 - fixtures
    ACCOUNT_SID,
    AUTH_TOKEN,
    FROM_NUMBER,
    PUBLIC_URL,
    TWILIO_SETTINGS,
    fake_http,
    messenger,
)

ONCALL = "+447700900001"
COORDINATOR = "+447700900002"
URGENT = "back pain is 9/10 and wakes me every night"
CONTACTS = [
    {"id": "oncall", "name": "On-call nurse", "phone": ONCALL, "channel": "sms", "call": True},
    {"id": "coordinator", "name": "Coordinator", "phone": COORDINATOR, "channel": "sms"},
]
TEAM = {"contacts": CONTACTS, "escalation_chain": ["oncall", "coordinator"]}
CALLING = {**TWILIO_SETTINGS, "care_team": TEAM}
ACK = "/webhooks/twilio/voice/ack"
STATUS = "/webhooks/twilio/voice/status"


@pytest.fixture
def settings_overrides():
    return CALLING


def calls(fake_http, phone=None) -> list[dict]:
    """Form data of every Calls.create the SDK made (to `phone`, if given)."""
    return [r.data for r in fake_http.requests if r.url.endswith("/Calls.json")
            and (phone is None or r.data.get("To") == phone)]


def texts(fake_http, phone) -> list[str]:
    return [r.data["Body"] for r in fake_http.requests
            if r.url.endswith("/Messages.json") and r.data.get("To") == phone]


def escalation(rt) -> Escalation:
    with rt.transaction() as s:
        return s.scalars(select(Escalation)).one()


def out_rows(rt) -> list[tuple[str, str, str, int | None]]:
    """(kind, channel, address, escalation id) of every care-team message, in order."""
    with rt.transaction() as s:
        return [tuple(r) for r in s.execute(
            select(Message.kind, Message.channel, Message.address, Message.escalation_id)
            .where(Message.direction == "out", Message.kind.in_(("alert", "alert_call")))
            .order_by(Message.id))]


def press(client, ref, digits, contact="oncall", token=AUTH_TOKEN):
    url = f"{ACK}?esc={ref}&contact={contact}"
    form = {"CallSid": "CA" + "1" * 32, "Digits": digits} if digits is not None else {
        "CallSid": "CA" + "1" * 32}
    return client.post(url, data=form, headers={
        "X-Twilio-Signature": sign(token, PUBLIC_URL + url, form)})


def said(response) -> str:
    root = ElementTree.fromstring(response.data)
    return " ".join(e.text or "" for e in root.iter("Say"))


# -- config ---------------------------------------------------------------------------------


def test_call_is_off_unless_a_contact_asks_for_it():
    team = load_settings(env={}).care_team
    assert [c.call for c in team.contacts] == [False] * len(team.contacts)
    team = load_settings(env={}, overrides={"care_team": TEAM}).care_team
    assert [c.call for c in team.contacts] == [True, False]


@pytest.mark.parametrize("value", ["yes please", "true", 1, None])
def test_call_must_be_true_or_false(value):
    contacts = [{**CONTACTS[0], "call": value}, CONTACTS[1]]
    with pytest.raises(ConfigError, match=r"^config: care_team\.contacts\.0\.call: "):
        load_settings(env={}, overrides={"care_team": {**TEAM, "contacts": contacts}})


def test_a_call_on_twilio_needs_a_number_to_call_from_and_the_public_url():
    service_only = {**TWILIO_SETTINGS["twilio"], "from_number": None,
                    "messaging_service_sid": "MG" + "0" * 32}
    with pytest.raises(ConfigError, match="'oncall' has call: true but TWILIO_FROM"):
        load_settings(env={}, overrides={**CALLING, "twilio": service_only})
    with pytest.raises(ConfigError, match="'oncall' has call: true but CHECKIN_PUBLIC_URL"):
        load_settings(env={}, overrides={**CALLING, "public_url": None})
    assert load_settings(env={}, overrides=CALLING).care_team.contact("oncall").call


# -- what an emergency writes and sends -----------------------------------------------------


def test_an_emergency_texts_then_phones_a_contact_with_call_true(client, rt, fake_http):
    enrol(rt)
    texted(client, RED_FLAG)
    esc = escalation(rt)
    assert out_rows(rt) == [("alert", "sms", ONCALL, esc.id),
                            ("alert_call", "voice", ONCALL, esc.id)]
    [alert] = texts(fake_http, ONCALL)
    assert esc.ref in alert
    # The real SDK's Calls request, after the text.
    [call] = calls(fake_http)
    last_two = [r.url.rsplit("/", 1)[1] for r in fake_http.requests
                if r.data.get("To") == ONCALL]
    assert last_two == ["Messages.json", "Calls.json"]
    with rt.transaction() as s:
        item, message = s.execute(select(OutboxItem, Message).join(
            Message, Message.id == OutboxItem.message_id)
            .where(OutboxItem.kind == "alert_call")).one()
        assert (item.status, item.channel, item.priority) == ("sent", "voice", 0)
        assert message.provider_id.startswith("CA") and message.body == call["Twiml"]
    assert call["To"] == ONCALL and call["From"] == FROM_NUMBER
    assert call["StatusCallback"] == f"{PUBLIC_URL}{STATUS}?outbox={item.id}&via=voice"
    twiml = ElementTree.fromstring(call["Twiml"])
    gathers = twiml.findall("Gather")
    assert len(gathers) == 2  # said twice if nothing is pressed
    for gather in gathers:
        assert gather.get("numDigits") == "1"
        assert gather.get("action") == f"{PUBLIC_URL}{ACK}?esc={esc.ref}&contact=oncall"
        assert gather.find("Say").text == (
            f"This is {rt.settings.clinic.name}. An emergency red flag needs you. Reference "
            f"{' '.join(esc.ref)}. The details are in your text messages. Press 1 to "
            "acknowledge.")
    assert "Ada" not in call["Twiml"] and PHONE not in call["Twiml"]
    with rt.transaction() as s:
        [audited] = s.scalars(select(AuditLog.details).where(
            AuditLog.action == "escalation.alert")).all()
    assert audited["call"] is True


def test_an_urgent_red_flag_texts_but_does_not_phone(client, rt, fake_http):
    enrol(rt)
    texted(client, URGENT)
    assert escalation(rt).level == "urgent"
    assert [row[0] for row in out_rows(rt)] == ["alert"]
    assert calls(fake_http) == [] and len(texts(fake_http, ONCALL)) == 1


def test_re_alerts_phone_the_contacts_with_call_true_again(client, rt, fake_http, clock):
    enrol(rt)
    texted(client, RED_FLAG)
    clock.advance(minutes=15)
    tick(rt)  # the coordinator: a text, no call
    assert len(texts(fake_http, COORDINATOR)) == 1 and calls(fake_http, COORDINATOR) == []
    clock.advance(minutes=15)
    tick(rt)  # round the chain to the on-call nurse again: text and call
    assert len(texts(fake_http, ONCALL)) == 2 and len(calls(fake_http, ONCALL)) == 2
    assert [row[:2] for row in out_rows(rt)] == [
        ("alert", "sms"), ("alert_call", "voice"), ("alert", "sms"),
        ("alert", "sms"), ("alert_call", "voice")]


def test_an_upgrade_from_urgent_to_emergency_phones(client, rt, fake_http):
    enrol(rt)
    texted(client, URGENT)
    assert calls(fake_http) == []
    texted(client, "now my legs gave way")
    assert escalation(rt).level == "emergency"
    assert len(calls(fake_http, ONCALL)) == 1


# -- pressing 1 -----------------------------------------------------------------------------


def test_pressing_1_acknowledges_as_the_contact_called(client, rt, fake_http):
    enrol(rt)
    texted(client, RED_FLAG)
    ref = escalation(rt).ref
    res = press(client, ref, "1")
    assert res.status_code == 200 and res.mimetype == "application/xml"
    assert said(res) == "Acknowledged. Thank you."
    esc = escalation(rt)
    assert (esc.status, esc.acknowledged_by) == ("acknowledged", "On-call nurse")
    with rt.transaction() as s:
        actor, details = s.execute(select(AuditLog.actor, AuditLog.details).where(
            AuditLog.action == "escalation.ack")).one()
    assert actor == "staff:oncall"  # as an ACK texted from that phone
    assert details["by"] == "On-call nurse" and details["how"] == "pressed 1 on the call"
    # Pressed again (or by the next contact called): who took it.
    again = press(client, ref, "1", contact="coordinator")
    assert said(again) == "Already acknowledged by On-call nurse."
    assert escalation(rt).acknowledged_by == "On-call nurse"


@pytest.mark.parametrize("digits", ["2", "#", "", None])
def test_another_key_or_none_does_not_acknowledge(client, rt, fake_http, digits):
    enrol(rt)
    texted(client, RED_FLAG)
    res = press(client, escalation(rt).ref, digits)
    assert res.status_code == 200 and said(res) == "Not acknowledged."
    assert escalation(rt).status == "open"


def test_an_unknown_ref_or_contact_is_not_acknowledged(client, rt, fake_http):
    enrol(rt)
    texted(client, RED_FLAG)
    assert said(press(client, "ZZZZZ", "1")) == "Not acknowledged."
    assert said(press(client, escalation(rt).ref, "1", contact="nobody")) == "Not acknowledged."
    assert escalation(rt).status == "open"


@pytest.mark.parametrize("how", ["forged", "unsigned", "other_ref"])
def test_a_press_without_a_valid_signature_is_refused_and_changes_nothing(client, rt,
                                                                          fake_http, how):
    enrol(rt)
    texted(client, RED_FLAG)
    ref = escalation(rt).ref
    with rt.transaction() as s:
        audits = s.scalar(select(func.count()).select_from(AuditLog))
    form = {"CallSid": "CA" + "1" * 32, "Digits": "1"}
    url = f"{ACK}?esc={ref}&contact=oncall"
    headers = {
        "forged": {"X-Twilio-Signature": sign("not-the-token", PUBLIC_URL + url, form)},
        "unsigned": {},
        # Signed for another escalation's URL, replayed against this one.
        "other_ref": {"X-Twilio-Signature": sign(AUTH_TOKEN, f"{PUBLIC_URL}{ACK}?esc=ZZZZZ"
                                                 "&contact=oncall", form)},
    }[how]
    assert client.post(url, data=form, headers=headers).status_code == 403
    assert escalation(rt).status == "open"
    with rt.transaction() as s:
        assert s.scalar(select(func.count()).select_from(AuditLog)) == audits


def test_an_acknowledgement_cancels_a_call_still_waiting_to_go(client, rt, fake_http, clock):
    """The call met a 503 and waits for its retry; someone acknowledges by text meanwhile:
    the call does not ring."""
    enrol(rt)
    real = fake_http.request

    def request(method, url, params=None, data=None, **kw):
        if url.endswith("/Calls.json"):
            fake_http.queue_error(503, 20500, "Service unavailable")
        return real(method, url, params=params, data=data, **kw)

    fake_http.request = request
    texted(client, RED_FLAG)
    fake_http.request = real
    with rt.transaction() as s:
        item = s.scalars(select(OutboxItem).where(OutboxItem.kind == "alert_call")).one()
        assert item.status == "pending"  # to be tried again
        item_id = item.id
    tried = len(calls(fake_http))
    texted(client, f"ACK {escalation(rt).ref}", sender=ONCALL)
    clock.advance(minutes=1)
    rt.dispatcher.dispatch_due()
    assert len(calls(fake_http)) == tried
    with rt.transaction() as s:
        item = s.get(OutboxItem, item_id)
        assert (item.status, item.last_error) == ("cancelled", "escalation acknowledged")
        assert s.get(Message, item.message_id).status == "cancelled"


def _the_call(rt) -> tuple[str, int, int]:
    """The alert call's SID, outbox row and message."""
    with rt.transaction() as s:
        item, message = s.execute(select(OutboxItem, Message).join(
            Message, Message.id == OutboxItem.message_id)
            .where(OutboxItem.kind == "alert_call")).one()
        return message.provider_id, item.id, message.id


def test_how_the_call_ended_is_kept_on_its_message(client, rt, fake_http):
    enrol(rt)
    texted(client, RED_FLAG)
    sid, item_id, message_id = _the_call(rt)
    url = f"{STATUS}?outbox={item_id}&via=voice"
    form = {"CallSid": sid, "CallStatus": "no-answer"}
    forged = client.post(url, data=form, headers={
        "X-Twilio-Signature": sign("not-the-token", PUBLIC_URL + url, form)})
    assert forged.status_code == 403
    with rt.transaction() as s:
        assert s.get(Message, message_id).status == "queued"
    res = client.post(url, data=form, headers={
        "X-Twilio-Signature": sign(AUTH_TOKEN, PUBLIC_URL + url, form)})
    assert res.status_code == 204
    with rt.transaction() as s:
        assert s.get(Message, message_id).status == "undelivered"
        # A missed call does not move the chain on: the text alert went.
        assert s.scalars(select(Escalation)).one().chain_position == 0


def test_how_a_call_ended_is_kept_while_the_database_is_down_and_applied_later(
        client, rt, fake_http):
    """Twilio does not retry a call's status callback either: during an outage it is spooled,
    as a text's is, and applied once the database is back."""
    from tests.test_spool import database_down

    enrol(rt)
    texted(client, RED_FLAG)
    sid, item_id, message_id = _the_call(rt)
    url = f"{STATUS}?outbox={item_id}&via=voice"
    form = {"CallSid": sid, "CallStatus": "busy"}
    with database_down(rt):
        res = client.post(url, data=form, headers={
            "X-Twilio-Signature": sign(AUTH_TOKEN, PUBLIC_URL + url, form)})
    assert res.status_code == 204
    assert len(rt.spool.pending()) == 1
    with rt.transaction() as s:
        assert s.get(Message, message_id).status == "queued"
    rt.replay_spool()
    assert rt.spool.pending() == []
    with rt.transaction() as s:
        assert s.get(Message, message_id).status == "undelivered"


# -- with no contact calling ----------------------------------------------------------------


class TestNobodyCalled:
    @pytest.fixture
    def settings_overrides(self):
        return TWILIO_SETTINGS

    def test_an_emergency_only_texts(self, client, rt, fake_http):
        enrol(rt)
        texted(client, RED_FLAG)
        oncall = rt.settings.care_team.contact("oncall").phone
        assert [row[:2] for row in out_rows(rt)] == [("alert", "sms")]
        assert calls(fake_http) == [] and len(texts(fake_http, oncall)) == 1
        with rt.transaction() as s:
            [audited] = s.scalars(select(AuditLog.details).where(
                AuditLog.action == "escalation.alert")).all()
        assert "call" not in audited


# -- the messengers -------------------------------------------------------------------------


def test_twilio_messenger_calls_through_the_sdk_and_maps_refusals():
    http = FakeTwilioHttpClient()
    m = TwilioMessenger.from_credentials(ACCOUNT_SID, AUTH_TOKEN, http_client=http,
                                         from_number=FROM_NUMBER)
    twiml = voice.alert_call_twiml("Clinic", "ABCDE", "https://x.example/a?esc=ABCDE")
    result = m.call(ONCALL, twiml, "https://x.example/s")
    req = http.last_request
    assert req.method == "POST"
    assert req.url.endswith(f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json")
    assert req.data == {"To": ONCALL, "From": FROM_NUMBER, "Twiml": twiml,
                        "StatusCallback": "https://x.example/s"}
    assert result.provider_id.startswith("CA") and result.status == "queued"
    assert http.created[-1][1] == result.provider_id
    http.queue_error(400, 13224, "Invalid phone number")
    with pytest.raises(SendError) as err:
        m.call(ONCALL, twiml)
    assert (err.value.kind, err.value.code) == ("permanent", 13224)
    with pytest.raises(SendError) as err:
        m.call("07700 900001", twiml)
    assert err.value.kind == "invalid_number"
    service_only = TwilioMessenger.from_credentials(
        ACCOUNT_SID, AUTH_TOKEN, http_client=http, messaging_service_sid="MG" + "0" * 32)
    before = len(http.requests)
    with pytest.raises(SendError, match="TWILIO_FROM"):
        service_only.call(ONCALL, twiml)
    assert len(http.requests) == before


def test_dev_messenger_records_a_call_and_prints_its_words(capsys):
    m = DevMessenger()
    twiml = voice.alert_call_twiml("Clinic", "ABCDE", "/webhooks/twilio/voice/ack?esc=ABCDE")
    result = m.call(ONCALL, twiml, None)
    assert m.calls == [(ONCALL, twiml, None)] and result.provider_id.startswith("DEVCA")
    assert "Reference A B C D E" in capsys.readouterr().out
