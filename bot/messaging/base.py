"""The Messenger port: how the bot hands a message to a carrier (Twilio, or the dev simulator)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class OutgoingMessage:
    """One message to send. Either `body` (free text) or `content_sid` (WhatsApp template)."""

    to: str  # E.164, e.g. "+447700900123" (no "whatsapp:" prefix: the adapter adds it)
    channel: str  # "sms" | "whatsapp" | "voice" (body: the call's TwiML, see Messenger.call)
    body: str | None = None
    content_sid: str | None = None
    content_variables: dict[str, str] = field(default_factory=dict)
    status_callback: str | None = None


@dataclass(frozen=True)
class SendResult:
    """What the carrier said when it accepted the message."""

    provider_id: str
    status: str  # carrier status on acceptance, e.g. "queued", "accepted", "sent"
    segments: int | None = None


class SendError(Exception):
    """The carrier refused or could not take the message.

    kind is one of:
      "transient"       retry later (429/20429, 5xx, network error, 30003)
      "opted_out"       21610: the recipient has opted out; never retry
      "invalid_number"  21211 (and similar): the To number is invalid; never retry
      "outside_window"  63016: WhatsApp free text outside the 24 h window; resend as template
      "permanent"       anything else that must not be retried blindly

    unclear: the request may have reached the carrier and been taken (a read timeout, a
    connection dropped while waiting for the answer): sending again may send it twice.
    """

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        code: int | None = None,
        http_status: int | None = None,
        retry_after: float | None = None,
        unclear: bool = False,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.code = code
        self.http_status = http_status
        self.retry_after = retry_after
        self.unclear = unclear

    @property
    def retryable(self) -> bool:
        return self.kind == "transient"


class Messenger(Protocol):
    """Anything that can send an OutgoingMessage, and place a phone call."""

    name: str

    def send(self, message: OutgoingMessage) -> SendResult: ...

    def call(self, to: str, twiml: str, status_callback: str | None = None) -> SendResult:
        """Phone `to` (E.164) and play `twiml`; raise SendError as `send` does. The result's
        provider_id is the call's SID."""
        ...
