"""The link to the red flag's dashboard page at the end of a care-team alert: only when the
dashboard can be opened there. On the Twilio messenger with no admin token and no staff
accounts (or staff accounts but no key to sign their sessions) the dashboard is off (403), so
a link would lead nowhere: the alert goes without it, its words get the room."""

from __future__ import annotations

import pytest

from bot.services import staff as staff_service
from tests.test_red_flags_e2e import RED_FLAG, chain_phones, enrol, texted
from tests.twilio_support import (  # noqa: F401 - fixtures
    PUBLIC_URL,
    TWILIO_SETTINGS,
    fake_http,
    messenger,
    sent_to,
)


@pytest.fixture
def settings_overrides():
    return TWILIO_SETTINGS


def _first_alert(client, rt, fake_http) -> tuple[str, str]:
    enrol(rt)
    texted(client, RED_FLAG)
    oncall = chain_phones(rt)[0]
    [alert] = [d["Body"] for d in sent_to(fake_http, oncall)]
    ref = alert.split("ref ", 1)[1].split(":", 1)[0]
    return alert, ref


def _add_staff(rt) -> None:
    with rt.transaction() as s:
        staff_service.add_staff(s, "alice", "Alice Nurse", "correct horse battery",
                                rt.clock.now(), "test")


def test_no_link_when_the_dashboard_is_off(client, rt, fake_http):
    """No admin token, no staff accounts, real phones: the dashboard answers 403."""
    alert, ref = _first_alert(client, rt, fake_http)
    assert "/dashboard/" not in alert and "http" not in alert
    assert alert.endswith(f"Reply ACK {ref} when you take it.")
    assert client.get(f"/dashboard/escalations/{ref}").status_code == 403


class TestStaffAccountsWithoutAKey:
    """Accounts but nothing to sign their sessions with: the dashboard stays off."""

    def test_no_link(self, client, rt, fake_http):
        _add_staff(rt)
        alert, ref = _first_alert(client, rt, fake_http)
        assert alert.endswith(f"Reply ACK {ref} when you take it.")
        assert client.get(f"/dashboard/escalations/{ref}").status_code == 403


class TestAdminToken:
    @pytest.fixture
    def settings_overrides(self):
        return {**TWILIO_SETTINGS, "admin_token": "s3cret-admin-token"}

    def test_the_alert_links_to_the_red_flag(self, client, rt, fake_http):
        alert, ref = _first_alert(client, rt, fake_http)
        link = f"{PUBLIC_URL}/dashboard/escalations/{ref}"
        assert alert.endswith(f"Reply ACK {ref} when you take it. {link}")
        res = client.get(link.removeprefix(PUBLIC_URL))
        assert res.status_code == 303 and "/dashboard/login" in res.headers["Location"]


class TestStaffAccountsWithASecretKey:
    @pytest.fixture
    def settings_overrides(self):
        return {**TWILIO_SETTINGS, "secret_key": "a-secret-key-of-some-length"}

    def test_the_alert_links_to_the_red_flag(self, client, rt, fake_http):
        _add_staff(rt)
        alert, ref = _first_alert(client, rt, fake_http)
        link = f"{PUBLIC_URL}/dashboard/escalations/{ref}"
        assert alert.endswith(f"Reply ACK {ref} when you take it. {link}")
        assert client.get(link.removeprefix(PUBLIC_URL)).status_code == 303

    def test_no_link_without_an_active_account(self, client, rt, fake_http):
        _add_staff(rt)
        with rt.transaction() as s:
            staff_service.set_active(s, "alice", False, rt.clock.now(), "test")
        alert, ref = _first_alert(client, rt, fake_http)
        assert alert.endswith(f"Reply ACK {ref} when you take it.")
        assert client.get(f"/dashboard/escalations/{ref}").status_code == 403
