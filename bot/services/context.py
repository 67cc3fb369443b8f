"""What a service needs besides its session: settings, texts, flows, the clock."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import phonenumbers

from bot.clock import Clock
from bot.config import Settings
from bot.domain.names import greeting_name
from bot.texts import Texts


@lru_cache(maxsize=4096)  # the clinic's numbers go into most texts; parse them once
def readable_phone(e164: str) -> str:
    """+442079460999 -> +44 20 7946 0999: easier to read and dial from a text."""
    try:
        return phonenumbers.format_number(phonenumbers.parse(e164, None),
                                          phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    except phonenumbers.NumberParseException:
        return e164


def clinic_values(settings: Settings) -> dict[str, str]:
    """The clinic's variables in patients' texts, as the bot writes them."""
    c = settings.clinic
    return {
        "clinic_name": c.name,
        "clinic_phone": readable_phone(c.phone),
        "hotline": readable_phone(c.acute_oncology_hotline),
        "emergency_number": c.emergency_number,
        "crisis_line": c.crisis_line,
    }


@lru_cache(maxsize=16)
def _clinic_country(country: str | None, phone: str, zone: str) -> str | None:
    from bot.domain.countries import is_country, zone_country

    region = country or phonenumbers.region_code_for_number(phonenumbers.parse(phone))
    return region if region and is_country(region) else zone_country(zone)


def clinic_country(settings: Settings) -> str | None:
    """The clinic's own country, where clinic.emergency_number is dialled: defaults.country,
    else the country of clinic.phone (as for numbers typed without a country code), else that
    of defaults.timezone."""
    return _clinic_country(settings.defaults.country, settings.clinic.phone,
                           settings.defaults.timezone)


def emergency_number_for(settings: Settings, zone: str | None) -> str:
    """The emergency number for a patient who lives in `zone` (their timezone: where they
    live, which their phone's country code may not say): clinic.emergency_number in the
    clinic's own country, else the zone's country's in clinic.emergency_numbers_abroad, and
    clinic.emergency_number for a country that has none there (see emergency_number_warning)."""
    from bot.domain.countries import zone_country

    c = settings.clinic
    country = zone_country(zone) if zone else None
    if country is None or country == clinic_country(settings):
        return c.emergency_number
    return c.emergency_numbers_abroad.get(country, c.emergency_number)


def crisis_line_for(settings: Settings, zone: str | None) -> str:
    """The crisis line for a patient who lives in `zone`: clinic.crisis_line in the clinic's
    own country (or where no other is configured), else the zone's country's in
    clinic.crisis_lines_abroad (a line in the UK is no help to someone in New York)."""
    from bot.domain.countries import zone_country

    c = settings.clinic
    country = zone_country(zone) if zone else None
    if country is None or country == clinic_country(settings):
        return c.crisis_line
    return c.crisis_lines_abroad.get(country, c.crisis_line)


def emergency_number_warning(settings: Settings, zone: str) -> str | None:
    """What to tell a coordinator who enrols a patient in `zone` (or moves them there) when
    no emergency number is configured for its country: the patient's texts will give the
    clinic's, which may not work there. None when the number is configured."""
    from bot.domain.countries import country_name, zone_country

    country = zone_country(zone)
    if country is not None and (country == clinic_country(settings)
                                or country in settings.clinic.emergency_numbers_abroad):
        return None
    told = (f"this patient's texts will say to call {settings.clinic.emergency_number} in an "
            "emergency (clinic.emergency_number, the clinic's)")
    if country is None:  # every Area/Location zone is some country's: not expected
        return f"{zone} is in no one country: {told}; check that it works where they live"
    return (f"{zone} is in {country_name(country)} ({country}), which has no emergency "
            f"number in clinic.emergency_numbers_abroad: {told}, which may not work there. "
            f"Add {country} and the number dialled there to clinic.emergency_numbers_abroad "
            "in the config")


def number_zone_warning(phone: str, zone: str) -> str | None:
    """What to tell a coordinator who enrols a patient on the clinic's zone, `zone`, left as
    it was (the API's default, the dashboard form's first value), with a number (E.164) of
    another country, by country calling code (+44 is the UK's, Jersey's and the Isle of
    Man's alike; +1 all of North America's): if the patient lives where their number is
    from, check-ins come at the wrong hour and the texts give the clinic's emergency number.
    Not refused: a patient may keep a foreign number (and a zone typed is taken as meant: the
    callers ask only of the default). None when they agree, or either country is unknown."""
    from bot.domain.countries import country_name, is_country, zone_country

    parsed = phonenumbers.parse(phone)
    region = phonenumbers.region_code_for_number(parsed)
    country = zone_country(zone)
    if not region or not is_country(region) or country is None:
        return None
    if phonenumbers.country_code_for_region(country) == parsed.country_code:
        return None
    return (f"the timezone was left as the clinic's, {zone}, but the number is a "
            f"{country_name(region)} ({region}) one: if the patient lives there, set their "
            f"timezone to where they live, or check-ins come at {zone}'s times and their texts "
            "give the clinic's emergency number")


@dataclass
class ServiceContext:
    settings: Settings
    texts: Texts
    clock: Clock
    flows: Any  # bot.domain.flows.FlowLibrary
    vocabulary: Any = None  # bot.domain.triage.Vocabulary, compiled once at start-up

    def patient_values(self, patient) -> dict[str, str]:
        """Variables every patient-facing text may use. {emergency_number} and {crisis_line}
        are the ones where the patient lives (emergency_number_for, crisis_line_for); a number
        not enrolled gets the clinic's."""
        values = {
            "name": greeting_name(patient.name, patient.language) if patient else "",
            **clinic_values(self.settings),
        }
        if patient is not None:
            values["emergency_number"] = emergency_number_for(self.settings, patient.timezone)
            values["crisis_line"] = crisis_line_for(self.settings, patient.timezone)
        return values

    def text_for(self, patient, key: str, **extra: Any) -> str:
        language = patient.language if patient else self.settings.defaults.language
        return self.texts.render(key, language, **{**self.patient_values(patient), **extra})
