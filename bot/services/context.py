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


@dataclass
class ServiceContext:
    settings: Settings
    texts: Texts
    clock: Clock
    flows: Any  # bot.domain.flows.FlowLibrary
    vocabulary: Any = None  # bot.domain.triage.Vocabulary, compiled once at start-up

    def patient_values(self, patient) -> dict[str, str]:
        """Variables every patient-facing text may use."""
        return {
            "name": greeting_name(patient.name, patient.language) if patient else "",
            **clinic_values(self.settings),
        }

    def text_for(self, patient, key: str, **extra: Any) -> str:
        language = patient.language if patient else self.settings.defaults.language
        return self.texts.render(key, language, **{**self.patient_values(patient), **extra})
