"""Discharge: a coordinator ends a patient's check-ins (discharged, transferred, hospice care,
died). The service, the scheduler and dispatcher holds, re-admission, the CLI, the API and the
dashboard. What a discharged patient's texts get is in test_discharge_inbound.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from bot.scheduler import tick
from bot.services import conversations
from bot.services import escalations as esc_service
from bot.services.outbox import Draft, enqueue
from bot.services.patients import (
    AlreadyDischarged,
    Enrolment,
    InvalidField,
    PatientChanges,
    StatusRefused,
    discharge_patient,
    enrol_patient,
    update_patient,
)
from bot.services.schedules import save_schedule
from bot.store.models import (
    AuditLog,
    Conversation,
    Escalation,
    Message,
    OutboxItem,
    Patient,
    Schedule,
)
from tests.test_dashboard import add_message, csrf_of, page, post, section, sign_in

PHONE = "+447700900123"
REASON = "Transferred to St Elsewhere hospice"


def enrol(rt, phone=PHONE, name="Ada Lovelace", status="active") -> int:
    with rt.transaction() as s:
        p = enrol_patient(s, Enrolment(phone, name, "Europe/London"), languages=["en", "es"],
                          now=rt.clock.now(), actor="test")
        p.consent_at = rt.clock.now()
        p.status = status
        return p.id


def with_checkin_under_way(rt, pid) -> dict:
    """A weekly check-in and a reminder scheduled, a check-in conversation open with its
    question not sent yet (a routine row), and an open red flag."""
    with rt.transaction() as s:
        p = s.get(Patient, pid)
        now = rt.clock.now()
        checkin = save_schedule(s, rt.ctx, p, "checkin", "10:00", 7, now, "test").schedule
        reminder = save_schedule(s, rt.ctx, p, "reminder", "09:00", 1, now, "test",
                                 {"reminder_text": "Take your tablets"}).schedule
        ids = conversations.start_flow(s, rt.ctx, p, "checkin", now, routine=True)
        esc, _ = esc_service.escalate(s, rt.ctx, p, "urgent", ["severe_pain"], "it hurts",
                                      now)
        return {"schedules": [checkin.id, reminder.id], "outbox": ids, "ref": esc.ref}


def discharge(rt, pid, reason=REASON, actor="test"):
    with rt.transaction() as s:
        return discharge_patient(s, s.get(Patient, pid), reason, now=rt.clock.now(),
                                 actor=actor)


def audits(rt, action):
    with rt.transaction() as s:
        return list(s.scalars(select(AuditLog).where(AuditLog.action == action)
                              .order_by(AuditLog.id)))


def status_of(rt, pid):
    with rt.transaction() as s:
        return s.get(Patient, pid).status


# -- the service -------------------------------------------------------------------------------


def test_discharge_stops_everything_routine_in_one_audited_step(rt):
    pid = enrol(rt)
    made = with_checkin_under_way(rt, pid)
    assert made["outbox"]
    result = discharge(rt, pid, "  Discharged home,\n  no further follow-up ", actor="cli:sam")
    assert result.reason == "Discharged home, no further follow-up"
    with rt.transaction() as s:
        assert s.get(Patient, pid).status == "discharged"
        assert [sc.active for sc in s.scalars(select(Schedule).where(
            Schedule.patient_id == pid))] == [False, False]
        [conv] = s.scalars(select(Conversation).where(Conversation.patient_id == pid)).all()
        assert conv.status == "interrupted" and conv.state["interrupted"] == "discharged"
        for item_id in made["outbox"]:
            item = s.get(OutboxItem, item_id)
            assert item.status == "cancelled"
            assert s.get(Message, item.message_id).status == "cancelled"
        # The red flag stays open: someone must still call them.
        esc = s.scalars(select(Escalation).where(Escalation.ref == made["ref"])).one()
        assert esc.status == "open"
    [record] = audits(rt, "patient.discharge")
    assert (record.actor, record.subject_id) == ("cli:sam", str(pid))
    assert record.details["reason"] == "Discharged home, no further follow-up"
    assert record.details["previous"] == "active"
    assert record.details["schedules_stopped"] == 2
    assert record.details["conversations_interrupted"] == 1
    assert record.details["messages_cancelled"] == len(made["outbox"])
    removed = audits(rt, "schedule.remove")
    assert sorted(int(a.subject_id) for a in removed) == sorted(made["schedules"])
    assert {a.details["reason"] for a in removed} == {"patient discharged"}


def test_a_routine_message_outside_a_conversation_is_cancelled_too(rt):
    pid = enrol(rt)
    with rt.transaction() as s:
        routine = enqueue(s, Draft(to=PHONE, channel="sms", body="Your check-in", kind="checkin",
                                   routine=True, patient_id=pid), rt.clock.now()).id
        reply = enqueue(s, Draft(to=PHONE, channel="sms", body="Thank you", kind="received",
                                 patient_id=pid), rt.clock.now()).id
    discharge(rt, pid)
    with rt.transaction() as s:
        assert s.get(OutboxItem, routine).status == "cancelled"
        assert s.get(OutboxItem, routine).last_error == "patient discharged"
        assert s.get(OutboxItem, reply).status == "pending"  # not routine: it may go


@pytest.mark.parametrize("reason", ["", "   ", "x" * 201, "bad\x00reason", None, 12])
def test_a_discharge_needs_a_reason_and_changes_nothing_without_one(rt, reason):
    pid = enrol(rt)
    with_checkin_under_way(rt, pid)
    with pytest.raises(InvalidField) as caught:
        discharge(rt, pid, reason)
    assert caught.value.field == "reason"
    assert status_of(rt, pid) == "active"
    with rt.transaction() as s:
        assert all(sc.active for sc in s.scalars(select(Schedule)))
    assert audits(rt, "patient.discharge") == [] and audits(rt, "schedule.remove") == []


def test_a_reason_of_200_characters_is_taken(rt):
    pid = enrol(rt)
    assert discharge(rt, pid, "r" * 200).reason == "r" * 200


def test_a_patient_is_discharged_once(rt):
    pid = enrol(rt)
    discharge(rt, pid)
    with pytest.raises(AlreadyDischarged):
        discharge(rt, pid, "again")
    assert len(audits(rt, "patient.discharge")) == 1


def test_a_patient_who_opted_out_stays_opted_out_when_discharged(rt):
    pid = enrol(rt, status="opted_out")
    result = discharge(rt, pid)
    assert result.previous == "opted_out" and status_of(rt, pid) == "opted_out"
    with pytest.raises(AlreadyDischarged):
        discharge(rt, pid, "again")


# -- nothing routine goes out --------------------------------------------------------------


def test_a_scheduled_checkin_is_not_sent_after_discharge(rt, clock):
    clock.set(datetime(2026, 3, 2, 12, 0, tzinfo=UTC))
    pid = enrol(rt)
    with rt.transaction() as s:
        save_schedule(s, rt.ctx, s.get(Patient, pid), "checkin", "10:00", 1, clock.now(), "t")
    discharge(rt, pid)
    clock.set(datetime(2026, 3, 3, 10, 1, tzinfo=UTC))
    tick(rt)
    with rt.transaction() as s:
        assert s.scalars(select(Conversation).where(Conversation.patient_id == pid)).all() == []
        assert s.scalars(select(Message).where(Message.direction == "out")).all() == []


def test_the_dispatcher_holds_a_routine_message_to_a_discharged_patient(rt, messenger):
    pid = enrol(rt, status="discharged")
    with rt.transaction() as s:
        routine = enqueue(s, Draft(to=PHONE, channel="sms", body="Time for your check-in",
                                   kind="checkin", routine=True, patient_id=pid),
                          rt.clock.now()).id
        help_reply = enqueue(s, Draft(to=PHONE, channel="sms", body="Call the clinic",
                                      kind="help", patient_id=pid), rt.clock.now()).id
    rt.dispatcher.dispatch_ids([routine, help_reply])
    with rt.transaction() as s:
        item = s.get(OutboxItem, routine)
        assert (item.status, item.last_error) == ("cancelled", "patient discharged")
        assert s.get(OutboxItem, help_reply).status == "sent"
    assert [m.body for m in messenger.sent] == ["Call the clinic"]


# -- re-admission -----------------------------------------------------------------------------


def test_setting_active_readmits_and_leaves_the_schedules_stopped(rt):
    pid = enrol(rt)
    with_checkin_under_way(rt, pid)
    discharge(rt, pid)
    with rt.transaction() as s:
        result = update_patient(s, s.get(Patient, pid), PatientChanges(status="active"),
                                ctx=rt.ctx, now=rt.clock.now(), actor="api:sam")
        assert result.changes == {"status": ("discharged", "active")}
    assert status_of(rt, pid) == "active"
    with rt.transaction() as s:
        assert not any(sc.active for sc in s.scalars(select(Schedule)))
    [readmit] = audits(rt, "patient.readmit")
    assert readmit.actor == "api:sam"
    assert readmit.details["changes"] == {"status": {"from": "discharged", "to": "active"}}
    discharge(rt, pid, "Died peacefully")  # and can be discharged again
    assert status_of(rt, pid) == "discharged"


def test_a_discharged_patient_cannot_be_paused(rt):
    pid = enrol(rt)
    discharge(rt, pid)
    with rt.transaction() as s, pytest.raises(StatusRefused, match="discharged"):
        update_patient(s, s.get(Patient, pid), PatientChanges(status="paused"),
                       ctx=rt.ctx, now=rt.clock.now(), actor="t")
    assert status_of(rt, pid) == "discharged"


# -- the API ----------------------------------------------------------------------------------


def test_api_discharge(client, rt):
    pid = enrol(rt)
    made = with_checkin_under_way(rt, pid)
    res = client.post(f"/api/patients/{pid}/discharge", json={"reason": REASON},
                      headers={"X-Actor": "coordinator-sam"})
    assert res.status_code == 200, res.get_json()
    body = res.get_json()
    assert (body["status"], body["reason"]) == ("discharged", REASON)
    assert sorted(body["schedules_stopped"]) == sorted(made["schedules"])
    assert body["conversations_interrupted"] == 1
    assert audits(rt, "patient.discharge")[0].actor == "api:coordinator-sam"
    again = client.post(f"/api/patients/{pid}/discharge", json={"reason": "again"})
    assert again.status_code == 409 and "already discharged" in again.get_json()["error"]


@pytest.mark.parametrize("body", [{}, {"reason": ""}, {"reason": "  "}, {"reason": None},
                                  {"reason": 3}, {"reason": "x" * 201}])
def test_api_discharge_without_a_good_reason_is_400_naming_it(client, rt, body):
    pid = enrol(rt)
    res = client.post(f"/api/patients/{pid}/discharge", json=body)
    assert res.status_code == 400 and res.get_json()["field"] == "reason"
    assert status_of(rt, pid) == "active" and audits(rt, "patient.discharge") == []


def test_api_discharge_of_no_such_patient_is_404(client, rt):
    res = client.post("/api/patients/999/discharge", json={"reason": REASON})
    assert res.status_code == 404


def test_api_patch_pauses_no_discharged_patient_but_readmits_one(client, rt):
    pid = enrol(rt)
    client.post(f"/api/patients/{pid}/discharge", json={"reason": REASON})
    res = client.patch(f"/api/patients/{pid}", json={"status": "paused"})
    assert res.status_code == 409 and res.get_json()["field"] == "status"
    assert "discharged" in res.get_json()["error"]
    res = client.patch(f"/api/patients/{pid}", json={"status": "active"})
    assert res.status_code == 200 and res.get_json()["status"] == "active"


def test_no_schedule_is_set_for_a_discharged_patient_until_readmitted(client, cli, rt):
    """The scheduler skips a discharged patient, so a schedule set now would never run:
    refused, naming the patient, through the API and the CLI; after a re-admission it is
    taken."""
    pid = enrol(rt)
    discharge(rt, pid)
    res = client.post(f"/api/patients/{pid}/schedules",
                      json={"flow": "checkin", "at": "10:00", "every_days": 7})
    assert res.status_code == 400 and res.get_json()["field"] == "patient"
    assert "discharged" in res.get_json()["error"]
    res = cli("schedules", "add", "--phone", PHONE, "--flow", "checkin", "--at", "10:00",
              "--every-days", "7")
    assert res.exit_code == 2 and "discharged" in res.output
    with rt.transaction() as s:
        assert s.scalars(select(Schedule)).all() == []
    assert client.patch(f"/api/patients/{pid}", json={"status": "active"}).status_code == 200
    res = client.post(f"/api/patients/{pid}/schedules",
                      json={"flow": "checkin", "at": "10:00", "every_days": 7})
    assert res.status_code == 201, res.get_json()


# -- the CLI ----------------------------------------------------------------------------------


def test_cli_discharge_and_list(cli, rt):
    pid = enrol(rt)
    with_checkin_under_way(rt, pid)
    res = cli("patients", "discharge", "--phone", "+44 7700 900123", "--reason", REASON)
    assert res.exit_code == 0, res.output
    assert f"discharged {PHONE} (id {pid}): 2 schedule(s) stopped" in res.output
    [record] = audits(rt, "patient.discharge")
    assert record.actor == "cli:night-nurse" and record.details["reason"] == REASON
    assert "discharged" in cli("patients", "list").output
    res = cli("patients", "discharge", "--phone", PHONE, "--reason", "again")
    assert res.exit_code == 1 and "already discharged" in res.output


@pytest.mark.parametrize("args, code", [
    (["--phone", PHONE], 2), (["--phone", PHONE, "--reason", " "], 2),
    (["--phone", "not a number", "--reason", REASON], 2),
    (["--phone", "+447700900999", "--reason", REASON], 1),  # no such patient, as elsewhere
])
def test_cli_discharge_refuses_a_missing_reason_or_unknown_number(cli, rt, args, code):
    pid = enrol(rt)
    res = cli("patients", "discharge", *args)
    assert res.exit_code == code, res.output
    assert status_of(rt, pid) == "active" and audits(rt, "patient.discharge") == []


def test_cli_resume_and_pause_are_refused_for_a_discharged_patient_readmit_is_not(cli, rt):
    pid = enrol(rt)
    discharge(rt, pid)
    for flag in ("--resume", "--pause"):
        res = cli("patients", "update", "--phone", PHONE, flag)
        assert res.exit_code == 1 and "was discharged" in res.output, res.output
        assert status_of(rt, pid) == "discharged"
    res = cli("patients", "update", "--phone", PHONE, "--readmit")
    assert res.exit_code == 0 and "status: discharged -> active" in res.output
    res = cli("patients", "update", "--phone", PHONE, "--readmit")
    assert res.exit_code == 1 and "not discharged" in res.output


# -- the dashboard ----------------------------------------------------------------------------


@pytest.fixture
def signed_in(client):
    sign_in(client, token=None)
    return client


def test_dashboard_discharge_form(signed_in, rt):
    pid = enrol(rt)
    text = page(signed_in, f"/dashboard/patients/{pid}")
    assert 'id="discharge-form"' in text and 'id="discharged"' not in text
    # Without the CSRF token: refused, nothing changed.
    res = signed_in.post(f"/dashboard/patients/{pid}/discharge", data={"reason": REASON})
    assert res.status_code == 400 and status_of(rt, pid) == "active"
    # Without a reason: the form again, naming the field.
    res = signed_in.post(f"/dashboard/patients/{pid}/discharge",
                         data={"csrf": csrf_of(signed_in, "/dashboard/"), "reason": " "})
    assert res.status_code == 400
    text = res.get_data(as_text=True)
    assert 'id="discharge-error" data-field="reason"' in text and "Nothing was changed" in text
    assert status_of(rt, pid) == "active"
    res = post(signed_in, f"/dashboard/patients/{pid}/discharge", reason=REASON)
    text = res.get_data(as_text=True)
    assert res.request.path == f"/dashboard/patients/{pid}"
    assert "Discharged by you (Jo)" in text
    assert 'id="discharged"' in text and REASON in text and "discharged" in text
    assert 'id="discharge-form"' not in text and 'id="readmit"' in text
    assert audits(rt, "patient.discharge")[0].actor == "dashboard:Jo"


def test_dashboard_resume_is_refused_and_readmit_works(signed_in, rt):
    pid = enrol(rt)
    discharge(rt, pid)
    text = post(signed_in, f"/dashboard/patients/{pid}/details",
                action="resume").get_data(as_text=True)
    assert "was discharged" in text and "Nothing was changed" in text
    assert status_of(rt, pid) == "discharged"
    text = post(signed_in, f"/dashboard/patients/{pid}/details",
                action="readmit").get_data(as_text=True)
    assert "status discharged -&gt; active" in text
    assert status_of(rt, pid) == "active"


def test_dashboard_lists_no_missed_checkins_of_a_discharged_patient(signed_in, rt, clock):
    ada, bob = enrol(rt, name="Ada Lovelace"), enrol(rt, "+447700900124", name="Bob Ross")
    now = clock.now()
    with rt.transaction() as s:
        for pid in (ada, bob):
            s.add(Conversation(patient_id=pid, flow_id="checkin", flow_revision=1, state={},
                               status="expired", started_at=now - timedelta(days=1),
                               updated_at=now - timedelta(hours=1)))
        s.get(Patient, ada).number_invalid_at = now
    with rt.transaction() as s:
        esc, _ = esc_service.escalate(s, rt.ctx, s.get(Patient, ada), "urgent", ["severe_pain"],
                                      "it hurts", now)
        red = esc.ref
    to_read = add_message(rt, ada, "in", "Thank you for everything", status="to_read")
    discharge(rt, ada)
    text = page(signed_in)
    assert "Ada Lovelace" not in section(text, "expired")
    assert "Bob Ross" in section(text, "expired")
    assert "Ada Lovelace" not in section(text, "invalid")
    assert red in section(text, "open")  # the red flag still shows
    assert to_read and "Thank you for everything" in section(text, "to-read")
    listing = page(signed_in, "/dashboard/patients")
    assert "none (discharged)" in listing
    assert listing.index("Bob Ross") < listing.index("Ada Lovelace")  # discharged last
