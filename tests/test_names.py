"""The name texts call the patient by: no titles, no "SURNAME," and never only punctuation."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from bot.domain import gsm7
from bot.domain.names import NEUTRAL, greeting_name
from bot.services.patients import Enrolment, onboard_patient
from bot.store.models import Message
from tests.twilio_signing import sign
from tests.twilio_support import (  # noqa: F401 - fixtures
    AUTH_TOKEN,
    PUBLIC_URL,
    fake_http,
    messenger,
    sent_to,
    settings_overrides,
)

PHONE = "+447700900123"
INBOUND = "/webhooks/twilio/message"


@pytest.mark.parametrize(
    ("enrolled", "called"),
    [
        ("Mrs Joan Baker", "Joan"), ("Mr John Smith", "John"), ("BAKER, Joan", "Joan"),
        ("Baker, Joan", "Joan"), ("Smith, Dr John", "John"), ("Dr. Ana Ruiz", "Ana"),
        ("Ms Jo Hill", "Jo"), ("Miss Amy Lee", "Amy"), ("Mx Sam Roe", "Sam"),
        ("Prof Dr Hans Muller", "Hans"), ("Sra. Maria Lopez", "Maria"),
        ("Srta Lucia Gomez", "Lucia"), ("Don Juan Perez", "Juan"),
        ("Dona Elena Ruiz", "Elena"), ("Doña Elena Ruiz", "Elena"), ("Sr. Jose Garcia", "Jose"),
        ("JOAN BAKER", "Joan"), ("BAKER Joan", "Joan"), ("BAKER, JOAN", "Joan"),
        ("Joan", "Joan"), ("  Joan  ", "Joan"), ("Joan, ", "Joan"), ("Baker,,Joan", "Joan"),
        ('Joan "Jo" Baker', "Joan"), ("Mary-Jane O'Brien", "Mary-Jane"),
        ("MARY-JANE SMITH", "Mary-Jane"), ("Jose Maria!", "Jose"),
        # A title with one word: that word may be a surname, and "Don" may be a first name.
        ("Mrs Baker", "Mrs Baker"), ("Baker, Mrs", "Mrs Baker"), ("Don Smith", "Don Smith"),
        ("J. Smith", "J Smith"),
        ("Bartholomew-Alexander Featherstonehaugh", "Bartholomew"),
        # A letter GSM-7 has (é, ñ, ü...) is a letter, at the end of a name too.
        ("José Martínez", "José"), ("André Dupont", "André"), ("Chloé", "Chloé"),
        ("ANDRÉ DUPONT", "André"), ("MARTÍNEZ, JOSÉ", "José"), ("Mrs Müller", "Mrs Müller"),
        ("Ñandú Pérez", "Ñandu"), ("ÉMILE ZOLA", "Émile"),
    ],
)
def test_the_name_texts_use(enrolled, called):
    assert greeting_name(enrolled) == called


@pytest.mark.parametrize("enrolled", [".", ",", "---", "?!", "  ", "", None, ", ,"])
def test_a_name_without_letters_gives_a_neutral_word_never_punctuation(enrolled):
    assert greeting_name(enrolled) == NEUTRAL["en"]
    assert greeting_name(enrolled, "es") == NEUTRAL["es"]


@pytest.mark.parametrize("enrolled", ["Zoë Łukasz", "Renée", "Ｊｏａｎ Baker", "王芳",
                                      "Maximilianotheodorusxyz Ng", "Mrs Ana-Maria-Magdalena-X",
                                      "ΑΛΕΞΗΣ ΠΑΠΑΔΟΠΟΥΛΟΣ", "ΔΣ"])
def test_the_name_is_gsm7_at_most_20_characters_and_has_a_letter(enrolled):
    name = greeting_name(enrolled)
    assert gsm7.is_gsm7(name) and 0 < len(name) <= 20
    assert any(c.isalpha() for c in name) and name == name.strip(" ,.-'")


def _texted(client, body):
    params = {"MessageSid": "SM" + "1" * 32, "From": PHONE, "To": "+447700900999", "Body": body}
    res = client.post(INBOUND, data=params, headers={
        "X-Twilio-Signature": sign(AUTH_TOKEN, PUBLIC_URL + INBOUND, params)})
    assert res.status_code == 200


@pytest.mark.parametrize(("enrolled", "called"),
                         [("Mrs Joan Baker", "Joan"), ("BAKER, Joan", "Joan")])
def test_the_welcome_and_the_emergency_instruction_use_the_first_name(
        client, rt, fake_http, enrolled, called):
    with rt.transaction() as s:
        patient, _ = onboard_patient(s, rt.ctx, Enrolment(PHONE, enrolled, "Europe/London"),
                                     rt.clock.now(), "test", respect_quiet_hours=False)
    with rt.transaction() as s:
        welcome = s.scalars(select(Message.body).where(Message.direction == "out")
                            .order_by(Message.id)).first()
    assert welcome.startswith(f"Hi {called}, this is ")
    _texted(client, "my legs gave way and I wet myself")
    [instruction] = [d["Body"] for d in sent_to(fake_http, PHONE)]
    assert instruction.startswith(f"{called}, this could be serious")
