"""Parse a patient's reply to a question: yes/no, an integer, a numbered choice, or free text.

Every parser returns a ParseResult and never raises. A reply that could mean two things
("7-8", "yes and no", "1 or 2") is not understood: the flow re-prompts rather than guesses.
Words of every supported language (en, es) are accepted whatever the patient's language,
because patients mix them ("si", "ok 7").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from unidecode import unidecode

# Reasons a reply was not understood.
EMPTY = "empty"
AMBIGUOUS = "ambiguous"
NOT_YES_NO = "not_yes_no"
NOT_A_NUMBER = "not_a_number"
OUT_OF_RANGE = "out_of_range"
NOT_A_CHOICE = "not_a_choice"


@dataclass(frozen=True)
class ParseResult:
    """ok=True with a value, or ok=False with a reason (one of the constants above)."""

    ok: bool
    value: str | int | None = None
    reason: str | None = None

    @classmethod
    def understood(cls, value: str | int) -> ParseResult:
        return cls(ok=True, value=value)

    @classmethod
    def not_understood(cls, reason: str) -> ParseResult:
        return cls(ok=False, reason=reason)


YES_WORDS = {
    "en": {"y", "yes", "yeah", "yea", "yep", "yup", "ya", "yah", "aye", "sure", "correct"},
    "es": {"si", "sip", "claro"},
}
NO_WORDS = {
    "en": {"n", "no", "nope", "nah", "naw", "not", "dont", "none", "never", "nothing"},
    "es": {"no", "nop", "nada", "ninguno", "ninguna", "nunca", "tampoco"},
}
# Words that may stand beside a yes or a no without changing it.
FILLER_WORDS = {
    "en": {"please", "pls", "plz", "thanks", "thank", "thankyou", "thx", "ty", "you", "ta",
           "cheers", "i", "im", "am", "do", "did", "have", "it", "its", "is", "really", "at",
           "all", "and", "a", "the", "indeed", "definitely", "absolutely", "of", "course", "oh"},
    "es": {"por", "favor", "gracias", "muchas", "yo", "lo", "es", "de", "verdad", "mucho"},
}
NUMBER_WORDS = {
    "en": ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
           "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
           "eighteen", "nineteen", "twenty"],
    "es": ["cero", "uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve",
           "diez", "once", "doce", "trece", "catorce", "quince", "dieciseis", "diecisiete",
           "dieciocho", "diecinueve", "veinte"],
}
# Said instead of a number for "how much / how many": no pain, none.
ZERO_WORDS = {"no", "none", "nil", "nada", "ninguno", "ninguna"}
# A number followed by one of these and another number is a score ("7 out of 10", "7 de 10").
SCORE_LINKS = {("/",), ("out", "of"), ("of",), ("de",), ("sobre",)}
MAX_CHOICE_WORDS = 40  # a longer reply is a message, not a pick from a list
# Leftover words that turn a picked option round ("not done", "I haven't taken them yet").
# tokens() drops apostrophes (straight or curly), so "haven't", "haven’t" and "havent" are one.
NEGATIONS = {
    "no", "not", "never", "nunca", "tampoco", "cannot",
    "dont", "didnt", "doesnt", "cant", "wont", "aint",
    "havent", "hasnt", "hadnt", "isnt", "arent", "wasnt", "werent",
    "couldnt", "wouldnt", "shouldnt", "mustnt", "neednt",
    "havnt", "didint", "dident", "doesint", "wasent", "isint", "couldent", "wouldent",
}
# "haven t" (the apostrophe typed as a space or lost): the word before a lone "t".
_NT_STEMS = {word[:-1] for word in NEGATIONS if word.endswith("nt")} | {"don", "won"}


def _union(table: dict[str, set[str]]) -> frozenset[str]:
    return frozenset(word for words in table.values() for word in words)


_YES = _union(YES_WORDS)
_NO = _union(NO_WORDS)
_FILLER = _union(FILLER_WORDS)
_NUMBERS = {word: value for words in NUMBER_WORDS.values() for value, word in enumerate(words)}
_NUMBERS.update({word: 0 for word in ZERO_WORDS})
_TOKEN = re.compile(r"\d+|[a-z]+|/", re.ASCII)


def tokens(text: str) -> list[str]:
    """Lower-case ASCII words, digit runs and slashes of `text` (accents and apostrophes gone)."""
    plain = unidecode(text).lower().replace("'", "").replace("`", "")
    return _TOKEN.findall(plain)


def _squeeze(word: str) -> str:
    """'yesss' -> 'yes', 'nooo' -> 'no'."""
    return re.sub(r"(.)\1+", r"\1", word)


def parse_yesno(text: str) -> ParseResult:
    """"yes"/"no" from a reply made only of yes (or only of no) words and polite filler."""
    words = tokens(text)
    if not words:
        return ParseResult.not_understood(EMPTY)
    saw_yes = saw_no = False
    for word in words:
        if word in _YES or _squeeze(word) in _YES:
            saw_yes = True
        elif word in _NO or _squeeze(word) in _NO:
            saw_no = True
        elif word not in _FILLER:
            return ParseResult.not_understood(NOT_YES_NO)
    if saw_yes and saw_no:
        return ParseResult.not_understood(AMBIGUOUS)
    if saw_yes:
        return ParseResult.understood("yes")
    if saw_no:
        return ParseResult.understood("no")
    return ParseResult.not_understood(NOT_YES_NO)


def _number(word: str) -> int | None:
    if word.isdigit():
        return int(word[:9])  # nobody means a ten-digit answer; keeps int() cheap
    return _NUMBERS.get(word)


def _numbers_with_positions(words: list[str]) -> list[tuple[int, int]]:
    """(position, value) of each number in `words`, skipping the "/10" of a "7/10" score."""
    found: list[tuple[int, int]] = []
    i = 0
    while i < len(words):
        value = _number(words[i])
        if value is None:
            i += 1
            continue
        found.append((i, value))
        i += 1
        for link in SCORE_LINKS:
            after = i + len(link)
            if (
                tuple(words[i:after]) == link
                and after < len(words)
                and _number(words[after]) is not None
            ):
                i = after + 1
                break
    return found


def parse_integer(text: str, minimum: int | None = None, maximum: int | None = None) -> ParseResult:
    """The one whole number in a reply ("7", "7/10", "about 6", "seven", "siete")."""
    words = tokens(text)
    if not words:
        return ParseResult.not_understood(EMPTY)
    values = {value for _, value in _numbers_with_positions(words)}
    if not values:
        return ParseResult.not_understood(NOT_A_NUMBER)
    if len(values) > 1:
        return ParseResult.not_understood(AMBIGUOUS)
    value = values.pop()
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        return ParseResult.not_understood(OUT_OF_RANGE)
    return ParseResult.understood(value)


def _phrase_spans(words: list[str], phrase: list[str]) -> list[range]:
    size = len(phrase)
    if size == 0:
        return []
    starts = range(len(words) - size + 1)
    return [range(i, i + size) for i in starts if words[i : i + size] == phrase]


def parse_choice(text: str, options: Sequence[Sequence[str]]) -> ParseResult:
    """The 1-based number of the option chosen by number ("2", "#2", "two") or by its own words.

    `options[i]` lists the words or phrases that mean option i+1.
    """
    words = tokens(text)
    if not words:
        return ParseResult.not_understood(EMPTY)
    if len(words) > MAX_CHOICE_WORDS:
        return ParseResult.not_understood(NOT_A_CHOICE)
    hits = [
        (span, index)
        for index, phrases in enumerate(options, start=1)
        for phrase in phrases
        for span in _phrase_spans(words, tokens(phrase))
    ]
    chosen: set[int] = set()
    matched: set[int] = set()
    for span, index in hits:
        # "a bit" inside "quite a bit" belongs to the longer phrase only.
        inside_longer = any(
            len(other) > len(span) and set(span) <= set(other) for other, _ in hits
        )
        if not inside_longer:
            chosen.add(index)
            matched.update(span)
    out_of_range = False
    for position, value in _numbers_with_positions(words):
        if position in matched:
            continue
        if 1 <= value <= len(options):
            chosen.add(value)
            matched.add(position)
        else:
            out_of_range = True
    if len(chosen) > 1:
        return ParseResult.not_understood(AMBIGUOUS)
    if not chosen:
        return ParseResult.not_understood(OUT_OF_RANGE if out_of_range else NOT_A_CHOICE)
    if _negated(words, matched) or out_of_range:
        return ParseResult.not_understood(AMBIGUOUS)  # "not done", "2 not 3"
    return ParseResult.understood(chosen.pop())


def _negated(words: list[str], matched: set[int]) -> bool:
    """A negation among the words that did not pick the option ("not", "haven't", "haven t")."""
    for position, word in enumerate(words):
        if position in matched:
            continue
        if word in NEGATIONS:
            return True
        if (word == "t" and position > 0 and position - 1 not in matched
                and words[position - 1] in _NT_STEMS):
            return True
    return False


def parse_text(text: str) -> ParseResult:
    """Any reply with something in it, stripped of surrounding blanks."""
    stripped = text.strip()
    if not stripped:
        return ParseResult.not_understood(EMPTY)
    return ParseResult.understood(stripped)


def parse_answer(
    answer_type: str,
    text: str,
    minimum: int | None = None,
    maximum: int | None = None,
    options: Sequence[Sequence[str]] = (),
) -> ParseResult:
    """Parse by answer type: "yesno", "integer" (min/max), "choice" (1-based number), "text"."""
    if answer_type == "yesno":
        return parse_yesno(text)
    if answer_type == "integer":
        return parse_integer(text, minimum, maximum)
    if answer_type == "choice":
        return parse_choice(text, options)
    return parse_text(text)
