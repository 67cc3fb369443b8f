"""Parse a patient's reply to a question: yes/no, an integer, a numbered choice, or free text.

Every parser returns a ParseResult and never raises. A reply that could mean two things
("7-8", "yes and no", "1 or 2") is not understood: the flow re-prompts rather than guesses.
Words of every supported language (en, es) are accepted whatever the patient's language,
because patients mix them ("si", "ok 7").
"""

from __future__ import annotations

import re
import unicodedata
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
    "en": {"y", "yes", "yeah", "yea", "yep", "yup", "ya", "yah", "aye", "sure", "correct",
           # typed fast on a phone: none of these can be taken for a no
           "yse", "yeh", "yh", "ys", "yesh"},
    "es": {"si", "sip", "claro", "supuesto"},
}
# Everyday phrases that say yes or no whole, whatever the question ("claro que si", "para
# nada"): their words count only together, so "creo" or "que" elsewhere changes nothing.
# "I think so" and "I don't think so" are the English "creo que si" and "creo que no" (a
# hedge does not cancel a yes); "think so" inside "don't think so" is no yes.
YES_PHRASES = ("creo que si", "claro que si", "la verdad es que si", "desde luego",
               "think so")
NO_PHRASES = ("creo que no", "claro que no", "la verdad es que no", "para nada",
              "en absoluto", "dont think so", "do not think so")
NO_WORDS = {
    "en": {"n", "no", "nope", "nah", "naw", "not", "dont", "none", "never", "nothing",
           # "No, I haven't", "No it isn't": the question's own verb, said as a no.
           "havent", "hasnt", "hadnt", "didnt", "doesnt", "isnt", "arent", "wasnt", "werent"},
    "es": {"no", "nop", "nada", "ninguno", "ninguna", "nunca", "tampoco"},
}
# Words that may stand beside a yes or a no without changing it.
FILLER_WORDS = {
    "en": {"please", "pls", "plz", "thanks", "thank", "thankyou", "thx", "ty", "you", "ta", "sorry",
           "cheers", "i", "im", "am", "do", "did", "have", "it", "its", "is", "really", "at",
           "all", "and", "a", "the", "indeed", "definitely", "absolutely", "of", "course", "oh",
           # "Yes x" (a kiss), "yes ok": beside a yes or a no only. "ok" alone is no answer
           # ("I'm ok" to "any new weakness?"); a question may make it one (`yes_words`).
           "x", "ok", "okay", "okey", "k",
           # The question's own verb beside a yes or a no: "yes it has", "no I haven't".
           "has", "had", "does", "was", "were", "are",
           # a carer answering for the patient: "no she hasn't", "yes he does"
           "she", "he", "they"},
    "es": {"por", "favor", "gracias", "muchas", "yo", "lo", "es", "de", "verdad", "mucho",
           "vale", "he", "ha", "tengo", "tenido", "tuve", "pues"},
}
# The question's own verb said as a yes ("It does", "I have", "she is"), as "it doesn't" and
# "I haven't" say no: the whole reply is a subject, one of these, then thanks or how much at
# most ("I am ok" is no yes; "I have been fine" no answer).
SUBJECTS = frozenset({"i", "it", "she", "he", "they"})
AUXILIARIES = frozenset({"do", "does", "did", "have", "has", "had", "is", "am", "are", "was",
                         "were"})
AFTER_AUXILIARY = frozenset({"x", "a", "please", "pls", "thanks", "thank", "you", "thx", "ty", "ta",
                             "cheers", "really", "indeed", "definitely", "absolutely"})
# How much or how often, beside a yes: "yes a bit", "yeah sometimes", "si un poco". A yes
# still (to "any new numbness?", the answer that matters). Beside a no, or alone, they may take
# it back ("no, a little"): not understood, asked again.
DEGREE_WORDS = {
    "en": {"bit", "abit", "little", "lil", "slight", "slightly", "sometimes", "occasionally",
           "mild", "mildly", "some", "somewhat", "lot", "alot", "very", "quite", "much"},
    "es": {"un", "poco", "poquito", "poquitin", "algo", "veces", "bastante"},
}
# After a clear yes or no and a break ("Not really, the tablets help"), words that make the
# rest more than a reason for it: "no, but...", "no, only when I cough", "no, just a little".
QUALIFIERS = {
    "en": {"but", "except", "although", "though", "apart", "only", "just", "bit", "little",
           "slight", "slightly", "sometimes", "occasionally", "mild", "mildly", "some", "still",
           "more", "worse", "new", "maybe", "unsure", "know", "if", "or",
           # "not new, different" to "is this pain new, or different from usual?"
           "different",
           # hardly a no: "no, barely", "no, hardly notice it", "no, almost gone"
           "hardly", "barely", "almost"},
    "es": {"pero", "aunque", "excepto", "salvo", "menos", "solo", "poco", "algo", "veces",
           "todavia", "aun", "sigue", "mas", "peor", "nuevo", "nueva", "quizas", "quiza", "tal",
           "casi",  # "no, casi ni lo noto" (I hardly notice it)
           "sabe", "se", "si", "o",
           # doubt after a no: "no estoy seguro", "no sabria decir", "no tengo ni idea",
           # "no me acuerdo", "no c" (texted "no se"): not sure, as "no, not sure" is
           "seguro", "segura", "sabria", "idea", "acuerdo", "recuerdo", "c"},
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
# What may stand beside a zero word said instead of a number ("no pain", "none today"). Any
# other word may turn it into something else ("no idea", "no better", "no relief at all").
ZERO_COMPANIONS = {"pain", "dolor", "today", "hoy", "now", "ahora", "whatsoever", "hay"}
# No pain said in words, instead of a number: "pain free", "it doesn't hurt", "no me duele".
# Only with nothing else but fillers beside it ("not hurting but numb" is no score).
NO_PAIN_REPLIES = (("pain", "free"), ("painfree",), ("nothing",), ("doesnt", "hurt"),
                   ("dont", "hurt"), ("not", "hurting"), ("no", "me", "duele"),
                   ("no", "duele"), ("no", "me", "duele", "nada"))
# Words that say none only in a reply made of nothing else ("sin dolor", "ningun dolor"):
# beside a number they are about something else ("un 8 sin calmantes" is 8).
ZERO_ONLY_WORDS = {"sin", "ningun"}
# A number followed by one of these and another number is a score ("7 out of 10", "7 de 10").
SCORE_LINKS = {("/",), ("out", "of"), ("of",), ("de",), ("sobre",)}
MAX_CHOICE_WORDS = 40  # a longer reply is a message, not a pick from a list
# Leftover words that turn a picked option round ("not ready", "I can't say I took them"); an
# option may list its own negated phrases ("not done", "haven't taken") to be picked by them.
# tokens() drops apostrophes (straight or curly), so "haven't", "haven’t" and "havent" are one.
NEGATIONS = {
    "no", "not", "never", "nunca", "tampoco", "cannot",
    "dont", "didnt", "doesnt", "cant", "wont", "aint",
    "havent", "hasnt", "hadnt", "isnt", "arent", "wasnt", "werent",
    "couldnt", "wouldnt", "shouldnt", "mustnt", "neednt",
    "havnt", "didint", "dident", "doesint", "wasent", "isint", "couldent", "wouldent",
}
# Words that ask something of the clinic rather than answer a question: "can I talk to a
# nurse", "please ring me", "quien es" (see asks_the_team).
TEAM_REQUESTS = {
    "en": ["call me", "ring me", "phone me", "contact me", "talk to", "speak to", "talk with",
           "speak with", "see a nurse", "see the nurse", "see a doctor", "see the doctor",
           "see my doctor", "who is this", "whos this", "who are you"],
    "es": ["llamame", "llameme", "llamenme", "hablar con", "ver a la enfermera",
           "ver al medico", "ver a un medico", "quien es", "quien eres", "quienes son"],
}
# A wish to get no more messages, written in a sentence rather than as the keyword STOP alone
# (which opts out before anything reads it): "please stop texting me", "unsubscribe me".
# Nothing is done on these words alone (a STOP in a sentence may be about anything: "stop the
# tablets?"); the reply says how to stop.
STOP_REQUESTS = {
    "en": ["stop texting", "stop messaging", "stop sending", "stop these texts",
           "stop these messages", "stop the texts", "stop the messages", "unsubscribe",
           "opt out", "dont text me", "do not text me", "dont message me", "do not message me",
           "no more texts", "no more messages", "remove me from your list",
           "remove me from the list", "take me off your list", "take me off the list"],
    "es": ["deje de escribirme", "dejen de escribirme", "deje de enviarme", "dejen de enviarme",
           "dejen de mandarme", "deje de mandarme", "no me escriba", "no me escriban",
           "no me envien", "no me manden", "no quiero mas mensajes", "darme de baja",
           "dar de baja", "quiero la baja"],
}
# ... and the keyword said politely, as the whole message.
STOP_POLITELY = {"en": ["please stop", "stop please", "pls stop", "stop pls", "stop it please"],
                 "es": ["pare por favor", "por favor pare", "paren por favor", "por favor paren"]}
# "haven t" (the apostrophe typed as a space or lost): the word before a lone "t".
_NT_STEMS = {word[:-1] for word in NEGATIONS if word.endswith("nt")} | {"don", "won"}


def _union(table: dict[str, set[str]]) -> frozenset[str]:
    return frozenset(word for words in table.values() for word in words)


_YES = _union(YES_WORDS)
_NO = _union(NO_WORDS)
_FILLER = _union(FILLER_WORDS)
_QUALIFIERS = _union(QUALIFIERS)
_DEGREE = _union(DEGREE_WORDS)
# No words that are only ever an answer. Every other no word may negate the words that follow
# it: "no feeling in my legs", "not able to walk", "dont feel my feet", "no puedo caminar".
_NO_ANSWER_ONLY = frozenset({"n", "nope", "nah", "naw", "nop"})
_NUMBERS = {word: value for words in NUMBER_WORDS.values() for value, word in enumerate(words)}
_NUMBERS.update({word: 0 for word in ZERO_WORDS})
_ZERO_BESIDE = _FILLER | _NO | frozenset(ZERO_WORDS) | frozenset(ZERO_COMPANIONS)
_ZERO_ONLY = frozenset(ZERO_ONLY_WORDS)
_TOKEN = re.compile(r"\d+|[a-z]+|/", re.ASCII)


def tokens(text: str) -> list[str]:
    """Lower-case ASCII words, digit runs and slashes of `text` (accents and apostrophes gone)."""
    plain = unidecode(text).lower().replace("'", "").replace("`", "")
    return _TOKEN.findall(plain)


def _squeeze(word: str) -> str:
    """'yesss' -> 'yes', 'nooo' -> 'no'."""
    return re.sub(r"(.)\1+", r"\1", word)


def _in(word: str, words: frozenset[str]) -> bool:
    return word in words or _squeeze(word) in words


def _phrase_positions(words: list[str], phrases: Sequence[str]) -> set[int]:
    """Positions of `words` inside any of `phrases` ("stop texting me")."""
    return {i for phrase in phrases for span in _phrase_spans(words, tokens(phrase)) for i in span}


def is_yes_or_no_word(word: str) -> bool:
    """Whether a word (as tokens() gives it) is a yes or a no on its own: "yes", "yep",
    "si", "no", "nope", "not"..."""
    return _in(word, _YES) or _in(word, _NO)


def _yesno_words(words: list[str], yes: Sequence[str], no: Sequence[str]) -> ParseResult:
    if not words:
        return ParseResult.not_understood(EMPTY)
    no_at = _phrase_positions(words, no)
    yes_at = _phrase_positions(words, yes) - no_at  # "think so" in "dont think so"
    saw_yes, saw_no = bool(yes_at), bool(no_at)
    saw_degree = False
    for position, word in enumerate(words):
        if position in yes_at or position in no_at:
            continue
        if _in(word, _YES):
            saw_yes = True
        elif _in(word, _NO):
            saw_no = True
        elif word in _DEGREE:
            saw_degree = True
        elif not _in(word, _FILLER):
            return ParseResult.not_understood(NOT_YES_NO)
    if saw_yes and saw_no:
        return ParseResult.not_understood(AMBIGUOUS)
    if saw_degree and not saw_yes:
        return ParseResult.not_understood(NOT_YES_NO)  # "no a bit", "sometimes"
    if saw_yes:
        return ParseResult.understood("yes")
    if saw_no:
        return ParseResult.understood("no")
    return ParseResult.not_understood(NOT_YES_NO)


def _negated_phrase(words: list[str], at: set[int]) -> bool:
    """Whether a phrase at positions `at` follows a negation, filler between at most: "not
    all good", "its not the same as before", "isnt all good". A plain "no" before it is an
    answer, not its negation ("no all good", "no nothing new")."""
    for start in (i for i in at if i - 1 not in at):
        before = start - 1
        while before >= 0 and words[before] != "no" and _in(words[before], _FILLER):
            before -= 1
        if before >= 0 and words[before] != "no" and (
                words[before] in NEGATIONS or words[before] == "t"):
            return True
    return False


_CLAUSE_BREAK = re.compile(r"[,.;:!?()\n]|\s-+\s")


def _split_answer(text: str, yes: Sequence[str], no: Sequence[str]) -> tuple[ParseResult, str]:
    """(what the reply opens with, the rest): split at the first break ("no, the tablets
    help") or, with none, after its opening yes or no and filler ("yes its new")."""
    match = _CLAUSE_BREAK.search(text)
    while match is not None and not tokens(text[: match.start()]):
        match = _CLAUSE_BREAK.search(text, match.end())  # "...no, thanks": skip leading marks
    if match is not None:
        return _yesno_words(tokens(text[: match.start()]), yes, no), text[match.end():]
    words = tokens(text)
    opening = 0
    while opening < len(words) and _in(words[opening], _YES | _NO | _FILLER):
        opening += 1
    if (0 < opening < len(words) and _in(words[opening - 1], _NO)
            and not _in(words[opening - 1], _NO_ANSWER_ONLY)):
        # With no break after it, a no right before the rest is the rest's own negation, not
        # an answer and its reason: "no feeling in my legs" is numbness, "no idea" no answer.
        return ParseResult.not_understood(NOT_YES_NO), ""
    return _yesno_words(words[:opening], yes, no), " ".join(words[opening:])


def _answer_then_reason(text: str, yes: Sequence[str], no: Sequence[str]) -> ParseResult | None:
    """ "Not really, the tablets help", "yes its new": a clear yes or no, then a reason that
    does not take it back. None when the reply is not of that shape or the reason may take
    it back."""
    lead, reason_text = _split_answer(text, yes, no)
    reason = tokens(reason_text)
    if not lead.ok or not reason:
        return None
    other = yes if lead.value == "no" else no
    if _phrase_positions(reason, other) or any(
            _in(w, _YES) or _in(w, _NO) or w in NEGATIONS or w == "t" for w in reason):
        return None  # "no, yes", "yes, I don't think so", "no, I can't feel my feet"
    if lead.value == "no":
        if any(w in _QUALIFIERS or w in _DEGREE for w in reason):
            return None  # "no, but...", "no, only when I cough", "not a lot" (how much)
        # A red flag in the reason is not a no, whatever triage made of the whole message
        # (it has run already, on every message, before the conversation sees it).
        from bot.domain.triage import detect

        if detect(reason_text).level != "routine":
            return None  # "no, my legs are weak"
    return lead


def parse_yesno(text: str, yes_words: Sequence[str] = (), no_words: Sequence[str] = (),
                reasons: bool = True) -> ParseResult:
    """"yes"/"no" from a reply made only of yes (or only of no) words and polite filler, or
    from a clear yes or no followed by a reason ("Not really, the tablets help x"); with
    `reasons` False, only the former (a plain "yes please").

    `yes_words` and `no_words` are a question's own phrases ("ok" to agree; "stop texting me"),
    besides the everyday YES_PHRASES and NO_PHRASES.
    """
    yes_words, no_words = (*yes_words, *YES_PHRASES), (*no_words, *NO_PHRASES)
    words = tokens(text) or (["ok"] if _only_ok_emoji(text) else [])
    for piece in _CLAUSE_BREAK.split(text):
        said = tokens(piece)
        no_at = _phrase_positions(said, no_words)
        if _negated_phrase(said, no_at) or _negated_phrase(
                said, _phrase_positions(said, yes_words) - no_at):
            # "not all good", "its not the same as before": the phrase is taken back, and no
            # reading of the rest may find a no in it.
            return ParseResult.not_understood(NOT_YES_NO)
    result = _yesno_words(words, yes_words, no_words)
    if not result.ok and result.reason == NOT_YES_NO and _affirms(words):
        return ParseResult.understood("yes")
    if result.ok or result.reason != NOT_YES_NO or not reasons:
        return result
    return _answer_then_reason(text, yes_words, no_words) or result


def _affirms(words: list[str]) -> bool:
    """ "It does", "I have", "she is", "it does sometimes": see SUBJECTS."""
    return (len(words) >= 2 and words[0] in SUBJECTS and words[1] in AUXILIARIES
            and all(w in AFTER_AUXILIARY or w in _DEGREE for w in words[2:]))


def _number(word: str) -> int | None:
    if word.isdigit():
        return int(word[:9])  # nobody means a ten-digit answer; keeps int() cheap
    return _NUMBERS.get(word)


def _numbers_with_positions(words: list[str], scale: int | None = None) -> list[tuple[int, int]]:
    """(position, value) of each number in `words`, skipping the "/10" of a "7/10" score: the
    top of the question's `scale` when it has one ("6/7" on a 0 to 10 scale is 6 or 7)."""
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
                and (scale is None or _number(words[after]) == scale)
            ):
                i = after + 1
                break
    return found


def parse_integer(text: str, minimum: int | None = None, maximum: int | None = None) -> ParseResult:
    """The one whole number in a reply ("7", "7/10", "about 6", "seven", "siete")."""
    words = tokens(text)
    if not words:
        return ParseResult.not_understood(EMPTY)
    found = _numbers_with_positions(words, maximum)
    values = {value for _, value in found}
    if not values and "dolor" in words and not _ZERO_ONLY.isdisjoint(words) and all(
            _in(word, _ZERO_BESIDE | _ZERO_ONLY) for word in words):
        values = {0}  # "sin dolor", "ningun dolor": nothing but no pain said
    elif not values and _says_no_pain(words):
        values = {0}  # "pain free", "it doesnt hurt", "no me duele"
    elif not values:
        return ParseResult.not_understood(NOT_A_NUMBER)
    elif all(words[position] in ZERO_WORDS for position, _ in found) and not all(
            _in(word, _ZERO_BESIDE) for word in words) and not _says_no_pain(words):
        return ParseResult.not_understood(NOT_A_NUMBER)  # "no idea", "no better"
    if len(values) > 1:
        return ParseResult.not_understood(AMBIGUOUS)
    value = values.pop()
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        return ParseResult.not_understood(OUT_OF_RANGE)
    return ParseResult.understood(value)


def _says_no_pain(words: list[str]) -> bool:
    """One of NO_PAIN_REPLIES, and nothing but what may stand beside a zero."""
    covered = {i for phrase in NO_PAIN_REPLIES for span in _phrase_spans(words, list(phrase))
               for i in span}
    return bool(covered) and all(_in(word, _ZERO_BESIDE) for i, word in enumerate(words)
                                 if i not in covered)


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
    plain = _plain_yes_no_option(text, options)
    if plain is not None:
        return ParseResult.understood(plain)
    # A phrase is said within one part of the reply: "not yet done" is no phrase in "Not
    # yet. Done now" (which says both, and is asked again).
    part = [index for index, piece in enumerate(_CLAUSE_BREAK.split(text))
            for _ in tokens(piece)]
    hits = [
        (span, index)
        for index, phrases in enumerate(options, start=1)
        for phrase in phrases
        for span in _phrase_spans(words, tokens(phrase))
        if len(part) != len(words) or part[span[0]] == part[span[-1]]
    ]
    chosen: set[int] = set()
    matched: set[int] = set()
    # Options picked by a real phrase or a number, not only by a bare yes or no word.
    picked_plainly: set[int] = set()
    for span, index in hits:
        # "a bit" inside "quite a bit" belongs to the longer phrase only.
        inside_longer = any(
            len(other) > len(span) and set(span) <= set(other) for other, _ in hits
        )
        if not inside_longer:
            chosen.add(index)
            matched.update(span)
            if not all(_in(words[i], _YES | _NO) for i in span):
                picked_plainly.add(index)
    out_of_range = False
    for position, value in _numbers_with_positions(words, len(options)):
        if position in matched:
            continue
        if 1 <= value <= len(options):
            chosen.add(value)
            matched.add(position)
            picked_plainly.add(value)
        else:
            out_of_range = True
    if len(chosen) > 1:
        return ParseResult.not_understood(AMBIGUOUS)
    if not chosen:
        return ParseResult.not_understood(OUT_OF_RANGE if out_of_range else NOT_A_CHOICE)
    if _negated(words, matched) or out_of_range:
        return ParseResult.not_understood(AMBIGUOUS)  # "not done", "2 not 3"
    choice = chosen.pop()
    if _says_the_other(words, matched, options, choice):
        return ParseResult.not_understood(AMBIGUOUS)  # "nope, done", "yeah, forgot"
    same = _YES if any(_in(words[i], _YES) for i in matched) else _NO
    if choice not in picked_plainly and not all(
            position in matched or _in(word, _FILLER | same)
            for position, word in enumerate(words)):
        # Only a yes or no word picked it, and the rest says more: "no energy", "no problem".
        return ParseResult.not_understood(NOT_A_CHOICE)
    return ParseResult.understood(choice)


# The words that make an option the plain yes (or no) of a reminder's "done" / "can't".
_PLAIN_OPTION_WORDS = {"yes": ({"yes"}, {"si"}), "no": ({"no"},)}


def _plain_picks(options: Sequence[Sequence[str]]) -> dict[str, int] | None:
    """{"yes": the option a plain yes picks, "no": the one a plain no picks} for options that
    are a yes and a no (one option lists a plain "yes" or "si", one a plain "no": the
    reminder's done / can't); None for other options (a scale)."""
    picks = {answer: [index for index, phrases in enumerate(options, start=1)
                      if any(set(tokens(phrase)) in plain for phrase in phrases)]
             for answer, plain in _PLAIN_OPTION_WORDS.items()}
    if any(len(picked) != 1 for picked in picks.values()):
        return None
    return {answer: picked[0] for answer, picked in picks.items()}


def _plain_yes_no_option(text: str, options: Sequence[Sequence[str]]) -> int | None:
    """For options that are a yes and a no (see _plain_picks), the one a reply made only of a
    yes (or only of a no) picks: "Y", "yep", "nope", as every YES/NO question reads them.
    None otherwise (the reply is read as the options' words: on a scale, "no mucho" is no
    plain no)."""
    picks = _plain_picks(options)
    if picks is None:
        return None
    said = parse_yesno(text, reasons=False)
    return picks[str(said.value)] if said.ok else None


def _says_the_other(words: list[str], matched: set[int], options: Sequence[Sequence[str]],
                    choice: int) -> bool:
    """For options that are a yes and a no (see _plain_picks), whether a word beside the one
    that picked `choice` is a yes or a no that picks the other: "nope, done" or "nah all
    good" to "reply 1 if done, or 2 if you can't make it" says both ("yep, forgot" too), and
    is asked again. A yes beside "done" or a no beside "forgot" agrees with it."""
    picks = _plain_picks(options)
    if picks is None:
        return False
    for position, word in enumerate(words):
        if position in matched:
            continue
        # "n" is left out: texted, it is as often "and" ("took them n done").
        said = ("yes" if _in(word, _YES) else
                "no" if _in(word, _NO_ANSWER_ONLY) and word != "n" else None)
        if said is not None and picks[said] != choice:
            return True
    return False


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


def asks_the_team(text: str) -> bool:
    """Whether a reply asks something of the clinic: a question ("who is this?", "es
    normal?") or a request to talk to someone ("please ring me", "can I see a nurse"). Says
    nothing of whether it also answers a question: ask the parser that."""
    words = tokens(text)
    if not words:
        return False  # "??"
    return "?" in text or "\u00bf" in text or bool(
        _phrase_positions(words, [p for phrases in TEAM_REQUESTS.values() for p in phrases]))


# A whole message that only thanks or says it heard ("Thanks!", "ok", "muchas gracias", a
# thumbs up): see is_thanks. Emoji only of these kinds: a crying face is no thank-you.
THANKS_WORDS = frozenset({
    "thanks", "thank", "you", "thankyou", "thanx", "thx", "ty", "ta", "cheers", "ok", "okay",
    "okey", "k", "kk", "x", "xx", "xxx", "so", "very", "much", "many", "lots", "great",
    "lovely", "brilliant", "perfect", "fab", "fine", "noted", "will", "do", "got", "it", "again",
    "love", "luv", "all", "received", "gracias", "muchas", "muchisimas", "mil", "vale",
    "perfecto", "genial", "de", "acuerdo", "entendido", "besos", "un", "saludo",
    "saludos", "abrazo", "u", "thats", "that", "kind", "appreciated", "appreciate", "bye",
    "night", "nite", "morning", "goodnight", "good"})
_THANKS_EMOJI = re.compile(
    "[\U0001F44D\U0001F44C\U0001F64F\u2764\u2665\U0001F60A\U0001F642\u263A\U0001F600"
    "\U0001F601\U0001F603\U0001F604\U0001F495\U0001F496\U0001F497\U0001F499\U0001F49A"
    "\U0001F49B\U0001F49C\U0001F970\U0001F618\u2705\U0001F44F\U0001F917]")
_EMOJI_TRIMMINGS = re.compile("[\uFE0F\u200D\U0001F3FB-\U0001F3FF]")
_THANKS_MARKS = re.compile(r"[\s.,!:;*~-]")
_THANKS_ONLY = frozenset({"thanks", "thank", "thankyou", "thanx", "thx", "ty", "ta", "cheers",
                          "ok", "okay", "okey", "k", "kk", "gracias", "vale", "noted",
                          "received", "entendido", "perfecto", "genial", "perfect", "great",
                          "lovely", "brilliant", "fab"})


def is_thanks(text: str) -> bool:
    """Whether a whole message only thanks, or says it heard: "Thanks!", "ok thanks x",
    "muchas gracias", a thumbs up or a heart. Not "thanks for nothing", "ok?", "not ok",
    nor a crying face: anything more than thanks is a message like any other."""
    if "?" in text or "\u00bf" in text:
        return False
    rest = _THANKS_MARKS.sub("", _EMOJI_TRIMMINGS.sub("", _THANKS_EMOJI.sub("", text)))
    if not all(ch.isalpha() or ch in "'`" for ch in rest):  # any other emoji, digit or mark
        return False
    words = tokens(text)
    emoji = bool(_THANKS_EMOJI.search(text))
    return (emoji or any(w in _THANKS_ONLY for w in words)) and all(
        _in(w, THANKS_WORDS) for w in words)


# Emoji that say "ok" when sent alone: a thumbs up, an OK hand, a check mark. To a YES/NO
# question they are what "ok" is: a yes where the question takes "ok" as one (the consent
# question's `yes_words`), and elsewhere no answer ("ok" to "any new weakness?" could mean
# either), asked again without using a try (see only_emoji).
_OK_EMOJI = re.compile("[\U0001F44D\U0001F44C\u2705\u2714]")


def _only_ok_emoji(text: str) -> bool:
    rest = _THANKS_MARKS.sub("", _EMOJI_TRIMMINGS.sub("", _OK_EMOJI.sub("", text)))
    return bool(_OK_EMOJI.search(text)) and not rest


def only_emoji(text: str) -> bool:
    """Whether a reply is emoji (with marks at most) and no word or number: "\U0001F642",
    "\U0001F44D\U0001F44D", "\u2764\ufe0f!". It is no answer to any question, and is asked
    again without using a try. Marks alone ("??", "...") are not: a patient puzzled by the
    question, a reply not understood like any other."""
    return not tokens(text) and any(unicodedata.category(ch) == "So" for ch in text)


def asks_to_stop(text: str) -> bool:
    """Whether a text asks for no more messages in words ("please stop texting me", "dejen
    de escribirme"), not as the keyword STOP on its own."""
    words = tokens(text)
    return bool(words) and (
        any(words == tokens(p) for phrases in STOP_POLITELY.values() for p in phrases)
        or bool(_phrase_positions(words, [p for ps in STOP_REQUESTS.values() for p in ps])))


# A reply that corrects the number just given ("sorry I meant 8", "correction: 8", "8 not 3",
# "perdon, queria decir 8"): see parse_correction. Only these words say so.
CORRECTION_LEADS = {
    "en": ["i meant", "meant", "i mean", "i meant to say", "i meant to put", "correction",
           "it should be", "should be", "it should have been", "should have been", "actually"],
    "es": ["queria decir", "quise decir", "quiero decir", "queria poner", "quise poner",
           "correccion"],
}
# Words that may open or close a correction: "sorry, I meant 8", "oops", "perdon", "thanks".
CORRECTION_BESIDE = {
    "en": {"sorry", "soz", "oops", "whoops", "oh", "ah", "please", "pls", "thanks", "x",
           "my", "bad", "mistake"},
    "es": {"perdon", "perdona", "perdone", "disculpe", "disculpa", "uy", "ups", "vaya",
           "lo", "siento", "gracias", "error"},
}
_CORRECTION_LEADS = sorted((tokens(p) for leads in CORRECTION_LEADS.values() for p in leads),
                           key=len, reverse=True)
# What the number may be said with, after a correction word or before "not 3": "the pain
# was 8 not 3", "actually it was 8", "el dolor es 8, no 3". Alone it says no correction.
CORRECTION_SUBJECTS = {
    "en": ["the pain is", "the pain was", "my pain is", "my pain was", "pain is", "pain was",
           "pain", "it is", "it was", "its"],
    "es": ["el dolor es", "el dolor era", "mi dolor es", "mi dolor era", "dolor", "es", "era"],
}
_CORRECTION_BESIDE = _union(CORRECTION_BESIDE)
_CORRECTION_SUBJECTS = sorted((tokens(p) for subjects in CORRECTION_SUBJECTS.values()
                               for p in subjects), key=len, reverse=True)
_NUMBER_WORDS = {word: value for words in NUMBER_WORDS.values()
                 for value, word in enumerate(words)}


def _score(words: list[str], scale: int | None) -> tuple[int, int] | None:
    """(the number at the start of `words`, how many words it takes): "8", "eight", "8/10",
    "8 out of 10". Only digits and number words: "no" is no number here."""
    if not words:
        return None
    value = int(words[0][:9]) if words[0].isdigit() else _NUMBER_WORDS.get(words[0])
    if value is None:
        return None
    for link in SCORE_LINKS:
        after = 1 + len(link)
        if (tuple(words[1:after]) == link and after < len(words) and words[after].isdigit()
                and scale is not None and int(words[after][:9]) == scale):
            return value, after + 1
    return value, 1


def parse_correction(text: str, minimum: int | None, maximum: int | None,
                     previous: int) -> int | None:
    """The number a reply puts in place of `previous`, the number the patient gave to the
    question before ("sorry I meant 8", "correction: 8", "8 not 3", "perdon, queria decir
    8"); None unless it says so in those words and nothing else: a correction word
    (CORRECTION_LEADS) before one number, or a number then "not" and `previous`, the number
    perhaps said with its subject ("the pain was 8 not 3": CORRECTION_SUBJECTS), with an
    apology or thanks around them at most. The number must be in the question's range and
    not `previous`; a "not" must name `previous` ("8 not 4" after 3 is no correction)."""
    words = tokens(text)
    while words and words[0] in _CORRECTION_BESIDE:
        words = words[1:]
    while words and words[-1] in _CORRECTION_BESIDE:
        words = words[:-1]
    lead = next((len(p) for p in _CORRECTION_LEADS if words[:len(p)] == p), 0)
    words = words[:lead] + next((words[lead + len(p):] for p in _CORRECTION_SUBJECTS
                                 if words[lead:lead + len(p)] == p), words[lead:])
    score = _score(words[lead:], maximum)
    if score is None:
        return None
    value, size = score
    rest = words[lead + size:]
    if rest:
        if rest[0] not in ("not", "no"):
            return None
        named = _score(rest[1:], maximum)
        if named is None or named[0] != previous or 1 + named[1] != len(rest):
            return None
    elif not lead:
        return None  # a bare number is an answer to the question waiting
    if value == previous or (minimum is not None and value < minimum) or (
            maximum is not None and value > maximum):
        return None
    return value


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
    yes_words: Sequence[str] = (),
    no_words: Sequence[str] = (),
) -> ParseResult:
    """Parse by answer type: "yesno" (a question's own yes and no phrases), "integer"
    (min/max), "choice" (1-based number), "text"."""
    if answer_type == "yesno":
        return parse_yesno(text, yes_words, no_words)
    if answer_type == "integer":
        return parse_integer(text, minimum, maximum)
    if answer_type == "choice":
        return parse_choice(text, options)
    return parse_text(text)
