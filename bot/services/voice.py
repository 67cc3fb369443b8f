"""Phone calls for emergency alerts: what the call says, and what pressing 1 answers.

A care-team contact with `call: true` is phoned with each EMERGENCY alert (see
escalations._alert). The call says no patient name or number: whoever picks up may not be the
contact. The details are in the text alert that goes with it."""

from __future__ import annotations

from urllib.parse import urlencode

from twilio.twiml.voice_response import Gather, VoiceResponse

ACK_PATH = "/webhooks/twilio/voice/ack"
STATUS_PATH = "/webhooks/twilio/voice/status"
ACK_DIGIT = "1"
# The message is said this many times while nothing is pressed, then the call ends.
REPEATS = 2


def spoken_ref(ref: str) -> str:
    """A ref read letter by letter: "A B C D E", not a word."""
    return " ".join(ref)


def ack_url(public_url: str | None, ref: str, contact_id: str) -> str:
    """Where pressing a key on the call goes: Twilio signs this URL, query included."""
    query = urlencode({"esc": ref, "contact": contact_id})
    return f"{public_url or ''}{ACK_PATH}?{query}"


def status_url(public_url: str | None, item_id: int) -> str | None:
    """The call's status callback, naming its outbox row like a message's (see dispatcher)."""
    return f"{public_url}{STATUS_PATH}?outbox={item_id}&via=voice" if public_url else None


def alert_call_twiml(clinic_name: str, ref: str, action: str) -> str:
    """What an emergency alert call says, asking for 1 to acknowledge; said twice if nothing
    is pressed."""
    words = (f"This is {clinic_name}. An emergency red flag needs you. "
             f"Reference {spoken_ref(ref)}. The details are in your text messages. "
             f"Press {ACK_DIGIT} to acknowledge.")
    response = VoiceResponse()
    for _ in range(REPEATS):
        gather = Gather(num_digits=1, action=action, method="POST")
        gather.say(words)
        response.append(gather)
    return str(response)


def say_twiml(words: str) -> str:
    """A call's answer: these words, then the call ends."""
    response = VoiceResponse()
    response.say(words)
    return str(response)


# Twilio's call statuses as message statuses (bot.store.statuses): an answered call counts as
# delivered (it may have been a voicemail); one nobody answered as undelivered.
CALL_STATUSES = {
    "queued": "queued", "initiated": "sent", "ringing": "sent", "in-progress": "delivered",
    "completed": "delivered", "busy": "undelivered", "no-answer": "undelivered",
    "failed": "failed", "canceled": "canceled",
}
