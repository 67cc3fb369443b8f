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
