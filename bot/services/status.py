"""Delivery status callbacks: stored once per (sid, status); a message's status never goes back."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from bot.config import Settings
from bot.services.audit import audit
from bot.services.context import ServiceContext
from bot.services.escalations import alert_not_delivered
from bot.services.outbox import (
    PRIORITY_EMERGENCY,
    SENT_WHEN_OPTED_OUT,
    Draft,
    enqueue,
    sms_copy_since,
)
from bot.store.models import AuditLog, Message, OutboxItem, Patient, StatusEvent
from bot.store.statuses import FAILED, advance_status

# Reached the phone: delivered is final for SMS; WhatsApp's "read" follows it.
DELIVERED = ("delivered", "read")
OUTSIDE_WINDOW = 63016  # WhatsApp free text outside the 24 h window: an approved template can go
UNREACHABLE = 30003  # the phone is off or out of coverage: worth trying again later
# The number itself can never receive our texts, whatever the channel: 21211 invalid 'To',
# 21614 not a mobile (as when Twilio refuses the send with them, see TwilioMessenger).
NUMBER_INVALID = frozenset({21211, 21614})
# Reported for an SMS: 30005 unknown destination (no such number, or no longer in service),
# 30006 a landline (or a carrier our sender cannot reach). Not for a WhatsApp message: not
# being on WhatsApp (63003, 63024) says nothing of SMS, which the fallback tries. Codes that
# pass (30003 unreachable, 30008 unknown error) or are about the text (30007 filtered) or the
# person's choice (30004 blocked, 21610 opted out) never mark a number invalid.
SMS_NUMBER_INVALID = frozenset({30005, 30006})
# A message that came back unreachable is sent again after 15, then 30, then 45 minutes; past
# that many in a day to the same number, it stays undelivered (and shows in failed-messages).
UNREACHABLE_RETRY = timedelta(minutes=15)
UNREACHABLE_RETRIES_PER_DAY = 3


def _insert_once(session: Session, sid: str, status: str, code: int | None, now: datetime,
                 applied: bool, outbox_ref: str | None = None) -> bool:
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    stmt = (insert(StatusEvent)
            .values(provider_id=sid, status=status, error_code=code, received_at=now,
                    applied=applied, outbox_ref=outbox_ref)
            .on_conflict_do_nothing(index_elements=["provider_id", "status"])
            .returning(StatusEvent.id))
    return session.execute(stmt).scalar() is not None


def record_status(session: Session, ctx: ServiceContext, sid: str, status: str,
                  code: int | None, now: datetime, outbox_ref: str | None = None) -> list[int]:
    """Store one callback once and apply it to its message. Returns outbox ids of any SMS
    fallback it queued.

    A callback can come before the dispatcher has written the message's SID down (the carrier
    answered, our record is not committed yet). Then the event is stored as not applied, and
    `apply_waiting_statuses` (each scheduler tick) applies it once the SID is there. Or the SID
    is never written: the answer to the send was lost (a read timeout, a crash). Then the
    outbox row and route named in the callback's URL (`outbox_ref`, see `callback_ref`) say
    which row Twilio took: one waiting to be sent again (or given up) is marked sent now, and
    one being sent is checked by the dispatcher before it sends (`confirm_earlier_send`).
    """
    message = session.scalars(
        select(Message).where(Message.provider_id == sid).with_for_update()).first()
    if not _insert_once(session, sid, status, code, now, applied=message is not None,
                        outbox_ref=outbox_ref):
        return []
    if message is not None:
        return _apply(session, ctx.settings, message, status, code, now)
    if outbox_ref is None:
        return []
    # Locked, so no dispatcher claims it meanwhile; one claimed already ("sending") is left to
    # its dispatcher, which looks for this event before it sends.
    item = session.get(OutboxItem, int(outbox_ref.split(":")[0]), with_for_update=True)
    if item is None or item.attempts == 0 or item.status not in ("pending", "failed",
                                                                  "cancelled"):
        return []
    ids = confirm_earlier_send(session, ctx.settings, item, session.get(Message, item.message_id),
                               now)
    return ids or []


def _apply(session: Session, settings: Settings, message: Message, status: str,
           code: int | None, now: datetime) -> list[int]:
    before = message.status
    if status in FAILED and before in DELIVERED:
        # Callbacks are not sent in order (and a WhatsApp message read on one device may be
        # reported failed on another): the phone has this message. A failure reported after
        # that is kept (its status event) and audited, but changes nothing: no SMS copy, no
        # retry, no opt-out or "number invalid", not listed as failed, the chain not moved.
        audit(session, now, "system", "message.failure_after_delivery", "message", message.id,
              status=status, code=code, was=before)
        return []
    if status in DELIVERED and before in FAILED:
        # The same, in the reverse order: the failure came first and queued a copy (the SMS
        # fallback, a template, a retry later), yet the phone has the message. A copy not sent
        # yet would give the patient the text twice: it is cancelled. One already sent stays
        # sent, and the message stays failed (failures are final, see advance_status).
        _cancel_copies(session, message, status, before, now)
    message.status = advance_status(message.status, status)
    message.updated_at = now
    if code:
        message.error_code = code
    if status not in FAILED or before in FAILED:
        return []
    return after_failure(session, settings, message, status, code, now)


# What after_failure audits when it queues a message's text again (details: again, the id of
# the copy's message).
COPY_ACTIONS = ("outbox.sms_copy", "outbox.template_retry", "message.unreachable_retry")


def _cancel_copies(session: Session, message: Message, status: str, before: str,
                   now: datetime) -> None:
    """Cancel the copies of `message` that after_failure queued and no dispatcher has taken
    yet (a row being sent, or sent, is left as it is). Audited, with the ids cancelled."""
    again = [int(a.details["again"]) for a in session.scalars(select(AuditLog).where(
        AuditLog.at >= message.created_at, AuditLog.subject_type == "message",
        AuditLog.subject_id == str(message.id), AuditLog.action.in_(COPY_ACTIONS)))]
    cancelled: list[int] = []
    if again:
        for item in session.scalars(select(OutboxItem).where(OutboxItem.message_id.in_(again))
                                    .order_by(OutboxItem.id).with_for_update()):
            if item.status != "pending":
                continue
            copy = session.get(Message, item.message_id)
            item.status, item.last_error = "cancelled", f"the original was reported {status}"
            copy.status, copy.updated_at = "cancelled", now
            cancelled.append(copy.id)
    audit(session, now, "system", "message.delivered_after_failure", "message", message.id,
          status=status, was=before, cancelled=cancelled)


def callback_ref(item_id: int, route: str) -> str:
    """How a status callback names the row and route a send took ("sms", "whatsapp" for free
    text, "template"): the dispatcher puts both in the callback's URL."""
    return f"{item_id}:{route}"


def _routes(item: OutboxItem) -> list[str]:
    """The routes an earlier attempt of this row, as it stands, may have taken. A row switched
    to SMS, or to its template after 63016, is no longer the message those attempts sent."""
    if item.channel != "whatsapp":
        return [item.channel]
    if item.variant == "template":
        return ["template"]
    return ["whatsapp", "template"]  # free text, or its template outside the 24 h window


def confirm_earlier_send(session: Session, settings: Settings, item: OutboxItem,
                         message: Message, now: datetime) -> list[int] | None:
    """Before an outbox row is sent again, or when a callback names a row waiting to be: if
    Twilio's status callbacks named it (their URL carries the row and route) with a SID we
    never recorded, an earlier attempt was taken and its answer lost. Record that SID and the
    callbacks' statuses instead of sending a second copy.

    Returns None when there is no such callback, else the outbox ids of any SMS fallback the
    callbacks' statuses queued (the row is then "sent"). Call with the row claimed or locked,
    so that nobody sends it meanwhile."""
    if message.provider_id is not None:
        return None
    events = session.scalars(
        select(StatusEvent)
        .where(StatusEvent.outbox_ref.in_([callback_ref(item.id, r) for r in _routes(item)]),
               StatusEvent.applied.is_(False))
        .order_by(StatusEvent.id)
    ).all()
    if not events:
        return None
    sid = events[0].provider_id  # two attempts both taken: the first one reported is recorded
    if session.scalars(select(Message.id).where(Message.provider_id == sid)).first():
        return None  # that SID is another message's
    was = item.status
    item.status, item.sent_at, item.claimed_until = "sent", now, None
    item.last_error = None
    message.provider_id = sid
    message.status = "queued"
    message.updated_at = now
    audit(session, now, "system", "outbox.sent_confirmed", "message", message.id,
          reason="a status callback named an attempt whose answer was lost", was=was)
    ids: list[int] = []
    for event in events:
        if event.provider_id == sid:
            event.applied = True
            ids += _apply(session, settings, message, event.status, event.error_code, now)
    return ids


# Callbacks wait at most this long for their SID to be recorded; older ones are left alone
# (a SID never recorded: the send was repeated after a crash and got a new SID).
WAITING_LIMIT = timedelta(hours=24)


def apply_waiting_statuses(session: Session, ctx: ServiceContext, now: datetime,
                           limit: int = 500) -> list[int]:
    """Apply callbacks that arrived before their message's SID was recorded, now that it is.
    Returns outbox ids of any SMS fallbacks queued."""
    rows = session.execute(
        select(StatusEvent, Message)
        .join(Message, Message.provider_id == StatusEvent.provider_id)
        .where(StatusEvent.applied.is_(False), StatusEvent.received_at >= now - WAITING_LIMIT)
        .order_by(StatusEvent.id).limit(limit)
        # The message too: a live callback for the same SID (which locks the message) must not
        # be overwritten by a status worked out from what this read before it committed. A
        # locked one is left for the next tick.
        .with_for_update(of=(StatusEvent, Message), skip_locked=True)
        .execution_options(populate_existing=True)
    ).all()
    ids: list[int] = []
    for event, message in rows:
        event.applied = True
        ids += _apply(session, ctx.settings, message, event.status, event.error_code, now)
    return ids


def after_failure(session: Session, settings: Settings, message: Message, status: str,
                  code: int | None, now: datetime) -> list[int]:
    """What a failed delivery sets off: opt-out on 21610, "number invalid" on a code that
    says the number can never receive, an audit record, the SMS fallback for WhatsApp. Runs once per message, whether the callback came before or after the
    dispatcher recorded the SID. Returns outbox ids of any SMS fallback it queued."""
    patient = session.get(Patient, message.patient_id) if message.patient_id else None
    # Sent to a number the patient has since given up (a coordinator changed it): what its
    # carrier says about that number (an opt-out) is not about the patient's number now.
    to_their_number = patient is not None and message.address == patient.phone
    if code == 21610 and to_their_number and patient.status != "opted_out":
        patient.status = "opted_out"
        audit(session, now, "system", "patient.opted_out", "patient", patient.id,
              source="carrier", code=code)
    invalid = code in NUMBER_INVALID or (message.channel == "sms" and code in SMS_NUMBER_INVALID)
    if invalid and to_their_number and patient.number_invalid_at is None:
        # For the team to fix (the dashboard lists it); routine messages wait for a number
        # that works, replies and the red-flag path still try it.
        patient.number_invalid_at = now
        audit(session, now, "system", "patient.number_invalid", "patient", patient.id,
              code=code, source="status callback")
    audit(session, now, "system", "message.undelivered", "message", message.id,
          status=status, code=code)
    # An opted-out patient still gets what STOP, HELP and a red flag call for.
    reachable = (patient is None or patient.status != "opted_out"
                 or message.kind in SENT_WHEN_OPTED_OUT)
    item = session.scalars(select(OutboxItem).where(
        OutboxItem.message_id == message.id)).first()
    as_template = (code == OUTSIDE_WINDOW and message.channel == "whatsapp" and reachable
                   and message.kind in settings.twilio.whatsapp_templates
                   and (item is None or item.variant != "template"))
    # To a patient, or a care-team alert (no patient on the row) to its contact.
    addressee = patient is not None or message.escalation_id is not None
    by_sms = (message.channel == "whatsapp" and settings.twilio.sms_fallback_for_whatsapp
              and addressee and reachable and not invalid and bool(message.body)
              and not sms_copy_since(session, message))
    if message.escalation_id is not None:
        current = alert_not_delivered(
            session, message.escalation_id, now, f"{status} {code or ''}".strip(),
            message_id=message.id, chain_length=len(settings.care_team.escalation_chain),
            copy_follows=as_template or by_sms)
        if not current:
            return []  # acknowledged, or the chain has moved past this contact: no copies
        if message.channel == "voice":
            return []  # a missed alert call: the text went too, and the chain goes on
    ids: list[int] = []
    if as_template:
        # Twilio reports 63016 in the callback as often as at send time: the free text came
        # outside the window, so send the kind's approved template, as the dispatcher does
        # when 63016 comes back at once. If the template fails too, the SMS fallback follows.
        again = _resend(session, message, "whatsapp", now, item=item)
        again.variant = "template"
        audit(session, now, "system", "outbox.template_retry", "message", message.id,
              again=again.message_id, code=code)
        ids.append(again.id)
        if item is None or item.priority > PRIORITY_EMERGENCY:
            return ids
        # An emergency or an alert does not wait to learn whether the template got through.
    if by_sms:
        return [*ids, queue_sms_copy(session, message, now, item, code).id]
    if ids:
        return ids
    if code == UNREACHABLE and _send_again_later(session, message, patient, now, item):
        return []  # not now: the dispatcher sends it when it is due
    if item is not None and item.status == "sent" and not (
            code == 21610 and message.kind == "stopped"):
        # Nothing more will carry these words: list the row with those that failed at send
        # (failed-messages, the dashboard, /healthz) for the team to follow up by phone. (Our
        # answer to STOP refused as opted out: the carrier confirmed the STOP itself.)
        item.status = "failed"
        item.last_error = f"{status}:{code or ''} reported by Twilio after it took the message"
    return []


def queue_sms_copy(session: Session, message: Message, now: datetime,
                   item: OutboxItem | None, code: int | None) -> OutboxItem:
    """Queue the text of a WhatsApp message that did not (or may not) get through again, by
    SMS; audited as outbox.sms_copy, so that a delivery reported later cancels it if it has
    not gone yet (see _cancel_copies)."""
    copy = _resend(session, message, "sms", now, item=item)
    audit(session, now, "system", "outbox.sms_copy", "message", message.id,
          again=copy.message_id, code=code)
    return copy


def _send_again_later(session: Session, message: Message, patient: Patient | None,
                      now: datetime, item: OutboxItem | None) -> bool:
    """Twilio could not reach the phone (30003, reported in the callback, not at send time):
    queue the same text again, a little later each time, up to a daily limit. A care-team
    alert is not repeated here: its escalation has moved on to the next contact."""
    if message.escalation_id is not None or not message.body:
        return False
    if (patient is not None and patient.status == "opted_out"
            and message.kind not in SENT_WHEN_OPTED_OUT):
        return False
    earlier = session.scalar(
        select(func.count()).select_from(Message).where(
            Message.address == message.address, Message.direction == "out",
            Message.error_code == UNREACHABLE, Message.created_at >= now - timedelta(days=1)))
    if earlier > UNREACHABLE_RETRIES_PER_DAY:
        audit(session, now, "system", "message.unreachable_gave_up", "message", message.id,
              times=earlier)
        return False
    again = _resend(session, message, message.channel, now,
                    not_before=now + UNREACHABLE_RETRY * earlier, item=item)
    audit(session, now, "system", "message.unreachable_retry", "message", message.id,
          again=again.message_id, at=again.next_attempt_at.isoformat())
    return True


def _resend(session: Session, message: Message, channel: str, now: datetime,
            not_before: datetime | None = None, item: OutboxItem | None = None) -> OutboxItem:
    """Queue the text of an undelivered message again, as urgent (or routine) as it was: to
    the patient's number as it is now (a coordinator may have changed it since: never again
    to the old one), else to where it went."""
    item = item or session.scalars(select(OutboxItem).where(
        OutboxItem.message_id == message.id)).first()
    patient = session.get(Patient, message.patient_id) if message.patient_id else None
    return enqueue(session, Draft(
        to=patient.phone if patient is not None else message.address, channel=channel,
        body=message.body, kind=message.kind,
        priority=item.priority if item else 1, routine=item.routine if item else False,
        patient_id=message.patient_id, conversation_id=message.conversation_id,
        escalation_id=message.escalation_id, not_before=not_before), now)
