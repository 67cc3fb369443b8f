"""Red flags the earlier probing rounds missed, in patients' words (shared/clinical/red-flags.md):
each list was routine before its fix; the near misses beside each must stay routine."""

from __future__ import annotations

import pytest

from tests.test_triage import _emergency as _emergency_level
from tests.test_triage import _routine


def _emergency(text: str, flag: str) -> None:
    result = _emergency_level(text, flag)
    assert not result.hypothetical, result


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



# Balance lost, said in Spanish ways the vocabulary lacked ("se me va el equilibrio"), and
# dizziness said of walking or standing ("I feel dizzy when I walk", "me mareo al caminar"):
# the brief's emergency tier names loss of balance / unsteady and difficulty walking or
# standing; dizziness tied to walking may be that unsteadiness (rule 1, the higher tier).
# Dizziness said alone, or from treatment, names no gait and stays as it was.
BALANCE_MISSED = [
    ("se me va el equilibrio", "gait_balance"),
    ("se me fue el equilibrio", "gait_balance"),
    ("se le va el equilibrio", "gait_balance"),
    ("el equilibrio me falla", "gait_balance"),
    ("mi equilibrio esta fatal", "gait_balance"),
    ("tengo mal equilibrio", "gait_balance"),
    ("I feel dizzy when I walk", "gait_balance"),
    ("I get dizzy when I stand", "gait_balance"),
    ("dizzy and wobbly when walking", "gait_balance"),
    ("I go dizzy when I try to walk", "gait_balance"),
    ("me mareo al caminar", "gait_balance"),
    ("me mareo cuando camino", "gait_balance"),
    ("me mareo al andar", "gait_balance"),
    ("estoy mareado al caminar", "gait_balance"),
]
BALANCE_MISSED_NEAR = [
    "mi equilibrio esta bien", "el equilibrio bien", "no me mareo al caminar",
    "no dizziness when I walk", "I feel dizzy", "me mareo con la quimio",
    "se me va el dinero", "tengo mal el movil", "my balance is fine",
]


@pytest.mark.parametrize(("text", "flag"), BALANCE_MISSED, ids=[t for t, _ in BALANCE_MISSED])
def test_balance_lost_or_dizzy_walking_is_an_emergency(text, flag):
    _emergency(text, flag)


@pytest.mark.parametrize("text", BALANCE_MISSED_NEAR)
def test_balance_fine_or_dizziness_alone_stays_routine(text):
    _routine(text)


# A catheter newly put in, or one that stopped draining: the patient could not pass urine
# (retention, the brief's emergency tier; rule 1). Routine care of a catheter (changed, bag
# emptied), a catheter in a vein or a feeding tube is not this.
CATHETER_NEW = [
    ("I had to use a catheter", "bladder_dysfunction"),
    ("they put a catheter in", "bladder_dysfunction"),
    ("they had to put a catheter in", "bladder_dysfunction"),
    ("I have a catheter now", "bladder_dysfunction"),
    ("I needed a catheter", "bladder_dysfunction"),
    ("Ive been catheterised", "bladder_dysfunction"),
    ("they catheterized me at A&E", "bladder_dysfunction"),
    ("I have to self catheterise now", "bladder_dysfunction"),
    ("my catheter is blocked", "bladder_dysfunction"),
    ("catheter not draining", "bladder_dysfunction"),
    ("me pusieron una sonda", "bladder_dysfunction"),
    ("me han puesto una sonda", "bladder_dysfunction"),
    ("me tuvieron que poner una sonda para orinar", "bladder_dysfunction"),
    ("me sondaron en urgencias", "bladder_dysfunction"),
    ("la sonda no drena", "bladder_dysfunction"),
]
CATHETER_ROUTINE = [
    "my catheter was changed", "catheter changed today", "district nurse changed my catheter",
    "me cambiaron la sonda", "le cambiaron la sonda", "me pusieron una sonda nasogastrica",
    "they put a catheter in my arm for chemo", "they put a picc catheter in",
    "I dont need a catheter", "no catheter", "they put a cannula in",
    "my catheter bag was emptied",
]


@pytest.mark.parametrize(("text", "flag"), CATHETER_NEW, ids=[t for t, _ in CATHETER_NEW])
def test_new_or_blocked_bladder_catheter_is_an_emergency(text, flag):
    _emergency(text, flag)


@pytest.mark.parametrize("text", CATHETER_ROUTINE)
def test_routine_catheter_care_or_other_catheters_stay_routine(text):
    _routine(text)


# Hands: writing gone or harder ("my handwriting has gone", "I cant write properly"): new
# weakness or clumsiness of the hands, the brief's "new weakness in arms" (emergency; from the
# neck, the cord). Handwriting said to be fine, or always bad, or someone else's, is not.
HANDWRITING = [
    ("my handwriting has gone", "limb_weakness"),
    ("my handwriting has got worse", "limb_weakness"),
    ("my handwriting is all over the place", "limb_weakness"),
    ("my handwriting is terrible now", "limb_weakness"),
    ("I cant write properly", "limb_weakness"),
    ("i cnt write anymore", "limb_weakness"),
    ("struggling to write", "limb_weakness"),
    ("mi letra ha empeorado", "limb_weakness"),
    ("no puedo escribir bien", "limb_weakness"),
    ("me cuesta escribir", "limb_weakness"),
]
HANDWRITING_NEAR = [
    "my handwriting is fine", "the doctors handwriting is terrible",
    "my handwriting has always been bad", "I cant write this down now", "mi letra esta bien",
    "no puedo escribir mas tarde", "I keep dropping hints",
]


@pytest.mark.parametrize(("text", "flag"), HANDWRITING, ids=[t for t, _ in HANDWRITING])
def test_handwriting_gone_is_an_emergency(text, flag):
    _emergency(text, flag)


@pytest.mark.parametrize("text", HANDWRITING_NEAR)
def test_handwriting_fine_or_someone_elses_stays_routine(text):
    _routine(text)


# Not knowing whether the bowel needs to open ("im not sure if i need a poo"): the brief's
# bowel_dysfunction ("not feeling when the bowel needs to open"), as "i dont know if i need a
# wee" is the bladder's. Doubt about something else stays routine.
BOWEL_URGE_UNKNOWN = [
    ("im not sure if i need a poo", "bowel_dysfunction"),
    ("not sure when i need to poo", "bowel_dysfunction"),
    ("i cant tell if i need a poo", "bowel_dysfunction"),
    ("no idea when i need a number two", "bowel_dysfunction"),
]
BOWEL_URGE_UNKNOWN_NEAR = [
    "im not sure if i need a new prescription", "i need a poo", "not sure when i need to go in",
]


@pytest.mark.parametrize(("text", "flag"), BOWEL_URGE_UNKNOWN,
                         ids=[t for t, _ in BOWEL_URGE_UNKNOWN])
def test_not_knowing_when_the_bowel_needs_to_open_is_an_emergency(text, flag):
    _emergency(text, flag)


@pytest.mark.parametrize("text", BOWEL_URGE_UNKNOWN_NEAR)
def test_other_doubts_stay_routine(text):
    _routine(text)


# Limbs said with a modal hedge ("my legs may be weaker") or as feeling "off": rule 4 (hedges
# do not cancel) and rule 1 (a vague change in a limb: the higher tier).
LIMB_HEDGED = [
    ("my legs may be weaker", "limb_weakness"),
    ("my arms might be a bit weaker", "limb_weakness"),
    ("my legs could be weaker than last week", "limb_weakness"),
    ("my legs feel off", "sensory_loss"),
    ("my feet feel a bit off today", "sensory_loss"),
]
LIMB_HEDGED_NEAR = [
    "I lifted my legs off the bed", "my legs may be fine", "the heating might be off",
    "took my feet off the stool", "my legs feel fine",
]


@pytest.mark.parametrize(("text", "flag"), LIMB_HEDGED, ids=[t for t, _ in LIMB_HEDGED])
def test_limb_change_said_with_a_hedge_is_an_emergency(text, flag):
    _emergency(text, flag)


@pytest.mark.parametrize("text", LIMB_HEDGED_NEAR)
def test_limb_fine_or_off_something_stays_routine(text):
    _routine(text)


# "theres a band round it": band-like pain around the chest (the brief's radicular pain), with
# "there's" as texted; and "nothing" / "anything" misspelt ("cant feel nuthin in my legs").
BAND_THERES = [
    ("my chest feels like theres a band round it", "radicular_pain"),
    ("feels like there's a tight band around my ribs", "radicular_pain"),
]
BAND_THERES_NEAR = ["theres a band playing round the corner", "my watch band is tight"]


@pytest.mark.parametrize(("text", "flag"), BAND_THERES, ids=[t for t, _ in BAND_THERES])
def test_band_round_the_chest_said_with_theres_is_an_emergency(text, flag):
    _emergency(text, flag)


@pytest.mark.parametrize("text", BAND_THERES_NEAR)
def test_other_bands_stay_routine(text):
    _routine(text)


NOTHING_MISSPELT = [
    ("cant feel nuthin in my legs", "sensory_loss"),
    ("i cant feel nothin in my feet", "sensory_loss"),
    ("cnt feel anythin in my legs", "sensory_loss"),
]


@pytest.mark.parametrize(("text", "flag"), NOTHING_MISSPELT, ids=[t for t, _ in NOTHING_MISSPELT])
def test_nothing_or_anything_misspelt_still_alerts(text, flag):
    _emergency(text, flag)


def test_nothing_misspelt_in_a_denial_stays_routine():
    _routine("nuthin wrong with my legs")


# Dropping things: repeatedly, or things in general, is new hand weakness; one thing dropped
# once ("sorry, I dropped my phone") is an everyday event, and was an emergency.

DROPPING_REPEATEDLY = [
    ("I keep dropping things", "limb_weakness"),
    ("keep dropping my phone", "limb_weakness"),
    ("Im dropping stuff all the time", "limb_weakness"),
    ("I drop things now", "limb_weakness"),
    ("she keeps dropping her cup", "limb_weakness"),
]
DROPPED_ONCE = [
    "I dropped my phone", "sorry i dropped my phone in the bath",
    "dropped my pen under the sofa", "I dropped my fork at dinner",
]


@pytest.mark.parametrize(("text", "flag"), DROPPING_REPEATEDLY,
                         ids=[t for t, _ in DROPPING_REPEATEDLY])
def test_dropping_things_again_and_again_is_an_emergency(text, flag):
    _emergency(text, flag)


@pytest.mark.parametrize("text", DROPPED_ONCE)
def test_one_thing_dropped_once_stays_routine(text):
    _routine(text)
