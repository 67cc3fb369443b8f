"""Conversations stored in the database: revisions survive deploys and restarts."""

from __future__ import annotations

import shutil

import pytest
import yaml
from sqlalchemy import select

from bot.config import REPO_ROOT, ConfigError, load_settings
from bot.runtime import build_runtime
from bot.services.inbound import InboundMessage, handle_inbound_message
from bot.services.patients import Enrolment, enrol_patient
from bot.store.models import Answer, Conversation

PHONE = "+447700900123"
# The shipped check-in's revision: the tests below deploy "the next one" on top of it.
SHIPPED = yaml.safe_load((REPO_ROOT / "flows" / "checkin.yaml").read_text())["revision"]


def _flows_copy(tmp_path, name, revision=None, new_text=None):
    target = tmp_path / name
    shutil.copytree(REPO_ROOT / "flows", target, ignore=shutil.ignore_patterns("tests"))
    if revision is not None:
        path = target / "checkin.yaml"
        flow = yaml.safe_load(path.read_text())
        flow["revision"] = revision
        pain = next(n for n in flow["nodes"] if n["id"] == "pain")
        pain["text"]["en"] = new_text
        path.write_text(yaml.safe_dump(flow, sort_keys=False, allow_unicode=True))
    return target


def _runtime(db_url, flows_dir, clock, messenger):
    settings = load_settings(env={}, overrides={"database_url": db_url,
                                                "flows_dir": str(flows_dir)})
    return build_runtime(settings, clock=clock, messenger=messenger, dispatch_mode="inline")


def _consented_patient(rt):
    with rt.transaction() as s:
        p = enrol_patient(s, Enrolment(PHONE, "Ada", "Europe/London"), languages=["en"],
                          now=rt.clock.now(), actor="test")
        p.consent_at = rt.clock.now()


def _say(rt, text):
    with rt.transaction() as s:
        out = handle_inbound_message(s, rt.ctx, InboundMessage("sms", PHONE, text),
                                     rt.clock.now())
    rt.dispatch_soon(out.outbox_ids)


def test_a_conversation_finishes_on_the_revision_it_started_on_across_a_restart(
        db_url, tmp_path, clock, messenger):
    rt1 = _runtime(db_url, _flows_copy(tmp_path, "r1"), clock, messenger)
    _consented_patient(rt1)
    _say(rt1, "CHECKIN")
    assert "what was your worst pain" in messenger.sent[-1].body
    rt1.close()  # deploy: the next revision rewords the pain question

    new_text = "Revision 2: pain score 0-10 please?"
    rt2 = _runtime(db_url, _flows_copy(tmp_path, "r2", SHIPPED + 1, new_text), clock,
                   messenger)
    _say(rt2, "4")  # the revision-1 conversation carries on
    assert "Is this pain new" in messenger.sent[-1].body
    with rt2.transaction() as s:
        conv = s.scalars(select(Conversation)).one()
        assert conv.flow_revision == SHIPPED
        assert s.scalars(select(Answer.value).where(
            Answer.question_key == "worst_pain")).one() == 4
        conv.status = "completed"
    _say(rt2, "CHECKIN")  # a new conversation starts on the next revision
    assert messenger.sent[-1].body == new_text
    rt2.close()


def test_a_flow_edited_without_a_new_revision_number_stops_startup(
        db_url, tmp_path, clock, messenger):
    rt1 = _runtime(db_url, _flows_copy(tmp_path, "r1"), clock, messenger)
    _consented_patient(rt1)
    _say(rt1, "CHECKIN")
    rt1.close()
    edited = _flows_copy(tmp_path, "edited", SHIPPED, "Sneaky edit: pain 0-10?")
    with pytest.raises(ConfigError, match="new revision number"):
        _runtime(db_url, edited, clock, messenger)


def test_an_unmigrated_database_stops_startup(tmp_path, clock, messenger):
    with pytest.raises(ConfigError, match="db upgrade"):
        _runtime(f"sqlite:///{tmp_path / 'empty.db'}", REPO_ROOT / "flows", clock, messenger)


@pytest.mark.usefixtures("pg_engine")
def test_a_reply_being_handled_holds_off_the_wait_timeout_on_postgresql(settings):
    """The web path locks the conversation it moves; the scheduler's timeout sweep skips it
    (SKIP LOCKED) instead of moving it too, and fires only once the reply is in."""
    import threading
    from datetime import UTC, datetime

    from bot.clock import FakeClock
    from bot.messaging.dev import DevMessenger
    from bot.services.conversations import (
        active_conversation,
        process_due_timeouts,
        start_flow,
    )

    if not settings.database_url.startswith("postgres"):
        pytest.skip("row locks are what is tested: PostgreSQL only")
    start = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    clock = FakeClock(start)
    rt = build_runtime(settings, clock=clock, messenger=DevMessenger(echo=False),
                       dispatch_mode="none")
    with rt.transaction() as s:
        p = enrol_patient(s, Enrolment("+447700900123", "Ada", "Europe/London"),
                          languages=["en"], now=start, actor="test")
        p.consent_at = start
        start_flow(s, rt.ctx, p, "checkin", start)
        pid = p.id
    clock.advance(hours=25)  # the first question's wait has run out
    swept: list[list[int]] = []

    def sweep():
        with rt.transaction() as other:
            swept.append(process_due_timeouts(other, rt.ctx, clock.now()))

    with rt.transaction() as web:
        assert active_conversation(web, pid) is not None  # the reply is being handled
        t = threading.Thread(target=sweep)
        t.start()
        t.join(timeout=20)
    assert swept == [[]]
    sweep()
    assert swept[1] != []
    rt.close()
