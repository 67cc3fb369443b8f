"""A patient's message the bot could not handle is never simply dropped: a passing database
error is retried, STOP and START are honoured whatever happens, and what stays unhandled is
shown to the on-call until a person has read it."""

from __future__ import annotations

import json

from click.testing import CliRunner
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from bot.cli import main
from bot.services import conversations, health
from bot.store.models import AuditLog, Message, Patient
from tests.test_webhooks import PHONE, enrol, texted
from tests.twilio_support import (  # noqa: F401 - fixtures
    TWILIO_SETTINGS,
    fake_http,
    messenger,
    sent_to,
    settings_overrides,
)


def _fail_first(monkeypatch, exc, times=1, name="interrupt_active"):
    real = getattr(conversations, name)
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) <= times:
            raise exc
        return real(*args, **kwargs)

    monkeypatch.setattr(conversations, name, flaky)
    return calls


def _stored(rt, body):
    with rt.transaction() as s:
        return s.scalars(select(Message.status).where(
            Message.direction == "in", Message.body == body)).one()


def _patient_status(rt, pid):
    with rt.transaction() as s:
        return s.get(Patient, pid).status


class _Deadlock(Exception):
    sqlstate = "40P01"  # as psycopg's DeadlockDetected says it


def test_a_deadlock_is_retried_and_the_stop_applied(client, rt, fake_http, monkeypatch):
    pid = enrol(rt)
    calls = _fail_first(monkeypatch, OperationalError("UPDATE", {}, _Deadlock("deadlock")))
    assert texted(client, "STOP").status_code == 200
    assert len(calls) == 2
    assert _stored(rt, "STOP") == "received"
    assert _patient_status(rt, pid) == "opted_out"
    assert "no more messages" in sent_to(fake_http, PHONE)[-1]["Body"]


def test_a_lost_connection_is_not_retried_but_the_stop_still_applied(client, rt, fake_http,
                                                                     monkeypatch):
    """The database may be going away: no second wait before the fallback (and the spool)."""
    pid = enrol(rt)
    calls = _fail_first(monkeypatch, OperationalError("UPDATE", {}, Exception("server closed "
                                                                              "the connection")))
    assert texted(client, "STOP").status_code == 200
    # Once in the handling that failed (not retried: stored unprocessed), once on the
    # failure path, which ends the conversation too.
    assert len(calls) == 2
    assert _stored(rt, "STOP") == "unprocessed"
    assert _patient_status(rt, pid) == "opted_out"


def test_stop_and_help_from_a_number_not_enrolled_are_honoured_when_handling_fails(
        client, rt, fake_http, monkeypatch):
    from bot.services import inbound
    from bot.services.inbound import number_opted_out

    stranger = "+447700900555"
    monkeypatch.setattr(inbound, "carrier_keyword", _broken_once(inbound.carrier_keyword))
    texted(client, "STOP", sender=stranger)
    with rt.transaction() as s:
        assert number_opted_out(s, stranger)
        assert s.scalars(select(Message.status).where(Message.address == stranger,
                                                      Message.direction == "in")).one() \
            == "unprocessed"
    assert "no more messages" in sent_to(fake_http, stranger)[-1]["Body"]


def _broken_once(fn):
    calls = []

    def once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug")
        return fn(*args, **kwargs)

    return once


def test_a_stop_that_cannot_be_handled_is_still_honoured(client, rt, fake_http, monkeypatch):
    pid = enrol(rt)
    _fail_first(monkeypatch, RuntimeError("a bug"), times=5)
    assert texted(client, "Stop").status_code == 200
    assert _stored(rt, "Stop") == "unprocessed"
    assert _patient_status(rt, pid) == "opted_out"
    assert "no more messages" in sent_to(fake_http, PHONE)[-1]["Body"]
    monkeypatch.undo()
    texted(client, "START")  # and back, through the normal path
    assert _patient_status(rt, pid) == "active"


def test_unhandled_messages_show_on_healthz_until_read(client, rt, fake_http, monkeypatch,
                                                       db_url):
    enrol(rt)
    _fail_first(monkeypatch, RuntimeError("a bug in a flow"), times=5,
                name="handle_patient_text")
    texted(client, "my pain is 6 today")
    monkeypatch.undo()
    with rt.transaction() as s:
        report = health.report(s, rt.settings, rt.clock.now())
    assert report["unprocessed_inbound"] == 1
    assert any("could not be handled" in p for p in report["problems"])
    assert PHONE not in json.dumps(report) and "pain" not in json.dumps(report)

    monkeypatch.setenv("CHECKIN_DATABASE_URL", db_url)
    for var in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "CHECKIN_CONFIG", "CHECKIN_MESSENGER"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr("bot.runtime.SystemClock", lambda: rt.clock)
    runner = CliRunner()
    listed = runner.invoke(main, ["unprocessed", "--json"])
    assert listed.exit_code == 0, listed.output
    [row] = [json.loads(line) for line in listed.output.splitlines()]
    assert (row["phone"], row["body"], row["patient"]) == (PHONE, "my pain is 6 today",
                                                           "Ada Lovelace")
    assert runner.invoke(main, ["unprocessed", "--read", str(row["message_id"])]).exit_code == 2
    done = runner.invoke(main, ["unprocessed", "--read", str(row["message_id"]),
                                "--by", "Nurse Jo"])
    assert done.exit_code == 0, done.output
    assert runner.invoke(main, ["unprocessed"]).output == "no unprocessed messages\n"
    with rt.transaction() as s:
        assert health.report(s, rt.settings, rt.clock.now())["unprocessed_inbound"] == 0
        assert s.scalar(select(AuditLog.actor).where(AuditLog.action == "inbound.read")) \
            .startswith("cli:")


def test_start_from_a_number_not_enrolled_is_answered_when_handling_fails(client, rt, fake_http,
                                                                         monkeypatch):
    from bot.services import inbound

    stranger = "+447700900556"
    monkeypatch.setattr(inbound, "carrier_keyword", _broken_once(inbound.carrier_keyword))
    texted(client, "START", sender=stranger)
    [reply] = sent_to(fake_http, stranger)
    assert "don't have this number" in reply["Body"]


def test_an_ack_that_hits_a_passing_database_error_is_retried_once_and_counts(
        client, rt, fake_http, monkeypatch):
    """A care-team ACK goes through the same path as a patient's text: a deadlock (or a
    serialization failure, or SQLite's busy writer) is handled again from the start, once,
    so the nurse's ACK stops the chain instead of being answered with staff_failed."""
    from bot.services import inbound
    from bot.store.models import Escalation

    enrol(rt)
    texted(client, "my legs gave way")
    oncall = rt.settings.care_team.contact(rt.settings.care_team.escalation_chain[0]).phone
    with rt.transaction() as s:
        ref = s.scalars(select(Escalation.ref)).one()
    real, calls = inbound.acknowledge, []

    def deadlocked_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("SELECT", {}, _Deadlock("deadlock"))
        return real(*args, **kwargs)

    monkeypatch.setattr(inbound, "acknowledge", deadlocked_once)
    assert texted(client, f"ACK {ref}", sender=oncall).status_code == 200
    assert len(calls) == 2
    assert _stored(rt, f"ACK {ref}") == "received"
    with rt.transaction() as s:
        assert s.scalars(select(Escalation.status)).one() == "acknowledged"
    assert sent_to(fake_http, oncall)[-1]["Body"] == (
        f"Thank you, On-call oncology nurse. Alert {ref} (Ada Lovelace, +447700900123) is "
        "acknowledged; no one else will be alerted.")


def test_an_ack_that_cannot_be_handled_tells_the_nurse_it_did_not_count(client, rt, fake_http,
                                                                        monkeypatch):
    """The nurse's ACK hit an error (a bug, a lock timeout): it is kept as unprocessed, and she
    is told at once that nothing was acknowledged, rather than hearing nothing while the chain
    pages the next contact."""
    from bot.services import inbound
    from bot.store.models import Escalation

    enrol(rt)
    texted(client, "my legs gave way")
    oncall = rt.settings.care_team.contact(rt.settings.care_team.escalation_chain[0]).phone
    with rt.transaction() as s:
        ref = s.scalars(select(Escalation.ref)).one()

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(inbound, "acknowledge", broken)
    assert texted(client, f"ACK {ref}", sender=oncall).status_code == 200
    assert _stored(rt, f"ACK {ref}") == "unprocessed"
    with rt.transaction() as s:
        assert s.scalars(select(Escalation.status)).one() == "open"
    assert sent_to(fake_http, oncall)[-1]["Body"] == (
        "Sorry, your ACK could not be recorded, so nothing was acknowledged and the alerts go "
        "on. Please send it again, or acknowledge on the dashboard.")
