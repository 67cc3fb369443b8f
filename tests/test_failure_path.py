"""When handling an inbound message raises (a bug; its transaction rolls back), the failure
path (inbound.record_after_failure) keeps the message "unprocessed" for the team and still
does what must never be lost: keywords applied and answered, red flags escalated, and the
sender told what to do, as on the normal path and never twice."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from bot.services.context import readable_phone
from bot.services.conversations import active_conversation, start_flow
from bot.services.dispatcher import RECLAIM_GRACE
from bot.store.models import Escalation, Message, Patient
from tests.test_red_flags_e2e import alerts, chain_phones
from tests.test_split_texts import STRANGER, handling_fails
from tests.test_webhooks import PHONE, bodies, enrol, texted
from tests.twilio_support import (  # noqa: F401 - fixtures
    fake_http,
    messenger,
    sent_to,
    settings_overrides,
)

URGENT = "back pain is 9/10 and wakes me every night"
EMERGENCY = "my legs gave way and I wet myself"
QUESTION = "what if my legs go numb?"


def failed_text(client, monkeypatch, rt, body, sender, channel="sms") -> None:
    """`body` from `sender`, handled by the failure path: stored unprocessed."""
    handling_fails(monkeypatch)
    assert texted(client, body, sender=sender, channel=channel).status_code == 200
    with rt.transaction() as s:
        assert s.scalars(select(Message.status).where(
            Message.direction == "in", Message.address == sender)).all()[-1] == "unprocessed"


def escalations(rt) -> list[tuple[str, str | None]]:
    with rt.transaction() as s:
        return [(e.level, e.phone) for e in s.scalars(select(Escalation))]


# -- a number that is not enrolled --------------------------------------------------------------

@pytest.mark.parametrize("channel", ["sms", "whatsapp"])
@pytest.mark.parametrize("body, level", [(URGENT, "urgent"), (EMERGENCY, "emergency")])
def test_a_red_flag_from_a_number_not_enrolled_is_escalated_and_answered_when_handling_fails(
        client, rt, fake_http, monkeypatch, body, level, channel):
    """As on the normal path (inbound._unknown_sender): the instruction for its tier goes to
    the sender, once, and the team is alerted to call the number."""
    failed_text(client, monkeypatch, rt, body, STRANGER, channel)
    assert escalations(rt) == [(level, STRANGER)]
    assert bodies(fake_http, STRANGER) == [rt.ctx.text_for(None, level, name="Hello")]
    [alert] = alerts(fake_http, chain_phones(rt)[0])
    assert STRANGER in alert


def test_a_text_from_a_number_not_enrolled_gets_the_polite_reply_when_handling_fails(
        client, rt, fake_http, monkeypatch):
    failed_text(client, monkeypatch, rt, "hi, is this the clinic?", STRANGER)
    [polite] = bodies(fake_http, STRANGER)
    assert polite == rt.ctx.text_for(None, "not_enrolled")
    assert readable_phone(rt.settings.clinic.phone) in polite
    assert escalations(rt) == []


def test_a_question_from_a_number_not_enrolled_gets_the_safety_net_when_handling_fails(
        client, rt, fake_http, monkeypatch):
    failed_text(client, monkeypatch, rt, QUESTION, STRANGER)
    assert bodies(fake_http, STRANGER) == [rt.ctx.text_for(None, "not_enrolled"),
                                           rt.ctx.text_for(None, "safety_net")]
    assert escalations(rt) == []


# -- a patient ----------------------------------------------------------------------------------

def patient_status(rt, pid: int) -> str:
    with rt.transaction() as s:
        return s.get(Patient, pid).status


@pytest.mark.parametrize("word", ["YES", "yes", "Si"])
def test_yes_while_opted_out_opts_back_in_when_handling_fails(client, rt, fake_http,
                                                               monkeypatch, word):
    """As on the normal path, YES from an opted-out patient is START."""
    pid = enrol(rt, status="opted_out")
    failed_text(client, monkeypatch, rt, word, PHONE)
    assert patient_status(rt, pid) == "active"
    with rt.transaction() as s:
        assert bodies(fake_http) == [rt.ctx.text_for(s.get(Patient, pid), "started")]


@pytest.mark.parametrize("word", ["START", "YES"])
def test_opting_back_in_before_consent_does_not_promise_check_ins_when_handling_fails(
        client, rt, fake_http, monkeypatch, word):
    """A patient who never agreed to check-ins: the normal path asks the consent question (the
    welcome). The failure path must not say "your check-ins will start again": it says their
    message is saved and to reply YES for check-ins, as awaiting_consent does."""
    pid = enrol(rt, status="opted_out", consented=False)
    failed_text(client, monkeypatch, rt, word, PHONE)
    assert patient_status(rt, pid) == "active"
    with rt.transaction() as s:
        assert bodies(fake_http) == [rt.ctx.text_for(s.get(Patient, pid), "awaiting_consent")]
        assert s.get(Patient, pid).consent_at is None


@pytest.mark.parametrize("status", ["active", "opted_out", "discharged"])
def test_a_patients_question_about_a_red_flag_gets_the_safety_net_when_handling_fails(
        client, rt, fake_http, monkeypatch, status):
    """Rule 5 of the clinical brief: "what if my legs go numb?" deserves the safety net, not
    silence, whatever the patient's state; nobody is alerted (nothing is happening)."""
    pid = enrol(rt, status=status)
    failed_text(client, monkeypatch, rt, QUESTION, PHONE)
    with rt.transaction() as s:
        assert bodies(fake_http) == [rt.ctx.text_for(s.get(Patient, pid), "safety_net")]
    assert escalations(rt) == []


# -- sending right after the commit fails ---------------------------------------------------------

@pytest.mark.parametrize("handling", ["works", "fails"])
def test_an_emergency_stored_and_answered_is_sent_once_when_sending_at_once_fails(
        client, rt, fake_http, clock, monkeypatch, handling):
    """The message is stored and its instruction and alert written: if sending them right
    after the commit raises, the scheduler's sweep sends them. The webhook must not take that
    error for a database outage: spooled, the message's emergency would be answered again in
    the TwiML (and the on-call alerted again), and its replay ignored as a duplicate."""
    pid = enrol(rt)
    if handling == "fails":
        handling_fails(monkeypatch)

    def broken(*args, **kwargs):
        raise RuntimeError("sending at once failed")

    monkeypatch.setattr(rt.dispatcher, "send_jobs", broken)
    monkeypatch.setattr(rt.dispatcher, "dispatch_ids", broken)
    res = texted(client, EMERGENCY)
    assert res.status_code == 200 and b"<Message" not in res.data
    assert rt.spool.pending() == []
    monkeypatch.undo()
    # Rows claimed to send at once go back to the sweep when their claim runs out.
    clock.advance(seconds=rt.settings.outbox.claim_seconds + RECLAIM_GRACE.total_seconds() + 1)
    rt.dispatcher.dispatch_due()
    with rt.transaction() as s:
        assert bodies(fake_http) == [rt.ctx.text_for(s.get(Patient, pid), "emergency")]
    assert len(alerts(fake_http, chain_phones(rt)[0])) == 1


# -- the conversation the patient was in ---------------------------------------------------------

@pytest.mark.parametrize("body", ["STOP", EMERGENCY])
def test_stop_or_an_emergency_ends_the_check_in_when_handling_fails(client, rt, fake_http,
                                                                     clock, monkeypatch, body):
    """As on the normal path: no reminder of the check-in's question after STOP (or after the
    emergency instruction), and the patient's next text is no answer to it."""
    pid = enrol(rt)
    with rt.transaction() as s:
        start_flow(s, rt.ctx, s.get(Patient, pid), "checkin", clock.now())
    failed_text(client, monkeypatch, rt, body, PHONE)
    with rt.transaction() as s:
        assert active_conversation(s, pid) is None


# -- a care-team phone ------------------------------------------------------------------------------

def test_an_ack_from_a_care_team_phone_enrolled_as_a_patient_that_fails_tells_the_nurse(
        client, rt, fake_http, monkeypatch):
    """The normal path takes an ACK from a care-team phone that is also a patient's (a nurse
    trying the bot) as the nurse's. When it fails she must be told it did not count, as a
    care-team phone that is no patient's is: the chain pages on."""
    from bot.services import inbound

    enrol(rt)
    texted(client, EMERGENCY)
    oncall = chain_phones(rt)[0]
    enrol(rt, phone=oncall)
    with rt.transaction() as s:
        ref = s.scalars(select(Escalation.ref)).one()

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(inbound, "acknowledge", broken)
    before = len(alerts(fake_http, oncall))
    assert texted(client, f"ACK {ref}", sender=oncall).status_code == 200
    with rt.transaction() as s:
        assert s.scalars(select(Escalation.status)).one() == "open"
        assert s.scalars(select(Message.status).where(
            Message.direction == "in", Message.address == oncall)).one() == "unprocessed"
    assert alerts(fake_http, oncall)[before:] == [rt.ctx.texts.render("staff_failed", "en")]


class TestLoopGuard:
    @pytest.fixture
    def settings_overrides(self):
        from tests.twilio_support import TWILIO_SETTINGS

        return {**TWILIO_SETTINGS, "loop_guard": {"max_replies": 3, "window_minutes": 10}}

    def test_an_auto_responder_not_enrolled_is_not_answered_forever_when_handling_fails(
            self, client, rt, fake_http, monkeypatch):
        """The failure path answers a number that is not enrolled (the polite reply): the
        loop guard must hold those replies there too, or an auto-responder and the bot text
        each other for as long as handling fails."""
        from bot.services import inbound

        def broken(*args, **kwargs):
            raise RuntimeError("a bug")

        monkeypatch.setattr(inbound, "_act_on", broken)
        for _ in range(8):
            texted(client, "I am away from my phone, I will reply later", sender=STRANGER)
        assert 3 <= len(bodies(fake_http, STRANGER)) <= 4


# -- HELP while a check-in question waits -------------------------------------------------------

@pytest.mark.parametrize("word", ["HELP", "info", "Ayuda"])
def test_help_mid_check_in_asks_the_question_again_when_handling_fails(
        client, rt, fake_http, monkeypatch, word):
    """As on the normal path: the help text, then the question waiting, so the patient sees
    what to answer next; no try used, and their next answer still goes to the question."""
    from tests.test_webhooks import _asked_mid_checkin, _conversation_state, _question

    pid, node = _asked_mid_checkin(rt, client)
    before = _conversation_state(rt, pid)
    fake_http.requests.clear()
    failed_text(client, monkeypatch, rt, word, PHONE)
    with rt.transaction() as s:
        assert bodies(fake_http) == [rt.ctx.text_for(s.get(Patient, pid), "help"),
                                     _question(rt, "checkin", node)]
    assert _conversation_state(rt, pid) == before
    monkeypatch.undo()
    texted(client, "3")
    from bot.store.models import Answer
    with rt.transaction() as s:
        assert s.scalars(select(Answer.value).where(Answer.patient_id == pid)).all() == [3]


def test_help_after_stop_asks_no_question_when_handling_fails(client, rt, fake_http,
                                                              monkeypatch):
    from tests.test_webhooks import _asked_mid_checkin

    _asked_mid_checkin(rt, client)
    texted(client, "STOP")
    fake_http.requests.clear()
    failed_text(client, monkeypatch, rt, "HELP", PHONE)
    assert bodies(fake_http) == [rt.ctx.text_for(None, "help")]


def test_help_is_answered_when_asking_the_question_again_fails_too(client, rt, fake_http,
                                                                   monkeypatch):
    """The question asked again is the extra: if it is what fails, the help text still goes."""
    from bot.services import conversations
    from tests.test_webhooks import _asked_mid_checkin

    _asked_mid_checkin(rt, client)
    fake_http.requests.clear()

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(conversations, "ask_again", broken)
    failed_text(client, monkeypatch, rt, "HELP", PHONE)
    assert bodies(fake_http) == [rt.ctx.text_for(None, "help")]


# -- a care-team phone's text that is no ACK ------------------------------------------------------

@pytest.mark.parametrize("body", ["on my way", EMERGENCY])
def test_a_care_team_text_that_is_no_ack_gets_the_usage_reply_when_handling_fails(
        client, rt, fake_http, monkeypatch, body):
    """The normal path answers a care-team phone's text that is no ACK with how to
    acknowledge (staff_usage: nothing was acknowledged, the alerts go on). The failure path
    left it unanswered: a nurse who typed the ACK wrong heard nothing."""
    oncall = chain_phones(rt)[0]
    texted(client, body, sender=oncall)
    normal = alerts(fake_http, oncall)
    assert normal == [rt.ctx.texts.render("staff_usage", "en")]
    fake_http.requests.clear()
    failed_text(client, monkeypatch, rt, body, oncall)
    assert alerts(fake_http, oncall) == normal
    assert escalations(rt) == []


# -- the failure path itself fails (a bug both paths trip), the database up ------------------------

@pytest.mark.parametrize("body, level", [(URGENT, "urgent"), (EMERGENCY, "emergency")])
def test_a_red_flag_is_escalated_when_the_failure_path_fails_too(
        client, rt, fake_http, monkeypatch, body, level):
    """Handling raises, and so does record_after_failure (a bug in what both run, say the
    conversation's). The message went to the spool, failed every replay the same way and
    was set aside: an urgent flag reached nobody, an emergency only the TwiML. Now a last
    resort keeps the message unprocessed and acts on its red flag alone: the instruction for
    its tier, once, through the outbox, and the team alerted; nothing spooled."""
    import bot.services.receiving as receiving

    pid = enrol(rt)

    def broken(*args, **kwargs):
        raise RuntimeError("a bug in the failure path too")

    monkeypatch.setattr(receiving, "record_after_failure", broken)
    handling_fails(monkeypatch)
    res = texted(client, body)
    assert res.status_code == 200 and b"<Message" not in res.data
    assert rt.spool.pending() == []
    with rt.transaction() as s:
        assert s.scalars(select(Message.status).where(
            Message.direction == "in")).all() == ["unprocessed"]
        assert bodies(fake_http) == [rt.ctx.text_for(s.get(Patient, pid), level)]
    assert escalations(rt) == [(level, None)]
    assert len(alerts(fake_http, chain_phones(rt)[0])) == 1


def test_stop_is_honoured_when_the_failure_path_fails_too(client, rt, fake_http, monkeypatch):
    import bot.services.receiving as receiving

    pid = enrol(rt)

    def broken(*args, **kwargs):
        raise RuntimeError("a bug in the failure path too")

    monkeypatch.setattr(receiving, "record_after_failure", broken)
    handling_fails(monkeypatch)
    texted(client, "STOP")
    assert rt.spool.pending() == []
    assert patient_status(rt, pid) == "opted_out"
    with rt.transaction() as s:
        assert bodies(fake_http) == [rt.ctx.text_for(s.get(Patient, pid), "stopped")]
