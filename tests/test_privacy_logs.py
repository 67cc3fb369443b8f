"""Privacy: no phone number or message body reaches the logs at INFO or above, on the whole
path a patient's texts take (signed webhook, triage, red flag, alert chain, ACK by phone,
status callbacks, STOP, a text after STOP, a number that is not enrolled)."""

from __future__ import annotations

import logging

from sqlalchemy import select

from bot.scheduler import tick
from bot.store.models import Message
from tests.test_red_flags_e2e import PHONE, chain_phones, enrol, escalation, texted
from tests.test_webhooks import STATUS, post
from tests.twilio_support import (  # noqa: F401 - fixtures
    fake_http,
    messenger,
    sent_to,
    settings_overrides,
)

STRANGER = "+447700900555"  # not enrolled
# Words a patient might type that appear in no log line on their own (red flag and all).
RED_FLAG = "Zanzibar: my legs gave way this morning and I wet myself, quixotic"
QUESTION = "Marmalade question: what if my legs go numb later?"


def logged(caplog, level=logging.INFO) -> str:
    """Every record at `level` or above, message and traceback both, as one text."""
    lines = []
    for r in caplog.records:
        if r.levelno >= level:
            lines.append(r.getMessage())
            if r.exc_text:
                lines.append(r.exc_text)
    return "\n".join(lines)


def assert_private(text: str, phones: list[str], bodies: list[str], words: list[str]) -> None:
    """No number in any form (E.164, digits only, national, grouped), no body whole or in
    part (its first 30 characters), and none of `words` (ones no log line has of its own)."""
    for phone in phones:
        digits = phone.removeprefix("+")
        national = "0" + digits.removeprefix("44")
        for form in (phone, digits, national, f"{national[:5]} {national[5:]}"):
            assert form not in text, f"{form!r} logged"
    for body in bodies:
        assert body[:30] not in text, f"{body[:30]!r} logged"
    for word in words:
        assert word.lower() not in text.lower(), f"{word!r} logged"


def test_a_conversation_with_a_red_flag_and_stop_logs_no_number_or_words(
        client, rt, fake_http, clock, caplog):
    caplog.set_level(logging.INFO)
    enrol(rt)
    oncall = chain_phones(rt)[0]
    texted(client, "CHECKIN")
    texted(client, "2")
    texted(client, QUESTION)  # not an answer: the safety net
    texted(client, RED_FLAG)
    clock.advance(minutes=16)
    tick(rt)  # nobody acknowledged: the next contact is alerted
    texted(client, f"ACK {escalation(rt).ref}", sender=oncall)
    texted(client, "Help: my feet are tingling, flapjack", sender=STRANGER)
    with rt.transaction() as s:
        provider_ids = s.scalars(select(Message.provider_id).where(
            Message.direction == "out", Message.provider_id.is_not(None))).all()
    for provider_id in provider_ids[:3]:
        post(client, STATUS, {"MessageSid": provider_id, "MessageStatus": "undelivered",
                              "ErrorCode": "30003", "To": PHONE})
    texted(client, "STOP")
    texted(client, "Please Quetzalcoatl, are you there?")  # after STOP
    clock.advance(days=8)
    tick(rt)

    sent = [r.data["Body"] for r in fake_http.requests if r.data.get("Body")]
    assert sent_to(fake_http, PHONE) and sent_to(fake_http, oncall)  # it all happened
    text = logged(caplog)
    assert "escalation" in text  # the logs did speak of it
    assert_private(text, [PHONE, STRANGER, oncall], [RED_FLAG, QUESTION, *sent],
                   ["Zanzibar", "quixotic", "Marmalade", "flapjack", "tingling", "Quetzalcoatl"])
