"""The name a text calls the patient by ("Hi Joan"), from the name the coordinator enrolled.

Coordinators type names as they come: "Mrs Joan Baker", "BAKER, Joan", "Dr. Ana Ruiz". A text
must never greet a title ("Hi Mrs"), a surname with its comma ("Hi BAKER,"), or punctuation.

* "Surname, First": the part after the first comma.
* Leading titles (Mr, Mrs, Dr, Sra, Don...) are skipped. A title followed by one word only is
  kept with it ("Mrs Baker", "Don Smith"), since that word may be a surname, or the title a
  first name ("Don").
* A surname typed in capitals before a first name that is not ("BAKER Joan") is skipped, and a
  name typed all in capitals is written "Joan".
* Punctuation around words is dropped; inside a word it stays ("Mary-Jane", "O'Brien").
* The result is plain GSM-7 and at most `max_length` characters. It is never empty nor only
  punctuation: a name with no letter at all gives `NEUTRAL` in the patient's language.
"""

from __future__ import annotations

import re

from unidecode import unidecode

from bot.domain.gsm7 import to_gsm7

# Compared without accents, full stops or case: "Dr." and "DR" are "dr", "Doña" is "dona".
TITLES = frozenset({
    "mr", "mrs", "ms", "miss", "mx", "master", "mister", "missus", "dr", "doctor", "prof",
    "professor", "rev", "revd", "reverend", "fr", "father", "sr", "sir", "dame", "lady", "lord",
    "madam", "madame", "mme", "mlle", "m", "herr", "frau",
    "sra", "srta", "sres", "don", "dona", "dna", "d", "dra", "doctora", "senor", "senora",
    "senorita",
})
# What a text calls a patient whose enrolled name has no letter in it.
NEUTRAL = {"en": "Hello", "es": "Hola"}

# Letters are any the text has after to_gsm7, so the accented ones GSM-7 keeps (é, ñ, ü...)
# too: "José" is "José", never "Jos".
_WORD_EDGE = re.compile(r"^[\W_]+|[\W_]+$")
_LETTER = re.compile(r"[^\W\d_]")


def _plain(word: str) -> str:
    """A word without the punctuation around it ("Joan," -> "Joan", "'Dr.'" -> "Dr")."""
    return _WORD_EDGE.sub("", word)


def _is_title(word: str) -> bool:
    return unidecode(word).lower() in TITLES


def _shouted(word: str) -> bool:
    return len(word) > 1 and word.isupper()


def _words(text: str) -> list[str]:
    return [w for w in (_plain(word) for word in text.split()) if _LETTER.search(w)]


def _fit(name: str, max_length: int) -> str:
    if len(name) <= max_length:
        return name
    first = name.split("-")[0]
    if len(first) <= max_length and _LETTER.search(first):
        return first  # "Bartholomew-Alexander": "Bartholomew"
    cut = _plain(name[:max_length])
    return cut if _LETTER.search(cut) else name[:max_length]


def _soften(word: str) -> str:
    """"BAKER" -> "Baker", "MARY-JANE" -> "Mary-Jane", "O'BRIEN" -> "O'Brien", "JOSÉ" ->
    "José". GSM-7 has the Greek capitals but not their small letters: "ΔΣ" -> "Ds"."""
    return re.sub(r"[^\W\d_]+", lambda m: to_gsm7(m.group().capitalize()), word)


def greeting_name(full_name: str | None, language: str = "en", max_length: int = 20) -> str:
    """The name a text calls the patient by: "Mrs Joan Baker" -> "Joan", "BAKER, Joan" -> "Joan"."""
    plain = to_gsm7(full_name or "")
    before, comma, after = plain.partition(",")
    surname, words = _words(before), _words(after)
    if not (comma and words):
        surname, words = [], _words(plain.replace(",", " "))
    titles: list[str] = []
    while words and _is_title(words[0]) and (len(words) > 1 or surname):
        titles.append(words.pop(0))
    with_title = False
    if titles and surname and not words:
        words, with_title = [titles[-1], surname[-1]], True  # "Baker, Mrs": "Mrs Baker"
    elif titles and not surname and len(words) == 1:
        words, with_title = [titles[-1], words[0]], True  # "Mrs Baker"; "Don" may be a name
    if not words:
        return NEUTRAL.get(language, NEUTRAL["en"])
    if all(w.isupper() for w in words):
        words = [_soften(w) for w in words]  # "JOAN BAKER", "BAKER, JOAN"
    elif _shouted(words[0]) and not with_title:
        # "BAKER Joan": the surname in capitals before the first name.
        words = [w for w in words if not w.isupper()] or words
    if with_title or len(words[0]) == 1:
        chosen = " ".join(words)  # a title with its one word, or an initial ("J Smith")
    else:
        chosen = words[0]
    return _fit(chosen, max_length)
