"""Red-flag detector: tiers a patient's free-text message (emergency / urgent / routine).

Pure code. The vocabulary (phrases, negation cues, clause breakers, hedges, hypotheticals,
thresholds) lives in config/red_flags.yaml and is compiled by bot.domain.triage_vocab.

How a message is read (clinical brief, shared/clinical/red-flags.md):
  1. Normalise (case, accents, apostrophes, typos, repeated letters).
  2. Find whole symptom phrases first, so phrases that contain a negation ("can't feel my feet",
     "no control over my bladder") are flags and never negated.
  3. Drop a mention only when a negation cue governs it inside its own clause ("no numbness",
     "numbness? no"); clauses end at but/though/except/./;/... Hedges never cancel. A cue governs
     only the symptom phrase right after it: its reach ends at another symptom phrase ("no pain
     legs numb") or at a body part that starts a new phrase ("not feeling great my legs are
     weak"), unless a list connector joins them ("no numbness or weakness", "no pain or
     weakness in my legs") or a carrier word takes the body part as its object ("haven't noticed
     my legs going numb"). A negation does not deny a symptom the patient calls new ("never had
     numbness like this before", "no numbness until today"), nor one answered "yes" right
     after it ("fever no numbness yes"). A negation that is itself denied is a double negative
     ("I can't say I'm not numb", "it's not that I don't feel weak", "never not numb"): such a
     message is also read without both negations, and what that finds is added. Everyday phrases that only look like symptoms ("fell
     asleep", "bank balance") are blanked out before phrases are matched.
  4. Conditional mentions ("if my legs go numb, what do I do?") keep their flags and level; the
     result says hypothetical=True when every red-flag mention is conditional. The service
     answers those with the safety net instead of the emergency alert, so this is conservative:
     the condition must come right before the symptom, the message must ask for advice, and
     nothing after the condition may say it is happening now ("what if my legs feel numb like
     now?"), has happened or goes on: a time, past or perfect tense, still / again / keep
     ("what do I do if my legs have been numb since yesterday?"). "sorry if" is no condition,
     and an unaccented Spanish "si" is one only right after an advice question ("que hago si").
  4b. Whose symptom it is (see _subject): one said of an animal or a thing ("my dog can't
     walk", "my car is wobbly") is dropped; one said of a young child ("my grandson wet the
     bed") is a third party's, answered as a conditional one is (hypothetical=True, the safety
     net); an adult who may be the patient, or I / me / my, leaves it the patient's. A "mine"
     / "las mias" that stands for the patient's own body part ("his legs are ok but mine are
     weak") is also read as that part (_own_parts_named).
  5. Stable / usual pain is recorded as routine, unless that word is negated or compared ("not
     stable", "stronger than usual"); only the part of the clause about that pain counts.
  6. Pain scores >= 7/10 and temperatures >= 38.0 C / 100.4 F are read as numbers; a scale's
     anchors ("on a scale of 1 to 10", "0-10", "out of 10") are not the score.
  7. A thought sent as several texts ("I can't feel" then "my legs"): detect_joined reads a
     text after the ones just before it, for the red flags it completes (the service decides
     which texts, bot.services.inbound._split_red_flag). detect_confirmed reads a text that
     says a conditional question just asked is happening ("what if my legs go numb?" then
     "they are now": context.confirmations) as that question's red flags, no longer
     conditional.
Safety first: any internal error yields an emergency result rather than silence.
"""

from __future__ import annotations

import bisect
import logging
import os
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from bot.domain.triage_vocab import LEVELS, Vocabulary
from bot.domain.triage_vocab import load as _load

__all__ = [
    "FLAG_NAMES", "LEVELS", "TriageResult", "Vocabulary", "detect", "detect_confirmed",
    "detect_joined",
    "level_for_flags", "split_texts_minutes",
    "load_vocabulary", "max_level",
]

FLAG_NAMES: frozenset[str]  # known flag names; read lazily from the default file (__getattr__)
log = logging.getLogger(__name__)
_RANK = {level: i for i, level in enumerate(LEVELS)}

# "9/10", "8 out of 10", "6-7/10", "9 de 10"; not a date such as 9/10/24
_SCORE = re.compile(
    r"(?<![0-9.,/])(?P<a>\d{1,2}(?:[.,]\d)?)"
    r"(?:(?: ?- ?| to | or | a | o )(?P<b>\d{1,2}(?:[.,]\d)?))?"
    r"(?: ?/ ?| out of | outta | over | de | sobre )(?:10|ten|diez)(?![0-9a-z]| ?/ ?[0-9])")
_WORD_SCORE = re.compile(
    r" (?P<w>zero|one|two|three|four|five|six|seven|eight|nine|ten|cero|uno|dos|tres|cuatro|"
    r"cinco|seis|siete|ocho|nueve|diez) (?:out of|de|over) (?:10|ten|diez)(?![0-9a-z])")
_WORD_VALUES = {w: i % 11 for i, w in enumerate(
    "zero one two three four five six seven eight nine ten "
    "cero uno dos tres cuatro cinco seis siete ocho nueve diez".split())}
_DIGIT = re.compile(r"[0-9]")
_compile = lru_cache(maxsize=4096)(re.compile)  # ~400 patterns per vocabulary
_DATE_BEFORE = re.compile(r" (?:on|el|del|date|dated|appt|appointment|due|until|till|by)\s*$")
_TEMP = re.compile(
    r"(?<![0-9.,/])(?P<v>\d{2,3}(?:[.,]\d{1,2})?)(?![0-9]|[.,][0-9])"
    r"(?P<deg> ?(?:degrees|degree|deg|grados|grado))?"
    r"(?: ?(?P<u>c|f|celsius|centigrade|centigrados|fahrenheit)(?![a-z0-9]))?")


@dataclass(frozen=True)
class TriageResult:
    level: str  # "emergency" | "urgent" | "routine"
    flags: tuple[str, ...]  # sorted, unique
    hypothetical: bool = False  # True when the only red-flag mentions are conditional
    matches: tuple[str, ...] = ()  # "flag: matched text" (for audit / debugging)


def load_vocabulary(path: str | os.PathLike[str] | None = None) -> Vocabulary:
    """Load a vocabulary file (default config/red_flags.yaml); ValueError if malformed."""
    return _load(path)


class _DefaultVocabulary:
    """The default vocabulary file, read and compiled on first use, once per process however
    many threads ask at once (it costs a second or more of CPU: an operator's command that
    triages nothing never pays it). A file that fails to load is tried again on the next call.
    Its ~900 phrase regexes are compiled later still: on first use too, or all at once by
    warm_up (a serving process, before its first message)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value: Vocabulary | None = None

    def __call__(self) -> Vocabulary:
        value = self._value
        if value is None:
            with self._lock:
                if self._value is None:
                    self._value = _load(None)
                value = self._value
        return value

    def loaded(self) -> bool:
        return self._value is not None

    def cache_clear(self) -> None:
        with self._lock:
            self._value = None


_default_vocabulary = _DefaultVocabulary()
_phrase_lock = threading.Lock()  # a phrase regex is compiled once, by one thread


def _compiled(entry: list) -> re.Pattern[str]:
    """A dispatch entry's phrase regex, compiled now if nobody has yet (see Vocabulary.dispatch)."""
    with _phrase_lock:
        regex = entry[1]
        if regex.__class__ is str:
            regex = entry[1] = _compile(regex)
    return regex


def __getattr__(name: str) -> frozenset[str]:
    if name == "FLAG_NAMES":  # the known flag names, from the default vocabulary file
        return _default_vocabulary().flag_names
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def max_level(*levels: str) -> str:
    """The highest of the given levels; "routine" if none. ValueError on an unknown level."""
    best = "routine"
    for level in levels:
        if level not in _RANK:
            raise ValueError(f"unknown level {level!r} (expected one of {LEVELS})")
        if _RANK[level] > _RANK[best]:
            best = level
    return best


def level_for_flags(flags: Iterable[str], vocabulary: Vocabulary | None = None) -> str:
    """Tier shared with structured answers: highest level among the flags ("routine" if none).

    ValueError on a flag name the vocabulary does not know (a typo must not pass as routine).
    """
    vocab = vocabulary if vocabulary is not None else _default_vocabulary()
    if isinstance(flags, str):
        flags = (flags,)
    return max_level(*(vocab.level_of(flag) for flag in flags))


def reply_keys(flags: Iterable[str], vocabulary: Vocabulary | None = None, *,
               hypothetical: bool = False, level: str = "routine") -> list[str]:
    """The texts (config/messages.yaml keys) the patient gets for these red flags, in order.

    A flag that names its own text (`reply:`, or `safety_net:` for a question about it, in
    config/red_flags.yaml: self-harm) gets that; the other flags share their level's text
    (emergency, urgent; safety_net for a question), taken at the highest level among them
    only, and first: an emergency raised only by self-harm never advises lying flat. Each text
    once; routine flags name none. `level` is the text when no flag names one (a detector
    failure escalates with no flag)."""
    vocab = vocabulary if vocabulary is not None else _default_vocabulary()
    shared: list[str] = []
    own: list[str] = []
    for flag in flags:
        spec = vocab.flags.get(flag)
        if spec is None:  # a flag no longer in the vocabulary (an old escalation's)
            if level != "routine":
                shared.append(level)
            continue
        if spec.level == "routine":
            continue
        key = spec.safety_net if hypothetical else spec.reply
        if key is None:
            shared.append(spec.level)
        elif key not in own:
            own.append(key)
    keys = (["safety_net"] if hypothetical else [max_level(*shared)]) if shared else []
    keys += own
    if not keys and level != "routine":
        keys = ["safety_net" if hypothetical else level]
    return keys


def detect(text: str, vocabulary: Vocabulary | None = None) -> TriageResult:
    """Tier one message. Never raises for any text."""
    vocab = vocabulary if vocabulary is not None else _default_vocabulary()
    try:
        return _detect("" if text is None else str(text), vocab)
    except Exception:  # safety net: a detector fault must never look like "routine"
        log.exception("red-flag detector failed; escalating the message to emergency")
        return TriageResult("emergency", (), False, ("detector error: escalated for safety",))


class _Message:
    """A normalised message plus lazily computed clause boundaries and masked text."""

    def __init__(self, vocab: Vocabulary, norm: str) -> None:
        self.vocab, self.norm = vocab, norm
        self.low_scores: list[int] = []  # positions of pain scores below "severe"
        self._masked: str | None = None
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._spans: list[tuple[int, int]] = []  # what was blanked

    @property
    def masked(self) -> str:
        """The text with hedges and pseudo-negations ("not sure", "no better") blanked out."""
        if self._masked is None:
            parts, last, norm = [], 0, self.norm
            for m in self.vocab.rx["mask"].finditer(norm):
                parts += [norm[last:m.start() + 1], "q" * (m.end() - m.start() - 1)]
                last = m.end()
                self._spans.append((m.start(), m.end()))
            self._masked = "".join(parts) + norm[last:]
            for m in self.vocab.rx["boundary"].finditer(self._masked):
                self._starts.append(m.start())
                self._ends.append(m.end())
        return self._masked

    def masked_for(self, start: int) -> str:
        """`masked` as read for the mention starting at `start`: a hedge the mention starts
        inside is no hedge: its words are read. "no se le duermen las
        piernas" is the negation of "se le duermen", not "no se" (I don't know) + "le duermen";
        "no se ha caido" and "no se cae" likewise."""
        masked = self.masked
        for s, e in self._spans:
            if s < start < e and self.vocab.rx["hedge"].fullmatch(self.norm, s, e):
                return masked[:s] + self.norm[s:e] + masked[e:]
        return masked

    def clause(self, pos: int) -> tuple[int, int]:
        """(start, end) of the clause containing pos."""
        masked = self.masked
        i = bisect.bisect_right(self._ends, pos)
        start = self._ends[i - 1] if i else 0
        j = bisect.bisect_left(self._starts, pos)
        return start, self._starts[j] if j < len(self._starts) else len(masked)


def _detect(text: str, vocab: Vocabulary) -> TriageResult:
    msg = _Message(vocab, _blank_not_symptoms(vocab, vocab.normalise(text)))
    return _result(msg, _all_mentions(msg))


def _all_mentions(msg: _Message) -> list[tuple[str, int, int, str]]:
    """The mentions of a message, and those it makes when read again, at their places in the
    message: without its double negatives ("cant say im not numb" as "say im numb", "wouldnt
    say my legs arent weak" as "say my legs are weak"), and with a possessive that stands for
    the patient's own body part said as that part ("his legs are ok but mine are weak" as
    "... but my legs are weak": _own_parts_named). Only ever adds: a phrase that holds the cue
    ("not able to walk") still counts from the first reading."""
    mentions = _mentions(msg)
    vocab, norm = msg.vocab, msg.norm
    readings = []
    rx = vocab.rx["double_negative"]
    if rx.search(norm) is not None:
        plain, origin = _without_double_negatives(vocab, norm, rx)
        readings.append((plain, origin, origin, ()))
    if vocab.rx["own_ellipsis"].search(norm) is not None:
        own = _own_parts_named(vocab, norm)
        if own is not None:
            readings.append((*own, ()))
    if vocab.rx["own_contrast"].search(msg.masked) is not None:
        contrast = _contrast_reading(msg)
        if contrast is not None:
            readings.append(contrast)
    if not readings:
        return mentions
    seen = set(mentions)
    extra = []
    for plain, starts, ends, own_spans in readings:
        for flag, start, end, kind in _mentions(_Message(vocab, plain), own_spans):
            mention = (flag, starts[start], ends[end], kind)
            if mention not in seen:
                seen.add(mention)
                extra.append(mention)
    return sorted([*mentions, *extra], key=lambda m: (m[1], m[2], m[0]))


def _contrast_reading(msg: _Message) -> tuple[str, list[int], list[int],
                                               list[tuple[int, int]]] | None:
    """The message read without the denial of someone else's symptom that the patient then
    says they have, the rest left out (context.own_contrast): "my husbands legs arent numb
    but mine are" as "my husbands legs are numb but mine are", "a mi hijo no se le duermen
    las piernas, a mi si" as "a mi hijo se le duermen las piernas, a mi si". The denied part
    runs from its clause's start, or the last comma before, up to the comma or clause break
    (but, pero, a full stop) right before the patient's words; its negative words are made
    positive ("arent" -> "are") or left out. Returns the new text, where each of its positions
    (and its end) comes from in the message, as _own_parts_named does, and the denied parts'
    spans in the new text (their mentions are the patient's); None when there is none."""
    masked, norm, rx = msg.masked, msg.norm, msg.vocab.rx
    parts: list[tuple[int, int]] = []
    for m in rx["own_contrast"].finditer(masked):
        if masked.endswith(" ,", 0, m.start()):
            part_end = m.start() - 2
        else:  # right after a clause break
            i = bisect.bisect_left(msg._ends, m.start())
            if i == len(msg._ends) or msg._ends[i] != m.start():
                continue
            part_end = msg._starts[i]
        clause_start, _ = msg.clause(max(part_end - 1, 0))
        part_start = max(clause_start, masked.rfind(",", clause_start, part_end) + 1)
        if rx["neg_cue"].search(norm, part_start, part_end) is not None:
            parts.append((part_start, part_end))
    if not parts:
        return None
    out: list[str] = []
    origin: list[int] = []
    spans: list[tuple[int, int]] = []
    last = 0
    for part_start, part_end in parts:
        out.append(norm[last:part_start])
        origin.extend(range(last, part_start))
        new_start = len(origin)
        last = part_start
        for cue in rx["neg_cue"].finditer(norm, part_start, part_end):  # "no se le": not a hedge
            out.append(norm[last:cue.start()])
            origin.extend(range(last, cue.start()))
            word = cue.group().strip()
            if word in _POSITIVE:
                out.append(" " + _POSITIVE[word])
                origin.extend([cue.start()] * (len(_POSITIVE[word]) + 1))
            last = cue.end()
        out.append(norm[last:part_end])
        origin.extend(range(last, part_end))
        spans.append((new_start, len(origin)))
        last = part_end
    out.append(norm[last:])
    origin.extend(range(last, len(norm) + 1))
    return "".join(out), origin, origin, spans


# no possessive for a body part after these: "on my own", "a friend of mine", "de los mios"
_NOT_A_PART_BEFORE = re.compile(r" (?:on|of|by|de)$")
_UNNAMED_PART = " my piernas"  # own_ellipsis_unnamed with no part named before it


def _own_parts_named(vocab: Vocabulary, norm: str) -> tuple[str, list[int], list[int]] | None:
    """`norm` with each possessive that stands for the patient's own body part (context.
    own_ellipsis: "mine", "las mias") said as "my" and the part named last before it (context.
    own_ellipsis_parts): "my sons legs are ok but mine wont hold me up" as "... but my legs wont
    hold me up"; with none named, a plural Spanish one (context.own_ellipsis_unnamed) as the
    legs: "las mias no responden". None when there is none. Also, for each position of the
    new text (and its end), the position in `norm` a mention starting there, and one ending
    there, comes from: a mention that takes in the new words takes in the possessive."""
    rx = vocab.rx
    out: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    last = 0
    for m in rx["own_ellipsis"].finditer(norm):
        if _NOT_A_PART_BEFORE.search(norm, 0, m.start()) or rx["own_ellipsis_part"].match(
                norm, m.end()):
            continue  # "on my own", "my own legs"
        part = None
        for found in rx["own_ellipsis_part"].finditer(norm, 0, m.start()):
            part = found  # the last one named before it
        if part is not None:
            said = " my" + part.group()
        elif rx["own_ellipsis_unnamed"].fullmatch(norm, m.start(), m.end()):
            said = _UNNAMED_PART
        else:
            continue  # an English "mine" with no part named may be anything
        out.append(norm[last:m.start()])
        starts.extend(range(last, m.start()))
        ends.extend(range(last, m.start()))
        out.append(said)
        starts.extend([m.start()] * len(said))
        ends.extend([m.start()] + [m.end()] * (len(said) - 1))
        last = m.end()
    if not out:
        return None
    out.append(norm[last:])
    starts.extend(range(last, len(norm) + 1))
    ends.extend(range(last, len(norm) + 1))
    return "".join(out), starts, ends


# Said without its negation: "arent" -> "are". Other negative words of a double negative
# (immune_words: not, never, no, without...) are left out.
_POSITIVE = {"arent": "are", "isnt": "is", "wasnt": "was", "werent": "were", "dont": "do",
             "doesnt": "does", "didnt": "did", "havent": "have", "hasnt": "has", "hadnt": "had",
             "wont": "will", "wouldnt": "would", "couldnt": "could", "cant": "can",
             "cannot": "can"}
_WORD = re.compile(r" [^ ]+")


def _without_double_negatives(vocab: Vocabulary, norm: str,
                              rx: re.Pattern[str]) -> tuple[str, list[int]]:
    """`norm` with each double negative's negative words dropped or made positive, and for
    each of its positions (and its end) the position in `norm` it came from."""
    out: list[str] = []
    origin: list[int] = []

    def keep(text: str, at: int) -> None:
        out.append(text)
        origin.extend(range(at, at + len(text)))

    last = 0
    for m in rx.finditer(norm):
        keep(norm[last:m.start()], last)
        for w in _WORD.finditer(norm, m.start(), m.end()):
            word = w.group()[1:]
            if word in _POSITIVE:
                out.append(" " + _POSITIVE[word])
                origin.extend([w.start()] * (len(_POSITIVE[word]) + 1))
            elif word not in vocab.immune_words:
                keep(w.group(), w.start())
        last = m.end()
    keep(norm[last:], last)
    origin.append(len(norm))
    return "".join(out), origin


def _mentions(msg: _Message, own: Sequence[tuple[int, int]] = ()) -> list[
        tuple[str, int, int, str]]:
    """(flag, start, end, kind) of every mention that stands (not negated, nor said of an animal
    or a thing), in order; kind is "" (the patient's), "hypothetical" (conditional) or "third
    party" (a young child's). The flag is the stable one's when a pain is described as
    stable. A mention that starts inside one of the `own` spans is the patient's, whoever
    else is named (_contrast_reading)."""
    vocab = msg.vocab
    hits = sorted({*_phrase_hits(msg), *_number_hits(msg)}, key=lambda h: (h[1], h[2], h[0]))
    accepted: dict[str, tuple[int, int]] = {}  # flag -> span of its last accepted mention
    out = []
    for flag, start, end in hits:
        span = accepted.get(flag)
        if span is not None and span[0] <= start and end <= span[1]:
            continue  # inside a mention already read ("numb" in "legs go numb")
        if _negated(msg, start, end, hits):
            continue
        subject = ("" if any(s <= start < e for s, e in own)  # "his arent numb but mine are"
                   else _subject(msg, start, end))
        if subject == "thing":
            continue  # "my dog can't walk", "my car is wobbly"
        accepted[flag] = (start, end)
        kind = ("hypothetical" if _hypothetical(msg, start)
                else "third party" if subject == "child" else "")
        down = vocab.flags[flag].downgrade_to
        if down is not None and _stable(msg, start, end, hits):
            flag = down
        out.append((flag, start, end, kind))
    return out


def _result(msg: _Message, mentions: Iterable[tuple[str, int, int, str]]) -> TriageResult:
    vocab = msg.vocab
    found: dict[str, bool] = {}  # flag -> every mention was hypothetical or a third party's
    matches: dict[str, None] = {}
    for flag, start, end, kind in mentions:
        found[flag] = found.get(flag, True) and bool(kind)
        note = f" ({kind})" if kind else ""
        matches[f"{flag}: {msg.norm[start:end].strip()}{note}"] = None
    flags = tuple(sorted(found))
    red = [f for f in flags if vocab.flags[f].level != "routine"]
    hypothetical = bool(red) and all(found[f] for f in red)
    return TriageResult(level_for_flags(flags, vocab), flags, hypothetical, tuple(matches))


def split_texts_minutes(vocabulary: Vocabulary | None = None) -> int:
    """How many minutes apart a patient's texts may be to be read together (0 = never)."""
    vocab = vocabulary if vocabulary is not None else _default_vocabulary()
    return vocab.settings["split_texts_minutes"]


def detect_joined(earlier: Sequence[str], text: str,
                  vocabulary: Vocabulary | None = None) -> TriageResult:
    """The red flags `text` completes when read as the end of one message begun in the
    `earlier` texts (oldest first): "I can't feel" then "my legs". For a text that raises no
    red flag alone. Never raises.

    Only a red flag with a mention that takes in words of `text` counts: one that runs from
    the earlier texts into it ("cant feel my legs"), or one of its own that the earlier words
    make a symptom ("my back pain is" then "8"). And only one the earlier texts read together
    do not raise already: they were read when the last of them came ("I can't feel", "my
    legs", then "at all" alerts nothing new). A mention wholly inside the earlier texts never
    counts, so a later "yes" does not turn an earlier "no numbness" into numbness. Routine
    flags are left out: the result is routine, or the red flags `text` adds, hypothetical
    when all their mentions are conditional ("what do I do if I lose control of my" then
    "bladder?").
    """
    vocab = vocabulary if vocabulary is not None else _default_vocabulary()
    try:
        return _detect_joined([str(t) for t in earlier if t], "" if text is None else str(text),
                              vocab)
    except Exception:  # safety net, as detect's
        log.exception("red-flag detector failed on joined texts; escalating to emergency")
        return TriageResult("emergency", (), False, ("detector error: escalated for safety",))


def _detect_joined(earlier: list[str], text: str, vocab: Vocabulary) -> TriageResult:
    # Each text normalised alone starts with a space: joined, they read as one message and
    # the last one starts at `boundary`.
    parts = [n for n in (vocab.normalise(t) for t in earlier) if n.strip()]
    last = vocab.normalise(text)
    if not parts or not last.strip():
        return TriageResult("routine", ())
    before = "".join(parts)
    boundary = len(before)
    joined = _Message(vocab, _blank_not_symptoms(vocab, before + last))
    red = {flag for flag in vocab.flag_names if vocab.flags[flag].level != "routine"}
    added = [m for m in _all_mentions(joined) if m[2] > boundary and m[0] in red]
    if not added:
        return TriageResult("routine", ())
    prefix = _Message(vocab, _blank_not_symptoms(vocab, before))
    already = {m[0] for m in _all_mentions(prefix)}
    return _result(joined, [m for m in added if m[0] not in already])


def detect_joined_before(text: str, later: str,
                         vocabulary: Vocabulary | None = None) -> TriageResult:
    """The red flags `text` completes when read as the start of one message that `later` (a
    text that came before it) ends: the carrier delivered the two out of order ("my legs",
    then "I can't feel"). For a text that raises no red flag alone, when detect_joined found
    none. Only a red flag with a mention that starts in `text` and runs into `later` counts,
    and not one `later` raises alone. Never raises."""
    vocab = vocabulary if vocabulary is not None else _default_vocabulary()
    try:
        first, second = vocab.normalise(text or ""), vocab.normalise(later or "")
        if not first.strip() or not second.strip():
            return TriageResult("routine", ())
        boundary = len(first)
        joined = _Message(vocab, _blank_not_symptoms(vocab, first + second))
        red = {flag for flag in vocab.flag_names if vocab.flags[flag].level != "routine"}
        alone = {m[0] for m in _all_mentions(_Message(vocab, _blank_not_symptoms(vocab,
                                                                                 second)))}
        across = [m for m in _all_mentions(joined)
                  if m[0] in red and m[1] < boundary < m[2] and m[0] not in alone]
        return _result(joined, across) if across else TriageResult("routine", ())
    except Exception:  # safety net, as detect's
        log.exception("red-flag detector failed on joined texts; escalating to emergency")
        return TriageResult("emergency", (), False, ("detector error: escalated for safety",))


def detect_confirmed(earlier: Sequence[str], text: str,
                     vocabulary: Vocabulary | None = None) -> TriageResult:
    """The red flags of a conditional question asked in the `earlier` texts (oldest first)
    that `text` says is happening: "what if my legs go numb?" (hypothetical: the safety net),
    then "they are now". For a text that raises no red flag alone. Never raises.

    `text` must say so with one of `context.confirmations` (config/red_flags.yaml), not denied
    (see _confirms), and the earlier texts, read together from the oldest, must ask the question
    (every red-flag mention conditional) with no later one of them confirming it already: that
    was read when it came. The result is the question's red flags, not hypothetical; routine
    otherwise (a confirmation alone, or after anything but such a question, is nothing).
    """
    vocab = vocabulary if vocabulary is not None else _default_vocabulary()
    try:
        return _detect_confirmed([str(t) for t in earlier if t and str(t).strip()],
                                 "" if text is None else str(text), vocab)
    except Exception:  # safety net, as detect's
        log.exception("red-flag detector failed on a confirmation; escalating to emergency")
        return TriageResult("emergency", (), False, ("detector error: escalated for safety",))


def _detect_confirmed(earlier: list[str], text: str, vocab: Vocabulary) -> TriageResult:
    if not earlier or not _confirms(vocab, text):
        return TriageResult("routine", ())
    for k in range(1, len(earlier) + 1):
        asked = _detect(" ".join(earlier[:k]), vocab)
        # the question's flags: a young child's symptom ("my grandson wet the bed", a third
        # party's) is no question that "he did now" could answer
        red = tuple(f for f in asked.flags if vocab.flags[f].level != "routine" and any(
            m.startswith(f + ": ") and m.endswith(" (hypothetical)") for m in asked.matches))
        if asked.level == "routine" or not asked.hypothetical or not red:
            continue
        if any(_confirms(vocab, t) for t in earlier[k:]):
            return TriageResult("routine", ())  # confirmed by an earlier text already
        return TriageResult(level_for_flags(red, vocab), red, False, tuple(
            m.replace(" (hypothetical)", " (confirmed)") for m in asked.matches
            if m.endswith(" (hypothetical)")))
    return TriageResult("routine", ())


def _confirms(vocab: Vocabulary, text: str) -> bool:
    """Does `text` say that what was asked about is happening ("they are now", "si, ahora")?

    Matched without the commas; not when a negation cue comes before it in its clause (after
    the last comma: "no, it is happening now" confirms) or right after it ("I did not")."""
    msg = _Message(vocab, vocab.normalise(text))
    masked, rx = msg.masked, vocab.rx
    cuts = [m.start() - 2 * i for i, m in enumerate(re.finditer(" ,", masked))]
    flat = masked.replace(" ,", "")
    for m in rx["confirm"].finditer(flat):
        start = m.start() + 2 * bisect.bisect_right(cuts, m.start())
        end = m.end() + 2 * bisect.bisect_left(cuts, m.end())
        clause_start, _ = msg.clause(start)
        lead = max(clause_start, masked.rfind(",", clause_start, start) + 1)
        if not rx["neg_before"].search(masked, lead, start) and not rx["neg_cue"].match(
                masked, end):
            return True
    return False


def _blank_not_symptoms(vocab: Vocabulary, norm: str) -> str:
    """Blank everyday phrases that only look like symptoms ("fell asleep", "bank balance"),
    and numbness with a local, benign cause ("numb from the dentist injection":
    context.local_numbness) in a message that names no limb nor the saddle area
    (context.local_numbness_unless): "my lip and leg are numb after the dentist" keeps it."""
    rx = vocab.rx["not_symptoms"]
    local = vocab.rx["local_numbness"]
    out = norm
    if rx.search(norm) is not None:
        out = rx.sub(_blank, out)
    if local.search(out) is not None and vocab.rx["local_numbness_unless"].search(norm) is None:
        out = local.sub(_blank, out)
    return out


def _blank(m: re.Match[str]) -> str:
    return " " + re.sub(r"[^ ]", "q", m.group()[1:])


def _phrase_hits(msg: _Message) -> list[tuple[str, int, int]]:
    """(flag, start, end) of every symptom phrase; start is the space before its first word.

    The finder spots any phrase's first word in one pass; only the flags with a phrase that can
    start with that word are then tried there.
    """
    norm, vocab, hits = msg.norm, msg.vocab, []
    dispatch = vocab.dispatch
    for m in vocab.finder.finditer(norm):
        p = m.start()
        for entry in dispatch[m.lastgroup]:
            regex = entry[1]
            if regex.__class__ is str:  # compiled on first use (see Vocabulary.dispatch)
                regex = _compiled(entry)
            if fm := regex.match(norm, p):
                hits.append((entry[0], p, fm.end()))
    for spec in vocab.raw_flags:
        hits += [(spec.name, max(fm.start() - 1, 0), fm.end()) for fm in spec.raw.finditer(norm)]
    return hits


def _number_hits(msg: _Message) -> list[tuple[str, int, int]]:
    """Severe pain scores (>= pain_score_severe_at) and fevers, as (flag, start, end)."""
    norm, num = msg.norm, msg.vocab.numeric
    scores: dict[int, tuple[float, int]] = {}  # position of the score -> (value, end)
    if " ten" in norm or " diez" in norm:
        for m in _WORD_SCORE.finditer(norm):
            scores[m.start() + 1] = (float(_WORD_VALUES[m.group("w")]), m.end())
    if not _DIGIT.search(norm):
        return _pain_scores(msg, scores)
    for m in _SCORE.finditer(norm):
        if not _DATE_BEFORE.search(norm, max(0, m.start() - 14), m.start()):
            values = [float(g.replace(",", ".")) for g in m.group("a", "b") if g]
            scores[m.start()] = (max(values), m.end())
    for m in num["pain_word_score"].finditer(norm):
        scores.setdefault(m.start(1), (float(m.group(1).replace(",", ".")), m.end(1)))
    hits = _pain_scores(msg, scores)
    for m in _TEMP.finditer(norm):
        value, unit = float(m.group("v").replace(",", ".")), (m.group("u") or " ")[0]
        if unit == " ":  # no unit given: tell Celsius from Fahrenheit by the range
            unit = "c" if 34 <= value <= 43.5 else "f" if 93 <= value <= 110 else ""
        if not (m.group("deg") or m.group("u") or num["temperature_words"].search(
                norm, max(0, m.start() - 40), m.start())
                or num["temperature_words"].search(norm, m.end(), m.end() + 25)):
            continue  # a number with no unit and no "temp"/"fever" nearby is not a temperature
        if (unit == "c" and num["fever_celsius_at"] <= value <= 43.5) or (
                unit == "f" and num["fever_fahrenheit_at"] <= value <= 110):
            hits.append((num["fever_flag"], m.start() - 1, m.end()))
    return hits


def _pain_scores(msg: _Message, scores: dict[int, tuple[float, int]]) -> list[tuple[str, int, int]]:
    num, hits = msg.vocab.numeric, []
    for start, (value, end) in scores.items():
        before = " " + " ".join(msg.norm[max(0, start - 40):start].split()[-3:])
        if value > 10 or (num["non_pain_topics"].search(before)
                          and not num["pain_words"].search(before)):
            continue  # "mood 8/10" is not a pain score
        if value >= num["pain_score_severe_at"]:
            hits.append((num["pain_score_flag"], start - 1, end))
        else:
            msg.low_scores.append(start)
    return hits


def _negated(msg: _Message, start: int, end: int, hits: list[tuple[str, int, int]]) -> bool:
    """Is this mention governed by a negation cue in its own clause (before or just after)?"""
    vocab = msg.vocab
    if not vocab.immune_words.isdisjoint(msg.norm[start:end].split()):
        return False  # the phrase itself carries the negation: "can't feel my feet"
    masked, rx = msg.masked_for(start), vocab.rx
    clause_start, clause_end = msg.clause(start)
    if _affirmed(msg, end, clause_end, hits):
        return False  # a checklist answer: "fever no numbness yes"
    window_start = clause_start
    comma = masked.rfind(",", clause_start, start)
    if comma != -1:  # a negation crosses a comma only along a plain list: "no X, Y or Z"
        rest = masked[comma + 1:clause_end]
        if not rx["list"].search(rest) or rx["clause_words"].search(" " + rest):
            window_start = comma + 1
    # where a pain named right before this mention starts, when this is where it goes ("no
    # pain in my lower back going down my leg"): a cue before that pain reaches its course
    named = _pain_before_course(msg, start, hits)
    reach = start if named is None else named
    cue = rx["neg_before"].search(masked, window_start, reach)
    if cue is not None and not rx["terminator_inside"].search(masked, start, end):
        while later := rx["neg_before"].search(masked, cue.start() + 1, reach):
            cue = later  # the nearest cue is the one that governs: "no pain and no numbness"
        cue_end = rx["neg_cue"].match(masked, cue.start()).end()
        if _in_scope(msg, cue_end, start, clause_end, hits, named) and not _new_onset(
                msg, cue.start(), end, clause_end):
            return True
    return bool(rx["neg_after"].match(masked, end)) or _course_denied_after(msg, start, end, hits)


def _course_denied_after(msg: _Message, start: int, end: int,
                         hits: list[tuple[str, int, int]]) -> bool:
    """Is this mention a plain pain whose course follows it, the course answered "no" ("back
    pain going down my leg? no": the patient echoes the question, then answers it)? The "no"
    then denies the pain with its course, as "no back pain going down my leg" does; a "no"
    that starts something else ("? no idea why", "? no numbness though") denies nothing."""
    masked, vocab = msg.masked, msg.vocab
    if _COURSE.match(masked, end) is None:
        return False
    if not any(h_start == start and h_end == end
               and (flag == "pain" or vocab.flags[flag].downgrade_to == "pain")
               for flag, h_start, h_end in hits):
        return False
    return any(h_end > end and start <= h_start <= end and vocab.rx["neg_after"].match(masked, h_end)
               for _flag, h_start, h_end in hits)


def _in_scope(msg: _Message, cue_end: int, start: int, clause_end: int,
              hits: list[tuple[str, int, int]], named: int | None = None) -> bool:
    """Does a negation cue ending at cue_end still reach the mention starting at start?

    A cue governs only the symptom phrase right after it. Its reach ends at
      - another symptom phrase between them, unless a list connector joins the two ("no pain or
        weakness", "no weakness, numbness or tingling"; "no numbness tingling or weakness" when
        the rest of the clause is a plain list): "no pain legs numb", "no energy legs like jelly";
      - a body part that starts a new phrase: one whose previous word is neither the cue, a
        carrier ("haven't noticed my legs ...", "no pain in my back ...") nor a list connector:
        "not feeling great my legs are weak", "no sleep legs numb".
    A pain that starts at `named` and goes where this mention says (_pain_before_course) is
    one phrase with it, not another symptom: "no back pain going down my leg".
    """
    masked, rx = msg.masked, msg.vocab.rx
    if start <= cue_end:
        return True
    covered: list[list[int]] = []  # other symptom phrases between the cue and this mention
    for _flag, h_start, h_end in hits:
        if cue_end < h_end <= start and h_start < start:
            if named is not None and h_start >= named:
                continue  # "no back pain going down my leg": the pain and where it goes, one phrase
            covered.append([max(h_start, cue_end), h_end])
    if covered:
        covered.sort()
        merged = [covered[0]]
        for span in covered[1:]:
            if span[0] <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], span[1])
            else:
                merged.append(span)
        nexts = [span[0] for span in merged[1:]] + [start]
        for (_s, e), nxt in zip(merged, nexts, strict=True):
            between = masked[e:nxt]
            if rx["list"].search(between) or between.strip() == ",":
                continue  # "no pain or weakness"; a comma here already passed the list test
            if between.strip() or not _plain_list_follows(msg, start, clause_end):
                return False
    for m in rx["body_part"].finditer(masked, cue_end, start + 80):  # 80: longest body part
        if m.start() > start:
            break
        if m.start() > cue_end and not rx["carries"].search(masked, cue_end, m.start()):
            return False
    return True


_COURSE = re.compile(r"\s*(?:going|goes|went|shooting|shoots|shot|running|runs|radiating|radiates"
                     r"|spreading|spreads|travell?ing|travels) ")


def _pain_before_course(msg: _Message, start: int,
                        hits: list[tuple[str, int, int]]) -> int | None:
    """Where the pain starts when the mention at `start` says where a pain just named goes
    ("pain going down my leg", "back pain shooting into my arm", "pain in my back going down my
    arm"); None if it does not. The pain and its course are then one phrase, and a negation
    before the pain ("no back pain going down my leg") reaches the whole of it. Only a plain
    pain: the vocabulary's `pain` flag, or a flag that is that pain said of a place (one that
    downgrades to `pain` when stable: "back pain", "chest pain"), right before a course word.
    Any other symptom still ends the negation's reach: "no pain numb legs" keeps its numbness,
    "no terrible back pain going down my leg" its course."""
    if _COURSE.match(msg.masked, start) is None:
        return None
    flags = msg.vocab.flags
    return min((h_start for flag, h_start, h_end in hits
                if start - 1 <= h_end <= start and h_start < start
                and (flag == "pain" or flags[flag].downgrade_to == "pain")), default=None)


def _affirmed(msg: _Message, end: int, clause_end: int,
              hits: list[tuple[str, int, int]]) -> bool:
    """Is the mention answered "yes" right after it, the answer ending the clause or followed
    by another symptom ("fever no numbness yes", "pain no numb yes weakness no")?"""
    m = msg.vocab.rx["affirm"].match(msg.masked, end)
    if m is None:
        return False
    after = m.end()
    return (not msg.masked[after:clause_end].strip(" ,:")
            or any(h_start == after for _f, h_start, _e in hits))


def _new_onset(msg: _Message, cue_start: int, end: int, clause_end: int) -> bool:
    """Does the negated mention say the symptom is new ("never had numbness like this before",
    "no numbness until today")? Looked for from the cue up to the next comma after the mention.

    A past time in the clause says so too: "my legs werent numb yesterday", "ayer no tenia las
    piernas dormidas" (so they are now), unless the negation reaches up to now ("no numbness
    since yesterday") or names now as well ("no numbness yesterday or today")."""
    masked, rx = msg.masked, msg.vocab.rx
    comma = masked.find(",", end, clause_end)
    stop = clause_end if comma == -1 else comma
    if rx["new_onset"].search(masked, cue_start, stop):
        return True
    clause_start, _ = msg.clause(cue_start)
    start = max(clause_start, masked.rfind(",", clause_start, cue_start) + 1)  # not "..., no X"
    for m in rx["new_onset_past"].finditer(masked, start, stop):
        if not rx["past_span"].search(masked, start, m.start()) \
                and not rx["other_times"].match(masked, m.end()):
            return True
    return False


def _plain_list_follows(msg: _Message, start: int, clause_end: int) -> bool:
    """Two symptoms side by side stay one negated list only when the rest of the clause is a
    plain list ("no numbness tingling or weakness"), not "no weakness numbness yes"."""
    masked, rx = msg.masked, msg.vocab.rx
    rest = masked[start:clause_end]
    return bool(rx["list"].search(rest)) and not rx["clause_words"].search(rest)


def _hypothetical(msg: _Message, start: int) -> bool:
    """Conditional ("if my legs go numb") in a message asking for advice? Conservative: the
    service answers a hypothetical with the safety net instead of the emergency alert."""
    masked, rx = msg.masked, msg.vocab.rx
    if "?" not in masked and not rx["advice"].search(masked):
        return False
    clause_start, _ = msg.clause(start)
    window_start = max(clause_start, masked.rfind(",", clause_start, start) + 1)
    m = rx["hypothetical"].search(masked, window_start, start)
    if m is None:
        return False
    if masked.startswith(" si ", m.start()) and not rx["advice_end"].search(masked, 0, m.start()):
        return False  # "si" without its accent may be yes: "hola si tengo ...", "si tengo ..."
    # "what if my legs feel numb like now?" is happening; so is "what do I do if I wet myself?
    # It has happened twice": what follows the condition, to the end of the message, counts
    return not rx["now"].search(masked, m.end())


def _subject(msg: _Message, start: int, end: int) -> str:
    """Whose symptom the mention is: "thing" (an animal or a thing: no symptom), "child" (a
    young child: a third party's) or "" (the patient's, or a carer's report about them).

    The subject is the last word of context.subject_* before the mention in its clause (up to a
    comma) with only subject_links between it and the mention ("my car is a bit wobbly", "the
    cat keeps falling off the sofa"), or one right after "de" / "of" inside the mention, a
    possessive between them or not ("las piernas de mi nieto", "the legs of my grandson":
    the owner is the grandson, the "mi" the carer's). I / me / my (before the mention or in
    it, not the owner's) or an adult who may be
    the patient is the patient's;
    so is every mention of a message that says the patient has it too ("... and so did I")."""
    rx, norm = msg.vocab.rx, msg.norm
    clause_start, _ = msg.clause(start)
    lead = max(clause_start, norm.rfind(",", clause_start, start) + 1)
    kind = ""
    for m in rx["subject"].finditer(norm, lead, start):
        between = norm[m.end():start]
        kind = m.lastgroup if rx["subject_links"].fullmatch(between) else ""
    for m in rx["subject"].finditer(norm, start, end):
        owner = _OWNER.search(norm, start, m.start())
        if owner is not None:
            # the owner after the limb ("de mi", then "de mi nieto"); after a possessive only
            # a person or a child: "get out of the chair" names no chair's symptom
            if not _kind_of_pain(msg, start, owner.start()) and (
                    owner.group("direct") or m.lastgroup != "thing"):
                kind = m.lastgroup
        elif m.lastgroup == "person":
            return ""  # the mention names the patient: "(walking the dog) my legs gave way"
    if kind in ("thing", "child") and rx["patient_too"].search(norm):
        return ""
    return "" if kind == "person" else kind


# "de" / "of" before the owner of a limb, and the possessive that may stand between: "las
# piernas de mi nieto", "the legs of my grandson" (that "mi" / "my" is the carer's, not the
# patient's: the owner is the word after it)
_OWNER = re.compile(r" (?:(?P<direct>de|of)|(?:de|of) (?:mi|mis|tu|tus|su|sus|nuestro|nuestra"
                    r"|nuestros|nuestras|el|la|los|las|my|his|her|their|our|your|the)|del)$")
_LIKE = re.compile(r" (?:como|tipo|like|kind|sort|type)$")


def _kind_of_pain(msg: _Message, start: int, de: int) -> bool:
    """Does the "de" / "of" at `de` (inside the mention starting at `start`) name a kind of pain
    rather than an owner: a pain word or a comparison before it ("dolor de muela", "como de
    muela": a toothache, not the tooth's own symptom)?"""
    norm = msg.norm
    word = norm.rfind(" ", start, de)
    if word == -1:
        return False
    pain = msg.vocab.numeric["pain_words"].match(norm, word)
    return (pain is not None and pain.end() == de) or _LIKE.search(norm, start, de) is not None


def _stable(msg: _Message, start: int, end: int, hits: list[tuple[str, int, int]]) -> bool:
    """Does the clause describe this pain as stable / usual / better, or score it low?

    Only the part of the clause about this pain counts: from the clause start, the last comma
    before the mention or the end of the previous pain mention (whichever is latest) to the next
    pain mention ("back pain is new, chest pain same as usual"). A stable word with a negation
    or a comparison among the three words before it (after any comma) does not count ("not
    stable", "isnt my usual pain", "stronger than usual").
    """
    vocab, masked = msg.vocab, msg.masked
    seg_start, seg_end = msg.clause(start)
    seg_start = max(seg_start, masked.rfind(",", seg_start, start) + 1)
    for flag, h_start, h_end in hits:
        if flag in vocab.pain_flags:
            if h_end <= start:
                seg_start = max(seg_start, h_end)
            elif h_start >= end:
                seg_end = min(seg_end, h_start)
    if any(seg_start <= p < seg_end for p in msg.low_scores):
        return True
    rx = vocab.rx
    for m in rx["stable"].finditer(masked, seg_start, seg_end):
        lead = max(seg_start, masked.rfind(",", seg_start, m.start()) + 1)
        before = " " + " ".join(masked[lead:m.start()].split()[-3:])
        if not rx["stable_cancel"].search(before):
            return True
    return False


def warm_up(vocabulary: Vocabulary | None = None) -> None:
    """Compile every phrase regex now (a server's start-up), not on patients' first messages.
    Safe beside threads that triage meanwhile: each regex is compiled once, by one of them."""
    vocab = vocabulary if vocabulary is not None else _default_vocabulary()
    for entries in vocab.dispatch.values():
        for entry in entries:
            if entry[1].__class__ is str:
                _compiled(entry)
