"""How patients' everyday replies are read, through the real inbound path (the Twilio
webhook, then triage, then the conversation): replies that say two things at once, "not
yet" and contradictions to a reminder, and emoji."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from bot.services.conversations import active_conversation, start_flow
from bot.services.patients import Enrolment, onboard_patient
from bot.store.models import Answer, Patient
from tests.test_everyday_replies import PHONE, texted
from tests.twilio_support import (  # noqa: F401 - fixtures
    fake_http,
    messenger,
    sent_to,
    settings_overrides,
)

REMINDER_RETRY = "Sorry, we did not understand. Please reply 1 if done, or 2 if you can't make it."
REMINDER_CANNOT = "Thank you for letting us know. Your care team will see your reply."


def _consented(rt) -> int:
    with rt.transaction() as s:
        patient, _ = onboard_patient(s, rt.ctx, Enrolment(PHONE, "Joan Baker", "Europe/London"),
                                     rt.clock.now(), "test", respect_quiet_hours=False)
        patient.consent_at = rt.clock.now()
        return patient.id


def _started(rt, pid, flow_id, **params) -> None:
    with rt.transaction() as s:
        start_flow(s, rt.ctx, s.get(Patient, pid), flow_id, rt.clock.now(), params=params)


def answers(rt, pid) -> dict:
    with rt.transaction() as s:
        return {a.question_key: a.value
                for a in s.scalars(select(Answer).where(Answer.patient_id == pid)
                                   .order_by(Answer.id))}


def sent(fake_http) -> list[str]:
    return [d["Body"] for d in sent_to(fake_http, PHONE)]


def waiting_at(rt, pid) -> tuple[str | None, int]:
    """(the question the patient's conversation waits at, the tries used there)."""
    with rt.transaction() as s:
        conv = active_conversation(s, pid)
        return (None, 0) if conv is None else (conv.current_node, conv.state.get("tries", 0))


def _reminded(rt, fake_http) -> int:
    pid = _consented(rt)
    _started(rt, pid, "reminder", reminder_text="Take your dexamethasone")
    fake_http.reset()
    return pid


# ---- a reminder: a no beside "done" -------------------------------------------------------

@pytest.mark.parametrize("text", ["nope, done", "Nope done", "nah, done", "nah all good",
                                  "yeah, forgot", "yep missed it"])
def test_a_reminder_reply_that_says_both_yes_and_no_is_asked_again(client, rt, fake_http, text):
    """ "nope, done" was recorded as done: "done" picked the option and "nope" beside it was
    not read as a no (only "no", "not"... were). After "Reply 1 if done, or 2 if you can't
    make it" it says both, so the patient is asked again, with the numbers."""
    pid = _reminded(rt, fake_http)
    texted(client, text)
    assert answers(rt, pid) == {}
    assert sent(fake_http)[-1] == REMINDER_RETRY  # after the reminder itself, held till now
    assert waiting_at(rt, pid) == ("remind", 1)
    texted(client, "1")
    assert answers(rt, pid) == {"reminder_reply": "done"}


@pytest.mark.parametrize(("text", "value"), [
    ("yep, done", "done"), ("Yes done thanks", "done"), ("nope, forgot", "cannot"),
    ("no, missed it", "cannot"), ("Nope, sorry", "cannot"), ("done \U0001f44d", "done")])
def test_a_reminder_reply_whose_yes_or_no_agrees_with_its_words_is_taken(client, rt, fake_http,
                                                                         text, value):
    pid = _reminded(rt, fake_http)
    texted(client, text)
    assert answers(rt, pid) == {"reminder_reply": value}


# ---- a reminder: "not yet" ------------------------------------------------------------------

@pytest.mark.parametrize("text", ["not yet", "Not yet, later", "nope not yet"])
def test_not_yet_to_a_reminder_is_not_done_and_acknowledged(client, rt, fake_http, text):
    """ "Not yet" to "Take your dexamethasone. Reply 1 if done, or 2 if you can't make it"
    was "Sorry, we did not understand" (a try used; three closed the reminder unanswered).
    It says not done: recorded as the reminder's no is, with the same acknowledgement."""
    pid = _reminded(rt, fake_http)
    texted(client, text)
    assert answers(rt, pid) == {"reminder_reply": "cannot"}
    assert sent(fake_http)[-1].startswith(REMINDER_CANNOT)
    assert REMINDER_RETRY not in sent(fake_http)
    assert waiting_at(rt, pid) == (None, 0)


@pytest.mark.parametrize("text", [
    "not yet done", "Not done yet", "not taken yet", "I haven't taken it yet",
    "havent taken it yet", "I have not taken them yet", "later", "will do", "in a bit",
    "I will later", "Will do it later x"])
def test_not_done_yet_in_other_words_to_a_reminder_is_read_as_not_yet(client, rt, fake_http,
                                                                       text):
    """ "Not yet done", "I haven't taken it yet" were "Sorry, we did not understand" (a try
    used): "done" or "taken" picked the done option and the negation beside it made the reply
    ambiguous. "Later", "will do", "in a bit" say the same (not done now) and were no answer
    at all. Each is read as "not yet" is: not done, with the same acknowledgement."""
    pid = _reminded(rt, fake_http)
    texted(client, text)
    assert answers(rt, pid) == {"reminder_reply": "cannot"}
    assert sent(fake_http)[-1].startswith(REMINDER_CANNOT)
    assert REMINDER_RETRY not in sent(fake_http)
    assert waiting_at(rt, pid) == (None, 0)


@pytest.mark.parametrize("text", ["Not yet. Done now", "not yet, done", "taken, not yet the other",
                                  "done, later the rest"])
def test_not_yet_and_done_in_separate_parts_of_a_reminder_reply_is_asked_again(
        client, rt, fake_http, text):
    """ "Not yet. Done now" says both (the phrase "not yet done" must not be read across the
    full stop): asked again, as before."""
    pid = _reminded(rt, fake_http)
    texted(client, text)
    assert answers(rt, pid) == {}
    assert sent(fake_http)[-1] == REMINDER_RETRY
    assert waiting_at(rt, pid) == ("remind", 1)


# ---- one reply, two answers -----------------------------------------------------------------

PAIN_NEW = "Is this pain new, or different from your usual pain? Reply YES or NO."
PAIN_NIGHT = "Is the pain worse at night or when you lie flat? Reply YES or NO."


def _at_pain_question(rt, fake_http) -> int:
    pid = _consented(rt)
    _started(rt, pid, "checkin")
    fake_http.reset()
    return pid


@pytest.mark.parametrize(("text", "new"), [
    ("7, and yes its new", "yes"), ("7 and yes it's new", "yes"),
    ("8, no, same as usual", "no"), ("7, si es nuevo", "yes")])
def test_a_score_then_a_yes_or_no_to_is_it_new_answers_both(client, rt, fake_http, text, new):
    """ "7, and yes its new" recorded 7, then asked "is this pain new?", which the patient
    had just answered. Both answers are taken; the next question is the one after."""
    from bot.store.models import Escalation

    pid = _at_pain_question(rt, fake_http)
    texted(client, text)
    assert answers(rt, pid) == {"worst_pain": int(text[0]), "pain_new": new}
    assert sent(fake_http) == [PAIN_NIGHT]
    assert waiting_at(rt, pid) == ("pain_night", 0)
    with rt.transaction() as s:
        esc = s.scalars(select(Escalation)).one()  # the urgent alert, with each answer
        assert esc.level == "urgent"
        assert set(esc.flags) == ({"severe_pain", "new_back_pain"} if new == "yes"
                                  else {"severe_pain"})
        assert "Q: Since your last check-in, what was your worst pain? A: " in esc.words
        assert "Q: Is this pain new, or different from your usual pain? A: " in esc.words


@pytest.mark.parametrize("text", ["7, yes it's bad", "7 yes its new", "7, yes"])
def test_a_score_with_a_yes_not_clearly_about_the_next_question_still_asks_it(
        client, rt, fake_http, text):
    pid = _at_pain_question(rt, fake_http)
    texted(client, text)
    assert answers(rt, pid) == {"worst_pain": 7}
    assert sent(fake_http) == [PAIN_NEW]


def test_a_no_after_a_score_of_0_is_not_taken_for_a_question_never_asked(client, rt, fake_http):
    """0 skips "is this pain new?": the no meant for it must not answer "any new numbness?"."""
    pid = _at_pain_question(rt, fake_http)
    texted(client, "0, and no its not new")
    assert answers(rt, pid) == {"worst_pain": 0}
    assert waiting_at(rt, pid) == ("numbness", 0)
    assert "numbness, tingling or pins and needles" in sent(fake_http)[-1]


def test_two_answers_with_a_red_flag_still_run_the_emergency_path(client, rt, fake_http):
    from bot.store.models import Escalation

    pid = _at_pain_question(rt, fake_http)
    texted(client, "7, and yes its new, and I can't feel my legs")
    with rt.transaction() as s:
        esc = s.scalars(select(Escalation)).one()
        assert esc.level == "emergency"
        assert active_conversation(s, pid) is None
    assert PAIN_NIGHT not in sent(fake_http)


# ---- emoji ----------------------------------------------------------------------------------

YESNO_RETRY = "Sorry, we did not understand. Please reply YES or NO."


def _at_numbness_question(rt, client, fake_http) -> int:
    pid = _at_pain_question(rt, fake_http)
    texted(client, "0")  # no pain: on to "any new numbness?"
    fake_http.reset()
    return pid


@pytest.mark.parametrize("emoji", ["\U0001f642", "\U0001f44d", "\U0001f44d\U0001f3fb",
                                   "\U0001f60a\U0001f60a", "\u2764\ufe0f!"])
def test_an_emoji_at_a_question_is_asked_again_without_using_a_try(client, rt, fake_http,
                                                                  emoji):
    """A smiley or a thumbs up to "any new numbness?" was "not understood" and used one of
    its three tries. It has no words, so the question is asked again and the first one uses
    no try; a thumbs up is what "ok" is there, no yes."""
    from bot.store.models import Escalation

    pid = _at_numbness_question(rt, client, fake_http)
    texted(client, emoji)
    assert sent(fake_http) == [YESNO_RETRY]
    assert waiting_at(rt, pid) == ("numbness", 0)
    with rt.transaction() as s:
        assert s.scalars(select(Escalation)).all() == []
    texted(client, "no")
    assert answers(rt, pid) == {"worst_pain": 0, "numbness": "no"}


def test_emoji_again_and_again_still_reach_the_questions_fallback(client, rt, fake_http):
    """Only the first emoji at a question is let off: a patient who keeps answering "any new
    numbness?" with emoji reaches what three unclear replies reach (the team told), as
    "maybe" three times does, one reply later; not re-asked until the check-in times out."""
    from bot.store.models import Escalation

    pid = _at_numbness_question(rt, client, fake_http)
    for tries in (0, 1, 2):
        texted(client, "\U0001f642")
        assert waiting_at(rt, pid) == ("numbness", tries)
    with rt.transaction() as s:
        assert s.scalars(select(Escalation)).all() == []
    texted(client, "\U0001f642")
    assert waiting_at(rt, pid) != ("numbness", 3)
    with rt.transaction() as s:
        assert s.scalars(select(Escalation)).all() != []


def test_an_emoji_does_not_hide_the_tries_already_used(client, rt, fake_http):
    pid = _at_numbness_question(rt, client, fake_http)
    texted(client, "maybe")
    texted(client, "\U0001f642")
    assert waiting_at(rt, pid) == ("numbness", 1)
    texted(client, "??")  # marks alone: puzzled, a try as before
    assert waiting_at(rt, pid) == ("numbness", 2)


def test_a_thumbs_up_to_a_reminder_is_asked_again_without_using_a_try(client, rt, fake_http):
    pid = _reminded(rt, fake_http)
    texted(client, "\U0001f44d")
    assert answers(rt, pid) == {}
    assert sent(fake_http)[-1] == REMINDER_RETRY
    assert waiting_at(rt, pid) == ("remind", 0)


def test_a_thumbs_up_to_the_consent_question_agrees_as_ok_does(client, rt, fake_http):
    with rt.transaction() as s:
        patient, _ = onboard_patient(s, rt.ctx, Enrolment(PHONE, "Joan Baker", "Europe/London"),
                                     rt.clock.now(), "test", respect_quiet_hours=False)
        pid = patient.id
    texted(client, "\U0001f44d")
    assert answers(rt, pid) == {"consent": "yes"}
    with rt.transaction() as s:
        assert s.get(Patient, pid).consent_at is not None


# ---- "nothing new" --------------------------------------------------------------------------

def test_nothing_new_to_an_any_new_question_is_a_no(client, rt, fake_http):
    """ "Nothing new" to "any new numbness...?" was asked again (a try used): it says no new
    numbness. With more that may take it back, it is asked again as before."""
    pid = _at_numbness_question(rt, client, fake_http)
    texted(client, "nothing new but not sure")
    assert waiting_at(rt, pid) == ("numbness", 1)
    texted(client, "Nothing new thanks")
    assert answers(rt, pid) == {"worst_pain": 0, "numbness": "no"}
    assert waiting_at(rt, pid) == ("weakness", 0)


# ---- "no new numbness", "no changes", "all good" -----------------------------------------------

@pytest.mark.parametrize("text", [
    "no new numbness", "No new numbness or tingling", "no changes", "No change thanks",
    "nothing has changed", "same as before", "Same as before x", "all good", "no all good",
    "No, all good"])
def test_no_change_in_everyday_words_to_an_any_new_question_is_a_no(client, rt, fake_http,
                                                                  text):
    """ "No new numbness", "no changes", "same as before", "all good" to "have you had any new
    numbness...?" were "Sorry, we did not understand" (a try used): each says there is
    nothing new, a no. No alert is raised and the next question is asked."""
    from bot.store.models import Escalation

    pid = _at_numbness_question(rt, client, fake_http)
    texted(client, text)
    assert answers(rt, pid) == {"worst_pain": 0, "numbness": "no"}
    assert waiting_at(rt, pid) == ("weakness", 0)
    with rt.transaction() as s:
        assert s.scalars(select(Escalation)).all() == []


def test_no_new_symptom_is_a_no_only_to_the_question_about_that_symptom(client, rt, fake_http):
    """Each "any new ...?" question takes its own symptom: "no new weakness" to the weakness
    question, "no new problems" to the bladder one; "no new numbness" to "any new weakness?"
    says nothing of weakness and is asked again."""
    pid = _at_numbness_question(rt, client, fake_http)
    texted(client, "no new numbness")
    texted(client, "no new numbness")
    assert waiting_at(rt, pid) == ("weakness", 1)
    texted(client, "no new weakness")
    texted(client, "no")  # balance
    texted(client, "no new problems")  # bladder
    texted(client, "No new bowel problems")
    texted(client, "no new numbness")  # saddle
    assert answers(rt, pid) == {"worst_pain": 0, "numbness": "no", "weakness": "no",
                                "balance": "no", "bladder": "no", "bowel": "no", "saddle": "no"}
    assert waiting_at(rt, pid) == ("fever", 0)


@pytest.mark.parametrize("text", [
    "same as before but worse", "no new numbness but my toes tingle", "all good but numb",
    "no changes, still numb", "fine", "I'm fine", "not sure, same as before?",
    "not all good", "it's not the same as before", "isnt all good"])
def test_a_no_change_reply_that_takes_it_back_or_says_less_is_no_no(client, rt, fake_http,
                                                                    text):
    """At a red-flag question a wrong no misses the red flag: a reply that says more than no
    change ("but worse", "still numb"), takes it back ("not all good", "it's not the same as
    before": these were read as a no, the "not" taken for the answer and the rest for its
    reason) or only says "fine" is no no; it is asked again (or alerts, when triage reads a
    red flag in it)."""
    pid = _at_numbness_question(rt, client, fake_http)
    texted(client, text)
    assert "numbness" not in answers(rt, pid)
    assert waiting_at(rt, pid) in (("numbness", 1), (None, 0))


# ---- the tiredness scale in everyday words ---------------------------------------------------

def _at_fatigue_question(rt, client, fake_http) -> int:
    pid = _at_pain_question(rt, fake_http)
    for reply in ("0", "no", "no", "no", "no", "no", "no", "no"):  # no pain ... no fever
        texted(client, reply)
    assert waiting_at(rt, pid) == ("fatigue", 0)
    fake_http.reset()
    return pid


@pytest.mark.parametrize(("text", "value"), [
    ("not much", "a_little"), ("Not very much", "a_little"), ("not a lot", "a_little"),
    ("slightly", "a_little"), ("hardly", "a_little"), ("barely x", "a_little"),
    ("a little", "a_little"), ("very", "very_much"), ("Very tired", "very_much"),
    ("loads", "very_much"), ("no mucho", "a_little"), ("muy cansada", "very_much")])
def test_everyday_amounts_at_the_tiredness_question_are_read_on_its_scale(
        client, rt, fake_http, text, value):
    """To "how much did tiredness get in the way? Reply 1 not at all, 2 a little, ... 5 very
    much", "not much", "slightly", "very" were "Sorry, we did not understand" (a try used).
    "Not much" is some, so a little (as "casi nada" already was), never not at all; "very"
    is very much."""
    pid = _at_fatigue_question(rt, client, fake_http)
    texted(client, text)
    assert answers(rt, pid)["fatigue"] == value
    assert waiting_at(rt, pid) == ("anything_else", 0)


@pytest.mark.parametrize("text", ["not very", "not really", "very little or a lot"])
def test_unclear_amounts_at_the_tiredness_question_are_asked_again(client, rt, fake_http,
                                                                   text):
    pid = _at_fatigue_question(rt, client, fake_http)
    texted(client, text)
    assert "fatigue" not in answers(rt, pid)
    assert waiting_at(rt, pid) == ("fatigue", 1)


# ---- "7, no its not new" ---------------------------------------------------------------------

@pytest.mark.parametrize("text", ["7, no its not new", "7, no not new", "7 and its not new",
                                  "7. No it's not new"])
def test_a_score_then_not_new_answers_both(client, rt, fake_http, text):
    """ "7, no its not new" to the pain score was not understood as a whole (its second part,
    "no its not new", was no answer to "is this pain new?"), while "8, no, same as usual"
    was read as both. It is read as both now: 7, and not new."""
    pid = _at_pain_question(rt, fake_http)
    texted(client, text)
    assert answers(rt, pid) == {"worst_pain": 7, "pain_new": "no"}
    assert sent(fake_http) == [PAIN_NIGHT]
    assert waiting_at(rt, pid) == ("pain_night", 0)


@pytest.mark.parametrize("text", ["no its not new", "not new", "Its not new thanks"])
def test_not_new_alone_to_is_this_pain_new_is_a_no(client, rt, fake_http, text):
    pid = _at_pain_question(rt, fake_http)
    texted(client, "6")
    texted(client, text)
    assert answers(rt, pid) == {"worst_pain": 6, "pain_new": "no"}


@pytest.mark.parametrize("text", ["not new, different", "not new but worse", "its not new its worse",
                                  "7, not new but different", "no, different"])
def test_not_new_but_different_to_is_this_pain_new_is_no_no(client, rt, fake_http, text):
    """ "Is this pain new, or different from your usual pain?": "not new, different" is a yes
    to its second half, no no: asked again ("no, different" was read as a no: "different" was
    taken for the no's reason)."""
    pid = _at_pain_question(rt, fake_http)
    if not text.startswith("7"):
        texted(client, "6")
    texted(client, text)
    assert "pain_new" not in answers(rt, pid)
