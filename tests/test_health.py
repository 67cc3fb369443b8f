"""/healthz and `checkin-bot health`: the on-call view of whether the bot is moving."""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime

from click.testing import CliRunner

from bot.cli import main
from bot.scheduler import tick
from bot.services import health
from bot.services.inbound import InboundMessage, handle_inbound_message
from bot.services.outbox import Draft, enqueue
from bot.services.patients import Enrolment, enrol_patient
from bot.store.models import Escalation, OutboxItem


def test_healthz_says_degraded_until_the_scheduler_has_ticked(client, rt):
    res = client.get("/healthz")
    assert res.status_code == 200  # the web app works: keep sending it webhooks
    body = res.get_json()
    assert body["status"] == "degraded"
    assert body["problems"] == ["scheduler: has never run against this database"]
    assert client.get("/healthz?strict=1").status_code == 503

    tick(rt)
    body = client.get("/healthz?strict=1").get_json()
    assert body["status"] == "ok" and body["problems"] == []
    assert body["scheduler"]["ok"] is True
    assert body["scheduler"]["seconds_since_tick"] == 0
    assert body["outbox"] == {"overdue": 0, "oldest_overdue_seconds": None,
                              "failed_last_24h": 0, "failed_alerts_open": 0,
                              "failed_instructions_last_24h": 0}
    assert body["escalations"] == {"emergency_unacknowledged_after_full_round": 0,
                                   "urgent_unacknowledged_after_full_round": 0}


def test_a_scheduler_that_stopped_ticking_is_reported(client, rt, clock):
    tick(rt)
    clock.advance(seconds=59)
    assert client.get("/healthz").get_json()["status"] == "ok"
    clock.advance(seconds=60)
    res = client.get("/healthz?strict=1")
    assert res.status_code == 503
    body = res.get_json()
    assert body["problems"] == ["scheduler: last tick 119 s ago"]
    assert body["scheduler"]["ok"] is False


def test_messages_nobody_sends_show_as_overdue(client, rt, clock):
    tick(rt)
    with rt.transaction() as s:
        enqueue(s, Draft(to="+447700900123", channel="sms", body="Time for your check-in."),
                clock.now())
    clock.advance(seconds=60)
    tick(rt)  # the scheduler is alive: it sends the row (dev messenger)
    assert client.get("/healthz").get_json()["outbox"]["overdue"] == 0

    with rt.transaction() as s:  # a row no dispatcher picks up (say the send threads are stuck)
        item = enqueue(s, Draft(to="+447700900123", channel="sms", body="Hello"), clock.now())
        item.status, item.claimed_until = "sending", clock.now()
    clock.advance(seconds=150)
    with rt.transaction() as s:  # keep the scheduler's heartbeat fresh, without sending
        health.beat(s, health.SCHEDULER, clock.now())
    body = client.get("/healthz").get_json()
    assert body["status"] == "degraded"
    assert body["problems"] == ["outbox: 1 message(s) overdue"]
    assert body["outbox"]["overdue"] == 1
    assert body["outbox"]["oldest_overdue_seconds"] == 150
    assert "+44" not in json.dumps(body)  # no phone numbers on this page


def test_failed_sends_of_the_last_day_are_counted(client, rt, clock):
    with rt.transaction() as s:
        enqueue(s, Draft(to="+447700900123", channel="sms", body="x"), clock.now())
        s.flush()
        s.query(OutboxItem).update({"status": "failed"})
    body = client.get("/healthz").get_json()
    assert body["outbox"]["failed_last_24h"] == 1
    clock.advance(hours=25)
    assert client.get("/healthz").get_json()["outbox"]["failed_last_24h"] == 0


def test_the_health_command_exits_by_status(db_url, monkeypatch, rt):
    monkeypatch.setenv("CHECKIN_DATABASE_URL", db_url)
    for var in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "CHECKIN_CONFIG", "CHECKIN_MESSENGER"):
        monkeypatch.delenv(var, raising=False)
    runner = CliRunner()
    result = runner.invoke(main, ["health"])
    assert result.exit_code == 1
    assert json.loads(result.output)["status"] == "degraded"
    with rt.transaction() as s:  # a scheduler ticked just now (the command reads real time)
        health.beat(s, health.SCHEDULER, datetime.now(UTC))
    result = runner.invoke(main, ["health"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["status"] == "ok"


def test_the_health_command_prints_json_when_the_database_is_down(monkeypatch, tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("CHECKIN_DATABASE_URL", f"postgresql://postgres@127.0.0.1:{port}/x")
    monkeypatch.setenv("CHECKIN_SPOOL_DIR", str(tmp_path / "spool"))
    for var in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "CHECKIN_CONFIG", "CHECKIN_MESSENGER"):
        monkeypatch.delenv(var, raising=False)
    result = CliRunner().invoke(main, ["health"])
    assert result.exit_code == 2
    body = json.loads(result.stdout)
    assert body["status"] == "down"
    assert body["problems"][0].startswith("database: cannot connect")
    assert body["spooled_inbound"] == 0


def test_twilio_without_a_public_url_is_flagged(db_url, clock):
    """No public URL, no status callbacks: a failed delivery would never be seen."""
    from bot.config import load_settings
    from bot.messaging.dev import DevMessenger
    from bot.runtime import build_runtime
    from bot.web.app import create_app
    from tests.twilio_support import TWILIO_SETTINGS

    settings = load_settings(env={}, overrides={
        "database_url": db_url, **TWILIO_SETTINGS, "public_url": None, "proxy_fix": 1})
    runtime = build_runtime(settings, clock=clock, dispatch_mode="inline",
                            messenger=DevMessenger(echo=False))  # nothing leaves the machine
    try:
        tick(runtime)
        body = create_app(runtime).test_client().get("/healthz").get_json()
        assert body["problems"] == [
            "config: CHECKIN_PUBLIC_URL is not set, so Twilio sends no delivery receipts"]
    finally:
        runtime.close()


def test_an_emergency_nobody_acknowledges_through_a_full_round_degrades_health(
        client, rt, clock):
    _red_flag(rt)
    tick(rt)
    team = rt.settings.care_team
    full_round = int(team.ack_timeout_minutes * len(team.escalation_chain))
    for _ in range(full_round - 1):  # the scheduler ticks on; every contact is alerted in turn
        clock.advance(minutes=1)
        tick(rt)
    assert client.get("/healthz?strict=1").status_code == 200  # the chain is still going round
    clock.advance(minutes=1)
    tick(rt)
    res = client.get("/healthz?strict=1")
    assert res.status_code == 503
    body = res.get_json()
    assert body["problems"] == [
        f"escalations: 1 emergency red flag(s) still unacknowledged after every care-team "
        f"contact was alerted (oldest opened {full_round} min ago)"]
    assert body["escalations"]["emergency_unacknowledged_after_full_round"] == 1
    assert "+44" not in json.dumps(body)


def test_care_team_alerts_that_cannot_be_sent_degrade_health(client, rt, clock):
    """Every alert refused (say a typo in a care-team number): the pager must hear of it long
    before a full round of the chain."""
    from sqlalchemy import select, update

    _red_flag(rt)
    tick(rt)
    with rt.transaction() as s:
        s.execute(update(OutboxItem).where(OutboxItem.kind == "alert").values(status="failed"))
    body = client.get("/healthz").get_json()
    assert body["status"] == "degraded"
    assert body["problems"] == ["alerts: 1 care-team alert(s) of open red flags could not be "
                                "sent (a wrong number in care_team?)"]
    with rt.transaction() as s:  # someone took it by phone: no longer a problem
        s.scalars(select(Escalation)).one().status = "acknowledged"
    assert client.get("/healthz").get_json()["problems"] == []


def test_an_emergency_instruction_that_cannot_be_sent_degrades_health(client, rt, clock):
    from sqlalchemy import update
    _red_flag(rt)
    tick(rt)
    with rt.transaction() as s:
        s.execute(update(OutboxItem).where(OutboxItem.kind == "emergency")
                  .values(status="failed"))
        s.execute(update(Escalation).values(status="acknowledged"))
    assert client.get("/healthz").get_json()["problems"] == [
        "outbox: 1 emergency or urgent instruction(s) to patients could not be sent in the "
        "last 24 hours"]
    clock.advance(hours=25)
    tick(rt)
    assert client.get("/healthz").get_json()["problems"] == []



def _red_flag(rt):
    """A consented patient texts an emergency red flag; the replies and first alert go."""
    with rt.transaction() as s:
        p = enrol_patient(s, Enrolment("+447700900123", "Ada", "Europe/London"),
                          languages=["en"], now=rt.clock.now(), actor="test")
        p.consent_at = rt.clock.now()
    with rt.transaction() as s:
        out = handle_inbound_message(s, rt.ctx, InboundMessage(
            "sms", "+447700900123", "my legs gave way and I wet myself"), rt.clock.now())
    rt.dispatch_soon(out.outbox_ids)
    assert out.level == "emergency"


def test_an_urgent_red_flag_upgraded_to_emergency_is_not_reported_before_its_new_round(
        client, rt, clock):
    """Urgent for hours (its chain went round), then an emergency: the chain starts again at
    the first contact, and the page waits for that round, not for the first one's age."""
    with rt.transaction() as s:
        p = enrol_patient(s, Enrolment("+447700900123", "Ada", "Europe/London"),
                          languages=["en"], now=rt.clock.now(), actor="test")
        p.consent_at = rt.clock.now()

    def say(text):
        with rt.transaction() as s:
            out = handle_inbound_message(s, rt.ctx, InboundMessage(
                "sms", "+447700900123", text), rt.clock.now())
        rt.dispatch_soon(out.outbox_ids)

    say("back pain is 9/10 and wakes me every night")
    for _ in range(len(rt.settings.care_team.escalation_chain)):
        clock.advance(minutes=rt.settings.care_team.urgent_ack_timeout_minutes)
        tick(rt)
    assert "urgent red flag" in " ".join(client.get("/healthz").get_json()["problems"])
    say("now my legs gave way")
    tick(rt)
    assert client.get("/healthz").get_json()["problems"] == []
