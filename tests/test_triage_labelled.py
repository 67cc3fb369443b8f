"""The detector against the labelled message set (tests/data/triage_labelled.yaml).

Run with `pytest tests/test_triage_labelled.py -s` to see the confusion table.
Targets (clinical brief rule 1, recall over precision):
  - every emergency message detected as emergency (100% recall);
  - at least 95% of urgent-or-emergency messages detected at urgent or higher;
  - at most 5% of routine messages raised to emergency.
"""

from __future__ import annotations

from collections import Counter
from functools import cache
from pathlib import Path

import pytest
import yaml

from bot.domain.triage import LEVELS, TriageResult, detect

DATA = Path(__file__).parent / "data" / "triage_labelled.yaml"
ORDER = ("emergency", "urgent", "routine")
RANK = {level: i for i, level in enumerate(LEVELS)}


@cache
def labelled() -> list[dict]:
    return yaml.safe_load(DATA.read_text(encoding="utf-8"))


@cache
def results() -> tuple[TriageResult, ...]:
    return tuple(detect(item["text"]) for item in labelled())


def confusion_table() -> tuple[Counter, str]:
    pairs = zip(labelled(), results(), strict=True)
    counts = Counter((item["level"], r.level) for item, r in pairs)
    lines = ["expected \\ detected " + "".join(f"{lvl:>11}" for lvl in ORDER) + "     recall"]
    for expected in ORDER:
        total = sum(counts[(expected, got)] for got in ORDER)
        recall = counts[(expected, expected)] / total if total else 1.0
        lines.append(f"{expected:>19} " + "".join(f"{counts[(expected, got)]:>11}" for got in ORDER)
                     + f"   {recall:7.1%}  (n={total})")
    return counts, "\n".join(lines)


def mistakes(predicate) -> str:
    rows = [f"  expected {item['level']:<9} got {r.level:<9} {item['text']!r} {r.flags}"
            for item, r in zip(labelled(), results(), strict=True) if predicate(item, r)]
    return "\n".join(rows) or "  (none)"


def test_labelled_set_is_large_and_balanced():
    items = labelled()
    assert len(items) >= 180
    assert {item["level"] for item in items} == set(ORDER)
    assert len({item["text"] for item in items}) == len(items), "duplicate messages"
    share = Counter(item["level"] for item in items)
    assert 0.35 <= share["emergency"] / len(items) <= 0.45
    assert 0.20 <= share["urgent"] / len(items) <= 0.30
    assert 0.30 <= share["routine"] / len(items) <= 0.40
    for item in items:
        assert set(item) <= {"text", "level", "flags", "hypothetical", "note"}, item


def test_recall_targets():
    counts, table = confusion_table()
    print("\n" + table)
    n_emergency = sum(counts[("emergency", got)] for got in ORDER)
    emergency_recall = counts[("emergency", "emergency")] / n_emergency
    red = [(item, r) for item, r in zip(labelled(), results(), strict=True)
           if item["level"] != "routine"]
    red_recall = sum(RANK[r.level] >= RANK["urgent"] for _, r in red) / len(red)
    n_routine = sum(counts[("routine", got)] for got in ORDER)
    routine_to_emergency = counts[("routine", "emergency")] / n_routine
    print(f"urgent-or-emergency detected at urgent or higher: {red_recall:.1%}")
    print(f"routine raised to emergency: {routine_to_emergency:.1%}")
    print("misclassified:\n" + mistakes(lambda item, r: item["level"] != r.level))
    detail = f"\n{table}\nmisclassified:\n" + mistakes(lambda item, r: item["level"] != r.level)
    assert emergency_recall == 1.0, "missed emergencies" + detail
    assert red_recall >= 0.95, "urgent recall below 95%" + detail
    assert routine_to_emergency <= 0.05, "too many routine messages raised to emergency" + detail


def test_expected_flags_are_detected():
    missing = mistakes(lambda item, r: not set(item.get("flags", ())) <= set(r.flags))
    assert missing == "  (none)", "expected flags not detected:\n" + missing


def test_hypothetical_labels():
    wrong = mistakes(lambda item, r: "hypothetical" in item
                     and bool(item["hypothetical"]) != r.hypothetical)
    assert wrong == "  (none)", "hypothetical mismatch:\n" + wrong
    # a message not labelled hypothetical must never be marked so: the service would answer a
    # real emergency with the safety net only
    false_hyp = mistakes(lambda item, r: r.hypothetical and not item.get("hypothetical"))
    assert false_hyp == "  (none)", "marked hypothetical but real:\n" + false_hyp


@pytest.mark.parametrize("item", [i for i in labelled() if i["level"] == "emergency"],
                         ids=lambda i: i["text"][:40])
def test_each_emergency(item):
    assert detect(item["text"]).level == "emergency"
