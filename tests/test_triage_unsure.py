"""Red flags the earlier probing rounds missed, in patients' words (shared/clinical/red-flags.md):
each list was routine before its fix; the near misses beside each must stay routine."""

from __future__ import annotations

import pytest

from bot.domain.triage import detect


def _emergency(text: str, flag: str) -> None:
    result = detect(text)
    assert flag in result.flags and result.level == "emergency", result
    assert not result.hypothetical, result


def _routine(text: str) -> None:
    result = detect(text)
    assert result.level == "routine", result


# Doubt about continence ("not sure my bladder is ok"): the brief's rule 4 (hedges do not
# cancel) and rule 1 (when unsure, the higher tier): the bladder or bowels may not be right,
# which is the emergency "my bladder isnt right" already is.
CONTINENCE_DOUBTED = [
    ("not sure my bladder is ok", "bladder_dysfunction"),
    ("not sure if my bladder is ok", "bladder_dysfunction"),
    ("Im not sure my bladder is working properly", "bladder_dysfunction"),
    ("I dont think my bladder is right", "bladder_dysfunction"),
    ("I don't think my bladder is working properly", "bladder_dysfunction"),
    ("i dnt think my bladder is right", "bladder_dysfunction"),
    ("unsure whether my waterworks are ok", "bladder_dysfunction"),
    ("not sure im emptying my bladder", "bladder_dysfunction"),
    ("I dont think I empty my bladder properly", "bladder_dysfunction"),
    ("no estoy seguro de que la vejiga este bien", "bladder_dysfunction"),
    ("no estoy segura de que mi vejiga funcione bien", "bladder_dysfunction"),
    ("no se si la vejiga me funciona bien", "bladder_dysfunction"),
    ("no creo que la vejiga este bien", "bladder_dysfunction"),
    ("not sure my bowels are right", "bowel_dysfunction"),
    ("I dont think my bowels are ok", "bowel_dysfunction"),
    ("no estoy seguro de que los intestinos esten bien", "bowel_dysfunction"),
]
CONTINENCE_DOUBTED_NEAR = [
    "my bladder is fine", "Im sure my bladder is ok", "I think my bladder is fine",
    "not sure my appointment is ok", "not sure if my bladder scan is ok",
    "estoy seguro de que la vejiga esta bien", "creo que la vejiga esta bien",
    "I dont think my bladder is a problem", "not sure the bladder leaflet is right",
]


@pytest.mark.parametrize(("text", "flag"), CONTINENCE_DOUBTED,
                         ids=[t for t, _ in CONTINENCE_DOUBTED])
def test_doubt_about_bladder_or_bowels_is_an_emergency(text, flag):
    _emergency(text, flag)


@pytest.mark.parametrize("text", CONTINENCE_DOUBTED_NEAR)
def test_bladder_said_well_or_doubt_about_something_else_stays_routine(text):
    _routine(text)

