"""Spanish opt-out, opt-in and help words (BAJA, ALTA, AYUDA...), through the signed Twilio
webhook on SMS and WhatsApp. Twilio blocks only on its English words, so the bot honours these
itself: for every patient whatever their language, answered in the patient's language, and only
as the whole message (a red flag around them is never swallowed)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from bot.services.conversations import active_conversation
from bot.services.patients import Enrolment, enrol_patient
from bot.store.models import AuditLog, Escalation, OutboxItem, Patient
from tests.test_webhooks import PHONE, bodies, checkin_queued, texted
from tests.twilio_support import (  # noqa: F401 - fixtures
    fake_http,
    messenger,
    settings_overrides,
)

OTHER = "+447700900456"
STOP_ES = ["BAJA", "baja", "Parar", "DETENER", " cancelar ", "Bája", "BAJA!", "¡Baja!"]
START_ES = ["ALTA", "alta", "Iniciar", "REANUDAR", "Álta."]
HELP_ES = ["AYUDA", "ayuda", "Ayúda", "¡Ayuda!"]


def enrol(rt, language="es", channel="sms", status=None, phone=PHONE):
    with rt.transaction() as s:
        p = enrol_patient(s, Enrolment(phone, "Lucia Perez", "Europe/Madrid", channel, language),
                          languages=["en", "es"], now=rt.clock.now(), actor="test")
        p.consent_at = rt.clock.now()
        p.status = status or p.status  # None: as enrolment left it
        return p.id


def status_of(rt, pid):
    with rt.transaction() as s:
        return s.get(Patient, pid).status


def expected(rt, pid, key):
    """The text `key` as the bot words it for this patient (their language, their name)."""
    with rt.transaction() as s:
        return rt.ctx.text_for(s.get(Patient, pid), key)


def audit_rows(rt, pid, action):
    with rt.transaction() as s:
        return [(r.actor, r.action, r.subject_type, r.subject_id, r.details)
                for r in s.scalars(select(AuditLog).where(
                    AuditLog.action == action, AuditLog.subject_id == str(pid)))]


# -- opting out ---------------------------------------------------------------------------------

@pytest.mark.parametrize("channel", ["sms", "whatsapp"])
@pytest.mark.parametrize("word", STOP_ES)
def test_spanish_stop_words_opt_a_spanish_patient_out_with_the_spanish_reply(
        client, rt, fake_http, channel, word):
    pid = enrol(rt, channel=channel)
    texted(client, word, channel=channel)
    assert status_of(rt, pid) == "opted_out"
    reply = bodies(fake_http)[-1]
    assert reply == expected(rt, pid, "stopped")
    assert reply.startswith("No recibira mas mensajes de")
    assert "START" in reply  # the word that opts back in everywhere, the carrier's block too


@pytest.mark.parametrize("channel", ["sms", "whatsapp"])
def test_baja_from_an_english_patient_opts_out_in_english(client, rt, fake_http, channel):
    pid = enrol(rt, language="en", channel=channel)
    texted(client, "Baja", channel=channel)
    assert status_of(rt, pid) == "opted_out"
    assert bodies(fake_http)[-1].startswith("You will get no more messages from")


@pytest.mark.parametrize("channel", ["sms", "whatsapp"])
def test_baja_is_audited_as_stop_is(client, rt, channel):
    by_stop = enrol(rt, channel=channel, phone=OTHER)
    by_baja = enrol(rt, channel=channel)
    texted(client, "STOP", sender=OTHER, channel=channel)
    texted(client, "baja", channel=channel)
    [(actor, action, kind, subject, details)] = audit_rows(rt, by_baja, "patient.opt_out")
    assert (actor, action, kind, subject) == (f"patient:{by_baja}", "patient.opt_out",
                                              "patient", str(by_baja))
    assert details == {"keyword": "BAJA", "previous": "active"}
    [stop_row] = audit_rows(rt, by_stop, "patient.opt_out")
    assert set(stop_row[4]) == set(details)


def test_parar_interrupts_a_checkin_and_cancels_what_was_waiting(client, rt, fake_http):
    pid = enrol(rt)
    checkin_queued(rt, pid)
    texted(client, "PARAR")
    with rt.transaction() as s:
        assert active_conversation(s, pid) is None
        waiting = s.scalars(select(OutboxItem.status).where(OutboxItem.kind != "stopped")).all()
    assert waiting and set(waiting) == {"cancelled"}  # the check-in's texts, never sent
    assert bodies(fake_http) == [expected(rt, pid, "stopped")]


@pytest.mark.parametrize("channel", ["sms", "whatsapp"])
def test_baja_from_a_number_not_enrolled_is_remembered(client, rt, fake_http, channel):
    texted(client, "BAJA", channel=channel)
    with rt.transaction() as s:
        [row] = s.scalars(select(AuditLog).where(AuditLog.action == "number.opt_out")).all()
        assert (row.subject_id, row.details["keyword"]) == (PHONE, "BAJA")
    assert bodies(fake_http)[-1].startswith("You will get no more messages")  # the default
    pid = enrol(rt)  # enrolled later: starts opted out, as after STOP
    assert status_of(rt, pid) == "opted_out"


# -- opting back in, help -----------------------------------------------------------------------

@pytest.mark.parametrize("channel", ["sms", "whatsapp"])
@pytest.mark.parametrize("word", START_ES)
def test_spanish_start_words_opt_back_in(client, rt, fake_http, channel, word):
    pid = enrol(rt, channel=channel, status="opted_out")
    texted(client, word, channel=channel)
    assert status_of(rt, pid) == "active"
    assert bodies(fake_http)[-1] == expected(rt, pid, "started")
    assert bodies(fake_http)[-1].startswith("Hola de nuevo, Lucia.")
    [row] = audit_rows(rt, pid, "patient.opt_in")
    assert row[4]["keyword"] in {"ALTA", "INICIAR", "REANUDAR"}


@pytest.mark.parametrize("channel", ["sms", "whatsapp"])
def test_alta_from_an_english_patient_opts_back_in_in_english(client, rt, fake_http, channel):
    pid = enrol(rt, language="en", channel=channel, status="opted_out")
    texted(client, "ALTA", channel=channel)
    assert status_of(rt, pid) == "active"
    assert bodies(fake_http)[-1].startswith("Welcome back, Lucia.")


def test_si_with_its_accent_opts_back_in_as_yes_does(client, rt, fake_http):
    pid = enrol(rt, status="opted_out")
    texted(client, "Sí")
    assert status_of(rt, pid) == "active"
    assert bodies(fake_http)[-1] == expected(rt, pid, "started")


def test_baja_then_alta_round_trip(client, rt, fake_http):
    pid = enrol(rt)
    texted(client, "baja")
    texted(client, "alta")
    assert status_of(rt, pid) == "active"
    assert bodies(fake_http) == [expected(rt, pid, "stopped"), expected(rt, pid, "started")]


@pytest.mark.parametrize("channel", ["sms", "whatsapp"])
@pytest.mark.parametrize("word", HELP_ES)
def test_ayuda_gets_the_help_text_in_spanish(client, rt, fake_http, channel, word):
    pid = enrol(rt, channel=channel)
    texted(client, word, channel=channel)
    assert status_of(rt, pid) == "active"
    assert bodies(fake_http)[-1] == expected(rt, pid, "help")
    assert bodies(fake_http)[-1].startswith("Seguimiento de")


# -- whole message only: red flags are never swallowed ------------------------------------------

@pytest.mark.parametrize("channel", ["sms", "whatsapp"])
@pytest.mark.parametrize("text", ["no puedo parar de temblar", "quiero darme de baja manana",
                                  "la fiebre esta alta", "hay que cancelar la cita"])
def test_the_words_inside_a_sentence_are_no_keyword(client, rt, fake_http, channel, text):
    pid = enrol(rt, channel=channel)
    texted(client, text, channel=channel)
    assert status_of(rt, pid) == "active"
    assert audit_rows(rt, pid, "patient.opt_out") == []
    assert expected(rt, pid, "stopped") not in bodies(fake_http)


@pytest.mark.parametrize("channel", ["sms", "whatsapp"])
@pytest.mark.parametrize("text", ["ayuda, no siento las piernas", "BAJA no puedo mover las piernas",
                                  "parar! me he hecho pis encima"])
def test_a_red_flag_beside_a_keyword_is_an_emergency(client, rt, fake_http, channel, text):
    pid = enrol(rt, channel=channel)
    texted(client, text, channel=channel)
    assert status_of(rt, pid) == "active"
    with rt.transaction() as s:
        assert s.scalars(select(Escalation.level).where(
            Escalation.patient_id == pid)).all() == ["emergency"]
    assert bodies(fake_http)[0] == expected(rt, pid, "emergency")
    assert expected(rt, pid, "stopped") not in bodies(fake_http)


def test_a_baja_that_cannot_be_handled_is_still_honoured(client, rt, fake_http, monkeypatch):
    """Handling fails (a bug): the message is kept unprocessed, and BAJA still opts out, as a
    STOP would (bot/services/inbound.record_after_failure)."""
    from bot.services import conversations
    from bot.store.models import Message

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    pid = enrol(rt)
    monkeypatch.setattr(conversations, "interrupt_active", broken)
    assert texted(client, "Baja").status_code == 200
    with rt.transaction() as s:
        assert s.scalars(select(Message.status).where(Message.direction == "in")).one() \
            == "unprocessed"
    assert status_of(rt, pid) == "opted_out"
    assert bodies(fake_http)[-1] == expected(rt, pid, "stopped")
    monkeypatch.undo()
    texted(client, "ALTA")  # and back, through the normal path
    assert status_of(rt, pid) == "active"
    assert bodies(fake_http)[-1] == expected(rt, pid, "started")


def test_alta_cannot_lift_twilios_own_block_after_an_sms_stop(client, rt, fake_http):
    """STOP on SMS: Twilio blocks the number itself, and only its START lifts that. ALTA opts
    in with the bot, but the reply is refused (21610): the patient is opted out again, as the
    carrier says, and the reply is left failed for the team to follow up (README, Keywords)."""
    pid = enrol(rt)
    texted(client, "STOP")
    fake_http.queue_error(400, 21610, "Attempt to send to unsubscribed recipient")
    texted(client, "ALTA")
    assert status_of(rt, pid) == "opted_out"
    with rt.transaction() as s:
        assert s.scalars(select(OutboxItem.status).where(
            OutboxItem.kind == "started")).one() == "failed"
        assert [r.details.get("source") for r in s.scalars(select(AuditLog).where(
            AuditLog.action == "patient.opted_out"))] == ["carrier"]
