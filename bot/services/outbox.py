"""The outbox: every message the bot decides to send is a row written with the state change
that caused it. A dispatcher claims rows, sends them through the Messenger, records the outcome,
and retries what failed for a passing reason."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from bot.domain import gsm7
from bot.store.models import Conversation, Message, OutboxItem, Patient

# WhatsApp allows free text only within 24 hours of the person's last WhatsApp message.
WHATSAPP_WINDOW = timedelta(hours=24)
_WHATSAPP_INBOUND_SINCE = (
    select(Message.id)
    .where(Message.address == bindparam("address"), Message.created_at > bindparam("since"),
           Message.direction == "in", Message.channel == "whatsapp")
    .limit(1)
)


def heard_on_whatsapp(session: Session, address: str, now: datetime) -> bool:
    """Whether this number wrote to us on WhatsApp within the window (an SMS from it does not
    count). A range scan on ix_messages_address_created."""
    return session.execute(_WHATSAPP_INBOUND_SINCE, {
        "address": address, "since": now - WHATSAPP_WINDOW}).first() is not None


# What still goes to a patient who has opted out: the answers to STOP, START and HELP, and what
# a red flag calls for (the emergency and urgent instructions, the safety net). Alerts go to
# the care team, not to the patient's phone, and are never held.
SENT_WHEN_OPTED_OUT = frozenset({"stopped", "started", "help", "emergency", "urgent",
                                 "safety_net"})


def sms_copy_since(session: Session, message: Message) -> bool:
    """Whether this text already went (or waits to go) by SMS to this number since `message`
    was written: an emergency refused with 63016 gets its SMS beside the template, and the
    template failing too must not text the person a second time."""
    return session.scalar(select(Message.id).where(
        Message.address == message.address, Message.direction == "out",
        Message.channel == "sms", Message.kind == message.kind,
        Message.created_at >= message.created_at,
        Message.status.not_in(("failed", "undelivered", "cancelled")),
        Message.body == gsm7.to_gsm7(message.body or "")).limit(1)) is not None


# Lower sends first.
PRIORITY_EMERGENCY = 0
PRIORITY_REPLY = 1
PRIORITY_ROUTINE = 5


@dataclass(frozen=True)
class Draft:
    """A message to put in the outbox."""

    to: str
    channel: str
    body: str
    kind: str = "reply"  # reply | emergency | urgent | alert | checkin | reminder | welcome | ...
    priority: int = PRIORITY_REPLY
    routine: bool = False  # routine messages are withheld from opted-out or paused patients
    patient_id: int | None = None
    conversation_id: int | None = None
    escalation_id: int | None = None  # a care-team alert's escalation
    not_before: datetime | None = None  # send no earlier than this (default: as soon as can be)


def enqueue(session: Session, draft: Draft, now: datetime) -> OutboxItem:
    """Add the message and its outbox row to the caller's transaction."""
    body = gsm7.to_gsm7(draft.body) if draft.channel == "sms" else draft.body
    message = Message(
        patient_id=draft.patient_id,
        conversation_id=draft.conversation_id,
        escalation_id=draft.escalation_id,
        direction="out",
        channel=draft.channel,
        address=draft.to,
        body=body,
        kind=draft.kind,
        status="queued",
        segments=gsm7.segments(body) if draft.channel == "sms" else None,
        created_at=now,
        updated_at=now,
    )
    # A transaction that will send what it writes right after commit (the reply path, see
    # Runtime.claim_on_write) writes non-routine rows already claimed: no UPDATE afterwards.
    # Routine rows stay pending: they may be held (opted out, quiet hours) when claimed.
    claim_until = session.info.get("claim_until")
    claimed = claim_until is not None and not draft.routine and draft.not_before is None
    item = OutboxItem(
        message=message,
        patient_id=draft.patient_id,
        to=draft.to,
        channel=draft.channel,
        kind=draft.kind,
        priority=draft.priority,
        routine=draft.routine,
        status="sending" if claimed else "pending",
        attempts=1 if claimed else 0,
        claimed_until=claim_until if claimed else None,
        next_attempt_at=draft.not_before or now,
        created_at=now,
    )
    session.add(item)
    session.flush()  # one flush writes both rows, message first
    # The session's identity map holds objects weakly; keep these alive until commit so the
    # dispatcher can claim them without reading them back (see Dispatcher.claim_new).
    session.info.setdefault("outbox", {})[item.id] = (item, message)
    # And the patient and conversation the dispatcher reads to send it (holds, the WhatsApp
    # window, a conversation closed meanwhile), if this transaction has them: kept alive too,
    # they are read without a query (two round trips a reply).
    kept = session.info.setdefault("outbox_context", [])
    for model, ident in ((Patient, draft.patient_id), (Conversation, draft.conversation_id)):
        if ident is not None:
            loaded = session.identity_map.get(identity_key(model, ident))
            if loaded is not None:
                kept.append(loaded)
    return item
