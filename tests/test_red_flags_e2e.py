"""Red flags end to end: signed webhook and simulator -> instruction, escalation, alert chain, ACK."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest
import requests
from click.testing import CliRunner
from sqlalchemy import select
from werkzeug.serving import make_server

from bot.services.context import readable_phone
from bot.services.conversations import active_conversation, start_flow
from bot.services.patients import Enrolment, enrol_patient
from bot.store.models import Answer, AuditLog, Conversation, Escalation, Patient
from tests.twilio_signing import sign
from tests.twilio_support import (  # noqa: F401 - fixtures
    AUTH_TOKEN,
    PUBLIC_URL,
    fake_http,
    messenger,
    sent_to,
    settings_overrides,
)

PHONE = "+447700900123"
RED_FLAG = "my legs gave way and I wet myself"
INBOUND = "/webhooks/twilio/message"
_n = iter(range(10**6))


def texted(client, body, sender=PHONE):
    params = {"MessageSid": f"SM{next(_n):032d}", "From": sender, "To": "+447700900999",
              "Body": body}
    res = client.post(INBOUND, data=params, headers={
        "X-Twilio-Signature": sign(AUTH_TOKEN, PUBLIC_URL + INBOUND, params)})
    assert res.status_code == 200
    return res


def enrol(rt, consented=True, status="active"):
    with rt.transaction() as s:
        p = enrol_patient(s, Enrolment(PHONE, "Ada Lovelace", "Europe/London"),
                          languages=["en", "es"], now=rt.clock.now(), actor="test")
        p.status = status
        if consented:
            p.consent_at = rt.clock.now()
        return p.id


def chain_phones(rt):
    team = rt.settings.care_team
    return [team.contact(cid).phone for cid in team.escalation_chain]


def alerts(fake_http, phone):
    return [d["Body"] for d in sent_to(fake_http, phone)]


def escalation(rt):
    with rt.transaction() as s:
        return s.scalars(select(Escalation)).one()


def test_emergency_through_the_signed_webhook_then_the_chain_then_ack(client, rt, fake_http,
                                                                      clock):
    from bot.scheduler import tick

    enrol(rt)
    oncall, second, third = chain_phones(rt)
    texted(client, RED_FLAG)
    # The instruction went out before the webhook returned (inline dispatch in tests).
    [reply] = [d["Body"] for d in sent_to(fake_http, PHONE)]
    assert readable_phone(rt.settings.clinic.acute_oncology_hotline) in reply
    assert rt.settings.clinic.emergency_number in reply
    assert "Lie flat" in reply
    esc = escalation(rt)
    assert esc.level == "emergency" and esc.status == "open"
    assert {"limb_weakness", "bladder_dysfunction"} <= set(esc.flags)
    [alert] = alerts(fake_http, oncall)
    assert esc.ref in alert and "Ada" in alert and "legs gave way" in alert

    clock.advance(minutes=14)
    tick(rt)
    assert alerts(fake_http, second) == []
    clock.advance(minutes=1)
    tick(rt)
    assert len(alerts(fake_http, second)) == 1  # nobody acknowledged in 15 minutes
    clock.advance(minutes=15)
    tick(rt)
    assert len(alerts(fake_http, third)) == 1
    clock.advance(minutes=15)
    tick(rt)
    assert len(alerts(fake_http, oncall)) == 2  # round the chain again

    texted(client, f"ack {esc.ref}", sender=oncall)
    esc = escalation(rt)
    assert esc.status == "acknowledged"
    assert esc.acknowledged_by == rt.settings.care_team.contact("oncall").name
    assert "acknowledged" in alerts(fake_http, oncall)[-1]
    before = len(fake_http.requests)
    clock.advance(hours=2)
    tick(rt)
    assert len(fake_http.requests) == before  # the chain stopped
    with rt.transaction() as s:
        actions = s.scalars(select(AuditLog.action).where(
            AuditLog.subject_type == "escalation")).all()
    assert actions.count("escalation.alert") == 4 and "escalation.ack" in actions


def test_an_alert_still_waiting_to_go_is_not_sent_after_the_ack(client, rt, fake_http, clock):
    """A retry of an alert (or a copy of it) that had not gone yet when someone acknowledged:
    'no one else will be alerted', the acknowledgement said."""
    from bot.store.models import Message, OutboxItem

    enrol(rt)
    texted(client, RED_FLAG)
    oncall = chain_phones(rt)[0]
    with rt.transaction() as s:  # the alert is waiting out a 503, say
        item = s.scalars(select(OutboxItem).where(OutboxItem.kind == "alert")).one()
        item.status, item.next_attempt_at = "pending", clock.now()
        s.get(Message, item.message_id).status = "queued"
        item_id = item.id
    texted(client, f"ACK {escalation(rt).ref}", sender=oncall)
    before = len(alerts(fake_http, oncall))
    rt.dispatcher.dispatch_due()
    assert len(alerts(fake_http, oncall)) == before
    with rt.transaction() as s:
        item = s.get(OutboxItem, item_id)
        assert (item.status, item.last_error) == ("cancelled", "escalation acknowledged")


def test_an_unknown_ref_from_staff_gets_a_clear_answer(client, rt, fake_http):
    oncall = chain_phones(rt)[0]
    texted(client, "ACK ZZZZZ", sender=oncall)
    assert "No open alert ZZZZZ" in alerts(fake_http, oncall)[0]


def test_reply_is_sent_right_after_the_commit_from_a_running_server(app, rt, fake_http):
    """No scheduler and no dispatch poll run here: a reply that reaches the patient at all was
    sent by the request's own post-commit dispatch. (How fast that is, is measured by
    bench/webhook.py, "reply sent after": a timed assertion here would fail on a busy machine.)"""
    enrol(rt)
    rt.dispatch_mode = "background"  # as under gunicorn: sent right after the commit
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        params = {"MessageSid": "SM" + "9" * 32, "From": PHONE, "Body": RED_FLAG}
        requests.post(f"http://127.0.0.1:{server.server_port}{INBOUND}", data=params,
                      headers={"X-Twilio-Signature": sign(AUTH_TOKEN, PUBLIC_URL + INBOUND,
                                                          params)}, timeout=10)
        t0 = time.monotonic()
        while not sent_to(fake_http, PHONE) and time.monotonic() - t0 < 20:
            time.sleep(0.01)
        assert sent_to(fake_http, PHONE), "no reply: the post-commit dispatch did not send it"
    finally:
        server.shutdown()


@pytest.mark.parametrize("state", ["not_consented", "opted_out", "paused", "mid_reminder",
                                   "three_am"])
def test_emergency_is_answered_and_escalated_whatever_the_state(client, rt, fake_http, clock,
                                                                state):
    pid = enrol(rt, consented=state != "not_consented",
                status={"opted_out": "opted_out", "paused": "paused"}.get(state, "active"))
    if state == "mid_reminder":
        with rt.transaction() as s:
            start_flow(s, rt.ctx, s.get(Patient, pid), "reminder", clock.now(),
                       params={"reminder_text": "Time for your tablets."})
        fake_http.reset()
    if state == "three_am":
        clock.set(datetime(2026, 3, 3, 3, 0, tzinfo=UTC))  # 03:00 in London
    texted(client, "I cant feel my legs and my foot drags")
    [reply] = [d["Body"] for d in sent_to(fake_http, PHONE)]
    assert readable_phone(rt.settings.clinic.acute_oncology_hotline) in reply
    assert escalation(rt).level == "emergency"
    assert len(alerts(fake_http, chain_phones(rt)[0])) == 1
    with rt.transaction() as s:
        assert active_conversation(s, pid) is None  # any flow in progress was interrupted


def test_urgent_tells_the_patient_the_team_will_call_today(client, rt, fake_http):
    enrol(rt)
    texted(client, "back pain is 9/10 and wakes me every night")
    reply = [d["Body"] for d in sent_to(fake_http, PHONE)][0]
    assert "will call you today" in reply
    esc = escalation(rt)
    assert esc.level == "urgent" and "severe_pain" in esc.flags


def test_more_red_flags_are_added_and_a_higher_level_alerts_again(client, rt, fake_http):
    enrol(rt)
    oncall = chain_phones(rt)[0]
    texted(client, "pain is 8/10 today")
    assert len(alerts(fake_http, oncall)) == 1
    texted(client, "still 8/10 and it hurts when I cough")
    assert len(alerts(fake_http, oncall)) == 1  # added, not a new alert
    assert "cough_pain" in escalation(rt).flags
    texted(client, "now my legs feel like jelly")
    esc = escalation(rt)
    assert esc.level == "emergency" and "limb_weakness" in esc.flags
    assert len(alerts(fake_http, oncall)) == 2  # upgraded: alerted again
    texted(client, "and pins and needles in my feet")
    assert len(alerts(fake_http, oncall)) == 2
    with rt.transaction() as s:
        assert len(s.scalars(select(Escalation)).all()) == 1


@pytest.mark.parametrize("question", [
    "what should I do if my legs go numb?",
    "if my mum's legs go numb what do we do?",  # a carer asking about the patient
    "if my mum’s legs go numb what do we do",
])
def test_a_hypothetical_question_gets_the_safety_net_not_silence(client, rt, fake_http,
                                                                 question):
    enrol(rt)
    texted(client, question)
    reply = [d["Body"] for d in sent_to(fake_http, PHONE)][0]
    assert readable_phone(rt.settings.clinic.acute_oncology_hotline) in reply
    assert "Don't wait" in reply
    with rt.transaction() as s:
        assert s.scalars(select(Escalation)).all() == []
    assert all(alerts(fake_http, phone) == [] for phone in chain_phones(rt))


@pytest.mark.parametrize("report", ["my husband's legs went numb this morning",
                                    "mum’s legs have gone weak",
                                    "her legs wont hold her up",  # third person
                                    "he cant control his bladder"])
def test_a_carer_reporting_it_happened_raises_the_emergency(client, rt, fake_http, report):
    enrol(rt)
    texted(client, report)
    assert escalation(rt).level == "emergency"
    assert alerts(fake_http, chain_phones(rt)[0])


# Whose symptom it is: a young child's gets the safety net and no alert; an animal's or a
# thing's is no red flag at all; the patient's own beside either is the emergency.
@pytest.mark.parametrize("text", ["my grandson wet the bed", "the baby pooed himself"])
def test_a_young_childs_symptom_gets_the_safety_net_not_the_alert(client, rt, fake_http, text):
    enrol(rt)
    texted(client, text)
    [reply] = [d["Body"] for d in sent_to(fake_http, PHONE)]
    assert reply.startswith("If you ever get new weakness") and "Don't wait" in reply
    assert readable_phone(rt.settings.clinic.acute_oncology_hotline) in reply
    with rt.transaction() as s:
        assert s.scalars(select(Escalation)).all() == []
    assert all(alerts(fake_http, phone) == [] for phone in chain_phones(rt))


@pytest.mark.parametrize("text", ["my dog cant walk properly", "the cat keeps falling off the sofa",
                                  "my car is wobbly"])
def test_an_animals_or_a_things_symptom_alerts_nobody(client, rt, fake_http, text):
    enrol(rt)
    texted(client, text)
    [reply] = [d["Body"] for d in sent_to(fake_http, PHONE)]
    assert "has been saved for your care team" in reply  # the routine acknowledgement
    with rt.transaction() as s:
        assert s.scalars(select(Escalation)).all() == []
    assert all(alerts(fake_http, phone) == [] for phone in chain_phones(rt))


@pytest.mark.parametrize("text", ["the dog tripped me and now I can't feel my legs",
                                  "my grandson wet the bed and so did I",
                                  "the baby is fine but my legs gave way"])
def test_the_patients_own_symptom_beside_a_child_or_an_animal_raises_the_emergency(
        client, rt, fake_http, text):
    enrol(rt)
    texted(client, text)
    assert escalation(rt).level == "emergency"
    assert alerts(fake_http, chain_phones(rt)[0])


def _enrol_spanish(rt):
    with rt.transaction() as s:
        p = enrol_patient(s, Enrolment(PHONE, "Lucia Perez", "Europe/Madrid", "sms", "es"),
                          languages=["en", "es"], now=rt.clock.now(), actor="test")
        p.consent_at = rt.clock.now()


# A carer texting in Spanish about the patient, in the third person: the emergency, in Spanish,
# and the care team alerted; their question about the patient gets the safety net
@pytest.mark.parametrize("report", ["mi madre no puede caminar",
                                    "a mi madre se le duermen las piernas",
                                    "mi marido se ha orinado encima"])
def test_a_spanish_carer_reporting_it_in_the_third_person_raises_the_emergency(
        client, rt, fake_http, report):
    _enrol_spanish(rt)
    texted(client, report)
    assert escalation(rt).level == "emergency"
    [reply] = [d["Body"] for d in sent_to(fake_http, PHONE)]
    assert "Llame ahora" in reply and rt.settings.clinic.emergency_number in reply
    assert alerts(fake_http, chain_phones(rt)[0])


def test_a_spanish_carers_question_about_the_patient_gets_the_safety_net(client, rt,
                                                                         fake_http):
    _enrol_spanish(rt)
    texted(client, "¿y si a mi madre se le duermen las piernas?")
    [reply] = [d["Body"] for d in sent_to(fake_http, PHONE)]
    assert "llame enseguida" in reply
    with rt.transaction() as s:
        assert s.scalars(select(Escalation)).all() == []


@pytest.mark.parametrize("report", ["I feel drunk when I walk but I haven't had a drink",
                                    "my walking is all over the place",
                                    "my legs don't go where I tell them"])
def test_walking_gone_wrong_in_a_patients_own_words_raises_the_emergency(client, rt, fake_http,
                                                                         report):
    enrol(rt)
    texted(client, report)
    reply = [d["Body"] for d in sent_to(fake_http, PHONE)][0]
    assert rt.settings.clinic.emergency_number in reply
    esc = escalation(rt)
    assert esc.level == "emergency" and esc.flags
    assert alerts(fake_http, chain_phones(rt)[0])


def test_feeling_drunk_after_wine_raises_nothing(client, rt, fake_http):
    enrol(rt)
    texted(client, "I felt drunk after two glasses of wine")
    with rt.transaction() as s:
        assert s.scalars(select(Escalation)).all() == []
    assert all(alerts(fake_http, phone) == [] for phone in chain_phones(rt))


# An answer given beside an emergency, in a clause of its own ("2, and I can't feel my legs"):
# the emergency is handled as any (the check-in ends), and the answer is the question's, as a
# pain score beside one is ("3 and I can't feel my legs"): the check-in history shows it.
_NOS_TO = {"pain_new": ["3"], "numbness": ["0"], "weakness": ["0", "no"],
           "fatigue": ["0"] + ["no"] * 7}  # the replies that bring the check-in to that question


def _at(client, rt, fake_http, clock, question):
    pid = enrol(rt)
    if question == "reminder_reply":
        with rt.transaction() as s:
            start_flow(s, rt.ctx, s.get(Patient, pid), "reminder", clock.now(),
                       params={"reminder_text": "Time for your tablets."})
    else:
        texted(client, "CHECKIN")
        for reply in _NOS_TO[question]:
            texted(client, reply)
    with rt.transaction() as s:
        conv = active_conversation(s, pid)
        assert conv.state["node"] == {"reminder_reply": "remind"}.get(question, question)
    fake_http.reset()
    return pid


def _answers(rt, pid, key):
    with rt.transaction() as s:
        return [a.value for a in s.scalars(select(Answer).where(
            Answer.patient_id == pid, Answer.question_key == key))]


@pytest.mark.parametrize(("question", "reply", "value"), [
    ("fatigue", "2, and I can't feel my legs", "a_little"),  # a numbered choice
    ("fatigue", "4 and my legs gave way", "quite_a_bit"),
    ("fatigue", "my legs gave way. 5", "very_much"),
    ("fatigue", "a little, and I can't feel my legs", "a_little"),  # the option's words
    ("reminder_reply", "2, and I can't feel my legs", "cannot"),
    ("reminder_reply", "1 but my legs went numb", "done"),
    ("pain_new", "yes and I can't feel my legs", "yes"),  # a yes/no question
    ("numbness", "yes, my legs gave way", "yes"),
    ("weakness", "my feet are numb. yes", "yes"),
])
def test_an_answer_beside_an_emergency_is_recorded_as_a_score_is(
        client, rt, fake_http, clock, question, reply, value):
    pid = _at(client, rt, fake_http, clock, question)
    texted(client, reply)
    esc = escalation(rt)
    assert esc.level == "emergency" and reply in esc.words
    assert alerts(fake_http, chain_phones(rt)[0])
    with rt.transaction() as s:
        assert active_conversation(s, pid) is None  # the emergency ended it, as before
        audited = s.scalars(select(AuditLog).where(
            AuditLog.action == "conversation.answer_beside_emergency")).one()
        assert audited.actor == f"patient:{pid}"
        assert audited.details["key"] == question and audited.details["value"] == value
    assert _answers(rt, pid, question) == [value]


@pytest.mark.parametrize(("question", "reply"), [
    ("fatigue", "2 and I can't feel my legs for 2 days"),  # which number answers?
    ("fatigue", "7 and I can't feel my legs"),  # not one of its options
    ("fatigue", "I can't feel my legs"),
    ("reminder_reply", "3, and I can't feel my legs"),
    ("reminder_reply", "can't walk, and my legs went numb"),  # "can't" is no answer here
    # a "no" to a red-flag question beside an emergency is no plain no: the emergency wins
    ("numbness", "no, but I can't feel my legs"),
    ("weakness", "no, my legs gave way"),
    ("weakness", "no, but I can't feel my feet"),
    ("weakness", "my feet are numb. no"),
    ("pain_new", "no and I can't feel my legs"),
    ("pain_new", "not sure and I can't feel my legs"),
])
def test_no_answer_is_taken_from_an_emergency_with_no_plain_answer_beside_it(
        client, rt, fake_http, clock, question, reply):
    pid = _at(client, rt, fake_http, clock, question)
    texted(client, reply)
    assert escalation(rt).level == "emergency"
    assert _answers(rt, pid, question) == []


def test_a_yes_beside_an_emergency_at_the_consent_question_is_not_recorded(
        client, rt, fake_http, clock):
    pid = enrol(rt, consented=False)
    with rt.transaction() as s:
        start_flow(s, rt.ctx, s.get(Patient, pid), "welcome", clock.now())
        assert active_conversation(s, pid).state["node"] == "consent"
    texted(client, "yes and I can't feel my legs")
    assert escalation(rt).level == "emergency"
    assert _answers(rt, pid, "consent") == []
    with rt.transaction() as s:
        assert s.get(Patient, pid).consent_at is None  # as before


def test_a_structured_yes_in_the_checkin_raises_the_flag_and_escalates(client, rt, fake_http):
    pid = enrol(rt)
    texted(client, "CHECKIN")
    for answer in ("0",):  # no pain: straight on to the neuro questions
        texted(client, answer)
    texted(client, "yes")  # new numbness or tingling?
    esc = escalation(rt)
    assert esc.level == "emergency" and esc.flags == ["sensory_loss"]
    bodies = [d["Body"] for d in sent_to(fake_http, PHONE)]
    assert any(readable_phone(rt.settings.clinic.acute_oncology_hotline) in b for b in bodies[-2:])
    with rt.transaction() as s:
        conv = s.scalars(select(Conversation).where(Conversation.patient_id == pid)
                         .order_by(Conversation.id.desc())).first()
        assert conv.flow_id == "checkin"


class TestSimulator:
    @pytest.fixture
    def settings_overrides(self):
        return {}

    @pytest.fixture
    def messenger(self):
        from bot.messaging.dev import DevMessenger

        return DevMessenger(echo=False)

    def test_red_flag_typed_in_the_simulator(self, client, rt, messenger):
        assert client.post("/simulator/api/patients",
                           json={"phone": "+44 7700 900123", "name": "Ada"}).status_code == 201
        res = client.post("/simulator/api/messages",
                          json={"phone": "+447700900123", "body": RED_FLAG})
        assert res.status_code == 201 and res.get_json()["level"] == "emergency"
        shown = client.get("/simulator/api/messages?phone=%2B447700900123").get_json()
        assert any(readable_phone(rt.settings.clinic.acute_oncology_hotline) in (m["body"] or "")
                   for m in shown if m["direction"] == "out")
        oncall, second = chain_phones(rt)[:2]
        assert [m.to for m in messenger.sent].count(oncall) == 1
        assert escalation(rt).status == "open"

        from bot.scheduler import tick

        rt.clock.advance(minutes=15)  # nobody acknowledged
        tick(rt)
        assert [m.to for m in messenger.sent].count(second) == 1
        ref = escalation(rt).ref
        res = client.post("/simulator/api/messages", json={"phone": second, "body": f"ACK {ref}"})
        assert res.status_code == 201
        assert escalation(rt).status == "acknowledged"
        sent = len(messenger.sent)
        rt.clock.advance(hours=1)
        tick(rt)
        assert len(messenger.sent) == sent  # the chain stopped


    @pytest.mark.parametrize(("question", "happening", "level"), [
        ("what if my legs go numb, what do I do?", "my legs have gone numb", "emergency"),
        ("what if I get a fever?", "I have a fever of 38.5", "urgent")])
    @pytest.mark.parametrize("enrolled", [True, False])
    def test_a_question_typed_in_the_simulator_is_reported_as_the_safety_net(
            self, client, rt, messenger, question, happening, level, enrolled):
        """Only the safety net went out and nobody was alerted: the simulator must not say
        "emergency" (or "urgent") to whoever is trying the bot."""
        if enrolled:
            client.post("/simulator/api/patients", json={"phone": PHONE, "name": "Ada"})
        res = client.post("/simulator/api/messages", json={"phone": PHONE, "body": question})
        assert res.status_code == 201 and res.get_json()["level"] == "safety_net"
        shown = client.get("/simulator/api/messages", query_string={"phone": PHONE}).get_json()
        assert "safety_net" in [m["kind"] for m in shown if m["direction"] == "out"]
        with rt.transaction() as s:
            assert s.scalars(select(Escalation)).all() == []
        assert {m.to for m in messenger.sent} == {PHONE}  # no alert to anyone
        # The same thing happening is the red flag it is.
        res = client.post("/simulator/api/messages", json={"phone": PHONE, "body": happening})
        assert res.get_json()["level"] == level == escalation(rt).level


    @pytest.mark.parametrize(("answers", "level"), [
        (["2", "no", "no", "no", "no", "no", "yes"], "emergency"),  # new numbness: YES
        (["2", "no", "no", "no", "no", "no", "banana", "banana", "banana"], "emergency"),
        (["2", "yse"], "urgent"),  # "Is this pain new?": a typed yes
    ])
    def test_a_checkin_answer_that_raises_a_red_flag_is_reported_at_its_level(
            self, client, rt, messenger, answers, level):
        """The simulator's `level` came from the triage of the text alone, so a check-in
        answer that opened an escalation (YES to "any new numbness?", its third reply not
        understood, a yes to "is this pain new?") was reported "routine". It is the level
        the handling reached; every other text of the check-in is routine."""
        client.post("/simulator/api/patients", json={"phone": PHONE, "name": "Ada"})
        levels = []
        for body in ["YES", "CHECKIN", *answers]:
            res = client.post("/simulator/api/messages", json={"phone": PHONE, "body": body})
            assert res.status_code == 201
            levels.append(res.get_json()["level"])
        assert levels == ["routine"] * (len(answers) + 1) + [level]
        assert escalation(rt).level == level


def test_escalations_cli_lists_acks_and_resolves(rt, client, fake_http, monkeypatch, settings):
    from bot.cli import main

    enrol(rt)
    texted(client, RED_FLAG)
    ref = escalation(rt).ref
    monkeypatch.setenv("CHECKIN_DATABASE_URL", settings.database_url)
    runner = CliRunner()
    listed = runner.invoke(main, ["escalations", "list", "--open", "--json"])
    assert listed.exit_code == 0, listed.output
    assert f'"ref": "{ref}"' in listed.output and '"level": "emergency"' in listed.output
    acked = runner.invoke(main, ["escalations", "ack", ref, "--by", "Nurse Jo"])
    assert acked.exit_code == 0 and "acknowledged by Nurse Jo" in acked.output
    resolved = runner.invoke(main, ["escalations", "resolve", ref, "--note", "MRI booked"])
    assert resolved.exit_code == 0
    assert runner.invoke(main, ["escalations", "list", "--open"]).output.strip() == \
        "no open escalations"
    esc = escalation(rt)
    assert (esc.status, esc.acknowledged_by, esc.resolution_note) == (
        "resolved", "Nurse Jo", "MRI booked")
    with rt.transaction() as s:
        actors = s.scalars(select(AuditLog.actor).where(
            AuditLog.action.in_(["escalation.ack", "escalation.resolve"]))).all()
    assert len(actors) == 2 and all(a.startswith("cli:") for a in actors)
    # Resolving it again is refused, saying so; the first note stays; the attempt is audited.
    again = runner.invoke(main, ["escalations", "resolve", ref, "--note", "second thoughts"])
    assert again.exit_code == 1
    assert f"{ref} was already resolved" in again.output and "MRI booked" in again.output
    assert escalation(rt).resolution_note == "MRI booked"
    with rt.transaction() as s:
        assert s.scalars(select(AuditLog.details).where(
            AuditLog.action == "escalation.resolve_refused")).one()["note"] == "second thoughts"


def test_resolving_by_cli_an_escalation_nobody_acknowledged_records_the_person(
        rt, client, fake_http, monkeypatch, settings):
    from bot.cli import main

    enrol(rt)
    texted(client, RED_FLAG)
    ref = escalation(rt).ref
    monkeypatch.setenv("CHECKIN_DATABASE_URL", settings.database_url)
    done = CliRunner().invoke(main, ["escalations", "resolve", ref, "--note", "seen in clinic",
                                     "--by", "Dr Patel"])
    assert done.exit_code == 0, done.output
    esc = escalation(rt)
    assert (esc.status, esc.acknowledged_by) == ("resolved", "Dr Patel")


def test_a_fault_while_handling_still_stores_the_message_and_escalates(
        client, rt, fake_http, monkeypatch):
    from bot.services import conversations
    from bot.store.models import Message

    enrol(rt)

    def broken(*args, **kwargs):
        raise RuntimeError("a bug in a flow")

    monkeypatch.setattr(conversations, "interrupt_active", broken)
    texted(client, RED_FLAG)  # still 200 for Twilio
    with rt.transaction() as s:
        stored = s.scalars(select(Message).where(Message.direction == "in")).one()
        assert (stored.body, stored.status) == (RED_FLAG, "unprocessed")
    [reply] = [d["Body"] for d in sent_to(fake_http, PHONE)]
    assert readable_phone(rt.settings.clinic.acute_oncology_hotline) in reply
    assert escalation(rt).level == "emergency"
    assert len(alerts(fake_http, chain_phones(rt)[0])) == 1


def test_a_red_flag_from_a_number_not_enrolled_still_gets_the_instruction(client, rt, fake_http):
    stranger = "+447700900777"
    texted(client, "its my husband, he cant feel his legs", sender=stranger)
    [reply] = [d["Body"] for d in sent_to(fake_http, stranger)]
    assert readable_phone(rt.settings.clinic.acute_oncology_hotline) in reply
    [alert] = alerts(fake_http, chain_phones(rt)[0])
    assert stranger in alert and "call them now" in alert
    texted(client, "hello, is this the clinic?", sender="+447700900778")
    [polite] = [d["Body"] for d in sent_to(fake_http, "+447700900778")]
    assert "don't have this number" in polite


# Thoughts of suicide or self-harm (outside the spinal brief): a reply written for them, never
# the spinal one; an intent, a plan or a time is the emergency tier.
CRISIS = "Samaritans 116 123"


def _no_spine(reply):
    for spinal in ("Lie flat", "spine", "weakness", "numbness", "bladder", "Quedese", "columna",
                   "debilidad", "vejiga"):
        assert spinal not in reply, reply


def test_self_harm_with_intent_gets_the_crisis_reply_and_the_emergency_chain(client, rt,
                                                                             fake_http, clock):
    from bot.scheduler import tick

    enrol(rt)
    oncall, second, _ = chain_phones(rt)
    texted(client, "I'm going to kill myself tonight")
    [reply] = [d["Body"] for d in sent_to(fake_http, PHONE)]
    _no_spine(reply)
    assert CRISIS in reply and "call 999 now" in reply and "care team" in reply
    esc = escalation(rt)
    assert esc.level == "emergency" and "self_harm_intent" in esc.flags
    [alert] = alerts(fake_http, oncall)
    assert alert.startswith("EMERGENCY") and "self harm intent" in alert
    assert "kill myself tonight" in alert
    clock.advance(minutes=15)  # the emergency cadence, not the urgent 120 minutes
    tick(rt)
    assert len(alerts(fake_http, second)) == 1


def test_passive_thoughts_stay_urgent_with_the_self_harm_reply(client, rt, fake_http):
    enrol(rt)
    texted(client, "some days I feel there's no point in living")
    [reply] = [d["Body"] for d in sent_to(fake_http, PHONE)]
    _no_spine(reply)
    assert CRISIS in reply and "will call you today" not in reply
    esc = escalation(rt)
    assert esc.level == "urgent" and esc.flags == ["self_harm_risk"]
    [alert] = alerts(fake_http, chain_phones(rt)[0])
    assert "self harm risk" in alert
    texted(client, "they'd be better off without me")  # added: told again, not the spinal text
    replies = [d["Body"] for d in sent_to(fake_http, PHONE)]
    assert len(replies) == 2 and replies[1] == reply


def test_spanish_self_harm_gets_the_spanish_crisis_reply(client, rt, fake_http):
    _enrol_spanish(rt)
    texted(client, "voy a quitarme la vida esta noche")
    [reply] = [d["Body"] for d in sent_to(fake_http, PHONE)]
    _no_spine(reply)
    # Lucia lives in Madrid: Spain's emergency number and crisis line (see
    # test_emergency_abroad.py)
    assert "Linea 024" in reply and "llame ya al 112" in reply and reply.startswith("Lucia,")
    assert escalation(rt).level == "emergency"


def test_a_spinal_emergency_and_self_harm_get_both_texts(client, rt, fake_http):
    enrol(rt)
    texted(client, "my legs gave way and I want to kill myself")
    spinal, crisis = [d["Body"] for d in sent_to(fake_http, PHONE)]
    assert "Lie flat" in spinal and CRISIS not in spinal
    _no_spine(crisis)
    assert CRISIS in crisis
    esc = escalation(rt)
    assert esc.level == "emergency" and {"limb_weakness", "self_harm_risk"} <= set(esc.flags)


def test_self_harm_intent_with_a_fever_gets_the_urgent_text_never_lie_flat(client, rt,
                                                                           fake_http):
    enrol(rt)
    texted(client, "I have a temperature of 38.5 and I'm going to kill myself")
    urgent, crisis = [d["Body"] for d in sent_to(fake_http, PHONE)]
    assert "will call you today" in urgent and "Lie flat" not in urgent
    assert CRISIS in crisis
    assert escalation(rt).level == "emergency"


@pytest.mark.parametrize("question", ["what should I do if I want to end my life",
                                      "what if my husband wants to kill himself?"])
def test_a_question_about_self_harm_gets_its_own_safety_net(client, rt, fake_http, question):
    enrol(rt)
    texted(client, question)
    [reply] = [d["Body"] for d in sent_to(fake_http, PHONE)]
    _no_spine(reply)
    assert CRISIS in reply and "999" in reply


def test_a_carer_reporting_self_harm_gets_the_crisis_reply(client, rt, fake_http):
    enrol(rt)
    texted(client, "my husband says he wants to kill himself")
    [reply] = [d["Body"] for d in sent_to(fake_http, PHONE)]
    _no_spine(reply)
    assert CRISIS in reply and "anyone is in danger" in reply
    assert "self harm" in alerts(fake_http, chain_phones(rt)[0])[0]


def test_self_harm_from_a_number_not_enrolled_gets_the_crisis_reply(client, rt, fake_http):
    stranger = "+447700900777"
    texted(client, "I'm going to kill myself tonight", sender=stranger)
    [reply] = [d["Body"] for d in sent_to(fake_http, stranger)]
    _no_spine(reply)
    assert CRISIS in reply
    [alert] = alerts(fake_http, chain_phones(rt)[0])
    assert "self harm intent" in alert


def test_while_self_harm_is_unresolved_a_reply_is_about_it_not_the_spine(client, rt, fake_http):
    """'ok thank you' after the self-harm reply, the escalation not resolved: after_self_harm
    (the team has the message, the emergency number, the crisis line), not after_urgent's
    'new weakness, numbness or bladder or bowel problems'."""
    enrol(rt)
    texted(client, "I just want to die")
    texted(client, "ok thank you")
    first, after = [d["Body"] for d in sent_to(fake_http, PHONE)]
    _no_spine(after)
    assert after != first and "care team has your message" in after and CRISIS in after


def test_while_a_spinal_and_a_self_harm_flag_are_unresolved_a_reply_covers_both(client, rt,
                                                                                 fake_http):
    enrol(rt)
    texted(client, "my back pain is 9/10 and there's no point in living")
    before = len(sent_to(fake_http, PHONE))
    texted(client, "ok")
    spinal, crisis = [d["Body"] for d in sent_to(fake_http, PHONE)][before:]
    assert "bladder or bowel" in spinal and CRISIS in crisis
def _checkin_to_numbness(client):
    """A consented patient's check-in, answered up to "any new numbness?": pain 2, then no to
    the five pain questions."""
    texted(client, "CHECKIN")
    texted(client, "2")
    for _ in range(5):  # new, night, cough, spreads, painkillers
        texted(client, "no")


def _emergency_text(rt, pid):
    with rt.transaction() as s:
        return rt.ctx.text_for(s.get(Patient, pid), "emergency")


def test_a_structured_yes_gets_the_emergency_instruction_once_and_nothing_else(
        client, rt, fake_http):
    """YES to "any new numbness?" used to send the emergency instruction ("...Lie flat and
    keep still...") and then the flow's own end, worded otherwise ("We have alerted your care
    team now. Please call..."): two emergency texts for one answer. Now the instruction alone
    goes, the team is alerted once and the check-in is over."""
    pid = enrol(rt)
    _checkin_to_numbness(client)
    before = len(sent_to(fake_http, PHONE))
    texted(client, "yes")
    bodies = [d["Body"] for d in sent_to(fake_http, PHONE)][before:]
    assert bodies == [_emergency_text(rt, pid)]
    esc = escalation(rt)
    assert esc.level == "emergency" and esc.flags == ["sensory_loss"]
    assert len(alerts(fake_http, chain_phones(rt)[0])) == 1
    with rt.transaction() as s:
        assert active_conversation(s, pid) is None
        conv = s.scalars(select(Conversation).where(Conversation.patient_id == pid)).one()
        assert (conv.flow_id, conv.status) == ("checkin", "completed")


def test_three_replies_not_understood_at_an_emergency_question_say_why_then_instruct(
        client, rt, fake_http):
    """The third reply not understood at "any new numbness?" alerts the team: the patient is
    told why (we could not understand) in a text that gives no call-now instruction of its
    own, then gets the emergency instruction; before, a second, different "please call"
    text without "lie flat" came after the instruction."""
    pid = enrol(rt)
    _checkin_to_numbness(client)
    texted(client, "banana")
    texted(client, "banana")
    before = len(sent_to(fake_http, PHONE))
    texted(client, "banana")
    bodies = [d["Body"] for d in sent_to(fake_http, PHONE)][before:]
    assert bodies == [
        "Sorry, we could not understand your answer, so we have alerted your care team now.",
        _emergency_text(rt, pid)]
    assert "Lie flat" in bodies[1]
    assert escalation(rt).flags == ["sensory_loss"]
    assert len(alerts(fake_http, chain_phones(rt)[0])) == 1
    with rt.transaction() as s:
        assert active_conversation(s, pid) is None


def test_a_spanish_yes_gets_the_spanish_emergency_instruction_alone(client, rt, fake_http):
    pid = enrol(rt)
    with rt.transaction() as s:
        s.get(Patient, pid).language = "es"
    _checkin_to_numbness(client)
    before = len(sent_to(fake_http, PHONE))
    texted(client, "si")
    bodies = [d["Body"] for d in sent_to(fake_http, PHONE)][before:]
    assert bodies == [_emergency_text(rt, pid)] and "tumbado" in bodies[0]


@pytest.mark.parametrize("replies", [
    ["2", "no", "no", "no", "no", "no", "yes"],  # YES to "any new numbness?"
    ["2", "no", "no", "no", "no", "no", "banana", "banana", "banana"],  # not understood
    ["0", "no", "no", "yes"],  # YES to "unsteady on your feet?"
])
def test_simulate_and_the_golden_engine_show_the_texts_the_webhook_sends(
        client, rt, fake_http, replies):
    """`checkin-bot simulate` is "what a patient gets": for a check-in that ends in an
    emergency it showed the flow's own end ("We have alerted your care team now. Please
    call...") and not the emergency instruction the webhook sends. Now every text the
    webhook sent after CHECKIN is the simulator's, in the same order."""
    from bot.cli_flows import simulate_command

    enrol(rt)
    before = len(sent_to(fake_http, PHONE))
    texted(client, "CHECKIN")
    for reply in replies:
        texted(client, reply)
    webhook = [d["Body"] for d in sent_to(fake_http, PHONE)][before:]
    shown = CliRunner().invoke(simulate_command, ["checkin", "--name", "Ada Lovelace"],
                               input="".join(f"{r}\n" for r in replies))
    assert shown.exit_code == 0, shown.output
    simulated = [line.removeprefix("bot: ") for line in shown.output.splitlines()
                 if line.startswith("bot: ")]
    assert simulated == webhook
    assert sum("Lie flat" in text for text in simulated) == 1
