"""The check-in's texts are true whatever rhythm the coordinator sets (daily, weekly, 14 days):
no "weekly", no "the last 7 days" for a daily one (flows/checkin.yaml, flows/welcome.yaml)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from bot.config import REPO_ROOT
from bot.domain.flows import load_flows
from bot.services.patients import Enrolment, enrol_patient
from bot.services.schedules import add_schedule, run_due_schedules
from bot.store.models import Message, Patient

# Words that name a rhythm. "the last 7 days" stays only for a first check-in, in brackets.
RHYTHM = re.compile(r"week|seman|(?<!\()\bthe last 7 days|(?<!\()\blos ultimos 7 dias"
                    r"|in the last 7 days|en los ultimos 7 dias|fortnight|daily|diari",
                    re.IGNORECASE)


def _texts(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _texts(v)
    elif isinstance(value, list):
        for v in value:
            yield from _texts(v)
    elif isinstance(value, str):
        yield value


@pytest.mark.parametrize("flow_id", ["welcome", "checkin"])
def test_no_patient_text_names_a_rhythm(flow_id):
    flow = load_flows(REPO_ROOT / "flows").get(flow_id)
    data = flow.model_dump(by_alias=True, exclude_none=True)
    texts = [t for node in data["nodes"] for key in ("text", "retry") if key in node
             for t in _texts(node[key])]
    assert texts
    assert [t for t in texts if RHYTHM.search(t)] == []


@pytest.mark.parametrize(("every_days", "language"), [(1, "en"), (14, "en"), (1, "es")])
def test_a_scheduled_check_in_asks_about_the_time_since_the_last_one(rt, clock, every_days,
                                                                      language):
    clock.set(datetime(2026, 3, 2, 8, 0, tzinfo=UTC))
    with rt.transaction() as s:
        p = enrol_patient(s, Enrolment("+447700900500", "Ana", "Europe/London", "sms", language),
                          languages=["en", "es"], now=clock.now(), actor="t")
        p.consent_at = clock.now()
        add_schedule(s, rt.ctx, p, "checkin", "09:00", every_days, clock.now(), "t")
        pid = p.id
    clock.set(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
    with rt.transaction() as s:
        run_due_schedules(s, rt.ctx, clock.now())
    with rt.transaction() as s:
        intro, question = s.scalars(select(Message.body).where(
            Message.direction == "out", Message.patient_id == pid).order_by(Message.id)).all()
        assert s.get(Patient, pid).language == language
    since = {"en": "since your last check-in", "es": "desde su ultima consulta"}[language]
    assert since in intro and since in question.lower()
    assert not RHYTHM.search(intro) and not RHYTHM.search(question)
