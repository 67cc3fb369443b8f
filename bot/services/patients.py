"""Enrolling and finding patients."""

from __future__ import annotations

import unicodedata
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo, available_timezones

import phonenumbers
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.domain import gsm7
from bot.domain.schedule import (
    next_occurrence,
    parse_hhmm,
    previous_occurrence,
    quiet_hours_end,
)
from bot.services.audit import audit
from bot.store.models import (
    AuditLog,
    Conversation,
    Escalation,
    Message,
    OutboxItem,
    Patient,
    Schedule,
)

CHANNELS = ("sms", "whatsapp")
# What a coordinator may set a patient's status to. "opted_out" is the patient's own choice
# (STOP); only the patient can undo it, by texting START. "discharged" is set by
# discharge_patient (with a reason) and ended by setting "active" (a re-admission).
SETTABLE_STATUSES = ("active", "paused")
DISCHARGED = "discharged"
REASON_CHARS = 200


class InvalidField(ValueError):
    """A field of a request is wrong; `field` names it for a 400 or an exit-2 message."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def normalise_phone(raw: str, default_region: str | None = None) -> str:
    """Return the E.164 form of `raw`, or raise InvalidField("phone", ...). With
    `default_region` (see phone_region), a number without its country code is read as dialled
    in that country: "07700 900123" in GB.

    Every number the bot takes in comes through here: enrolment and corrections, and the
    sender of each inbound SMS or WhatsApp message. So a Mexican mobile is one number
    whichever way it is written: since 2019 its E.164 form is +52 and 10 digits, but WhatsApp
    IDs (and so Twilio's "whatsapp:" From) keep the "1" that once followed +52 for mobiles,
    +521 and 10 digits. Without dropping it, a patient's WhatsApp messages would come from
    a number that is not enrolled. (Argentina needs nothing: a mobile's E.164 form, +54 9...,
    is also its WhatsApp ID.)"""
    text = (raw or "").strip()
    if is_whatsapp_address(text):
        text = text[len(WHATSAPP_PREFIX):]
    try:
        parsed = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException:
        raise InvalidField("phone", f"{raw!r} is not a phone number "
                                    f"{phone_examples(default_region)}") from None
    if parsed.extension:  # E.164 has no room for it: texts would go to the switchboard
        raise InvalidField("phone", f"{raw!r} has an extension; a text can only go to a "
                                    "number without one")
    if any(ch.isalpha() for ch in text):
        # phonenumbers reads letters as a keypad's digits (1-800-FLOWERS): for a patient's
        # mobile they are a typo, and "0770 HELLO" would become a number nobody has.
        raise InvalidField("phone", f"{raw!r} is not a phone number "
                                    f"{phone_examples(default_region)}")
    national = str(parsed.national_number)
    if parsed.country_code == 52 and len(national) == 11 and national.startswith("1"):
        parsed.national_number = int(national[1:])  # +52 1 XX XXXX XXXX: the old mobile "1"
    # "Possible" (right length for the country) rather than "valid": Ofcom's reserved drama
    # range (07700 900xxx), used in tests and demos, is not allocated and so never "valid".
    reason = phonenumbers.is_possible_number_with_reason(parsed)
    # "07700 9001", digits short: the library keeps the trunk 0 inside (+44 0 7700 9001), a
    # number that is no one's; the number typed is what has the wrong length. (Where a leading
    # zero belongs to the number, Italy's landlines, it is a valid number.)
    misread = parsed.italian_leading_zero and not phonenumbers.is_valid_number(parsed)
    if reason != phonenumbers.ValidationResult.IS_POSSIBLE or misread:
        # local-only numbers can't be texted
        raise InvalidField("phone", f"{raw!r} has the wrong number of digits for its country")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


WHATSAPP_PREFIX = "whatsapp:"


def is_whatsapp_address(raw: str | None) -> bool:
    """A number written as Twilio writes a WhatsApp sender: "whatsapp:+447700900123"."""
    return (raw or "").strip().lower().startswith(WHATSAPP_PREFIX)


def channel_for(raw_phone: str | None, channel: str | None) -> str | None:
    """The channel `channel` (checked) a number given as `raw_phone` is to be reached on: a
    "whatsapp:" number with no channel given is WhatsApp's, and with channel sms is refused
    (InvalidField "channel": which one was meant is not for the bot to guess). None: no
    channel given and nothing to go by (the caller's default or the patient's own stands)."""
    prefixed = is_whatsapp_address(raw_phone)
    if channel is None:
        return "whatsapp" if prefixed else None
    value = check_channel(channel)
    if prefixed and value != "whatsapp":
        raise InvalidField("channel", f"is {value}, but the number was given as a WhatsApp "
                                      "address (whatsapp:...): give channel whatsapp, or the "
                                      "number without whatsapp:")
    return value


def phone_examples(region: str | None) -> str:
    """How to write a number: "in international form (e.g. +44 7700 900123)", and with a
    region, as dialled there too: "(e.g. 07400 123456, or +44 7400 123456)"."""
    example = region and phonenumbers.example_number_for_type(
        region, phonenumbers.PhoneNumberType.MOBILE)
    if not example:
        return "in international form (e.g. +44 7700 900123)"
    national = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.NATIONAL)
    international = phonenumbers.format_number(
        example, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    return f"(e.g. {national}, or {international})"


def phone_region(settings) -> str | None:
    """The country in which coordinators' numbers without a country code are read:
    defaults.country, else the country of clinic.phone (None if that is no one country's)."""
    if settings.defaults.country:
        return settings.defaults.country
    region = phonenumbers.region_code_for_number(phonenumbers.parse(settings.clinic.phone))
    return region if region in phonenumbers.SUPPORTED_REGIONS else None


# Files in the zone database that are not zones a person lives in: the host's own zone
# (a symlink to /etc/localtime on Debian), the POSIX rules template, and tzdata's "Factory".
_NOT_ZONES = frozenset({"localtime", "posixrules", "Factory"})
# Names of UTC itself and of the UK's clock (BST is no zone at all): a patient given one of
# these is most likely where the clinic is.
_UTC_NAMES = frozenset({"gmt", "utc", "uct", "bst", "z", "zulu", "greenwich", "universal", "gmt0",
                        "gmt+0", "gmt-0"})
_FALLBACK_ZONE = "Europe/London"
# Abbreviations and old single-word names whose place is obvious.
_LIKELY_ZONE = {
    "gb": "Europe/London", "gb-eire": "Europe/London", "eire": "Europe/Dublin",
    "portugal": "Europe/Lisbon", "wet": "Europe/Lisbon", "west": "Europe/Lisbon",
    "poland": "Europe/Warsaw",
    "est": "America/New_York", "edt": "America/New_York", "est5edt": "America/New_York",
    "cst": "America/Chicago", "cdt": "America/Chicago", "cst6cdt": "America/Chicago",
    "mst": "America/Denver", "mdt": "America/Denver", "mst7mdt": "America/Denver",
    "pst": "America/Los_Angeles", "pdt": "America/Los_Angeles",
    "pst8pdt": "America/Los_Angeles", "hst": "Pacific/Honolulu", "japan": "Asia/Tokyo",
    "singapore": "Asia/Singapore", "hongkong": "Asia/Hong_Kong", "nz": "Pacific/Auckland",
}


@cache
def known_timezones() -> frozenset[str]:
    """The IANA zone names this host can load (read once per process: it walks the disk)."""
    return frozenset(available_timezones()) - _NOT_ZONES


def _is_place(zone: str) -> bool:
    """An Area/Location name (Europe/London, America/Argentina/Salta): a place, whose clock
    follows its summer time. Not a fixed offset or an abbreviation (GMT, UTC, EST, Etc/GMT+1,
    CET), whose clock never changes, nor an old single-word alias (GB, Japan)."""
    return "/" in zone and not zone.startswith("Etc/")


@cache
def _lower_names() -> frozenset[str]:
    return frozenset(z.lower() for z in known_timezones())


@cache
def _places_by_lower_name() -> dict[str, str]:
    return {z.lower(): z for z in known_timezones() if _is_place(z)}


def _likely_zone(zone: str, default_zone: str | None) -> str | None:
    """The place a fixed-offset or abbreviated zone name most likely stands for, if obvious."""
    key = zone.strip().lower().removeprefix("etc/")
    if key in _UTC_NAMES:
        # The clinic's own zone when its clock is on UTC in winter (as the UK's is).
        if default_zone in known_timezones() and _is_place(default_zone):
            winter = datetime(2026, 1, 15, 12, tzinfo=UTC).astimezone(ZoneInfo(default_zone))
            if winter.utcoffset() == timedelta(0):
                return default_zone
        return _FALLBACK_ZONE
    return _LIKELY_ZONE.get(key)


def check_timezone(zone: str, default_zone: str | None = None) -> str:
    """The IANA Area/Location zone `zone` names (case aside: "europe/london" gives
    Europe/London), else InvalidField("timezone").

    Checked against the list of zones rather than by loading it: ZoneInfo("Europe") raises
    IsADirectoryError, an over-long name OSError, and "localtime" loads the host's own zone.
    A fixed offset or abbreviation (GMT, UTC, EST, Etc/GMT+1) loads, but never changes for
    summer time: a UK patient on GMT would get every message an hour off all summer. It is
    refused with the likely place (`default_zone`, the clinic's, for GMT, UTC and BST).
    """
    if isinstance(zone, str):
        place = _places_by_lower_name().get(zone.strip().lower())
        if place is not None:
            return place
        likely = _likely_zone(zone, default_zone)
        is_zone = zone.strip().lower() in _lower_names()
        if likely is not None or is_zone:
            hint = (f": did you mean {likely}?" if likely else
                    f", e.g. {default_zone or _FALLBACK_ZONE}")
            raise InvalidField("timezone", f"{zone.strip()!r} is not an Area/Location zone "
                               "name: a fixed offset or abbreviation (GMT, UTC, EST) does not "
                               "change for summer time. Use the zone where the patient "
                               f"lives{hint}")
    shown = zone if not isinstance(zone, str) or len(zone) <= 60 else zone[:57] + "..."
    raise InvalidField("timezone", f"unknown timezone {shown!r}")


def check_channel(channel: str) -> str:
    value = channel.strip().lower() if isinstance(channel, str) else channel
    if value not in CHANNELS:
        raise InvalidField("channel", f"must be one of {', '.join(CHANNELS)}")
    return value


def check_language(language: str, languages: list[str]) -> str:
    by_lower = {lang.lower(): lang for lang in languages}
    value = by_lower.get(language.strip().lower()) if isinstance(language, str) else None
    if value is None:
        raise InvalidField("language", f"must be one of {', '.join(languages)}")
    return value


def check_name(name: str) -> str:
    value = (name or "").strip()
    if not value or len(value) > 80:
        raise InvalidField("name", "must be 1 to 80 characters")
    # A terminal escape or a line break in a name would rewrite the CLI's listings.
    return check_text("name", value)


# Invisible characters that change how the text around them shows, or hide in it: the
# bidirectional embeddings, overrides and isolates (U+202A to U+202E, U+2066 to U+2069: "Ada
# \u202eecalevoL" shows as "Ada Lovelace" reversed in an alert, an SMS, a list or a terminal),
# zero-width space, word joiner and the invisible operators, and the BOM (U+FEFF). A name
# with one looks like another name and is not found by it. Zero-width (non-)joiners (U+200C,
# U+200D) are left: some scripts' words and emoji need them; so are the left-to-right and
# right-to-left marks (U+200E, U+200F), which change no letter's order, only where
# punctuation goes.
INVISIBLE = frozenset("\u200b\u2060\u2061\u2062\u2063\u2064\ufeff"
                      "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def check_text(key: str, value: str, multiline: bool = False,
               invisible_ok: bool = False) -> str:
    """Refuse what no database should store: lone surrogates (which cannot be encoded),
    NUL (which PostgreSQL refuses) and other control characters; newlines and tabs only in a
    `multiline` field (a note, a reminder, a text message). And, in what staff type (unless
    `invisible_ok`: a patient's own words, as the simulator sends them), the INVISIBLE
    characters, refused rather than dropped so that what is stored is what was meant."""
    allowed = "\n\r\t" if multiline else ""
    for ch in value:
        category = unicodedata.category(ch)
        if category == "Cs":
            raise InvalidField(key, "contains a lone surrogate (not valid Unicode text)")
        if category == "Cc" and ch not in allowed:
            raise InvalidField(key, f"contains a control character (U+{ord(ch):04X})")
        if ch in INVISIBLE and not invisible_ok:
            raise InvalidField(key, f"contains an invisible character (U+{ord(ch):04X}) that "
                                    "changes or hides how the text shows: type it again "
                                    "rather than pasting it")
    return value


def check_patient_number(phone: str, care_team_phones: Collection[str] = ()) -> str:
    """`phone` (E.164) if a patient can be texted on it: not a care-team contact's number
    (their texts are alerts and ACKs, never a patient's) and not a landline."""
    if phone in care_team_phones:
        raise InvalidField("phone", f"{phone} is a care-team contact's number "
                                    "(care_team.contacts): it cannot be a patient's")
    parsed = phonenumbers.parse(phone)
    # FIXED_LINE only: FIXED_LINE_OR_MOBILE (the US, Canada, ...) may well take texts.
    if phonenumbers.number_type(parsed) == phonenumbers.PhoneNumberType.FIXED_LINE:
        raise InvalidField("phone", f"{phone} is a landline (fixed line): it cannot receive "
                                    "text messages; enrol the patient's mobile number")
    # A number in no known range (Ofcom's drama range 07700 900xxx, see normalise_phone) must
    # at least be as long as a mobile there: "07700 90012", a digit short, is a possible UK
    # number (some landlines have 9 digits) but no one's mobile, and the welcome would be lost.
    if not phonenumbers.is_valid_number(parsed) and not phonenumbers.is_possible_number_for_type(
            parsed, phonenumbers.PhoneNumberType.MOBILE):
        raise InvalidField("phone", f"{phone} has the wrong number of digits for a mobile "
                                    "number in its country: check it")
    return phone


@dataclass(frozen=True)
class Enrolment:
    phone: str
    name: str
    timezone: str
    # None: WhatsApp for a number given as "whatsapp:+44...", else SMS (channel_for).
    channel: str | None = "sms"
    language: str = "en"


def validate_enrolment(e: Enrolment, languages: list[str], *, default_zone: str | None = None,
                       care_team_phones: Collection[str] = (),
                       region: str | None = None) -> Enrolment:
    """Normalise and check every field; raise InvalidField naming the first bad one. `region`:
    where a number without its country code is read (see phone_region)."""
    phone = check_patient_number(normalise_phone(e.phone, region), care_team_phones)
    name = check_name(e.name)
    channel = channel_for(e.phone, e.channel) or "sms"
    language = check_language(e.language, languages)
    return Enrolment(phone, name, check_timezone(e.timezone, default_zone), channel, language)


def find_patient(session: Session, phone: str) -> Patient | None:
    return session.scalars(select(Patient).where(Patient.phone == phone)).first()


def enrol_patient(
    session: Session, e: Enrolment, *, languages: list[str], now: datetime, actor: str,
    default_zone: str | None = None, care_team_phones: Collection[str] = (),
    region: str | None = None,
) -> Patient:
    """Create a patient (status active, not yet consented). Raises InvalidField."""
    e = validate_enrolment(e, languages, default_zone=default_zone,
                           care_team_phones=care_team_phones, region=region)
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
    from bot.services.escalations import link_number_to_patient

    # A red flag the number texted before it was enrolled, not resolved yet, is this patient's.
    link_number_to_patient(session, patient, now, actor)
    return patient


def list_patients(session: Session, after_id: int | None = None,
                  limit: int | None = None) -> list[Patient]:
    """Patients by id; a page of them: those after `after_id`, at most `limit`."""
    query = select(Patient).order_by(Patient.id).limit(limit)
    if after_id is not None:
        query = query.where(Patient.id > after_id)
    return list(session.scalars(query))


def onboard_patient(session: Session, ctx, e: Enrolment, now: datetime, actor: str,
                    respect_quiet_hours: bool = True) -> tuple[Patient, list[int]]:
    """Enrol and start the welcome (consent) flow. Returns the patient and outbox ids.

    The welcome is a routine message: enrolled at 11 p.m., the patient hears from us at the end
    of their quiet hours (the simulator, where someone is waiting at the screen, says so).
    """
    from bot.services import conversations

    settings = ctx.settings
    patient = enrol_patient(session, e, languages=settings.languages, now=now, actor=actor,
                            default_zone=settings.defaults.timezone,
                            care_team_phones=care_team_phones(settings),
                            region=phone_region(settings))
    if patient.status == "opted_out":  # the number said STOP: no welcome until START
        return patient, []
    ids = conversations.start_flow(session, ctx, patient, "welcome", now,
                                   routine=respect_quiet_hours)
    return patient, ids


def care_team_phones(settings) -> frozenset[str]:
    """The care-team contacts' numbers (E.164, as the config stores them)."""
    return frozenset(c.phone for c in settings.care_team.contacts)


# -- correcting a patient's details ----------------------------------------------------------


class StatusRefused(Exception):
    """A status change the coordinator may not make (the patient opted out, or was
    discharged)."""


@dataclass(frozen=True)
class PatientChanges:
    """What to change; None leaves a field as it is."""

    phone: str | None = None
    name: str | None = None
    timezone: str | None = None
    channel: str | None = None
    language: str | None = None
    status: str | None = None  # "paused" or "active" (SETTABLE_STATUSES)

    def empty(self) -> bool:
        return all(v is None for v in (self.phone, self.name, self.timezone, self.channel,
                                       self.language, self.status))


@dataclass
class PatientUpdate:
    """What update_patient did: each changed field as (old, new); the schedules whose next
    time moved with a new zone, and the messages held for quiet hours re-timed to it, as (id,
    old time, new time); the outbox ids of unsent messages re-addressed to a new number."""

    patient: Patient
    changes: dict[str, tuple[str, str]] = field(default_factory=dict)
    moved: list[tuple[int, datetime, datetime]] = field(default_factory=list)
    retimed: list[tuple[int, datetime, datetime]] = field(default_factory=list)
    readdressed: list[int] = field(default_factory=list)
    # For the coordinator: a new zone in a country with no emergency number configured
    # (bot.services.context.emergency_number_warning); a new number of another country than
    # the clinic's zone the patient is left on (number_zone_warning).
    warnings: list[str] = field(default_factory=list)


def update_patient(session: Session, patient: Patient, changes: PatientChanges, *,
                   ctx, now: datetime, actor: str) -> PatientUpdate:
    """Correct a patient's details, checked as at enrolment. Raises InvalidField (a bad field,
    a number another patient has, or nothing to change) and StatusRefused (pausing or resuming
    a patient who opted out).

    Status "active" on a discharged patient re-admits them, audited as `patient.readmit`
    (with any other change made with it); their schedules stay stopped: the coordinator sets
    new ones. "paused" on a discharged patient is refused (StatusRefused).

    Audited as `patient.update` with each field's old and new value. A new zone moves the
    patient's active schedules' next times (stored in UTC) to the same local day and time in
    the new zone, and re-times routine messages held for quiet hours to the new zone's.

    A new number (see _change_number): unsent messages go to it, and a "number invalid" mark
    (Twilio 21211, about the old number) is cleared. The patient's status otherwise stays: a
    STOP was the patient's wish, whatever their number."""
    if changes.empty():
        raise InvalidField("body", "nothing to change: give phone, name, timezone, channel, "
                                   "language or a status (pause, resume)")
    settings = ctx.settings
    # Locked and read afresh (PostgreSQL): a STOP committed since the caller loaded the row
    # must be seen here, not overwritten with a status worked out from the stale copy.
    patient = session.get(Patient, patient.id, with_for_update=True, populate_existing=True)
    wanted: dict[str, str] = {}
    if changes.phone is not None:
        wanted["phone"] = check_patient_number(
            normalise_phone(changes.phone, phone_region(settings)), care_team_phones(settings))
        if wanted["phone"] != patient.phone and find_patient(session, wanted["phone"]):
            raise InvalidField("phone", "a patient with this number is already enrolled")
    if changes.name is not None:
        wanted["name"] = check_name(changes.name)
    if changes.timezone is not None:
        wanted["timezone"] = check_timezone(changes.timezone, settings.defaults.timezone)
    channel = channel_for(changes.phone, changes.channel)  # a "whatsapp:" number: WhatsApp
    if channel is not None:
        wanted["channel"] = channel
    if changes.language is not None:
        wanted["language"] = check_language(changes.language, settings.languages)
    if changes.status is not None:
        if changes.status not in SETTABLE_STATUSES:
            raise InvalidField("status", f"must be one of {', '.join(SETTABLE_STATUSES)}")
        if patient.status == "opted_out":
            raise StatusRefused(
                f"{patient.phone} opted out (texted STOP): their status stays opted_out; only "
                "the patient can opt back in, by texting START")
        if patient.status == DISCHARGED and changes.status == "paused":
            raise StatusRefused(_DISCHARGED_REFUSAL.format(phone=patient.phone))
        wanted["status"] = changes.status
    result = PatientUpdate(patient)
    extra: dict = {}
    if wanted.get("phone", patient.phone) != patient.phone:
        extra = _change_number(session, ctx, patient, wanted["phone"], result, now, actor)
        if extra.get("opted_out_by_number"):
            wanted.pop("status", None)  # the new number's STOP stands: no pause or resume
    wanted.pop("phone", None)
    for key, new in wanted.items():
        old = getattr(patient, key)
        if old != new:
            result.changes[key] = (old, new)
            setattr(patient, key, new)
    if result.changes.get("status", (None, None))[1] == "paused":
        from bot.services.conversations import interrupt_unsent

        # What was written for them and not sent (held for quiet hours) is not sent now.
        stopped = interrupt_unsent(session, patient.id, now, reason="patient paused")
        if stopped:
            extra["conversations_interrupted"] = stopped
    if "timezone" in result.changes:
        old_zone, new_zone = result.changes["timezone"]
        result.moved = _move_schedules(session, patient, old_zone, new_zone, now)
        result.retimed = _retime_held(session, patient, old_zone, new_zone,
                                      settings.quiet_hours, now)
        from bot.services.context import emergency_number_warning

        warning = emergency_number_warning(settings, new_zone)
        if warning:
            result.warnings.append(warning)
    if ("phone" in result.changes and changes.timezone is None
            and patient.timezone == settings.defaults.timezone):
        from bot.services.context import number_zone_warning

        # A new number of another country, the zone left as the clinic's: as at enrolment,
        # the patient may live there (a zone given with it is taken as meant).
        abroad = number_zone_warning(patient.phone, patient.timezone)
        if abroad:
            result.warnings.append(abroad)
    if result.changes:
        details = {key: {"from": old, "to": new} for key, (old, new) in result.changes.items()}
        if result.moved:
            extra["schedules"] = [{"id": i, "from": a.isoformat(), "to": b.isoformat()}
                                  for i, a, b in result.moved]
        if result.retimed:
            extra["held_retimed"] = [{"id": i, "from": a.isoformat(), "to": b.isoformat()}
                                     for i, a, b in result.retimed]
        # Discharged -> active is a re-admission: its own action, so that the discharge it
        # ends can be found (current_discharge). The schedules stay stopped.
        readmitted = result.changes.get("status") == (DISCHARGED, "active")
        if readmitted:
            patient.discharged_at = None
        audit(session, now, actor, "patient.readmit" if readmitted else "patient.update",
              "patient", patient.id, changes=details, **extra)
        session.flush()
    return result


def _change_number(session: Session, ctx, patient: Patient, new: str, result: PatientUpdate,
                   now: datetime, actor: str) -> dict:
    """What a new number changes beyond the patient row; returns the audit details to add.

    - The number is written first, in a savepoint: another patient enrolled with it meanwhile
      (the unique index) is refused as the check before would have.
    - Messages written but not sent (outbox rows pending) go to the new number; a row being
      sent ("sending") is left to its send. The rows are locked (PostgreSQL), so a dispatcher
      claiming one at the same moment either sends it before this (not re-addressed) or after,
      to the new number.
    - Alerts not yet sent about the patient's open escalations name the new number for the
      team to call back (later alerts of the chain are written with it).
    - A number marked invalid (Twilio 21211 at a send, dispatcher._record_failure) was the old
      number: the mark is cleared, so routine messages and schedules go to the new one.
    - Escalations the new number opened while it was not enrolled, not resolved yet, become
      the patient's, as at enrolment (escalations.link_number_to_patient).
    - A new number that texted STOP before (while not enrolled) opts the patient out, as it
      would at enrolment. A patient who opted out stays so: that was their own wish.
    - The WhatsApp 24-hour window needs nothing here: the dispatcher decides it from messages
      received from the address it sends to (outbox.heard_on_whatsapp), so the old number's
      messages do not open it for the new one.
    """
    old = patient.phone
    try:
        with session.begin_nested():  # (which first flushes what was pending before)
            patient.phone = new
            session.flush()
    except IntegrityError:
        if session.scalar(select(Patient.id).where(Patient.phone == new)) is None:
            raise
        raise InvalidField("phone", "a patient with this number is already enrolled") from None
    result.changes["phone"] = (old, new)
    extra: dict = {}
    for item in session.scalars(
            select(OutboxItem).where(OutboxItem.patient_id == patient.id,
                                     OutboxItem.status == "pending", OutboxItem.to == old)
            .order_by(OutboxItem.id).with_for_update()):
        item.to = new
        message = session.get(Message, item.message_id)
        message.address, message.updated_at = new, now
        result.readdressed.append(item.id)
    if result.readdressed:
        extra["outbox_readdressed"] = result.readdressed
    from bot.services.escalations import alert_body

    alerts = session.execute(
        select(Message, Escalation).join(OutboxItem, OutboxItem.message_id == Message.id)
        .join(Escalation, Escalation.id == Message.escalation_id)
        .where(Escalation.patient_id == patient.id, Escalation.status == "open",
               Message.kind == "alert", OutboxItem.status == "pending")
        .with_for_update(of=OutboxItem)).all()
    for message, esc in alerts:
        if message.body and old in message.body:
            # Written again, not edited: a longer number must not push it past 2 segments.
            message.body, message.updated_at = alert_body(session, ctx, esc, message.id), now
            if message.channel == "sms":
                message.segments = gsm7.segments(message.body)
    from bot.services.escalations import link_number_to_patient

    # A red flag the new number texted before it was the patient's, not resolved yet, is theirs.
    linked = link_number_to_patient(session, patient, now, actor)
    if linked:
        extra["escalations_linked"] = linked
    if patient.number_invalid_at is not None:
        extra["number_invalid_cleared"] = patient.number_invalid_at.isoformat()
        patient.number_invalid_at = None
    from bot.services.inbound import number_opted_out

    if patient.status != "opted_out" and number_opted_out(session, new):
        from bot.services.conversations import interrupt_active

        result.changes["status"] = (patient.status, "opted_out")
        patient.status = "opted_out"
        interrupt_active(session, patient.id, now, reason="opted out")
        extra["opted_out_by_number"] = True
    return extra


def _retime_held(session: Session, patient: Patient, old_zone: str, new_zone: str, quiet,
                 now: datetime) -> list[tuple[int, datetime, datetime]]:
    """Routine messages of the patient held for quiet hours in the old zone wait for the new
    zone's end of quiet hours instead (now, if it is not quiet there now).

    A hold is what the dispatcher writes when it claims a routine row in quiet hours: pending,
    with next_attempt_at at the end of quiet hours in the patient's zone (its `end` time to
    the second). The dispatcher checks quiet hours again when it claims the row, so a hold
    that would end too early is only deferred again; but one that ends later than the new
    zone's would send the message hours late. Replies, emergencies and alerts are never held
    (not routine); a routine row waiting out a retry (another time) is left alone."""
    end = parse_hhmm(quiet.end)
    if parse_hhmm(quiet.start) == end:  # no quiet hours
        return []
    old_tz = ZoneInfo(old_zone)
    new_time = quiet_hours_end(now, new_zone, quiet.start, quiet.end)
    retimed = []
    for item in session.scalars(
            select(OutboxItem).where(OutboxItem.patient_id == patient.id,
                                     OutboxItem.status == "pending",
                                     OutboxItem.routine.is_(True),
                                     OutboxItem.next_attempt_at > now)
            .order_by(OutboxItem.id).with_for_update()):
        held_until = item.next_attempt_at
        if held_until.astimezone(old_tz).time() != end:
            continue
        if new_time != held_until:
            retimed.append((item.id, held_until, new_time))
            item.next_attempt_at = new_time
    return retimed


def _move_schedules(session: Session, patient: Patient, old_zone: str, new_zone: str,
                    now: datetime) -> list[tuple[int, datetime, datetime]]:
    """Next times are stored in UTC, computed from the patient's zone: keep each active
    schedule's next occurrence on the same local day at its local time, in the new zone. One
    that would then already have passed comes at its local time on the next day instead (a
    zone change is not a reason to send at another hour)."""
    moved = []
    for sched in session.scalars(select(Schedule).where(
            Schedule.patient_id == patient.id, Schedule.active.is_(True))
            .order_by(Schedule.id)):
        # The slot the next time stands for (a deferred one is after its slot).
        slot = previous_occurrence(sched.next_due_at, old_zone, sched.local_time)
        day = slot.astimezone(ZoneInfo(old_zone)).date()
        tz = ZoneInfo(new_zone)
        new = datetime.combine(day, parse_hhmm(sched.local_time), tzinfo=tz).astimezone(UTC)
        if new <= now:
            new = next_occurrence(now, new_zone, sched.local_time, 1)
        if new != sched.next_due_at:
            moved.append((sched.id, sched.next_due_at, new))
            sched.next_due_at = new
    return moved


# -- discharge: the end of a patient's check-ins ---------------------------------------------

_DISCHARGED_REFUSAL = (
    "{phone} was discharged: their check-ins have ended, so they cannot be paused or "
    "resumed. Re-admit them instead (their old schedules stay stopped: set new ones)")


class AlreadyDischarged(Exception):
    """The patient was discharged before (and not re-admitted since)."""


def check_reason(reason: object) -> str:
    """Why a patient's check-ins end (discharged, transferred, hospice care, died): 1 to
    REASON_CHARS printable characters, spaces and line breaks folded into single spaces."""
    value = " ".join(reason.split()) if isinstance(reason, str) else ""
    if not value or len(value) > REASON_CHARS:
        raise InvalidField("reason", f"must be 1 to {REASON_CHARS} characters: why the "
                                     "check-ins end (e.g. discharged, transferred, hospice)")
    if not value.isprintable():
        raise InvalidField("reason", "must not contain control characters")
    return value


def is_discharged(patient: Patient) -> bool:
    """Discharged and not re-admitted since: status discharged, or opted out (STOP) since
    being discharged (their wish wins; START brings them back to discharged, not active)."""
    return patient.status == DISCHARGED or patient.discharged_at is not None


def current_discharge(session: Session, patient_id: int) -> AuditLog | None:
    """The `patient.discharge` record (reason, who, when: for the dashboard) of a patient
    discharged and not re-admitted since, else None."""
    last = session.scalars(
        select(AuditLog).where(AuditLog.subject_type == "patient",
                               AuditLog.subject_id == str(patient_id),
                               AuditLog.action.in_(("patient.discharge", "patient.readmit")))
        .order_by(AuditLog.id.desc()).limit(1)).first()
    return last if last is not None and last.action == "patient.discharge" else None


def refuse_resume(patient: Patient) -> None:
    """A "resume" (CLI --resume, the dashboard's button) is no re-admission: StatusRefused for
    a discharged patient. (update_patient's status "active" re-admits: the API's and the
    explicit re-admit actions.)"""
    if patient.status == DISCHARGED:
        raise StatusRefused(_DISCHARGED_REFUSAL.format(phone=patient.phone))


@dataclass
class DischargeResult:
    patient: Patient
    reason: str
    previous: str
    schedules: list[int] = field(default_factory=list)
    conversations: list[int] = field(default_factory=list)
    cancelled: list[int] = field(default_factory=list)  # message ids


def discharge_patient(session: Session, patient: Patient, reason: str, *, now: datetime,
                      actor: str) -> DischargeResult:
    """End a patient's check-ins (discharged, transferred, hospice care, died), in the caller's
    transaction. Raises InvalidField("reason") and AlreadyDischarged.

    - status "discharged"; a patient who opted out stays opted_out (they asked for nothing)
      and is discharged all the same (START later brings them back to discharged);
    - every active schedule stopped (`schedule.remove`, as a coordinator removing it);
    - open conversations interrupted, and what they wrote and has not gone cancelled;
    - every other routine message not sent yet cancelled (one being sent is left to go);
    - audited `patient.discharge` with the reason and what was stopped.

    What stays: texts from them are recorded, a red flag gets its instruction and alerts the
    care team as for anyone, and open escalations stay open (bot.services.inbound)."""
    from bot.services.conversations import OPEN, _cancel_rows, interrupt_active

    reason = check_reason(reason)
    # Locked (PostgreSQL): a STOP or a second discharge at the same moment waits for this.
    patient = session.get(Patient, patient.id, with_for_update=True, populate_existing=True)
    if is_discharged(patient):
        raise AlreadyDischarged(f"{patient.phone} (id {patient.id}) is already discharged")
    result = DischargeResult(patient, reason, patient.status)
    if patient.status != "opted_out":
        patient.status = DISCHARGED
    patient.discharged_at = now
    for sched in session.scalars(select(Schedule).where(
            Schedule.patient_id == patient.id, Schedule.active.is_(True))
            .order_by(Schedule.id).with_for_update()):
        sched.active = False
        result.schedules.append(sched.id)
        audit(session, now, actor, "schedule.remove", "schedule", sched.id,
              patient_id=patient.id, flow=sched.flow_id, reason="patient discharged")
    result.conversations = list(session.scalars(select(Conversation.id).where(
        Conversation.patient_id == patient.id, Conversation.status.in_(OPEN))
        .order_by(Conversation.id)))
    # What those conversations wrote and has not gone: interrupt_active cancels it.
    unsent = list(session.scalars(select(Message.id).join(
        OutboxItem, OutboxItem.message_id == Message.id).where(
        Message.conversation_id.in_(result.conversations), OutboxItem.status == "pending")))
    interrupt_active(session, patient.id, now, reason="discharged")
    session.flush()
    routine = list(session.scalars(select(OutboxItem).where(
        OutboxItem.patient_id == patient.id, OutboxItem.status == "pending",
        OutboxItem.routine.is_(True)).order_by(OutboxItem.id).with_for_update()))
    _cancel_rows(session, routine, now, "patient discharged")
    result.cancelled = sorted(set(unsent) | {item.message_id for item in routine})
    audit(session, now, actor, "patient.discharge", "patient", patient.id, reason=reason,
          previous=result.previous, schedules_stopped=len(result.schedules),
          schedule_ids=result.schedules, conversations_interrupted=len(result.conversations),
          messages_cancelled=len(result.cancelled))
    session.flush()
    return result
