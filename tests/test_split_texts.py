"""A red flag a patient splits across texts sent a few moments apart ("I can't feel" then "my
legs") is read as if it were one text: instruction, escalation and alert, once."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from bot.domain.triage import detect, split_texts_minutes
from bot.services.conversations import active_conversation, start_flow
from bot.store.models import Answer, AuditLog, Escalation, Message, Patient
from tests.test_red_flags_e2e import PHONE, alerts, chain_phones, enrol, texted
from tests.test_spool import database_down
from tests.test_webhooks import INBOUND, post, sid
from tests.twilio_support import (  # noqa: F401 - fixtures
    fake_http,
    messenger,
    sent_to,
    settings_overrides,
)


def told(fake_http) -> list[str]:
    return [d["Body"] for d in sent_to(fake_http, PHONE)]


def escalations(rt) -> list[Escalation]:
    with rt.transaction() as s:
        return list(s.scalars(select(Escalation)))


def emergency_text(rt) -> str:
    with rt.transaction() as s:
        return rt.ctx.text_for(s.scalars(select(Patient)).one(), "emergency")


def split_audits(rt) -> list[dict]:
    with rt.transaction() as s:
        return [a.details for a in s.scalars(select(AuditLog).where(
            AuditLog.action == "triage.split_texts"))]


def inbound_ids(rt) -> list[int]:
    with rt.transaction() as s:
        return list(s.scalars(select(Message.id).where(Message.direction == "in")
                              .order_by(Message.id)))


@pytest.mark.parametrize("parts", [
    ("I can't feel", "my legs"),
    ("lost control of my", "bladder"),
    ("my legs are a bit", "weak"),
    ("I can't", "feel my", "legs"),
])
def test_a_red_flag_split_across_texts_is_an_emergency_once(client, rt, fake_http, clock,
                                                           parts):
    enrol(rt)
    for part in parts:
        texted(client, part)
        clock.advance(seconds=20)
    [esc] = escalations(rt)
    assert esc.level == "emergency" and esc.words == " ".join(parts)
    assert told(fake_http).count(emergency_text(rt)) == 1
    [alert] = alerts(fake_http, chain_phones(rt)[0])
    assert f'"{" ".join(parts)}"' in alert  # the words of every part, as one text
    [audit] = split_audits(rt)
    ids = inbound_ids(rt)
    assert audit == {"earlier": ids[:-1][::-1], "flags": list(esc.flags), "level": "emergency",
                     "hypothetical": False}


def test_a_third_text_does_not_alert_the_same_red_flag_again(client, rt, fake_http, clock):
    enrol(rt)
    for part in ("I can't feel", "my legs", "and my feet", "at all"):
        texted(client, part)
        clock.advance(seconds=15)
    [esc] = escalations(rt)
    assert esc.words == "I can't feel my legs"
    assert told(fake_http).count(emergency_text(rt)) == 1
    assert len(alerts(fake_http, chain_phones(rt)[0])) == 1
    assert len(split_audits(rt)) == 1


def test_texts_further_apart_than_the_window_are_read_alone(client, rt, fake_http, clock):
    enrol(rt)
    minutes = split_texts_minutes(rt.ctx.vocabulary)
    texted(client, "I can't feel")
    clock.advance(minutes=minutes, seconds=1)
    texted(client, "my legs")
    assert escalations(rt) == []
    assert split_audits(rt) == []


def test_a_window_of_0_minutes_reads_every_text_alone(client, rt, fake_http, clock,
                                                      tmp_path, monkeypatch):
    from bot.domain.triage import load_vocabulary
    from bot.domain.triage_vocab import DEFAULT_PATH

    path = tmp_path / "red_flags.yaml"
    path.write_text(DEFAULT_PATH.read_text(encoding="utf-8").replace(
        "split_texts_minutes: 3", "split_texts_minutes: 0"), encoding="utf-8")
    monkeypatch.setattr(rt.ctx, "vocabulary", load_vocabulary(path))
    enrol(rt)
    texted(client, "I can't feel")
    texted(client, "my legs")
    assert escalations(rt) == []


def test_a_text_that_raised_a_red_flag_alone_is_not_joined_again(client, rt, fake_http, clock):
    enrol(rt)
    texted(client, "back pain 9/10 and I can't")  # urgent alone: handled as it came
    clock.advance(seconds=20)
    texted(client, "feel my legs")
    [esc] = escalations(rt)
    assert (esc.level, esc.words) == ("urgent", "back pain 9/10 and I can't")
    assert split_audits(rt) == []


def test_a_hypothetical_split_question_gets_the_safety_net(client, rt, fake_http, clock):
    enrol(rt)
    texted(client, "what do I do if I lose control of my")
    clock.advance(seconds=20)
    texted(client, "bladder?")
    assert escalations(rt) == []
    with rt.transaction() as s:
        safety_net = rt.ctx.text_for(s.scalars(select(Patient)).one(), "safety_net")
    assert told(fake_http)[-1] == safety_net


def test_an_opted_out_patients_split_red_flag_still_reaches_the_team(client, rt, fake_http,
                                                                     clock):
    enrol(rt, status="opted_out")
    texted(client, "I can't feel")
    clock.advance(seconds=20)
    texted(client, "my legs")
    [esc] = escalations(rt)
    assert esc.level == "emergency"
    assert len(alerts(fake_http, chain_phones(rt)[0])) == 1
    assert told(fake_http) == [emergency_text(rt)]  # as for one text: the instruction only


def test_a_repeated_message_sid_does_not_alert_twice(client, rt, fake_http, clock):
    enrol(rt)
    texted(client, "I can't feel")
    clock.advance(seconds=20)
    params = {"MessageSid": sid(), "From": PHONE, "To": "+447700900999", "Body": "my legs"}
    post(client, INBOUND, params)
    post(client, INBOUND, params)  # Twilio retried the webhook
    assert len(escalations(rt)) == 1
    assert len(alerts(fake_http, chain_phones(rt)[0])) == 1
    assert told(fake_http).count(emergency_text(rt)) == 1


def test_parts_replayed_from_the_spool_are_joined_by_when_they_were_sent(client, rt,
                                                                          fake_http, clock):
    enrol(rt)
    with database_down(rt):
        texted(client, "lost control of my")
        clock.advance(seconds=30)
        res = texted(client, "bladder")
    assert "this could be serious" not in res.get_data(as_text=True)  # neither part alone
    clock.advance(minutes=30)  # the database is back long after: the parts still belong
    assert rt.replay_spool() == 2
    [esc] = escalations(rt)
    assert esc.level == "emergency" and esc.words == "lost control of my bladder"
    assert told(fake_http).count(emergency_text(rt)) == 1  # not told in the outage: told now


def _checkin(rt, clock):
    with rt.transaction() as s:
        patient = s.scalars(select(Patient)).one()
        start_flow(s, rt.ctx, patient, "checkin", clock.now())
        return patient.id


def _answers(rt, key):
    with rt.transaction() as s:
        return list(s.scalars(select(Answer.value).where(Answer.question_key == key)))


def test_a_flow_answer_after_an_unfinished_text_goes_to_the_flow_as_before(client, rt,
                                                                          fake_http, clock):
    pid = enrol(rt)
    _checkin(rt, clock)
    texted(client, "my legs are a bit")  # not an answer to "worst pain 0-10?"
    clock.advance(seconds=20)
    texted(client, "2")
    assert _answers(rt, "worst_pain") == [2]
    assert escalations(rt) == [] and split_audits(rt) == []
    with rt.transaction() as s:
        assert active_conversation(s, pid).current_node == "pain_new"


def test_a_split_severe_pain_score_alerts_and_still_answers_the_flow(client, rt, fake_http,
                                                                    clock):
    pid = enrol(rt)
    _checkin(rt, clock)
    texted(client, "my pain is")
    clock.advance(seconds=20)
    texted(client, "8")
    assert _answers(rt, "worst_pain") == [8]
    [esc] = escalations(rt)
    assert (esc.level, esc.flags) == ("urgent", ["severe_pain"])
    assert esc.words.endswith("A: 8 (on a scale of 0 to 10) | my pain is 8")  # flow's, then ours
    assert len(split_audits(rt)) == 1
    assert len(alerts(fake_http, chain_phones(rt)[0])) == 1
    with rt.transaction() as s:
        assert active_conversation(s, pid).current_node == "pain_new"


def test_a_split_emergency_in_a_flow_stops_it_as_one_text_would(client, rt, fake_http, clock):
    pid = enrol(rt)
    _checkin(rt, clock)
    texted(client, "I can't feel")
    clock.advance(seconds=20)
    texted(client, "my legs")
    assert escalations(rt)[0].level == "emergency"
    with rt.transaction() as s:
        assert active_conversation(s, pid) is None


@pytest.mark.parametrize("sent", [("I can't feel", "my legs"), ("lost control of my", "bladder"),
                                  ("my legs are", "weak")])
def test_parts_delivered_out_of_order_are_read_in_the_order_they_make_sense(client, rt,
                                                                           fake_http, clock,
                                                                           sent):
    # Carriers do not promise order: the second part may arrive first.
    enrol(rt)
    first, second = sent
    texted(client, second)
    clock.advance(seconds=5)
    texted(client, first)
    [esc] = escalations(rt)
    assert esc.level == "emergency" and esc.words == f"{first} {second}"
    assert told(fake_http).count(emergency_text(rt)) == 1
    [audit] = split_audits(rt)
    assert audit["earlier"] == inbound_ids(rt)[:1] and audit["level"] == "emergency"


def test_words_that_make_no_red_flag_in_either_order_stay_routine(client, rt, fake_http, clock):
    enrol(rt)
    texted(client, "my legs")
    clock.advance(seconds=5)
    texted(client, "are fine thanks")
    assert escalations(rt) == [] and split_audits(rt) == []


STRANGER = "+447700900777"  # a relative's phone, not enrolled


def test_a_split_red_flag_from_a_number_not_enrolled_reaches_the_team(client, rt, fake_http,
                                                                      clock):
    texted(client, "my husband can't feel", sender=STRANGER)
    clock.advance(seconds=20)
    texted(client, "his legs", sender=STRANGER)
    [esc] = escalations(rt)
    assert (esc.level, esc.patient_id, esc.phone) == ("emergency", None, STRANGER)
    assert esc.words == "my husband can't feel his legs"
    replies = [d["Body"] for d in sent_to(fake_http, STRANGER)]
    assert replies[1:] == [rt.ctx.text_for(None, "emergency", name="Hello")]  # after the polite
    [alert] = alerts(fake_http, chain_phones(rt)[0])
    assert STRANGER in alert and '"my husband can\'t feel his legs"' in alert
    [audit] = split_audits(rt)
    assert audit["earlier"] == inbound_ids(rt)[:1] and audit["level"] == "emergency"


def test_a_number_not_enrolled_has_the_same_window(client, rt, fake_http, clock):
    texted(client, "my husband can't feel", sender=STRANGER)
    clock.advance(minutes=split_texts_minutes(rt.ctx.vocabulary), seconds=1)
    texted(client, "his legs", sender=STRANGER)
    assert escalations(rt) == [] and split_audits(rt) == []
    assert alerts(fake_http, chain_phones(rt)[0]) == []


def test_split_texts_from_two_numbers_are_not_joined(client, rt, fake_http, clock):
    enrol(rt)
    texted(client, "I can't feel")  # the patient
    clock.advance(seconds=10)
    texted(client, "his legs", sender=STRANGER)  # someone else
    assert escalations(rt) == []


# A conditional question ("what if my legs go numb?") gets the safety net; a text just after it
# that says it is happening ("they are now") makes it the red flag it asked about.

def safety_net_text(rt) -> str:
    with rt.transaction() as s:
        return rt.ctx.text_for(s.scalars(select(Patient)).one(), "safety_net")


@pytest.mark.parametrize("question, confirmation", [
    ("what if my legs go numb?", "they are now"),
    ("what do I do if my legs go numb?", "it is happening now"),
    ("should I worry if I can't feel my feet?", "yes that's happening"),
    ("should I worry if I can't feel my feet?", "I can't now"),
    ("que hago si se me duermen las piernas?", "ya me pasa"),
    ("que pasa si no puedo caminar?", "si, ahora"),
])
def test_a_question_then_a_confirmation_is_the_confirmed_emergency(client, rt, fake_http, clock,
                                                                  question, confirmation):
    enrol(rt)
    texted(client, question)
    assert escalations(rt) == [] and told(fake_http) == [safety_net_text(rt)]
    clock.advance(seconds=40)
    texted(client, confirmation)
    [esc] = escalations(rt)
    words = f"{question} {confirmation}"
    assert esc.level == "emergency" and esc.words == words
    assert esc.flags == [f for f in detect(question, rt.ctx.vocabulary).flags]
    assert told(fake_http) == [safety_net_text(rt), emergency_text(rt)]
    [alert] = alerts(fake_http, chain_phones(rt)[0])
    assert f'"{words}"' in alert  # both texts, quoted as one
    [audit] = split_audits(rt)
    assert audit == {"earlier": inbound_ids(rt)[:1], "flags": esc.flags, "level": "emergency",
                     "hypothetical": False, "confirmed": True}


def test_a_confirmation_of_a_split_question_is_the_confirmed_emergency(client, rt, fake_http,
                                                                      clock):
    enrol(rt)
    for part in ("what do I do if I lose control of my", "bladder?", "it's happening now"):
        texted(client, part)
        clock.advance(seconds=20)
    [esc] = escalations(rt)
    assert (esc.level, esc.flags) == ("emergency", ["bladder_dysfunction"])
    assert esc.words == "what do I do if I lose control of my bladder? it's happening now"
    assert told(fake_http).count(emergency_text(rt)) == 1


def test_a_question_alone_still_gets_only_the_safety_net(client, rt, fake_http, clock):
    enrol(rt)
    texted(client, "what if my legs go numb?")
    clock.advance(seconds=40)
    texted(client, "ok thanks")
    assert escalations(rt) == [] and split_audits(rt) == []
    assert alerts(fake_http, chain_phones(rt)[0]) == []


@pytest.mark.parametrize("before", [None, "hello", "my legs are fine"])
def test_a_confirmation_with_no_question_before_it_alerts_nothing(client, rt, fake_http, clock,
                                                                 before):
    enrol(rt)
    if before:
        texted(client, before)
        clock.advance(seconds=20)
    texted(client, "it is happening now")
    assert escalations(rt) == [] and split_audits(rt) == []
    assert emergency_text(rt) not in told(fake_http)


def test_a_confirmation_after_the_window_alerts_nothing(client, rt, fake_http, clock):
    enrol(rt)
    texted(client, "what if my legs go numb?")
    clock.advance(minutes=split_texts_minutes(rt.ctx.vocabulary), seconds=1)
    texted(client, "they are now")
    assert escalations(rt) == []


def test_a_denial_is_no_confirmation(client, rt, fake_http, clock):
    enrol(rt)
    texted(client, "what if my legs go numb?")
    clock.advance(seconds=40)
    texted(client, "no it's not happening now, just asking")
    assert escalations(rt) == []


def test_a_second_confirmation_does_not_alert_again(client, rt, fake_http, clock):
    enrol(rt)
    for text in ("what if my legs go numb?", "they are now", "yes it is happening now"):
        texted(client, text)
        clock.advance(seconds=20)
    [esc] = escalations(rt)
    assert esc.words == "what if my legs go numb? they are now"
    assert told(fake_http).count(emergency_text(rt)) == 1
    assert len(alerts(fake_http, chain_phones(rt)[0])) == 1
    assert len(split_audits(rt)) == 1


def test_a_confirmation_in_a_checkin_stops_it_as_an_emergency_would(client, rt, fake_http,
                                                                   clock):
    pid = enrol(rt)
    _checkin(rt, clock)
    texted(client, "what should I do if my legs give way?")
    clock.advance(seconds=30)
    texted(client, "they just did")
    assert escalations(rt)[0].level == "emergency"
    with rt.transaction() as s:
        assert active_conversation(s, pid) is None


def test_a_question_then_a_confirmation_from_a_number_not_enrolled(client, rt, fake_http, clock):
    texted(client, "what do I do if his legs go numb?", sender=STRANGER)
    assert escalations(rt) == []
    clock.advance(seconds=30)
    texted(client, "they are now", sender=STRANGER)
    [esc] = escalations(rt)
    assert (esc.level, esc.phone) == ("emergency", STRANGER)
    assert esc.words == "what do I do if his legs go numb? they are now"
    replies = [d["Body"] for d in sent_to(fake_http, STRANGER)]
    assert replies[-1] == rt.ctx.text_for(None, "emergency", name="Hello")
    [alert] = alerts(fake_http, chain_phones(rt)[0])
    assert STRANGER in alert


# When handling the last text fails (a bug; the transaction rolls back), the failure path
# (record_after_failure) stores it "unprocessed" and still acts on red flags: those the texts
# just before it begin, and a question it confirms, too.

def handling_fails(monkeypatch):
    """From now on, handling an inbound text raises before any red flag is read."""
    from bot.services import inbound

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(inbound, "_looks_like_a_loop", broken)


def status_of(rt, body) -> str:
    with rt.transaction() as s:
        return s.scalars(select(Message.status).where(
            Message.direction == "in", Message.body == body)).one()


@pytest.mark.parametrize("first, last", [
    ("I can't feel", "my legs"),
    ("mi madre no puede", "caminar"),
])
def test_a_split_red_flag_is_escalated_when_handling_the_last_text_fails(
        client, rt, fake_http, clock, monkeypatch, first, last):
    enrol(rt)
    texted(client, first)
    clock.advance(seconds=20)
    handling_fails(monkeypatch)
    texted(client, last)
    assert status_of(rt, last) == "unprocessed"
    [esc] = escalations(rt)
    assert (esc.level, esc.words) == ("emergency", f"{first} {last}")
    assert told(fake_http).count(emergency_text(rt)) == 1
    [alert] = alerts(fake_http, chain_phones(rt)[0])
    assert f'"{first} {last}"' in alert
    [audit] = split_audits(rt)
    assert audit["earlier"] == inbound_ids(rt)[:1] and audit["level"] == "emergency"


@pytest.mark.parametrize("first, last", [
    ("my husband can't feel", "his legs"),
    ("mi madre no puede", "caminar"),
])
def test_a_split_red_flag_from_a_number_not_enrolled_is_escalated_when_handling_fails(
        client, rt, fake_http, clock, monkeypatch, first, last):
    texted(client, first, sender=STRANGER)
    clock.advance(seconds=20)
    handling_fails(monkeypatch)
    texted(client, last, sender=STRANGER)
    assert status_of(rt, last) == "unprocessed"
    [esc] = escalations(rt)
    assert (esc.level, esc.phone, esc.words) == ("emergency", STRANGER, f"{first} {last}")
    replies = [d["Body"] for d in sent_to(fake_http, STRANGER)]
    assert replies[1:] == [rt.ctx.text_for(None, "emergency", name="Hello")]
    [alert] = alerts(fake_http, chain_phones(rt)[0])
    assert STRANGER in alert and f'"{first} {last}"' in alert
    assert len(split_audits(rt)) == 1


def test_a_split_text_that_fails_and_makes_no_red_flag_stays_routine(client, rt, fake_http,
                                                                     clock, monkeypatch):
    enrol(rt)
    texted(client, "my legs")
    clock.advance(seconds=5)
    handling_fails(monkeypatch)
    texted(client, "are fine thanks")
    assert status_of(rt, "are fine thanks") == "unprocessed"
    assert escalations(rt) == [] and split_audits(rt) == []


def test_a_failed_text_is_not_joined_to_texts_before_the_window(client, rt, fake_http, clock,
                                                                monkeypatch):
    enrol(rt)
    texted(client, "I can't feel")
    clock.advance(minutes=split_texts_minutes(rt.ctx.vocabulary), seconds=1)
    handling_fails(monkeypatch)
    texted(client, "my legs")
    assert escalations(rt) == []


@pytest.mark.parametrize("question, confirmation", [
    ("what if my legs go numb?", "they are now"),
    ("que pasa si no puedo caminar?", "si, ahora"),
])
def test_a_confirmation_is_the_confirmed_emergency_when_handling_it_fails(
        client, rt, fake_http, clock, monkeypatch, question, confirmation):
    enrol(rt)
    texted(client, question)
    assert told(fake_http) == [safety_net_text(rt)]
    clock.advance(seconds=40)
    handling_fails(monkeypatch)
    texted(client, confirmation)
    assert status_of(rt, confirmation) == "unprocessed"
    [esc] = escalations(rt)
    assert (esc.level, esc.words) == ("emergency", f"{question} {confirmation}")
    assert told(fake_http) == [safety_net_text(rt), emergency_text(rt)]
    assert len(alerts(fake_http, chain_phones(rt)[0])) == 1
    [audit] = split_audits(rt)
    assert audit["confirmed"] is True


def test_a_confirmation_from_a_number_not_enrolled_is_escalated_when_handling_it_fails(
        client, rt, fake_http, clock, monkeypatch):
    texted(client, "what do I do if his legs go numb?", sender=STRANGER)
    clock.advance(seconds=30)
    handling_fails(monkeypatch)
    texted(client, "they are now", sender=STRANGER)
    [esc] = escalations(rt)
    assert (esc.level, esc.phone) == ("emergency", STRANGER)
    assert esc.words == "what do I do if his legs go numb? they are now"
    replies = [d["Body"] for d in sent_to(fake_http, STRANGER)]
    assert replies[-1] == rt.ctx.text_for(None, "emergency", name="Hello")
    assert len(alerts(fake_http, chain_phones(rt)[0])) == 1
