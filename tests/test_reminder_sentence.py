"""A coordinator's reminder text is a sentence of its own in the reminder: "Take your
dexamethasone" goes as "... Take your dexamethasone. Reply 1 if done", not "... dexamethasone
Reply 1 if done"."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from bot.domain.engine import end_sentence
from bot.domain.flow_lint import lint_paths
from bot.services.conversations import active_conversation, start_flow
from bot.services.patients import Enrolment, enrol_patient
from bot.services.schedules import run_due_schedules, save_schedule
from bot.store.models import Message, Schedule


def _enrol(s, rt, language="en"):
    p = enrol_patient(s, Enrolment("+447700900123", "Ada Lovelace", "Europe/London",
                                   language=language),
                      languages=["en", "es"], now=rt.clock.now(), actor="test")
    p.consent_at = rt.clock.now()
    return p


def _sent(s) -> list[str]:
    return list(s.scalars(select(Message.body).where(Message.kind == "reminder")
                          .order_by(Message.id)))


@pytest.mark.parametrize(("text", "shown"), [
    ("Take your dexamethasone", "Take your dexamethasone. Reply 1 if done"),
    ("Your scan is at 10", "Your scan is at 10. Reply 1 if done"),
    ("Take your tablets.", "Take your tablets. Reply 1 if done"),
    ("Did you take them?", "Did you take them? Reply 1 if done"),
    ("Take them now!", "Take them now! Reply 1 if done"),
    ("Take your tablets (2)", "Take your tablets (2) Reply 1 if done"),
    ("Take your tablets:", "Take your tablets: Reply 1 if done"),
])
def test_a_reminder_text_ends_with_a_full_stop_after_a_letter_or_digit(rt, text, shown):
    with rt.transaction() as s:
        patient = _enrol(s, rt)
        start_flow(s, rt.ctx, patient, "reminder", rt.clock.now(), routine=True,
                   params={"reminder_text": text})
        [body] = _sent(s)
        assert body == f"Reminder from Spine Oncology Clinic: {shown}, or 2 if you can't make it."
        # The conversation keeps the coordinator's text as it was (a schedule is matched on it)
        assert active_conversation(s, patient.id).state["params"] == {"reminder_text": text}


def test_a_scheduled_reminder_in_spanish_gets_its_full_stop_too(rt):
    with rt.transaction() as s:
        patient = _enrol(s, rt, language="es")
        sched = save_schedule(s, rt.ctx, patient, "reminder", "09:00", 1, rt.clock.now(),
                              actor="test", params={"reminder_text": "Tome la pastilla"}).schedule
        due = sched.next_due_at
    with rt.transaction() as s:
        run_due_schedules(s, rt.ctx, due)
        assert s.scalars(select(Schedule.params)).one() == {"reminder_text": "Tome la pastilla"}
        [body] = _sent(s)
        assert "Tome la pastilla. Responda 1 si ya esta hecho" in body


@pytest.mark.parametrize(("text", "ended"), [
    ("Take it", "Take it."), ("at 9", "at 9."), ("Tome la medicacion", "Tome la medicacion."),
    ("Ok.", "Ok."), ("Why?", "Why?"), ("Now!", "Now!"), ("(at 9)", "(at 9)"),
    ('"Take it"', '"Take it"'), ("", ""),
])
def test_end_sentence(text, ended):
    assert end_sentence(text) == ended


def test_the_linter_counts_the_full_stop_of_a_sentence(tmp_path):
    (tmp_path / "one.yaml").write_text(
        "id: one\nrevision: 1\ntitle: One\nlanguage: en\nlanguages: [en]\nstart: hello\n"
        "nodes:\n  - id: hello\n    kind: end\n    text: \"{note}\"\n")
    for sentence, errors in (("false", 0), ("true", 1)):
        # 306 characters fill 2 segments; the full stop makes 307.
        (tmp_path / "variables.yaml").write_text(
            f"variables:\n  note: {{max_length: 306, sentence: {sentence}}}\n")
        report = lint_paths([Path(tmp_path) / "one.yaml"],
                            variables_file=tmp_path / "variables.yaml")
        assert len(report.errors) == errors, report.errors
        assert all("takes 3 SMS segments" in line for line in report.errors)
