"""A send whose answer was lost (a read timeout after Twilio took the message, a crash after the
SDK call): Twilio's status callback, whose URL names the outbox row, tells the dispatcher that
the message went, so a check-in is not sent twice. Real SDK, fake HTTP, signed callbacks."""

from __future__ import annotations

from datetime import timedelta

import pytest
import requests
from sqlalchemy import select

from bot.services.dispatcher import RECLAIM_GRACE
from bot.services.outbox import PRIORITY_ROUTINE, Draft, enqueue
from bot.services.patients import Enrolment, enrol_patient
from bot.services.spool import Spool, SpooledStatus
from bot.store.models import AuditLog, Message, OutboxItem, Patient, StatusEvent
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
LOST_SID = "SM" + "a" * 32
WAIT = 600  # outbox.unclear_wait_seconds (default)


def _patient(rt):
    with rt.transaction() as s:
        p = enrol_patient(s, Enrolment(PHONE, "Ada Lovelace", "Europe/London"),
                          languages=["en", "es"], now=rt.clock.now(), actor="test")
        p.consent_at = rt.clock.now()
        return p.id


def _queue(rt, pid, routine=True):
    with rt.transaction() as s:
        return enqueue(s, Draft(to=PHONE, channel="sms", body="How is your pain today? 0-10",
                                kind="checkin" if routine else "reply", routine=routine,
                                patient_id=pid, priority=PRIORITY_ROUTINE if routine else 1),
                       rt.clock.now()).id


def _item(rt, item_id):
    with rt.transaction() as s:
        item = s.get(OutboxItem, item_id)
        return item, s.get(Message, item.message_id)


def _callback(client, url, sid, status):
    """Twilio calling the StatusCallback URL the send gave it, signed as Twilio signs."""
    params = {"MessageSid": sid, "MessageStatus": status}
    path = url.removeprefix(PUBLIC_URL)
    return client.post(path, data=params,
                       headers={"X-Twilio-Signature": sign(AUTH_TOKEN, url, params)})


def _lost_answer(rt, fake_http, item_id):
    """The first attempt: the request reaches Twilio, the answer does not reach us."""
    fake_http.queue_exception(requests.exceptions.ReadTimeout("read timed out"))
    assert rt.dispatcher.dispatch_due() == 0
    [data] = sent_to(fake_http, PHONE)
    item, message = _item(rt, item_id)
    assert item.status == "pending" and message.provider_id is None
    return data["StatusCallback"]


def test_a_check_in_twilio_took_is_not_sent_again_once_its_callback_comes(rt, client, fake_http,
                                                                        clock):
    item_id = _queue(rt, _patient(rt))
    url = _lost_answer(rt, fake_http, item_id)
    assert url == f"{PUBLIC_URL}/webhooks/twilio/status?outbox={item_id}&via=sms"
    item, _ = _item(rt, item_id)
    assert item.next_attempt_at == clock.now() + timedelta(seconds=WAIT)
    assert item.last_error.startswith("unclear")

    assert _callback(client, url, LOST_SID, "sent").status_code == 204
    item, message = _item(rt, item_id)  # recorded at once: the row was waiting, not claimed
    assert item.status == "sent" and item.last_error is None
    assert message.provider_id == LOST_SID and message.status == "sent"
    clock.advance(seconds=WAIT + 1)
    assert rt.dispatcher.dispatch_due() == 0
    assert len(sent_to(fake_http, PHONE)) == 1  # not a second copy
    with rt.transaction() as s:
        assert s.scalars(select(StatusEvent.applied)).all() == [True]
        audited = s.scalars(select(AuditLog.action).where(
            AuditLog.subject_id == str(message.id))).all()
    assert "outbox.sent_confirmed" in audited

    # later callbacks find the SID as usual
    assert _callback(client, url, LOST_SID, "delivered").status_code == 204
    assert _item(rt, item_id)[1].status == "delivered"


def test_with_no_callback_it_is_sent_again_after_the_wait_and_only_then(rt, client, fake_http,
                                                                       clock):
    item_id = _queue(rt, _patient(rt))
    _lost_answer(rt, fake_http, item_id)
    clock.advance(seconds=WAIT - 60)
    assert rt.dispatcher.dispatch_due() == 0
    assert len(sent_to(fake_http, PHONE)) == 1
    clock.advance(seconds=61)
    assert rt.dispatcher.dispatch_due() == 1
    assert len(sent_to(fake_http, PHONE)) == 2
    item, message = _item(rt, item_id)
    assert item.status == "sent" and message.provider_id.startswith("SM")


def test_a_callback_for_the_lost_attempt_after_the_resend_changes_nothing(rt, client, fake_http,
                                                                         clock):
    """Both copies went: the message keeps the SID that was recorded, and the stray
    callback is stored, not applied to it."""
    item_id = _queue(rt, _patient(rt))
    url = _lost_answer(rt, fake_http, item_id)
    clock.advance(seconds=WAIT + 1)
    assert rt.dispatcher.dispatch_due() == 1
    recorded = _item(rt, item_id)[1].provider_id
    assert _callback(client, url, recorded, "delivered").status_code == 204
    assert _callback(client, url, LOST_SID, "failed").status_code == 204
    item, message = _item(rt, item_id)
    assert message.provider_id == recorded and message.status == "delivered"
    assert item.status == "sent"


def test_a_reply_is_retried_at_once_a_duplicate_being_better_than_a_delay(rt, client, fake_http,
                                                                         clock):
    item_id = _queue(rt, _patient(rt), routine=False)
    _lost_answer(rt, fake_http, item_id)
    item, _ = _item(rt, item_id)
    assert item.next_attempt_at <= clock.now() + timedelta(seconds=2)
    clock.advance(seconds=3)
    assert rt.dispatcher.dispatch_due() == 1
    assert len(sent_to(fake_http, PHONE)) == 2


def test_a_failure_before_any_connection_is_retried_on_the_usual_backoff(rt, fake_http, clock):
    item_id = _queue(rt, _patient(rt))
    fake_http.queue_exception(requests.exceptions.ConnectTimeout("connect timed out"))
    assert rt.dispatcher.dispatch_due() == 0
    item, _ = _item(rt, item_id)
    assert item.next_attempt_at <= clock.now() + timedelta(seconds=2)
    assert item.last_error.startswith("transient")
    clock.advance(seconds=3)
    assert rt.dispatcher.dispatch_due() == 1


def test_a_crash_after_twilio_took_it_does_not_send_it_twice(rt, client, fake_http, clock):
    """The worker dies between the SDK call and writing the SID down: its claim runs out, and
    the sweep finds the callback that named the row instead of sending it again."""
    item_id = _queue(rt, _patient(rt))
    job = rt.dispatcher._claim(item_id, paced=False)
    result = rt.dispatcher.messenger.send(job.outgoing)  # ...and the process dies here
    url = sent_to(fake_http, PHONE)[0]["StatusCallback"]
    assert _callback(client, url, result.provider_id, "delivered").status_code == 204
    with rt.transaction() as s:
        [event] = s.scalars(select(StatusEvent)).all()
        # no message has the SID, and the row is being sent: its dispatcher decides
        assert (event.outbox_ref, event.applied) == (f"{item_id}:sms", False)
    assert _item(rt, item_id)[0].status == "sending"

    clock.advance(seconds=rt.settings.outbox.claim_seconds + RECLAIM_GRACE.total_seconds() + 1)
    assert rt.dispatcher.dispatch_due() == 0
    assert len(sent_to(fake_http, PHONE)) == 1
    item, message = _item(rt, item_id)
    assert item.status == "sent"
    assert message.provider_id == result.provider_id and message.status == "delivered"


def test_a_failed_callback_for_a_lost_answer_still_counts_as_a_failure(rt, client, fake_http,
                                                                      clock):
    """Twilio took it and the carrier could not deliver it: the message shows undelivered
    (as any undelivered message does), it is not quietly sent again by the sweep."""
    item_id = _queue(rt, _patient(rt))
    url = _lost_answer(rt, fake_http, item_id)
    assert _callback(client, url, LOST_SID, "undelivered").status_code == 204
    clock.advance(seconds=WAIT + 1)
    rt.dispatcher.dispatch_due()
    _, message = _item(rt, item_id)
    assert message.provider_id == LOST_SID and message.status == "undelivered"


@pytest.mark.parametrize("query", ["outbox=abc&via=sms", "outbox=99999999999999999999&via=sms",
                                   "outbox=&via=sms", "outbox=1", "outbox=1&via=fax"])
def test_a_callback_url_naming_no_usable_row_is_stored_without_one(rt, client, query):
    url = f"{PUBLIC_URL}/webhooks/twilio/status?{query}"
    assert _callback(client, url, LOST_SID, "sent").status_code == 204
    with rt.transaction() as s:
        [event] = s.scalars(select(StatusEvent)).all()
    assert event.outbox_ref is None and event.provider_id == LOST_SID


def test_a_forged_callback_naming_a_row_is_refused(rt, client):
    item_id = _queue(rt, _patient(rt))
    params = {"MessageSid": LOST_SID, "MessageStatus": "delivered"}
    signed_for_another_row = sign(
        AUTH_TOKEN, f"{PUBLIC_URL}/webhooks/twilio/status?outbox=999&via=sms", params)
    response = client.post(f"/webhooks/twilio/status?outbox={item_id}&via=sms", data=params,
                           headers={"X-Twilio-Signature": signed_for_another_row})
    assert response.status_code == 403
    with rt.transaction() as s:
        assert s.scalars(select(StatusEvent)).all() == []


def test_a_spooled_callback_keeps_the_row_it_named(tmp_path, clock):
    spool = Spool(tmp_path)
    path = spool.put_status(SpooledStatus(sid=LOST_SID, status="sent", code=None,
                                          received_at=clock.now(), outbox_ref="7:sms"))
    assert Spool.load(path).outbox_ref == "7:sms"


class TestGivenUp:
    """The unclear attempt was the last one allowed: the row ends failed, and a callback that
    comes later still records that Twilio took it."""

    @pytest.fixture
    def settings_overrides(self):
        return {**TWILIO_SETTINGS, "outbox": {"max_attempts": 1}}

    def test_a_later_callback_marks_it_sent(self, rt, client, fake_http, clock):
        item_id = _queue(rt, _patient(rt))
        fake_http.queue_exception(requests.exceptions.ReadTimeout("read timed out"))
        rt.dispatcher.dispatch_due()
        assert _item(rt, item_id)[0].status == "failed"
        url = sent_to(fake_http, PHONE)[0]["StatusCallback"]
        assert _callback(client, url, LOST_SID, "delivered").status_code == 204
        item, message = _item(rt, item_id)
        assert item.status == "sent"
        assert message.provider_id == LOST_SID and message.status == "delivered"


def test_a_callback_about_the_whatsapp_text_does_not_stand_for_its_template(rt, client,
                                                                          fake_http, clock):
    """Attempt 1 (free text) is taken but its answer lost; attempt 2 is refused with 63016 and
    the row turns to its approved template. Attempt 1's callback, coming only now, is about the
    free text: the template must still go."""
    pid = _patient(rt)
    with rt.transaction() as s:
        s.get(Patient, pid).channel = "whatsapp"
        s.add(Message(direction="in", channel="whatsapp", address=PHONE, body="hi",
                      kind="inbound", status="received", patient_id=pid,
                      created_at=clock.now(), updated_at=clock.now()))
        item_id = enqueue(s, Draft(to=PHONE, channel="whatsapp", body="Time for your check-in",
                                   kind="checkin", routine=True, patient_id=pid,
                                   priority=PRIORITY_ROUTINE), clock.now()).id
    fake_http.queue_exception(requests.exceptions.ReadTimeout("read timed out"))
    rt.dispatcher.dispatch_due()
    first = sent_to(fake_http, PHONE)[0]
    assert "Body" in first and first["StatusCallback"].endswith(f"?outbox={item_id}&via=whatsapp")
    clock.advance(seconds=WAIT + 1)
    fake_http.queue_error(400, 63016, "Outside the allowed window")
    rt.dispatcher.dispatch_due()
    assert _item(rt, item_id)[0].variant == "template"

    assert _callback(client, first["StatusCallback"], LOST_SID, "failed").status_code == 204
    assert rt.dispatcher.dispatch_due() == 1
    last = sent_to(fake_http, PHONE)[-1]
    assert "ContentSid" in last and last["StatusCallback"].endswith("&via=template")
    item, message = _item(rt, item_id)
    assert item.status == "sent" and message.provider_id not in (None, LOST_SID)
