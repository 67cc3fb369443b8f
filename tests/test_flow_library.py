"""Loading flows into a FlowLibrary, keyword lookup, snapshots and revisions."""

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from bot.domain.engine import COMPLETED, Inbound, Start, step
from bot.domain.flows import Flow, FlowError, FlowLibrary, load_flows, parse_duration

REPO = Path(__file__).resolve().parents[1]
NOW = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)
CONTEXT = {"name": "Maria", "language": "en"}
OLD_QUESTION = "Since your last check-in, what was your worst pain?"
NEW_QUESTION = "Since your last check-in, how bad was your pain at its worst?"


def copy_flows(target: Path) -> Path:
    target.mkdir()
    for path in (REPO / "flows").glob("*.yaml"):
        shutil.copy(path, target / path.name)
    return target


SHIPPED = yaml.safe_load((REPO / "flows" / "checkin.yaml").read_text())["revision"]


def test_load_shipped_flows():
    library = load_flows(REPO / "flows")
    assert [flow.id for flow in library.current()] == ["checkin", "reminder", "welcome"]
    assert library.get("checkin").revision == SHIPPED
    assert "checkin" in library and "nope" not in library
    assert set(library.variables) >= {"name", "clinic_name", "clinic_phone", "hotline",
                                      "emergency_number", "reminder_text"}


@pytest.mark.parametrize("word", ["CHECKIN", "checkin", " Check-in! ", "check in"])
def test_by_keyword(word):
    assert load_flows(REPO / "flows").by_keyword(word).id == "checkin"


def test_by_keyword_unknown():
    assert load_flows(REPO / "flows").by_keyword("hello") is None


def test_get_unknown_raises_key_error():
    library = load_flows(REPO / "flows")
    with pytest.raises(KeyError):
        library.get("nope")
    with pytest.raises(KeyError):
        library.get("checkin", revision=library.get("checkin").revision + 1)


def test_snapshot_round_trip_keeps_the_definition():
    for flow in load_flows(REPO / "flows").current():
        copy = Flow.from_json(flow.to_json())
        assert copy == flow
        assert copy.fingerprint() == flow.fingerprint()


def test_conversation_finishes_on_the_revision_it_started_on(tmp_path):
    # The shipped revision (R) is live; a conversation starts and the service stores the snapshot.
    live = load_flows(copy_flows(tmp_path / "v1"))
    rev1 = live.get("checkin")
    snapshot = rev1.to_json()
    state = step(rev1, None, Start(), NOW, CONTEXT).new_state
    state = step(rev1, state, Inbound("0"), NOW, CONTEXT).new_state
    assert state["revision"] == SHIPPED and state["node"] == "numbness"

    # Revision R + 1 is deployed: the pain question is reworded and numbness is asked last.
    v2 = copy_flows(tmp_path / "v2")
    text = (v2 / "checkin.yaml").read_text()
    text = text.replace(f"revision: {SHIPPED}", f"revision: {SHIPPED + 1}").replace(
        OLD_QUESTION, NEW_QUESTION)
    (v2 / "checkin.yaml").write_text(text)
    library = load_flows(v2)
    assert library.get("checkin").revision == SHIPPED + 1
    library.register(Flow.from_json(snapshot))  # what the service does from its table

    # The running conversation goes on with revision R's nodes and texts...
    sent = []
    for reply in ["no"] * 7 + ["1", "no"]:
        flow = library.get(state["flow"], state["revision"])
        result = step(flow, state, Inbound(reply), NOW, CONTEXT)
        state = result.new_state
        sent += result.outbound
    assert state["status"] == COMPLETED and state["revision"] == SHIPPED
    assert sent[-1].startswith("Thank you, Maria. Your answers have gone to your care team.")

    # ... while a new one starts on revision R + 1, and keywords find it.
    assert library.by_keyword("CHECKIN").revision == SHIPPED + 1
    fresh = step(library.get("checkin"), None, Start(), NOW, CONTEXT)
    assert fresh.outbound[1].startswith(NEW_QUESTION)
    assert fresh.new_state["revision"] == SHIPPED + 1
    assert library.revisions("checkin")[-2:] == [SHIPPED, SHIPPED + 1]


def test_registering_an_older_revision_does_not_change_the_current_one():
    rev1 = load_flows(REPO / "flows").get("welcome")
    data = rev1.model_dump(by_alias=True, exclude_none=True)
    older = rev1.revision
    rev2 = Flow.model_validate({**data, "revision": older + 1, "title": "Welcome, reworded"})
    library = FlowLibrary([rev2])
    library.register(rev1)
    assert library.get("welcome") is rev2
    assert library.get("welcome", older) is rev1
    library.register(Flow.from_json(rev1.to_json()))  # the same snapshot again is fine
    assert library.get("welcome", older) is rev1


def test_same_revision_with_different_content_is_refused():
    library = load_flows(REPO / "flows")
    edited = library.get("welcome").model_dump(by_alias=True, exclude_none=True)
    edited["title"] = "Edited without bumping the revision"
    with pytest.raises(FlowError, match="give the changed flow a new revision number"):
        library.register(Flow.model_validate(edited))


def test_registered_flow_unknown_to_files_is_not_current():
    library = FlowLibrary()
    flow = load_flows(REPO / "flows").get("reminder")
    library.register(flow)
    assert library.get("reminder", flow.revision) is flow
    assert "reminder" not in library
    with pytest.raises(KeyError):
        library.get("reminder")


@pytest.mark.parametrize(
    ("text", "minutes"), [("30m", 30), ("4h", 240), ("2d", 2880), ("1h30m", 90), ("90s", 1.5)]
)
def test_parse_duration(text, minutes):
    assert parse_duration(text).total_seconds() == minutes * 60


@pytest.mark.parametrize("text", ["", "4", "4 hours", "h", "0h", "-1h", "4h2d"])
def test_parse_duration_refuses(text):
    with pytest.raises(ValueError):
        parse_duration(text)
