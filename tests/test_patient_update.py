"""Correcting a patient's details: `checkin-bot patients update` and PATCH /api/patients/<id>."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from bot.scheduler import tick
from bot.services.dispatcher import Pacer
from bot.store.models import AuditLog, Conversation, Patient, Schedule

PHONE = "+447700900123"


def _enrol(client, phone=PHONE, consent=True, **extra):
    res = client.post("/api/patients", json={"phone": phone, "name": "Ada", **extra})
    assert res.status_code == 201, res.get_json()
    if consent:
        client.post("/simulator/api/messages", json={"phone": phone, "body": "yes"})
    return res.get_json()["id"]


def _patient(rt, patient_id):
    with rt.transaction() as s:
        p = s.get(Patient, patient_id)
        return {"name": p.name, "timezone": p.timezone, "channel": p.channel,
                "language": p.language, "status": p.status, "phone": p.phone}


def _updates(rt):
    with rt.transaction() as s:
        return [(a.actor, a.subject_id, a.details) for a in s.scalars(
            select(AuditLog).where(AuditLog.action == "patient.update").order_by(AuditLog.id))]


# -- the API -----------------------------------------------------------------------------------


def test_patch_corrects_the_details_and_audits_old_and_new(client, rt):
    pid = _enrol(client, consent=False)
    res = client.patch(f"/api/patients/{pid}", headers={"X-Actor": "coordinator-sam"}, json={
        "name": "Ada Byron", "timezone": "europe/paris", "channel": "WhatsApp", "language": "es"})
    assert res.status_code == 200, res.get_json()
    body = res.get_json()
    assert (body["name"], body["timezone"], body["channel"], body["language"]) == (
        "Ada Byron", "Europe/Paris", "whatsapp", "es")
    assert body["changed"]["timezone"] == {"from": "Europe/London", "to": "Europe/Paris"}
    assert _patient(rt, pid) == {"name": "Ada Byron", "timezone": "Europe/Paris",
                                 "channel": "whatsapp", "language": "es", "status": "active",
                                 "phone": PHONE}
    [(actor, subject, details)] = _updates(rt)
    assert actor == "api:coordinator-sam" and subject == str(pid)
    assert details["changes"] == {
        "name": {"from": "Ada", "to": "Ada Byron"},
        "timezone": {"from": "Europe/London", "to": "Europe/Paris"},
        "channel": {"from": "sms", "to": "whatsapp"},
        "language": {"from": "en", "to": "es"}}


def test_patch_with_the_same_values_changes_nothing_and_audits_nothing(client, rt):
    pid = _enrol(client, consent=False)
    res = client.patch(f"/api/patients/{pid}", json={"name": "Ada", "channel": "sms"})
    assert res.status_code == 200 and res.get_json()["changed"] == {}
    assert _updates(rt) == []


@pytest.mark.parametrize(("body", "field", "words"), [
    ({"timezone": "GMT"}, "timezone", "Europe/London"),
    ({"timezone": "Mars/Olympus"}, "timezone", "unknown timezone"),
    ({"channel": "pigeon"}, "channel", "sms, whatsapp"),
    ({"language": "fr"}, "language", "en, es"),
    ({"name": "   "}, "name", "non-empty"),
    ({"name": "x" * 81}, "name", "1 to 80"),
    ({"status": "opted_out"}, "status", "active, paused"),
    ({"name": None}, "name", "non-empty"),
    ({"consent_at": "2026-01-01"}, "consent_at", "cannot be changed"),
    ({"phone": "+44 20 7946 0123"}, "phone", "is a landline"),
    ({"phone": "+33 1 23 45 67 89"}, "phone", "is a landline"),
    ({"phone": "+44 7700 900002"}, "phone", "care-team contact's number"),
    ({"phone": "0770 HELLO"}, "phone", "is not a phone number (e.g. 07400 123456, or +44"),
    ({"phone": "+44 7700 9001"}, "phone", "wrong number of digits"),
    ({"phone": "+44 7700 900456 ext. 12"}, "phone", "extension"),
    ({"phone": "+447700900456", "name": " "}, "name", "non-empty"),
    ({}, "body", "nothing to change"),
])
def test_a_bad_patch_is_a_400_naming_the_field_and_changes_nothing(client, rt, body, field,
                                                                   words):
    pid = _enrol(client, consent=False)
    before = _patient(rt, pid)
    res = client.patch(f"/api/patients/{pid}", json=body)
    assert res.status_code == 400, res.get_json()
    assert res.get_json()["field"] == field and words in res.get_json()["error"]
    assert _patient(rt, pid) == before and _updates(rt) == []


def test_patching_an_unknown_patient_is_a_404(client):
    res = client.patch("/api/patients/999", json={"name": "Bob"})
    assert res.status_code == 404 and "no patient 999" in res.get_json()["error"]


NEW_PHONE = "+447700900456"


def test_patch_changes_the_number_and_audits_old_and_new(client, rt):
    pid = _enrol(client, consent=False)
    res = client.patch(f"/api/patients/{pid}", headers={"X-Actor": "coordinator-sam"},
                       json={"phone": "+44 7700 900456"})
    assert res.status_code == 200, res.get_json()
    assert res.get_json()["phone"] == NEW_PHONE
    assert res.get_json()["changed"] == {"phone": {"from": PHONE, "to": NEW_PHONE}}
    assert _patient(rt, pid)["phone"] == NEW_PHONE
    [(actor, subject, details)] = _updates(rt)
    assert actor == "api:coordinator-sam" and subject == str(pid)
    assert details["changes"] == {"phone": {"from": PHONE, "to": NEW_PHONE}}
    # The same number written another way is no change.
    res = client.patch(f"/api/patients/{pid}", json={"phone": "+44 (0)7700 900456"})
    assert res.status_code == 200 and res.get_json()["changed"] == {}
    assert len(_updates(rt)) == 1


def test_another_patients_number_is_refused_as_at_enrolment(client, rt):
    pid = _enrol(client, consent=False)
    _enrol(client, phone=NEW_PHONE, consent=False)
    at_enrolment = client.post("/api/patients", json={"phone": NEW_PHONE, "name": "Eve"})
    res = client.patch(f"/api/patients/{pid}", json={"phone": "+44 7700 900456",
                                                     "name": "Ada B"})
    assert res.status_code == at_enrolment.status_code == 400
    assert res.get_json() == at_enrolment.get_json() == {
        "error": "phone: a patient with this number is already enrolled", "field": "phone"}
    assert _patient(rt, pid)["phone"] == PHONE and _patient(rt, pid)["name"] == "Ada"
    assert _updates(rt) == []


def test_a_number_enrolled_meanwhile_is_refused_by_the_unique_index(client, rt, monkeypatch):
    from bot.services import patients as patients_service

    pid = _enrol(client, consent=False)
    _enrol(client, phone=NEW_PHONE, consent=False)
    # Enrolled elsewhere between the check and the write: the check does not see it.
    monkeypatch.setattr(patients_service, "find_patient", lambda session, phone: None)
    res = client.patch(f"/api/patients/{pid}", json={"phone": NEW_PHONE, "name": "Ada B"})
    assert res.status_code == 400
    assert res.get_json()["field"] == "phone" and "already enrolled" in res.get_json()["error"]
    assert _patient(rt, pid)["phone"] == PHONE and _patient(rt, pid)["name"] == "Ada"
    assert _updates(rt) == []


def test_a_new_number_is_not_written_to_the_log_at_info(client, rt, caplog):
    pid = _enrol(client, consent=False)
    with caplog.at_level(logging.INFO):
        res = client.patch(f"/api/patients/{pid}", json={"phone": NEW_PHONE})
    assert res.status_code == 200
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "7700900456" not in logged and "7700900123" not in logged


class TestWithToken:
    @pytest.fixture
    def settings_overrides(self):
        return {"admin_token": "s3cret-admin-token"}

    def test_patch_needs_the_admin_token(self, client, rt):
        auth = {"Authorization": "Bearer s3cret-admin-token", "X-Actor": "Nurse Jo"}
        pid = client.post("/api/patients", json={"phone": PHONE, "name": "Ada"},
                          headers=auth).get_json()["id"]
        assert client.patch(f"/api/patients/{pid}", json={"name": "Eve"}).status_code == 401
        assert _patient(rt, pid)["name"] == "Ada"
        ok = client.patch(f"/api/patients/{pid}", json={"name": "Eve"}, headers=auth)
        assert ok.status_code == 200 and _patient(rt, pid)["name"] == "Eve"


def _checkins(rt, pid):
    with rt.transaction() as s:
        return s.scalars(select(Conversation.started_at).where(
            Conversation.patient_id == pid, Conversation.flow_id == "checkin")).all()


def test_a_paused_patient_gets_no_checkin_until_resumed(client, rt, clock):
    rt.dispatcher.pacer = Pacer(1000)
    clock.set(datetime(2026, 3, 2, 12, 0, tzinfo=UTC))  # Monday noon in London
    pid = _enrol(client)  # consenting schedules the weekly check-in: tomorrow 10:00
    res = client.patch(f"/api/patients/{pid}", json={"status": "paused"})
    assert res.status_code == 200 and res.get_json()["status"] == "paused"
    clock.set(datetime(2026, 3, 3, 10, 1, tzinfo=UTC))
    tick(rt)
    assert _checkins(rt, pid) == []
    with rt.transaction() as s:
        skip = s.scalars(select(AuditLog.details).where(AuditLog.action == "schedule.skip")).one()
    assert skip["reason"] == "patient paused"
    res = client.patch(f"/api/patients/{pid}", json={"status": "active"})
    assert res.status_code == 200 and res.get_json()["status"] == "active"
    clock.set(datetime(2026, 3, 10, 10, 1, tzinfo=UTC))
    tick(rt)
    assert len(_checkins(rt, pid)) == 1
    assert [d["changes"]["status"] for _, _, d in _updates(rt)] == [
        {"from": "active", "to": "paused"}, {"from": "paused", "to": "active"}]


def test_an_opted_out_patients_status_is_never_changed_by_update(client, rt):
    pid = _enrol(client)
    client.post("/simulator/api/messages", json={"phone": PHONE, "body": "STOP"})
    assert _patient(rt, pid)["status"] == "opted_out"
    for status in ("active", "paused"):
        res = client.patch(f"/api/patients/{pid}", json={"status": status, "name": "Ada B"})
        assert res.status_code == 409, res.get_json()
        assert "START" in res.get_json()["error"] and res.get_json()["field"] == "status"
    assert _patient(rt, pid)["status"] == "opted_out" and _patient(rt, pid)["name"] == "Ada"
    ok = client.patch(f"/api/patients/{pid}", json={"name": "Ada B"})  # details still correct
    assert ok.status_code == 200 and ok.get_json()["status"] == "opted_out"


def test_a_new_zone_moves_the_next_checkin_to_the_same_local_time_there(client, rt, clock):
    rt.dispatcher.pacer = Pacer(1000)
    clock.set(datetime(2026, 3, 2, 12, 0, tzinfo=UTC))  # Monday noon in London (GMT)
    pid = _enrol(client)
    with rt.transaction() as s:
        [sched] = s.scalars(select(Schedule)).all()
        assert sched.next_due_at == datetime(2026, 3, 3, 10, 0, tzinfo=UTC)  # Tue 10:00 London
    res = client.patch(f"/api/patients/{pid}", json={"timezone": "America/New_York"})
    assert res.status_code == 200, res.get_json()
    # Tuesday 10:00 in New York (EST, UTC-5): the stored UTC time moves
    assert res.get_json()["schedules_moved"] == [
        {"id": sched.id, "from": "2026-03-03T10:00:00Z", "to": "2026-03-03T15:00:00Z"}]
    with rt.transaction() as s:
        assert s.get(Schedule, sched.id).next_due_at == datetime(2026, 3, 3, 15, 0, tzinfo=UTC)
    [(_, _, details)] = _updates(rt)
    assert details["schedules"] == [{"id": sched.id, "from": "2026-03-03T10:00:00+00:00",
                                     "to": "2026-03-03T15:00:00+00:00"}]
    clock.set(datetime(2026, 3, 3, 10, 1, tzinfo=UTC))  # 05:01 in New York: nothing yet
    tick(rt)
    assert _checkins(rt, pid) == []
    clock.set(datetime(2026, 3, 3, 15, 1, tzinfo=UTC))
    tick(rt)
    assert _checkins(rt, pid) == [datetime(2026, 3, 3, 15, 1, tzinfo=UTC)]
    with rt.transaction() as s:  # and the week after: 10:00 in New York again
        assert s.get(Schedule, sched.id).next_due_at == datetime(2026, 3, 10, 14, 0, tzinfo=UTC)


def test_a_new_zone_where_todays_time_has_passed_moves_it_to_tomorrow(client, rt, clock):
    clock.set(datetime(2026, 3, 2, 12, 0, tzinfo=UTC))
    pid = _enrol(client)
    clock.set(datetime(2026, 3, 3, 6, 0, tzinfo=UTC))  # 06:00 London, 15:00 in Tokyo
    res = client.patch(f"/api/patients/{pid}", json={"timezone": "Asia/Tokyo"})
    assert res.status_code == 200
    with rt.transaction() as s:  # not sent at 15:00 Tokyo time: Wednesday 10:00 there
        assert s.scalars(select(Schedule.next_due_at)).one() == datetime(
            2026, 3, 4, 1, 0, tzinfo=UTC)


# -- the command line --------------------------------------------------------------------------


def test_cli_update_corrects_details_and_audits_with_the_cli_actor(cli, client, rt):
    pid = _enrol(client, consent=False)
    res = cli("patients", "update", "--phone", "+44 7700 900123", "--name", "Ada Byron",
              "--timezone", "Europe/london", "--channel", "WhatsApp", "--language", "ES")
    assert res.exit_code == 0, res.output
    assert "updated +447700900123" in res.output and "channel: sms -> whatsapp" in res.output
    assert _patient(rt, pid) == {"name": "Ada Byron", "timezone": "Europe/London",
                                 "channel": "whatsapp", "language": "es", "status": "active",
                                 "phone": PHONE}
    [(actor, _, details)] = _updates(rt)
    assert actor == "cli:night-nurse"
    assert set(details["changes"]) == {"name", "channel", "language"}  # the zone was the same


def test_cli_pause_and_resume(cli, client, rt):
    pid = _enrol(client, consent=False)
    res = cli("patients", "update", "--phone", PHONE, "--pause")
    assert res.exit_code == 0 and "status: active -> paused" in res.output
    assert _patient(rt, pid)["status"] == "paused"
    assert "paused" in cli("patients", "list").output
    res = cli("patients", "update", "--phone", PHONE, "--resume")
    assert res.exit_code == 0 and "status: paused -> active" in res.output
    assert _patient(rt, pid)["status"] == "active"


def test_cli_refuses_to_resume_a_patient_who_opted_out(cli, client, rt):
    pid = _enrol(client)
    client.post("/simulator/api/messages", json={"phone": PHONE, "body": "STOP"})
    res = cli("patients", "update", "--phone", PHONE, "--resume", "--name", "Ada B")
    assert res.exit_code == 1
    assert "opted out" in res.output and "START" in res.output
    assert _patient(rt, pid)["status"] == "opted_out" and _patient(rt, pid)["name"] == "Ada"
    assert _updates(rt) == []


def test_cli_update_changes_the_number(cli, client, rt):
    pid = _enrol(client, consent=False)
    res = cli("patients", "update", "--phone", PHONE, "--new-phone", "+44 7700 900456")
    assert res.exit_code == 0, res.output
    assert f"updated {NEW_PHONE}" in res.output
    assert f"phone: {PHONE} -> {NEW_PHONE}" in res.output
    assert _patient(rt, pid)["phone"] == NEW_PHONE
    [(actor, _, details)] = _updates(rt)
    assert actor == "cli:night-nurse" and details["changes"]["phone"]["to"] == NEW_PHONE
    res = cli("patients", "update", "--phone", PHONE, "--name", "Eve")  # the old one is gone
    assert res.exit_code == 1 and f"no patient with number {PHONE}" in res.output


def test_cli_refuses_another_patients_number(cli, client, rt):
    pid = _enrol(client, consent=False)
    _enrol(client, phone=NEW_PHONE, consent=False)
    res = cli("patients", "update", "--phone", PHONE, "--new-phone", NEW_PHONE)
    assert res.exit_code == 2
    assert "phone: a patient with this number is already enrolled" in res.output
    assert _patient(rt, pid)["phone"] == PHONE and _updates(rt) == []


@pytest.mark.parametrize(("args", "code", "message"), [
    ([], 2, "nothing to change"),
    (["--new-phone", "+44 20 7946 0123"], 2, "phone: +442079460123 is a landline"),
    (["--new-phone", "+44 7700 900001"], 2, "is a care-team contact's number"),
    (["--new-phone", "hello"], 2, "phone: 'hello' is not a phone number"),
    (["--timezone", "GMT"], 2, "timezone: 'GMT' is not an Area/Location zone name"),
    (["--channel", "pigeon"], 2, "channel: must be one of sms, whatsapp"),
    (["--name", " "], 2, "name: must be 1 to 80 characters"),
])
def test_cli_update_refuses_bad_input_naming_it(cli, client, rt, args, code, message):
    pid = _enrol(client, consent=False)
    before = _patient(rt, pid)
    res = cli("patients", "update", "--phone", PHONE, *args)
    assert res.exit_code == code and message in res.output, res.output
    assert _patient(rt, pid) == before


def test_cli_update_of_an_unknown_number_exits_1(cli):
    res = cli("patients", "update", "--phone", "+447700900999", "--pause")
    assert res.exit_code == 1 and "no patient with number +447700900999" in res.output
