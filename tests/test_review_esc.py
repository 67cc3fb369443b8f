"""Review of escalations after the red flag: ACKs from the care team, their receipts, and a
red flag that meets an acknowledgement at the same moment."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select, text

from bot.config import ConfigError, load_settings
from bot.services import escalations
from bot.services.inbound import InboundMessage, handle_inbound_message
from bot.store.models import Message, OutboxItem
from tests.test_escalation_chain import _refuse_next_send_to
from tests.test_escalations import _enrol_another
from tests.test_escalations import escalations as all_escalations
from tests.test_red_flags_e2e import PHONE, alerts, chain_phones, enrol, texted
from tests.twilio_support import (  # noqa: F401 - fixtures
    TWILIO_SETTINGS,
    fake_http,
    messenger,
    settings_overrides,
)

GRACE = "+447700900124"
URGENT = "back pain is 9/10 and wakes me every night"
EMERGENCY = "my legs gave way and I wet myself"


def test_a_bare_ack_never_takes_an_alert_that_did_not_reach_that_contact(client, rt,
                                                                         fake_http):
    """"Ack" with no ref takes the one open alert sent to the contact. An alert to them that
    the carrier refused never reached them: a bare ACK (meant for an alert someone else took
    meanwhile) must not acknowledge it, stopping that patient's chain unseen."""
    enrol(rt)
    _enrol_another(rt, GRACE, "Grace Hopper")
    oncall, coordinator, _ = chain_phones(rt)
    texted(client, EMERGENCY)  # Ada's alert reaches the on-call nurse
    _refuse_next_send_to(fake_http, oncall)  # Grace's does not
    texted(client, "I can't feel my feet and I wet myself", sender=GRACE)
    ada, grace = all_escalations(rt)
    with rt.transaction() as s:
        assert s.scalars(select(Message.status).where(
            Message.escalation_id == grace.id, Message.kind == "alert")).all() == ["failed"]
    texted(client, f"ACK {ada.ref}", sender=coordinator)  # the coordinator took Ada's

    texted(client, "Ack, calling her now", sender=oncall)  # the nurse, about Ada
    assert [e.status for e in all_escalations(rt)] == ["acknowledged", "open"]
    assert alerts(fake_http, oncall)[-1] == (  # Ada's, the one that reached her: who took it
        f"Alert {ada.ref} was already acknowledged by MSCC coordinator.")


def test_a_contact_name_too_long_to_record_as_who_acknowledged_is_refused_at_start():
    """acknowledged_by holds 80 characters: a longer contact name made every ACK of theirs
    (text or call) fail to store on PostgreSQL, and the chain went on paging."""
    team = load_settings(env={}).care_team.model_dump()
    team["contacts"][0]["name"] = "On-call oncology nurse " + "(ward 7, bleep 4421) " * 3
    assert len(team["contacts"][0]["name"]) > 80
    with pytest.raises(ConfigError, match=r"care_team\.contacts\.0\.name"):
        load_settings(env={}, overrides={"care_team": team})
    team["contacts"][0]["name"] = "On-call nurse"
    team["contacts"][0]["id"] = "oncall-" + "x" * 80  # "staff:<id>" is an audit actor (80)
    with pytest.raises(ConfigError, match=r"care_team\.contacts\.0\.id"):
        load_settings(env={}, overrides={"care_team": team})


def test_a_red_flag_meeting_an_ack_of_its_escalation_opens_a_new_one(client, rt, fake_http,
                                                                      monkeypatch):
    """PostgreSQL: an emergency read the patient's urgent escalation as open while a nurse's
    ACK of it was committing, then upgraded it: the escalation stayed acknowledged, so the
    dispatcher cancelled the emergency alert and nobody heard of the emergency."""
    if not rt.settings.database_url.startswith("postgres"):
        pytest.skip("concurrent writers: PostgreSQL only (SQLite takes one writer at a time)")
    enrol(rt)
    oncall = chain_phones(rt)[0]
    texted(client, URGENT)
    [urgent] = all_escalations(rt)
    assert urgent.level == "urgent"

    ack_started = threading.Event()
    real = escalations.open_escalation_for

    def after_the_ack(*args, **kw):
        ack_started.wait(10)
        return real(*args, **kw)

    monkeypatch.setattr(escalations, "open_escalation_for", after_the_ack)
    failures: list[BaseException] = []

    def red_flag():
        try:
            with rt.transaction() as s:
                handle_inbound_message(s, rt.ctx, InboundMessage(
                    "sms", PHONE, EMERGENCY, provider_id="SM" + "7" * 32), rt.clock.now())
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    flag = threading.Thread(target=red_flag)
    with rt.transaction() as s:  # the nurse's ACK, not committed yet
        escalations.acknowledge(s, urgent.ref, "On-call nurse", rt.clock.now(), actor="test")
        s.flush()
        flag.start()
        ack_started.set()
        # The red flag reads the escalation once the ACK has locked it, and then waits for
        # this transaction's row lock (to write it, or to read it locked).
        with rt.engine.connect() as probe:
            for _ in range(1000):
                waiting = probe.execute(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND datname = current_database()")).scalar()
                probe.rollback()  # a fresh look each time, not the transaction's snapshot
                if waiting:
                    break
                threading.Event().wait(0.005)
            else:
                pytest.fail("the red flag never waited for the ACK's lock")
    flag.join(20)
    assert not flag.is_alive() and failures == []

    assert [(e.ref == urgent.ref, e.status, e.level) for e in all_escalations(rt)] == [
        (True, "acknowledged", "urgent"), (False, "open", "emergency")]
    second = all_escalations(rt)[1]
    with rt.transaction() as s:
        kinds = s.execute(select(OutboxItem.status).join(
            Message, Message.id == OutboxItem.message_id).where(
            Message.escalation_id == second.id, Message.kind == "alert")).scalars().all()
    assert kinds and "cancelled" not in kinds
    rt.dispatcher.dispatch_due()
    assert alerts(fake_http, oncall)[-1].startswith(f"EMERGENCY ref {second.ref}: ")


@pytest.mark.parametrize("reply", ["{ref}", "{ref}.", "ACK{ref}", "ack{ref} calling now",
                                   "Acknowledging {ref}", "acking {lower}"])
def test_the_ref_alone_or_run_into_ack_acknowledges_that_alert(client, rt, fake_http, reply):
    # The nurse told "Reply ACK ABCDE" at night types the ref alone, or without the space;
    # before, these got "Reply ACK followed by the alert ref" and the chain went on.
    enrol(rt)
    _enrol_another(rt, GRACE, "Grace Hopper")
    oncall = chain_phones(rt)[0]
    texted(client, EMERGENCY)
    texted(client, "I can't feel my feet and I wet myself", sender=GRACE)
    ada, grace = all_escalations(rt)
    texted(client, reply.format(ref=grace.ref, lower=grace.ref.lower()), sender=oncall)
    assert [e.status for e in all_escalations(rt)] == ["open", "acknowledged"]
    assert f"Alert {grace.ref} (Grace Hopper, " in alerts(fake_http, oncall)[-1]


@pytest.mark.parametrize("reply", ["{ref}?", "ABCDE", "{ref} on my way", "who is {ref}"])
def test_a_ref_asked_about_or_not_an_alerts_acknowledges_nothing(client, rt, fake_http, reply):
    enrol(rt)
    oncall = chain_phones(rt)[0]
    texted(client, EMERGENCY)
    [ada] = all_escalations(rt)
    if ada.ref == "ABCDE":  # pragma: no cover - one chance in 33 million
        pytest.skip("the random ref is the made-up one")
    texted(client, reply.format(ref=ada.ref), sender=oncall)
    assert [e.status for e in all_escalations(rt)] == ["open"]
    assert "Nothing was acknowledged" in alerts(fake_http, oncall)[-1]


def test_a_five_letter_word_from_a_care_team_phone_enrolled_as_a_patient_is_the_patients(
        client, rt, fake_http):
    # "THANK" has the shape of a ref: from a phone that is both, it is an ACK only if it is
    # an alert's ref; otherwise it is the patient's text, as before.
    enrol(rt)
    oncall = chain_phones(rt)[0]
    _enrol_another(rt, oncall, "Nurse Jo")
    texted(client, EMERGENCY)
    [ada] = all_escalations(rt)
    told = len(alerts(fake_http, oncall))
    texted(client, "Thank", sender=oncall)
    assert [e.status for e in all_escalations(rt)] == ["open"]
    assert not any("Nothing was acknowledged" in a for a in alerts(fake_http, oncall)[told:])
    texted(client, ada.ref, sender=oncall)
    assert [e.status for e in all_escalations(rt)] == ["acknowledged"]


def test_a_bare_ack_for_an_alert_someone_else_took_says_who_took_it(client, rt, fake_http):
    """The on-call nurse was alerted; the coordinator took the alert first. The nurse's bare
    "Ack" was answered "No open alert was sent to this number, so nothing was acknowledged":
    untrue (one was) and alarming at 3 a.m. (is the patient covered?). It now says who took
    it, as an ACK naming the ref does. A stray ACK long after, or from a contact never
    alerted, still gets the plain answer."""
    enrol(rt)
    oncall, coordinator, consultant = chain_phones(rt)
    texted(client, EMERGENCY)
    [esc] = all_escalations(rt)
    texted(client, f"ACK {esc.ref}", sender=coordinator)
    texted(client, "Ack, calling him now", sender=oncall)
    assert alerts(fake_http, oncall)[-1] == (
        f"Alert {esc.ref} was already acknowledged by MSCC coordinator.")
    assert [e.status for e in all_escalations(rt)] == ["acknowledged"]
    texted(client, "ack", sender=consultant)  # never alerted about it
    assert alerts(fake_http, consultant)[-1].startswith("No open alert was sent to this")
    rt.clock.advance(days=2)
    texted(client, "ack", sender=oncall)  # two days later: not about that alert
    assert alerts(fake_http, oncall)[-1].startswith("No open alert was sent to this number")
