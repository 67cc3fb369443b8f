"""The dashboard's patients page in pages of 100 (keyset, as GET /api/patients): in the
page's order (still in service first, then discharged; names alphabetical whatever their case
or accents), each patient on exactly one page, Next and Previous links that work, and a search
that finds a patient on any page and keeps to itself when paged."""

from __future__ import annotations

import html
import re

import pytest
from unidecode import unidecode

from bot.services.patients import Enrolment, discharge_patient, enrol_patient
from bot.store.models import Patient
from bot.web.dashboard import PATIENTS_PAGE
from tests.test_dashboard import page, sign_in

ROW_RE = re.compile(r'<a href="/dashboard/patients/([0-9]+)">')
LINK_RE = r'<a[^>]*id="{}"[^>]*href="([^"]+)"'
# First names whose order needs more than the database's: case, accents, particles.
FIRSTS = ["Émile", "van Dijk", "ada", "Zoë", "Óscar", "Bram", "de la Cruz", "Ñuño", "eve",
          "Mark"]
COUNT = 2 * PATIENTS_PAGE + 37  # three pages


@pytest.fixture
def signed_in(client):
    sign_in(client, token=None)
    return client


def _enrol_many(rt, count=COUNT, discharged_every=9) -> list[tuple[int, str]]:
    """`count` patients through the enrolment service, some discharged (through the
    discharge service); returns (id, name) in the page's expected order."""
    people = []
    with rt.transaction() as s:
        now = rt.clock.now()
        for i in range(count):
            # Numbers given out of name order: the page's order is not the ids'.
            name = f"{FIRSTS[(i * 7) % len(FIRSTS)]} {(i * 37) % count:03d}"
            p = enrol_patient(s, Enrolment(f"+447700{900000 + i:06d}", name, "Europe/London"),
                              languages=["en", "es"], now=now, actor="test")
            if i % discharged_every == 4:
                s.flush()
                discharge_patient(s, p, "Treatment finished", now=now, actor="test")
            people.append(p)
        s.flush()
        expected = sorted(people, key=lambda p: (p.status == "discharged",
                                                  unidecode(p.name).casefold(), p.id))
        return [(p.id, p.name) for p in expected]


def _rows(text: str) -> list[int]:
    table = text[text.index('id="patients"'):text.index("</table>")]
    return [int(pid) for pid in ROW_RE.findall(table)]


def _link(text: str, which: str) -> str | None:
    match = re.search(LINK_RE.format(which), text)
    return html.unescape(match.group(1)) if match else None


def _walk(client, start: str) -> list[list[int]]:
    """Every page from `start`, following Next; then back with Previous, checking each page
    comes again the same."""
    pages, texts, url = [], [], start
    while url is not None:
        text = page(client, url)
        pages.append(_rows(text))
        texts.append(text)
        url = _link(text, "next")
        assert len(pages) < 100, "Next never ends"
    assert _link(texts[0], "previous") is None
    for i in range(len(pages) - 1, 0, -1):
        back = page(client, _link(texts[i], "previous"))
        assert _rows(back) == pages[i - 1]
        if i > 1:
            texts[i - 1] = back
    return pages


def test_every_patient_is_on_exactly_one_page_in_the_pages_order(signed_in, rt):
    expected = _enrol_many(rt)
    pages = _walk(signed_in, "/dashboard/patients")
    assert [len(p) for p in pages] == [PATIENTS_PAGE, PATIENTS_PAGE, COUNT - 2 * PATIENTS_PAGE]
    listed = [pid for p in pages for pid in p]
    assert listed == [pid for pid, _ in expected]  # each once, in order
    first = page(signed_in, "/dashboard/patients")
    assert f"Patients ({COUNT})" in first
    assert f"1-{PATIENTS_PAGE} of {COUNT}" in first


def test_a_search_finds_a_patient_on_any_page_and_pages_through_its_matches(signed_in, rt):
    expected = _enrol_many(rt)
    last_id, last_name = expected[-1]  # on the last page
    assert last_id not in _rows(page(signed_in, "/dashboard/patients"))
    found = page(signed_in, "/dashboard/patients?q=" + last_name.upper())
    assert _rows(found) == [last_id]
    # by number, as a coordinator types it (national form, spaces)
    with rt.transaction() as s:
        phone = s.get(Patient, last_id).phone
    national = "0" + phone.removeprefix("+44")
    assert _rows(page(signed_in, f"/dashboard/patients?q={national[:5]} {national[5:]}")) \
        == [last_id]
    # whatever the case or accents: "emile" finds Émile, and a search of more than a page
    # pages through only its matches, the search kept in the links
    emiles = [pid for pid, name in expected if name.startswith("Émile")]
    assert len(emiles) > 10
    pages = _walk(signed_in, "/dashboard/patients?q=EMILE")
    assert [pid for p in pages for pid in p] == emiles
    many = [pid for pid, name in expected if "1" in name]
    assert PATIENTS_PAGE < len(many) < COUNT
    pages = _walk(signed_in, "/dashboard/patients?q=1")
    assert len(pages) == 2 and [pid for p in pages for pid in p] == many
    nothing = page(signed_in, "/dashboard/patients?q=nobody-by-this-name")
    assert "Nothing here." in nothing and 'id="next"' not in nothing


def test_a_patient_added_meanwhile_shifts_nothing_and_a_bad_cursor_starts_over(signed_in, rt):
    expected = _enrol_many(rt)
    first = page(signed_in, "/dashboard/patients")
    following = _link(first, "next")
    with rt.transaction() as s:  # "aaa..." sorts before everyone on the next page
        enrol_patient(s, Enrolment("+447700900999", "Aaron Aardvark", "Europe/London"),
                      languages=["en"], now=rt.clock.now(), actor="test")
    assert _rows(page(signed_in, following)) == [
        pid for pid, _ in expected[PATIENTS_PAGE:2 * PATIENTS_PAGE]]
    for bad in ("x", "-1", "99999999", str(2**70)):
        res = signed_in.get(f"/dashboard/patients?after={bad}")
        assert res.status_code == 200
        assert _rows(res.get_data(as_text=True))[0] != expected[PATIENTS_PAGE][0]
