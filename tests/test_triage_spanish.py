"""Red flags as Spanish speakers (Spain and Latin America) text them, read by the real
vocabulary (config/red_flags.yaml). Each of these was missed (routine, or a lower tier)
before its phrasing was added; their denials must stay routine."""

from __future__ import annotations

import pytest

from bot.domain.triage import detect

MISSED = [
    # weakness: standing up, strength, legs going from under them, grip
    ("no me puedo poner de pie", "limb_weakness"),
    ("no me puedo levantar de la silla", "limb_weakness"),
    ("perdí la fuerza en las piernas", "limb_weakness"),
    ("se me van las piernas", "limb_weakness"),
    ("las piernas se me aflojan", "limb_weakness"),
    ("me flaquean las piernas", "limb_weakness"),
    ("no me sostengo de pie", "limb_weakness"),
    ("no puedo agarrar nada con la mano", "limb_weakness"),
    # numbness: the check-in's own "pinchazos", needles, feeling below the waist, verbs
    ("siento pinchazos en las piernas", "sensory_loss"),
    ("siento como agujas en los pies", "sensory_loss"),
    ("no siento nada de cintura para abajo", "sensory_loss"),
    ("no tengo sensibilidad en los pies", "sensory_loss"),
    ("me hormiguea la pierna", "sensory_loss"),
    ("se me hormiguean los pies", "sensory_loss"),
    # saddle
    ("no tengo sensibilidad en mis partes", "saddle_anaesthesia"),
    # bladder: wetting, leaking, retention, not feeling the urge
    ("me hice pipí", "bladder_dysfunction"),
    ("se me sale la orina", "bladder_dysfunction"),
    ("he mojado los pantalones", "bladder_dysfunction"),
    ("llevo todo el día sin orinar", "bladder_dysfunction"),
    ("no siento ganas de orinar", "bladder_dysfunction"),
    # bowel: the check-in's own wording, sphincters, soiling
    ("se me escapan las heces", "bowel_dysfunction"),
    ("no controlo los esfínteres", "bowel_dysfunction"),
    ("me ensucié encima", "bowel_dysfunction"),
    # balance, foot drop
    ("no tengo equilibrio", "gait_balance"),
    ("se me cae el pie al caminar", "gait_balance"),
    # pain down a leg without "que"
    ("el dolor me baja por la pierna", "radicular_pain"),
    # urgent tier
    ("tengo un dolor nuevo en la espalda", "new_back_pain"),
    ("me duele muchísimo la espalda", "new_back_pain"),
    ("el dolor de espalda es un 9", "severe_pain"),
]

DENIALS = [
    "no tengo sensibilidad rara en los pies ni debilidad",
    "no tengo pinchazos en las piernas",
    "no me duele mucho la espalda",
    "no me ensucié encima",
    "el dolor de espalda es un 3",
    "puedo ponerme de pie sin problema",
]


@pytest.mark.parametrize(("text", "flag"), MISSED, ids=[t for t, _ in MISSED])
def test_spanish_red_flag_is_detected(text, flag):
    result = detect(text)
    assert flag in result.flags
    assert not result.hypothetical


@pytest.mark.parametrize("text", DENIALS)
def test_spanish_denials_stay_below_emergency(text):
    assert detect(text).level != "emergency"
