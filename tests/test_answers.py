"""Parsing patients' replies: yes/no, integers, numbered choices, free text."""

import functools

import pytest

from bot.config import REPO_ROOT
from bot.domain.answers import (
    AMBIGUOUS,
    EMPTY,
    NOT_A_CHOICE,
    NOT_A_NUMBER,
    NOT_YES_NO,
    OUT_OF_RANGE,
    ParseResult,
    asks_the_team,
    parse_choice,
    parse_integer,
    parse_text,
    parse_yesno,
)
from bot.domain.flows import load_flows

YES = ["y", "Y", "Yes.", "yes", "yeah", "YES!!", "yep", "yes please", "si", "sí", "Sí", "SI",
       "yup", "Yesss", "yes, thank you", "yes I do", "sí, por favor", "  yes  "]
NO = ["n", "no", "No.", "no thanks", "nope", "nah", "NO!", "not at all", "no, thank you",
      "nooo", "none", "never", "no gracias", "nada"]


@pytest.mark.parametrize("text", YES)
def test_yes(text):
    assert parse_yesno(text) == ParseResult(ok=True, value="yes")


@pytest.mark.parametrize("text", NO)
def test_no(text):
    assert parse_yesno(text) == ParseResult(ok=True, value="no")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("yes and no", AMBIGUOUS),
        ("yes no", AMBIGUOUS),
        ("maybe", NOT_YES_NO),
        ("I don't know", NOT_YES_NO),
        ("no sé", NOT_YES_NO),
        ("no but my feet are numb", NOT_YES_NO),
        ("ok", NOT_YES_NO),
        ("1", NOT_YES_NO),
        ("", EMPTY),
        ("?!", EMPTY),
        ("👍", NOT_YES_NO),  # what "ok" is: a yes only where a question takes "ok" as one
    ],
)
def test_yesno_not_understood(text, reason):
    assert parse_yesno(text) == ParseResult(ok=False, reason=reason)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("7", 7), ("7/10", 7), ("7 / 10", 7), ("about 6", 6), ("seven", 7), ("siete", 7),
        ("7 out of 10", 7), ("7 of 10", 7), ("7 de 10", 7), ("Seven out of ten", 7),
        ("0", 0), ("zero", 0), ("cero", 0), ("no pain", 0), ("none", 0), ("10/10", 10),
        ("diez", 10), ("it's a 4", 4), ("#3", 3),
    ],
)
def test_integer(text, value):
    assert parse_integer(text, 0, 10) == ParseResult(ok=True, value=value)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("7-8", AMBIGUOUS),
        ("between 7 and 8", AMBIGUOUS),
        ("1 or 2", AMBIGUOUS),
        ("7.5", AMBIGUOUS),
        ("no, 8", AMBIGUOUS),
        ("11", OUT_OF_RANGE),
        ("eleven", OUT_OF_RANGE),
        ("99999999999999999999", OUT_OF_RANGE),
        ("bad", NOT_A_NUMBER),
        ("", EMPTY),
    ],
)
def test_integer_not_understood(text, reason):
    assert parse_integer(text, 0, 10) == ParseResult(ok=False, reason=reason)


@pytest.mark.parametrize("text", ["pain free", "Pain-free today", "painfree", "nothing",
                                  "nothing at all", "it doesnt hurt", "doesn't hurt today",
                                  "not hurting", "no me duele", "no me duele nada", "no duele"])
def test_no_pain_said_in_words_is_a_zero(text):
    """A walkthrough: "pain free" or "no me duele" at the 0-10 pain question was asked again,
    while "no pain" and "sin dolor" were 0."""
    assert parse_integer(text, 0, 10) == ParseResult(ok=True, value=0)


@pytest.mark.parametrize("text", ["not hurting but my legs are numb", "nothing helps",
                                  "it doesnt hurt as much, 6", "no me duele tanto"])
def test_no_pain_words_with_more_are_not_a_zero(text):
    assert parse_integer(text, 0, 10).value != 0


def test_integer_without_bounds():
    assert parse_integer("42").value == 42
    assert parse_integer("42", minimum=50).reason == OUT_OF_RANGE


REMINDER = [["done", "taken", "did it"], ["can't make it", "cannot", "no"]]
FATIGUE = [["not at all", "nada"], ["a little", "a bit", "un poco"], ["somewhat", "algo"],
           ["quite a bit", "bastante"], ["very much", "mucho"]]


@pytest.mark.parametrize(
    ("text", "options", "value"),
    [
        ("2", REMINDER, 2), ("two", REMINDER, 2), ("#2", REMINDER, 2), ("2)", REMINDER, 2),
        ("option 2", REMINDER, 2), ("dos", REMINDER, 2), ("done", REMINDER, 1),
        ("Done!", REMINDER, 1), ("1 done", REMINDER, 1), ("I can't make it", REMINDER, 2),
        ("can’t make it", REMINDER, 2), ("No", REMINDER, 2),
        ("quite a bit", FATIGUE, 4), ("a bit", FATIGUE, 2), ("4 quite a bit", FATIGUE, 4),
        ("not at all", FATIGUE, 1), ("Un poco", FATIGUE, 2), ("5", FATIGUE, 5),
    ],
)
def test_choice(text, options, value):
    assert parse_choice(text, options) == ParseResult(ok=True, value=value)


@pytest.mark.parametrize(
    ("text", "options", "reason"),
    [
        ("1 or 2", REMINDER, AMBIGUOUS),
        ("done, no", REMINDER, AMBIGUOUS),
        ("not done", REMINDER, AMBIGUOUS),
        ("1 done 2", REMINDER, AMBIGUOUS),
        ("not very much", FATIGUE, AMBIGUOUS),
        ("3", REMINDER, OUT_OF_RANGE),
        ("hello", REMINDER, NOT_A_CHOICE),
        ("", REMINDER, EMPTY),
        ("done " * 50, REMINDER, NOT_A_CHOICE),
    ],
)
def test_choice_not_understood(text, options, reason):
    assert parse_choice(text, options) == ParseResult(ok=False, reason=reason)


def test_text():
    assert parse_text("  my back hurts \n") == ParseResult(ok=True, value="my back hurts")
    assert parse_text(" \n ") == ParseResult(ok=False, reason=EMPTY)


@pytest.mark.parametrize("text", [
    "I haven't taken them yet", "I haven\u2019t taken them yet", "I havent taken them",
    "HAVEN\u2018T TAKEN", "haven t taken them yet", "hasn't been done", "wasn't done",
    "isn't done", "couldn't take them, 1", "I wouldn't say done", "shouldn't be taken yet",
    "they aren't taken", "weren't taken", "hadn't taken them", "it doesn't look done",
    "didn`t take them, done later",
])
def test_a_contracted_negation_makes_a_choice_ambiguous(text):
    options = [["done", "taken", "did it", "yes"], ["can't make it", "cannot", "no"]]
    assert parse_choice(text, options) == ParseResult.not_understood(AMBIGUOUS)


@pytest.mark.parametrize(("text", "value"), [
    ("I have taken them", 1), ("taken, thanks", 1), ("I can't make it", 2), ("cannot", 2),
    ("can\u2019t make it", 2),
])
def test_the_option_words_themselves_still_count(text, value):
    options = [["done", "taken", "did it", "yes"], ["can't make it", "cannot", "no"]]
    assert parse_choice(text, options) == ParseResult.understood(value)


# ---- everyday replies ----------------------------------------------------------------------
# The shipped flows' own words, so these tests follow the YAML (flows/welcome.yaml, checkin.yaml).
@functools.cache
def _shipped():
    return load_flows(REPO_ROOT / "flows")


def _consent_words():
    spec = _shipped().get("welcome").node("consent").answer
    return spec.all_yes_words(), spec.all_no_words()


def _fatigue_options():
    spec = _shipped().get("checkin").node("fatigue").answer
    return [option.all_words() for option in spec.options]


@pytest.mark.parametrize("text", ["Yes x", "Yes ok", "yes please", "ok", "okay", "OK!", "yep",
                                  "Ok thanks x", "Yes xxx", "vale", "de acuerdo", "I agree",
                                  "Yes, I agree to that"])
def test_everyday_yes_to_the_consent_question(text):
    yes, no = _consent_words()
    assert parse_yesno(text, yes, no) == ParseResult(ok=True, value="yes")


@pytest.mark.parametrize("text", ["no thanks", "Please stop texting me", "stop please",
                                  "not interested", "no quiero", "deje de escribirme",
                                  "No thanks x"])
def test_everyday_no_to_the_consent_question(text):
    yes, no = _consent_words()
    assert parse_yesno(text, yes, no) == ParseResult(ok=True, value="no")


@pytest.mark.parametrize("text", ["ok no", "yes stop", "ok, stop texting me", "I'm fine"])
def test_consent_replies_that_say_both_or_neither_are_not_understood(text):
    yes, no = _consent_words()
    assert not parse_yesno(text, yes, no).ok


@pytest.mark.parametrize("text", ["ok", "okay", "I'm ok", "ok x", "stop texting me"])
def test_ok_is_yes_to_the_consent_question_only(text):
    # "I'm ok" to "any new weakness?" means no; "ok" may mean yes: neither is guessed there.
    yes, no = _consent_words()
    assert parse_yesno(text, yes, no).ok
    assert parse_yesno(text) == ParseResult(ok=False, reason=NOT_YES_NO)


@pytest.mark.parametrize(("text", "value"), [
    ("Not really, the tablets help x", "no"), ("Not really. The tablets help", "no"),
    ("No, the tablets help x", "no"), ("Nope - all good", "no"),
    ("No, las pastillas me ayudan", "no"), ("Yes x", "yes"), ("No x", "no"),
    ("yes ok", "yes"), ("Yes, a little", "yes"), ("Yes, but only a bit", "yes"),
    ("si, un poco", "yes"),
])
def test_a_clear_answer_then_a_reason(text, value):
    assert parse_yesno(text) == ParseResult(ok=True, value=value)


@pytest.mark.parametrize(("text", "taken_back"), [
    # A red flag or a "but" after the no: never a plain no (triage reads the whole message).
    ("No, the tablets help", "no but my legs are weak"),
    ("No, the tablets help", "No, but my legs are weak"),
    ("No, the tablets help", "No, my legs are weak"),
    ("No, the tablets help", "No, I keep tripping over"),
    ("no, all good", "no, just a little tingling"),
    ("no, all good", "no, only when I cough"),
    ("No, the tablets help", "No, I cant feel my feet"),
    ("No, the tablets help", "No, I can't feel my feet"),
    ("no, las pastillas me ayudan", "no, pero me cuesta andar"),
    ("no, las pastillas me ayudan", "No, me cuesta andar"),
    ("Not really, all good", "Not really, sometimes"),
    ("no, all good", "no, not sure"),
    # A reason that takes the answer back.
    ("yes, a little", "yes, no"), ("yes, a little", "Yes, I don't think so"),
    ("No, all good", "No, yes"),
])
def test_only_a_reason_that_cannot_take_the_answer_back_is_understood(text, taken_back):
    assert parse_yesno(text).ok
    assert not parse_yesno(taken_back).ok


@pytest.mark.parametrize("text", ["no", "No.", "none", "None x", "nope", "para nada",
                                  # were asked again, while "no" and "nope" were taken
                                  "nah", "Nah thanks", "naw", "nop"])
def test_a_plain_no_on_the_tiredness_scale_is_its_lowest_option(text):
    assert parse_choice(text, _fatigue_options()) == ParseResult(ok=True, value=1)


@pytest.mark.parametrize(("text", "value"), [
    # "mucho" was very much, but "a lot" was asked again; both raise the fatigue flag.
    ("a lot", 5), ("A lot!", 5), ("alot", 5), ("lots", 5), ("un monton", 5), ("Un montón", 5),
    ("quite a lot", 4), ("a tiny bit", 2),
    # "not much" is some, so a little (as "casi nada"), never not at all; "very" is very much
    ("not much", 2), ("not very much", 2), ("no mucho", 2), ("very", 5)])
def test_everyday_amounts_on_the_tiredness_scale(text, value):
    assert parse_choice(text, _fatigue_options()) == ParseResult(ok=True, value=value)


@pytest.mark.parametrize("text", ["no, a little", "no 4", "none, 3", "not very",
                                  "no, a lot"])
def test_a_no_with_another_option_on_the_scale_is_not_understood(text):
    options = _fatigue_options()
    assert parse_choice("no", options).ok  # the lowest option, alone
    assert not parse_choice(text, options).ok


@pytest.mark.parametrize(("text", "asks"), [
    ("Can I talk to a nurse?", True), ("who is this", True), ("please ring me", True),
    ("\u00bfQui\u00e9n es?", True), ("quiero hablar con la enfermera", True),
    ("is that normal?", True),
    ("??", False), ("yse", False), ("7-8", False), ("not sure", False), ("", False),
    ("the nurse said you would text me", False),
])
def test_asks_the_team(text, asks):
    assert asks_the_team(text) is asks


@pytest.mark.parametrize("text", ["yse", "Yse!", "yeh", "Yeh x", "yh", "ys", "yesh", "yse please"])
def test_everyday_misspellings_of_yes_are_yes(text):
    # Typed fast on a phone: before, "yse" was not understood and asked again (and three at
    # a red-flag question counted as not understood, not as the YES the patient gave).
    assert parse_yesno(text) == ParseResult(ok=True, value="yes")


def _reminder_options():
    spec = _shipped().get("reminder").node("remind").answer
    return [option.all_words() for option in spec.options]


@pytest.mark.parametrize(("text", "value"), [
    ("Y", 1), ("y", 1), ("yep", 1), ("Yeah", 1), ("yup", 1), ("Yess", 1), ("yea x", 1),
    ("Yep thanks", 1), ("sii", 1),
    ("N", 2), ("n", 2), ("nope", 2), ("Nah", 2), ("nooo", 2), ("Nope, sorry", 2)])
def test_everyday_yes_and_no_to_the_reminder(text, value):
    # "Yes" (done) and "no" (can't make it) were taken, but not the everyday ways of saying
    # them that every YES/NO question takes: "Y", "yep" and "nope" were asked again.
    assert parse_choice(text, _reminder_options()) == ParseResult(ok=True, value=value)


@pytest.mark.parametrize("text", ["yep, no", "Y N", "yes nope"])
def test_an_everyday_yes_beside_a_no_to_the_reminder_is_not_understood(text):
    assert not parse_choice(text, _reminder_options()).ok


@pytest.mark.parametrize(("text", "value"), [
    ("I think so", "yes"), ("think so", "yes"), ("I think so x", "yes"), ("Yes I think so", "yes"),
    ("I don't think so", "no"), ("dont think so", "no"), ("No, I don't think so", "no"),
    ("I do not think so", "no"), ("No I dont think so thanks", "no"),
    # As in Spanish, where "creo que si" and "creo que no" were taken already.
    ("creo que si", "yes"), ("creo que no", "no")])
def test_i_think_so_and_i_dont_think_so_are_a_yes_and_a_no(text, value):
    assert parse_yesno(text) == ParseResult(ok=True, value=value)


@pytest.mark.parametrize("text", ["I think so, I don't think so", "yes, I don't think so",
                                  "no, I think so", "I don't know", "I think", "think"])
def test_i_think_so_beside_its_opposite_or_alone_is_not_understood(text):
    assert not parse_yesno(text).ok


@pytest.mark.parametrize("text", ["It is", "it does", "I have", "I do", "i did", "it has",
                                  "It does x", "I have thanks", "it does sometimes",
                                  # a carer answering for the patient
                                  "she does", "He has", "they are", "It was", "I have a bit"])
def test_the_questions_own_verb_said_as_a_yes_is_a_yes(text):
    # "It doesn't", "I haven't" were a no already; their yes twins were asked again (at
    # "any new numbness?", a yes not taken at once).
    assert parse_yesno(text) == ParseResult(ok=True, value="yes")


@pytest.mark.parametrize("text", ["it does not", "I haven't", "she doesn't", "I do not"])
def test_the_questions_own_verb_said_as_a_no_is_still_a_no(text):
    assert parse_yesno(text) == ParseResult(ok=True, value="no")


@pytest.mark.parametrize("text", ["thank you", "ok thanks", "I am ok", "it", "do", "is it",
                                  "does it", "have I", "I have no idea", "it is what it is"])
def test_words_around_a_yes_alone_are_no_answer(text):
    assert not parse_yesno(text).ok
