"""Times in the CLI's listings: an operator at night reads them in the clinic's zone, in one
short format with the zone's abbreviation ("2026-03-02 05:00 EST"), as `audit` shows them;
a schedule's next run in the patient's zone first, the clinic's in brackets when it differs
(as the dashboard's patient page). --json keeps UTC ISO times ending in "Z"."""

from __future__ import annotations

import json
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

CLINIC = "America/New_York"  # not UTC: a time left in UTC shows


def rows(res) -> list[dict]:
    return [json.loads(line) for line in res.stdout.splitlines() if line.strip()]


def utc(text: str) -> datetime:
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text)


def shown(at: datetime, zone: str = CLINIC) -> str:
    local = at.astimezone(ZoneInfo(zone))
    return f"{local:%Y-%m-%d %H:%M} {local.tzname()}"


@pytest.fixture
def clinic(monkeypatch, tmp_path):
    config = tmp_path / "clinic.yaml"
    config.write_text(f"defaults:\n  timezone: {CLINIC}\n")
    monkeypatch.setenv("CHECKIN_CONFIG", str(config))


def test_schedule_times_in_the_patients_zone_then_the_clinics(cli, clinic):
    cli("patients", "add", "--phone", "+447700900123", "--name", "Ada",
        "--timezone", "Europe/London")
    added = cli("schedules", "add", "--phone", "+447700900123", "--at", "10:00")
    assert added.exit_code == 0, added.output
    [row] = rows(cli("schedules", "list", "--json"))
    due = utc(row["next_due_at"])
    both = f"next {shown(due, 'Europe/London')} ({shown(due)})"
    assert both in added.stdout and "+00:00" not in added.stdout
    [line] = cli("schedules", "list").stdout.splitlines()
    assert line.endswith(both)


def test_a_patient_in_the_clinics_zone_gets_one_time(cli, clinic):
    cli("patients", "add", "--phone", "+447700900123", "--name", "Ada")  # the clinic's zone
    added = cli("schedules", "add", "--phone", "+447700900123", "--at", "10:00")
    [row] = rows(cli("schedules", "list", "--json"))
    due = utc(row["next_due_at"])
    assert shown(due).split()[1] == "10:00"
    assert added.stdout.rstrip().endswith(f"next {shown(due)}")
    assert cli("schedules", "list").stdout.rstrip().endswith(f"next {shown(due)}")


def test_patients_update_shows_moved_schedules_in_local_time(cli, clinic):
    cli("patients", "add", "--phone", "+447700900123", "--name", "Ada",
        "--timezone", "Europe/London")
    cli("schedules", "add", "--phone", "+447700900123", "--at", "10:00")
    [before] = rows(cli("schedules", "list", "--json"))
    res = cli("patients", "update", "--phone", "+447700900123", "--timezone", CLINIC)
    assert res.exit_code == 0, res.output
    [after] = rows(cli("schedules", "list", "--json"))
    old, new = utc(before["next_due_at"]), utc(after["next_due_at"])
    assert f"schedule {after['id']}: next {shown(old)} -> {shown(new)}" in res.stdout
    assert shown(new).split()[1] == "10:00"


def test_transcript_and_escalations_list_in_the_clinics_zone(cli, clinic, client):
    client.post("/simulator/api/patients", json={"phone": "+447700900123", "name": "Ada"})
    client.post("/simulator/api/messages", json={"phone": "+447700900123",
                                                 "body": "my legs gave way and I wet myself"})
    messages = json.loads(cli("transcript", "--phone", "+447700900123", "--json").stdout)
    lines = cli("transcript", "--phone", "+447700900123").stdout.splitlines()
    assert len(lines) == len(messages)
    for m, line in zip(messages, lines, strict=True):
        assert line.startswith(f"{shown(utc(m['created_at']))} ")
    [esc] = rows(cli("escalations", "list", "--json"))
    [line] = cli("escalations", "list").stdout.splitlines()
    assert f" open {shown(utc(esc['created_at']))} - -" in line
    cli("escalations", "ack", esc["ref"], "--by", "Nurse Jo")
    [esc] = rows(cli("escalations", "list", "--json"))
    [line] = cli("escalations", "list").stdout.splitlines()
    assert line.endswith(f" Nurse Jo {shown(utc(esc['acknowledged_at']))}")
    cli("escalations", "resolve", esc["ref"], "--note", "rang her")
    [esc] = rows(cli("escalations", "list", "--json"))
    again = cli("escalations", "resolve", esc["ref"], "--note", "again")
    assert f"already resolved at {shown(utc(esc['resolved_at']))};" in again.output


def test_messages_to_read_in_the_clinics_zone_and_json_in_utc_with_z(cli, clinic, rt, clock):
    from bot.store.models import Message, Patient

    cli("patients", "add", "--phone", "+447700900123", "--name", "Ada")
    with rt.transaction() as s:
        pid = s.scalars(select(Patient.id)).one()
        s.add(Message(patient_id=pid, direction="in", channel="sms", address="+447700900123",
                      body="please ring me", kind="reply", status="to_read",
                      created_at=clock.now(), updated_at=clock.now()))
    [row] = rows(cli("to-read", "--json"))
    assert utc(row["created_at"]) == clock.now()
    [line] = cli("to-read").stdout.splitlines()
    assert f" {shown(clock.now())} +447700900123" in line


def test_staff_and_token_lists_in_the_clinics_zone(cli, clinic, rt, clock):
    from bot.services import staff as staff_service

    with rt.transaction() as s:
        staff_service.add_staff(s, "alice", "Alice", "a long password 1", clock.now(),
                                actor="test")
        staff_service.add_token(s, "alice", "laptop", clock.now(), actor="test")
        staff_service.find_staff(s, "alice").last_login_at = clock.now()
    [line] = cli("staff", "token", "list", "alice").stdout.splitlines()
    assert f"created {shown(clock.now())}" in line and "UTC" not in line
    [line] = cli("staff", "list").stdout.splitlines()
    assert f" {shown(clock.now())} " in line and "UTC" not in line
