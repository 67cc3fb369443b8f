"""A serving process readies itself before its first request, and sends nothing doing so."""

from __future__ import annotations

import gc

import pytest

from bot import wsgi
from bot.runtime import Runtime
from tests.twilio_support import (  # noqa: F401 - fixtures
    TWILIO_SETTINGS,
    fake_http,
    messenger,
    settings_overrides,
)


@pytest.fixture
def unfreeze():
    yield
    gc.unfreeze()  # frozen objects are never freed: give the test process its memory back


def test_warm_up_loads_the_sdk_connects_and_freezes_without_sending(rt, fake_http, unfreeze):
    client = rt.messenger._client
    assert client._api is None  # the SDK builds its API objects on first use
    checked_in = rt.engine.pool.checkedin()
    rt.warm_up()
    assert client._api is not None
    assert fake_http.requests == []  # warm, but nobody was texted
    assert rt.engine.pool.checkedin() >= max(checked_in, 1)
    assert gc.get_freeze_count() > 0


def test_gunicorn_workers_are_warmed_up(monkeypatch, db_url, tmp_path):
    warmed: list[Runtime] = []
    monkeypatch.setattr(Runtime, "warm_up", lambda self: warmed.append(self))
    monkeypatch.setenv("CHECKIN_DATABASE_URL", db_url)
    monkeypatch.setenv("CHECKIN_SPOOL_DIR", str(tmp_path / "spool"))
    app = wsgi.make_app()
    assert warmed == [app.extensions["checkin"]]
    warmed[0].close()
