"""A database that does not answer must not hold a webhook past Twilio's 15 s.

PostgreSQL connections of a serving process carry a connect timeout, TCP keepalives and the
server's own lock and statement timeouts (bot.store.db.DatabaseLimits), so that a message still
reaches the spool, or is stored unprocessed, and an emergency is still answered.
"""

from __future__ import annotations

import socket
import threading

import pytest
from sqlalchemy import select, text

from bot.store.db import DatabaseLimits, make_engine, make_session_factory, postgres_limits
from bot.store.models import Conversation, Escalation, Message
from tests.test_webhooks import PHONE, count, enrol, texted
from tests.twilio_support import (  # noqa: F401 - fixtures
    TWILIO_SETTINGS,
    fake_http,
    messenger,
    sent_to,
    settings_overrides,
)

TWILIO_LIMIT = 15.0  # seconds Twilio waits for a webhook's answer


def finishes_within(seconds: float, call):
    """Run `call` on a thread; (finished in time, its result)."""
    result = {}
    worker = threading.Thread(target=lambda: result.setdefault("value", call()), daemon=True)
    worker.start()
    worker.join(seconds)
    return not worker.is_alive(), result.get("value")


def test_the_limits_become_libpq_parameters():
    params = postgres_limits(DatabaseLimits(connect_timeout=3, lock_timeout=1.5,
                                            statement_timeout=4))
    assert params["connect_timeout"] == 3
    assert params["options"] == "-c lock_timeout=1500 -c statement_timeout=4000"
    assert params["keepalives"] == 1 and params["tcp_user_timeout"] == 4000
    # libpq treats a connect timeout under 2 s as 2 s; say so rather than pretend.
    assert postgres_limits(DatabaseLimits(connect_timeout=1))["connect_timeout"] == 2


def test_the_serving_engine_carries_the_configured_limits(rt):
    if rt.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL only")
    with rt.engine.connect() as conn:
        # This module's settings: the lock timeout set to 0.5 s, the statement timeout left
        # at its default of 5 s.
        assert conn.scalar(text("SHOW lock_timeout")) == "500ms"
        assert conn.scalar(text("SHOW statement_timeout")) == "5s"


@pytest.fixture
def silent_server():
    """A TCP port that accepts connections and never says a word, as a database host that has
    hung or a network path that swallows packets looks to a client."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted = []
    stop = threading.Event()

    def accept():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    listener.close()


def test_a_database_that_never_answers_sends_the_message_to_the_spool_in_time(
        client, rt, fake_http, silent_server):
    enrol(rt)
    working = rt.sessions
    hung = make_engine(f"postgresql://nobody@127.0.0.1:{silent_server}/none",
                       limits=rt.settings.database_limits.as_limits())
    rt.sessions = make_session_factory(hung)
    try:
        done, res = finishes_within(TWILIO_LIMIT - 1, lambda: texted(
            client, "my legs gave way and I wet myself"))
    finally:
        rt.sessions = working
        hung.dispose()
    assert done, "the webhook was still waiting on the database when Twilio gave up"
    assert res.status_code == 200
    assert "this could be serious" in res.get_data(as_text=True)  # told at once, in TwiML
    assert len(rt.spool.pending()) == 1  # and kept until the database is back
    rt.replay_spool()
    assert count(rt, Message, Message.direction == "in") == 1
    assert count(rt, Escalation) == 1


@pytest.fixture
def settings_overrides():  # noqa: F811 - this module's own
    return {**TWILIO_SETTINGS, "database_limits": {"lock_timeout_seconds": 0.5}}


def test_a_conversation_locked_by_a_stuck_transaction_does_not_hold_up_a_red_flag(
        client, rt, fake_http, clock):
    if rt.engine.dialect.name != "postgresql":
        pytest.skip("row locks: PostgreSQL only (SQLite takes one writer at a time)")
    from bot.services.conversations import start_flow
    from bot.store.models import Patient

    patient_id = enrol(rt)
    with rt.transaction() as s:
        start_flow(s, rt.ctx, s.get(Patient, patient_id), "checkin", clock.now())
    other = make_engine(rt.settings.database_url)
    with other.connect() as stuck:
        stuck.begin()
        # Another process holds the patient's conversation and does not let go.
        stuck.execute(select(Conversation.id).where(Conversation.patient_id == patient_id)
                      .with_for_update())
        done, res = finishes_within(TWILIO_LIMIT - 1, lambda: texted(
            client, "I can't feel my legs and I wet myself"))
        assert done, "the webhook waited on the locked row until Twilio gave up"
        stuck.rollback()
    other.dispose()
    assert res.status_code == 200
    # The message is kept, for the care team to read, and its red flag acted on at once: the
    # patient told what to do, the care team alerted.
    assert rt.spool.pending() == []
    assert count(rt, Message, Message.direction == "in", Message.status == "unprocessed") == 1
    assert any("this could be serious" in d.get("Body", "") for d in sent_to(fake_http, PHONE))
    assert count(rt, Escalation) == 1
