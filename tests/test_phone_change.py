"""A patient's new phone number (PATCH /api/patients/<id> with "phone"), and a new zone's
effect on messages held for quiet hours: what is in flight, through the real twilio SDK."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from bot.services import escalations as esc_service
from bot.services.outbox import PRIORITY_ROUTINE, Draft, enqueue
from bot.services.patients import Enrolment, onboard_patient
from bot.store.models import (
    AuditLog,
    Conversation,
    Escalation,
    Message,
    OutboxItem,
    Patient,
)
from tests.test_webhooks import bodies, enrol, texted
from tests.twilio_support import (  # noqa: F401 - fixtures
    TWILIO_SETTINGS,
    fake_http,
    messenger,
    sent_to,
)

OLD = "+447700900123"
NEW = "+447700900456"
NIGHT = datetime(2026, 3, 2, 23, 30, tzinfo=UTC)  # 23:30 in London (GMT): quiet hours
MORNING = datetime(2026, 3, 3, 8, 0, tzinfo=UTC)  # 08:00 in London: they end
TOKEN = "s3cret-admin-token"


@pytest.fixture
def settings_overrides():
    return {**TWILIO_SETTINGS, "admin_token": TOKEN}


def _change(client, pid, **body):
    res = client.patch(f"/api/patients/{pid}", json=body,
                       headers={"Authorization": f"Bearer {TOKEN}", "X-Actor": "Nurse Jo"})
    assert res.status_code == 200, res.get_json()
    return res.get_json()


def _queue(rt, pid, to, channel="sms", routine=True, kind="checkin", not_before=None):
    with rt.transaction() as s:
        return enqueue(s, Draft(to=to, channel=channel, body="How are you today?", kind=kind,
                                routine=routine, patient_id=pid, not_before=not_before,
                                priority=PRIORITY_ROUTINE if routine else 1),
                       rt.clock.now()).id


def _row(rt, item_id):
    with rt.transaction() as s:
        item = s.get(OutboxItem, item_id)
        message = s.get(Message, item.message_id)
        return {"to": item.to, "address": message.address, "status": item.status,
                "next": item.next_attempt_at, "body": message.body}


def _refused_as_invalid(rt, fake_http, pid):
    """A reply to OLD refused by Twilio with 21211: the number is marked invalid (returned)."""
    _queue(rt, pid, OLD, routine=False, kind="reply")
    fake_http.queue_error(400, 21211, "The 'To' number is not a valid phone number.")
    rt.dispatcher.dispatch_due()
    with rt.transaction() as s:
        marked = s.get(Patient, pid).number_invalid_at
    assert marked is not None
    return marked


def _update_audit(rt):
    with rt.transaction() as s:
        return s.scalars(select(AuditLog.details).where(
            AuditLog.action == "patient.update").order_by(AuditLog.id.desc())).first()


def _onboard_at_night(rt, clock):
    """Enrolled at 23:30: the welcome is written, and held by the dispatcher until 08:00."""
    clock.set(NIGHT)
    with rt.transaction() as s:
        patient, ids = onboard_patient(s, rt.ctx, Enrolment(OLD, "Ada Lovelace",
                                                            "Europe/London"),
                                       clock.now(), actor="test")
        pid = patient.id
    rt.dispatch_soon(ids)
    assert ids and {_row(rt, i)["next"] for i in ids} == {MORNING}
    return pid, ids


# -- a new number ------------------------------------------------------------------------------


def test_messages_not_sent_yet_go_to_the_new_number_one_being_sent_is_left(
        client, rt, fake_http, clock):
    pid, ids = _onboard_at_night(rt, clock)
    with rt.transaction() as s:  # a dispatcher is sending this one right now
        busy = enqueue(s, Draft(to=OLD, channel="sms", body="Thank you.", patient_id=pid),
                       clock.now())
        busy.status, busy.attempts = "sending", 1
        busy.claimed_until = MORNING + timedelta(hours=1)
        busy_id = busy.id
    body = _change(client, pid, phone=NEW)
    assert body["messages_readdressed"] == len(ids)
    for i in ids:
        assert {k: _row(rt, i)[k] for k in ("to", "address", "status")} == {
            "to": NEW, "address": NEW, "status": "pending"}
    assert {k: _row(rt, busy_id)[k] for k in ("to", "address", "status")} == {
        "to": OLD, "address": OLD, "status": "sending"}
    assert _update_audit(rt)["outbox_readdressed"] == ids
    clock.set(MORNING)
    assert rt.dispatcher.dispatch_due() == len(ids)
    assert len(sent_to(fake_http, NEW)) == len(ids) and sent_to(fake_http, OLD) == []


def test_the_old_numbers_whatsapp_window_does_not_open_it_for_the_new(client, rt, fake_http,
                                                                     clock):
    pid = enrol(rt, channel="whatsapp", phone=OLD)
    texted(client, "thanks, all fine", sender=OLD, channel="whatsapp")  # window open for OLD
    fake_http.reset()
    item_id = _queue(rt, pid, OLD, channel="whatsapp")  # written, not sent yet
    _change(client, pid, phone=NEW)
    rt.dispatcher.dispatch_due()
    [data] = sent_to(fake_http, NEW)
    assert data["To"] == f"whatsapp:{NEW}"
    assert data["ContentSid"] == rt.settings.twilio.whatsapp_templates["checkin"].content_sid
    assert "Body" not in data and _row(rt, item_id)["status"] == "sent"
    # Once the new number writes on WhatsApp, its own window is open: free text.
    texted(client, "this is my new phone", sender=NEW, channel="whatsapp")
    fake_http.reset()
    _queue(rt, pid, NEW, channel="whatsapp")
    rt.dispatcher.dispatch_due()
    [data] = sent_to(fake_http, NEW)
    assert data["Body"] == "How are you today?" and "ContentSid" not in data


def test_a_number_twilio_refused_as_invalid_is_sendable_again_with_a_new_one(
        client, rt, fake_http):
    pid = enrol(rt, phone=OLD)
    marked = _refused_as_invalid(rt, fake_http, pid)
    held = _queue(rt, pid, OLD)  # a routine message to the invalid number is not sent
    rt.dispatcher.dispatch_due()
    assert _row(rt, held)["status"] == "cancelled"
    _change(client, pid, phone=NEW)
    with rt.transaction() as s:
        assert s.get(Patient, pid).number_invalid_at is None
    assert _update_audit(rt)["number_invalid_cleared"] == marked.isoformat()
    item_id = _queue(rt, pid, NEW)
    assert rt.dispatcher.dispatch_due() == 1
    assert _row(rt, item_id)["status"] == "sent" and len(sent_to(fake_http, NEW)) == 1


def test_a_patient_who_texted_stop_stays_opted_out_on_a_new_number(client, rt, fake_http):
    pid = enrol(rt, phone=OLD)
    texted(client, "STOP", sender=OLD)
    body = _change(client, pid, phone=NEW)
    assert body["status"] == "opted_out" and body["changed"] == {
        "phone": {"from": OLD, "to": NEW}}
    item_id = _queue(rt, pid, NEW)
    rt.dispatcher.dispatch_due()
    assert _row(rt, item_id)["status"] == "cancelled" and sent_to(fake_http, NEW) == []


def test_a_new_number_that_texted_stop_before_opts_the_patient_out(client, rt, fake_http):
    texted(client, "STOP", sender=NEW)  # not enrolled yet: the number's own STOP
    pid = enrol(rt, phone=OLD)
    body = _change(client, pid, phone=NEW, status="paused")
    assert body["status"] == "opted_out"
    assert body["changed"] == {"phone": {"from": OLD, "to": NEW},
                               "status": {"from": "active", "to": "opted_out"}}
    assert _update_audit(rt)["opted_out_by_number"] is True


def test_the_old_number_is_not_enrolled_any_more_and_the_new_one_reaches_the_patient(
        client, rt, fake_http, clock):
    clock.set(MORNING)
    with rt.transaction() as s:
        patient, ids = onboard_patient(s, rt.ctx, Enrolment(OLD, "Ada Lovelace",
                                                            "Europe/London"),
                                       clock.now(), actor="test")
        pid = patient.id
    rt.dispatch_soon(ids)  # the welcome asks for consent; the conversation waits for YES
    _change(client, pid, phone=NEW)
    fake_http.reset()
    texted(client, "YES", sender=OLD)
    [reply] = bodies(fake_http, OLD)
    assert "don't have this number" in reply
    with rt.transaction() as s:
        assert s.get(Patient, pid).consent_at is None
        from_old = s.scalars(select(Message).where(Message.direction == "in",
                                                   Message.address == OLD)).one()
        assert from_old.patient_id is None
    texted(client, "YES", sender=NEW)
    assert "Thank you" in bodies(fake_http, NEW)[0]
    with rt.transaction() as s:
        assert s.get(Patient, pid).consent_at is not None
        from_new = s.scalars(select(Message).where(Message.direction == "in",
                                                   Message.address == NEW)).one()
        assert from_new.patient_id == pid
        [welcome] = s.scalars(select(Conversation).where(Conversation.patient_id == pid))
        assert welcome.status == "completed"


def test_an_open_escalation_keeps_working_and_its_unsent_alert_names_the_new_number(
        client, rt, fake_http):
    pid = enrol(rt, phone=OLD)
    with rt.transaction() as s:
        esc, [alert_id] = esc_service.escalate(
            s, rt.ctx, s.get(Patient, pid), "emergency", ["limb_weakness"],
            "my legs gave way", rt.clock.now())
        ref = esc.ref
    assert OLD in _row(rt, alert_id)["body"]  # written, not sent yet
    _change(client, pid, phone=NEW)
    alert = _row(rt, alert_id)
    assert NEW in alert["body"] and OLD not in alert["body"] and alert["to"] != NEW
    texted(client, "my legs gave way again", sender=NEW)  # the same patient's escalation
    with rt.transaction() as s:
        [only] = s.scalars(select(Escalation)).all()
        assert (only.ref, only.patient_id, only.status) == (ref, pid, "open")
        assert s.scalars(select(AuditLog.action).where(
            AuditLog.action == "escalation.add")).all() == ["escalation.add"]
    rt.dispatcher.dispatch_due()
    assert _row(rt, alert_id)["status"] == "sent"
    assert any(NEW in r.data.get("Body", "") for r in fake_http.requests
               if r.data.get("To") == alert["to"])


# -- a new zone and messages held for quiet hours ---------------------------------------------


@pytest.mark.parametrize(("zone", "until"), [
    ("Europe/Paris", datetime(2026, 3, 3, 7, 0, tzinfo=UTC)),  # 00:30 there; 08:00 is 07:00 UTC
    ("Asia/Kolkata", datetime(2026, 3, 3, 2, 30, tzinfo=UTC)),  # 05:00 there
    ("Atlantic/South_Georgia", datetime(2026, 3, 3, 10, 0, tzinfo=UTC)),  # 21:30 there
    ("America/New_York", NIGHT),  # 18:30 there: not quiet, so due now
])
def test_messages_held_for_quiet_hours_wait_for_the_new_zones_end(client, rt, fake_http, clock,
                                                                  zone, until):
    pid, ids = _onboard_at_night(rt, clock)
    body = _change(client, pid, timezone=zone)
    assert body["held_retimed"] == [{"id": i, "from": "2026-03-03T08:00:00Z",
                                     "to": until.isoformat().replace("+00:00", "Z")}
                                    for i in ids]
    assert {_row(rt, i)["next"] for i in ids} == {until}
    assert [r["id"] for r in _update_audit(rt)["held_retimed"]] == ids
    if until > clock.now():
        assert rt.dispatcher.dispatch_due() == 0  # not before the new zone's morning
    clock.set(until)
    # A pass sends routine rows only within about one dispatch interval of real time: on a
    # busy machine the third may wait for the next pass, as it would in production.
    sent = sum(rt.dispatcher.dispatch_due() for _ in range(5))
    assert sent == len(ids)
    assert len(sent_to(fake_http, OLD)) == len(ids)


def test_only_routine_messages_held_for_quiet_hours_are_re_timed(client, rt, clock):
    pid = enrol(rt, phone=OLD)
    clock.set(NIGHT)
    reply = _queue(rt, pid, OLD, routine=False, kind="reply", not_before=MORNING)
    retry = _queue(rt, pid, OLD, not_before=MORNING + timedelta(minutes=7, seconds=13))
    held = _queue(rt, pid, OLD)
    rt.dispatcher.dispatch_due()  # holds the routine one until 08:00
    assert _row(rt, held)["next"] == MORNING
    body = _change(client, pid, timezone="Europe/Paris")
    assert [r["id"] for r in body["held_retimed"]] == [held]
    assert _row(rt, held)["next"] == datetime(2026, 3, 3, 7, 0, tzinfo=UTC)
    assert _row(rt, reply)["next"] == MORNING
    assert _row(rt, retry)["next"] == MORNING + timedelta(minutes=7, seconds=13)


@pytest.mark.parametrize(("channel", "cleared"), [("sms", True), ("whatsapp", False)])
def test_a_patient_texting_from_a_number_marked_invalid_clears_the_mark(client, rt, fake_http,
                                                                        channel, cleared):
    # A mark from a carrier's error (a callback's 30005, say) stopped every check-in until a
    # coordinator changed the number. A text from that number on the patient's own channel
    # shows it works: the mark goes, audited. A WhatsApp message says nothing about SMS.
    pid = enrol(rt, phone=OLD)
    marked = _refused_as_invalid(rt, fake_http, pid)
    texted(client, "hello, my phone is working again", sender=OLD, channel=channel)
    with rt.transaction() as s:
        now_marked = s.get(Patient, pid).number_invalid_at
        audits = s.scalars(select(AuditLog).where(
            AuditLog.action == "patient.number_works")).all()
    assert (now_marked is None) is cleared
    assert [(a.actor, a.subject_id, a.details) for a in audits] == (
        [(f"patient:{pid}", str(pid), {"number_invalid_cleared": marked.isoformat(),
                                        "channel": "sms"})] if cleared else [])
    if cleared:
        item_id = _queue(rt, pid, OLD)  # routine messages go again
        assert rt.dispatcher.dispatch_due() == 1 and _row(rt, item_id)["status"] == "sent"
