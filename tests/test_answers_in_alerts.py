"""A red flag raised by a reply to a check-in question reaches the care team with its question
and what the reply meant ("Q: ...? A: y (Yes)."), in the alert and on the dashboard; a red flag
typed in free text is quoted as before."""

from __future__ import annotations

import html

import pytest
from sqlalchemy import select

from bot.domain import engine, gsm7
from bot.domain.flows import load_flows
from bot.services.escalations import (
    ANSWER_CHARS,
    alert_details,
    answer_for_alert,
    answer_words,
    escalate,
    words_to_read,
)
from bot.services.patients import Enrolment, enrol_patient
from bot.store.models import Escalation, Message, Patient
from tests.test_dashboard import page, section, sign_in

PHONE = "+447700900123"
PAIN_NEW = "Is this pain new, or different from your usual pain?"
NUMBNESS = ("Since your last check-in, have you had any new numbness, tingling or pins and "
            "needles in your arms, legs, buttocks or feet?")


def _enrol(rt, name="Ada Lovelace", language="en"):
    with rt.transaction() as s:
        p = enrol_patient(s, Enrolment(PHONE, name, "Europe/London", language=language),
                          languages=["en", "es"], now=rt.clock.now(), actor="test")
        p.consent_at = rt.clock.now()


def _texted(client, *bodies):
    for body in bodies:
        res = client.post("/simulator/api/messages", json={"phone": PHONE, "body": body})
        assert res.status_code == 201, res.get_json()


def _alerts(rt, messenger):
    oncall = rt.settings.care_team.contact(rt.settings.care_team.escalation_chain[0]).phone
    return [m.body for m in messenger.sent if m.to == oncall]


def _escalation(rt):
    with rt.transaction() as s:
        return s.scalars(select(Escalation)).one()


def _dashboard(client, ref):
    sign_in(client, token=None)
    card = section(page(client), "open")
    card = html.unescape(card[card.index(f'data-ref="{ref}"'):])
    detail = html.unescape(page(client, f"/dashboard/escalations/{ref}"))
    return card, detail


def test_an_urgent_answer_reaches_the_team_with_its_question_and_meaning(client, rt,
                                                                         messenger):
    _enrol(rt)
    _texted(client, "CHECKIN", "3", "y")  # pain 3, then: is it new? y
    esc = _escalation(rt)
    assert (esc.level, esc.flags) == ("urgent", ["new_back_pain"])
    assert esc.words == f"Q: {PAIN_NEW} A: y (Yes)"
    [alert] = _alerts(rt, messenger)
    assert alert == (f"URGENT ref {esc.ref}: Ada Lovelace {PHONE}. Flags: new back pain. "
                     f"Q: {PAIN_NEW} A: y (Yes). Reply ACK {esc.ref} when you take it.")
    card, detail = _dashboard(client, esc.ref)
    for shown in (card, detail):
        assert f"Q: {PAIN_NEW}\nA: y (Yes)" in shown


def test_an_emergency_answer_reaches_the_team_with_its_whole_question(client, rt, messenger):
    _enrol(rt)
    _texted(client, "CHECKIN", "0", "yep")  # no pain, then: new numbness? yep
    esc = _escalation(rt)
    assert (esc.level, esc.flags) == ("emergency", ["sensory_loss"])
    [alert] = _alerts(rt, messenger)
    assert alert.startswith(f"EMERGENCY ref {esc.ref}: Ada Lovelace {PHONE}. Flags: "
                            f"sensory loss. Q: {NUMBNESS} A: yep (Yes). Reply ACK")
    assert "Reply YES or NO" not in alert and "Said:" not in alert
    assert gsm7.is_gsm7(alert) and gsm7.segments(alert) <= 2
    card, detail = _dashboard(client, esc.ref)
    for shown in (card, detail):
        assert f"Q: {NUMBNESS}\nA: yep (Yes)" in shown


def test_a_spanish_reply_is_shown_under_the_question_in_the_teams_language(client, rt,
                                                                         messenger):
    _enrol(rt, language="es")
    _texted(client, "CHECKIN", "0", "si")
    [alert] = _alerts(rt, messenger)
    assert f"Q: {NUMBNESS} A: si (Yes)." in alert


def test_a_reply_not_understood_three_times_says_so(client, rt, messenger):
    _enrol(rt)
    _texted(client, "CHECKIN", "0", "maybe", "hmm", "dunno")
    esc = _escalation(rt)
    assert esc.flags == ["sensory_loss"]
    assert esc.words == f"Q: {NUMBNESS} A: dunno (not understood)"
    [alert] = _alerts(rt, messenger)
    assert "A: dunno (not understood). Reply ACK" in alert


def test_a_number_is_shown_with_its_scale(client, rt, messenger):
    _enrol(rt)
    _texted(client, "CHECKIN", "8")
    [alert] = _alerts(rt, messenger)
    assert ("Q: Since your last check-in, what was your worst pain? "
            "A: 8 (on a scale of 0 to 10). Reply ACK") in alert


def test_a_red_flag_in_free_text_is_alerted_and_shown_as_before(client, rt, messenger):
    _enrol(rt)
    _texted(client, "my legs gave way")
    esc = _escalation(rt)
    assert esc.words == "my legs gave way"
    [alert] = _alerts(rt, messenger)
    assert alert == (f'EMERGENCY ref {esc.ref}: Ada Lovelace {PHONE}. Flags: limb weakness. '
                     f'Said: "my legs gave way" Reply ACK {esc.ref} when you take it.')
    card, detail = _dashboard(client, esc.ref)
    for shown in (card, detail):
        assert '<div class="words">my legs gave way</div>' in shown


def test_words_typed_after_an_answer_are_quoted_without_the_question(client, rt, messenger):
    _enrol(rt)
    _texted(client, "CHECKIN", "3", "y")  # urgent, from an answer
    _texted(client, "now my legs gave way")  # emergency, typed: the alert goes again
    esc = _escalation(rt)
    assert esc.words == f"now my legs gave way | Q: {PAIN_NEW} A: y (Yes)"
    upgrade = _alerts(rt, messenger)[-1]
    # the whole text is compared: a bare "Q:" check would also match a reference ending in Q
    assert upgrade == (f"EMERGENCY ref {esc.ref}: Ada Lovelace {PHONE}. Flags: limb weakness, "
                       f'new back pain. Said: "now my legs gave way" Reply ACK {esc.ref} when '
                       f"you take it.")
    card, _ = _dashboard(client, esc.ref)
    assert f"now my legs gave way\nQ: {PAIN_NEW}\nA: y (Yes)" in card


# -- shortening and reading back -------------------------------------------------------------


LONG_QUESTION = ("Over the last fortnight, and thinking about every part of your day from "
                 "waking to sleeping, have you noticed any new difficulty at all when you try "
                 "to walk up or down the stairs at home?")


def test_a_long_question_and_reply_are_cut_between_words_to_fit():
    reply = "yes \u2019definitely\u2019 \U0001f622 and it has been getting a lot worse every day"
    shown = answer_for_alert(answer_words(LONG_QUESTION, reply, "Yes"))
    assert len(shown) <= ANSWER_CHARS and gsm7.is_gsm7(shown)
    assert shown.startswith("Q: Over the last fortnight, ") and "... A: yes 'definitely'" in shown
    assert shown.endswith("... (Yes).")


@pytest.mark.parametrize("limit", [ANSWER_CHARS, 220])
def test_the_alert_keeps_as_much_of_the_question_as_its_room_allows(limit):
    shown = answer_for_alert(answer_words(LONG_QUESTION, "y", "Yes"), limit)
    assert len(shown) <= limit and shown.endswith(" A: y (Yes).")
    assert (LONG_QUESTION in shown) == (limit == 220)


def test_an_alert_with_every_field_at_its_longest_fits_two_segments(rt):
    _enrol(rt, name="Maximilian-Alexander Worthington-Smythe")
    with rt.transaction() as s:
        patient = s.scalars(select(Patient)).one()
        escalate(s, rt.ctx, patient, "emergency",
                 ["limb_weakness", "sensory_loss", "saddle_anaesthesia", "bladder_dysfunction",
                  "bowel_dysfunction", "gait_balance"],
                 answer_words(LONG_QUESTION * 2, "yes " * 30, "Yes"), rt.clock.now())
        alert = s.scalars(select(Message.body).where(Message.kind == "alert")).one()
    assert gsm7.segments(alert) <= 2 and " A: yes yes" in alert and "... (Yes). Reply" in alert


def test_the_dashboard_shows_words_without_questions_as_they_are():
    assert words_to_read("my legs | gave way") == "my legs | gave way"
    assert words_to_read(None) == ""
    assert words_to_read("Q: Fever? A: yes | ouch") == "Q: Fever?\nA: yes\nouch"


def test_the_alert_of_free_text_is_unchanged_by_an_older_answer():
    said = alert_details(["limb_weakness"], "my legs gave way | Q: Fever? A: y (Yes)")
    assert said == {"flags": "limb weakness", "words": "my legs gave way"}


# -- what a reply meant ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def library():
    return load_flows("flows")


@pytest.mark.parametrize(("flow_id", "node", "reply", "meaning"), [
    ("checkin", "numbness", "yes please", "Yes"),
    ("checkin", "numbness", "nope", "No"),
    ("checkin", "pain", "seven", "7 on a scale of 0 to 10"),
    ("checkin", "fatigue", "4", "quite a bit"),
    ("checkin", "fatigue", "purple", "not understood"),
    ("checkin", "anything_else", "my legs", ""),
    ("reminder", "remind", "1", "done"),
])
def test_the_meaning_of_a_reply(library, flow_id, node, reply, meaning):
    flow = library.get(flow_id)
    context = {"clinic_name": "Spine Clinic", "reminder_text": "Take your tablets."}
    question, said = engine.question_and_meaning(flow, node, reply, context)
    assert said == meaning
    assert "Reply" not in question or flow_id == "reminder"


def test_the_question_is_the_teams_and_filled_in(library):
    flow = library.get("reminder")
    question, _ = engine.question_and_meaning(
        flow, "remind", "1", {"clinic_name": "Spine Clinic", "reminder_text": "Take it."})
    assert question.startswith("Reminder from Spine Clinic: Take it. Reply 1 if done")


def test_a_node_that_is_not_a_question_has_no_meaning(library):
    flow = library.get("checkin")
    assert engine.question_and_meaning(flow, "intro", "yes", {}) is None
    assert engine.question_and_meaning(flow, None, "yes", {}) is None

