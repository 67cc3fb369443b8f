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


@pytest.mark.parametrize(("body", "field"), [
    # A misspelt zone must not enrol a New York patient on the clinic's zone, texted at 5 a.m.
    ({"phone": "+447700900123", "name": "Ada", "time_zone": "America/New_York"}, "time_zone"),
    ({"phone": "+447700900123", "name": "Ada", "lang": "es"}, "lang"),
])
def test_an_unknown_field_at_enrolment_is_a_400_naming_it_not_ignored(client, rt, body, field):
    res = client.post("/api/patients", json=body)
    assert res.status_code == 400
    assert res.get_json()["field"] == field
    assert res.get_json()["error"].startswith(f"{field}: ") and "timezone" in res.get_json()["error"]
    with rt.transaction() as s:
        assert s.scalars(select(Patient)).all() == []


class TestWithTwilio:
    @pytest.fixture
    def settings_overrides(self):
        return {**TWILIO_SETTINGS, "admin_token": "s3cret-admin-token"}

    def test_the_api_needs_the_admin_token(self, client):
        assert client.get("/api/patients").status_code == 401
        ok = client.get("/api/patients", headers={"Authorization": "Bearer s3cret-admin-token"})
        assert ok.status_code == 200

    def test_patient_data_from_the_api_is_never_cached(self, client):
        """As the dashboard's pages: a browser or proxy cache must not keep patients' names,
        numbers and messages (a review found the API's answers had no Cache-Control)."""
        h = {"Authorization": "Bearer s3cret-admin-token"}
        for url in ("/api/patients", "/api/escalations"):
            res = client.get(url, headers=h)
            assert res.status_code == 200 and res.headers.get("Cache-Control") == "no-store"
        refused = client.get("/api/patients")
        assert refused.status_code == 401 and refused.headers.get("Cache-Control") == "no-store"

    def test_wrong_tokens_are_audited_and_then_refused_for_a_while(self, client, rt, clock):
        """Guessing the token: each wrong one is audited (never the token), and after
        API_FAILURES from one address within the window even the right one gets a 429 until
        the window has passed."""
        from sqlalchemy import select

        from bot.store.models import AuditLog
        from bot.web.api import API_FAILURE_WINDOW, API_FAILURES

        right = {"Authorization": "Bearer s3cret-admin-token"}
        for i in range(API_FAILURES):
            res = client.get("/api/patients", headers={"Authorization": f"Bearer guess-{i}"})
            assert res.status_code == 401
        res = client.get("/api/patients", headers=right)
        assert res.status_code == 429 and "too many wrong API tokens" in res.get_json()["error"]
        assert res.headers["Retry-After"] == str(int(API_FAILURE_WINDOW.total_seconds()))
        with rt.transaction() as s:
            failed = list(s.scalars(select(AuditLog).where(
                AuditLog.action == "api.auth_failed")))
        assert [a.details["failures"] for a in failed] == list(range(1, API_FAILURES + 1))
        assert not any("guess" in str(a.details) for a in failed)
        clock.advance(seconds=API_FAILURE_WINDOW.total_seconds())
        assert client.get("/api/patients", headers=right).status_code == 200

    def test_the_simulator_is_not_served_with_real_phones(self, client):
        assert client.get("/simulator").status_code == 404

    def test_undeliverable_messages_are_listed_for_the_care_team(self, client, rt, fake_http):
        auth = {"Authorization": "Bearer s3cret-admin-token", "X-Actor": "Nurse Jo"}
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


def test_a_schedule_can_start_on_a_first_day_and_shows_its_weekday(client, rt):
    pid = _enrolled(client)  # the clock: Monday 2 March 2026, 10:00 London
    hdr = {"X-Actor": "coordinator-sam"}
    res = client.post(f"/api/patients/{pid}/schedules", headers=hdr,
                      json={"flow": "checkin", "at": "10:00", "every_days": 7,
                            "first_day": "thursday"})
    assert res.status_code == 201, res.get_json()
    body = res.get_json()
    assert body["next_due_at"] == "2026-03-05T10:00:00Z" and body["weekday"] == "thursday"
    res = client.post(f"/api/patients/{pid}/schedules", headers=hdr,
                      json={"flow": "reminder", "at": "09:00", "every_days": 2,
                            "reminder_text": "Take your tablets", "first_day": "2026-03-10"})
    assert res.status_code == 201, res.get_json()
    assert res.get_json()["next_due_at"] == "2026-03-10T09:00:00Z"
    assert res.get_json()["weekday"] is None  # not a whole number of weeks
    listed = client.get(f"/api/patients/{pid}/schedules").get_json()
    assert [(x["flow"], x["weekday"]) for x in listed] == [("checkin", "thursday"),
                                                           ("reminder", None)]
    with rt.transaction() as s:
        added = [a.details for a in s.scalars(
            select(AuditLog).where(AuditLog.action == "schedule.add").order_by(AuditLog.id))]
    assert [d["first_day"] for d in added] == ["thursday", "2026-03-10"]


@pytest.mark.parametrize("first_day", ["someday", "", "2026-02-30", "2026-03-01", 5,
                                       "mon\x00"])
def test_a_bad_first_day_is_a_400_naming_it(client, rt, first_day):
    pid = _enrolled(client)
    res = client.post(f"/api/patients/{pid}/schedules",
                      json={"flow": "checkin", "at": "10:00", "first_day": first_day})
    assert res.status_code == 400, res.get_json()
    assert res.get_json()["field"] == "first_day"
    with rt.transaction() as s:
        from bot.store.models import Schedule
        assert s.scalars(select(Schedule)).all() == []


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


# -- review fixes: authorisation, errors, hostile input ---------------------------------------

AUTH = {"Authorization": "Bearer s3cret-admin-token", "X-Actor": "Nurse Jo"}
RED_FLAG = "my legs gave way and I wet myself"


def _raw(client, method, url, text, headers=None):
    """A JSON body written by hand, so escapes like \\ud800 reach the server as sent."""
    return client.open(url, method=method, data=text, content_type="application/json",
                       headers=headers or {})


def _escalation(client, phone="+447700900123", headers=None) -> str:
    """An open emergency escalation, raised through the simulator; returns its ref."""
    h = headers or {}
    client.post("/simulator/api/patients", json={"phone": phone, "name": "Ada"}, headers=h)
    client.post("/simulator/api/messages", json={"phone": phone, "body": "YES"}, headers=h)
    client.post("/simulator/api/messages", json={"phone": phone, "body": RED_FLAG}, headers=h)
    rows = client.get("/api/escalations?open=1", headers=h).get_json()
    return next(e["ref"] for e in rows if e["status"] == "open")


class TestSimulatorWithAnAdminToken:
    """Dev messenger, CHECKIN_ADMIN_TOKEN set: the simulator's API asks for it like /api."""

    @pytest.fixture
    def settings_overrides(self):
        return {"admin_token": "s3cret-admin-token"}

    def test_the_simulator_api_needs_the_admin_token(self, client, rt):
        client.post("/api/patients", json={"phone": "+447700900123", "name": "Ada"},
                    headers=AUTH)
        for method, url, body in [
            ("GET", "/simulator/api/patients", None),
            ("POST", "/simulator/api/patients", {"phone": "+447700900124"}),
            ("POST", "/simulator/api/messages", {"phone": "+447700900123", "body": "STOP"}),
            ("GET", "/simulator/api/messages?phone=%2B447700900123", None),
        ]:
            for headers in ({}, {"Authorization": "Bearer wrong"}):
                res = client.open(url, method=method, json=body, headers=headers)
                assert res.status_code == 401, (method, url, res.status_code)
                assert res.is_json and "token" in res.get_json()["error"]
        with rt.transaction() as s:
            from bot.store.models import Message
            assert [p.status for p in s.scalars(select(Patient))] == ["active"]
            assert s.scalars(select(Message).where(Message.direction == "in")).all() == []
        ok = client.get("/simulator/api/patients", headers=AUTH)
        assert ok.status_code == 200 and [p["name"] for p in ok.get_json()] == ["Ada"]
        sent = client.post("/simulator/api/messages", headers=AUTH,
                           json={"phone": "+447700900123", "body": "hello"})
        assert sent.status_code == 201

    def test_the_page_is_served_and_asks_for_the_token(self, client):
        page = client.get("/simulator")
        assert page.status_code == 200
        assert "sessionStorage" in page.get_data(as_text=True)


class TestErrorsAreJson:
    @pytest.fixture
    def settings_overrides(self):
        return {"admin_token": "s3cret-admin-token"}

    @pytest.mark.parametrize(("method", "url", "status"), [
        ("GET", "/api/patients", 401),
        ("GET", "/api/patients/42/schedules", 404),
        ("POST", "/api/patients/42/schedules", 404),
        ("GET", "/api/escalations/ABCDE/ack", 405),
        ("POST", "/api/escalations/ABCDE/ack", 404),
        ("GET", "/api/nope", 404),
        ("GET", "/simulator/api/nope", 404),
        ("DELETE", "/simulator/api/patients", 405),
    ])
    def test_api_errors_are_json(self, client, method, url, status):
        headers = {} if status == 401 else AUTH
        res = client.open(url, method=method, headers=headers,
                          json={"by": "Jo"} if url.endswith("/ack") else {})
        assert res.status_code == status
        assert res.is_json, res.get_data(as_text=True)[:200]
        assert isinstance(res.get_json()["error"], str) and res.get_json()["error"]



class TestTwilioWithoutAnAdminToken:
    @pytest.fixture
    def settings_overrides(self):
        return TWILIO_SETTINGS

    def test_the_api_is_refused_as_json(self, client):
        res = client.get("/api/patients")
        assert res.status_code == 403 and res.is_json
        assert "CHECKIN_ADMIN_TOKEN" in res.get_json()["error"]


@pytest.mark.parametrize("zone", ["Europe", "Etc", "America", "a" * 300, "localtime",
                                  "posixrules", "../../etc/passwd", "/etc/localtime"])
def test_a_timezone_that_is_not_an_iana_zone_is_a_400(client, rt, zone):
    res = client.post("/api/patients", json={"phone": "+447700900123", "name": "Ada",
                                             "timezone": zone})
    assert res.status_code == 400 and res.get_json()["field"] == "timezone"
    res = client.post("/simulator/api/patients", json={"phone": "+447700900123",
                                                       "timezone": zone})
    assert res.status_code == 400 and res.get_json()["field"] == "timezone"
    with rt.transaction() as s:
        assert s.scalars(select(Patient)).all() == []


def test_a_real_zone_is_still_accepted(client):
    res = client.post("/api/patients", json={"phone": "+447700900123", "name": "Ada",
                                             "timezone": "America/Argentina/Buenos_Aires"})
    assert res.status_code == 201 and res.get_json()["timezone"].endswith("Buenos_Aires")


@pytest.mark.parametrize("bad", ["\\ud800", "\\udfff", "\\u0000", "\\u0007", "\\u001b"])
def test_nul_control_characters_and_lone_surrogates_are_a_400_naming_the_field(client, rt,
                                                                                 bad):
    res = _raw(client, "POST", "/api/patients",
               f'{{"phone": "+447700900123", "name": "Ada {bad}"}}')
    assert res.status_code == 400 and res.get_json()["field"] == "name"
    res = _raw(client, "POST", "/simulator/api/patients",
               f'{{"phone": "+447700900123", "name": "Ada {bad}"}}')
    assert res.status_code == 400 and res.get_json()["field"] == "name"
    ref = _escalation(client)
    pid = client.get("/api/patients").get_json()[0]["id"]
    for url, text, field in [
        (f"/api/escalations/{ref}/ack", f'{{"by": "Nurse {bad}"}}', "by"),
        (f"/api/escalations/{ref}/resolve", f'{{"note": "seen {bad}"}}', "note"),
        (f"/api/escalations/{ref}/resolve", f'{{"note": "seen", "by": "Jo {bad}"}}', "by"),
        (f"/api/patients/{pid}/schedules",
         f'{{"flow": "reminder", "reminder_text": "pill {bad}"}}', "reminder_text"),
        (f"/api/patients/{pid}/schedules", f'{{"flow": "checkin{bad}"}}', "flow"),
        ("/simulator/api/messages", f'{{"phone": "+447700900123", "body": "hi {bad}"}}',
         "body"),
    ]:
        res = _raw(client, "POST", url, text)
        assert res.status_code == 400, (url, res.status_code, res.get_data(as_text=True))
        assert res.get_json()["field"] == field, (url, res.get_json())
    with rt.transaction() as s:
        from bot.store.models import Escalation, Message, Schedule
        assert s.scalars(select(Escalation.status)).all() == ["open"]
        assert [sc.flow_id for sc in s.scalars(select(Schedule))] == ["checkin"]
        assert not any("hi " in (m.body or "") for m in s.scalars(select(Message)))


def test_newlines_in_a_reminder_and_a_note_are_fine(client):
    ref = _escalation(client)
    pid = client.get("/api/patients").get_json()[0]["id"]
    res = client.post(f"/api/patients/{pid}/schedules",
                      json={"flow": "reminder", "reminder_text": "Tablets:\nthe white one"})
    assert res.status_code == 201, res.get_json()
    res = client.post(f"/api/escalations/{ref}/resolve",
                      json={"note": "Called back.\nSeen in ED.", "by": "Nurse Jo"})
    assert res.status_code == 200, res.get_json()


@pytest.mark.parametrize("url", [
    "/api/patients", "/api/patients/1/schedules", "/api/escalations/ABCDE/ack",
    "/api/escalations/ABCDE/resolve", "/simulator/api/patients", "/simulator/api/messages"])
def test_deeply_nested_json_is_a_400(client, url):
    client.post("/api/patients", json={"phone": "+447700900123", "name": "Ada"})
    res = client.post(url, data="[" * 100_000, content_type="application/json")
    assert res.status_code == 400 and res.get_json()["field"] == "body"


def test_a_body_over_the_size_limit_is_a_413_in_json(client, app):
    limit = app.config["MAX_CONTENT_LENGTH"]
    assert limit and limit <= 1024 * 1024
    big = '{"phone": "+447700900123", "name": "' + "x" * limit + '"}'
    for url in ("/api/patients", "/simulator/api/messages"):
        res = client.post(url, data=big, content_type="application/json")
        assert res.status_code == 413 and res.is_json


@pytest.mark.parametrize("big", ["2147483648", "99999999999999999999"])
def test_ids_beyond_the_database_range_are_a_404(client, big):
    for method, url in [("GET", f"/api/patients/{big}/schedules"),
                        ("POST", f"/api/patients/{big}/schedules"),
                        ("DELETE", f"/api/schedules/{big}")]:
        res = client.open(url, method=method, json={} if method == "POST" else None)
        assert res.status_code == 404 and res.is_json


@pytest.mark.parametrize("after", ["2147483648", "99999999999999999999", "-1", "abc"])
def test_a_bad_after_in_the_simulator_is_a_400_naming_it(client, after):
    res = client.get(f"/simulator/api/messages?phone=%2B447700900123&after={after}")
    assert res.status_code == 400 and res.get_json()["field"] == "after"
    ok = client.get("/simulator/api/messages?phone=%2B447700900123&after=2147483647")
    assert ok.status_code == 200 and ok.get_json() == []


def test_a_phone_number_with_an_extension_is_a_400(client, rt):
    for phone in ("+447700900124 ext. 99", "+447700900124;ext=99", "+1 650 253 0000 x123"):
        res = client.post("/api/patients", json={"phone": phone, "name": "Ext"})
        assert res.status_code == 400 and res.get_json()["field"] == "phone", phone
        assert "extension" in res.get_json()["error"]
        res = client.post("/simulator/api/patients", json={"phone": phone})
        assert res.status_code == 400 and res.get_json()["field"] == "phone"
    with rt.transaction() as s:
        assert s.scalars(select(Patient)).all() == []


def _audits(rt, *actions):
    with rt.transaction() as s:
        return [(a.action, a.actor, a.details) for a in s.scalars(
            select(AuditLog).where(AuditLog.action.in_(actions)).order_by(AuditLog.id))]


def test_a_second_ack_is_a_409_saying_who_took_it(client, rt):
    ref = _escalation(client)
    first = client.post(f"/api/escalations/{ref}/ack", json={"by": "Nurse Jo"},
                        headers={"X-Actor": "jo"})
    assert first.status_code == 200 and first.get_json()["acknowledged_by"] == "Nurse Jo"
    again = client.post(f"/api/escalations/{ref}/ack", json={"by": "Dr Sam"},
                        headers={"X-Actor": "sam"})
    assert again.status_code == 409
    body = again.get_json()
    assert "already acknowledged by Nurse Jo" in body["error"]
    assert first.get_json()["acknowledged_at"] in body["error"]
    assert body["escalation"]["acknowledged_by"] == "Nurse Jo"
    assert body["escalation"]["status"] == "acknowledged"
    assert _audits(rt, "escalation.ack", "escalation.ack_refused") == [
        ("escalation.ack", "api:jo", {"by": "Nurse Jo"}),
        ("escalation.ack_refused", "api:sam",
         {"by": "Dr Sam", "status": "acknowledged", "acknowledged_by": "Nurse Jo"}),
    ]


def test_resolving_twice_is_a_409_and_keeps_the_first_note(client, rt):
    ref = _escalation(client)
    client.post(f"/api/escalations/{ref}/ack", json={"by": "Nurse Jo"})
    ok = client.post(f"/api/escalations/{ref}/resolve", json={"note": "seen in ED"},
                     headers={"X-Actor": "jo"})
    assert ok.status_code == 200 and ok.get_json()["status"] == "resolved"
    again = client.post(f"/api/escalations/{ref}/resolve", json={"note": "different note"},
                        headers={"X-Actor": "sam"})
    assert again.status_code == 409
    body = again.get_json()
    assert "already resolved" in body["error"] and ok.get_json()["resolved_at"] in body["error"]
    assert body["escalation"]["status"] == "resolved"
    assert body["escalation"]["resolution_note"] == "seen in ED"
    late_ack = client.post(f"/api/escalations/{ref}/ack", json={"by": "Dr Sam"})
    assert late_ack.status_code == 409 and "already resolved" in late_ack.get_json()["error"]
    with rt.transaction() as s:
        from bot.store.models import Escalation
        esc = s.scalars(select(Escalation)).one()
        assert (esc.resolution_note, esc.acknowledged_by) == ("seen in ED", "Nurse Jo")
    assert [a for a, _, _ in _audits(rt, "escalation.resolve", "escalation.resolve_refused",
                                     "escalation.ack_refused")] == [
        "escalation.resolve", "escalation.resolve_refused", "escalation.ack_refused"]


@pytest.mark.parametrize(("body", "headers", "expected"), [
    ({"note": "duplicate", "by": "Nurse Jo"}, {"X-Actor": "coordinator-sam"}, "Nurse Jo"),
    ({"note": "duplicate"}, {"X-Actor": "Nurse Jo"}, "Nurse Jo"),
    ({"note": "duplicate"}, {}, None),
])
def test_resolving_an_unacknowledged_escalation_records_a_person_not_the_api(
        client, rt, body, headers, expected):
    ref = _escalation(client)
    res = client.post(f"/api/escalations/{ref}/resolve", json=body, headers=headers)
    assert res.status_code == 200
    assert res.get_json()["acknowledged_by"] == expected
    assert res.get_json()["acknowledged_at"] is not None
    [(action, actor, details)] = _audits(rt, "escalation.resolve")
    assert actor == "api:" + headers.get("X-Actor", "coordinator")
    assert details["note"] == "duplicate"


def test_a_number_enrolled_at_the_same_moment_elsewhere_is_a_400_not_a_500(client, rt,
                                                                          monkeypatch):
    """Another enrolment of the number commits between the service's check and the insert:
    the unique index refuses it, and the API says so as the check would have."""
    import bot.services.patients as patients_service

    first = client.post("/api/patients", json={"phone": "+447700900123", "name": "Ada"})
    assert first.status_code == 201
    monkeypatch.setattr(patients_service, "find_patient", lambda session, phone: None)
    res = client.post("/api/patients", json={"phone": "+44 7700 900123", "name": "Ada again"})
    assert res.status_code == 400
    assert res.get_json()["field"] == "phone" and "already enrolled" in res.get_json()["error"]
    assert len(client.get("/api/patients").get_json()) == 1


@pytest.mark.parametrize(("zone", "words"), [
    ("GMT", "did you mean Europe/London?"), ("EST", "did you mean America/New_York?"),
    ("UTC", "did you mean Europe/London?"), ("Etc/GMT+1", "Area/Location"),
    ("gmt", "did you mean Europe/London?"),
])
def test_a_fixed_offset_zone_is_a_400_suggesting_the_place(client, rt, zone, words):
    res = client.post("/api/patients", json={"phone": "+447700900123", "name": "Ada",
                                             "timezone": zone})
    assert res.status_code == 400 and res.get_json()["field"] == "timezone"
    assert "not an Area/Location zone name" in res.get_json()["error"]
    assert words in res.get_json()["error"]
    with rt.transaction() as s:
        assert s.scalars(select(Patient)).all() == []


class TestAClinicInParis:
    @pytest.fixture
    def settings_overrides(self):
        return {"defaults": {"timezone": "Europe/Paris"}}

    def test_gmt_is_refused_suggesting_london_not_the_clinics_zone(self, client):
        res = client.post("/api/patients", json={"phone": "+447700900123", "name": "Ada",
                                                 "timezone": "GMT"})
        assert res.status_code == 400 and "did you mean Europe/London?" in res.get_json()["error"]


def test_zone_and_channel_are_matched_whatever_their_case(client):
    res = client.post("/api/patients", json={"phone": "+447700900123", "name": "Ada",
                                             "timezone": "Europe/london", "channel": "WhatsApp"})
    assert res.status_code == 201, res.get_json()
    assert (res.get_json()["timezone"], res.get_json()["channel"]) == ("Europe/London",
                                                                       "whatsapp")


@pytest.mark.parametrize(("phone", "words"), [
    ("+44 7700 900002", "care-team contact's number"),
    ("+44 20 7946 0123", "is a landline"),
    ("+33 1 23 45 67 89", "is a landline"),
    # A digit short (or long) of a mobile, in no range the library knows: a typo, which the
    # welcome would never reach. UK numbers of 9 digits exist, but no mobile has that few.
    ("07700 90012", "wrong number of digits for a mobile"),
    ("0412 345 679", "wrong number of digits for a mobile"),
])
def test_a_care_team_number_or_a_landline_is_a_400_naming_the_phone(client, rt, phone, words):
    res = client.post("/api/patients", json={"phone": phone, "name": "Ada"})
    assert res.status_code == 400 and res.get_json()["field"] == "phone"
    assert words in res.get_json()["error"]
    with rt.transaction() as s:
        assert s.scalars(select(Patient)).all() == []


@pytest.mark.parametrize("phone", ["07700 9001", "07700 900"])
def test_a_number_digits_short_is_named_as_typed_not_with_its_zero_inside(client, phone):
    # "07700 9001" was read with its trunk 0 kept inside (+44077009001), a number nobody
    # could recognise in the error; it is the number as typed that is wrong.
    res = client.post("/api/patients", json={"phone": phone, "name": "Ada"})
    assert res.status_code == 400 and res.get_json()["field"] == "phone"
    error = res.get_json()["error"]
    assert "wrong number of digits" in error and "+440" not in error
    assert phone in error or phone_e164(phone) in error


def phone_e164(phone: str) -> str:
    return "+44" + phone.replace(" ", "").removeprefix("0")


def test_an_unknown_flow_is_a_400_naming_the_known_ones(client):
    pid = client.post("/api/patients", json={"phone": "+447700900123", "name": "Ada"}
                      ).get_json()["id"]
    res = client.post(f"/api/patients/{pid}/schedules", json={"flow": "medication"})
    assert res.status_code == 400 and res.get_json() == {
        "error": "flow: unknown flow 'medication' (flows: checkin, reminder)", "field": "flow"}


# -- review fixes: the bearer scheme's case, a note's length, names in the CLI -----------------


class TestTokenAndNote:
    @pytest.fixture
    def settings_overrides(self):
        return {"admin_token": "s3cret-admin-token"}

    @pytest.mark.parametrize("scheme", ["bearer", "BEARER", "Bearer"])
    def test_the_bearer_scheme_is_read_in_any_case(self, client, scheme):
        res = client.get("/api/patients", headers={"Authorization": f"{scheme} s3cret-admin-token"})
        assert res.status_code == 200, res.get_json()

    def test_a_resolve_note_over_2000_characters_is_a_400_naming_it(self, client, rt):
        ref = _escalation(client, headers=AUTH)
        res = client.post(f"/api/escalations/{ref}/resolve", headers=AUTH,
                          json={"note": "x" * 2001, "by": "Nurse Jo"})
        assert res.status_code == 400 and res.get_json()["field"] == "note"
        from bot.store.models import Escalation
        with rt.transaction() as s:
            assert s.scalars(select(Escalation.status)).all() == ["open"]
        res = client.post(f"/api/escalations/{ref}/resolve", headers=AUTH,
                          json={"note": "x" * 2000, "by": "Nurse Jo"})
        assert res.status_code == 200 and res.get_json()["status"] == "resolved"


@pytest.mark.parametrize("name", ["Ada\x1b[2J", "Ada\nLovelace", "Ada\rBob"])
def test_the_cli_refuses_a_name_with_a_control_character(cli, rt, name):
    res = cli("patients", "add", "--phone", "+447700900123", "--name", name)
    assert res.exit_code == 2 and "name: contains a control character" in res.output
    with rt.transaction() as s:
        assert s.scalars(select(Patient)).all() == []


def test_the_cli_refuses_a_resolve_note_over_2000_characters(cli):
    res = cli("escalations", "resolve", "ABCDE", "--note", "x" * 2001, "--by", "Jo")
    assert res.exit_code == 2 and "note: at most 2000 characters" in res.output
