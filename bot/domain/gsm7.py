"""GSM-7 helpers: which texts fit the SMS default alphabet, how many segments they take.

The character tables come from the `gsm0338` codec (GSM 03.38 default alphabet and its
extension table); transliteration of other characters uses `unidecode`.
"""

from __future__ import annotations

import unicodedata

import gsm0338  # noqa: F401  (importing registers the "gsm03.38" codec)
from unidecode import unidecode

_CODEC = "gsm03.38"
_ESCAPE = 0x1B

GSM7_SINGLE = 160
GSM7_PART = 153
UCS2_SINGLE = 70
UCS2_PART = 67


def _build_tables() -> tuple[frozenset[str], frozenset[str]]:
    basic: set[str] = set()
    extension: set[str] = set()
    for byte in range(128):
        if byte == _ESCAPE:
            continue
        basic.add(bytes([byte]).decode(_CODEC))
        try:
            char = bytes([_ESCAPE, byte]).decode(_CODEC)
        except UnicodeDecodeError:
            continue
        if char not in basic:
            extension.add(char)
    # A form feed is technically in the extension table but is never wanted in a message.
    extension.discard("\f")
    return frozenset(basic), frozenset(extension - basic)


BASIC_CHARS, EXTENSION_CHARS = _build_tables()
GSM7_CHARS = BASIC_CHARS | EXTENSION_CHARS

# Look-alikes mapped by hand where unidecode's choice is not what an SMS wants
# (it turns an em dash into "--" and a degree sign into "deg").
_LOOKALIKES = {
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'", "\u00b4": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"',
    "\u00ab": '"', "\u00bb": '"',
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2015": "-",
    "\u2212": "-",
    "\u2026": "...",
    "\u00a0": " ", "\u2007": " ", "\u2009": " ", "\u202f": " ", "\u3000": " ", "\t": " ",
    "\u200b": "", "\u200c": "", "\u200d": "", "\u2060": "", "\ufeff": "", "\u00ad": "",
    "\u00b0": "",
}


def is_gsm7(text: str) -> bool:
    """True when every character of `text` is in the GSM-7 alphabet (basic or extension)."""
    return all(char in GSM7_CHARS for char in text)


def non_gsm_chars(text: str) -> list[str]:
    """The distinct characters of `text` that are not GSM-7, in order of first appearance."""
    seen: dict[str, None] = {}
    for char in text:
        if char not in GSM7_CHARS:
            seen.setdefault(char, None)
    return list(seen)


def _count_parts(sizes: list[int], single: int, part: int) -> int:
    if sum(sizes) <= single:
        return 1
    parts, used = 1, 0
    for size in sizes:
        # A two-unit character (escape + char, or a surrogate pair) is never split across parts.
        if used + size > part:
            parts += 1
            used = 0
        used += size
    return parts


def segments(text: str) -> int:
    """How many SMS segments `text` takes (GSM-7 160/153, else UCS-2 70/67); "" counts as 1."""
    if is_gsm7(text):
        sizes = [2 if char in EXTENSION_CHARS else 1 for char in text]
        return _count_parts(sizes, GSM7_SINGLE, GSM7_PART)
    sizes = [2 if ord(char) > 0xFFFF else 1 for char in text]
    return _count_parts(sizes, UCS2_SINGLE, UCS2_PART)


def _replace_char(char: str) -> str:
    if char in GSM7_CHARS:
        return char
    if char in _LOOKALIKES:
        return _LOOKALIKES[char]
    spelled = unidecode(char)
    if spelled and is_gsm7(spelled):
        return spelled
    return ""  # emoji, control characters and anything with no plain spelling are dropped


def to_gsm7(text: str) -> str:
    """`text` as plain GSM-7: look-alikes replaced, other accents transliterated, emoji dropped."""
    composed = unicodedata.normalize("NFC", text)
    return "".join(_replace_char(char) for char in composed)
