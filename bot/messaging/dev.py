"""DevMessenger: the local phone simulator's carrier. Prints to the console, keeps a list."""

from __future__ import annotations

import itertools
import threading
import uuid
from xml.etree import ElementTree

from bot.domain import gsm7
from bot.messaging.base import OutgoingMessage, SendResult


class DevMessenger:
    """Accepts every message at once; the simulator page reads them from the database."""

    name = "dev"

    def __init__(self, echo: bool = True) -> None:
        self.echo = echo
        self.sent: list[OutgoingMessage] = []
        self.calls: list[tuple[str, str, str | None]] = []  # (to, twiml, status_callback)
        self._lock = threading.Lock()
        self._counter = itertools.count(1)

    def send(self, message: OutgoingMessage) -> SendResult:
        with self._lock:
            self.sent.append(message)
        if self.echo:
            text = message.body if message.body is not None else f"[template {message.content_sid}]"
            print(f"[dev {message.channel} -> {message.to}] {text}", flush=True)
        segments = gsm7.segments(message.body) if message.body else 1
        return SendResult(provider_id="DEV" + uuid.uuid4().hex, status="delivered",
                          segments=segments)

    def call(self, to: str, twiml: str, status_callback: str | None = None) -> SendResult:
        """Records the call (in `calls`) and prints what it says."""
        with self._lock:
            self.calls.append((to, twiml, status_callback))
        if self.echo:
            print(f"[dev voice -> {to}] {_spoken(twiml)}", flush=True)
        return SendResult(provider_id="DEVCA" + uuid.uuid4().hex, status="sent")


def _spoken(twiml: str) -> str:
    """The words of a call's first <Say>, for the console."""
    try:
        said = ElementTree.fromstring(twiml).find(".//Say")
    except ElementTree.ParseError:
        return twiml
    return (said.text or "") if said is not None else twiml
