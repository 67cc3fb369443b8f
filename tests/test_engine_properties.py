"""Property tests: any replies and any passing of time, on every shipped flow and language.

The engine must never raise, never hit its step bound, and always leave the conversation
either waiting at a question (with a deadline) or completed.
"""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.domain.engine import (
    COMPLETED,
    MAX_STEPS,
    WAITING,
    EngineError,
    Inbound,
    Start,
    Timeout,
    step,
)
from bot.domain.flows import AskNode, WaitNode, load_flows

REPO = Path(__file__).resolve().parents[1]
LIBRARY = load_flows(REPO / "flows")
FLOW_IDS = [flow.id for flow in LIBRARY.current()]
NOW = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)
CONTEXT = {name: var.example for name, var in LIBRARY.variables.items()}

LIKELY_REPLIES = ["yes", "no", "YES!!", "nope", "si", "0", "3", "7/10", "11", "7-8", "1", "2",
                  "5", "done", "can't make it", "quite a bit", "yes and no", "1 or 2", "", "?"]
replies = st.one_of(st.sampled_from(LIKELY_REPLIES), st.text(max_size=200))
events = st.one_of(
    replies.map(lambda text: ("reply", text)),
    st.integers(min_value=0, max_value=96 * 60).map(lambda minutes: ("wait", minutes)),
)


def check_result(flow, result):
    assert not any(isinstance(record, EngineError) for record in result.recorded)
    assert len(result.outbound) <= MAX_STEPS
    state = result.new_state
    assert state["status"] in (WAITING, COMPLETED)
    if state["status"] == WAITING:
        assert isinstance(flow.node(state["node"]), AskNode | WaitNode)
        assert state["wait_deadline"] is not None
    json.loads(json.dumps(state))


@pytest.mark.parametrize("flow_id", FLOW_IDS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(language=st.sampled_from(["en", "es", "fr"]), script=st.lists(events, max_size=40))
def test_any_events_never_raise_or_loop(flow_id, language, script):
    flow = LIBRARY.get(flow_id)
    context = {**CONTEXT, "language": language}
    now = NOW
    result = step(flow, None, Start(), now, context)
    check_result(flow, result)
    for kind, value in script:
        before = result.new_state
        if kind == "reply":
            result = step(flow, before, Inbound(value), now, context)
        else:
            now += timedelta(minutes=value)
            result = step(flow, before, Timeout(), now, context)
        check_result(flow, result)
        if before["status"] == COMPLETED:
            assert result.outbound == [] and result.recorded == []


@pytest.mark.parametrize("flow_id", FLOW_IDS)
@settings(max_examples=100, deadline=None)
@given(script=st.lists(replies, max_size=30))
def test_silence_always_ends_the_conversation(flow_id, script):
    """Whatever was said before, a patient who stops replying is not left waiting forever."""
    flow = LIBRARY.get(flow_id)
    result = step(flow, None, Start(), NOW, CONTEXT)
    for text in script:
        result = step(flow, result.new_state, Inbound(text), NOW, CONTEXT)
    now = NOW
    for _ in range(10):
        if result.new_state["status"] == COMPLETED:
            break
        now += timedelta(days=3)
        result = step(flow, result.new_state, Timeout(), now, CONTEXT)
        check_result(flow, result)
    assert result.new_state["status"] == COMPLETED
