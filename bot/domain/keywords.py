"""The words that opt a patient out, back in, or ask for help, when they are the whole message.

One list for the inbound service (bot/services/inbound.py), which acts on them, and for the flow
validator (bot/domain/flow_lint.py), which keeps flows from using them: a whole-message keyword
never reaches a flow.

The English ones are Twilio's defaults (its Advanced Opt-Out blocks the number on SMS itself).
Twilio does nothing with the Spanish ones, so the bot honours them itself, for every patient
whatever their language (a whole-message BAJA from anyone is an opt-out); the reply is in the
patient's language. Accents are optional ("Bája", "Sí"), and so are the case and the
punctuation around the word ("¡Baja!").
"""

from __future__ import annotations

import re
import unicodedata

STOP_WORDS = frozenset({
    "STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT",
    "BAJA", "PARAR", "DETENER", "CANCELAR",
})
START_WORDS = frozenset({"START", "UNSTOP", "ALTA", "INICIAR", "REANUDAR"})
HELP_WORDS = frozenset({"HELP", "INFO", "AYUDA"})
CARRIER_WORDS = STOP_WORDS | START_WORDS | HELP_WORDS
# YES while opted out opts back in (bot/services/inbound.py); YES and NO are answers.
YES_WORDS = frozenset({"YES", "Y", "SI"})
NO_WORDS = frozenset({"NO", "N"})

_AROUND = re.compile(r"^[\W_]+|[\W_]+$")


def fold(text: str) -> str:
    """Upper case without accents: 'Bája' -> 'BAJA', 'sí' -> 'SI'."""
    decomposed = unicodedata.normalize("NFKD", text or "")
    return "".join(c for c in decomposed if not unicodedata.combining(c)).upper()


def keyword_of(text: str) -> str:
    """The whole message as a keyword: trimmed, upper case, no accents, surrounding
    punctuation dropped ("  ¡Baja! " -> "BAJA")."""
    return _AROUND.sub("", fold(text))


def carrier_command(word: str) -> str | None:
    """"STOP", "START" or "HELP" for a keyword (as keyword_of gives it), else None."""
    for command, words in (("STOP", STOP_WORDS), ("START", START_WORDS), ("HELP", HELP_WORDS)):
        if word in words:
            return command
    return None
