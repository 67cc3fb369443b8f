"""Every route, found in the app's URL map (a new one is covered without being listed here):
the JSON API and the simulator's JSON endpoints need a token, every dashboard page a sign-in,
and every dashboard form the CSRF token, before anything is read or changed."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from bot.store.models import AuditLog
from tests.test_dashboard import TOKEN, enrol, red_flag, sign_in

OPEN = {"/healthz", "/simulator/", "/simulator", "/dashboard/login"}  # no patient data


@pytest.fixture
def settings_overrides():
    return {"admin_token": TOKEN}


def routes(app, prefix: str):
    """(method, url) of every rule under `prefix`, its arguments filled in (1, or a ref)."""
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith(prefix) or rule.rule in OPEN:
            continue
        url = rule.rule
        for arg in rule.arguments:
            url = url.replace(f"<int:{arg}>", "1").replace(f"<{arg}>", "ABCDE")
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield method, url


def test_every_json_endpoint_refuses_a_request_without_the_token(app, client, rt):
    pid = enrol(rt, "+447700900123")
    red_flag(rt, pid, "emergency")
    found = list(routes(app, "/api/")) + list(routes(app, "/simulator/api/"))
    assert {("GET", "/api/patients"), ("POST", "/simulator/api/messages"),
            ("DELETE", "/api/schedules/1")} <= set(found)
    with rt.transaction() as s:
        before = s.scalar(select(func.count()).select_from(AuditLog))
    for n, (method, url) in enumerate(found):
        for headers in ({}, {"Authorization": "Bearer not-the-token"}):
            res = client.open(url, method=method, json={"phone": "+447700900123",
                                                        "body": "hi", "by": "Eve"},
                              headers=headers,  # an address each: no 429 for the wrong ones
                              environ_base={"REMOTE_ADDR": f"192.0.2.{n + 1}"})
            assert res.status_code == 401, (method, url, res.status_code)
            assert "+447700900123" not in res.get_data(as_text=True)
    with rt.transaction() as s:  # only the wrong tokens were recorded, nothing else
        actions = s.scalars(select(AuditLog.action).where(AuditLog.id > before)).all()
    assert set(actions) <= {"api.auth_failed"}


def test_every_dashboard_page_needs_a_sign_in_and_every_form_the_csrf_token(app, client, rt):
    ref = red_flag(rt, enrol(rt, "+447700900123", "Ada Lovelace"), "emergency")
    found = [(m, u.replace("ABCDE", ref)) for m, u in routes(app, "/dashboard")]
    posts = [u for m, u in found if m == "POST"]
    assert len(posts) >= 10 and "/dashboard/patients/1/discharge" in posts
    for method, url in found:  # signed out: to the sign-in page, nothing shown
        res = client.open(url, method=method, data={"note": "x", "reason": "x"})
        assert res.status_code in (303, 400, 401), (method, url, res.status_code)
        assert "Ada Lovelace" not in res.get_data(as_text=True), url
        if res.status_code == 303:
            assert "/dashboard/login" in res.headers["Location"], url
    sign_in(client)
    with rt.transaction() as s:
        before = s.scalar(select(func.count()).select_from(AuditLog))
    for url in posts:  # signed in, without the token or with a forged one: refused
        for form in ({}, {"csrf": "forged"}):
            res = client.post(url, data={**form, "note": "x", "reason": "gone",
                                         "name": "Eve", "action": "pause"})
            assert res.status_code == 400, (url, res.status_code)
            assert "did not come from the dashboard" in res.get_data(as_text=True)
    with rt.transaction() as s:
        assert s.scalar(select(func.count()).select_from(AuditLog)) == before
