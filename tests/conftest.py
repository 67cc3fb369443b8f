"""Shared fixtures: a real database (SQLite always, PostgreSQL when TEST_DATABASE_URL is set),
a runtime with an injected clock and the dev messenger, and the Flask app around it."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import text

from bot.clock import FakeClock
from bot.config import load_settings
from bot.messaging.dev import DevMessenger
from bot.runtime import build_runtime
from bot.store.db import make_engine
from bot.store.migrate import upgrade
from bot.store.models import Base

PG_URL = os.environ.get("TEST_DATABASE_URL")
BACKENDS = ["sqlite", "postgresql"] if PG_URL else ["sqlite"]


@pytest.fixture(scope="session")
def pg_engine():
    """One PostgreSQL schema for the run, built by the real migrations."""
    if not PG_URL:
        pytest.skip("TEST_DATABASE_URL not set")
    engine = make_engine(PG_URL)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    upgrade(PG_URL)
    yield engine
    engine.dispose()


def _truncate(engine) -> None:
    names = ", ".join(t.name for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))


@pytest.fixture(params=BACKENDS)
def db_url(request, tmp_path):
    """A clean database URL: a fresh SQLite file, or the emptied PostgreSQL test schema."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'test.db'}"
        engine = make_engine(url)
        Base.metadata.create_all(engine)
        engine.dispose()
        return url
    engine = request.getfixturevalue("pg_engine")
    _truncate(engine)
    return PG_URL


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def messenger():
    return DevMessenger(echo=False)


@pytest.fixture
def settings_overrides():
    """Tests override settings by redefining this fixture."""
    return {}


@pytest.fixture
def settings(db_url, settings_overrides, tmp_path):
    return load_settings(env={}, overrides={
        "database_url": db_url, "spool_dir": str(tmp_path / "spool"), **settings_overrides})


@pytest.fixture
def rt(settings, clock, messenger):
    runtime = build_runtime(settings, clock=clock, messenger=messenger, dispatch_mode="inline")
    yield runtime
    runtime.close()


@pytest.fixture
def app(rt):
    from bot.web.app import create_app

    application = create_app(rt)
    application.testing = True
    return application


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def cli(db_url, monkeypatch):
    """`checkin-bot ARGS...` on the test database, as the operator "night-nurse" (the CLI's
    audit actor is cli:$USER), with no Twilio, config file or admin secrets from the
    environment. `input=` feeds stdin."""
    from click.testing import CliRunner

    from bot.cli import main

    monkeypatch.setenv("CHECKIN_DATABASE_URL", db_url)
    monkeypatch.setenv("USER", "night-nurse")
    for var in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "CHECKIN_CONFIG", "CHECKIN_MESSENGER",
                "CHECKIN_ADMIN_TOKEN", "CHECKIN_SECRET_KEY"):
        monkeypatch.delenv(var, raising=False)
    runner = CliRunner()
    return lambda *args, input=None: runner.invoke(main, list(args), input=input)
