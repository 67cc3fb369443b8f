"""Texting the bot as a patient through the phone simulator's API (the dev messenger), and
reading what it sent back, for tests that follow one patient's conversation."""

from __future__ import annotations


def texted_from(client, phone: str, *bodies: str) -> None:
    """Each body texted in turn from `phone`, as the simulator sends it."""
    for body in bodies:
        res = client.post("/simulator/api/messages", json={"phone": phone, "body": body})
        assert res.status_code == 201, res.get_json()


def sent_to_phone(messenger, phone: str) -> list[str]:
    """The bodies the dev messenger sent to `phone`, oldest first."""
    return [m.body for m in messenger.sent if m.to == phone]
