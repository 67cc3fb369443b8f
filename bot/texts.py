"""The bot's own texts (config/messages.yaml): urgent-care instruction, alerts, keyword replies."""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import yaml

from bot.config import EMERGENCY_NUMBER_DIGITS, REPO_ROOT

MESSAGES_FILE = REPO_ROOT / "config" / "messages.yaml"
REQUIRED = (
    "emergency", "urgent", "safety_net", "not_enrolled", "help", "stopped", "started",
    "received", "not_received", "aside", "corrected", "awaiting_consent", "alert", "alert_answer", "staff_ack", "staff_already",
    "staff_unknown", "staff_usage", "staff_failed", "staff_which", "staff_none", "alert_unknown", "media_unreadable",
    "blank",
    "after_emergency", "after_urgent",
    "alert_outage", "template_open", "reminder_notice", "alert_escalated", "alert_repeat",
    "alert_unreached", "alert_repeat_unreached",
)
# Longest value each variable may take when checking segment counts at start-up.
VARIABLE_MAX = {
    "name": 20, "clinic_name": 40, "clinic_phone": 16, "hotline": 16,
    "emergency_number": EMERGENCY_NUMBER_DIGITS,
    "crisis_line": 40,  # config: clinic.crisis_line
    "ref": 6, "patient": 30, "patient_phone": 16, "flags": 60, "words": 60, "level": 9, "by": 30,
    "refs": 100, "answer": 110, "reminder_text": 100,  # answer: escalations.ANSWER_CHARS
    "value": 10,  # an answer's number (corrected)
    "contact": 30, "time": 11,  # contact: escalations.NAME_CHARS; time: "03:12 +0530"
    # Checked as absent: escalations.alert_body shortens the words (or the answer) to make
    # room for the note that an alert goes again, and for the link, and counts the segments.
    "resent": 0, "link": 0,
}


class Texts:
    """Message templates by key and language, English as the fallback."""

    def __init__(self, data: dict[str, dict[str, str]], fallback: str = "en") -> None:
        self._data = data
        self.fallback = fallback

    def render(self, key: str, language: str, **values: Any) -> str:
        by_lang = self._data[key]
        template = by_lang.get(language) or by_lang[self.fallback]
        return template.format(**values)

    def problems(self, named: dict[str, str] | None = None,
                 languages: list[str] | None = None) -> list[str]:
        """One line per text that is missing, uses an unknown variable, or is not plain SMS.

        `named`: the texts red flags name as their own replies (Vocabulary.reply_texts: text ->
        flag), each of which must exist in every one of the deployment's `languages`: the
        patient gets it instead of their level's text, with no English fallback to lean on."""
        from bot.domain import gsm7

        out = [f"messages: {k}: missing" for k in REQUIRED if k not in self._data]
        for key, flag in (named or {}).items():
            if key not in self._data:
                out.append(f"messages: {key}: missing (named by red flag {flag})")
                continue
            out += [f"messages: {key}: no {lang!r} text (named by red flag {flag})"
                    for lang in languages or [self.fallback] if lang not in self._data[key]]
        for key, by_lang in self._data.items():
            if self.fallback not in by_lang:
                out.append(f"messages: {key}: no {self.fallback!r} text")
            for lang, text in by_lang.items():
                names = {f for _, f, _, _ in string.Formatter().parse(text) if f}
                unknown = names - VARIABLE_MAX.keys()
                if unknown:
                    out.append(f"messages: {key}.{lang}: unknown variable {sorted(unknown)[0]}")
                    continue
                filled = text.format(**{n: "x" * VARIABLE_MAX[n] for n in names})
                if not gsm7.is_gsm7(filled):
                    out.append(f"messages: {key}.{lang}: not plain GSM-7")
                elif gsm7.segments(filled) > 2:
                    out.append(f"messages: {key}.{lang}: over 2 SMS segments")
        return out


def load_texts(path: Path = MESSAGES_FILE) -> Texts:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return Texts({k: {lang: " ".join(t.split()) for lang, t in v.items()} for k, v in data.items()})
