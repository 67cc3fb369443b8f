"""A Spanish-speaking patient's everyday replies, understood as a Spanish speaker means them
(bot/domain/answers.py, and through a signed Twilio webhook), and the texts they get back."""

from __future__ import annotations

import functools

import pytest
from sqlalchemy import select

from bot.domain.answers import parse_integer, parse_yesno
from bot.services.conversations import active_conversation, start_flow
from bot.services.patients import Enrolment, enrol_patient
from bot.store.models import Answer, Patient
from tests.test_webhooks import PHONE, texted
from tests.twilio_support import (  # noqa: F401 - fixtures
    fake_http,
    messenger,
    sent_to,
    settings_overrides,
)

# "I'm not sure", "I don't remember", "no idea", "no se" as texted ("no c"): a no followed
# by doubt is no answer to "any new numbness?", as "not sure" is not in English.
UNSURE = ["no estoy seguro", "no estoy segura", "No estoy muy seguro", "no seguro",
          "no sabría decir", "no tengo ni idea", "no me acuerdo", "no recuerdo", "no c",
          "no sé", "no lo sé"]


@pytest.mark.parametrize("text", UNSURE)
def test_a_spanish_not_sure_is_not_a_no(text):
    assert not parse_yesno(text).ok


@pytest.mark.parametrize(("text", "value"), [
    ("si", "yes"), ("sí, un poco", "yes"), ("no gracias", "no"), ("nada", "no"),
    ("no, estoy bien", "no"), ("no, nada", "no")])
def test_everyday_spanish_yes_and_no_still_read(text, value):
    assert parse_yesno(text).value == value


def _checkin_started(rt):
    """A consenting Spanish-speaking patient asked the check-in's first question."""
    with rt.transaction() as s:
        p = enrol_patient(s, Enrolment(PHONE, "Lucia Perez", "Europe/Madrid", language="es"),
                          languages=["en", "es"], now=rt.clock.now(), actor="test")
        p.consent_at = rt.clock.now()
        start_flow(s, rt.ctx, p, "checkin", rt.clock.now())
        return p.id


def _answers(rt, pid):
    with rt.transaction() as s:
        return {a.question_key: a.value for a in s.scalars(
            select(Answer).where(Answer.patient_id == pid).order_by(Answer.id))}


def test_not_sure_to_the_numbness_question_is_asked_again_in_spanish(client, rt, fake_http):
    pid = _checkin_started(rt)
    for reply in ("0", "no estoy segura"):  # no pain, then numbness: not sure
        texted(client, reply)
    assert _answers(rt, pid) == {"worst_pain": 0}
    assert sent_to(fake_http, PHONE)[-1]["Body"] == (
        "Perdone, no le hemos entendido. Responda SI o NO.")
    with rt.transaction() as s:
        assert active_conversation(s, pid).state["node"] == "numbness"
        assert s.get(Patient, pid).status == "active"


# "Sin dolor" is how Spanish speakers say "no pain"; "ningun dolor", "no hay dolor" too.
@pytest.mark.parametrize("text", ["sin dolor", "Sin dolor, gracias", "ningún dolor",
                                  "no hay dolor", "sin dolor hoy", "no tengo dolor", "nada"])
def test_no_pain_in_spanish_is_a_zero(text):
    assert parse_integer(text, 0, 10).value == 0


@pytest.mark.parametrize(("text", "value"), [("un 8 sin calmantes", 8), ("siete", 7),
                                             ("un 7", 7), ("7 de 10", 7)])
def test_a_spanish_score_beside_sin_is_still_the_score(text, value):
    assert parse_integer(text, 0, 10).value == value


@pytest.mark.parametrize("text", ["sin calmantes", "sin", "no se", "ningun calmante"])
def test_sin_or_ningun_beside_other_words_is_no_number(text):
    assert not parse_integer(text, 0, 10).ok


def test_sin_dolor_to_the_pain_question_goes_on_to_numbness(client, rt, fake_http):
    pid = _checkin_started(rt)
    texted(client, "sin dolor")
    assert _answers(rt, pid) == {"worst_pain": 0}
    assert sent_to(fake_http, PHONE)[-1]["Body"].startswith(
        "Desde su ultima consulta, ¿ha notado entumecimiento")


def test_start_welcomes_a_spanish_speaker_back_whatever_their_gender(client, rt, fake_http):
    """'Bienvenido' is said to a man; 'Hola de nuevo' to anyone."""
    _checkin_started(rt)
    texted(client, "STOP")
    texted(client, "START")
    assert sent_to(fake_http, PHONE)[-1]["Body"] == (
        "Hola de nuevo, Lucia. Sus seguimientos de Spine Oncology Clinic vuelven a empezar. "
        "Responda HELP para ayuda o STOP para parar.")


@pytest.mark.parametrize(("text", "value"), [
    ("pues si", "yes"), ("claro que si", "yes"), ("creo que si", "yes"),
    ("por supuesto", "yes"), ("para nada", "no"), ("la verdad es que no", "no"),
    ("creo que no", "no"), ("pues no", "no")])
def test_everyday_spanish_ways_of_saying_yes_and_no(text, value):
    # These were asked again: "claro que si" is as plain a yes as there is.
    assert parse_yesno(text).value == value


@pytest.mark.parametrize("text", ["que", "creo", "no se que decir", "para que", "pues"])
def test_the_words_around_them_alone_are_no_answer(text):
    assert not parse_yesno(text).ok


# ---- "un poquito", "casi nada", "todavia no" ----------------------------------------------
# Read as the shipped flows read them (flows/checkin.yaml, flows/reminder.yaml).
@functools.cache
def _shipped():
    from bot.config import REPO_ROOT
    from bot.domain.flows import load_flows

    return load_flows(REPO_ROOT / "flows")


def _reply_to(flow_id, node_id, text):
    from bot.domain.engine import parse_reply

    return parse_reply(_shipped().get(flow_id).node(node_id), text)


@pytest.mark.parametrize(("text", "value"), [
    # "How much did tiredness get in the way?": "un poquito" is "un poco", a little; "casi
    # nada" (hardly at all) is more than nothing, so a little too, never "not at all".
    ("un poquito", "a_little"), ("Un poquitín", "a_little"), ("poquito", "a_little"),
    ("casi nada", "a_little"), ("Casi nada, gracias", "a_little"), ("un poco", "a_little"),
    ("nada", "not_at_all"), ("para nada", "not_at_all")])
def test_un_poquito_and_casi_nada_to_the_tiredness_question(text, value):
    assert _reply_to("checkin", "fatigue", text).value == value


YESNO_QUESTIONS = ["pain_new", "pain_night", "pain_cough", "pain_spread", "pain_painkillers",
                   "numbness", "weakness", "balance", "bladder", "bowel", "saddle", "fever"]


@pytest.mark.parametrize("node", YESNO_QUESTIONS)
@pytest.mark.parametrize("text", ["si, un poquito", "sí un poquito", "si poquito",
                                  "Sí, un poquitín"])
def test_yes_a_little_in_spanish_is_a_yes(node, text):
    assert _reply_to("checkin", node, text).value == "yes"


# "Casi nada" to "any new numbness?" is some numbness: never a no. Nor is "no, poquito" or
# "no, casi ni lo noto" (no, I hardly notice it). The patient is asked again, as for "un poco"
# alone, and after three tries the question's flag is raised. The other YES/NO questions ask
# again too ("casi nada" to "is the pain worse at night?" is neither a clear yes nor a no).
@pytest.mark.parametrize("node", YESNO_QUESTIONS)
@pytest.mark.parametrize("text", ["casi nada", "un poquito", "poquito", "no, poquito",
                                  "no poquito", "No, casi ni lo noto", "no, casi nada",
                                  "No, un poquitín", "no, barely", "No, hardly notice it",
                                  "no, almost gone"])
def test_a_little_or_hardly_to_a_yes_no_question_is_asked_again(node, text):
    assert not _reply_to("checkin", node, text).ok


@pytest.mark.parametrize("text", ["casi nada", "un poquito"])
def test_casi_nada_or_un_poquito_is_no_pain_score(text):
    assert not _reply_to("checkin", "pain", text).ok


@pytest.mark.parametrize(("english", "spanish"), [
    ("not yet", "todavia no"), ("not yet", "todavía no"), ("Not yet", "Aún no"),
    ("no, not yet", "no, todavía no"), ("not yet, later", "todavía no, luego")])
def test_not_yet_to_the_reminder_is_not_done_in_spanish_as_in_english(english, spanish):
    # Not done (yet): the reminder's "can't" (reminder revision 4), as a no is, in both
    # languages. It was asked again, for 1 or 2, though the patient had answered.
    assert _reply_to("reminder", "remind", english).value == "cannot"
    assert _reply_to("reminder", "remind", spanish).value == "cannot"


def test_todavia_no_to_the_spanish_reminder_is_not_done_and_acknowledged(
        client, rt, fake_http):
    with rt.transaction() as s:
        p = enrol_patient(s, Enrolment(PHONE, "Lucia Perez", "Europe/Madrid", language="es"),
                          languages=["en", "es"], now=rt.clock.now(), actor="test")
        p.consent_at = rt.clock.now()
        start_flow(s, rt.ctx, p, "reminder", rt.clock.now(),
                   params={"reminder_text": "Tome la dexametasona"})
        pid = p.id
    texted(client, "todavía no")
    assert _answers(rt, pid) == {"reminder_reply": "cannot"}
    assert sent_to(fake_http, PHONE)[-1]["Body"].startswith(
        "Gracias por avisarnos. Su equipo vera su respuesta.")
