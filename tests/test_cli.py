"""The checkin-bot command line against a real database."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from bot.cli import main


def test_patients_add_normalises_to_e164_and_list_shows_it(cli):
    res = cli("patients", "add", "--phone", "+44 7700 900123", "--name", "Ada Lovelace",
              "--timezone", "Europe/London", "--channel", "sms")
    assert res.exit_code == 0, res.output
    assert "+447700900123" in res.output
    listed = cli("patients", "list")
    assert listed.exit_code == 0
    [line] = listed.output.strip().splitlines()
    assert "+447700900123" in line and "active" in line and "Ada Lovelace" in line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--phone", "12345"], "phone: '12345' has the wrong number of digits"),
        (["--phone", "hello"], "phone: 'hello' is not a phone number (e.g. 07400 123456, or +44"),
        (["--phone", "+44 7700"], "phone: '+44 7700' has the wrong number of digits"),
        (["--phone", "+447700900123", "--timezone", "Mars/Olympus"],
         "timezone: unknown timezone 'Mars/Olympus'"),
        (["--phone", "+447700900123", "--language", "fr"], "language: must be one of en, es"),
    ],
)
def test_patients_add_rejects_bad_input_with_exit_2_naming_the_problem(cli, args, message):
    base = {"--name": "Ada", "--timezone": "Europe/London"}
    for i in range(0, len(args), 2):
        base[args[i]] = args[i + 1]
    res = cli("patients", "add", *[x for kv in base.items() for x in kv])
    assert res.exit_code == 2
    assert message in res.output
    assert cli("patients", "list").output.strip() == "no patients"


def test_a_duplicate_number_is_refused(cli):
    cli("patients", "add", "--phone", "+447700900123", "--name", "Ada")
    res = cli("patients", "add", "--phone", "+44 7700 900123", "--name", "Bob")
    assert res.exit_code == 2 and "already enrolled" in res.output


def test_transcript_prints_what_the_simulator_exchanged(cli, client):
    client.post("/simulator/api/patients", json={"phone": "+447700900123", "name": "Ada"})
    client.post("/simulator/api/messages", json={"phone": "+447700900123", "body": "yes"})
    res = cli("transcript", "--phone", "+44 7700 900123", "--json")
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    directions = [r["direction"] for r in rows]
    assert directions[:3] == ["out", "out", "out"]  # greeting, safety, consent question
    assert "in" in directions
    inbound = next(r for r in rows if r["direction"] == "in")
    assert inbound["body"] == "yes" and inbound["status"] == "received"
    assert rows[-1]["direction"] == "out" and "Thank you" in rows[-1]["body"]
    assert all({"direction", "body", "created_at", "status"} <= r.keys() for r in rows)
    assert [r["created_at"] for r in rows] == sorted(r["created_at"] for r in rows)


def test_a_bad_config_value_stops_with_one_line(cli, monkeypatch, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("defaults:\n  timezone: Mars/Olympus\n")
    monkeypatch.setenv("CHECKIN_CONFIG", str(bad))
    res = cli("patients", "list")
    assert res.exit_code == 2
    assert res.output.strip() == "error: config: defaults.timezone: unknown timezone 'Mars/Olympus'"


def test_schedules_add_validates_the_flow_and_time(cli):
    cli("patients", "add", "--phone", "+447700900123", "--name", "Ada")
    assert cli("schedules", "add", "--phone", "+447700900123", "--flow", "nope").exit_code == 2
    assert cli("schedules", "add", "--phone", "+447700900123", "--at", "7pm").exit_code == 2
    ok = cli("schedules", "add", "--phone", "+447700900123", "--at", "10:30")
    assert ok.exit_code == 0 and "every 7 days at 10:30" in ok.output


def test_schedules_add_list_replace_and_remove(cli, db_url):
    from sqlalchemy import select

    from bot.store.db import make_engine
    from bot.store.models import AuditLog

    cli("patients", "add", "--phone", "+447700900123", "--name", "Ada")
    first = cli("schedules", "add", "--phone", "+447700900123", "--at", "10:00")
    assert first.exit_code == 0 and "added" in first.output
    again = cli("schedules", "add", "--phone", "+447700900123", "--at", "22:30")
    assert again.exit_code == 0, again.output
    assert "replaced" in again.output and "was every 7 days at 10:00" in again.output
    assert "warning:" in again.output and "quiet hours" in again.output
    rem = cli("schedules", "add", "--phone", "+447700900123", "--flow", "reminder",
              "--at", "09:00", "--every-days", "1", "--text", "Take your tablets.")
    assert rem.exit_code == 0, rem.output
    listed = cli("schedules", "list", "--phone", "+44 7700 900123")
    lines = listed.output.strip().splitlines()
    assert len(lines) == 2 and "22:30" in lines[0] and "Take your tablets." in lines[1]
    sched_id = lines[0].split()[0]
    gone = cli("schedules", "remove", sched_id)
    assert gone.exit_code == 0 and "removed" in gone.output
    assert len(cli("schedules", "list").output.strip().splitlines()) == 1
    assert cli("schedules", "remove", sched_id).exit_code == 1
    engine = make_engine(db_url)
    with engine.connect() as conn:
        rows = conn.execute(select(AuditLog.action, AuditLog.actor).where(
            AuditLog.action.like("schedule.%")).order_by(AuditLog.id)).all()
    engine.dispose()
    assert [a for a, _ in rows] == ["schedule.add", "schedule.change", "schedule.add",
                                    "schedule.remove"]
    assert all(actor.startswith("cli:") for _, actor in rows)


@pytest.mark.parametrize(("args", "message"), [
    (["--flow", "reminder"], "reminder_text: required"),
    (["--flow", "reminder", "--text", "x" * 101], "reminder_text: at most 100 characters"),
    (["--flow", "welcome"], "flow: the welcome (consent) flow"),
])
def test_schedules_add_refuses_bad_flow_input(cli, args, message):
    cli("patients", "add", "--phone", "+447700900123", "--name", "Ada")
    res = cli("schedules", "add", "--phone", "+447700900123", *args)
    assert res.exit_code == 2 and message in res.output
    assert cli("schedules", "list").output.strip() == "no active schedules"


@pytest.mark.parametrize(("args", "message"), [
    (["--timezone", "Europe"], "timezone: unknown timezone 'Europe'"),
    (["--timezone", "x" * 300], "timezone: unknown timezone"),
    (["--timezone", "localtime"], "timezone: unknown timezone 'localtime'"),
    (["--phone", "+447700900123 ext. 99"], "phone: '+447700900123 ext. 99' has an extension"),
])
def test_patients_add_refuses_a_zone_that_is_not_iana_and_an_extension(cli, args, message):
    base = {"--phone": "+447700900123", "--name": "Ada"}
    for i in range(0, len(args), 2):
        base[args[i]] = args[i + 1]
    res = cli("patients", "add", *[x for kv in base.items() for x in kv])
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output
    assert cli("patients", "list").output.strip() == "no patients"


def test_a_config_zone_naming_a_tzdata_directory_stops_with_one_line(cli, monkeypatch, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("defaults:\n  timezone: Europe\n")
    monkeypatch.setenv("CHECKIN_CONFIG", str(bad))
    res = cli("patients", "list")
    assert res.exit_code == 2
    assert res.output.strip() == "error: config: defaults.timezone: unknown timezone 'Europe'"


def _escalation_ref(cli, client):
    client.post("/simulator/api/patients", json={"phone": "+447700900123", "name": "Ada"})
    client.post("/simulator/api/messages", json={"phone": "+447700900123",
                                                 "body": "my legs gave way and I wet myself"})
    [esc] = [json.loads(line) for line in cli("escalations", "list", "--json").output.split("\n")
             if line.strip()]
    return esc["ref"]


@pytest.mark.parametrize("note", ["", "   ", "\t\n"])
def test_resolving_with_a_blank_note_is_refused(cli, client, note):
    ref = _escalation_ref(cli, client)
    res = cli("escalations", "resolve", ref, "--note", note, "--by", "Nurse Jo")
    assert res.exit_code == 2 and "note: required" in res.output
    [esc] = [json.loads(line) for line in cli("escalations", "list", "--json").output.split("\n")
             if line.strip()]
    assert esc["status"] == "open" and esc["acknowledged_by"] is None


def test_resolving_without_by_records_the_cli_actor_as_who_took_it(cli, client, monkeypatch):
    monkeypatch.setenv("USER", "nurse-jo")
    ref = _escalation_ref(cli, client)
    res = cli("escalations", "resolve", ref, "--note", "Called her; ambulance on its way")
    assert res.exit_code == 0, res.output
    [esc] = [json.loads(line) for line in cli("escalations", "list", "--json").output.split("\n")
             if line.strip()]
    assert esc["status"] == "resolved" and esc["acknowledged_by"] == "cli:nurse-jo"


def test_a_blank_by_is_refused_on_ack_and_resolve(cli, client):
    ref = _escalation_ref(cli, client)
    assert cli("escalations", "ack", ref, "--by", "  ").exit_code == 2
    res = cli("escalations", "resolve", ref, "--note", "done", "--by", " ")
    assert res.exit_code == 2 and "by: required" in res.output
    [esc] = [json.loads(line) for line in cli("escalations", "list", "--json").output.split("\n")
             if line.strip()]
    assert esc["status"] == "open" and esc["acknowledged_by"] is None


def test_empty_lists_say_so(cli):
    res = cli("failed-messages")
    assert res.exit_code == 0 and res.output.strip() == "no failed messages"
    res = cli("unprocessed")
    assert res.exit_code == 0 and res.output.strip() == "no unprocessed messages"
    res = cli("failed-messages", "--json")  # JSON on stdout stays parseable: the line is on stderr
    assert res.exit_code == 0 and res.stdout == "" and "no failed messages" in res.stderr


@pytest.mark.parametrize("extra", [[], ["--json"]])
def test_the_transcript_of_an_unknown_number_says_so_and_exits_1(cli, extra):
    cli("patients", "add", "--phone", "+447700900123", "--name", "Ada")
    res = cli("transcript", "--phone", "+44 7700 900124", *extra)
    assert res.exit_code == 1
    assert "error: no patient with number +447700900124" in res.output


@pytest.mark.parametrize("command", [
    ["patients", "update", "--name", "Bea"],
    ["patients", "discharge", "--reason", "transferred"],
    ["schedules", "add", "--flow", "checkin", "--at", "09:00"],
    ["schedules", "list"],
    ["transcript"],
])
def test_every_command_given_an_unknown_number_says_so_and_exits_1(cli, command):
    cli("patients", "add", "--phone", "+447700900123", "--name", "Ada")
    res = cli(*command, "--phone", "+44 7700 900124")
    assert res.exit_code == 1, res.output
    assert "error: no patient with number +447700900124" in res.output


def test_schedules_add_with_an_unknown_flow_names_the_known_ones(cli):
    cli("patients", "add", "--phone", "+447700900123", "--name", "Ada")
    res = cli("schedules", "add", "--phone", "+447700900123", "--flow", "medication")
    assert res.exit_code == 2
    assert res.output.strip() == \
        "error: flow: unknown flow 'medication' (flows: checkin, reminder)"


@pytest.mark.parametrize(("zone", "suggestion"), [
    ("GMT", "did you mean Europe/London?"),
    ("UTC", "did you mean Europe/London?"),
    ("BST", "did you mean Europe/London?"),
    ("Etc/GMT", "did you mean Europe/London?"),
    ("EST", "did you mean America/New_York?"),
    ("Etc/GMT+1", "Area/Location"),
    ("GB", "did you mean Europe/London?"),
    ("CET", "Area/Location"),
    ("WET", "did you mean Europe/Lisbon?"),
])
def test_fixed_offset_and_abbreviated_zones_are_refused_with_the_likely_place(cli, zone,
                                                                              suggestion):
    res = cli("patients", "add", "--phone", "+447700900123", "--name", "Ada",
              "--timezone", zone)
    assert res.exit_code == 2, res.output
    assert f"timezone: '{zone}' is not an Area/Location zone name" in res.output
    assert suggestion in res.output
    assert cli("patients", "list").output.strip() == "no patients"


def test_zone_and_channel_names_are_matched_whatever_their_case(cli):
    res = cli("patients", "add", "--phone", "+447700900123", "--name", "Ada",
              "--timezone", "europe/LONDON", "--channel", "WhatsApp")
    assert res.exit_code == 0, res.output
    [p] = [json.loads(line) for line in cli("patients", "list", "--json").output.splitlines()]
    assert (p["timezone"], p["channel"]) == ("Europe/London", "whatsapp")


def test_a_care_team_number_and_a_landline_cannot_be_enrolled(cli):
    res = cli("patients", "add", "--phone", "+44 7700 900001", "--name", "Nurse")
    assert res.exit_code == 2
    assert "phone: +447700900001 is a care-team contact's number" in res.output
    res = cli("patients", "add", "--phone", "+44 20 7946 0123", "--name", "Ada")
    assert res.exit_code == 2
    assert "phone: +442079460123 is a landline" in res.output
    assert cli("patients", "list").output.strip() == "no patients"
    # A number that may be a mobile (the US cannot tell) is enrolled
    ok = cli("patients", "add", "--phone", "+1 415 555 2671", "--name", "Ada")
    assert ok.exit_code == 0, ok.output


def test_to_read_lists_what_patients_were_told_is_saved_for_the_team_and_marks_it_read(
        cli, db_url):
    from bot.config import load_settings
    from bot.messaging.dev import DevMessenger
    from bot.runtime import build_runtime
    from bot.services.inbound import InboundMessage, handle_inbound_message
    from bot.store.models import Message, Patient

    assert cli("patients", "add", "--phone", "+447700900123", "--name", "Ada Lovelace").exit_code == 0
    assert cli("to-read").output.strip() == "no messages to read"
    rt = build_runtime(load_settings(env={"CHECKIN_DATABASE_URL": db_url}),
                       messenger=DevMessenger(echo=False), dispatch_mode="none")
    try:
        for i, text in enumerate(["YES", "please ring me about my tablets"]):
            with rt.transaction() as s:  # consent (the welcome's question), then free text
                handle_inbound_message(s, rt.ctx, InboundMessage(
                    "sms", "+447700900123", text, provider_id=f"SM{i:032d}"), rt.clock.now())
        with rt.transaction() as s:
            assert s.query(Patient).one().consent_at is not None
            message_id = s.query(Message.id).filter(
                Message.body == "please ring me about my tablets").scalar()
    finally:
        rt.close()
    listed = cli("to-read")
    assert listed.exit_code == 0
    assert "Ada Lovelace: please ring me about my tablets" in listed.output
    assert cli("to-read", "--read", str(message_id)).exit_code == 2  # who read it?
    bad = cli("to-read", "--read", str(message_id), "--by", "Nurse\x00Jo")  # as --by elsewhere
    assert bad.exit_code == 2 and "by: contains a control character (U+0000)" in bad.output
    assert "Ada Lovelace: please ring me" in cli("to-read").output  # still waiting
    done = cli("to-read", "--read", str(message_id), "--by", "Nurse Jo")
    assert done.exit_code == 0 and "marked read by Nurse Jo" in done.output
    assert cli("to-read").output.strip() == "no messages to read"
    again = cli("to-read", "--read", str(message_id), "--by", "Nurse Jo")
    assert again.exit_code == 1 and "no message" in again.output


def test_simulate_calls_the_patient_as_the_bot_does(cli):
    res = CliRunner().invoke(main, ["simulate", "welcome", "--name", "Mrs Joan Baker"],
                             input="/quit\n")
    assert "Hi Joan," in res.output and "Mrs" not in res.output


def test_schedules_add_with_a_first_day_keeps_the_weekday(cli, db_url):
    from datetime import date, datetime, timedelta

    cli("patients", "add", "--phone", "+447700900123", "--name", "Ada",
        "--timezone", "America/New_York")
    res = cli("schedules", "add", "--phone", "+447700900123", "--at", "10:00",
              "--first-day", "fri")
    assert res.exit_code == 0, res.output
    assert "every 7 days at 10:00 on Fridays (America/New_York)" in res.output
    listed = cli("schedules", "list", "--json")
    row = json.loads(listed.output)  # one schedule: one JSON line
    assert row["weekday"] == "friday"
    from zoneinfo import ZoneInfo
    due = datetime.fromisoformat(row["next_due_at"].replace("Z", "+00:00"))
    local = due.astimezone(ZoneInfo("America/New_York"))
    assert local.strftime("%A %H:%M") == "Friday 10:00"
    line = cli("schedules", "list").output
    assert "at 10:00 America/New_York on Fridays" in line
    for bad, says in [("someday", "expected a weekday"), ("2000-01-01", "in the past")]:
        res = cli("schedules", "add", "--phone", "+447700900123", "--first-day", bad)
        assert res.exit_code == 2 and "error: first_day: " in res.output and says in res.output
    future = (date.today() + timedelta(days=10)).isoformat()
    res = cli("schedules", "add", "--phone", "+447700900123", "--every-days", "3",
              "--first-day", future)
    assert res.exit_code == 0, res.output
    assert "every 3 days at 10:00 (America/New_York), next" in res.output
