"""The database is down: inbound messages wait in the local spool, emergencies are still
answered (in the webhook's TwiML), and everything goes in once the database is back."""

from __future__ import annotations

import logging
import os
import stat
import time
from contextlib import contextmanager

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from bot.store.db import make_engine, make_session_factory
from bot.store.models import AuditLog, Escalation, Message, OutboxItem, Patient
from tests.test_webhooks import PHONE, bodies, count, enrol, post, sid, texted
from tests.twilio_support import (  # noqa: F401 - fixtures
    TWILIO_SETTINGS,
    fake_http,
    messenger,
    sent_to,
    settings_overrides,
)


@contextmanager
def database_down(rt):
    """Every new transaction of the web path fails to connect, as when PostgreSQL stops."""
    working = rt.sessions
    dead = make_engine("postgresql://nobody@127.0.0.1:1/none",
                       connect_args={"connect_timeout": 1})
    rt.sessions = make_session_factory(dead)
    try:
        yield
    finally:
        rt.sessions = working
        dead.dispose()


def test_a_message_sent_during_an_outage_is_kept_and_goes_in_later(client, rt, fake_http, clock):
    enrol(rt)
    sent_at = clock.now()
    with database_down(rt):
        res = texted(client, "hello")
        assert res.status_code == 200  # Twilio is told we have it
        assert b"<Message" not in res.data  # nothing to say yet
    [spooled] = rt.spool.pending()
    assert stat.S_IMODE(os.stat(spooled).st_mode) == 0o600  # patient data: this user only
    assert count(rt, Message) == 0 and fake_http.requests == []

    clock.advance(minutes=5)
    assert rt.replay_spool() == 1
    assert rt.spool.pending() == []
    with rt.transaction() as s:
        inbound = s.scalars(select(Message).where(Message.direction == "in")).one()
        assert inbound.body == "hello" and inbound.created_at == sent_at  # when it was sent
    assert len(bodies(fake_http)) == 1  # and now it is answered
    assert rt.replay_spool() == 0


def test_an_emergency_during_an_outage_is_answered_at_once_and_escalated_later(
        client, rt, fake_http, clock):
    enrol(rt)
    team = rt.settings.care_team
    oncall = team.contact(team.escalation_chain[0])
    with database_down(rt):
        res = texted(client, "my legs gave way and I wet myself")
    assert res.status_code == 200
    twiml = res.get_data(as_text=True)
    assert "this could be serious" in twiml  # the instruction, to the patient, right now
    assert f'to="{oncall.phone}"' in twiml and "database is down" in twiml  # and the on-call
    assert fake_http.requests == []

    rt.replay_spool()
    assert count(rt, Escalation) == 1  # the alert chain runs as usual, with its ref
    assert len(sent_to(fake_http, oncall.phone)) == 1
    assert bodies(fake_http) == []  # the patient is not told a second time
    assert count(rt, OutboxItem, OutboxItem.last_error == "told during a database outage") == 1


def test_a_replay_that_runs_twice_stores_the_message_once(client, rt, fake_http):
    enrol(rt)
    with database_down(rt):
        texted(client, "hello")
    [path] = rt.spool.pending()
    copy = path.with_name("0-" + path.name)  # as if a second worker replays the same file
    copy.write_bytes(path.read_bytes())
    assert rt.replay_spool() == 2
    assert count(rt, Message, Message.direction == "in") == 1
    assert len(bodies(fake_http)) == 1


def test_the_replay_waits_while_the_database_is_still_down(client, rt, fake_http):
    enrol(rt)
    with database_down(rt):
        texted(client, "hello")
        texted(client, "are you there")
        assert rt.replay_spool() == 0
    assert len(rt.spool.pending()) == 2
    assert client.get("/healthz").get_json()["problems"][-1] == (
        "spool: 2 inbound message(s) waiting for the database")
    assert rt.replay_spool() == 2
    with rt.transaction() as s:
        assert [m.body for m in s.scalars(select(Message).where(
            Message.direction == "in").order_by(Message.id))] == ["hello", "are you there"]


def test_an_unreadable_spool_file_is_set_aside(rt):
    rt.spool.directory.mkdir(parents=True)
    (rt.spool.directory / "20260101T000000000000-x.json").write_text("{not json")
    assert rt.replay_spool() == 0
    assert rt.spool.pending() == []
    assert [p.name for p in rt.spool.directory.iterdir()] == ["20260101T000000000000-x.bad"]


def _disk_refuses(rt, monkeypatch):
    def full(*_args, **_kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(rt.spool, "put", full)


def _errors(caplog) -> str:
    return "\n".join(r.getMessage() + "\n" + (r.exc_text or "")
                     for r in caplog.records if r.levelno >= logging.ERROR)


def test_if_the_disk_refuses_too_the_patient_is_told_to_send_it_again(
        client, rt, fake_http, monkeypatch, caplog):
    """Twilio does not retry a messaging webhook that answered 5xx (only a failed connection,
    unless the URL asks otherwise): a 500 would lose the message in silence. The patient is
    told it did not reach us, and the operator sees an ERROR."""
    enrol(rt)
    _disk_refuses(rt, monkeypatch)
    client.application.testing = False  # answer as in production, not raise into the test
    with database_down(rt):
        res = texted(client, "Zanzibar, my back is a bit stiff today")
    assert res.status_code == 200
    twiml = res.get_data(as_text=True)
    assert "could not be saved" in twiml and rt.ctx.patient_values(None)["hotline"] in twiml
    errors = _errors(caplog)
    assert "could not be kept" in errors
    assert PHONE not in errors and PHONE[1:] not in errors and "Zanzibar" not in errors
    assert rt.spool.pending() == [] and fake_http.requests == []


def test_if_the_disk_refuses_too_an_emergency_is_still_answered_in_the_twiml(
        client, rt, fake_http, monkeypatch, caplog):
    enrol(rt)
    team = rt.settings.care_team
    oncall = team.contact(team.escalation_chain[0])
    _disk_refuses(rt, monkeypatch)
    client.application.testing = False
    with database_down(rt):
        res = texted(client, "Zanzibar, my legs gave way and I wet myself")
    assert res.status_code == 200
    twiml = res.get_data(as_text=True)
    assert "this could be serious" in twiml  # the instruction, to the patient, right now
    assert f'to="{oncall.phone}"' in twiml  # and the on-call, who is all that knows of it
    errors = _errors(caplog)
    assert "could not be kept" in errors and "emergency" in errors
    assert PHONE not in errors and PHONE[1:] not in errors and "Zanzibar" not in errors


def test_if_the_disk_refuses_too_an_emergency_with_no_oncall_alert_says_nobody_saw_it(
        client, rt, fake_http, monkeypatch):
    """The on-call contact takes texts, the patient wrote on WhatsApp: TwiML can alert
    nobody, so the patient must not believe their care team has been told."""
    enrol(rt, channel="whatsapp")
    _disk_refuses(rt, monkeypatch)
    client.application.testing = False
    with database_down(rt):
        res = texted(client, "I'm going to kill myself tonight", channel="whatsapp")
    assert res.status_code == 200
    twiml = res.get_data(as_text=True)
    assert rt.settings.clinic.crisis_line in twiml
    assert "could not be saved" in twiml and "to=" not in twiml


def test_the_scheduler_tick_replays_the_spool(client, rt, fake_http):
    from bot.scheduler import tick

    enrol(rt)
    with database_down(rt):
        texted(client, "hello")
    tick(rt)
    assert rt.spool.pending() == []
    assert count(rt, Message, Message.direction == "in") == 1
    assert count(rt, AuditLog, AuditLog.action == "inbound.unprocessed") == 0


def test_a_web_worker_replays_its_spool_by_itself_once_the_database_is_back(
        settings, clock, fake_http, messenger):
    import time

    from bot.runtime import build_runtime
    from bot.web.app import create_app

    rt = build_runtime(settings, clock=clock, messenger=messenger, dispatch_mode="background")
    rt.spool_retry_seconds = 0.1
    try:
        client = create_app(rt).test_client()
        enrol(rt)
        with database_down(rt):
            texted(client, "hello")
            time.sleep(0.3)  # the replayer tries, and waits: still down
            assert len(rt.spool.pending()) == 1
        deadline = time.monotonic() + 10
        while rt.spool.pending() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert rt.spool.pending() == []
        assert count(rt, Message, Message.direction == "in") == 1
    finally:
        rt.close()


def test_a_status_callback_during_an_outage_is_kept_and_applied_later(client, rt, fake_http,
                                                                      clock):
    """Twilio does not retry status callbacks: a failed WhatsApp delivery reported while the
    database is down must still fall back to SMS once it is back."""
    from tests.test_webhooks import STATUS

    enrol(rt, channel="whatsapp")
    texted(client, "hello", channel="whatsapp")
    with rt.transaction() as s:
        provider_id = s.scalars(select(Message.provider_id).where(
            Message.direction == "out")).one()
    with database_down(rt):
        res = post(client, STATUS, {"MessageSid": provider_id, "MessageStatus": "failed",
                                    "ErrorCode": "63003"})
        assert res.status_code == 204
    [spooled] = rt.spool.pending()
    assert rt.spool.pending_inbound() == []  # /healthz counts patients' messages only
    assert stat.S_IMODE(os.stat(spooled).st_mode) == 0o600
    assert [r.data["To"] for r in fake_http.requests] == [f"whatsapp:{PHONE}"]

    assert rt.replay_spool() == 1
    assert rt.spool.pending() == []
    with rt.transaction() as s:
        statuses = s.scalars(select(Message.status).where(
            Message.provider_id == provider_id)).all()
    assert statuses == ["failed"]
    sms = [r.data for r in fake_http.requests if r.data["To"] == PHONE]
    assert len(sms) == 1  # the SMS fallback went out after all
    assert rt.replay_spool() == 0


def test_a_spooled_message_that_keeps_failing_with_the_database_up_is_set_aside(
        client, rt, fake_http, monkeypatch):
    import bot.services.receiving as receiving

    enrol(rt)
    with database_down(rt):
        texted(client, "first, and cursed")
        texted(client, "second")
    cursed, second = rt.spool.pending()
    real = receiving.store_and_handle

    def failing_for_the_first(rt_, msg):
        if msg.body == "first, and cursed":
            raise ValueError("something in this message breaks handling")
        return real(rt_, msg)

    monkeypatch.setattr(receiving, "store_and_handle", failing_for_the_first)
    assert rt.replay_spool() == 0  # tried, the database answers: try again later
    assert rt.replay_spool() == 0
    assert rt.spool.set_aside_count() == 0
    assert rt.replay_spool() == 1  # third failure: set aside, and the next one goes in
    assert rt.spool.pending() == [] and rt.spool.set_aside_count() == 1
    assert count(rt, Message, Message.body == "second") == 1
    body = client.get("/healthz").get_json()
    assert body["status"] == "degraded" and body["spool_set_aside"] == 1
    assert any("set aside" in p for p in body["problems"])


def test_a_file_that_is_not_a_message_is_set_aside_and_holds_up_nothing(client, rt, fake_http):
    enrol(rt)
    with database_down(rt):
        texted(client, "hello")
    rt.spool.directory.joinpath("00000000T000000000000-junk.json").write_text("null")
    assert rt.replay_spool() == 1  # the real message went in
    assert rt.spool.pending() == [] and rt.spool.set_aside_count() == 1


def test_a_file_another_replayer_took_is_skipped(client, rt, fake_http, monkeypatch):
    enrol(rt)
    with database_down(rt):
        texted(client, "hello")
    [real] = rt.spool.pending()
    gone = real.with_name("00000000T000000000000-gone.json")  # listed, then taken by another
    monkeypatch.setattr(type(rt.spool), "pending", lambda self: [gone, real])
    assert rt.replay_spool() == 1


def test_a_file_spooled_as_the_replayer_stops_is_not_stranded(client, rt, fake_http,
                                                              monkeypatch):
    """The replayer saw an empty spool and is about to stop just as a request spools a message
    and asks for a replayer: one of them must replay it."""
    import threading

    from bot.services.inbound import InboundMessage
    from bot.services.spool import Spool

    enrol(rt)
    rt.dispatch_mode = "background"
    rt.spool_retry_seconds = 0.01
    real_pending = Spool.pending
    calls = []

    def pending(self):
        calls.append(1)
        if len(calls) == 2:  # the replayer's last look: the spool is empty...
            # ...and meanwhile a request (another thread) spools a message, as spool_inbound
            # does, and asks for a replayer
            rt.spool.put(InboundMessage(channel="sms", sender=PHONE, body="hello",
                                        provider_id=sid(), received_at=rt.clock.now()))
            starter = threading.Thread(target=rt.start_spool_replayer)
            starter.start()
            starter.join(0.5)
            return []
        return real_pending(self)

    monkeypatch.setattr(Spool, "pending", pending)
    rt.start_spool_replayer()
    deadline = time.monotonic() + 10
    while count(rt, Message, Message.direction == "in") == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert count(rt, Message, Message.direction == "in") == 1


def test_a_patients_messages_go_in_in_the_order_sent_across_the_end_of_an_outage(
        client, rt, fake_http, clock):
    """STOP texted during the outage, START just after it, before any replay: the patient ends
    opted in, as they asked last, and the messages are stored in the order sent."""
    from bot.store.models import Patient

    patient_id = enrol(rt)
    other = "+447700900555"
    enrol(rt, phone=other)
    with database_down(rt):
        texted(client, "STOP")
        texted(client, "hello", sender=other)
    clock.advance(minutes=1)
    res = texted(client, "START")  # the database is back; no replay has run yet
    assert res.status_code == 200
    with rt.transaction() as s:
        assert s.get(Patient, patient_id).status == "active"
        assert [m.body for m in s.scalars(select(Message).where(
            Message.direction == "in", Message.address == PHONE).order_by(Message.id))] == [
            "STOP", "START"]
    # The other patient's message still waits for the replayer: not this request's business.
    [left] = rt.spool.pending()
    assert count(rt, Message, Message.address == other, Message.direction == "in") == 0
    assert rt.replay_spool() == 1 and rt.spool.pending() == [] and left.name


def test_a_sender_with_nothing_spooled_is_handled_at_once_while_others_wait(
        client, rt, fake_http):
    enrol(rt)
    other = "+447700900555"
    enrol(rt, phone=other)
    with database_down(rt):
        texted(client, "are you there", sender=other)
    assert texted(client, "hello").status_code == 200
    assert count(rt, Message, Message.direction == "in") == 1  # only this patient's
    assert len(rt.spool.pending()) == 1


def test_while_the_database_is_still_down_a_newer_message_is_spooled_behind_the_older(
        client, rt, fake_http):
    enrol(rt)
    with database_down(rt):
        texted(client, "hello")
        texted(client, "are you there")
    assert rt.replay_spool() == 2
    with rt.transaction() as s:
        assert [m.body for m in s.scalars(select(Message).where(
            Message.direction == "in").order_by(Message.id))] == ["hello", "are you there"]


def test_an_ack_kept_during_an_outage_is_applied_before_the_re_alerts_fall_due(
        client, rt, fake_http, clock):
    """The on-call nurse acknowledged in time, while the database was down: the scheduler's
    first tick after it comes back applies that ACK before it looks for re-alerts, so the next
    contact is not paged for an alert already taken."""
    from bot.scheduler import tick

    enrol(rt)
    texted(client, "my legs gave way")
    team = rt.settings.care_team
    oncall, coordinator = (team.contact(c).phone for c in team.escalation_chain[:2])
    with rt.transaction() as s:
        ref = s.scalars(select(Escalation.ref)).one()
    clock.advance(minutes=5)
    with database_down(rt):
        res = texted(client, f"ACK {ref}", sender=oncall)
        assert res.status_code == 200
    assert len(rt.spool.pending()) == 1
    clock.advance(minutes=team.ack_timeout_minutes)  # the re-alert would be due now
    tick(rt)
    with rt.transaction() as s:
        esc = s.scalars(select(Escalation)).one()
        assert esc.status == "acknowledged" and esc.acknowledged_by == team.contact(
            team.escalation_chain[0]).name
    assert sent_to(fake_http, coordinator) == []


def test_self_harm_during_an_outage_gets_the_crisis_text_at_once_never_lie_flat(
        client, rt, fake_http):
    enrol(rt)
    with database_down(rt):
        res = texted(client, "I'm going to kill myself tonight")
    twiml = res.get_data(as_text=True)
    assert rt.settings.clinic.crisis_line in twiml and "Lie flat" not in twiml
    rt.replay_spool()
    assert bodies(fake_http) == []  # not told a second time
    assert count(rt, Escalation) == 1


@contextmanager
def database_not_there_yet(tmp_path, backend):
    """A database URL that cannot be reached yet, and a function that brings it up (migrated)
    under the same URL: a SQLite path that is still a folder, or a PostgreSQL database that
    does not exist yet (as after a host reboot, with the web up before the database)."""
    import uuid

    from sqlalchemy import text

    from bot.store.migrate import upgrade
    from tests.conftest import PG_URL

    if backend == "sqlite":
        path = tmp_path / "late.db"
        path.mkdir()  # SQLite cannot open a folder: "unable to open database file"
        url = f"sqlite:///{path}"

        def bring_up():
            path.rmdir()
            upgrade(url)
        yield url, bring_up
        return
    name = f"checkin_late_{uuid.uuid4().hex[:8]}"
    url = PG_URL.rsplit("/", 1)[0] + "/" + name
    server = make_engine(PG_URL).execution_options(isolation_level="AUTOCOMMIT")

    def bring_up():
        with server.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}"))
        upgrade(url)
    try:
        yield url, bring_up
    finally:
        with server.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        server.dispose()


def test_a_web_worker_starts_while_the_database_is_down_and_catches_up_once_it_is_back(
        db_url, tmp_path, clock, messenger, fake_http, monkeypatch):
    """A host reboot that brings the web up before the database (or a worker restarted during
    an outage): the worker must start and keep patients' messages in the spool, not refuse to
    boot, which leaves nothing answering Twilio's webhooks for the whole outage."""
    from bot.config import DatabaseUnreachable, load_settings
    from bot.runtime import build_runtime
    from bot.web.app import create_app

    backend = "sqlite" if db_url.startswith("sqlite") else "postgresql"
    with database_not_there_yet(tmp_path, backend) as (url, bring_up):
        settings = load_settings(env={}, overrides={
            **TWILIO_SETTINGS, "database_url": url, "spool_dir": str(tmp_path / "spool")})
        try:  # a scheduler or an operator's command still says so and stops
            build_runtime(settings, clock=clock, messenger=messenger, dispatch_mode="inline")
            raise AssertionError("built on a database that is not there")
        except DatabaseUnreachable:
            pass
        rt = build_runtime(settings, clock=clock, messenger=messenger, dispatch_mode="inline",
                           database_may_be_down=True)
        rt.spool_retry_seconds = 0  # checks again at every look, not every few seconds
        try:
            app = create_app(rt)
            app.testing = True
            client = app.test_client()
            health = client.get("/healthz")
            assert health.status_code == 503 and health.get_json()["status"] == "down"
            res = texted(client, "my legs gave way and I wet myself")
            assert res.status_code == 200
            assert "this could be serious" in res.get_data(as_text=True)  # told at once
            assert len(rt.spool.pending()) == 1
            assert rt.replay_spool() == 0  # still down: nothing is lost, nothing moves

            bring_up()
            enrol(rt)
            assert rt.replay_spool() == 1  # the start-up checks run, then the message goes in
            assert count(rt, Escalation) == 1
            assert count(rt, Message, Message.direction == "in") == 1
            assert bodies(fake_http) == []  # the patient is not told a second time
            assert client.get("/healthz").status_code == 200
            texted(client, "1")
            assert count(rt, Message, Message.direction == "in") == 2  # the normal path again
        finally:
            rt.close()


class _LockTimeout(Exception):
    sqlstate = "55P03"  # PostgreSQL's lock_not_available, as psycopg says it


@pytest.mark.parametrize("body, level", [("my legs gave way and I wet myself", "emergency"),
                                         ("back pain is 9/10 and wakes me every night",
                                          "urgent")])
def test_a_red_flag_whose_handling_and_fallback_both_hit_the_database_is_escalated_later(
        client, rt, fake_http, monkeypatch, body, level):
    """A double fault: the patient's row is held elsewhere past lock_timeout, so handling the
    message raises and so does the failure path's recorder. The database answers (a ping
    works) but cannot take this message yet. An emergency's instruction goes at once in the
    TwiML; the message waits in the spool, and is escalated (once, the patient not told
    twice) when the row is free, however many replays find it still held: it must not be set
    aside as a file that fails with the database up, where no alert ever comes of it."""
    import bot.services.receiving as receiving

    pid = enrol(rt)

    def locked(*args, **kwargs):
        raise OperationalError("SELECT ... FOR UPDATE", {}, _LockTimeout(
            "canceling statement due to lock timeout"))

    monkeypatch.setattr(receiving, "_handle", locked)
    monkeypatch.setattr(receiving, "record_after_failure", locked)
    res = texted(client, body)
    assert res.status_code == 200
    with rt.transaction() as s:
        told = rt.ctx.text_for(s.get(Patient, pid), level)
    twiml = res.get_data(as_text=True)
    assert ("this could be serious" in twiml) == (level == "emergency")
    assert len(rt.spool.pending()) == 1 and count(rt, Message) == 0
    for _ in range(5):  # the row still held: each replay finds the database up
        assert rt.replay_spool() == 0
    assert len(rt.spool.pending()) == 1 and rt.spool.set_aside_count() == 0
    assert client.get("/healthz").get_json()["spooled_inbound"] == 1

    monkeypatch.undo()  # the lock is released
    assert rt.replay_spool() == 1
    assert rt.spool.pending() == [] and rt.spool.set_aside_count() == 0
    with rt.transaction() as s:
        [esc] = s.scalars(select(Escalation)).all()
        assert esc.level == level
        [status] = s.scalars(select(Message.status).where(Message.direction == "in")).all()
        assert status != "unprocessed"  # handled the normal way, once
    team = rt.settings.care_team
    assert len(sent_to(fake_http, team.contact(team.escalation_chain[0]).phone)) == 1
    assert bodies(fake_http) == ([] if level == "emergency" else [told])
