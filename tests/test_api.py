"""The JSON API and health check."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from bot.store.db import make_engine
from bot.store.models import AuditLog, Patient
from tests.twilio_support import (  # noqa: F401 - fixtures
    TWILIO_SETTINGS,
    fake_http,
    messenger,
)


def test_healthz_is_200_when_the_database_answers(client):
    res = client.get("/healthz")
    # 200 even though no scheduler ran in this test (see tests/test_health.py)
    assert res.status_code == 200 and res.get_json()["status"] == "degraded"


def test_healthz_is_503_when_the_database_does_not(client, rt):
    rt.engine = make_engine("postgresql://nobody@127.0.0.1:1/none",
                            connect_args={"connect_timeout": 1})
    res = client.get("/healthz")
    assert res.status_code == 503
    assert res.get_json() == {"status": "down", "problems": ["database: unavailable"],
                              "spooled_inbound": 0}


def test_enrol_normalises_the_number_welcomes_and_audits(client, rt):
    res = client.post("/api/patients", json={"phone": "+44 7700 900123", "name": "Ada"},
                      headers={"X-Actor": "coordinator-sam"})
    assert res.status_code == 201
    assert res.get_json()["phone"] == "+447700900123"
    with rt.transaction() as s:
        assert s.scalars(select(Patient.phone)).all() == ["+447700900123"]
        audit = s.scalars(select(AuditLog).where(AuditLog.action == "patient.enrol")).one()
        assert audit.actor == "api:coordinator-sam"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"phone": "12345", "name": "Ada"}, "phone"),
        ({"phone": "+447700900123"}, "name"),
        ({"phone": "+447700900123", "name": "Ada", "timezone": "Mars/Olympus"}, "timezone"),
        ({"phone": "+447700900123", "name": "Ada", "channel": "pigeon"}, "channel"),
    ],
)
def test_bad_input_is_a_400_naming_the_field_and_stores_nothing(client, rt, body, field):
    res = client.post("/api/patients", json=body)
    assert res.status_code == 400
    assert res.get_json()["field"] == field and field in res.get_json()["error"]
    with rt.transaction() as s:
        assert s.scalars(select(Patient)).all() == []


class TestWithTwilio:
    @pytest.fixture
    def settings_overrides(self):
        return {**TWILIO_SETTINGS, "admin_token": "s3cret-admin"}

    def test_the_api_needs_the_admin_token(self, client):
        assert client.get("/api/patients").status_code == 401
        ok = client.get("/api/patients", headers={"Authorization": "Bearer s3cret-admin"})
        assert ok.status_code == 200

    def test_the_simulator_is_not_served_with_real_phones(self, client):
        assert client.get("/simulator").status_code == 404

    def test_undeliverable_messages_are_listed_for_the_care_team(self, client, rt, fake_http):
        auth = {"Authorization": "Bearer s3cret-admin"}
        fake_http.queue_error(400, 21211, "The 'To' number is not a valid phone number.")
        client.post("/api/patients", json={"phone": "+447700900123", "name": "Ada"},
                    headers=auth)
        rt.dispatcher.dispatch_due()
        failed = client.get("/api/messages/failed", headers=auth).get_json()
        assert failed and failed[0]["to"] == "+447700900123"
        assert failed[0]["error_code"] == 21211


@pytest.mark.parametrize(("body", "field"), [
    ({"phone": "+447700900123", "name": "Ada", "timezone": 0}, "timezone"),
    ({"phone": "+447700900123", "name": "Ada", "timezone": ""}, "timezone"),
    ({"phone": "+447700900123", "name": "Ada", "channel": False}, "channel"),
    ({"phone": "+447700900123", "name": "Ada", "language": 0}, "language"),
    (["+447700900123", "Ada"], "body"),
])
def test_a_non_string_field_is_a_400_not_the_default(client, rt, body, field):
    res = client.post("/api/patients", json=body)
    assert res.status_code == 400 and res.get_json()["field"] == field
    with rt.transaction() as s:
        assert s.scalars(select(Patient)).all() == []


@pytest.mark.parametrize("action", ["ack", "resolve"])
def test_ack_and_resolve_answer_400_to_a_body_that_is_not_an_object(client, action):
    res = client.post(f"/api/escalations/ABC123/{action}", json=["Nurse Jo"])
    assert res.status_code == 400 and res.get_json()["field"] == "body"


@pytest.mark.parametrize("body", [["+447700900123"], 5])
def test_the_simulator_answers_400_to_a_body_that_is_not_an_object(client, body):
    for url in ("/simulator/api/patients", "/simulator/api/messages"):
        res = client.post(url, json=body)
        assert res.status_code == 400 and res.get_json()["field"] == "body"
    res = client.post("/simulator/api/patients", json={"phone": "+447700900123", "timezone": 0})
    assert res.status_code == 400 and res.get_json()["field"] == "timezone"


def _enrolled(client):
    return client.post("/api/patients", json={"phone": "+447700900123", "name": "Ada"}
                       ).get_json()["id"]


def test_schedules_can_be_set_listed_replaced_and_removed_with_audit(client, rt):
    pid = _enrolled(client)
    hdr = {"X-Actor": "coordinator-sam"}
    res = client.post(f"/api/patients/{pid}/schedules", headers=hdr,
                      json={"flow": "checkin", "at": "10:00", "every_days": 7})
    assert res.status_code == 201, res.get_json()
    first = res.get_json()
    assert (first["flow"], first["at"], first["every_days"]) == ("checkin", "10:00", 7)
    res = client.post(f"/api/patients/{pid}/schedules", headers=hdr,
                      json={"flow": "checkin", "at": "22:30"})
    assert res.status_code == 200  # replaced, not a second weekly check-in
    body = res.get_json()
    assert body["id"] == first["id"] and body["replaced"]["at"] == "10:00"
    assert "quiet hours" in body["warnings"][0]
    listed = client.get(f"/api/patients/{pid}/schedules").get_json()
    assert [(x["id"], x["at"]) for x in listed] == [(first["id"], "22:30")]
    res = client.delete(f"/api/schedules/{first['id']}", headers=hdr)
    assert res.status_code == 200 and res.get_json()["active"] is False
    assert client.get(f"/api/patients/{pid}/schedules").get_json() == []
    assert client.delete(f"/api/schedules/{first['id']}").status_code == 404
    with rt.transaction() as s:
        actions = [(a.action, a.actor) for a in s.scalars(
            select(AuditLog).where(AuditLog.action.like("schedule.%")).order_by(AuditLog.id))]
    assert actions == [("schedule.add", "api:coordinator-sam"),
                       ("schedule.change", "api:coordinator-sam"),
                       ("schedule.remove", "api:coordinator-sam")]


@pytest.mark.parametrize(("body", "field"), [
    ({"flow": "nope"}, "flow"),
    ({"flow": "welcome"}, "flow"),
    ({"flow": 3}, "flow"),
    ({"at": "7pm"}, "at"),
    ({"at": 10}, "at"),
    ({"every_days": "7"}, "every_days"),
    ({"every_days": 0}, "every_days"),
    ({"flow": "reminder"}, "reminder_text"),
    ({"flow": "reminder", "reminder_text": "x" * 101}, "reminder_text"),
    ({"colour": "blue"}, "colour"),
    (["checkin"], "body"),
])
def test_bad_schedule_input_is_a_400_naming_the_field(client, rt, body, field):
    pid = _enrolled(client)
    res = client.post(f"/api/patients/{pid}/schedules", json=body)
    assert res.status_code == 400, res.get_json()
    assert res.get_json()["field"] == field
    with rt.transaction() as s:
        from bot.store.models import Schedule
        assert s.scalars(select(Schedule)).all() == []


def test_schedules_of_an_unknown_patient_are_a_404(client):
    assert client.get("/api/patients/99/schedules").status_code == 404
    assert client.post("/api/patients/99/schedules", json={}).status_code == 404
