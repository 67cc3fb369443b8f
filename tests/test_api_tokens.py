"""Staff API tokens: `checkin-bot staff token ...`, and the JSON API (and the simulator's)
recording the token's account as the actor instead of a claimed X-Actor."""

from __future__ import annotations

import hashlib
import logging
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from bot.services import staff as staff_service
from bot.store.models import AuditLog, StaffToken
from tests.test_dashboard import TOKEN, audits, enrol, escalation, red_flag
from tests.test_staff import add_account, all_audit_text
from tests.twilio_support import TWILIO_SETTINGS, fake_http, messenger  # noqa: F401 - fixtures

ADMIN = {"Authorization": f"Bearer {TOKEN}"}


def new_token(rt, username: str = "alice", label: str | None = None) -> str:
    with rt.transaction() as s:
        return staff_service.add_token(s, username, label, rt.clock.now(), actor="test")[1]


def bearer(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **extra}


def token_row(rt, token_id: int = 1) -> StaffToken:
    with rt.transaction() as s:
        return s.get(StaffToken, token_id)


def revoke(rt, username: str = "alice", token_id: int = 1) -> None:
    with rt.transaction() as s:
        staff_service.revoke_token(s, username, token_id, rt.clock.now(), actor="test")


def set_active(rt, username: str, active: bool) -> None:
    with rt.transaction() as s:
        staff_service.set_active(s, username, active, rt.clock.now(), actor="test")


# -- the command line ------------------------------------------------------------------------


def test_token_add_prints_the_token_once_and_keeps_only_its_hash(cli, rt, caplog):
    caplog.set_level(logging.DEBUG)
    add_account(rt)
    res = cli("staff", "token", "add", "alice", "--label", " my  laptop ")
    assert res.exit_code == 0, res.output
    token = res.stdout.strip()
    assert len(token) >= 43 and "\n" not in token  # secrets.token_urlsafe(32), alone
    assert "API token 1 for alice (my laptop): shown this once" in res.stderr
    row = token_row(rt)
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert row.label == "my laptop" and row.created_at is not None
    assert row.last_used_at is None and row.revoked_at is None
    [added] = audits(rt, "staff.token_add")
    assert added.actor == "cli:night-nurse" and added.subject_type == "staff"
    assert added.details == {"username": "alice", "token_id": 1, "label": "my laptop"}
    listed = cli("staff", "token", "list", "alice").output
    for text in (all_audit_text(rt), caplog.text, listed):
        assert token not in text and row.token_hash not in text
    # Each token is new; the second one has no label.
    again = cli("staff", "token", "add", "alice").stdout.strip()
    assert again != token and token_row(rt, 2).label is None


def test_token_list_shows_id_state_times_and_label_never_the_token(cli, rt, clock):
    add_account(rt)
    add_account(rt, "bob", "Bob", "bobs password 1")
    assert cli("staff", "token", "list", "alice").output.strip() == \
        "none: alice has no API tokens"
    first = new_token(rt, label="laptop")  # at the test's clock, to check the times shown
    new_token(rt, label="script")
    new_token(rt, "bob", label="bob's")
    # In the clinic's zone (Europe/London), GMT on 2 March, as every CLI listing shows times.
    created = f"{clock.now():%Y-%m-%d %H:%M} GMT"
    clock.advance(minutes=2)
    with rt.transaction() as s:  # the first is used, the second revoked
        staff_service.check_token(s, first, clock.now())
    used = f"{clock.now():%Y-%m-%d %H:%M} GMT"
    clock.advance(minutes=3)
    revoke(rt, token_id=2)
    res = cli("staff", "token", "list", "alice")
    assert res.exit_code == 0
    one, two = res.output.strip().splitlines()
    assert one.split()[:2] == ["1", "live"] and f"created {created}" in one
    assert f"last used {used}" in one and one.endswith("laptop")
    assert two.split()[:2] == ["2", "revoked"] and f"{clock.now():%Y-%m-%d %H:%M} GMT" in two
    assert f"created {created}" in two and "last used never" in two
    assert two.endswith("script")
    assert first not in res.output and "bob's" not in res.output
    res = cli("staff", "token", "list", "nobody")
    assert res.exit_code == 1 and "no staff account 'nobody'" in res.output


def test_token_revoke_is_audited_once_and_only_for_the_accounts_own_token(cli, rt):
    add_account(rt)
    add_account(rt, "bob", "Bob", "bobs password 1")
    cli("staff", "token", "add", "alice", "--label", "laptop")
    cli("staff", "token", "add", "bob")
    res = cli("staff", "token", "revoke", "alice", "2")  # bob's
    assert res.exit_code == 1 and "alice has no API token 2" in res.output
    for bad_id in ("0", "-1", str(2**31)):
        res = cli("staff", "token", "revoke", "alice", "--", bad_id)
        assert res.exit_code == 1 and f"alice has no API token {bad_id}" in res.output
    assert token_row(rt, 2).revoked_at is None
    res = cli("staff", "token", "revoke", "alice", "1")
    assert res.exit_code == 0 and res.output.strip() == "API token 1 of alice revoked"
    assert token_row(rt, 1).revoked_at is not None
    again = cli("staff", "token", "revoke", "alice", "1")
    assert again.exit_code == 0 and "already revoked: nothing changed" in again.output
    [revoked] = audits(rt, "staff.token_revoke")
    assert revoked.actor == "cli:night-nurse"
    assert revoked.details == {"username": "alice", "token_id": 1, "label": "laptop"}
    res = cli("staff", "token", "revoke", "nobody", "1")
    assert res.exit_code == 1 and "no staff account 'nobody'" in res.output


@pytest.mark.parametrize(("username", "label", "code", "message"), [
    ("alice", "a" * 61, 2, "error: label: at most 60 characters"),
    ("alice", "lap\x07top", 2, "error: label: contains a control character"),
    ("bob", "laptop", 2, "error: username: 'bob' is disabled: enable it first"),
    ("nobody", "laptop", 1, "error: no staff account 'nobody'"),
])
def test_token_add_refuses_bad_input_and_stores_nothing(cli, rt, username, label, code,
                                                        message):
    add_account(rt)
    add_account(rt, "bob", "Bob", "bobs password 1")
    set_active(rt, "bob", False)
    res = cli("staff", "token", "add", username, "--label", label)
    assert res.exit_code == code and message in res.output, res.output
    assert res.stdout == ""
    with rt.transaction() as s:
        assert s.scalars(select(StaffToken)).all() == []
    assert audits(rt, "staff.token_add") == []


# -- the API ---------------------------------------------------------------------------------


def audit_count(rt) -> int:
    with rt.transaction() as s:
        return s.scalar(select(func.count()).select_from(AuditLog))


class TestTheApiWithStaffTokens:
    """CHECKIN_ADMIN_TOKEN set, as in production: both it and staff tokens open /api."""

    @pytest.fixture
    def settings_overrides(self):
        return {"admin_token": TOKEN}

    def test_the_actor_is_the_tokens_account_not_x_actor(self, client, rt):
        add_account(rt)
        token = new_token(rt)
        res = client.post("/api/patients", json={"phone": "+447700900123", "name": "Ada"},
                          headers=bearer(token, **{"X-Actor": "Dr Somebody Else"}))
        assert res.status_code == 201, res.get_json()
        [enrolled] = audits(rt, "patient.enrol")
        assert enrolled.actor == "user:alice"

    def test_ack_by_defaults_to_the_accounts_name(self, client, rt):
        add_account(rt)
        token = new_token(rt)
        ref = red_flag(rt, enrol(rt, "+447700900123"), "emergency")
        res = client.post(f"/api/escalations/{ref}/ack",
                          headers=bearer(token, **{"X-Actor": "mallory"}))
        assert res.status_code == 200, res.get_json()
        assert res.get_json()["acknowledged_by"] == "Alice Nurse"
        [ack] = audits(rt, "escalation.ack")
        assert ack.actor == "user:alice" and ack.details == {"by": "Alice Nurse"}
        # A blank `by` is still refused, token or not.
        other = red_flag(rt, None, "urgent", phone="+447700900199")
        res = client.post(f"/api/escalations/{other}/ack", json={"by": "  "},
                          headers=bearer(token))
        assert res.status_code == 400 and res.get_json()["field"] == "by"
        assert escalation(rt, other).status == "open"

    def test_resolving_an_unacknowledged_one_records_the_accounts_name(self, client, rt):
        add_account(rt)
        token = new_token(rt)
        ref = red_flag(rt, enrol(rt, "+447700900123"), "emergency")
        res = client.post(f"/api/escalations/{ref}/resolve", json={"note": "rang her"},
                          headers=bearer(token, **{"X-Actor": "mallory"}))
        assert res.status_code == 200
        assert escalation(rt, ref).acknowledged_by == "Alice Nurse"
        [resolved] = audits(rt, "escalation.resolve")
        assert resolved.actor == "user:alice"

    def test_the_shared_admin_token_still_works_with_a_claimed_name(self, client, rt):
        add_account(rt)
        new_token(rt)
        res = client.post("/api/patients", json={"phone": "+447700900123", "name": "Ada"},
                          headers={**ADMIN, "X-Actor": "Nurse Jo"})
        assert res.status_code == 201
        assert audits(rt, "patient.enrol")[0].actor == "api:Nurse Jo"

    @pytest.mark.parametrize("actor", [None, "", "   ", "\x00\x07"])
    def test_a_change_with_the_shared_token_and_no_name_is_refused(self, client, rt, actor):
        """The shared token says nothing of who holds it: a change made with it was
        recorded as "api:coordinator", naming nobody. It must name who makes it (X-Actor),
        or, for an escalation, `by`; reading needs no name."""
        pid = enrol(rt, "+447700900123")
        ref = red_flag(rt, pid, "emergency")
        headers = ADMIN if actor is None else {**ADMIN, "X-Actor": actor}
        before = audit_count(rt)
        for method, url, body in (
                ("POST", "/api/patients", {"phone": "+447700900124", "name": "Bob"}),
                ("PATCH", f"/api/patients/{pid}", {"name": "Ada L"}),
                ("POST", f"/api/patients/{pid}/discharge", {"reason": "moved away"}),
                ("POST", f"/api/patients/{pid}/schedules", {"at": "09:00"}),
                ("DELETE", "/api/schedules/1", None),
                ("POST", f"/api/escalations/{ref}/resolve", {"note": "rang her"})):
            res = client.open(url, method=method, json=body, headers=headers)
            assert res.status_code == 400, (method, url, res.get_json())
            assert res.get_json()["field"] == "X-Actor"
            assert "who" in res.get_json()["error"]
        assert client.get("/api/patients", headers=headers).status_code == 200
        assert audit_count(rt) == before  # nothing changed, nothing recorded
        # An acknowledgement names its person in `by` (required): taken without X-Actor.
        res = client.post(f"/api/escalations/{ref}/ack", json={"by": "Dr Lee"},
                          headers=headers)
        assert res.status_code == 200
        [ack] = audits(rt, "escalation.ack")
        assert ack.actor == "api:Dr Lee" and ack.details["by"] == "Dr Lee"

    def test_a_revoked_token_or_a_disabled_accounts_is_a_401_like_a_wrong_one(self, client,
                                                                             rt, caplog):
        caplog.set_level(logging.DEBUG)
        add_account(rt)
        token = new_token(rt)
        assert client.get("/api/patients", headers=bearer(token)).status_code == 200
        wrong = client.get("/api/patients", headers=bearer("not-a-token"))
        assert wrong.status_code == 401
        set_active(rt, "alice", False)
        disabled = client.get("/api/patients", headers=bearer(token))
        set_active(rt, "alice", True)
        assert client.get("/api/patients", headers=bearer(token)).status_code == 200
        revoke(rt)
        revoked = client.get("/api/patients", headers=bearer(token))
        for res in (disabled, revoked):
            assert res.status_code == 401
            assert res.get_json() == wrong.get_json() and "token" in res.get_json()["error"]
            assert res.headers["WWW-Authenticate"] == wrong.headers["WWW-Authenticate"]
        res = client.post("/api/patients", json={"phone": "+447700900123", "name": "Ada"},
                          headers=bearer(token))
        assert res.status_code == 401 and audits(rt, "patient.enrol") == []
        assert token not in caplog.text

    def test_last_used_is_written_at_most_once_a_minute(self, client, rt, clock):
        add_account(rt)
        token = new_token(rt)
        first = clock.now()
        client.get("/api/patients", headers=bearer(token))
        assert token_row(rt).last_used_at == first
        clock.advance(seconds=59)
        client.get("/api/patients", headers=bearer(token))
        assert token_row(rt).last_used_at == first
        clock.advance(seconds=1)
        client.get("/api/patients", headers=bearer(token))
        assert token_row(rt).last_used_at == clock.now()
        revoke(rt)
        clock.advance(minutes=5)
        client.get("/api/patients", headers=bearer(token))  # refused: not a use
        assert token_row(rt).last_used_at == clock.now() - timedelta(minutes=5)

    def test_the_simulators_api_takes_a_staff_token_too(self, client, rt):
        add_account(rt)
        token = new_token(rt)
        body = {"phone": "+447700900123", "name": "Ada"}
        assert client.post("/simulator/api/patients", json=body).status_code == 401
        res = client.post("/simulator/api/patients", json=body, headers=bearer(token))
        assert res.status_code == 201 and res.get_json()["created"] is True
        assert token_row(rt).last_used_at == rt.clock.now()
        with rt.transaction() as s:  # enrolled by the account whose token it was
            assert s.scalars(select(AuditLog.actor).where(
                AuditLog.action == "patient.enrol")).one() == "user:alice"
        revoke(rt)
        assert client.get("/simulator/api/patients", headers=bearer(token)).status_code == 401


class TestTwilioWithoutAnAdminToken:
    """Real phones and no shared token: staff tokens alone open the API."""

    @pytest.fixture
    def settings_overrides(self):
        return TWILIO_SETTINGS

    def test_a_staff_token_opens_the_api(self, client, rt):
        add_account(rt)
        token = new_token(rt)
        res = client.get("/api/escalations", headers=bearer(token))
        assert res.status_code == 200 and res.get_json() == []
        wrong = client.get("/api/escalations", headers=bearer("not-a-token"))
        assert wrong.status_code == 401 and "token" in wrong.get_json()["error"]
        revoke(rt)
        assert client.get("/api/escalations", headers=bearer(token)).status_code == 401
        off = client.get("/api/escalations")  # no token at all: the API is off, as before
        assert off.status_code == 403 and "CHECKIN_ADMIN_TOKEN" in off.get_json()["error"]


def test_with_the_dev_messenger_and_no_admin_token_a_staff_token_still_names_the_actor(
        client, rt):
    add_account(rt)
    token = new_token(rt)
    client.post("/api/patients", json={"phone": "+447700900123", "name": "Ada"},
                headers=bearer(token, **{"X-Actor": "someone"}))
    client.post("/api/patients", json={"phone": "+447700900124", "name": "Bea"},
                headers={"X-Actor": "someone"})  # open, as under `make run`
    assert [a.actor for a in audits(rt, "patient.enrol")] == ["user:alice", "api:someone"]
    revoke(rt)
    res = client.post("/api/patients", json={"phone": "+447700900125", "name": "Cy"},
                      headers=bearer(token))
    assert res.status_code == 401 and len(audits(rt, "patient.enrol")) == 2
