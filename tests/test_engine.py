"""The pure flow engine: one event in, new state + texts + records out."""

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from bot.domain.engine import (
    COMPLETED,
    MAX_STEPS,
    WAITING,
    AnswerRecorded,
    Ended,
    EngineError,
    FlagRaised,
    FlowStarted,
    Inbound,
    NotUnderstood,
    Start,
    TimedOut,
    Timeout,
    step,
)
from bot.domain.flows import Flow, load_flows

REPO = Path(__file__).resolve().parents[1]
NOW = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)
CONTEXT = {
    "name": "Maria", "clinic_name": "Spine Clinic", "clinic_phone": "020 7946 0000",
    "hotline": "0808 157 0192", "emergency_number": "999", "language": "en",
}


@pytest.fixture(scope="module")
def library():
    return load_flows(REPO / "flows")


def tiny_flow(nodes, **extra):
    """A flow built in code (no linting), for engine behaviour the shipped flows don't show."""
    data = {"id": "tiny", "revision": 1, "title": "Tiny", "language": "en",
            "languages": ["en"], "start": nodes[0]["id"], "nodes": nodes, **extra}
    return Flow.model_validate(data)


def run(flow, replies, context=CONTEXT, now=NOW):
    """Start a flow and send replies; returns the last result and everything sent/recorded."""
    result = step(flow, None, Start(), now, context)
    sent, recorded = list(result.outbound), list(result.recorded)
    for reply in replies:
        result = step(flow, result.new_state, Inbound(reply), now, context)
        sent += result.outbound
        recorded += result.recorded
    return result, sent, recorded


def test_start_sends_intro_and_first_question_then_waits(library):
    flow = library.get("checkin")
    result = step(flow, None, Start(), NOW, CONTEXT)
    assert result.outbound[0].startswith("Hi Maria, this is your check-in from Spine Clinic")
    assert result.outbound[1].startswith("Since your last check-in, what was your worst pain?")
    state = result.new_state
    assert state["status"] == WAITING
    assert state["node"] == "pain"
    assert state["flow"] == "checkin" and state["revision"] == flow.revision
    assert state["wait_deadline"] == (NOW + timedelta(hours=24)).isoformat()
    assert result.recorded == []
    json.dumps(state)  # JSON-serialisable


def test_answers_flags_and_records(library):
    flow = library.get("checkin")
    result, _, recorded = run(flow, ["8/10", "yes", "no", "no", "no", "no", "yes"])
    assert [r.as_tuple() for r in recorded] == [
        ("answer", "worst_pain", 8), ("flag", "severe_pain"),
        ("answer", "pain_new", "yes"), ("flag", "new_back_pain"),
        ("answer", "pain_night", "no"), ("answer", "pain_cough", "no"),
        ("answer", "pain_spread", "no"), ("answer", "pain_uncontrolled", "no"),
        ("answer", "numbness", "yes"), ("flag", "sensory_loss"), ("ended",),
    ]
    assert result.new_state["status"] == COMPLETED
    # The alerted end says nothing of its own: the bot's emergency instruction, sent for the
    # flag (bot/services/red_flags.py), is the patient's one text (see flows/checkin.yaml).
    assert result.outbound == []


def test_welcome_records_consent(library):
    result, _, recorded = run(library.get("welcome"), ["Yes please"])
    assert AnswerRecorded("consent", "yes") in recorded
    assert recorded[-1] == Ended()


def test_spanish_and_language_fallback(library):
    flow = library.get("welcome")
    spanish = step(flow, None, Start(), NOW, {**CONTEXT, "language": "es"})
    assert spanish.outbound[0].startswith("Hola Maria")
    assert spanish.new_state["language"] == "es"
    french = step(flow, None, Start(), NOW, {**CONTEXT, "language": "fr"})
    assert french.outbound[0].startswith("Hi Maria")
    assert french.new_state["language"] == "en"


def test_variables_are_made_gsm7_and_missing_ones_are_blank(library):
    result = step(library.get("welcome"), None, Start(), NOW, {"name": "Zoë ’Ann’ 😀"})
    assert result.outbound[0].startswith("Hi Zoe 'Ann' , this is . We will text you")


def test_not_understood_reprompts_then_takes_the_fallback(library):
    flow = library.get("checkin")
    first = step(flow, None, Start(), NOW, CONTEXT).new_state
    r1 = step(flow, first, Inbound("7-8"), NOW, CONTEXT)
    assert r1.recorded == [NotUnderstood("pain", "ambiguous")]
    assert r1.outbound == [
        "Sorry, we did not understand. Please reply with one number from 0 (no pain) to 10 "
        "(worst pain), for example 3."
    ]
    assert r1.new_state["tries"] == 1 and r1.new_state["status"] == WAITING
    r2 = step(flow, r1.new_state, Inbound("11"), NOW, CONTEXT)
    assert r2.recorded == [NotUnderstood("pain", "out_of_range")]
    r3 = step(flow, r2.new_state, Inbound("lots"), NOW, CONTEXT)
    assert r3.recorded == [NotUnderstood("pain", "not_a_number"), FlagRaised("severe_pain")]
    assert r3.new_state["node"] == "pain_new"
    assert r3.new_state["tries"] == 0


def test_timeout_before_deadline_is_ignored(library):
    flow = library.get("checkin")
    state = step(flow, None, Start(), NOW, CONTEXT).new_state
    early = step(flow, state, Timeout(), NOW + timedelta(hours=23, minutes=59), CONTEXT)
    assert (early.new_state, early.outbound, early.recorded) == (state, [], [])
    due = step(flow, state, Timeout(), NOW + timedelta(hours=24), CONTEXT)
    assert due.recorded == [TimedOut("pain")]
    assert due.outbound[0].startswith("Reminder: your check-in is waiting.")
    assert due.new_state["node"] == "pain_reminder"
    assert due.new_state["wait_deadline"] == (NOW + timedelta(hours=48)).isoformat()


def test_a_late_reply_is_still_taken_before_the_timeout_fires(library):
    flow = library.get("checkin")
    state = step(flow, None, Start(), NOW, CONTEXT).new_state
    late = step(flow, state, Inbound("2"), NOW + timedelta(hours=30), CONTEXT)
    assert late.recorded == [AnswerRecorded("worst_pain", 2)]


def test_completed_conversation_ignores_everything(library):
    flow = library.get("welcome")
    done, _, _ = run(flow, ["no"])
    assert done.new_state["status"] == COMPLETED
    for event in (Inbound("YES"), Timeout()):
        later = step(flow, done.new_state, event, NOW + timedelta(days=9), CONTEXT)
        assert (later.outbound, later.recorded) == ([], [])
        assert later.new_state == done.new_state


def test_no_conversation_yet(library):
    result = step(library.get("welcome"), None, Inbound("hello"), NOW, CONTEXT)
    assert (result.new_state, result.outbound, result.recorded) == (None, [], [])


def test_input_state_is_not_mutated(library):
    flow = library.get("checkin")
    state = step(flow, None, Start(), NOW, CONTEXT).new_state
    before = json.dumps(state, sort_keys=True)
    step(flow, state, Inbound("9"), NOW, CONTEXT)
    assert json.dumps(state, sort_keys=True) == before


def test_clock_must_be_aware_and_is_stored_as_utc(library):
    flow = library.get("welcome")
    with pytest.raises(ValueError):
        step(flow, None, Start(), datetime(2025, 1, 6, 9, 0), CONTEXT)
    plus_two = datetime(2025, 1, 6, 11, 0, tzinfo=timezone(timedelta(hours=2)))
    state = step(flow, None, Start(), plus_two, CONTEXT).new_state
    assert state["wait_deadline"] == "2025-01-08T09:00:00+00:00"


def test_state_of_another_revision_is_refused(library):
    flow = library.get("welcome")
    state = step(flow, None, Start(), NOW, CONTEXT).new_state
    with pytest.raises(ValueError, match="library.get"):
        step(flow, {**state, "revision": 99}, Inbound("yes"), NOW, CONTEXT)


def test_step_bound_ends_a_loop_with_a_recorded_error():
    flow = tiny_flow([
        {"id": "a", "kind": "send", "text": "ping", "next": "b"},
        {"id": "b", "kind": "send", "text": "pong", "next": "a"},
    ])
    result = step(flow, None, Start(), NOW, CONTEXT)
    assert len(result.outbound) == MAX_STEPS
    assert result.recorded[-2:] == [EngineError("step_limit", "a"), Ended()]
    assert result.new_state["status"] == COMPLETED


def test_missing_node_ends_with_a_recorded_error():
    flow = tiny_flow([{"id": "a", "kind": "send", "text": "hi", "next": "nowhere"}])
    result = step(flow, None, Start(), NOW, CONTEXT)
    assert result.recorded == [EngineError("missing_node", "nowhere"), Ended()]


def test_start_flow_hands_over():
    flow = tiny_flow([
        {"id": "hi", "kind": "send", "text": "Let's do your check-in.", "next": "go"},
        {"id": "go", "kind": "start_flow", "flow": "checkin"},
    ])
    result = step(flow, None, Start(), NOW, CONTEXT)
    assert result.outbound == ["Let's do your check-in."]
    assert result.recorded == [FlowStarted("checkin"), Ended()]
    assert [r.as_tuple() for r in result.recorded] == [("start_flow", "checkin"), ("ended",)]


def test_wait_node_saves_any_reply_and_branch_uses_it():
    flow = tiny_flow([
        {"id": "pause", "kind": "wait", "save": "note", "timeout": {"after": "1h", "next": "bye"},
         "next": "check"},
        {"id": "check", "kind": "branch", "on": "note",
         "cases": [{"when": {"is": "help"}, "flags": ["fever"], "next": "bye"}], "next": "bye"},
        {"id": "bye", "kind": "end", "text": "Bye {name}."},
    ])
    result, sent, recorded = run(flow, ["help"])
    assert sent == ["Bye Maria."]
    assert [r.as_tuple() for r in recorded] == [
        ("answer", "note", "help"), ("flag", "fever"), ("ended",)
    ]


def test_a_flag_is_recorded_once_per_conversation():
    flow = tiny_flow([
        {"id": "q", "kind": "ask", "text": "Fever? YES or NO", "answer": {"type": "yesno"},
         "retry": {"text": "YES or NO", "fallback": "q"}, "timeout": {"after": "1h", "next": "q"},
         "cases": [{"when": {"is": "yes"}, "flags": ["fever"], "next": "q"}], "next": "end"},
        {"id": "end", "kind": "end"},
    ])
    _, _, recorded = run(flow, ["yes", "yes", "no"])
    assert recorded.count(FlagRaised("fever")) == 1
    assert recorded[-1] == Ended()


@pytest.mark.parametrize("text", ["", " ", "\x00", "🤷" * 500, "a" * 100_000, "\u202e\ud7ff"])
def test_engine_never_raises_on_any_text(library, text):
    for flow in library.current():
        state = step(flow, None, Start(), NOW, CONTEXT).new_state
        result = step(flow, state, Inbound(text), NOW, CONTEXT)
        assert result.new_state["status"] in (WAITING, COMPLETED)
