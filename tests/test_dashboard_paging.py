"""The dashboard's patients page in pages of 100 (keyset, as GET /api/patients): in the
page's order (still in service first, then discharged; names alphabetical whatever their case
or accents), each patient on exactly one page, Next and Previous links that work, and a search
that finds a patient on any page and keeps to itself when paged, without the name or number
typed ever being in a URL (a browser's history, a proxy's access log, the paging links)."""

from __future__ import annotations

import html
import re
from urllib.parse import parse_qs, urlsplit

import pytest
from unidecode import unidecode

from bot.services.patients import Enrolment, discharge_patient, enrol_patient
from bot.store.models import DashboardSession, Patient
from bot.web.dashboard import COOKIE, PATIENTS_PAGE, _serializer
from tests.test_dashboard import csrf_of, page, sign_in

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


def search(client, term: str) -> str:
    """Find `term` as the page's form does (POST, with the CSRF token); the 303 goes back to
    the bare page, which shows the search. Returns that page."""
    res = client.post("/dashboard/patients",
                      data={"csrf": csrf_of(client, "/dashboard/patients"), "q": term})
    assert res.status_code == 303 and _bare(res.headers["Location"]), res.headers
    return page(client, "/dashboard/patients")


def _bare(url: str) -> bool:
    """The patients page with no query string at all."""
    parts = urlsplit(url)
    return parts.path == "/dashboard/patients" and parts.query == "" and "?" not in url


def _urls(text: str) -> list[str]:
    """The page's own links and form targets (not a patient's tel: link, which is their
    number whatever was searched)."""
    return [html.unescape(u) for u in re.findall(r'(?:href|action)="([^"]*)"', text)
            if not u.startswith("tel:")]


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
    found = search(signed_in, last_name.upper())
    assert _rows(found) == [last_id]
    assert f'1 found for "{last_name.upper()}"' in html.unescape(found)
    # by number, as a coordinator types it (national form, spaces)
    with rt.transaction() as s:
        phone = s.get(Patient, last_id).phone
    national = "0" + phone.removeprefix("+44")
    assert _rows(search(signed_in, f"{national[:5]} {national[5:]}")) == [last_id]
    # whatever the case or accents: "emile" finds Émile, and a search of more than a page
    # pages through only its matches, the search kept (server-side) on every page
    emiles = [pid for pid, name in expected if name.startswith("Émile")]
    assert len(emiles) > 10
    search(signed_in, "EMILE")
    pages = _walk(signed_in, "/dashboard/patients")
    assert [pid for p in pages for pid in p] == emiles
    many = [pid for pid, name in expected if "1" in name]
    assert PATIENTS_PAGE < len(many) < COUNT
    search(signed_in, "1")
    pages = _walk(signed_in, "/dashboard/patients")
    assert len(pages) == 2 and [pid for p in pages for pid in p] == many
    nothing = search(signed_in, "nobody-by-this-name")
    assert "Nothing here." in nothing and 'id="next"' not in nothing


def test_the_name_or_number_searched_is_in_no_url_and_clear_ends_the_search(signed_in, rt,
                                                                           app):
    expected = _enrol_many(rt)
    many = [pid for pid, name in expected if "1" in name]
    with rt.transaction() as s:
        phone = s.get(Patient, many[0]).phone
    form = page(signed_in, "/dashboard/patients")
    tag = re.search(r'<form[^>]*id="search"[^>]*>', form).group(0)
    assert 'method="post"' in tag and 'action="/dashboard/patients"' in tag
    for term in ("Zoë 1", phone[-7:]):
        text = search(signed_in, term)
        assert _rows(text)
        # no link or form of the page carries it, nor any ?q=; paging: only a cursor
        urls = _urls(text)
        assert urls and not [u for u in urls if "q=" in u or term in u or "Zo" in u], urls
    text = search(signed_in, "1")
    following = _link(text, "next")
    assert parse_qs(urlsplit(following).query) == {"after": [str(many[PATIENTS_PAGE - 1])]}
    second = page(signed_in, following)
    assert _rows(second) == many[PATIENTS_PAGE:]
    assert parse_qs(urlsplit(_link(second, "previous")).query) == {
        "before": [str(many[PATIENTS_PAGE])]}
    assert not [u for u in _urls(second) if "q=" in u]
    # kept server-side: not in the cookie either (readable by whoever has the browser)
    with app.app_context():
        cookie = _serializer().loads(signed_in.get_cookie(COOKIE, path="/dashboard").value)
    assert "1" not in repr({k: v for k, v in cookie.items() if k not in ("csrf", "sid")})
    with rt.transaction() as s:
        assert [row.search for row in s.query(DashboardSession)] == ["1"]
    # Clear ends the search (a POST too: it changes what every page shows)
    assert 'id="clear"' in text
    res = signed_in.post("/dashboard/patients", data={
        "csrf": csrf_of(signed_in, "/dashboard/patients"), "action": "clear"})
    assert res.status_code == 303 and _bare(res.headers["Location"])
    everyone = page(signed_in, "/dashboard/patients")
    assert "found for" not in everyone and 'id="clear"' not in everyone
    assert f"1-{PATIENTS_PAGE} of {COUNT}" in everyone
    assert _rows(everyone) == [pid for pid, _ in expected[:PATIENTS_PAGE]]
    # a blank search is no search
    search(signed_in, "1")
    assert "found for" not in search(signed_in, "   ")
    # without the CSRF token: refused, nothing changed
    assert signed_in.post("/dashboard/patients", data={"q": "1"}).status_code == 400
    assert "found for" not in page(signed_in, "/dashboard/patients")


def test_an_old_bookmark_with_q_is_ignored_and_leaves_for_the_bare_page(signed_in, rt):
    """GET ?q= (a bookmark or history entry from before) searches nothing: the page it goes
    to has no term in its address or links, and says to type the search in the form."""
    expected = _enrol_many(rt, count=5)
    res = signed_in.get("/dashboard/patients?q=Zo%C3%AB&after=" + str(expected[0][0]))
    assert res.status_code == 303 and "Zo" not in res.headers["Location"]
    assert urlsplit(res.headers["Location"]).path == "/dashboard/patients"
    assert "q=" not in res.headers["Location"]
    text = page(signed_in, res.headers["Location"])
    assert "found for" not in text and "Find a patient" in text
    assert not [u for u in _urls(text) if "q=" in u or "Zo" in u]
    # a search already made stays as it was
    search(signed_in, "van")
    res = signed_in.get("/dashboard/patients?q=ada")
    assert res.status_code == 303 and _bare(res.headers["Location"])
    assert 'found for "van"' in page(signed_in, "/dashboard/patients")


def test_signed_out_the_sign_in_page_is_not_given_the_term(client, rt):
    res = client.get("/dashboard/patients?q=Zo%C3%AB&before=3")
    assert res.status_code == 303 and "/dashboard/login" in res.headers["Location"]
    assert "Zo" not in res.headers["Location"] and "q%3D" not in res.headers["Location"]
    assert "q=" not in res.headers["Location"]


def test_signing_out_forgets_the_search(client, rt):
    sign_in(client, token=None)
    _enrol_many(rt, count=5)
    search(client, "van")
    client.post("/dashboard/logout", data={"csrf": csrf_of(client, "/dashboard/")})
    with rt.transaction() as s:
        assert [row.search for row in s.query(DashboardSession)] == [None]
    sign_in(client, token=None)
    assert "found for" not in page(client, "/dashboard/patients")


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
