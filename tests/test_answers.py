"""Parsing patients' replies: yes/no, integers, numbered choices, free text."""

import pytest

from bot.domain.answers import (
    AMBIGUOUS,
    EMPTY,
    NOT_A_CHOICE,
    NOT_A_NUMBER,
    NOT_YES_NO,
    OUT_OF_RANGE,
    ParseResult,
    parse_choice,
    parse_integer,
    parse_text,
    parse_yesno,
)

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
        ("👍", EMPTY),
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
