"""Twilio webhooks through the whole app: signatures, exactly-once, keywords, status callbacks."""

from __future__ import annotations

import threading

import pytest
import requests
from sqlalchemy import func, select
from werkzeug.serving import make_server

from bot.domain.gsm7 import is_gsm7, segments
from bot.services.context import readable_phone
from bot.services.patients import Enrolment, enrol_patient
from bot.store.models import Conversation, Escalation, Message, OutboxItem, Patient, StatusEvent
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

PHONE = "+447700900123"
INBOUND = "/webhooks/twilio/message"
STATUS = "/webhooks/twilio/status"
_sid = iter(range(10**6))


def sid() -> str:
    return f"SM{next(_sid):032d}"


def post(client, path, params, url=None, headers=None, signature=None):
    url = url or PUBLIC_URL + path
    sig = signature if signature is not None else sign(AUTH_TOKEN, url, params)
    return client.post(path, data=params, headers={"X-Twilio-Signature": sig, **(headers or {})})


def texted(client, body, sender=PHONE, channel="sms", **extra):
    prefix = "whatsapp:" if channel == "whatsapp" else ""
    params = {"MessageSid": sid(), "From": prefix + sender, "To": prefix + "+447700900999",
              "Body": body, **extra}
    return post(client, INBOUND, params)


def enrol(rt, channel="sms", consented=True, status="active", phone=PHONE):
    with rt.transaction() as s:
        p = enrol_patient(s, Enrolment(phone, "Ada Lovelace", "Europe/London", channel),
                          languages=["en", "es"], now=rt.clock.now(), actor="test")
        p.status = status
        if consented:
            p.consent_at = rt.clock.now()
        return p.id


def count(rt, model, *where):
    with rt.transaction() as s:
        return s.scalar(select(func.count()).select_from(model).where(*where))


def bodies(fake_http, number=PHONE):
    return [d.get("Body") for d in sent_to(fake_http, number)]


# -- signatures -------------------------------------------------------------------------------

def test_a_signed_message_is_processed_and_answered(client, rt, fake_http):
    enrol(rt)
    res = texted(client, "hello")
    assert res.status_code == 200
    assert res.mimetype == "application/xml" and b"<Response" in res.data
    assert count(rt, Message, Message.direction == "in") == 1
    assert len(bodies(fake_http)) == 1


@pytest.mark.parametrize("signature", ["", "bm90IGEgcmVhbCBzaWduYXR1cmU="])
def test_forged_or_unsigned_requests_get_403_and_store_nothing(client, rt, fake_http,
                                                              signature, caplog):
    enrol(rt)
    params = {"MessageSid": sid(), "From": PHONE, "Body": "my legs gave way"}
    res = post(client, INBOUND, params, signature=signature)
    assert res.status_code == 403
    assert count(rt, Message) == 0
    assert count(rt, Escalation) == 0
    assert fake_http.requests == []
    assert "rejected webhook" in caplog.text
    assert PHONE not in caplog.text and "legs" not in caplog.text


def test_a_signature_for_other_parameters_is_refused(client, rt):
    enrol(rt)
    params = {"MessageSid": sid(), "From": PHONE, "Body": "hello"}
    signature = sign(AUTH_TOKEN, PUBLIC_URL + INBOUND, {**params, "Body": "other"})
    assert post(client, INBOUND, params, signature=signature).status_code == 403
    assert count(rt, Message) == 0


def test_status_callbacks_need_a_signature_too(client, rt):
    res = post(client, STATUS, {"MessageSid": sid(), "MessageStatus": "delivered"},
               signature="")
    assert res.status_code == 403
    assert count(rt, StatusEvent) == 0


class TestBehindAProxy:
    @pytest.fixture
    def settings_overrides(self):
        return {**TWILIO_SETTINGS, "public_url": None, "proxy_fix": 1}

    def test_forwarded_https_validates_with_proxy_fix(self, client, rt):
        enrol(rt)
        params = {"MessageSid": sid(), "From": PHONE, "Body": "hello"}
        url = "https://bot.example.org" + INBOUND
        headers = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "bot.example.org"}
        assert post(client, INBOUND, params, url=url, headers=headers).status_code == 200
        assert count(rt, Message, Message.direction == "in") == 1

    @pytest.mark.parametrize("query", ["site=north", "site=S%C3%A3o", "k=ab%2Fcd", "k=%7Ex"])
    def test_a_percent_encoded_query_is_checked_as_twilio_signed_it(self, client, rt, query):
        # Twilio signs the URL as configured, escapes and all; Flask's request.url decodes them.
        enrol(rt)
        params = {"MessageSid": sid(), "From": PHONE, "Body": "hello"}
        url = f"https://bot.example.org{INBOUND}?{query}"
        headers = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "bot.example.org",
                   "X-Twilio-Signature": sign(AUTH_TOKEN, url, params)}
        res = client.post(f"{INBOUND}?{query}", data=params, headers=headers)
        assert res.status_code == 200
        assert count(rt, Message, Message.direction == "in") == 1


class TestBehindAProxyWithoutProxyFix:
    @pytest.fixture
    def settings_overrides(self):
        return {**TWILIO_SETTINGS, "public_url": None, "proxy_fix": 0}

    def test_the_https_signature_fails_when_flask_sees_http(self, client, rt):
        enrol(rt)
        params = {"MessageSid": sid(), "From": PHONE, "Body": "hello"}
        url = "https://bot.example.org" + INBOUND
        headers = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "bot.example.org"}
        assert post(client, INBOUND, params, url=url, headers=headers).status_code == 403


# -- exactly once -----------------------------------------------------------------------------

def test_a_retried_message_sid_is_processed_once(client, rt, fake_http):
    enrol(rt)
    params = {"MessageSid": sid(), "From": PHONE, "Body": "hello"}
    assert post(client, INBOUND, params).status_code == 200
    assert post(client, INBOUND, params).status_code == 200
    assert count(rt, Message, Message.direction == "in") == 1
    assert len(bodies(fake_http)) == 1


def test_the_same_sid_twice_at_once_against_a_running_server(app, rt, fake_http):
    enrol(rt)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        for round_ in range(5):
            params = {"MessageSid": sid(), "From": PHONE, "Body": f"hello {round_}"}
            headers = {"X-Twilio-Signature": sign(AUTH_TOKEN, PUBLIC_URL + INBOUND, params)}
            barrier = threading.Barrier(2)
            codes: list[int] = []

            def hit(barrier=barrier, codes=codes, params=params, headers=headers):
                barrier.wait()
                codes.append(requests.post(base + INBOUND, data=params, headers=headers,
                                           timeout=30).status_code)

            workers = [threading.Thread(target=hit) for _ in range(2)]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            assert codes == [200, 200]
    finally:
        server.shutdown()
    assert count(rt, Message, Message.direction == "in") == 5
    assert len(bodies(fake_http)) == 5  # one reply per message, not per copy


# -- who is texting ---------------------------------------------------------------------------

def test_a_sender_who_is_not_enrolled_gets_a_polite_reply_and_no_conversation(
        client, rt, fake_http):
    res = texted(client, "hi, is this the clinic?", sender="+447700900555")
    assert res.status_code == 200
    [reply] = bodies(fake_http, "+447700900555")
    assert readable_phone(rt.settings.clinic.phone) in reply
    assert count(rt, Message, Message.address == "+447700900555") == 2
    assert count(rt, Patient) == 0


@pytest.mark.parametrize("question", ["what if my legs go numb, what do I do?",
                                      "what should we do if his legs go numb?",
                                      "what if I get a fever?"])
def test_a_hypothetical_red_flag_from_a_number_not_enrolled_gets_the_safety_net_too(
        client, rt, fake_http, question):
    """Rule 5 of the clinical brief: a conditional question deserves the safety net, whoever
    asks it. Told that the number is unknown (and the clinic's phone), then what to do if it
    happens; recorded; no conversation, no escalation (nothing is happening)."""
    assert texted(client, question, sender=STRANGER).status_code == 200
    polite, safety_net = bodies(fake_http, STRANGER)
    assert polite == rt.ctx.text_for(None, "not_enrolled")
    assert safety_net == rt.ctx.text_for(None, "safety_net")
    assert readable_phone(rt.settings.clinic.acute_oncology_hotline) in safety_net
    assert all(is_gsm7(b) and segments(b) <= 2 for b in (polite, safety_net))
    with rt.transaction() as s:
        kinds = s.scalars(select(Message.kind).where(Message.address == STRANGER)
                          .order_by(Message.id)).all()
        assert kinds == ["inbound", "not_enrolled", "safety_net"]
    assert count(rt, Escalation) == 0 and count(rt, Patient) == 0


class TestSpanishDeployment:
    """A number not enrolled has no language of its own: the deployment's default is used."""

    @pytest.fixture
    def settings_overrides(self):
        return {**TWILIO_SETTINGS, "languages": ["es", "en"], "defaults": {"language": "es"}}

    def test_a_hypothetical_question_in_spanish_gets_both_in_spanish(self, client, rt,
                                                                     fake_http):
        texted(client, "que hago si se me duermen las piernas?", sender=STRANGER)
        assert bodies(fake_http, STRANGER) == [
            rt.ctx.texts.render(key, "es", **rt.ctx.patient_values(None))
            for key in ("not_enrolled", "safety_net")]
        assert "Este numero no esta en nuestra lista" in bodies(fake_http, STRANGER)[0]
        assert count(rt, Escalation) == 0


MEXICO = "+525512345678"  # E.164 since 2019: no "1" after +52


@pytest.mark.parametrize("enrolled_as", [MEXICO, "+52 1 55 1234 5678"])
def test_a_mexican_patient_on_whatsapp_is_recognised_by_the_number_whatsapp_gives(
        client, rt, fake_http, enrolled_as):
    """WhatsApp (and Twilio's From) still puts the old mobile "1" after +52. The patient is
    found, the red flag is theirs, and replies go to their E.164 number."""
    pid = enrol(rt, channel="whatsapp", phone=enrolled_as)
    res = texted(client, "my legs gave way", sender="+5215512345678", channel="whatsapp")
    assert res.status_code == 200
    with rt.transaction() as s:
        assert s.get(Patient, pid).phone == MEXICO
        [inbound] = s.scalars(select(Message).where(Message.direction == "in")).all()
        assert (inbound.patient_id, inbound.address) == (pid, MEXICO)
        assert s.scalars(select(Escalation.patient_id)).one() == pid
    sent = sent_to(fake_http, "+5215512345678") + sent_to(fake_http, MEXICO)
    assert sent and {d["To"] for d in sent} == {f"whatsapp:{MEXICO}"}
    assert count(rt, Message, Message.kind == "not_enrolled") == 0


def test_an_argentine_mobile_is_the_same_number_on_whatsapp_and_in_e164(client, rt, fake_http):
    pid = enrol(rt, channel="whatsapp", phone="+54 9 11 5874 9895")
    texted(client, "hello", sender="+5491158749895", channel="whatsapp")
    with rt.transaction() as s:
        assert s.scalars(select(Message.patient_id).where(
            Message.direction == "in")).one() == pid


# -- STOP / START / HELP ----------------------------------------------------------------------

@pytest.mark.parametrize("channel", ["sms", "whatsapp"])
@pytest.mark.parametrize("word", ["STOP", "stop", "Unsubscribe", " quit ", "OPTOUT", "StopAll"])
def test_stop_words_opt_the_patient_out(client, rt, fake_http, channel, word):
    pid = enrol(rt, channel=channel)
    texted(client, word, channel=channel)
    with rt.transaction() as s:
        assert s.get(Patient, pid).status == "opted_out"
    assert "START" in bodies(fake_http)[-1]


def test_stop_inside_a_sentence_is_not_an_opt_out(client, rt):
    pid = enrol(rt)
    texted(client, "please don't stop my check-ins")
    with rt.transaction() as s:
        assert s.get(Patient, pid).status == "active"


def test_opt_out_type_from_twilio_is_honoured(client, rt):
    pid = enrol(rt)
    texted(client, "ARRET", OptOutType="STOP")
    with rt.transaction() as s:
        assert s.get(Patient, pid).status == "opted_out"


@pytest.mark.parametrize("channel", ["sms", "whatsapp"])
@pytest.mark.parametrize("word", ["START", "unstop", "YES"])
def test_start_words_opt_back_in(client, rt, fake_http, channel, word):
    pid = enrol(rt, channel=channel, status="opted_out")
    texted(client, word, channel=channel)
    with rt.transaction() as s:
        assert s.get(Patient, pid).status == "active"
    assert "Welcome back" in bodies(fake_http)[-1]


@pytest.mark.parametrize("channel", ["sms", "whatsapp"])
@pytest.mark.parametrize("word", ["HELP", "info", "Ayuda"])
def test_help_names_the_clinic_its_phone_and_how_to_stop(client, rt, fake_http, channel, word):
    enrol(rt, channel=channel)
    texted(client, word, channel=channel)
    reply = bodies(fake_http)[-1]
    assert rt.settings.clinic.name in reply
    assert readable_phone(rt.settings.clinic.phone) in reply
    assert "STOP" in reply


def test_an_opted_out_patient_gets_no_scheduled_checkin(client, rt, fake_http, clock):
    from bot.scheduler import tick
    from bot.services.schedules import add_schedule

    pid = enrol(rt)
    with rt.transaction() as s:
        add_schedule(s, rt.ctx, s.get(Patient, pid), "checkin", "10:00", 7, clock.now(), "test")
    texted(client, "STOP")
    fake_http.reset()
    clock.advance(days=8)
    tick(rt)
    assert fake_http.requests == []


def checkin_queued(rt, pid: int) -> None:
    """A routine check-in started for the patient, its first texts written but not yet sent."""
    from bot.services.conversations import start_flow

    previous = rt.dispatch_mode
    rt.dispatch_mode = "none"
    with rt.transaction() as s:
        start_flow(s, rt.ctx, s.get(Patient, pid), "checkin", rt.clock.now(), routine=True)
    rt.dispatch_mode = previous


def test_an_opted_out_patients_message_already_queued_is_not_sent(client, rt, fake_http):
    pid = enrol(rt)
    checkin_queued(rt, pid)
    texted(client, "STOP")  # arrives before the queued check-in went out
    fake_http.reset()
    rt.dispatcher.dispatch_due()
    assert fake_http.requests == []
    assert count(rt, OutboxItem, OutboxItem.status == "cancelled") >= 1


@pytest.mark.parametrize("channel", ["sms", "whatsapp"])
def test_a_reply_waiting_out_a_429_is_not_sent_after_stop(client, rt, fake_http, clock, channel):
    enrol(rt, channel=channel)
    for _ in range(2):  # the check-in's opening and first question
        fake_http.queue_error(429, 20429, "Too Many Requests", headers={"Retry-After": "30"})
    texted(client, "CHECKIN", channel=channel)
    assert count(rt, OutboxItem, OutboxItem.status == "pending") == 2
    texted(client, "STOP", channel=channel)
    fake_http.reset()
    clock.advance(seconds=60)
    rt.dispatcher.dispatch_due()
    assert fake_http.requests == []
    # Cancelled when STOP closed the check-in they belong to.
    assert count(rt, OutboxItem, OutboxItem.status == "cancelled",
                 OutboxItem.last_error == "conversation interrupted: opted out") == 2


def test_a_reply_outside_any_conversation_waiting_out_a_429_is_not_sent_after_stop(
        client, rt, fake_http, clock):
    enrol(rt)
    fake_http.queue_error(429, 20429, "Too Many Requests", headers={"Retry-After": "30"})
    texted(client, "see you next week")  # no conversation open: "saved for your care team"
    assert count(rt, OutboxItem, OutboxItem.status == "pending") == 1
    texted(client, "STOP")
    fake_http.reset()
    clock.advance(seconds=60)
    rt.dispatcher.dispatch_due()
    assert fake_http.requests == []
    assert count(rt, OutboxItem, OutboxItem.status == "cancelled",
                 OutboxItem.last_error == "patient opted_out") == 1


def test_an_opted_out_patient_still_gets_the_emergency_instruction_and_help(client, rt,
                                                                          fake_http):
    enrol(rt, status="opted_out")
    texted(client, "my legs gave way and I wet myself")
    texted(client, "HELP")
    kinds = {k for (k,) in _rows(rt, select(OutboxItem.kind).where(
        OutboxItem.to == PHONE, OutboxItem.status == "sent"))}
    assert {"emergency", "help"} <= kinds


def test_an_opted_out_patients_words_are_listed_for_the_team_with_no_reply(client, rt,
                                                                           fake_http):
    """They asked for no more texts, not for the clinic to ignore them: "please ring me" is
    listed to read (dashboard, `to-read`), and nothing is sent back."""
    from bot.services.health import messages_to_read

    enrol(rt, status="opted_out")
    texted(client, "please ring me about my appointment")
    assert fake_http.requests == []
    texted(client, "STOP")  # a keyword (confirmed again): not listed
    with rt.transaction() as s:
        assert [m.body for m in messages_to_read(s)] == ["please ring me about my appointment"]


def _rows(rt, stmt):
    with rt.transaction() as s:
        return s.execute(stmt).all()


# -- status callbacks -------------------------------------------------------------------------

def _sent_message(client, rt, fake_http):
    enrol(rt)
    texted(client, "hello")
    with rt.transaction() as s:
        return s.scalars(select(Message).where(Message.direction == "out")).one().provider_id


def _status(rt, provider_id):
    with rt.transaction() as s:
        return s.scalars(select(Message.status).where(Message.provider_id == provider_id)).one()


def test_status_callbacks_move_forward_only_and_are_idempotent(client, rt, fake_http):
    provider_id = _sent_message(client, rt, fake_http)
    for status in ("sent", "delivered", "sent", "delivered"):
        res = post(client, STATUS, {"MessageSid": provider_id, "MessageStatus": status})
        assert res.status_code == 204
    assert _status(rt, provider_id) == "delivered"
    assert count(rt, StatusEvent, StatusEvent.provider_id == provider_id) == 2
    post(client, STATUS, {"MessageSid": provider_id, "MessageStatus": "read"})
    assert _status(rt, provider_id) == "read"


def test_statuses_twilio_may_add_are_stored_without_error(client, rt, fake_http):
    provider_id = _sent_message(client, rt, fake_http)
    post(client, STATUS, {"MessageSid": provider_id, "MessageStatus": "delivered"})
    for status in ("partially_delivered", "some_status_twilio_adds_in_the_future"):
        res = post(client, STATUS, {"MessageSid": provider_id, "MessageStatus": status})
        assert res.status_code == 204
    assert _status(rt, provider_id) == "delivered"  # neither moves it back
    assert count(rt, StatusEvent, StatusEvent.provider_id == provider_id) == 3


def test_undelivered_is_recorded_with_its_error_code(client, rt, fake_http):
    provider_id = _sent_message(client, rt, fake_http)
    post(client, STATUS, {"MessageSid": provider_id, "MessageStatus": "undelivered",
                          "ErrorCode": "30003"})
    with rt.transaction() as s:
        m = s.scalars(select(Message).where(Message.provider_id == provider_id)).one()
        assert (m.status, m.error_code) == ("undelivered", 30003)


@pytest.mark.parametrize("reached", [("delivered",), ("delivered", "read")])
@pytest.mark.parametrize("late", [("failed", "63003"), ("undelivered", "30008"),
                                  ("undelivered", "30003")])
def test_a_failure_reported_after_delivery_is_recorded_not_acted_on(client, rt, fake_http,
                                                                     reached, late):
    """Twilio's callbacks are not sent in order: a "failed" or "undelivered" that comes after
    "delivered" (or WhatsApp's "read") is about a message the phone already has. No SMS copy,
    no retry, not listed as failed: the event is kept, and the message stays delivered."""
    from bot.store.models import AuditLog

    provider_id = _whatsapp_sent(client, rt, fake_http)
    for status in reached:
        post(client, STATUS, {"MessageSid": provider_id, "MessageStatus": status})
    before = len(fake_http.requests)
    status, code = late
    res = post(client, STATUS, {"MessageSid": provider_id, "MessageStatus": status,
                                "ErrorCode": code})
    assert res.status_code == 204
    rt.dispatcher.dispatch_due()
    assert fake_http.requests[before:] == []
    with rt.transaction() as s:
        m = s.scalars(select(Message).where(Message.provider_id == provider_id)).one()
        assert (m.status, m.error_code) == (reached[-1], None)
        assert s.scalars(select(OutboxItem.status).where(
            OutboxItem.message_id == m.id)).all() == ["sent"]
        event = s.scalars(select(StatusEvent).where(
            StatusEvent.provider_id == provider_id, StatusEvent.status == status)).one()
        assert (event.error_code, event.applied) == (int(code), True)
        [record] = s.scalars(select(AuditLog).where(
            AuditLog.action == "message.failure_after_delivery")).all()
        assert record.details == {"status": status, "code": int(code),
                                  "was": reached[-1]}
    assert count(rt, OutboxItem) == 2  # the welcome reply and this one: nothing queued
    assert count(rt, AuditLog, AuditLog.action == "message.undelivered") == 0


def test_a_failure_after_delivery_that_waited_for_its_sid_is_not_acted_on(client, rt,
                                                                          fake_http,
                                                                          monkeypatch):
    """Both callbacks beat the SID's record: the tick applies them in the order they came."""
    from bot.scheduler import tick

    enrol(rt, channel="whatsapp")
    real_send = rt.messenger.send

    def send_then_callbacks(outgoing):
        result = real_send(outgoing)
        for status, code in (("delivered", None), ("failed", "63003")):
            params = {"MessageSid": result.provider_id, "MessageStatus": status}
            if code:
                params["ErrorCode"] = code
            assert post(client, STATUS, params).status_code == 204
        return result

    monkeypatch.setattr(rt.messenger, "send", send_then_callbacks)
    texted(client, "hello", channel="whatsapp")
    monkeypatch.undo()
    tick(rt)
    assert [r.data["To"] for r in fake_http.requests] == [f"whatsapp:{PHONE}"]
    with rt.transaction() as s:
        assert s.scalars(select(Message.status).where(
            Message.direction == "out")).one() == "delivered"


# The reverse order: "failed" first (the copy is queued), then "delivered" (the phone has the
# message after all). A copy not sent yet is cancelled: the patient would get the text twice.

def _copy_rows(rt, provider_id):
    """The outbox rows written after the message with this SID (its copies), oldest first."""
    with rt.transaction() as s:
        original = s.scalars(select(Message.id).where(Message.provider_id == provider_id)).one()
        return [(i.channel, i.status) for i in s.scalars(
            select(OutboxItem).where(OutboxItem.message_id > original).order_by(OutboxItem.id))]


@pytest.mark.parametrize("channel, failed, copy_channel", [
    ("whatsapp", ("failed", "63003"), "sms"),  # the SMS fallback
    ("whatsapp", ("undelivered", "30008"), "sms"),
    ("sms", ("undelivered", "30003"), "sms"),  # unreachable: sent again in 15 minutes
])
def test_a_delivery_reported_after_a_failure_cancels_the_copy_not_yet_sent(
        client, rt, fake_http, clock, monkeypatch, channel, failed, copy_channel):
    from bot.store.models import AuditLog

    if channel == "whatsapp":
        provider_id = _whatsapp_sent(client, rt, fake_http)
    else:
        provider_id = _sent_message(client, rt, fake_http)
    before = len(fake_http.requests)
    monkeypatch.setattr(rt, "dispatch_mode", "none")  # the copy waits for the dispatcher
    status, code = failed
    post(client, STATUS, {"MessageSid": provider_id, "MessageStatus": status, "ErrorCode": code})
    assert _copy_rows(rt, provider_id) == [(copy_channel, "pending")]
    post(client, STATUS, {"MessageSid": provider_id, "MessageStatus": "delivered"})
    monkeypatch.undo()
    clock.advance(minutes=20)
    rt.dispatcher.dispatch_due()
    assert fake_http.requests[before:] == []  # the patient has the text once
    assert _copy_rows(rt, provider_id) == [(copy_channel, "cancelled")]
    with rt.transaction() as s:
        [record] = s.scalars(select(AuditLog).where(
            AuditLog.action == "message.delivered_after_failure")).all()
        assert record.details["status"] == "delivered" and len(record.details["cancelled"]) == 1


def test_a_delivery_reported_after_the_sms_copy_went_changes_nothing(client, rt, fake_http):
    provider_id = _whatsapp_sent(client, rt, fake_http)
    post(client, STATUS, {"MessageSid": provider_id, "MessageStatus": "failed",
                          "ErrorCode": "63003"})
    rt.dispatcher.dispatch_due()  # a routine copy: sent by the paced sweep
    assert sent_to(fake_http, PHONE)[-1]["Body"] == "How is your pain today?"  # by SMS
    sent = len(fake_http.requests)
    assert post(client, STATUS, {"MessageSid": provider_id,
                                 "MessageStatus": "delivered"}).status_code == 204
    rt.dispatcher.dispatch_due()
    assert len(fake_http.requests) == sent
    assert _copy_rows(rt, provider_id) == [("sms", "sent")]


def _reported_failed(client, rt, fake_http, channel, code):
    """A message to the patient on `channel`, then Twilio's callback: undelivered with `code`.
    Returns the patient's id."""
    pid = enrol(rt, channel=channel)
    texted(client, "hello", channel=channel)
    with rt.transaction() as s:
        provider_id = s.scalars(select(Message.provider_id).where(
            Message.direction == "out")).one()
    res = post(client, STATUS, {"MessageSid": provider_id, "MessageStatus": "undelivered",
                                "ErrorCode": str(code)})
    assert res.status_code == 204
    return pid


@pytest.mark.parametrize(("channel", "code"), [
    ("sms", 21211), ("sms", 21614), ("sms", 30005), ("sms", 30006), ("whatsapp", 21211)])
def test_a_callback_saying_the_number_cannot_receive_marks_it_invalid(client, rt, fake_http,
                                                                      channel, code):
    """As when Twilio refuses the send itself (21211, 21614): the number on file can never
    receive our texts (invalid, not a mobile, unknown or no longer in service, a landline), so
    the team is shown it to fix, and routine messages wait for a number that works."""
    from bot.store.models import AuditLog

    pid = _reported_failed(client, rt, fake_http, channel, code)
    with rt.transaction() as s:
        assert s.get(Patient, pid).number_invalid_at == rt.clock.now()
        [record] = s.scalars(select(AuditLog).where(
            AuditLog.action == "patient.number_invalid")).all()
        assert (record.subject_id, record.details) == (
            str(pid), {"code": code, "source": "status callback"})
        assert s.scalars(select(OutboxItem.status)).all() == ["failed"]
    # an invalid number is not sent an SMS copy of a WhatsApp text either
    assert [r.data["To"] for r in fake_http.requests] == [
        f"whatsapp:{PHONE}" if channel == "whatsapp" else PHONE]


@pytest.mark.parametrize(("channel", "code"), [
    ("sms", 30003), ("sms", 30008), ("sms", 30007), ("sms", 30004), ("whatsapp", 63003),
    ("whatsapp", 30005), ("whatsapp", 63024)])
def test_a_callback_with_a_passing_or_channel_error_leaves_the_number_valid(
        client, rt, fake_http, channel, code):
    """Unreachable for now (30003), an unknown carrier error (30008), filtered (30007),
    blocked (30004), or not on WhatsApp (63003, 63024: SMS still works) say nothing final
    about the number."""
    pid = _reported_failed(client, rt, fake_http, channel, code)
    with rt.transaction() as s:
        assert s.get(Patient, pid).number_invalid_at is None


def test_a_callback_saying_an_old_number_is_invalid_leaves_the_new_one_alone(client, rt,
                                                                             fake_http):
    pid = enrol(rt)
    texted(client, "hello")
    with rt.transaction() as s:
        provider_id = s.scalars(select(Message.provider_id).where(
            Message.direction == "out")).one()
        s.get(Patient, pid).phone = "+447700900456"  # a coordinator corrected it since
    post(client, STATUS, {"MessageSid": provider_id, "MessageStatus": "undelivered",
                          "ErrorCode": "21211"})
    with rt.transaction() as s:
        assert s.get(Patient, pid).number_invalid_at is None


def test_a_failed_whatsapp_message_falls_back_to_sms(client, rt, fake_http, clock):
    enrol(rt, channel="whatsapp")
    texted(client, "hello", channel="whatsapp")
    [wa] = [r for r in fake_http.requests if r.data["To"].startswith("whatsapp:")]
    with rt.transaction() as s:
        provider_id = s.scalars(select(Message.provider_id).where(
            Message.direction == "out")).one()
    post(client, STATUS, {"MessageSid": provider_id, "MessageStatus": "failed",
                          "ErrorCode": "63003"})
    sms = [r.data for r in fake_http.requests if r.data["To"] == PHONE]
    assert len(sms) == 1 and sms[0]["Body"] == wa.data["Body"]


def _whatsapp_sent(client, rt, fake_http, kind="checkin", priority=5):
    """A free-text WhatsApp message of `kind` sent to the patient inside the window (the
    patient wrote a minute ago); returns its SID."""
    from bot.services.outbox import Draft, enqueue

    pid = enrol(rt, channel="whatsapp")
    texted(client, "hello", channel="whatsapp")
    with rt.transaction() as s:
        item = enqueue(s, Draft(to=PHONE, channel="whatsapp", body="How is your pain today?",
                                kind=kind, priority=priority, routine=priority > 1,
                                patient_id=pid), rt.clock.now())
    rt.dispatcher.dispatch_ids([item.id])
    assert sent_to(fake_http, PHONE)[-1]["Body"] == "How is your pain today?"
    with rt.transaction() as s:
        return s.scalars(select(Message.provider_id).where(
            Message.body == "How is your pain today?")).one()


def test_63016_in_a_callback_resends_the_approved_template(client, rt, fake_http):
    provider_id = _whatsapp_sent(client, rt, fake_http)
    before = len(fake_http.requests)
    post(client, STATUS, {"MessageSid": provider_id, "MessageStatus": "failed",
                          "ErrorCode": "63016"})
    rt.dispatcher.dispatch_due()  # a routine retry: sent by the paced sweep
    [again] = [r.data for r in fake_http.requests[before:]]
    assert again["To"] == f"whatsapp:{PHONE}"
    assert again["ContentSid"] == rt.settings.twilio.whatsapp_templates["checkin"].content_sid
    assert "Body" not in again
    assert count(rt, OutboxItem, OutboxItem.variant == "template",
                 OutboxItem.status == "sent") == 1


@pytest.mark.parametrize("code, copy", [("63003", ("sms", None)),  # the SMS fallback
                                         ("63016", ("whatsapp", "template"))])
def test_a_routine_copy_queued_by_a_callback_goes_through_the_pacer(
        client, rt, fake_http, monkeypatch, code, copy):
    """A scheduled fan-out that fails on WhatsApp comes back as a burst of callbacks: their SMS
    copies (or templates) must keep to the sender's rate as the fan-out did, so they are left
    to the paced sweep, not sent from the web worker at once."""
    provider_id = _whatsapp_sent(client, rt, fake_http)
    before = len(fake_http.requests)
    paced = []
    wait = rt.dispatcher.pacer.wait
    monkeypatch.setattr(rt.dispatcher.pacer, "wait",
                        lambda sender, segments=1: paced.append(sender) or wait(sender, segments))
    post(client, STATUS, {"MessageSid": provider_id, "MessageStatus": "failed",
                          "ErrorCode": code})
    assert fake_http.requests[before:] == []  # not from the web worker, past the pacer
    with rt.transaction() as s:
        original = s.scalars(select(Message.id).where(Message.provider_id == provider_id)).one()
        [row] = s.scalars(select(OutboxItem).where(OutboxItem.message_id > original)).all()
        assert (row.channel, row.variant, row.status) == (*copy, "pending")
    rt.dispatcher.dispatch_due()  # the sweep, paced per sender
    [sent] = [r.data for r in fake_http.requests[before:]]
    channel = copy[0]
    assert sent["To"] == (PHONE if channel == "sms" else f"whatsapp:{PHONE}")
    assert paced == [rt.dispatcher._sender(channel)]


def _template_sid(rt) -> str:
    """The SID of the one template resend."""
    with rt.transaction() as s:
        return s.scalars(select(Message.provider_id).join(
            OutboxItem, OutboxItem.message_id == Message.id).where(
            OutboxItem.variant == "template")).one()


def test_a_template_that_fails_too_falls_back_to_sms(client, rt, fake_http):
    provider_id = _whatsapp_sent(client, rt, fake_http)
    post(client, STATUS, {"MessageSid": provider_id, "MessageStatus": "failed",
                          "ErrorCode": "63016"})
    rt.dispatcher.dispatch_due()  # routine copies and retries: sent by the paced sweep
    template_sid = _template_sid(rt)
    before = len(fake_http.requests)
    post(client, STATUS, {"MessageSid": template_sid, "MessageStatus": "undelivered",
                          "ErrorCode": "63024"})
    rt.dispatcher.dispatch_due()
    [sms] = [r.data for r in fake_http.requests[before:]]
    assert sms["To"] == PHONE and sms["Body"] == "How is your pain today?"
    # the same callback again changes nothing
    post(client, STATUS, {"MessageSid": template_sid, "MessageStatus": "undelivered",
                          "ErrorCode": "63024"})
    rt.dispatcher.dispatch_due()
    assert len(fake_http.requests) == before + 1


def test_an_emergency_refused_with_63016_goes_by_template_and_sms_at_once(client, rt,
                                                                         fake_http):
    provider_id = _whatsapp_sent(client, rt, fake_http, kind="emergency", priority=0)
    before = len(fake_http.requests)
    post(client, STATUS, {"MessageSid": provider_id, "MessageStatus": "failed",
                          "ErrorCode": "63016"})
    sent = [r.data for r in fake_http.requests[before:]]
    assert sorted(d["To"] for d in sent) == [PHONE, f"whatsapp:{PHONE}"]
    assert len([d for d in sent if "ContentSid" in d]) == 1
    # The template fails too: the patient already has the SMS, and gets no second one.
    template_sid = _template_sid(rt)
    before = len(fake_http.requests)
    post(client, STATUS, {"MessageSid": template_sid, "MessageStatus": "undelivered",
                          "ErrorCode": "63024"})
    assert fake_http.requests[before:] == []


def test_an_emergency_template_refused_at_send_is_not_followed_by_a_second_sms(client, rt,
                                                                               fake_http):
    provider_id = _whatsapp_sent(client, rt, fake_http, kind="emergency", priority=0)
    before = len(fake_http.requests)
    fake_http.queue_error(400, 21656, "The ContentVariables parameter is invalid")
    post(client, STATUS, {"MessageSid": provider_id, "MessageStatus": "failed",
                          "ErrorCode": "63016"})
    rt.dispatcher.dispatch_due()
    sent = [r.data for r in fake_http.requests[before:]]
    assert [d["To"] for d in sent if "Body" in d] == [PHONE]  # one SMS, not two
    assert count(rt, OutboxItem, OutboxItem.variant == "template",
                 OutboxItem.status == "cancelled") == 1


def test_an_opted_out_patients_emergency_refused_with_63016_still_goes(client, rt, fake_http):
    provider_id = _whatsapp_sent(client, rt, fake_http, kind="emergency", priority=0)
    with rt.transaction() as s:
        s.scalars(select(Patient)).one().status = "opted_out"
    before = len(fake_http.requests)
    post(client, STATUS, {"MessageSid": provider_id, "MessageStatus": "failed",
                          "ErrorCode": "63016"})
    sent = [r.data for r in fake_http.requests[before:]]
    assert sorted(d["To"] for d in sent) == [PHONE, f"whatsapp:{PHONE}"]


class TestAWhatsAppOnCall:
    NURSE = "+447700900001"

    @pytest.fixture
    def settings_overrides(self):
        return {**TWILIO_SETTINGS, "care_team": {"contacts": [
            {"id": "oncall", "name": "On-call nurse", "phone": self.NURSE, "channel": "whatsapp"},
            {"id": "coordinator", "name": "Coordinator", "phone": "+447700900002"},
            {"id": "consultant", "name": "Consultant", "phone": "+447700900003"}]}}

    def test_an_alert_refused_with_63016_goes_by_template_and_sms(self, client, rt, fake_http):
        nurse = self.NURSE
        enrol(rt)
        texted(client, "hello", sender=nurse, channel="whatsapp")  # the nurse's window is open
        texted(client, "my legs gave way and I wet myself")
        with rt.transaction() as s:
            alert_sid = s.scalars(select(Message.provider_id).where(
                Message.kind == "alert", Message.address == nurse)).one()
        before = len(fake_http.requests)
        post(client, STATUS, {"MessageSid": alert_sid, "MessageStatus": "undelivered",
                              "ErrorCode": "63016"})
        sent = [r.data for r in fake_http.requests[before:]]
        assert sorted(d["To"] for d in sent) == [nurse, f"whatsapp:{nurse}"]
        [sms] = [d for d in sent if d["To"] == nurse]
        with rt.transaction() as s:
            ref = s.scalars(select(Escalation.ref)).one()
        assert ref in sms["Body"]


    def test_a_failure_reported_after_the_alert_was_delivered_leaves_the_chain_alone(
            self, client, rt, fake_http):
        nurse = self.NURSE
        enrol(rt)
        texted(client, "hello", sender=nurse, channel="whatsapp")
        texted(client, "my legs gave way and I wet myself")
        with rt.transaction() as s:
            alert_sid = s.scalars(select(Message.provider_id).where(
                Message.kind == "alert", Message.address == nurse)).one()
            due = s.scalars(select(Escalation.next_alert_at)).one()
        post(client, STATUS, {"MessageSid": alert_sid, "MessageStatus": "delivered"})
        before = len(fake_http.requests)
        post(client, STATUS, {"MessageSid": alert_sid, "MessageStatus": "undelivered",
                              "ErrorCode": "30008"})
        assert fake_http.requests[before:] == []  # no copy to the nurse, no next contact
        with rt.transaction() as s:
            assert s.scalars(select(Escalation.next_alert_at)).one() == due

    def test_a_late_failure_of_an_alert_the_chain_moved_past_makes_no_copies(
            self, client, rt, fake_http, clock):
        from bot.scheduler import tick

        nurse, coordinator = self.NURSE, "+447700900002"
        enrol(rt)
        texted(client, "hello", sender=nurse, channel="whatsapp")
        texted(client, "my legs gave way and I wet myself")
        with rt.transaction() as s:
            first_sid = s.scalars(select(Message.provider_id).where(
                Message.kind == "alert", Message.address == nurse)).one()
        clock.advance(minutes=rt.settings.care_team.ack_timeout_minutes + 1)
        tick(rt)  # nobody acknowledged: the coordinator is alerted
        with rt.transaction() as s:
            second_sid = s.scalars(select(Message.provider_id).where(
                Message.kind == "alert", Message.address == coordinator)).one()
            due = s.scalars(select(Escalation.next_alert_at)).one()
        before = len(fake_http.requests)
        post(client, STATUS, {"MessageSid": first_sid, "MessageStatus": "undelivered",
                              "ErrorCode": "63016"})  # the nurse's alert fails, late
        assert fake_http.requests[before:] == []  # no template, no SMS copy to the nurse
        with rt.transaction() as s:
            assert s.scalars(select(Escalation.next_alert_at)).one() == due  # time not cut
        post(client, STATUS, {"MessageSid": second_sid, "MessageStatus": "undelivered",
                              "ErrorCode": "30008"})  # the current contact's alert fails
        with rt.transaction() as s:
            assert s.scalars(select(Escalation.next_alert_at)).one() == clock.now()


def test_an_opted_out_patients_emergency_instruction_unreachable_is_sent_again(client, rt,
                                                                               fake_http):
    enrol(rt, status="opted_out")
    texted(client, "my legs gave way and I wet myself")
    with rt.transaction() as s:
        sid_ = s.scalars(select(Message.provider_id).where(
            Message.kind == "emergency", Message.address == PHONE)).one()
    post(client, STATUS, {"MessageSid": sid_, "MessageStatus": "undelivered",
                          "ErrorCode": "30003"})
    assert count(rt, OutboxItem, OutboxItem.kind == "emergency",
                 OutboxItem.status == "pending") == 1  # again, in 15 minutes


def test_63016_for_a_kind_with_no_template_falls_back_to_sms(client, rt, fake_http):
    provider_id = _whatsapp_sent(client, rt, fake_http, kind="received", priority=1)
    before = len(fake_http.requests)
    post(client, STATUS, {"MessageSid": provider_id, "MessageStatus": "failed",
                          "ErrorCode": "63016"})
    [sms] = [r.data for r in fake_http.requests[before:]]
    assert sms["To"] == PHONE and "ContentSid" not in sms


def _callback_before_the_sid_is_recorded(client, rt, monkeypatch, status, code=None):
    """Twilio's status callback arrives after it accepted the send but before the dispatcher
    wrote the SID down (the callback wins the race)."""
    real_send = rt.messenger.send

    def send_then_callback(outgoing):
        result = real_send(outgoing)
        params = {"MessageSid": result.provider_id, "MessageStatus": status}
        if code:
            params["ErrorCode"] = str(code)
        assert post(client, STATUS, params).status_code == 204
        return result

    monkeypatch.setattr(rt.messenger, "send", send_then_callback)


def test_a_status_that_beats_the_sid_being_recorded_is_applied_later(client, rt, fake_http,
                                                                      monkeypatch):
    from bot.scheduler import tick

    enrol(rt)
    _callback_before_the_sid_is_recorded(client, rt, monkeypatch, "delivered")
    texted(client, "hello")
    tick(rt)  # the scheduler applies callbacks that waited for their SID
    with rt.transaction() as s:
        [reply] = s.scalars(select(Message).where(Message.direction == "out")).all()
        assert reply.provider_id.startswith("SM") and reply.status == "delivered"


@pytest.mark.parametrize("live", ["delivered", "undelivered"])
def test_a_waiting_status_applied_by_the_tick_never_overwrites_a_live_one(client, rt, fake_http,
                                                                          monkeypatch, live):
    """PostgreSQL: the tick applies a "sent" that waited for its SID while a live callback for
    the same message comes in. Whatever the order, the status ends where it should."""
    from bot.services import status as status_service

    if not rt.settings.database_url.startswith("postgres"):
        pytest.skip("row locks are what is tested: PostgreSQL only")
    enrol(rt)
    _callback_before_the_sid_is_recorded(client, rt, monkeypatch, "sent")
    texted(client, "hello")
    monkeypatch.undo()
    with rt.transaction() as s:
        sid_out = s.scalars(select(Message.provider_id).where(Message.direction == "out")).one()

    inside, release = threading.Event(), threading.Event()
    real_advance = status_service.advance_status

    def paused_advance(current, new):
        if threading.current_thread().name == "tick":
            inside.set()
            release.wait(10)
        return real_advance(current, new)

    monkeypatch.setattr(status_service, "advance_status", paused_advance)

    def tick():
        with rt.transaction() as s:
            status_service.apply_waiting_statuses(s, rt.ctx, rt.clock.now())

    ticking = threading.Thread(target=tick, name="tick")
    ticking.start()
    assert inside.wait(10)
    results = []
    callback = threading.Thread(target=lambda: results.append(post(
        client, STATUS, {"MessageSid": sid_out, "MessageStatus": live, "ErrorCode": "30007"}
    ).status_code))
    callback.start()
    callback.join(1.0)  # it waits for the tick's lock on the message
    release.set()
    ticking.join(10)
    callback.join(10)
    assert results == [204]
    assert _status(rt, sid_out) == live


def test_an_early_whatsapp_failure_still_falls_back_to_sms(client, rt, fake_http, monkeypatch):
    from bot.scheduler import tick

    enrol(rt, channel="whatsapp")
    _callback_before_the_sid_is_recorded(client, rt, monkeypatch, "failed", 63003)
    texted(client, "hello", channel="whatsapp")
    assert [r for r in fake_http.requests if r.data["To"] == PHONE] == []
    tick(rt)
    [wa] = [r.data for r in fake_http.requests if r.data["To"].startswith("whatsapp:")]
    sms = [r.data for r in fake_http.requests if r.data["To"] == PHONE]
    assert len(sms) == 1 and sms[0]["Body"] == wa["Body"]
    with rt.transaction() as s:
        wa_message = s.scalars(select(Message).where(
            Message.direction == "out", Message.channel == "whatsapp")).one()
        assert wa_message.status == "failed"


def test_an_early_21610_failure_opts_the_patient_out(client, rt, fake_http, monkeypatch):
    from bot.scheduler import tick

    pid = enrol(rt)
    _callback_before_the_sid_is_recorded(client, rt, monkeypatch, "undelivered", 21610)
    texted(client, "hello")
    tick(rt)
    with rt.transaction() as s:
        assert s.get(Patient, pid).status == "opted_out"


def test_whatsapp_replies_inside_the_window_are_free_text(client, rt, fake_http, clock):
    enrol(rt, channel="whatsapp")
    texted(client, "hello", channel="whatsapp")
    [req] = fake_http.requests
    assert req.data["To"] == f"whatsapp:{PHONE}" and "Body" in req.data


def test_whatsapp_after_24h_of_silence_opens_with_a_template(client, rt, fake_http, clock):
    from bot.services.conversations import start_flow

    pid = enrol(rt, channel="whatsapp")
    texted(client, "hello", channel="whatsapp")
    fake_http.reset()
    clock.advance(hours=25)
    with rt.transaction() as s:
        ids = start_flow(s, rt.ctx, s.get(Patient, pid), "checkin", clock.now(), routine=True)
    rt.dispatcher.dispatch_ids(ids)
    assert fake_http.requests
    assert all("ContentSid" in r.data and "Body" not in r.data for r in fake_http.requests)


def _opening_template(client, rt, clock, start=None):
    """A WhatsApp patient silent for 25 hours; a scheduled check-in opens with the template.
    Returns the outbox ids start_flow wrote."""
    from bot.services.conversations import start_flow

    if start is not None:
        clock.set(start)
    pid = enrol(rt, channel="whatsapp")
    texted(client, "hello", channel="whatsapp")
    clock.advance(hours=25)
    with rt.transaction() as s:
        return start_flow(s, rt.ctx, s.get(Patient, pid), "checkin", clock.now(), routine=True)


@pytest.mark.parametrize("when", ["callback", "send"])
def test_a_failed_opening_template_falls_back_to_words_by_sms(client, rt, fake_http, clock,
                                                              when):
    ids = _opening_template(client, rt, clock)
    fake_http.reset()
    if when == "send":  # refused at once: not a WhatsApp number
        fake_http.queue_error(400, 63024, "Invalid message recipient")
    rt.dispatcher.dispatch_ids(ids)
    if when == "callback":
        [req] = fake_http.requests
        with rt.transaction() as s:
            sid_ = s.scalars(select(Message.provider_id).where(
                Message.id == select(OutboxItem.message_id).where(
                    OutboxItem.id == ids[0]).scalar_subquery())).one()
        post(client, STATUS, {"MessageSid": sid_, "MessageStatus": "failed",
                              "ErrorCode": "63003"})
    rt.dispatcher.dispatch_due()  # a routine copy: sent by the paced sweep
    [sms] = sent_to(fake_http, PHONE)[1:]
    assert sms["To"] == PHONE
    assert "has a message for you" in sms["Body"] and "[" not in sms["Body"]


def test_a_patient_who_writes_before_the_opening_goes_gets_the_flow_not_the_opening(
        client, rt, fake_http, clock):
    from datetime import UTC, datetime

    # 06:00 in London: the opening waits for the end of quiet hours (08:00)
    ids = _opening_template(client, rt, clock, start=datetime(2026, 3, 2, 5, 0, tzinfo=UTC))
    rt.dispatcher.dispatch_ids(ids)
    fake_http.reset()
    clock.advance(minutes=30)
    texted(client, "morning, feeling ok", channel="whatsapp")
    clock.advance(hours=2)
    rt.dispatcher.dispatch_due()
    sent = sent_to(fake_http, PHONE)
    assert sent and all("ContentSid" not in d for d in sent)
    assert not any("has a message for you" in d.get("Body", "") for d in sent)
    assert "check-in" in sent[0]["Body"]
    assert count(rt, OutboxItem, OutboxItem.id == ids[0], OutboxItem.status == "cancelled") == 1


@pytest.mark.parametrize("kind", ["image/webp", "audio/ogg"])
def test_a_sticker_or_voice_note_in_reply_to_the_opening_starts_the_checkin(client, rt,
                                                                         fake_http, clock,
                                                                         kind):
    # "Reply with any word to see it": many answer a WhatsApp message with a sticker (an
    # image) or a voice note. It opened the window and it is a reply: the check-in's first
    # question goes, after the word that this service reads only text.
    ids = _opening_template(client, rt, clock)
    rt.dispatcher.dispatch_ids(ids)
    fake_http.reset()
    clock.advance(minutes=5)
    texted(client, "", channel="whatsapp", NumMedia="1", MediaUrl0=MEDIA_URL,
           MediaContentType0=kind)
    sent = sent_to(fake_http, PHONE)
    assert len(sent) >= 2 and not any("ContentSid" in d for d in sent)
    assert "only read text" in sent[0]["Body"]
    assert "check-in" in sent[1]["Body"] and "Reply with a number" in sent[-1]["Body"]
    with rt.transaction() as s:
        conv = s.scalars(select(Conversation).where(Conversation.flow_id == "checkin")).one()
        assert conv.status == "waiting" and not conv.state.get("awaiting_open")


def test_a_blank_reply_to_the_opening_starts_the_checkin_too(client, rt, fake_http, clock):
    ids = _opening_template(client, rt, clock)
    rt.dispatcher.dispatch_ids(ids)
    fake_http.reset()
    texted(client, "", channel="whatsapp")
    sent = sent_to(fake_http, PHONE)
    assert "reached us empty" in sent[0]["Body"] and "check-in" in sent[1]["Body"]


def test_help_in_reply_to_the_opening_answers_then_starts_the_checkin(client, rt, fake_http,
                                                                       clock):
    ids = _opening_template(client, rt, clock)
    rt.dispatcher.dispatch_ids(ids)
    fake_http.reset()
    texted(client, "HELP", channel="whatsapp")
    sent = sent_to(fake_http, PHONE)
    assert "STOP" in sent[0]["Body"] and "check-in" in sent[1]["Body"]


def _to_read_since_the_opening(rt):
    """Texts listed for the team to read, but for the "hello" before the opening."""
    from bot.services.health import messages_to_read

    with rt.transaction() as s:
        return [m.body for m in messages_to_read(s) if m.body != "hello"]


@pytest.mark.parametrize(("words", "reply_key"), [
    ("Please call me, I'm in hospital at the moment", "aside"),
    ("who is this?", "aside"),
    ("please stop texting me", "stop_how"),
])
def test_words_for_the_team_in_reply_to_the_opening_are_saved_for_them(
        client, rt, fake_http, clock, words, reply_key):
    # Before, any reply to the opening only started the check-in: "please call me" was
    # listed for nobody, and the patient was not told where it went, as they are when they
    # write it in reply to a question.
    ids = _opening_template(client, rt, clock)
    rt.dispatcher.dispatch_ids(ids)
    fake_http.reset()
    texted(client, words, channel="whatsapp")
    assert _to_read_since_the_opening(rt) == [words]
    with rt.transaction() as s:
        said = rt.ctx.text_for(s.scalars(select(Patient)).one(), reply_key)
    sent = [d["Body"] for d in sent_to(fake_http, PHONE)]
    assert sent[0] == said and "check-in" in sent[1]
    assert "Reply with a number" in sent[-1]


def test_a_plain_reply_to_the_opening_is_no_message_for_the_team(client, rt, fake_http, clock):
    rt.dispatcher.dispatch_ids(_opening_template(client, rt, clock))
    fake_http.reset()
    texted(client, "ok", channel="whatsapp")
    assert _to_read_since_the_opening(rt) == []
    assert "check-in" in sent_to(fake_http, PHONE)[0]["Body"]


def test_an_emergency_before_the_opening_goes_cancels_the_opening(client, rt, fake_http,
                                                                    clock):
    from datetime import UTC, datetime

    ids = _opening_template(client, rt, clock, start=datetime(2026, 3, 2, 5, 0, tzinfo=UTC))
    rt.dispatcher.dispatch_ids(ids)  # held for quiet hours
    texted(client, "my legs gave way", channel="whatsapp")
    assert count(rt, OutboxItem, OutboxItem.id == ids[0], OutboxItem.status == "cancelled") == 1


def test_an_sms_does_not_open_the_whatsapp_window_for_a_scheduled_checkin(client, rt,
                                                                           fake_http, clock):
    from bot.services.conversations import start_flow

    pid = enrol(rt, channel="whatsapp")
    texted(client, "hello", channel="whatsapp")
    clock.advance(hours=25)
    texted(client, "hello again", channel="sms")  # an SMS: WhatsApp's window stays shut
    fake_http.reset()
    clock.advance(hours=1)
    with rt.transaction() as s:
        ids = start_flow(s, rt.ctx, s.get(Patient, pid), "checkin", clock.now(), routine=True)
    rt.dispatcher.dispatch_ids(ids)
    # the template alone opens it; the questions come once the patient answers it
    [req] = fake_http.requests
    assert "ContentSid" in req.data and "Body" not in req.data


def test_database_errors_do_not_leak_numbers_or_bodies(rt):
    from sqlalchemy.exc import IntegrityError

    from bot.store.models import Message as M

    now = rt.clock.now()
    row = dict(direction="in", channel="sms", address=PHONE, body="my private words",
               kind="inbound", provider_id="SMdup", status="received", created_at=now,
               updated_at=now)
    with rt.transaction() as s:
        s.add(M(**row))
    with pytest.raises(IntegrityError) as err, rt.transaction() as s:
        s.add(M(**row))
    assert PHONE not in str(err.value) and "private words" not in str(err.value)


# -- photos and voice notes -------------------------------------------------------------------

MEDIA_URL = "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME1"


def _mid_checkin(rt, channel="sms"):
    from bot.services.conversations import active_conversation, start_flow

    pid = enrol(rt, channel=channel)
    with rt.transaction() as s:
        patient = s.get(Patient, pid)
        patient.last_inbound_at = rt.clock.now()
        # Inside WhatsApp's window (as if started in answer to the patient's message): the
        # questions go, not the opening template (a reply to which starts the flow).
        start_flow(s, rt.ctx, patient, "checkin", rt.clock.now(), channel=channel)
        node = active_conversation(s, pid).current_node
        assert node is not None
        return pid, node


@pytest.mark.parametrize("channel,content_type", [("sms", "image/jpeg"),
                                                  ("whatsapp", "audio/ogg")])
def test_a_photo_or_voice_note_is_kept_and_the_patient_asked_for_words(
        client, rt, fake_http, channel, content_type):
    from bot.services.conversations import active_conversation
    from bot.store.models import Answer

    pid, node = _mid_checkin(rt, channel)
    fake_http.requests.clear()
    res = texted(client, "", channel=channel, NumMedia="1", MediaUrl0=MEDIA_URL,
                 MediaContentType0=content_type)
    assert res.status_code == 200
    with rt.transaction() as s:
        inbound = s.scalars(select(Message).where(Message.direction == "in")).one()
        assert inbound.media == [{"url": MEDIA_URL, "content_type": content_type}]
        assert inbound.patient_id == pid
        conv = active_conversation(s, pid)
        assert conv.current_node == node  # not taken as a wrong answer
        assert s.scalar(select(func.count()).select_from(Answer)) == 0
    [reply] = [r.data["Body"] for r in fake_http.requests]
    assert "can only read text" in reply and readable_phone(rt.settings.clinic.acute_oncology_hotline) in reply


def _question(rt, flow_id, node_id, language="en"):
    return rt.ctx.flows.get(flow_id).node(node_id).text[language]


def _asked_mid_checkin(rt, client, channel="sms"):
    """A patient who texted CHECKIN, and got the check-in's first question."""
    pid = enrol(rt, channel=channel)
    texted(client, "CHECKIN", channel=channel)
    return pid, "pain"


def _conversation_state(rt, pid):
    from bot.services.conversations import active_conversation

    with rt.transaction() as s:
        conv = active_conversation(s, pid)
        return conv.current_node, conv.state.get("tries")


@pytest.mark.parametrize("word", ["HELP", "info"])
def test_help_in_the_middle_of_a_check_in_then_asks_the_question_again(
        client, rt, fake_http, word):
    # Before, the help text came alone: on a small screen the patient no longer saw what
    # they were being asked. It is no answer and uses no try.
    pid, node = _asked_mid_checkin(rt, client)
    before = _conversation_state(rt, pid)
    fake_http.requests.clear()
    texted(client, word)
    assert bodies(fake_http) == [rt.ctx.text_for(None, "help"), _question(rt, "checkin", node)]
    assert _conversation_state(rt, pid) == before
    texted(client, "3")  # the answer still goes to the question
    from bot.store.models import Answer
    with rt.transaction() as s:
        assert s.scalars(select(Answer.value).where(Answer.patient_id == pid)).all() == [3]


def test_help_at_the_consent_question_asks_the_consent_question_again(client, rt, fake_http):
    from bot.services.conversations import start_flow

    pid = enrol(rt, consented=False)
    with rt.transaction() as s:
        start_flow(s, rt.ctx, s.get(Patient, pid), "welcome", rt.clock.now())
    rt.dispatcher.dispatch_due()
    fake_http.requests.clear()
    texted(client, "HELP")
    assert bodies(fake_http) == [rt.ctx.text_for(None, "help"),
                                 _question(rt, "welcome", "consent").replace(
                                     "{clinic_name}", rt.settings.clinic.name)]


@pytest.mark.parametrize("channel,content_type", [("sms", "image/jpeg"),
                                                  ("whatsapp", "audio/ogg")])
def test_a_photo_in_the_middle_of_a_check_in_then_asks_the_question_again(
        client, rt, fake_http, channel, content_type):
    pid, node = _asked_mid_checkin(rt, client, channel)
    before = _conversation_state(rt, pid)
    fake_http.requests.clear()
    texted(client, "", channel=channel, NumMedia="1", MediaUrl0=MEDIA_URL,
           MediaContentType0=content_type)
    told = bodies(fake_http)
    assert len(told) == 2 and "can only read text" in told[0]
    assert told[1] == _question(rt, "checkin", node)
    assert _conversation_state(rt, pid) == before  # no try used


def _photo_with(client, words, channel="sms"):
    """`words` texted with a photo attached (a caption)."""
    texted(client, words, channel=channel, NumMedia="1", MediaUrl0=MEDIA_URL,
           MediaContentType0="image/jpeg")


@pytest.mark.parametrize("channel", ["sms", "whatsapp"])
def test_a_photo_with_words_mid_check_in_says_the_photo_cannot_be_seen(
        client, rt, fake_http, channel):
    # Before, "Here is my rash" with a photo got only "Sorry, we did not understand": the
    # patient was never told that nobody would see the photo.
    pid, node = _asked_mid_checkin(rt, client, channel)
    fake_http.requests.clear()
    _photo_with(client, "Here is my rash", channel)
    told = bodies(fake_http)
    assert len(told) == 2 and "can only read text" in told[0]
    assert told[1] == rt.ctx.flows.get("checkin").node(node).retry.text["en"]
    fake_http.requests.clear()
    _photo_with(client, "4", channel)  # an answer with a photo is still the answer
    told = bodies(fake_http)
    assert len(told) == 2 and "can only read text" in told[0]
    assert told[1] == _question(rt, "checkin", "pain_new")
    from bot.store.models import Answer
    with rt.transaction() as s:
        assert s.scalars(select(Answer.value).where(Answer.patient_id == pid)).all() == [4]


def test_a_photo_with_words_outside_a_check_in_says_the_photo_cannot_be_seen(
        client, rt, fake_http):
    pid = enrol(rt)
    _photo_with(client, "look at my ankle, is that normal")
    told = bodies(fake_http)
    assert len(told) == 2 and "can only read text" in told[0]
    with rt.transaction() as s:
        assert told[1] == rt.ctx.text_for(s.get(Patient, pid), "received")


def test_help_after_the_last_try_is_still_no_try(client, rt, fake_http):
    # Two replies not understood at "any new numbness?" (the third alerts the team): HELP
    # and a photo between them do not use up the last try, and the question comes again.
    pid, _ = _asked_mid_checkin(rt, client)
    for reply in ("3", "no", "no", "no", "no", "no"):  # to the numbness question
        texted(client, reply)
    texted(client, "banana")
    texted(client, "banana")
    fake_http.requests.clear()
    texted(client, "HELP")
    texted(client, "", NumMedia="1", MediaUrl0=MEDIA_URL, MediaContentType0="image/jpeg")
    assert bodies(fake_http)[1::2] == [_question(rt, "checkin", "numbness")] * 2
    assert count(rt, Escalation) == 0
    assert _conversation_state(rt, pid) == ("numbness", 2)


def test_help_after_stop_asks_no_question(client, rt, fake_http):
    _asked_mid_checkin(rt, client)
    texted(client, "STOP")
    fake_http.requests.clear()
    texted(client, "HELP")
    assert bodies(fake_http) == [rt.ctx.text_for(None, "help")]


def test_a_photo_with_a_red_flag_caption_still_raises_the_alarm(client, rt, fake_http):
    _mid_checkin(rt)
    texted(client, "my legs gave way and I wet myself", NumMedia="1", MediaUrl0=MEDIA_URL,
           MediaContentType0="image/jpeg")
    assert count(rt, Escalation) == 1
    with rt.transaction() as s:
        inbound = s.scalars(select(Message).where(Message.direction == "in")).one()
        assert inbound.media == [{"url": MEDIA_URL, "content_type": "image/jpeg"}]


# -- loop guard -------------------------------------------------------------------------------

def test_an_auto_responder_gets_no_reply_once_the_guard_trips(client, rt, fake_http, clock):
    from bot.store.models import AuditLog

    limit = rt.settings.loop_guard.max_replies  # 30 in 10 minutes by default
    enrol(rt)
    for _ in range(limit + 3):  # "I'm driving, I'll text you back": to each of our replies
        texted(client, "Sorry, I am busy right now and will get back to you")
        clock.advance(seconds=3)
    assert count(rt, Message, Message.direction == "in") == limit + 3  # every one kept
    assert len(bodies(fake_http)) == limit  # replies stop at the limit
    # No reply was even written for the last three: each is on the audit log.
    assert count(rt, AuditLog, AuditLog.action == "inbound.loop_guard") == 3

    clock.advance(minutes=11)  # the window passed: a person texting again is answered
    texted(client, "hello again")
    assert len(bodies(fake_http)) == limit + 1


def test_a_busy_patient_answering_question_after_question_is_not_a_loop(client, rt,
                                                                         fake_http, clock):
    limit = rt.settings.loop_guard.max_replies
    enrol(rt)
    for _ in range(limit + 5):  # short answers, the same again and again: a person
        texted(client, "no")
    assert len(bodies(fake_http)) == limit + 5
    for i in range(3):  # and different words each time: a person too
        texted(client, f"I have a question number {i}")
    assert len(bodies(fake_http)) == limit + 8
    for _ in range(limit):  # past twice the limit, whatever is said, the guard is on
        texted(client, "no")
    assert len(bodies(fake_http)) == 2 * limit


def test_red_flags_still_reach_the_team_while_the_guard_is_on(client, rt, fake_http, clock):
    limit = rt.settings.loop_guard.max_replies
    enrol(rt)
    for _ in range(2 * limit):
        texted(client, "no")
    texted(client, "no")
    assert len(bodies(fake_http)) == 2 * limit  # the guard is on
    texted(client, "my legs gave way and I wet myself")
    assert count(rt, Escalation) == 1
    oncall = rt.settings.care_team.contact(rt.settings.care_team.escalation_chain[0])
    assert len(sent_to(fake_http, oncall.phone)) == 1  # the team's alert is not held
    patient_texts = bodies(fake_http)
    assert len(patient_texts) == 2 * limit + 1  # the emergency instruction still goes
    assert readable_phone(rt.settings.clinic.acute_oncology_hotline) in patient_texts[-1]
    texted(client, "my legs gave way and I wet myself")
    assert len(bodies(fake_http)) == 2 * limit + 1  # once in the window


def test_a_reply_is_written_already_claimed_and_sent_after_commit(client, rt, fake_http,
                                                                   monkeypatch):
    """The reply's outbox row is committed as claimed (a crash before the send leaves it to the
    sweep once the claim runs out), with no UPDATE of it inside the request's transaction."""
    from sqlalchemy import event

    enrol(rt)
    statements: list[str] = []
    seen_at_send: list[tuple] = []
    real_send = rt.messenger.send

    def send(outgoing):
        with rt.transaction() as s:
            item = s.scalars(select(OutboxItem)).one()
            seen_at_send.append((item.status, item.attempts, item.claimed_until is not None))
        statements.append("-- send")
        return real_send(outgoing)

    def log_statement(conn, cursor, statement, *args):
        statements.append(" ".join(statement.split())[:30])

    monkeypatch.setattr(rt.messenger, "send", send)
    event.listen(rt.engine, "before_cursor_execute", log_statement)
    try:
        texted(client, "hello")
    finally:
        event.remove(rt.engine, "before_cursor_execute", log_statement)
    assert seen_at_send == [("sending", 1, True)]
    before_send = statements[:statements.index("-- send")]
    assert any(s.startswith("INSERT INTO outbox") for s in before_send)
    assert not any(s.startswith("UPDATE outbox") for s in before_send)
    assert count(rt, OutboxItem, OutboxItem.status == "sent") == 1


# -- a care-team alert that cannot be delivered -----------------------------------------------

def _emergency_alerted(rt, fake_http, fail_with=None):
    from bot.services.escalations import escalate

    pid = enrol(rt)
    with rt.transaction() as s:
        _, ids = escalate(s, rt.ctx, s.get(Patient, pid), "emergency", ["limb_weakness"],
                          "my legs gave way", rt.clock.now())
    if fail_with:
        fake_http.queue_error(400, fail_with, "Invalid 'To' Phone Number")
    rt.dispatcher.dispatch_ids(ids)
    team = rt.settings.care_team
    return [team.contact(c).phone for c in team.escalation_chain[:2]]


def test_an_undelivered_alert_moves_the_chain_on_at_once(client, rt, fake_http, clock):
    from bot.scheduler import tick
    from bot.store.models import AuditLog

    first, second = _emergency_alerted(rt, fake_http)
    [alert] = sent_to(fake_http, first)
    with rt.transaction() as s:
        alert_sid = s.scalars(select(Message.provider_id).where(
            Message.kind == "alert")).one()
    post(client, STATUS, {"MessageSid": alert_sid, "MessageStatus": "undelivered",
                          "ErrorCode": "30003"})
    tick(rt)  # seconds later, not after the 15-minute acknowledgement timeout
    assert len(sent_to(fake_http, second)) == 1
    assert count(rt, AuditLog, AuditLog.action == "escalation.alert_failed") == 1


def test_an_alert_the_carrier_refuses_moves_the_chain_on_at_once(client, rt, fake_http, clock):
    from bot.scheduler import tick

    first, second = _emergency_alerted(rt, fake_http, fail_with=21211)
    with rt.transaction() as s:
        assert s.scalars(select(OutboxItem.status).where(OutboxItem.kind == "alert")).one() == \
            "failed"
    tick(rt)
    assert len(sent_to(fake_http, second)) == 1


def test_a_late_failure_of_an_earlier_contacts_alert_does_not_cut_the_next_ones_time(
        client, rt, fake_http, clock):
    from bot.scheduler import tick

    first, second = _emergency_alerted(rt, fake_http)
    clock.advance(minutes=rt.settings.care_team.ack_timeout_minutes)
    tick(rt)  # nobody acknowledged: the second contact is alerted
    assert len(sent_to(fake_http, second)) == 1
    with rt.transaction() as s:
        first_sid = s.scalars(select(Message.provider_id).where(
            Message.kind == "alert").order_by(Message.id)).first()
    # the first contact's alert is reported undelivered only now
    post(client, STATUS, {"MessageSid": first_sid, "MessageStatus": "undelivered",
                          "ErrorCode": "30003"})
    tick(rt)
    third = rt.settings.care_team.contact(rt.settings.care_team.escalation_chain[2]).phone
    assert sent_to(fake_http, third) == []  # the second contact keeps their 15 minutes


def test_when_every_contact_fails_the_chain_goes_on_at_the_normal_pace(client, rt, fake_http,
                                                                       clock):
    from bot.scheduler import tick

    chain = rt.settings.care_team.escalation_chain
    _emergency_alerted(rt, fake_http, fail_with=21211)
    for _ in range(3 * len(chain)):
        fake_http.queue_error(400, 21211, "Invalid 'To' Phone Number")
        clock.advance(seconds=5)
        tick(rt)
    with rt.transaction() as s:
        esc = s.scalars(select(Escalation)).one()
    # a quick first lap (each failure moves on at once), then the acknowledgement timeout
    assert esc.alerts_sent == len(chain) + 1


def test_an_unreachable_phone_gets_the_message_again_later_then_the_bot_gives_up(
        client, rt, fake_http, clock):
    from bot.scheduler import tick
    from bot.store.models import AuditLog

    provider_id = _sent_message(client, rt, fake_http)
    [first] = sent_to(fake_http, PHONE)
    for n in range(1, 5):
        post(client, STATUS, {"MessageSid": provider_id, "MessageStatus": "undelivered",
                              "ErrorCode": "30003"})
        sent = len(sent_to(fake_http, PHONE))
        clock.advance(minutes=15 * n - 1)
        tick(rt)
        assert len(sent_to(fake_http, PHONE)) == sent  # not yet
        clock.advance(minutes=1)
        tick(rt)
        if n <= 3:
            assert len(sent_to(fake_http, PHONE)) == sent + 1
            again = sent_to(fake_http, PHONE)[-1]
            assert again["Body"] == first["Body"]
            with rt.transaction() as s:
                provider_id = s.scalars(select(Message.provider_id).where(
                    Message.direction == "out").order_by(Message.id.desc())).first()
        else:
            assert len(sent_to(fake_http, PHONE)) == sent  # three times is enough
    assert count(rt, AuditLog, AuditLog.action == "message.unreachable_gave_up") == 1


def test_an_acknowledged_escalation_is_not_moved_on_by_a_late_failure(client, rt, fake_http,
                                                                      clock):
    from bot.scheduler import tick
    from bot.services.escalations import acknowledge

    first, second = _emergency_alerted(rt, fake_http)
    with rt.transaction() as s:
        esc = s.scalars(select(Escalation)).one()
        acknowledge(s, esc.ref, "Nurse Jo", clock.now(), actor="test")
        alert_sid = s.scalars(select(Message.provider_id).where(
            Message.kind == "alert")).one()
    post(client, STATUS, {"MessageSid": alert_sid, "MessageStatus": "failed",
                          "ErrorCode": "30005"})
    tick(rt)
    assert sent_to(fake_http, second) == []


def test_the_loop_guard_leaves_a_conversation_where_it_was(client, rt, fake_http, clock):
    from bot.services.conversations import active_conversation, start_flow

    limit = rt.settings.loop_guard.max_replies
    pid = enrol(rt)
    for _ in range(limit):
        texted(client, "hello")
    with rt.transaction() as s:
        start_flow(s, rt.ctx, s.get(Patient, pid), "checkin", clock.now())
    texted(client, "I am driving, will reply later")  # a re-prompt: not a loop yet
    with rt.transaction() as s:
        before = dict(active_conversation(s, pid).state)
    texted(client, "I am driving, will reply later")  # the same canned text: the guard is on
    with rt.transaction() as s:
        conv = active_conversation(s, pid)
        assert conv is not None and conv.state == before  # no retry counted, nothing moved


STRANGER = "+447700900555"


@pytest.mark.parametrize("channel", ["sms", "whatsapp"])
def test_stop_start_help_from_a_number_that_is_not_enrolled(client, rt, fake_http, channel):
    from bot.services.inbound import number_opted_out

    texted(client, "Stop", sender=STRANGER, channel=channel)
    [stopped] = [d["Body"] for d in sent_to(fake_http, STRANGER)]
    assert stopped == rt.ctx.text_for(None, "stopped")  # not "we don't have this number"
    with rt.transaction() as s:
        assert number_opted_out(s, STRANGER)
    texted(client, "help", sender=STRANGER, channel=channel)
    assert sent_to(fake_http, STRANGER)[-1]["Body"] == rt.ctx.text_for(None, "help")
    texted(client, "START", sender=STRANGER, channel=channel)
    assert sent_to(fake_http, STRANGER)[-1]["Body"] == rt.ctx.text_for(None, "not_enrolled")
    with rt.transaction() as s:
        assert not number_opted_out(s, STRANGER)
        assert not number_opted_out(s, PHONE)


def test_a_number_that_said_stop_is_enrolled_opted_out_and_not_welcomed(client, rt, fake_http):
    texted(client, "STOP", sender=STRANGER, channel="whatsapp")
    sent = len(sent_to(fake_http, STRANGER))
    from bot.services.patients import Enrolment, onboard_patient

    with rt.transaction() as s:
        patient, ids = onboard_patient(s, rt.ctx, Enrolment(STRANGER, "Ana Diaz",
                                                            "Europe/London", "whatsapp"),
                                       rt.clock.now(), actor="test")
        assert (patient.status, ids) == ("opted_out", [])
    rt.dispatch_soon(ids)
    assert len(sent_to(fake_http, STRANGER)) == sent  # no welcome
    texted(client, "START", sender=STRANGER, channel="whatsapp")
    with rt.transaction() as s:
        assert s.scalars(select(Patient.status).where(Patient.phone == STRANGER)).one() == \
            "active"
    # never consented: not "welcome back", but the welcome and its consent question
    bodies = [d["Body"] for d in sent_to(fake_http, STRANGER)[sent:]]
    assert bodies[0].startswith("Hi Ana") and bodies[-1].startswith("Do you agree")
