"""Paging of the API's lists (GET /api/patients, GET /api/escalations): at most `limit` rows
(default 100, at most 500), and, when there are more, the next page's cursor in the
X-Next-Cursor header and a Link rel="next" URL (the body stays a bare JSON list, as clients
read it). The filters still apply across pages."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from bot.store.models import Escalation, Patient


def add_patients(rt, n: int) -> list[int]:
    now = rt.clock.now()
    with rt.transaction() as s:
        rows = [Patient(phone=f"+4477009{i:05d}", channel="sms", name=f"P{i}",
                        timezone="Europe/London", language="en", created_at=now)
                for i in range(n)]
        s.add_all(rows)
        s.flush()
        return [p.id for p in rows]


def add_escalations(rt, n: int, same_time: bool = False) -> list[int]:
    """n escalations, with statuses in turn open, resolved, acknowledged; each a minute later
    than the one before (or all at once with same_time)."""
    now = rt.clock.now()
    statuses = ["open", "resolved", "acknowledged"]
    with rt.transaction() as s:
        rows = []
        for i in range(n):
            at = now if same_time else now + timedelta(minutes=i)
            rows.append(Escalation(ref=f"R{i:05d}", phone=f"+4477008{i:05d}", level="urgent",
                                   flags=["new_pain"], status=statuses[i % 3], created_at=at,
                                   updated_at=at))
        s.add_all(rows)
        s.flush()
        return [e.id for e in rows]


def walk(client, url: str) -> tuple[list[dict], int]:
    """Every row, following X-Next-Cursor; and how many pages it took."""
    rows, pages = [], 0
    while True:
        res = client.get(url)
        assert res.status_code == 200, res.get_json()
        body = res.get_json()
        assert isinstance(body, list)
        rows += body
        pages += 1
        cursor = res.headers.get("X-Next-Cursor")
        if cursor is None:
            assert "Link" not in res.headers
            return rows, pages
        link = re.fullmatch(r'<([^>]+)>; rel="next"', res.headers["Link"])
        assert link and f"cursor={cursor}" in link.group(1)
        url = link.group(1)  # the Link keeps the filters and the limit
        assert pages < 50


def test_patients_default_to_100_a_page_and_walk_every_one_once(client, rt):
    ids = add_patients(rt, 230)
    first = client.get("/api/patients")
    assert [p["id"] for p in first.get_json()] == ids[:100]
    assert first.headers["X-Next-Cursor"]
    rows, pages = walk(client, "http://localhost/api/patients")
    assert [p["id"] for p in rows] == ids and pages == 3


def test_a_short_list_has_no_cursor(client, rt):
    ids = add_patients(rt, 3)
    res = client.get("/api/patients?limit=3")
    assert [p["id"] for p in res.get_json()] == ids
    assert "X-Next-Cursor" not in res.headers and "Link" not in res.headers


def test_limit_up_to_500(client, rt):
    add_patients(rt, 501)
    assert len(client.get("/api/patients?limit=500").get_json()) == 500
    rows, pages = walk(client, "/api/patients?limit=500")
    assert len(rows) == 501 and pages == 2


def test_escalations_newest_first_across_pages_with_the_open_filter(client, rt):
    ids = add_escalations(rt, 25)
    rows, pages = walk(client, "/api/escalations?limit=4")
    assert [e["id"] for e in rows] == ids[::-1] and pages == 7
    opened = [i for n, i in enumerate(ids) if n % 3 != 1][::-1]  # not resolved
    rows, pages = walk(client, "/api/escalations?open=1&limit=4")
    assert [e["id"] for e in rows] == opened and pages == 5
    assert all(e["status"] != "resolved" for e in rows)


def test_escalations_at_the_same_time_are_each_listed_once(client, rt):
    ids = add_escalations(rt, 10, same_time=True)
    rows, _ = walk(client, "/api/escalations?limit=3")
    assert [e["id"] for e in rows] == ids[::-1]


def test_a_row_added_while_paging_does_not_shift_the_pages(client, rt):
    ids = add_escalations(rt, 6)
    first = client.get("/api/escalations?limit=3")
    assert [e["id"] for e in first.get_json()] == ids[:2:-1]
    rt.clock.advance(hours=1)
    newer = add_escalations_later(rt)
    second = client.get(f"/api/escalations?limit=3&cursor={first.headers['X-Next-Cursor']}")
    assert [e["id"] for e in second.get_json()] == ids[2::-1]
    assert newer not in [e["id"] for e in second.get_json()]


def add_escalations_later(rt) -> int:
    now = rt.clock.now()
    with rt.transaction() as s:
        e = Escalation(ref="LATER", phone="+447700800999", level="urgent", flags=["new_pain"],
                       status="open", created_at=now, updated_at=now)
        s.add(e)
        s.flush()
        return e.id


@pytest.mark.parametrize("path", ["/api/patients", "/api/escalations"])
@pytest.mark.parametrize("query", ["limit=0", "limit=501", "limit=-1", "limit=ten", "limit=",
                                   "limit=1.5", "limit=%EF%BC%91"])
def test_a_bad_limit_is_a_400_naming_it(client, rt, path, query):
    res = client.get(f"{path}?{query}")
    assert res.status_code == 400
    body = res.get_json()
    assert body["field"] == "limit" and body["error"].startswith("limit: ")
    assert "500" in body["error"]


@pytest.mark.parametrize("path", ["/api/patients", "/api/escalations"])
@pytest.mark.parametrize("cursor", ["", "nonsense", "!!!", "eyJ4Ijp9", "MTIz"])
def test_a_bad_cursor_is_a_400_naming_it(client, rt, path, cursor):
    add_patients(rt, 2)
    res = client.get(f"{path}?cursor={cursor}")
    assert res.status_code == 400
    assert res.get_json()["field"] == "cursor"


def forged(*parts) -> str:
    import base64
    import json

    return base64.urlsafe_b64encode(json.dumps(list(parts)).encode()).decode()


@pytest.mark.parametrize("parts", [
    ("escalations", 5, "2026-03-02T10:00:00"),  # no zone
    ("escalations", 5, None), ("escalations", 5, 12), ("escalations", 5, "yesterday"),
    ("escalations", 0, "2026-03-02T10:00:00Z"), ("escalations", True, "2026-03-02T10:00:00Z"),
    ("escalations", 2**63, "2026-03-02T10:00:00Z"), ("escalations", "5", "2026-03-02T10:00:00Z"),
    ("escalations", 5, "0001-01-01T00:00:00+01:00"), ("escalations", 5),
])
def test_a_forged_cursor_is_a_400_not_a_500(client, rt, parts):
    add_escalations(rt, 2)
    res = client.get(f"/api/escalations?cursor={forged(*parts)}")
    assert res.status_code == 400 and res.get_json()["field"] == "cursor"


def test_a_cursor_of_one_list_is_refused_by_the_other(client, rt):
    add_patients(rt, 3)
    add_escalations(rt, 3)
    patients_cursor = client.get("/api/patients?limit=1").headers["X-Next-Cursor"]
    escalations_cursor = client.get("/api/escalations?limit=1").headers["X-Next-Cursor"]
    assert client.get(f"/api/escalations?cursor={patients_cursor}").status_code == 400
    assert client.get(f"/api/patients?cursor={escalations_cursor}").status_code == 400
