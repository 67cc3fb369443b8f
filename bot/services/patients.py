"""Enrolling and finding patients."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cache
from zoneinfo import available_timezones

import phonenumbers
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.services.audit import audit
from bot.store.models import Patient

CHANNELS = ("sms", "whatsapp")


class InvalidField(ValueError):
    """A field of a request is wrong; `field` names it for a 400 or an exit-2 message."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def normalise_phone(raw: str, default_region: str | None = None) -> str:
    """Return the E.164 form of `raw`, or raise InvalidField("phone", ...)."""
    text = (raw or "").strip().removeprefix("whatsapp:")
    try:
        parsed = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException:
        raise InvalidField(
            "phone", f"{raw!r} is not a phone number in international form (e.g. +44 7700 900123)"
        ) from None
    # "Possible" (right length for the country) rather than "valid": Ofcom's reserved drama
    # range (07700 900xxx), used in tests and demos, is not allocated and so never "valid".
    reason = phonenumbers.is_possible_number_with_reason(parsed)
    if reason != phonenumbers.ValidationResult.IS_POSSIBLE:  # local-only numbers can't be texted
        raise InvalidField("phone", f"{raw!r} has the wrong number of digits for its country")
    if parsed.extension:  # E.164 has no room for it: texts would go to the switchboard
        raise InvalidField("phone", f"{raw!r} has an extension; a text can only go to a "
                                    "number without one")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


# Files in the zone database that are not zones a person lives in: the host's own zone
# (a symlink to /etc/localtime on Debian), the POSIX rules template, and tzdata's "Factory".
_NOT_ZONES = frozenset({"localtime", "posixrules", "Factory"})


@cache
def known_timezones() -> frozenset[str]:
    """The IANA zone names this host can load (read once per process: it walks the disk)."""
    return frozenset(available_timezones()) - _NOT_ZONES


def check_timezone(zone: str) -> str:
    """`zone` if it is an IANA zone name (e.g. Europe/London), else InvalidField("timezone").

    Checked against the list of zones rather than by loading it: ZoneInfo("Europe") raises
    IsADirectoryError, an over-long name OSError, and "localtime" loads the host's own zone.
    """
    if not isinstance(zone, str) or zone not in known_timezones():
        shown = zone if not isinstance(zone, str) or len(zone) <= 60 else zone[:57] + "..."
        raise InvalidField("timezone", f"unknown timezone {shown!r}")
    return zone


@dataclass(frozen=True)
class Enrolment:
    phone: str
    name: str
    timezone: str
    channel: str = "sms"
    language: str = "en"


def validate_enrolment(e: Enrolment, languages: list[str]) -> Enrolment:
    """Normalise and check every field; raise InvalidField naming the first bad one."""
    phone = normalise_phone(e.phone)
    name = (e.name or "").strip()
    if not name or len(name) > 80:
        raise InvalidField("name", "must be 1 to 80 characters")
    if e.channel not in CHANNELS:
        raise InvalidField("channel", f"must be one of {', '.join(CHANNELS)}")
    if e.language not in languages:
        raise InvalidField("language", f"must be one of {', '.join(languages)}")
    return Enrolment(phone, name, check_timezone(e.timezone), e.channel, e.language)


def find_patient(session: Session, phone: str) -> Patient | None:
    return session.scalars(select(Patient).where(Patient.phone == phone)).first()


def enrol_patient(
    session: Session, e: Enrolment, *, languages: list[str], now: datetime, actor: str
) -> Patient:
    """Create a patient (status active, not yet consented). Raises InvalidField."""
    e = validate_enrolment(e, languages)
    if find_patient(session, e.phone) is not None:
        raise InvalidField("phone", "a patient with this number is already enrolled")
    from bot.services.inbound import number_opted_out

    # A number that texted STOP before it was enrolled starts opted out: nothing goes to it
    # until the patient sends START.
    opted_out = number_opted_out(session, e.phone)
    patient = Patient(
        phone=e.phone, name=e.name, timezone=e.timezone, channel=e.channel,
        language=e.language, status="opted_out" if opted_out else "active", created_at=now,
    )
    try:
        with session.begin_nested():
            session.add(patient)
            session.flush()
    except IntegrityError:
        # Enrolled elsewhere (another coordinator, the API) between the check above and this
        # insert: the unique index refused it. Say so, as the check would have.
        if session.scalar(select(Patient.id).where(Patient.phone == e.phone)) is None:
            raise
        raise InvalidField("phone", "a patient with this number is already enrolled") from None
    audit(session, now, actor, "patient.enrol", "patient", patient.id, channel=e.channel,
          **({"opted_out_by_number": True} if opted_out else {}))
    return patient


def list_patients(session: Session) -> list[Patient]:
    return list(session.scalars(select(Patient).order_by(Patient.id)))


def onboard_patient(session: Session, ctx, e: Enrolment, now: datetime, actor: str,
                    respect_quiet_hours: bool = True) -> tuple[Patient, list[int]]:
    """Enrol and start the welcome (consent) flow. Returns the patient and outbox ids.

    The welcome is a routine message: enrolled at 11 p.m., the patient hears from us at the end
    of their quiet hours (the simulator, where someone is waiting at the screen, says so).
    """
    from bot.services import conversations

    patient = enrol_patient(session, e, languages=ctx.settings.languages, now=now, actor=actor)
    if patient.status == "opted_out":  # the number said STOP: no welcome until START
        return patient, []
    ids = conversations.start_flow(session, ctx, patient, "welcome", now,
                                   routine=respect_quiet_hours)
    return patient, ids
