"""GSM-7 alphabet, segment counting and transliteration."""

import pytest

from bot.domain.gsm7 import is_gsm7, non_gsm_chars, segments, to_gsm7


def test_plain_text_and_gsm_accents_are_gsm7():
    assert is_gsm7("Hello Maria, reply YES or NO. 0-10 @ £5 ¿¡")
    assert is_gsm7("é è ù ì ò Ç Ø ø Å å Ä Ö Ñ Ü ä ö ñ ü à É ß Æ æ ΔΦΓΛΩΠΨΣΘΞ")
    assert is_gsm7("line one\nline two")


@pytest.mark.parametrize("char", ["’", "“", "—", "…", "á", "í", "ó", "ú", "ç", "😀", "\t", "\x1b"])
def test_other_characters_are_not_gsm7(char):
    assert not is_gsm7(f"ok {char} ok")
    assert non_gsm_chars(f"ok {char} ok {char}") == [char]


def test_non_gsm_chars_keeps_first_appearance_order():
    assert non_gsm_chars("it’s “fine” — ok") == ["’", "“", "”", "—"]


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("", 1),
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("€" * 80, 1),  # extension characters count 2
        ("€" * 81, 2),
        ("{" + "a" * 158, 1),
        ("{" + "a" * 159, 2),
        ("é" * 160, 1),  # é is in the basic table
        ("á" * 70, 1),  # one non-GSM character makes it UCS-2
        ("á" * 71, 2),
        ("á" * 134, 2),
        ("á" * 135, 3),
        ("a" * 159 + "’", 3),
        ("😀" * 35, 1),  # a surrogate pair counts 2 in UCS-2
        ("😀" * 36, 2),
    ],
)
def test_segments(text, count):
    assert segments(text) == count


def test_extension_character_is_not_split_across_parts():
    # 306 septets would fit 2 parts of 153, but the escape and "€" can't straddle the cut:
    # part 1 is 152 "a", the € opens part 2, and the last "a" spills into part 3.
    assert segments("a" * 152 + "€" + "a" * 152) == 3
    assert segments("a" * 152 + "€" + "a" * 151) == 2


@pytest.mark.parametrize(
    ("text", "plain"),
    [
        ("it’s ‘fine’", "it's 'fine'"),
        ("“quoted”", '"quoted"'),
        ("a – b — c", "a - b - c"),
        ("wait…", "wait..."),
        ("38\u00a0°C", "38 C"),
        ("está aquí, canción, Ángel", "esta aqui, cancion, Angel"),
        ("José, Müller, Ñandú", "José, Müller, Ñandu"),
        ("ÇØøÅåÄÖÑÜäöñüàÉßÆæ èùìò", "ÇØøÅåÄÖÑÜäöñüàÉßÆæ èùìò"),
        ("Σ Δ", "Σ Δ"),
        ("ok 👍😀", "ok "),
        ("e\u0301", "é"),  # combining accent composed first
        ("zero\u200bwidth", "zerowidth"),
        ("price €5 [a] {b} ~ | ^ \\", "price €5 [a] {b} ~ | ^ \\"),
    ],
)
def test_to_gsm7(text, plain):
    assert to_gsm7(text) == plain
    assert is_gsm7(to_gsm7(text))


def test_to_gsm7_always_returns_gsm7_for_odd_input():
    odd = "Zoë Łukasz 中文 ½ ™ \x00\x07 \U0001f600 \u202e"
    assert is_gsm7(to_gsm7(odd))
