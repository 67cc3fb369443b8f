"""Staff accounts: `checkin-bot staff ...`, and coordinators signing in to the dashboard as
themselves (username and password) instead of with the shared token and a claimed name."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import select

from bot.config import ConfigError, load_settings
from bot.services import staff as staff_service
from bot.store.models import AuditLog, DashboardSession, Schedule, Staff
from tests.test_dashboard import (
    TOKEN,
    audits,
    csrf_of,
    enrol,
    escalation,
    page,
    post,
    red_flag,
    sign_in,
)
from tests.twilio_support import TWILIO_SETTINGS, fake_http  # noqa: F401 - fixture

PASSWORD = "correct horse battery"
SECRET_KEY = "k" * 32


def add_account(rt, username: str = "alice", name: str = "Alice Nurse",
                password: str = PASSWORD) -> int:
    with rt.transaction() as s:
        return staff_service.add_staff(s, username, name, password, rt.clock.now(),
                                       actor="test").id


def account(rt, username: str) -> Staff:
    with rt.transaction() as s:
        return staff_service.find_staff(s, username)


def staff_sign_in(client, username: str = "alice", password: str = PASSWORD):
    return client.post("/dashboard/login", data={
        "csrf": csrf_of(client), "username": username, "password": password})


def all_audit_text(rt) -> str:
    with rt.transaction() as s:
        return repr([(a.actor, a.action, a.details) for a in s.scalars(select(AuditLog))])


# -- the command line ------------------------------------------------------------------------


def test_staff_add_from_stdin_then_list(cli, rt, caplog):
    caplog.set_level(logging.DEBUG)
    assert cli("staff", "list").output.startswith("none")
    res = cli("staff", "add", "--username", "alice", "--name", "Alice  Nurse",
              "--password-stdin", input=PASSWORD + "\n")
    assert res.exit_code == 0, res.output
    assert res.output.strip() == "added alice (Alice Nurse)"
    [line] = cli("staff", "list").output.strip().splitlines()
    assert line.split()[:3] == ["alice", "active", "never"] and line.endswith("Alice Nurse")
    alice = account(rt, "alice")
    assert alice.password_hash != PASSWORD and PASSWORD not in alice.password_hash
    with rt.transaction() as s:
        assert staff_service.authenticate(s, "alice", PASSWORD)[0].id == alice.id
    [added] = audits(rt, "staff.add")
    assert added.actor == "cli:night-nurse" and added.subject_id == str(alice.id)
    assert added.details == {"username": "alice", "name": "Alice Nurse"}
    assert PASSWORD not in res.output + caplog.text
    assert alice.password_hash not in all_audit_text(rt) + caplog.text


def test_staff_add_asks_for_the_password_twice_without_showing_it(cli, rt):
    res = cli("staff", "add", "--username", "bob", "--name", "Bob",
              input=f"{PASSWORD}\n{PASSWORD}\n")
    assert res.exit_code == 0, res.output
    assert "Repeat for confirmation" in res.output and PASSWORD not in res.output
    with rt.transaction() as s:
        assert staff_service.authenticate(s, "bob", PASSWORD)[0] is not None
    # Two that differ: asked again; nothing is stored until they match.
    res = cli("staff", "add", "--username", "carol", "--name", "Carol",
              input=f"{PASSWORD}\nsomething else!\n{PASSWORD}x\n{PASSWORD}x\n")
    assert res.exit_code == 0 and "do not match" in res.output
    with rt.transaction() as s:
        assert staff_service.authenticate(s, "carol", PASSWORD + "x")[0] is not None


@pytest.mark.parametrize(("args", "password", "message"), [
    (["--username", "alice", "--name", "Alice"], "short pass", "password: too short: at least 12"),
    (["--username", "Alice", "--name", "Alice"], PASSWORD, "username: 3 to 32 characters"),
    (["--username", "al", "--name", "Alice"], PASSWORD, "username: 3 to 32 characters"),
    (["--username", "a" * 33, "--name", "Alice"], PASSWORD, "username: 3 to 32 characters"),
    (["--username", "al ice", "--name", "Alice"], PASSWORD, "username: 3 to 32 characters"),
    (["--username", "alice", "--name", "   "], PASSWORD, "name: required"),
    (["--username", "alice", "--name", "Al\x07ice"], PASSWORD, "name: contains a control"),
])
def test_staff_add_refuses_bad_input_naming_the_field(cli, rt, args, password, message):
    res = cli("staff", "add", *args, "--password-stdin", input=password + "\n")
    assert res.exit_code == 2 and f"error: {message}" in res.output, res.output
    assert cli("staff", "list").output.startswith("none")
    assert audits(rt, "staff.add") == []


def test_a_duplicate_username_is_refused(cli, rt):
    cli("staff", "add", "--username", "alice", "--name", "Alice", "--password-stdin",
        input=PASSWORD + "\n")
    res = cli("staff", "add", "--username", "alice", "--name", "Another Alice",
              "--password-stdin", input="another password\n")
    assert res.exit_code == 2 and "username: 'alice' is already taken" in res.output
    assert account(rt, "alice").display_name == "Alice"
    assert len(audits(rt, "staff.add")) == 1


def test_disable_and_enable_are_audited(cli, rt):
    cli("staff", "add", "--username", "alice", "--name", "Alice", "--password-stdin",
        input=PASSWORD + "\n")
    res = cli("staff", "disable", "alice")
    assert res.exit_code == 0 and res.output.strip() == "alice disabled"
    assert "disabled" in cli("staff", "list").output
    with rt.transaction() as s:  # the right password no longer opens it
        assert staff_service.authenticate(s, "alice", PASSWORD) == (None, "account disabled")
    again = cli("staff", "disable", "alice")
    assert again.exit_code == 0 and "already disabled: nothing changed" in again.output
    assert cli("staff", "enable", "alice").output.strip() == "alice enabled"
    assert " active " in cli("staff", "list").output
    [disabled], [enabled] = audits(rt, "staff.disable"), audits(rt, "staff.enable")
    assert disabled.actor == enabled.actor == "cli:night-nurse"
    assert disabled.details == {"username": "alice", "sessions_ended": 0}
    res = cli("staff", "disable", "nobody")
    assert res.exit_code == 1 and "no staff account 'nobody'" in res.output


def test_password_reset(cli, rt, caplog):
    caplog.set_level(logging.DEBUG)
    cli("staff", "add", "--username", "alice", "--name", "Alice", "--password-stdin",
        input=PASSWORD + "\n")
    res = cli("staff", "password", "alice", "--password-stdin", input="too short\n")
    assert res.exit_code == 2 and "password: too short" in res.output
    res = cli("staff", "password", "alice", "--password-stdin", input="a brand new one\n")
    assert res.exit_code == 0, res.output
    with rt.transaction() as s:
        assert staff_service.authenticate(s, "alice", PASSWORD) == (None, "wrong password")
        assert staff_service.authenticate(s, "alice", "a brand new one")[0] is not None
    [reset] = audits(rt, "staff.password")
    assert reset.actor == "cli:night-nurse"
    assert reset.details == {"username": "alice", "sessions_ended": 0}
    assert "a brand new one" not in all_audit_text(rt) + caplog.text + res.output
    assert account(rt, "alice").password_hash not in all_audit_text(rt)
    res = cli("staff", "password", "nobody", "--password-stdin", input="a brand new one\n")
    assert res.exit_code == 1 and "no staff account 'nobody'" in res.output


def test_an_account_added_on_the_command_line_signs_in_to_the_dashboard(cli, client, rt):
    cli("staff", "add", "--username", "alice", "--name", "Alice Nurse", "--password-stdin",
        input=PASSWORD + "\n")
    assert staff_sign_in(client).status_code == 303
    assert "Signed in as Alice Nurse" in page(client)


# -- signing in to the dashboard -------------------------------------------------------------


def test_with_an_account_the_login_page_asks_for_username_and_password(client, rt):
    add_account(rt)
    text = page(client, "/dashboard/login")
    assert 'name="username"' in text and 'name="password"' in text
    assert 'name="token"' not in text and 'name="name"' not in text
    # A claimed name no longer opens the dashboard (dev messenger, no token).
    assert sign_in(client, name="Dev Dee", token=None).status_code == 400
    assert client.get("/dashboard/").status_code == 303


def test_the_right_password_signs_in_and_is_audited(client, rt, clock):
    alice_id = add_account(rt)
    clock.advance(minutes=5)
    res = staff_sign_in(client, username=" Alice ")  # as a phone's keyboard may type it
    assert res.status_code == 303 and res.headers["Location"].endswith("/dashboard/")
    assert "Signed in as Alice Nurse" in page(client)
    assert account(rt, "alice").last_login_at == clock.now()
    [login] = audits(rt, "dashboard.login")
    assert login.actor == "user:alice" and login.details == {"staff_id": alice_id}
    with rt.transaction() as s:
        [row] = s.scalars(select(DashboardSession)).all()
        assert (row.staff_id, row.name) == (alice_id, "alice")


@pytest.mark.parametrize(("username", "password", "reason"), [
    ("alice", "wrong password!", "wrong password"),
    ("nobody", PASSWORD, "no such account"),
    ("bob", "bobs password 1", "account disabled"),
])
def test_wrong_credentials_get_one_answer_and_are_audited_unverified(client, rt, caplog,
                                                                     username, password,
                                                                     reason):
    caplog.set_level(logging.DEBUG)
    add_account(rt)
    add_account(rt, "bob", "Bob", "bobs password 1")
    with rt.transaction() as s:
        staff_service.set_active(s, "bob", False, rt.clock.now(), "test")
    res = staff_sign_in(client, username, password)
    assert res.status_code == 403
    text = res.get_data(as_text=True)
    assert "Wrong username or password. Nothing was opened" in text
    assert client.get("/dashboard/").status_code == 303
    [failed] = audits(rt, "dashboard.login_failed")
    assert failed.actor == f"dashboard:{username}"
    assert failed.details == {"username": username, "username_unverified": True,
                              "reason": reason, "failures": 1}
    assert password not in all_audit_text(rt) + caplog.text
    assert audits(rt, "dashboard.login") == []
    assert account(rt, "alice").last_login_at is None


def test_a_password_typed_as_the_username_is_not_recorded(client, rt, caplog):
    """People type their password into the username field: what could not be a username is
    not written to the audit log."""
    caplog.set_level(logging.DEBUG)
    add_account(rt)
    res = staff_sign_in(client, "Tr0ub4dor&3 horse", "whatever it is")
    assert res.status_code == 403
    [failed] = audits(rt, "dashboard.login_failed")
    assert failed.actor == "dashboard:unknown" and failed.details["username"] is None
    assert "tr0ub4dor" not in (all_audit_text(rt) + caplog.text).lower()


def test_failed_sign_ins_from_one_address_are_stopped_for_a_while(client, rt, clock):
    from bot.web import dashboard

    add_account(rt)
    for _ in range(dashboard.LOGIN_FAILURES):
        assert staff_sign_in(client, password="a guess at it").status_code == 403
    res = staff_sign_in(client)  # even the right password, for now
    assert res.status_code == 429 and "Too many failed sign-ins" in res.get_data(as_text=True)
    assert len(audits(rt, "dashboard.login_failed")) == dashboard.LOGIN_FAILURES
    clock.advance(seconds=dashboard.LOGIN_WINDOW.total_seconds())
    assert staff_sign_in(client).status_code == 303


def test_acknowledge_and_resolve_are_audited_as_the_staff_account(client, rt):
    add_account(rt)
    staff_sign_in(client)
    ref = red_flag(rt, enrol(rt, "+447700900123"), "emergency", "I wet myself")
    text = post(client, f"/dashboard/escalations/{ref}/ack").get_data(as_text=True)
    assert f"{ref} acknowledged by you (Alice Nurse)" in text
    assert escalation(rt, ref).acknowledged_by == "Alice Nurse"
    [ack] = audits(rt, "escalation.ack")
    assert ack.actor == "user:alice"
    post(client, f"/dashboard/escalations/{ref}/resolve", note="Called her; 999 sent.")
    assert escalation(rt, ref).status == "resolved"
    [resolved] = audits(rt, "escalation.resolve")
    assert resolved.actor == "user:alice"
    post(client, "/dashboard/logout")
    assert [a.actor for a in audits(rt, "dashboard.logout")] == ["user:alice"]


def test_who_discharged_or_removed_is_named_as_the_staff_account_not_its_actor_id(client, rt):
    add_account(rt)
    staff_sign_in(client)
    pid = enrol(rt, "+447700900123")
    reminder = post(client, f"/dashboard/patients/{pid}/schedules", flow="reminder",
                    reminder_text="Take your tablets", at="09:00", every_days="1")
    assert reminder.status_code == 200
    with rt.transaction() as s:
        [sc] = s.scalars(select(Schedule).where(Schedule.patient_id == pid)).all()
    post(client, f"/dashboard/schedules/{sc.id}/remove")
    text = post(client, f"/dashboard/schedules/{sc.id}/remove").get_data(as_text=True)
    assert f"Schedule {sc.id} was already removed by Alice Nurse at" in text
    text = post(client, f"/dashboard/patients/{pid}/discharge",
                reason="Moved to hospice care").get_data(as_text=True)
    banner = text[text.index('id="discharged"'):]
    banner = banner[:banner.index("</p>")]
    assert " by Alice Nurse:" in banner and "user:" not in banner


def test_a_disabled_accounts_open_session_is_refused_on_its_next_request(app, client, rt):
    add_account(rt)
    add_account(rt, "bob", "Bob", "bobs password 1")
    staff_sign_in(client)
    bob = app.test_client()
    staff_sign_in(bob, "bob", "bobs password 1")
    assert "Signed in as Alice Nurse" in page(client)
    with rt.transaction() as s:  # the flag alone, as if its sessions had not been ended
        s.scalars(select(Staff).where(Staff.username == "alice")).one().active = False
    res = client.get("/dashboard/")
    assert res.status_code == 303 and "/dashboard/login" in res.headers["Location"]
    ref = red_flag(rt, None, "emergency", phone="+447700900103")
    client.post(f"/dashboard/escalations/{ref}/ack", data={"csrf": csrf_of(client)})
    assert escalation(rt, ref).status == "open"
    assert "Signed in as Bob" in page(bob)  # the other account is not affected


def test_disabling_or_resetting_an_account_ends_its_sessions(app, client, rt):
    add_account(rt)
    add_account(rt, "bob", "Bob", "bobs password 1")
    staff_sign_in(client)
    with rt.transaction() as s:
        staff_service.set_active(s, "alice", False, rt.clock.now(), "test")
        staff_service.set_active(s, "alice", True, rt.clock.now(), "test")
    assert client.get("/dashboard/").status_code == 303  # enabling again revives nothing
    assert audits(rt, "staff.disable")[0].details["sessions_ended"] == 1
    staff_sign_in(client)
    with rt.transaction() as s:
        staff_service.set_password(s, "alice", "a brand new one", rt.clock.now(), "test")
    assert client.get("/dashboard/").status_code == 303
    assert staff_sign_in(client, password=PASSWORD).status_code == 403
    assert staff_sign_in(client, password="a brand new one").status_code == 303


class TestWithATokenAndAccounts:
    @pytest.fixture
    def settings_overrides(self):
        return {"admin_token": TOKEN}

    def test_the_token_alone_opens_nothing_once_accounts_exist(self, app, client, rt):
        token_user = app.test_client()
        assert sign_in(token_user, name="Jo").status_code == 303  # before any account
        assert page(token_user)
        add_account(rt)
        assert token_user.get("/dashboard/").status_code == 303  # that session ends
        text = page(client, "/dashboard/login")
        assert 'name="username"' in text and 'name="token"' not in text
        assert sign_in(client, name="Jo").status_code == 400
        assert staff_sign_in(client).status_code == 303
        assert "Signed in as Alice Nurse" in page(client)

    def test_with_every_account_disabled_the_token_signs_in_again(self, client, rt):
        add_account(rt)
        with rt.transaction() as s:
            staff_service.set_active(s, "alice", False, rt.clock.now(), "test")
        assert 'name="token"' in page(client, "/dashboard/login")
        assert sign_in(client, name="Jo").status_code == 303
        assert audits(rt, "dashboard.login")[0].actor == "dashboard:Jo"


# -- the session's signing key ---------------------------------------------------------------


class TestASecretKey:
    @pytest.fixture
    def settings_overrides(self):
        return {"admin_token": TOKEN, "secret_key": SECRET_KEY}

    def test_it_signs_the_cookie_instead_of_the_token(self, client, rt):
        add_account(rt)
        staff_sign_in(client)
        assert client.get("/dashboard/").status_code == 200
        object.__setattr__(rt.settings, "admin_token", "a-new-token")
        assert client.get("/dashboard/").status_code == 200  # the token is not the key
        object.__setattr__(rt.settings, "secret_key", "another key, 16+ chars")
        assert client.get("/dashboard/").status_code == 303

    def test_a_session_opened_with_the_admin_token_ends_when_the_token_is_changed(
            self, app, client, rt):
        """Without staff accounts the token is what opens the dashboard: changing it (say it
        leaked) must end the sessions it opened, as it does when it signs the cookie, even
        though the secret key, not the token, signs it here."""
        sign_in(client)
        assert client.get("/dashboard/").status_code == 200
        object.__setattr__(rt.settings, "admin_token", "a-new-token-16-chars")
        assert client.get("/dashboard/").status_code == 303
        other = app.test_client()
        assert sign_in(other, token="a-new-token-16-chars").status_code == 303
        assert other.get("/dashboard/").status_code == 200  # the new token opens it


def test_the_secret_key_is_read_from_the_environment_only(tmp_path):
    settings = load_settings(env={"CHECKIN_SECRET_KEY": SECRET_KEY})
    assert settings.secret_key == SECRET_KEY
    f = tmp_path / "site.yaml"
    f.write_text(f"secret_key: {SECRET_KEY}\n")
    with pytest.raises(ConfigError, match="only from the environment"):
        load_settings(env={"CHECKIN_CONFIG": str(f)})
    with pytest.raises(ConfigError) as err:
        load_settings(env={"CHECKIN_SECRET_KEY": "short"})
    assert str(err.value) == ("config: secret_key: CHECKIN_SECRET_KEY is too short: use at "
                              "least 16 random characters")


def twilio_messenger(fake_http):
    from bot.messaging.twilio_messenger import TwilioMessenger
    from tests.twilio_support import ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER

    return TwilioMessenger.from_credentials(ACCOUNT_SID, AUTH_TOKEN, http_client=fake_http,
                                            from_number=FROM_NUMBER)


class TestTwilioWithoutAToken:
    @pytest.fixture
    def settings_overrides(self):
        return TWILIO_SETTINGS

    @pytest.fixture
    def messenger(self, fake_http):
        return twilio_messenger(fake_http)

    def test_the_web_app_will_not_start_with_accounts_and_no_key(self, rt):
        from bot.web.app import create_app

        create_app(rt)  # no accounts: starts (the dashboard is off, as before)
        add_account(rt)
        with pytest.raises(ConfigError) as err:
            create_app(rt)
        assert str(err.value).startswith("config: secret_key: staff accounts exist and the "
                                         "messenger is twilio: set CHECKIN_SECRET_KEY")

    def test_health_says_the_web_app_will_not_start(self, rt):
        """`checkin-bot health` in cron must not say ok while the next web start fails."""
        from bot.services import health

        def problems():
            with rt.transaction() as s:
                return health.report(s, rt.settings, rt.clock.now())["problems"]

        assert not any("CHECKIN_SECRET_KEY" in p for p in problems())
        add_account(rt)
        assert ("config: staff accounts exist and CHECKIN_SECRET_KEY is not set: the web app "
                "will not start") in problems()

    def test_an_account_added_after_start_leaves_the_dashboard_off(self, client, rt):
        add_account(rt)
        res = client.get("/dashboard/login")
        assert res.status_code == 403 and "CHECKIN_SECRET_KEY" in res.get_data(as_text=True)
        res = client.post("/dashboard/login", data={"username": "alice", "password": PASSWORD})
        assert res.status_code == 403
        assert audits(rt, "dashboard.login") == []


class TestTwilioWithASecretKey:
    @pytest.fixture
    def settings_overrides(self):
        return {**TWILIO_SETTINGS, "secret_key": SECRET_KEY}

    @pytest.fixture
    def messenger(self, fake_http):
        return twilio_messenger(fake_http)

    def test_without_accounts_the_dashboard_stays_off(self, client):
        res = client.get("/dashboard/login")
        assert res.status_code == 403 and "staff add" in res.get_data(as_text=True)

    def test_with_an_account_coordinators_sign_in_with_it(self, client, rt):
        add_account(rt)
        assert 'name="username"' in page(client, "/dashboard/login")
        assert staff_sign_in(client).status_code == 303
        assert "Signed in as Alice Nurse" in page(client)


def test_with_the_database_failing_the_error_page_is_still_the_dashboards(app, client, rt,
                                                                          monkeypatch):
    from sqlalchemy.exc import OperationalError

    def down(session):
        raise OperationalError("SELECT", {}, Exception("database is down"))

    add_account(rt)
    staff_sign_in(client)
    app.config["PROPAGATE_EXCEPTIONS"] = False  # as in production: a 500 page, not a raise
    monkeypatch.setattr(staff_service, "any_active", down)
    res = client.get("/dashboard/")
    text = res.get_data(as_text=True)
    assert res.status_code == 500 and "Something went wrong on the server" in text
    assert "Signed in as" not in text
