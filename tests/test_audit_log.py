"""Reading the audit log: `checkin-bot audit` and the dashboard's Audit page."""

from __future__ import annotations

import json
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from bot.services import escalations as esc_service
from bot.services.audit import audit
from bot.store.models import AuditLog, Patient
from tests.test_dashboard import enrol, page, sign_in

ADA, BOB = "+447700900123", "+447700900124"


def audit_count(db_url) -> int:
    from bot.store.db import make_engine

    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            return conn.scalar(select(func.count()).select_from(AuditLog))
    finally:
        engine.dispose()


def json_rows(res) -> list[dict]:
    return [json.loads(line) for line in res.stdout.splitlines() if line.strip()]


@pytest.fixture
def two_patients(cli, monkeypatch):
    """Ada enrolled by night-nurse, given a check-in, renamed by day-nurse; Bob enrolled."""
    assert cli("patients", "add", "--phone", ADA, "--name", "Ada Lovelace").exit_code == 0
    assert cli("schedules", "add", "--phone", ADA, "--at", "09:30").exit_code == 0
    assert cli("patients", "add", "--phone", BOB, "--name", "Bob Brown").exit_code == 0
    monkeypatch.setenv("USER", "day-nurse")
    res = cli("patients", "update", "--phone", ADA, "--name", "Ada King")
    assert res.exit_code == 0, res.output
    monkeypatch.setenv("USER", "night-nurse")


# -- the command line ------------------------------------------------------------------------


def test_audit_lists_the_newest_first_one_line_each_with_actor_action_patient_and_details(
        cli, two_patients):
    res = cli("audit")
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert len(lines) == 4
    update, bob, schedule, enrol_ = lines
    assert "cli:day-nurse" in update and "patient.update" in update and "Ada King" in update
    assert "name Ada Lovelace -> Ada King" in update
    assert "cli:night-nurse" in bob and "patient.enrol" in bob and "Bob Brown" in bob
    assert "schedule.add" in schedule and "Ada King" in schedule and "at 09:30" in schedule
    assert "patient.enrol" in enrol_ and "Ada King" in enrol_ and "channel sms" in enrol_


def test_times_are_in_the_clinics_zone(cli, two_patients, monkeypatch, tmp_path):
    config = tmp_path / "clinic.yaml"
    config.write_text("defaults:\n  timezone: America/New_York\n")
    monkeypatch.setenv("CHECKIN_CONFIG", str(config))
    [newest] = json_rows(cli("audit", "--json", "--limit", "1"))
    at = datetime.fromisoformat(newest["at"].replace("Z", "+00:00"))
    local = at.astimezone(ZoneInfo("America/New_York"))
    [line] = cli("audit", "--limit", "1").stdout.splitlines()
    assert line.startswith(f"{local:%Y-%m-%d %H:%M} {local.tzname()} ")
    assert local.tzname() in ("EST", "EDT")


def test_json_is_one_object_per_line_with_the_whole_record(cli, two_patients):
    res = cli("audit", "--json")
    assert res.exit_code == 0
    rows = json_rows(res)
    assert len(rows) == len(res.stdout.splitlines()) == 4
    update = rows[0]
    assert update["action"] == "patient.update" and update["actor"] == "cli:day-nurse"
    assert update["patient"] == "Ada King" and update["subject_type"] == "patient"
    assert update["details"] == {"changes": {"name": {"from": "Ada Lovelace", "to": "Ada King"}}}
    assert update["patient_id"] == rows[-1]["patient_id"]
    assert [r["id"] for r in rows] == sorted((r["id"] for r in rows), reverse=True)


def test_filters_patient_actor_action_since_and_limit(cli, two_patients):
    ada = json_rows(cli("audit", "--patient", "07700 900123", "--json"))  # national form
    assert [r["action"] for r in ada] == ["patient.update", "schedule.add", "patient.enrol"]
    assert {r["patient"] for r in ada} == {"Ada King"}
    by_day = json_rows(cli("audit", "--actor", "day-nurse", "--json"))
    assert [r["action"] for r in by_day] == ["patient.update"]
    assert json_rows(cli("audit", "--actor", "CLI:Day-Nurse", "--json")) == by_day
    assert [r["action"] for r in json_rows(cli("audit", "--action", "schedule", "--json"))] == \
        ["schedule.add"]
    assert [r["action"] for r in json_rows(cli("audit", "--action", "patient.en", "--json"))] \
        == ["patient.enrol", "patient.enrol"]
    assert len(json_rows(cli("audit", "--limit", "2", "--json"))) == 2
    assert len(json_rows(cli("audit", "--since", "2000-01-01", "--json"))) == 4
    res = cli("audit", "--since", "2999-01-01")
    assert res.exit_code == 0 and res.stdout.strip() == "no audit records"


def test_nothing_found_says_so_on_stderr_with_json(cli):
    res = cli("audit")
    assert res.exit_code == 0 and res.output.strip() == "no audit records"
    res = cli("audit", "--json")
    assert res.exit_code == 0 and res.stdout == "" and "no audit records" in res.stderr


@pytest.mark.parametrize(("args", "code", "says"), [
    (["--patient", BOB], 1, f"error: no patient with number {BOB}"),
    (["--patient", "hello"], 2, "phone: 'hello' is not a phone number"),
    (["--since", "02/03/2026"], 2, "error: since: '02/03/2026' is not a date (YYYY-MM-DD)"),
    (["--limit", "0"], 2, "--limit"),
])
def test_bad_filters_exit_as_the_other_commands_do(cli, args, code, says):
    cli("patients", "add", "--phone", ADA, "--name", "Ada")
    res = cli("audit", *args)
    assert res.exit_code == code, res.output
    assert says in res.output


def test_reading_the_audit_log_writes_no_audit_record(cli, two_patients, db_url):
    before = audit_count(db_url)
    assert cli("audit").exit_code == 0
    assert cli("audit", "--patient", ADA, "--json").exit_code == 0
    assert audit_count(db_url) == before


def test_text_someone_wrote_cannot_fake_lines(cli, client):
    """A resolution note may hold line breaks and escape sequences: one record, one line."""
    client.post("/simulator/api/patients", json={"phone": ADA, "name": "Ada"})
    client.post("/simulator/api/messages", json={"phone": ADA,
                                                 "body": "my legs gave way and I wet myself"})
    [esc] = json_rows(cli("escalations", "list", "--json"))
    res = cli("escalations", "resolve", esc["ref"], "--note", "Called her\nambulance sent",
              "--by", "Nurse Jo")
    assert res.exit_code == 0, res.output
    res = cli("audit", "--action", "escalation.resolve")
    [line] = res.stdout.splitlines()
    assert "note Called her\\nambulance sent" in line and "by Nurse Jo" in line
    assert f"escalation {esc['ref']}" in line and "Ada" in line


def test_a_patients_trail_has_their_red_flag_messages_and_opt_out(cli, client):
    """Records about a patient's red flag, their messages and their own STOP are theirs."""
    client.post("/simulator/api/patients", json={"phone": ADA, "name": "Ada"})
    client.post("/simulator/api/patients", json={"phone": BOB, "name": "Bob"})
    client.post("/simulator/api/messages", json={"phone": ADA,
                                                 "body": "my legs gave way and I wet myself"})
    client.post("/simulator/api/messages", json={"phone": BOB, "body": "STOP"})
    ada = json_rows(cli("audit", "--patient", ADA, "--json"))
    actions = {r["action"] for r in ada}
    assert {"escalation.open", "escalation.alert", "patient.enrol"} <= actions
    assert {r["patient"] for r in ada} == {"Ada"}
    bob = json_rows(cli("audit", "--patient", BOB, "--json"))
    assert "patient.opt_out" in {r["action"] for r in bob}
    assert not {"escalation.open", "escalation.alert"} & {r["action"] for r in bob}


# -- the dashboard ---------------------------------------------------------------------------


@pytest.fixture
def signed_in(client):
    sign_in(client, name="Jo", token=None)
    return client


def test_the_audit_page_needs_a_sign_in(client):
    res = client.get("/dashboard/audit")
    assert res.status_code == 303 and "/dashboard/login" in res.headers["Location"]


def test_the_audit_page_lists_the_newest_first_with_readable_numbers(signed_in, rt, clock):
    pid = enrol(rt, ADA, "Ada Lovelace")
    clock.advance(minutes=5)
    with rt.transaction() as s:
        audit(s, clock.now(), "user:alice", "patient.update", "patient", pid,
              changes={"phone": {"from": "+447700900199", "to": ADA}})
    clock.advance(minutes=5)
    with rt.transaction() as s:
        audit(s, clock.now(), "number", "number.opt_out", "number", BOB, keyword="STOP",
              channel="sms")
    text = page(signed_in, "/dashboard/audit")
    assert "Audit" in text and 'href="/dashboard/audit"' in text  # in the header, too
    body = text[text.index('id="audit"'):]
    assert body.index("number.opt_out") < body.index("patient.update") < body.index(
        "patient.enrol")
    assert "+44 7700 900124" in body  # the number that texted STOP, grouped to read
    assert "phone +44 7700 900199 -&gt; +44 7700 900123" in body
    assert f'href="/dashboard/patients/{pid}"' in body and "Ada Lovelace" in body
    local = clock.now().astimezone(ZoneInfo(rt.settings.defaults.timezone))
    assert local.strftime("%d %b %H:%M") in body


def test_a_patients_page_links_to_their_audit_trail(signed_in, rt, clock):
    ada = enrol(rt, ADA, "Ada Lovelace")
    bob = enrol(rt, BOB, "Bob Brown")
    ref = None
    with rt.transaction() as s:
        esc, _ = esc_service.escalate(s, rt.ctx, s.get(Patient, ada), "emergency",
                                      ["limb_weakness"], "my legs gave way", clock.now())
        ref = esc.ref
    link = f"/dashboard/audit?patient={ada}"
    assert f'href="{link}"' in page(signed_in, f"/dashboard/patients/{ada}")
    text = page(signed_in, link)
    body = text[text.index('id="audit"'):]
    assert "Ada Lovelace" in text and "Bob Brown" not in body
    assert ref in body and "escalation.open" in body
    assert "Bob Brown" in page(signed_in, f"/dashboard/audit?patient={bob}")
    assert signed_in.get("/dashboard/audit?patient=99999").status_code == 404


def test_the_audit_page_filters_by_who_and_action_and_shows_fifty(signed_in, rt, clock):
    pid = enrol(rt, ADA, "Ada Lovelace")
    with rt.transaction() as s:
        for i in range(60):
            audit(s, clock.now(), "cli:jo", "schedule.skip", "schedule", i, reason=f"r{i}")
    text = page(signed_in, "/dashboard/audit")
    assert text.count('class="audit-row"') == 50
    assert "schedule 59:" in text and "schedule 10:" in text and "schedule 9:" not in text
    assert "patient.enrol" not in text
    text = page(signed_in, "/dashboard/audit?action=patient.")
    assert text.count('class="audit-row"') == 1 and "patient.enrol" in text
    text = page(signed_in, "/dashboard/audit?actor=jo&action=schedule")
    assert text.count('class="audit-row"') == 50
    assert page(signed_in, f"/dashboard/audit?patient={pid}").count('class="audit-row"') == 1


def test_reading_the_audit_page_writes_no_audit_record(signed_in, rt):
    enrol(rt, ADA)
    page(signed_in, "/dashboard/audit")  # the first page view after the sign-in
    with rt.transaction() as s:
        before = s.scalar(select(func.count()).select_from(AuditLog))
    page(signed_in, "/dashboard/audit")
    page(signed_in, "/dashboard/audit?action=patient")
    with rt.transaction() as s:
        assert s.scalar(select(func.count()).select_from(AuditLog)) == before


def test_what_someone_wrote_is_escaped(signed_in, rt, clock):
    pid = enrol(rt, ADA, "Ada <b>Lovelace</b>")
    with rt.transaction() as s:
        audit(s, clock.now(), "dashboard:<i>Mallory</i>", "patient.discharge", "patient", pid,
              reason="<script>alert(1)</script>")
    text = page(signed_in, "/dashboard/audit")
    assert "<script>alert(1)" not in text and "&lt;script&gt;alert(1)" in text
    assert "<i>Mallory" not in text and "<b>Lovelace" not in text


def test_a_text_typed_in_the_phone_simulator_is_audited_with_who_typed_it(client, rt):
    """The simulator records what it is given as the patient's own text; the audit log says it
    was typed in the simulator, and by whom (without the words)."""
    client.post("/simulator/api/patients", json={"phone": ADA, "name": "Ada"})
    res = client.post("/simulator/api/messages", json={"phone": ADA, "body": "my back aches"})
    assert res.status_code == 201
    message_id = res.get_json()["message_id"]
    with rt.transaction() as s:
        [rec] = s.scalars(select(AuditLog).where(AuditLog.action == "simulator.text")).all()
        assert (rec.actor, rec.subject_type, rec.subject_id) == (
            "simulator", "message", str(message_id))
        assert "my back aches" not in json.dumps(rec.details)
