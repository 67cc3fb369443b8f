"""Load, validate and compile the red-flag vocabulary (config/red_flags.yaml).

The only I/O here is reading that one YAML file. The phrase syntax clinicians write is described
at the top of the YAML file; this module turns it into regular expressions once, at load time.

Text and phrases go through the same normalisation (lower case, no accents, no apostrophes,
hyphens as spaces). The normalised text starts with one space and has exactly one space between
tokens; every phrase is compiled in "leading-space" form (" legs gave way"), so a phrase is
tried at the space in front of a word.
"""

from __future__ import annotations

import functools
import os
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

LEVELS = ("routine", "urgent", "emergency")  # ordered low -> high
DEFAULT_PATH = Path(__file__).resolve().parents[2] / "config" / "red_flags.yaml"

# Flags the clinical brief names; a vocabulary file must keep them (their level may change).
CORE_FLAGS = frozenset({
    "limb_weakness", "sensory_loss", "saddle_anaesthesia", "bladder_dysfunction",
    "bowel_dysfunction", "gait_balance", "radicular_pain", "severe_pain", "night_pain",
    "cough_pain", "uncontrolled_pain", "new_back_pain", "fever", "constipation",
})
_TOP_KEYS = {"version", "settings", "numeric", "spellings", "word_classes", "third_person",
             "first_person_plural", "flags", "context"}
_FLAG_KEYS = {"level", "description", "phrases", "downgrade_when_stable", "reply", "safety_net"}
# The texts (config/messages.yaml) a flag's own `reply:` / `safety_net:` cannot name: the
# level's texts, which flags without their own reply share.
LEVEL_TEXTS = frozenset({"emergency", "urgent", "safety_net"})
_CONTEXT_KEYS = {
    "negation_before", "negation_after", "negation_after_links", "immune_words",
    "pseudo_negation", "hedges", "hypothetical", "clause_breakers", "scope_terminators",
    "list_connectors", "clause_words", "stable", "hypothetical_fillers", "advice_questions",
    "body_parts", "negation_carriers", "happening_now",
}
# context lists a vocabulary file may leave out (added later; empty when absent)
_OPTIONAL_CONTEXT_KEYS = {"stable_cancellers", "new_onset", "affirm_after", "not_symptoms",
                          "new_onset_past", "past_spans", "other_times", "negation_denials",
                          "confirmations", "subject_not_person", "subject_third_party",
                          "subject_person", "subject_links", "patient_too", "own_ellipsis",
                          "own_ellipsis_parts", "own_ellipsis_unnamed",
                          "own_contrast", "local_numbness", "local_numbness_unless"}
_NUMERIC_KEYS = {
    "pain_score_flag", "pain_score_severe_at", "pain_words", "non_pain_topics", "fever_flag",
    "fever_celsius_at", "fever_fahrenheit_at", "temperature_words",
}
_SETTINGS = {"gap_words": (0, 8), "negation_window": (0, 12), "split_texts_minutes": (0, 30),
             "subject_words": (0, 8)}
_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
NB = "(?![a-z0-9])"  # "no word character follows"

# ------------------------------------------------------------------------------ normalising
_PRE = str.maketrans({
    "\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'", "\u00b4": "'", "\u2032": "'",
    "\uff07": "'", "\u00b0": " degrees ", "\u00ba": " degrees ", "&": " and ", "\u2013": "-",
    "\u2014": "-", "\u2010": "-", "\u2011": "-", "\u2212": "-", "\u00bf": " ", "\u00a1": " ",
})
_SI_YES = re.compile(r"(?<!\w)[sS][\u00ed\u00cd](?!\w)")  # Spanish "sí" (yes) is not "si" (if)
_COMBINING = re.compile(r"[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")
_ASCII = {i: " " for i in range(128)}  # one pass: lower case, drop apostrophes, junk -> space
_ASCII.update({ord(c): c for c in "abcdefghijklmnopqrstuvwxyz0123456789.,!?;:/"})
_ASCII.update({ord(c): c.lower() for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"})
_ASCII.update({ord("'"): None, ord("`"): None, ord("&"): " and "})
_ASCII.update({ord(c): " . " for c in "\n\r\x0b\x0c"})  # a new line ends a sentence
_NON_ASCII = re.compile(r"[\u2028\u2029\x85]|[^\x00-\x7f]+")
_ELONGATED = re.compile(r"([a-z])\1{3,}")
_PUNCT = re.compile(r"(?<![0-9])[.,:/]|[.,:/](?![0-9])|[!?;]+")


def base_normalise(text: str) -> str:
    """Lower case, strip accents and apostrophes, space out punctuation, one space between."""
    if not text.isascii():
        t = _SI_YES.sub(" yes ", text.translate(_PRE)).casefold()
        t = _COMBINING.sub("", unicodedata.normalize("NFKD", t))
        text = _NON_ASCII.sub(lambda m: " . " if m.group() in "\u2028\u2029\x85" else " ", t)
    t = text.translate(_ASCII)
    if _ELONGATED.search(t):
        t = _ELONGATED.sub(r"\1\1\1", t)
    return " ".join(_PUNCT.sub(r" \g<0> ", t).split())


def _pattern_text(raw: str) -> str:
    t = raw.translate(_PRE)
    t = _COMBINING.sub("", unicodedata.normalize("NFKD", t.casefold()))
    return t.replace("'", "").replace("-", " ")


# ------------------------------------------------------------------------------ phrase syntax
_TOKEN = re.compile(r"\s*(\.\.\.|[()\[\]|$]|\{[a-z_][a-z0-9_]*\}|[a-z0-9]+\*?)")
_RUNS = re.compile(r"([a-z])\1*|[0-9]+")


def _word_pieces(word: str) -> tuple[str, ...]:
    """Regex pieces of one word: letters may be repeated by the patient ("weeeak")."""
    star = word.endswith("*")
    pieces = [r.group() + (r.group()[0] + "*" if r.group()[0].isalpha() else "")
              for r in _RUNS.finditer(word.rstrip("*"))]
    return (*pieces, "[a-z0-9]*") if star else tuple(pieces)


class _Compiler:
    """Parses phrases into nodes and compiles them to regexes.

    Nodes: ("word", text), ("alt", (seq, ...)), ("opt", seq), ("gap",), ("end",); a seq is a
    tuple of nodes. "lead" form starts by matching the space before the first word; "head" form
    leaves that space off (it is matched once, in front of a whole alternation).
    """

    def __init__(self, classes: dict[str, list[str]], where: str,
                 persons: dict[str, list[str]] | None = None) -> None:
        self.class_src, self.where = classes, where
        self.classes: dict[tuple[str, bool], tuple] = {}
        # third_person and first_person_plural: a word (or two words in a row) -> ("alt",
        # (itself, its forms...)); used while `expand` is on (flag phrases and the word classes
        # they use, see _compile_flags)
        self.persons = {key: ("alt", (tuple(("word", w) for w in key.split()),
                                      *(tuple(("word", w) for w in f.split()) for f in forms)))
                        for key, forms in (persons or {}).items()}
        self.expand = False
        self.stack: list[str] = []
        self.gap = self.end = ""  # set by set_context() before any flag phrase is compiled
        self.lead = cache(self._lead)  # per instance, so nothing outlives the load
        self.head = cache(self._head)
        self._first = cache(self._first_words)

    def set_context(self, gap: str, end: str) -> None:
        self.gap, self.end = gap, end
        self.lead.cache_clear()
        self.head.cache_clear()

    def error(self, where: str, msg: str) -> ValueError:
        return ValueError(f"{self.where}: {where}: {msg}")

    # ---------------------------------------------------------------- parsing
    def parse(self, raw: str, where: str) -> tuple:
        if not isinstance(raw, str) or not raw.strip():
            raise self.error(where, f"phrase must be a non-empty string, got {raw!r}")
        text, tokens, pos = _pattern_text(raw), [], 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if not m:
                if text[pos:].strip():
                    raise self.error(where, f"{raw!r}: unexpected character "
                                     f"{text[pos:].strip()[0]!r} (allowed: letters, digits, "
                                     "( | ) [ ] ... {class} * $)")
                break
            if m.group(1).endswith("*") and text[m.end():m.end() + 1].isalnum():
                raise self.error(where, f"{raw!r}: '*' may only end a word")
            tokens.append(m.group(1))
            pos = m.end()
        saved = getattr(self, "toks", None), getattr(self, "pos", 0), getattr(self, "raw", ""), \
            getattr(self, "cur", "")
        self.toks, self.pos, self.raw, self.cur = tokens, 0, raw, where
        alts = self._alts()
        if self.pos != len(tokens):
            raise self.error(where, f"{raw!r}: unbalanced {tokens[self.pos]!r}")
        node = ("alt", alts)
        self.first_words((node,))  # a phrase cannot start with "..." or "$"
        self.toks, self.pos, self.raw, self.cur = saved
        return node

    def _alts(self) -> tuple:
        alts = [self._seq()]
        while self.pos < len(self.toks) and self.toks[self.pos] == "|":
            self.pos += 1
            alts.append(self._seq())
        for seq in alts:
            if all(map(_nullable, seq)):
                raise self.error(self.cur, f"{self.raw!r}: a choice can match nothing "
                                 "(it has no required word)")
        return tuple(alts)

    def _seq(self) -> tuple:
        seq: list[tuple] = []
        while self.pos < len(self.toks) and self.toks[self.pos] not in "|)]":
            tok = self.toks[self.pos]
            self.pos += 1
            if tok in ("(", "["):
                alts, close = self._alts(), ")" if tok == "(" else "]"
                if self.pos >= len(self.toks) or self.toks[self.pos] != close:
                    raise self.error(self.cur, f"{self.raw!r}: {tok!r} is never closed by "
                                     f"{close!r}")
                self.pos += 1
                seq.append(("alt", alts) if tok == "(" else ("opt", (("alt", alts),)))
            elif tok == "...":
                seq.append(("gap",))
            elif tok == "$":
                seq.append(("end",))
            elif tok.startswith("{"):
                seq.append(self._class(tok[1:-1]))
            else:
                seq.append(self._word(tok))
        if not seq:
            raise self.error(self.cur, f"{self.raw!r}: empty choice (check '|', '()' and '[]')")
        return tuple(seq)

    def _word(self, tok: str) -> tuple:
        """A plain word, or with `expand` on, its third-person forms too: "puedo" as
        (puedo|puede|pueden); two words in a row that are a key go together ("me caigo" as
        (me caigo|se cae|se caen)), before either word alone."""
        if self.expand and self.persons:
            if self.pos < len(self.toks):
                pair = self.persons.get(f"{tok} {self.toks[self.pos]}")
                if pair is not None:
                    self.pos += 1
                    return pair
            if tok in self.persons:
                return self.persons[tok]
        return ("word", tok)

    def _class(self, name: str) -> tuple:
        if (name, self.expand) in self.classes:
            return self.classes[(name, self.expand)]
        if name not in self.class_src:
            raise self.error(self.cur, f"{self.raw!r}: unknown word class {{{name}}}")
        if name in self.stack:
            raise ValueError(f"{self.where}: word_classes.{name}: refers to itself "
                             f"({' -> '.join([*self.stack, name])})")
        self.stack.append(name)
        alts: list[tuple] = []
        for i, entry in enumerate(self.class_src[name]):
            alts.extend(self.parse(entry, f"word_classes.{name}[{i}]")[1])
        self.stack.pop()
        self.classes[(name, self.expand)] = ("alt", tuple(alts))
        return self.classes[(name, self.expand)]

    def first_words(self, seq: tuple) -> frozenset[str]:
        """The words a sequence can start with; ValueError if it can start with ... or $."""
        return self._first(seq)

    def _first_words(self, seq: tuple) -> frozenset[str]:
        if not seq:
            raise self.error(self.cur, f"{self.raw!r}: the phrase can match nothing")
        head, tail = seq[0], seq[1:]
        if head[0] == "word":
            return frozenset([head[1]])
        if head[0] == "alt":
            return frozenset().union(*(self._first(s + tail) for s in head[1]))
        if head[0] == "opt":
            return self._first(head[1] + tail) | self._first(tail)
        raise self.error(self.cur, f"{self.raw!r}: a phrase cannot start with '...' or '$'")

    # ---------------------------------------------------------------- compiling
    def _lead(self, node: tuple) -> str:
        kind = node[0]
        if kind == "word":
            return " " + "".join(_word_pieces(node[1]))
        if kind == "alt":
            return self._alternatives(node[1], lead=True)
        if kind == "opt":
            return "(?:" + "".join(map(self.lead, node[1])) + ")?"
        return self.gap if kind == "gap" else self.end

    def _head(self, seq: tuple) -> str:
        first, rest = seq[0], seq[1:]
        if first[0] == "opt":  # rest is never empty: a choice always has a required word
            return "(?:" + self.head(first[1]) + " )?" + self.head(rest)
        if first[0] == "word":
            out = "".join(_word_pieces(first[1]))
        else:
            out = self._alternatives(first[1], lead=False)
        return out + "".join(map(self.lead, rest))

    def _alternatives(self, alts: tuple, lead: bool) -> str:
        """Choices; the single-word ones as a trie (much faster than a flat list for sre)."""
        single = [len(s) == 1 and s[0][0] == "word" for s in alts]
        words = {s[0][1] for s, one in zip(alts, single, strict=True) if one}
        others = [s for s, one in zip(alts, single, strict=True) if not one]
        if lead:
            parts = sorted({"".join(map(self.lead, s)) for s in others}, key=_longest_first)
        else:
            parts = sorted({self.head(s) for s in others}, key=_longest_first)
        if words:
            parts.append((" " if lead else "") + _trie_rx(words))
        return parts[0] if len(parts) == 1 else "(?:" + "|".join(parts) + ")"

    def union(self, seqs: Iterable[tuple]) -> str:
        """Regex (head form) for several phrase sequences, sharing common first items."""
        groups: dict[tuple, list[tuple]] = {}
        for seq in seqs:
            key = ("seq", seq) if seq[0][0] == "opt" else seq[0]
            groups.setdefault(key, []).append(seq)
        parts = set()
        for key, members in groups.items():
            if key[0] == "seq" or len(members) == 1:
                parts.update(self.head(m) for m in members)
                continue
            rests = sorted({"".join(map(self.lead, m[1:])) for m in members}, key=_longest_first)
            parts.add(self.head((key,)) + (rests[0] if len(rests) == 1
                                             else "(?:" + "|".join(rests) + ")"))
        return "|".join(sorted(parts, key=_longest_first))

    def words_rx(self, phrases: Iterable[str], where: str) -> str:
        """Lead-form regex matching any of `phrases` (context lists), as whole words."""
        nodes = {self.parse(p, f"{where}[{i}]") for i, p in enumerate(phrases)}
        if not nodes:
            return "(?!)"
        return "(?:" + "|".join(sorted(map(self.lead, nodes), key=_longest_first)) + ")" + NB


def _nullable(node: tuple) -> bool:
    """Can this node match without any word?"""
    if node[0] == "word":
        return False
    if node[0] == "alt":
        return any(all(map(_nullable, seq)) for seq in node[1])
    return True


def _longest_first(pattern: str) -> tuple[int, str]:
    return (-len(pattern), pattern)


def _trie_rx(words: Iterable[str], pieces=_word_pieces, leaf=lambda word: "") -> str:
    """One regex matching any of `words` (by default with letter repeats), as a trie.

    `leaf(word)` is appended where a word ends (e.g. an empty named group to know which word).
    """
    trie: dict = {}
    for w in words:
        node = trie
        for piece in pieces(w):
            node = node.setdefault(piece, {})
        node[""] = {"": leaf(w)}

    def emit(node: dict) -> str:
        if set(node) == {""} and isinstance(node[""], str):
            return node[""]
        alts = [k + emit(v) for k, v in sorted(node.items(), key=lambda kv: (kv[0] == "", kv[0]))]
        return alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"

    return emit(trie)


def _exact_pieces(word: str) -> tuple[str, ...]:
    return tuple(re.escape(c) for c in word)


def _related_first_words(firsts: Iterable[str]) -> dict[str, set[str]]:
    """For each first word, every first word that can match the same text ("numb*", "numbness")."""
    def key(word: str) -> str:
        return re.sub(r"(.)\1+", r"\1", word.rstrip("*"))

    keys = {word: key(word) for word in firsts}
    by_key: dict[str, set[str]] = {}
    for word, k in keys.items():
        by_key.setdefault(k, set()).add(word)
    wild = [(w, keys[w]) for w in keys if w.endswith("*")]
    out = {}
    for word, k in keys.items():
        related = set(by_key[k]) | {w for w, wk in wild if k.startswith(wk)}
        if word.endswith("*"):
            related |= {w for w, wk in keys.items() if wk.startswith(k)}
        out[word] = related
    return out


class _YamlLoader(yaml.SafeLoader):
    """Safe loader where only true/false are booleans: a clinician's `no` or `off` stays text."""


_YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


# ------------------------------------------------------------------------------ the vocabulary
@dataclass(frozen=True)
class FlagSpec:
    name: str
    level: str
    description: str
    raw: re.Pattern[str] | None  # "re:" phrases, searched over the whole text
    downgrade_to: str | None
    phrases: tuple[str, ...]  # as written in the file
    first_words: tuple[str, ...]  # words a phrase can start with (for dispatch)
    # the patient's text (config/messages.yaml key) when this flag is raised, instead of its
    # level's (emergency / urgent), and when it is only asked about, instead of safety_net
    reply: str | None = None
    safety_net: str | None = None


@dataclass(frozen=True, eq=False)
class Vocabulary:
    path: str
    flags: dict[str, FlagSpec]
    settings: dict[str, Any]
    numeric: dict[str, Any]
    spell_map: dict[str, str]
    spell_rx: re.Pattern[str] | None
    finder: re.Pattern[str]  # any phrase's first word, at the space before it
    # finder's group name (a first word) -> [flag, regex of its phrases that can start there];
    # each regex is kept as its pattern text until first used, then compiled in place (saves
    # ~1 s at load: most are rarely needed). Generated patterns contain only letters and digits.
    dispatch: dict[str, tuple[list, ...]]
    raw_flags: tuple[FlagSpec, ...]
    rx: dict[str, re.Pattern[str]]  # context regexes, see _context_regexes
    immune_words: frozenset[str]
    # flags that downgrade when stable and the flags they downgrade to: the "pain" mentions
    # that delimit what a stable word is said of (see triage._stable)
    pain_flags: frozenset[str] = frozenset()

    @property
    def flag_names(self) -> frozenset[str]:
        return frozenset(self.flags)

    def level_of(self, flag: str) -> str:
        try:
            return self.flags[flag].level
        except KeyError:
            raise ValueError(f"unknown red flag {flag!r} (known: {sorted(self.flags)})") from None

    def reply_texts(self) -> dict[str, str]:
        """Each text a flag names as its own reply or safety net -> the first flag naming it.
        A reply R comes with after_R: the reply to the patient's texts while it is unresolved
        (as after_emergency / after_urgent are the levels')."""
        out: dict[str, str] = {}
        for spec in self.flags.values():
            after = f"after_{spec.reply}" if spec.reply else None
            for key in (spec.reply, after, spec.safety_net):
                if key is not None:
                    out.setdefault(key, spec.name)
        return out

    def normalise(self, text: str) -> str:
        """Normalised text with spellings corrected, starting with one space."""
        t = base_normalise(text)
        t = " " + t
        if self.spell_rx is not None:
            t = self.spell_rx.sub(lambda m: " " + self.spell_map[m.group()[1:]], t)
        return t


def _strings(value: Any, where: str, *, allow_empty: bool = False) -> list[str]:
    if not isinstance(value, list):
        raise ValueError(f"{where}: must be a list of phrases, e.g. [numb, tingling]")
    value = [str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v for v in value]
    for i, v in enumerate(value):
        if not isinstance(v, str):
            raise ValueError(f"{where}[{i}]: must be text, got {v!r} (quote it)")
    if not value and not allow_empty:
        raise ValueError(f"{where}: must not be empty")
    return value


def _mapping(value: Any, where: str, allowed: set[str] | None = None) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"{where}: must be a mapping (key: value lines)")
    if allowed is not None and (unknown := set(value) - allowed):
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)} (allowed: {sorted(allowed)})")
    return value


def _number(value: Any, where: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise ValueError(f"{where}: must be a number between {lo} and {hi}, got {value!r}")
    return value


def flag_levels(path: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """Each flag's level as the vocabulary file declares it, read without compiling anything
    (flow lint checks the emergency-tier flags of every flow at each start-up, an operator's
    command included, which must not pay for the phrases). {} if the file can't be read: the
    full load, where it matters, says why."""
    return dict(_flag_levels(Path(path) if path is not None else DEFAULT_PATH))


@functools.lru_cache(maxsize=4)
def _flag_levels(path: Path) -> tuple[tuple[str, str], ...]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)  # noqa: S506
    except (OSError, yaml.YAMLError):
        return ()
    flags = data.get("flags") if isinstance(data, dict) else None
    if not isinstance(flags, dict):
        return ()
    return tuple((str(name), spec["level"]) for name, spec in flags.items()
                 if isinstance(spec, dict) and isinstance(spec.get("level"), str))


def load(path: str | os.PathLike[str] | None = None) -> Vocabulary:
    """Read and compile a vocabulary file; ValueError naming the problem if it is malformed."""
    path = Path(path) if path is not None else DEFAULT_PATH
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_YamlLoader)  # noqa: S506
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the vocabulary file: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from exc
    return compile_vocabulary(data, str(path))


def compile_vocabulary(data: Any, where: str = "<vocabulary>") -> Vocabulary:
    data = _mapping(data, where, _TOP_KEYS)
    for key in ("flags", "context", "numeric"):
        if key not in data:
            raise ValueError(f"{where}: missing top-level section {key!r}")
    settings = {"gap_words": 3, "negation_window": 4, "split_texts_minutes": 3,
                "subject_words": 4}
    given = _mapping(data.get("settings") or {}, f"{where}: settings", set(_SETTINGS))
    for key, value in given.items():
        settings[key] = int(_number(value, f"{where}: settings.{key}", *_SETTINGS[key]))
    classes = {}
    for name, entries in _mapping(data.get("word_classes") or {}, f"{where}: word_classes").items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"{where}: word_classes: bad class name {name!r}")
        classes[name] = _strings(entries, f"{where}: word_classes.{name}")
    persons = _third_person(data.get("third_person") or {}, where)
    for key, forms in _third_person(data.get("first_person_plural") or {}, where,
                                    "first_person_plural").items():
        persons[key] = [*persons.get(key, []), *forms]
    comp = _Compiler(classes, where, persons)
    ctx = _mapping(data["context"], f"{where}: context", _CONTEXT_KEYS | _OPTIONAL_CONTEXT_KEYS)
    if missing := _CONTEXT_KEYS - set(ctx):
        raise ValueError(f"{where}: context: missing list(s) {sorted(missing)}")
    lists = {k: _strings(v, f"{where}: context.{k}", allow_empty=k != "negation_before")
             for k, v in ctx.items()}
    for key in _OPTIONAL_CONTEXT_KEYS:
        lists.setdefault(key, [])
    brk = comp.words_rx(lists["clause_breakers"], "context.clause_breakers")
    neg = comp.words_rx(lists["negation_before"], "context.negation_before")
    # "..." skips up to gap_words words, never a clause breaker nor a negation;
    # "$" is the end of the text, a punctuation mark or a clause breaker
    comp.set_context(gap=f"(?:(?!{brk}|{neg}) [a-z0-9]+){{0,{settings['gap_words']}}}",
                     end=rf"(?=\s*$| [.,;:!?]|{brk})")
    flags, heads = _compile_flags(comp, _mapping(data["flags"], f"{where}: flags"), where)
    numeric = _compile_numeric(comp, _mapping(data["numeric"], f"{where}: numeric", _NUMERIC_KEYS),
                               flags, where)
    spell_map = _spellings(data.get("spellings") or {}, where)
    spell_rx = None
    if spell_map:
        spell_rx = re.compile(" " + _trie_rx(spell_map, pieces=_exact_pieces) + NB)
    firsts = sorted({w for spec in flags.values() for w in spec.first_words})
    ids = {word: f"w{i}" for i, word in enumerate(firsts)}
    related, patterns = _related_first_words(firsts), {}
    dispatch = {}
    for word in firsts:
        entries = []
        for name, flag_heads in heads.items():
            seqs = tuple(seq for seq, fw in flag_heads if fw & related[word])
            if seqs:
                if seqs not in patterns:
                    patterns[seqs] = " (?:" + comp.union(seqs) + ")" + NB
                entries.append([name, patterns[seqs]])
        dispatch[ids[word]] = tuple(entries)
    return Vocabulary(
        path=where, flags=flags, settings=settings, numeric=numeric, spell_map=spell_map,
        spell_rx=spell_rx,
        finder=re.compile(" " + _trie_rx(firsts, leaf=lambda w: f"(?P<{ids[w]}>)") + NB),
        dispatch=dispatch,
        raw_flags=tuple(s for s in flags.values() if s.raw is not None),
        rx=_context_regexes(comp, lists, settings, brk, neg),
        immune_words=frozenset(" ".join(_pattern_text(w) for w in lists["immune_words"]).split()),
        pain_flags=frozenset(name for spec in flags.values() if spec.downgrade_to is not None
                             for name in (spec.name, spec.downgrade_to)),
    )


def _compile_flags(
    comp: _Compiler, raw_flags: dict, where: str
) -> tuple[dict[str, FlagSpec], dict[str, list[tuple[tuple, frozenset[str]]]]]:
    """The flags, and per flag its parsed phrases with the words each can start with."""
    comp.expand = True  # flag phrases also match the third person and "we" (_third_person)
    try:
        flags, heads = _flag_specs(comp, raw_flags, where)
    finally:
        comp.expand = False
    if missing := CORE_FLAGS - set(flags):
        raise ValueError(f"{where}: flags: the clinical brief's flag(s) {sorted(missing)} "
                         "are missing")
    rank = {lvl: i for i, lvl in enumerate(LEVELS)}
    for spec in flags.values():
        down = spec.downgrade_to
        if down is not None and (down not in flags or rank[flags[down].level] >= rank[spec.level]):
            raise ValueError(f"{where}: flags.{spec.name}.downgrade_when_stable: {down!r} must be "
                             "a known flag of a lower level")
    return flags, heads


def _flag_specs(
    comp: _Compiler, raw_flags: dict, where: str
) -> tuple[dict[str, FlagSpec], dict[str, list[tuple[tuple, frozenset[str]]]]]:
    flags: dict[str, FlagSpec] = {}
    heads: dict[str, list[tuple[tuple, frozenset[str]]]] = {}
    for name, spec in raw_flags.items():
        at = f"flags.{name}"
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"{where}: flags: bad flag name {name!r} "
                             "(use lower_case_with_underscores)")
        spec = _mapping(spec, f"{where}: {at}", _FLAG_KEYS)
        if spec.get("level") not in LEVELS:
            raise ValueError(f"{where}: {at}.level: must be one of {LEVELS}, "
                             f"got {spec.get('level')!r}")
        phrases = _strings(spec.get("phrases"), f"{where}: {at}.phrases")
        heads[name], raws, firsts = [], [], set()
        for i, phrase in enumerate(phrases):
            if phrase.lstrip().startswith("re:"):
                try:
                    raws.append(re.compile(phrase.lstrip()[3:].strip()).pattern)
                except re.error as exc:
                    raise ValueError(f"{where}: {at}.phrases[{i}] {phrase!r}: bad regex: "
                                     f"{exc}") from exc
                continue
            node = comp.parse(phrase, f"{at}.phrases[{i}]")
            for seq in node[1]:  # top-level choices ("a|b") are phrases of their own
                words = comp.first_words(seq)
                firsts |= words
                heads[name].append((seq, words))
        raw = re.compile("(?<![a-z0-9])(?:" + "|".join(raws) + f"){NB}") if raws else None
        texts = {}
        for key in ("reply", "safety_net"):
            value = spec.get(key)
            if value is not None and (not isinstance(value, str) or not _NAME.match(value)):
                raise ValueError(f"{where}: {at}.{key}: must be the name of a text in "
                                 f"config/messages.yaml (lower_case_with_underscores), got "
                                 f"{value!r}")
            if value in LEVEL_TEXTS:
                raise ValueError(f"{where}: {at}.{key}: {value!r} is the text of flags with no "
                                 "reply of their own; leave the key out, or name a text of "
                                 "this flag's")
            texts[key] = value
        flags[name] = FlagSpec(name, spec["level"], str(spec.get("description", "")), raw,
                               spec.get("downgrade_when_stable"), tuple(phrases),
                               tuple(sorted(firsts)), **texts)
    return flags, heads


def _compile_numeric(comp: _Compiler, num: dict, flags: dict[str, FlagSpec], where: str) -> dict:
    if missing := _NUMERIC_KEYS - set(num):
        raise ValueError(f"{where}: numeric: missing key(s) {sorted(missing)}")
    out = dict(num)
    for key in ("pain_score_flag", "fever_flag"):
        if num[key] not in flags:
            raise ValueError(f"{where}: numeric.{key}: {num[key]!r} is not a flag in this file")
    for key, lo, hi in (("pain_score_severe_at", 0, 10), ("fever_celsius_at", 35, 43),
                        ("fever_fahrenheit_at", 95, 110)):
        out[key] = _number(num[key], f"{where}: numeric.{key}", lo, hi)
    for key in ("pain_words", "non_pain_topics", "temperature_words"):
        out[key] = comp.words_rx(_strings(num[key], f"{where}: numeric.{key}"), f"numeric.{key}")
    # a scale's anchors are not the score: "pain on a scale of 1 to 10 is 8", "pain 0-10: 8",
    # "my pain out of 10 is 9" (hyphens are spaces once normalised)
    anchor = (r"(?:(?:on |in |using )?(?:a |the |your )?(?:scale|rating|score) "
              r"(?:of |from |between |del |de )?)?(?:0|1|zero|one|cero|uno) "
              r"(?:to |or |and |a |al |through )?(?:10|ten|diez)"
              r"|(?:out of|over|de|sobre) (?:10|ten|diez)")
    out["pain_word_score"] = re.compile(
        out["pain_words"] + r"(?: (?:" + anchor + r"|is|was|s|at|about|around|of|today|now|"
        r"currently|score|level|scale|rating|like|a|an|es|de|un|una|esta|en|:|=|\?|still|"
        r"maybe|probably|prob|approx|roughly|honestly|already|back|up|to)(?![a-z0-9])){0,3} "
        r"(?!(?:0|1) (?:to |or |and |a |al |through )?10(?![0-9]))"
        r"(\d{1,2}(?:[.,]\d)?)(?![0-9]|[.,][0-9]| ?/| out of| de| sobre)"
        r"(?! (?:days?|weeks?|hours?|hrs?|h|am|pm|mg|mcg|ml|mins?|"
        r"minutes|times|x|dias|semanas|horas|years?|months?|tablets?|pills?|doses?|oclock)"
        + NB + ")")
    for key in ("pain_words", "non_pain_topics", "temperature_words"):
        out[key] = re.compile(out[key])
    return out


def _spellings(raw: Any, where: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for right, wrongs in _mapping(raw, f"{where}: spellings").items():
        right_n = " ".join(_pattern_text(str(right)).split())
        for wrong in _strings(wrongs, f"{where}: spellings.{right}"):
            wrong_n = " ".join(_pattern_text(wrong).split())
            if not re.fullmatch(r"[a-z0-9]+(?: [a-z0-9]+)*", wrong_n):
                raise ValueError(f"{where}: spellings.{right}: {wrong!r} must be plain words")
            if out.get(wrong_n, right_n) != right_n:
                raise ValueError(f"{where}: spellings: {wrong!r} is listed under two words")
            out[wrong_n] = right_n
    return out


def _third_person(raw: Any, where: str, table: str = "third_person") -> dict[str, list[str]]:
    """The third_person table (or first_person_plural, read the same way): a word, or two words
    in a row, of the flag phrases -> the words that also match there ("puedo" -> puede,
    pueden; "me caigo" -> se cae; "puedo" -> podemos)."""
    out: dict[str, list[str]] = {}
    for key, forms in _mapping(raw, f"{where}: {table}").items():
        key_n = " ".join(_pattern_text(str(key)).split())
        if not re.fullmatch(r"[a-z0-9]+(?: [a-z0-9]+)?", key_n):
            raise ValueError(f"{where}: {table}: {key!r} must be one plain word "
                             "or two (e.g. puedo, me caigo)")
        if key_n in out:
            raise ValueError(f"{where}: {table}: {key!r} is listed twice")
        out[key_n] = []
        for form in _strings(forms, f"{where}: {table}.{key}"):
            form_n = " ".join(_pattern_text(form).split())
            if not re.fullmatch(r"[a-z0-9]+(?: [a-z0-9]+)*", form_n):
                raise ValueError(f"{where}: {table}.{key}: {form!r} must be plain words")
            out[key_n].append(form_n)
    return out


def _context_regexes(comp: _Compiler, lists: dict, settings: dict, brk: str, neg: str) -> dict:
    def words(key: str) -> str:
        return comp.words_rx(lists[key], f"context.{key}")

    terms = f"(?:{brk}|{words('scope_terminators')})"
    # a cue after the symptom must end the clause: "numbness? no." yes, "no idea why" no
    after_end = (f"(?= [.,;!]|\\s*$| (?:and|but|though|tho|thanks|thank|thx|today|now|too|"
                 f"either|at all|gracias|hoy|y|pero){NB})")
    return {
        "mask": re.compile(f"(?:{words('pseudo_negation')}|{words('hedges')})"),
        "hedge": re.compile(words("hedges")),
        # a word that names an animal, a thing or a child is no clause breaker, though letters
        # a patient repeats are forgiven: "perro" (dog) is not "pero" (but)
        "boundary": re.compile(
            f"(?<![0-9])[.!?;]|[.!?;](?![0-9])|(?!(?:{words('subject_not_person')}"
            f"|{words('subject_third_party')})){brk}"),
        "neg_cue": re.compile(neg),
        # a negation that is itself denied: "cant say im not numb", "never not numb"
        "double_negative": re.compile(words("negation_denials")),
        "neg_before": re.compile(
            f"{neg}(?:(?!{terms}) [^ ]+){{0,{settings['negation_window']}}}$"),
        "neg_after": re.compile(
            f"(?: [?:]| ,(?= (?:i have |ive got |there is |theres )?(?:none|nil)))?"
            f"(?: i have| ive got| there is| theres)?"
            f"(?:{words('negation_after_links')}){{0,2}}{words('negation_after')}"
            f"(?! \\?){after_end}"),
        "terminator_inside": re.compile(comp.words_rx(
            [t for t in lists["scope_terminators"] if t not in ("and", "y", "e", "plus")],
            "context.scope_terminators")),
        "hypothetical": re.compile(
            f"{words('hypothetical')}(?:{words('hypothetical_fillers')}){{0,3}}$"),
        "advice": re.compile(words("advice_questions")),
        "list": re.compile(words("list_connectors")),
        # negation scope (see triage._in_scope): a body part that may start a new phrase, and
        # what may come right before it without ending the scope ("haven't noticed my legs ...",
        # "no numbness or legs ...")
        "body_part": re.compile(words("body_parts")),
        "carries": re.compile(f"(?:{words('negation_carriers')}|{words('list_connectors')}"
                              r"| ,)$"),
        "now": re.compile(words("happening_now")),
        # a bare Spanish "si" is a condition only right after an advice question ("que hago si")
        "advice_end": re.compile(f"{words('advice_questions')}(?: ,)?$"),
        "clause_words": re.compile(words("clause_words")),
        "stable": re.compile(words("stable")),
        "stable_cancel": re.compile(f"(?:{neg}|{words('stable_cancellers')})"),
        "new_onset": re.compile(words("new_onset")),
        "new_onset_past": re.compile(words("new_onset_past")),
        # "since yesterday", "all day yesterday": the negation covers up to now
        "past_span": re.compile(f"{words('past_spans')}$"),
        # "yesterday or today", "yesterday either": the negation covers now too
        "other_times": re.compile(f"(?:{words('list_connectors')}| and| y| e)?"
                                  f"{words('other_times')}"),
        "affirm": re.compile(f"(?: [?:=])?{words('affirm_after')}"),
        "not_symptoms": re.compile(words("not_symptoms")),
        # numbness with a local, benign cause ("numb from the dentist injection"), blanked
        # only in a message that names none of local_numbness_unless (see
        # triage._blank_not_symptoms); with that list empty, never blanked
        "local_numbness": re.compile(words("local_numbness")),
        "local_numbness_unless": re.compile(words("local_numbness_unless")
                                            if lists["local_numbness_unless"] else "(?:)"),
        # "they are now" after "what if my legs go numb?" (see triage.detect_confirmed)
        "confirm": re.compile(words("confirmations")),
        # whose symptom it is (see triage._subject): who or what may be its subject, in this
        # order where two start at one word ("my dog": an animal, not "my"); what may stand
        # between that subject and the symptom; and the patient saying they have it too
        "subject": re.compile(
            f"(?P<thing>{words('subject_not_person')})|(?P<child>{words('subject_third_party')})"
            f"|(?P<person>{words('subject_person')})"),
        "subject_links": re.compile(
            f"(?:{words('subject_links')}){{0,{settings['subject_words']}}}"),
        "patient_too": re.compile(words("patient_too")),
        # "mine" for the patient's own body part (see triage._own_parts_named)
        "own_ellipsis": re.compile(words("own_ellipsis")),
        "own_ellipsis_part": re.compile(words("own_ellipsis_parts")),
        "own_ellipsis_unnamed": re.compile(words("own_ellipsis_unnamed")),
        # "... arent numb but mine are" (see triage._contrast_reading); it ends the clause
        "own_contrast": re.compile(f"{words('own_contrast')}(?=\\s*$| [.,;:!?])"),
    }
