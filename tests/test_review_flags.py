"""Review of red-flag detection: phrasings of the clinical brief's red flags that were missed,
in free text and through the signed webhook (shared/clinical/red-flags.md, rules 1 and 5)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from bot.domain.triage import detect
from bot.services.context import readable_phone
from bot.store.models import Escalation
from tests.test_red_flags_e2e import PHONE, enrol, texted
from tests.twilio_support import (  # noqa: F401 - fixtures
    fake_http,
    messenger,
    sent_to,
    settings_overrides,
)


# ------------------------------------------------------------------------------ rule 5
# A question about a red flag, followed by a sentence saying it has happened, is happening or
# goes on, is a real emergency: the patient must get the emergency instruction and the care
# team the alert, not only the safety-net text.
@pytest.mark.parametrize("text", [
    "What should I do if I wet myself? It has happened twice this week",
    "what should I do if I wet myself? It happened twice",
    "if i cant feel my legs what do i do? i cant feel them now",
    "if my legs give way what do I do... they did on the stairs",
    "what do i do if i cant wee and its been 10 hours",
    "what if i cant walk? because i cant",
])
def test_a_question_followed_by_it_happening_is_not_hypothetical(text):
    result = detect(text)
    assert result.level == "emergency" and result.hypothetical is False, result


@pytest.mark.parametrize("text", [
    "If my legs go numb, what do I do?",
    "if my legs give way what should i do",
    "if i lose control of my bladder what do i do",
    "if i cant walk do i ring 999",
])
def test_a_plain_question_is_still_hypothetical(text):
    result = detect(text)
    assert result.level == "emergency" and result.hypothetical is True, result


def test_a_question_then_it_happening_gets_the_emergency_instruction_by_webhook(
        client, rt, fake_http):
    enrol(rt)
    texted(client, "What should I do if I wet myself? It has happened twice this week")
    [reply] = [d["Body"] for d in sent_to(fake_http, PHONE)]
    assert readable_phone(rt.settings.clinic.acute_oncology_hotline) in reply
    assert rt.settings.clinic.emergency_number in reply
    assert "Lie flat" in reply
    with rt.transaction() as s:
        esc = s.scalars(select(Escalation)).one()
    assert esc.level == "emergency" and esc.flags == ["bladder_dysfunction"]


# ------------------------------------------------------------------------------ bladder, bowel
@pytest.mark.parametrize("text, flag", [
    ("no bladder control", "bladder_dysfunction"),
    ("not much bladder control", "bladder_dysfunction"),
    ("not got much bladder control left", "bladder_dysfunction"),
    ("no bowel control", "bowel_dysfunction"),
    ("she's lost control of her bladder", "bladder_dysfunction"),
    ("he's lost control of his bowels", "bowel_dysfunction"),
    ("lost control of the bladder", "bladder_dysfunction"),
    ("wet my undies", "bladder_dysfunction"),
    ("I wet my diaper", "bladder_dysfunction"),
    ("accident in my diaper", "bladder_dysfunction"),
    ("leaked in my pants", "bladder_dysfunction"),
    ("bed wetting again", "bladder_dysfunction"),
    ("pee-ing myself", "bladder_dysfunction"),
    ("piddled myself", "bladder_dysfunction"),
    ("i peed a little when i stood up", "bladder_dysfunction"),
    ("no urge to pee", "bladder_dysfunction"),
    ("im retaining urine", "bladder_dysfunction"),
    ("struggling to pee", "bladder_dysfunction"),
    ("difficulty passing urine", "bladder_dysfunction"),
    ("its hard to pee", "bladder_dysfunction"),
    ("trouble urinating", "bladder_dysfunction"),
    ("i've had trouble having a wee since yesterday", "bladder_dysfunction"),
    ("leaking from my bottom", "bowel_dysfunction"),
    ("pooped my undies", "bowel_dysfunction"),
])
def test_loss_of_bladder_or_bowel_control_and_retention_as_patients_put_it(text, flag):
    result = detect(text)
    assert result.level == "emergency" and flag in result.flags, result


@pytest.mark.parametrize("text", [
    "no problems peeing", "no trouble peeing", "no difficulty passing urine",
    "not struggling to pee", "bladder control is good", "water retention in my ankles",
])
def test_and_their_denials_stay_routine(text):
    assert detect(text).level == "routine", detect(text)


# ------------------------------------------------------------------------------ numbness
@pytest.mark.parametrize("text, flag", [
    ("i dont feel my feet", "sensory_loss"),
    ("dont feel my toes", "sensory_loss"),
    ("i dont feel my legs anymore", "sensory_loss"),
    ("i dont feel anything in my feet", "sensory_loss"),
    ("i don't have any feeling in my feet", "sensory_loss"),
    ("I haven't got any feeling in my legs", "sensory_loss"),
    ("she doesnt have any feeling in her legs", "sensory_loss"),
    ("i dont have much sensation in my feet", "sensory_loss"),
    ("my feet feel like blocks of wood", "sensory_loss"),
    ("feels like im walking on a sponge", "sensory_loss"),
    ("prickling in my feet", "sensory_loss"),
    ("prickly feet", "sensory_loss"),
    ("i dont have any feeling down there", "saddle_anaesthesia"),
    ("i havent got any feeling in my bum", "saddle_anaesthesia"),
    ("i dont feel the toilet paper when i wipe", "saddle_anaesthesia"),
    ("the toilet paper feels weird", "saddle_anaesthesia"),
    ("cant feel the toilet seat", "saddle_anaesthesia"),
])
def test_loss_of_feeling_said_with_dont_or_havent(text, flag):
    result = detect(text)
    assert result.level == "emergency" and flag in result.flags, result


@pytest.mark.parametrize("text", [
    "i don't feel my legs are any weaker", "dont feel my best", "i dont feel the cold in my feet",
    "i dont have any pain in my feet", "i dont feel great",
])
def test_dont_feel_that_is_no_loss_of_feeling_stays_routine(text):
    assert detect(text).level == "routine", detect(text)


# ------------------------------------------------------------------------------ walking, weakness
@pytest.mark.parametrize("text, flag", [
    ("couldnt stand up this morning", "limb_weakness"),
    ("cant stand up today", "limb_weakness"),
    ("something is wrong with my legs", "limb_weakness"),
    ("something isnt right with my legs", "limb_weakness"),
    ("my legs have gone to jelly", "limb_weakness"),
    ("legs turned to jelly", "limb_weakness"),
    ("cant grip", "limb_weakness"),
    ("cant do my buttons up", "limb_weakness"),
    ("legs lyk jelly", "limb_weakness"),
    ("legs gvng way", "limb_weakness"),
    ("weakeness in legs", "limb_weakness"),
    ("my legs feel week", "limb_weakness"),
    ("legs r so week", "limb_weakness"),
    ("not numb, just weak", "limb_weakness"),
    ("my walking isnt right", "gait_balance"),
    ("my walking is off", "gait_balance"),
    ("my walking has got worse", "gait_balance"),
    ("walking is getting harder", "gait_balance"),
    ("im walking worse", "gait_balance"),
    ("cant wlk", "gait_balance"),
    ("i fell on the way to the toilet", "gait_balance"),
    ("i fell getting out of bed", "gait_balance"),
    ("i keep having falls", "gait_balance"),
    ("had three falls this week", "gait_balance"),
    ("falling all the time", "gait_balance"),
])
def test_weakness_and_walking_as_patients_put_them(text, flag):
    result = detect(text)
    assert result.level == "emergency" and flag in result.flags, result


@pytest.mark.parametrize("text", [
    "my legs have been fine this week", "legs ok all week", "walking no worse",
    "walking is not worse", "my walking is fine", "haven't had any falls",
    "nothing is wrong with my legs", "i fell in love with the new puppy", "i can stand up fine",
])
def test_and_their_denials_and_lookalikes_stay_routine(text):
    assert detect(text).level == "routine", detect(text)


# ------------------------------------------------------------------------------ paralysis
@pytest.mark.parametrize("text, flag", [
    ("my legs are paralysed", "limb_weakness"),
    ("i think im paralysed", "limb_weakness"),
    ("paralyzed from the waist down", "limb_weakness"),
    ("i cant move", "limb_weakness"),
    ("cant move from the waist down", "limb_weakness"),
    ("my legs are failing", "limb_weakness"),
    ("my legs let me down", "limb_weakness"),
    ("legs shaking when i stand", "limb_weakness"),
    ("foot wont lift", "limb_weakness"),
    ("shaky on my feet", "gait_balance"),
    ("bedbound since monday", "gait_balance"),
    ("i can only walk a few steps", "gait_balance"),
    ("stairs are impossible", "gait_balance"),
    ("needed a wheelchair", "gait_balance"),
    ("using a wheelchair now", "gait_balance"),
    ("my toes catch on the floor", "gait_balance"),
    ("i keep catching my toes", "gait_balance"),
])
def test_paralysis_and_failing_legs_as_patients_put_them(text, flag):
    result = detect(text)
    assert result.level == "emergency" and flag in result.flags, result


@pytest.mark.parametrize("text", [
    "watching the paralympics", "i cant move my appointment", "cant move the sofa on my own",
    "my husband let me down again", "i use a stick as usual", "the stairs are fine",
])
def test_their_lookalikes_stay_routine(text):
    assert detect(text).level == "routine", detect(text)


# ------------------------------------------------------------------------------ radiating pain
@pytest.mark.parametrize("text", [
    "pain from my back down to my foot",
    "pain radiates to my chest",
    "my chest feels tight all the way round",
    "shocks in my legs when i bend my neck",
])
def test_radiating_and_band_like_pain_as_patients_put_it(text):
    result = detect(text)
    assert result.level == "emergency" and "radicular_pain" in result.flags, result


def test_shocked_in_the_back_garden_is_no_radiating_pain():
    assert detect("shocked in my back garden by the price of petrol").level == "routine"


def test_a_free_text_answer_in_the_checkin_that_names_retention_is_an_emergency(
        client, rt, fake_http):
    """Asked about the bladder, 'struggling to pee since this morning' was not YES or NO: the
    patient was asked again, and nobody was alerted."""
    enrol(rt)
    texted(client, "CHECKIN")
    for answer in ("0", "no", "no", "no"):  # no pain; numbness, weakness, balance: no
        texted(client, answer)
    before = len(sent_to(fake_http, PHONE))
    texted(client, "struggling to pee since this morning")  # any new bladder problems?
    [reply] = [d["Body"] for d in sent_to(fake_http, PHONE)][before:]
    assert readable_phone(rt.settings.clinic.acute_oncology_hotline) in reply
    assert "Lie flat" in reply
    with rt.transaction() as s:
        esc = s.scalars(select(Escalation)).one()
    assert esc.level == "emergency" and esc.flags == ["bladder_dysfunction"]


# ------------------------------------------------------------------------------ without knowing
@pytest.mark.parametrize("text, flag", [
    ("fine fine fine, bladder not great tho", "bladder_dysfunction"),
    ("peeing without knowing", "bladder_dysfunction"),
    ("peed without realizing", "bladder_dysfunction"),
    ("didnt realize i peed", "bladder_dysfunction"),
    ("woke up wet", "bladder_dysfunction"),
    ("woke up in a wet bed", "bladder_dysfunction"),
    ("found my pants wet", "bladder_dysfunction"),
    ("poo leaking", "bowel_dysfunction"),
    ("soiling myself", "bowel_dysfunction"),
    ("pooping myself", "bowel_dysfunction"),
    ("sex feels different down there", "saddle_anaesthesia"),
])
def test_incontinence_noticed_afterwards_as_patients_put_it(text, flag):
    result = detect(text)
    assert result.level == "emergency" and flag in result.flags, result


@pytest.mark.parametrize("text", ["woke up wet from sweating", "woke up soaked", "bladder is fine"])
def test_night_sweats_are_no_wet_bed(text):
    assert detect(text).level == "routine", detect(text)


def test_no_bm_in_days_is_constipation():
    result = detect("havent had a bm in days")
    assert result.level == "urgent" and result.flags == ("constipation",), result
