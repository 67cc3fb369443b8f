"""One service for every inbound message, whatever the channel (simulator, Twilio SMS, WhatsApp).

Order matters for safety: record the message first (so nothing is lost), then carrier keywords,
then red flags (which reach the care team whatever the patient's state), then the conversation.
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import bindparam, case, func, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from bot.domain.keywords import (
    CARRIER_WORDS,
    YES_WORDS,
    carrier_command,
    keyword_of,
)
from bot.domain.triage import (
    TriageResult,
    detect,
    detect_confirmed,
    detect_joined,
    detect_joined_before,
    level_for_flags,
    max_level,
    reply_keys,
    split_texts_minutes,
)
from bot.services import conversations
from bot.services.audit import audit
from bot.services.context import ServiceContext
from bot.services.escalations import (
    ESCALATED_INFO,
    REF_ALPHABET,
    EscalationNotFound,
    acknowledge,
    escalate,
    has_unresolved_emergency,
    open_alerted_to,
    short_name,
    taken_alerted_to,
)
from bot.services.health import mark_to_read
from bot.services.outbox import PRIORITY_EMERGENCY, Draft, enqueue
from bot.services.patients import DISCHARGED, is_discharged
from bot.services.red_flags import emergency_response, urgent_response
from bot.store.models import AuditLog, Escalation, Message, OutboxItem, Patient

log = logging.getLogger(__name__)

# How the care team acknowledges an alert by text: "ACK ABCDE", and as people type it on a
# phone: "Ack: abcde.", "ACK #ABCDE thanks", "acknowledged ABCDE", "OK ack", "ABCDE ack",
# "Ack, calling him now" (no ref: the one open alert sent to them). See ack_request.
ACK_WORDS = frozenset({"ACK", "ACKD", "ACKED", "ACKING", "ACKNOWLEDGE", "ACKNOWLEDGED",
                       "ACKNOWLEDGING"})
ACK_LEADS = frozenset({"OK", "OKAY", "OKE", "YES", "YEP", "YEAH"})  # "OK ACK", "yes, ack"
# "can't ack", "not ack": whatever follows, no acknowledgement.
ACK_NEGATIONS = frozenset({"NOT", "NO", "CANT", "CANNOT", "DONT", "WONT", "DIDNT", "COULDNT",
                           "HAVENT", "HASNT", "ISNT", "WASNT", "UNABLE", "NEVER", "NT"})
_ACK_TOKEN = re.compile(r"[A-Za-z0-9]+")
REF_SHAPE = re.compile(f"[{REF_ALPHABET}]{{5}}")
STAFF_REFS_CHARS = 100  # the refs listed when several open alerts went to one contact


@dataclass(frozen=True)
class InboundMessage:
    channel: str  # sms | whatsapp
    sender: str  # E.164
    body: str
    provider_id: str | None = None  # Twilio MessageSid; None from the simulator
    opt_out_type: str | None = None  # Twilio Advanced Opt-Out: STOP | START | HELP
    button_payload: str | None = None  # WhatsApp quick reply
    media: tuple[tuple[str, str], ...] = ()  # (url, content type): photos, voice notes
    # Set on a message replayed from the spool (bot/services/spool.py): when it arrived, and
    # whether the emergency instruction already went back in the webhook's TwiML.
    received_at: datetime | None = None
    told_emergency: bool = False

    def __post_init__(self) -> None:
        # PostgreSQL's text columns refuse U+0000: kept in, it would make the message look
        # like a database outage (spooled, then set aside), red flag and all.
        for name in ("body", "button_payload"):
            value = getattr(self, name)
            if value and "\x00" in value:
                object.__setattr__(self, name, value.replace("\x00", ""))


@dataclass
class InboundOutcome:
    duplicate: bool = False
    message_id: int | None = None
    patient_id: int | None = None
    level: str = "routine"  # the tier of the red flags in the text (a question's too)
    # The highest level escalated while handling the message (None: nobody was alerted): the
    # text's red flag, or a check-in answer's (YES to "any new numbness?", a third reply not
    # understood at it, a yes to "is this pain new?"), which the text alone does not show.
    escalated: str | None = None
    # The text only asked about a red flag ("what if my legs go numb?"): the safety net was
    # the answer and nobody was alerted.
    safety_net: bool = False
    outbox_ids: list[int] = field(default_factory=list)
    # The database could not take the message: it went to the local spool, and these
    # (to, body) replies go back at once in the webhook's TwiML (to None = the sender).
    spooled: bool = False
    # Neither the database nor the spool could keep it: only the TwiML answer knows of it.
    lost: bool = False
    outage_replies: list[tuple[str | None, str]] = field(default_factory=list)


def carrier_keyword(msg: InboundMessage, text: str) -> tuple[str | None, str]:
    """("STOP" | "START" | "HELP" | None, the word or OptOutType that said so).

    The whole message only, in English or Spanish (BAJA, ALTA, AYUDA...: see
    bot/domain/keywords.py), from any patient: "no puedo parar de temblar" is no keyword."""
    word = keyword_of(text)
    said, opt = carrier_command(word), (msg.opt_out_type or "").upper()
    for command in ("STOP", "START", "HELP"):
        if said == command or opt == command:
            return command, word or opt
    return None, word


def patient_keyword(msg: InboundMessage, text: str, patient: Patient) -> tuple[str | None, str]:
    """carrier_keyword for an enrolled patient: YES while opted out is START too (it opts
    back in). The normal path and the failure path both read a patient's keyword this way."""
    command, said = carrier_keyword(msg, text)
    if command is None and said in YES_WORDS and patient.status == "opted_out":
        command = "START"
    return command, said


@dataclass(frozen=True)
class AckRequest:
    """A care-team text that says ACK. `refs`: the words that may be the alert's ref, the
    likeliest first; `leading`: ACK (or OK ACK...) opens the message, so it is an
    acknowledgement even with no ref ("Ack, calling him now"); otherwise (a ref next to ACK:
    "ABCDE ack") only if that ref is an alert's."""
    refs: tuple[str, ...]
    leading: bool
    word: str | None = None  # the word right after a leading ACK, if any
    bare: bool = False  # the ref alone, with no ACK ("QDZJ7"): an ACK only if it is an alert's


def ack_request(text: str) -> AckRequest | None:
    """Whether a care-team text acknowledges an alert, and which. None for a text that does
    not say ACK (ACKNOWLEDGE, ACKNOWLEDGED...) at the start or next to a ref, or says it
    negated ("can't ack", "ack? no, can't"): such a text never acknowledges anything."""
    words = []
    for word in _ACK_TOKEN.findall((text or "").replace("'", "").replace("\u2019", "")):
        word = word.upper()
        # "ACKQDZJ7": the space lost on a phone's keyboard.
        words += ["ACK", word[3:]] if word.startswith("ACK") and REF_SHAPE.fullmatch(
            word[3:]) else [word]
    if len(words) == 1 and REF_SHAPE.fullmatch(words[0]) and "?" not in text:
        # The ref alone, as the alert asked for it but without the ACK: taken only if it is
        # an alert's (not leading), and never as a question ("QDZJ7?").
        return AckRequest((words[0],), leading=False, bare=True)
    lead = 0
    while lead < min(2, len(words)) and words[lead] in ACK_LEADS:
        lead += 1
    if lead < len(words) and words[lead] in ACK_WORDS:
        if ACK_NEGATIONS & set(words[lead + 1:lead + 4]):
            return None  # "Ack? No, can't - in theatre", "ack not me"
        after = words[lead + 1] if lead + 1 < len(words) else None
        refs = [after] if after and 4 <= len(after) <= 8 else []
        refs += [w for w in words if REF_SHAPE.fullmatch(w) and w not in refs]
        return AckRequest(tuple(refs), leading=True, word=after)
    beside: list[str] = []
    for i, word in enumerate(words):
        if word not in ACK_WORDS or ACK_NEGATIONS & set(words[max(0, i - 2):i]):
            continue
        beside += [w for w in (words[i - 1] if i else "", words[i + 1] if i + 1 < len(words)
                               else "") if REF_SHAPE.fullmatch(w) and w not in beside]
    return AckRequest(tuple(beside), leading=False) if beside else None

_INSERT_COLUMNS = ("direction", "channel", "address", "body", "kind", "provider_id", "status",
                   "created_at", "updated_at", "patient_id", "media")
_insert_if_absent: dict[str, object] = {}


def _insert_inbound_statement(dialect: str):
    """INSERT ... ON CONFLICT (provider_id) DO NOTHING RETURNING id, built once per dialect."""
    stmt = _insert_if_absent.get(dialect)
    if stmt is None:
        insert_for = {"postgresql": pg_insert, "sqlite": sqlite_insert}.get(dialect)
        values = {c: bindparam(c) for c in _INSERT_COLUMNS}
        if insert_for is None:  # pragma: no cover - only SQLite and PostgreSQL are supported
            stmt = insert(Message).values(values).returning(Message.id)
        else:
            stmt = (insert_for(Message).values(values)
                    .on_conflict_do_nothing(index_elements=["provider_id"])
                    .returning(Message.id))
        _insert_if_absent[dialect] = stmt
    return stmt


def record_inbound(session: Session, msg: InboundMessage, now: datetime,
                   patient_id: int | None = None, status: str = "received") -> int | None:
    """Insert the message once per provider id; None when this id was already stored."""
    provider_id = msg.provider_id or f"SIM{uuid.uuid4().hex}"
    values = dict(
        direction="in", channel=msg.channel, address=msg.sender, body=msg.body, kind="inbound",
        provider_id=provider_id, status=status, created_at=msg.received_at or now,
        updated_at=now, patient_id=patient_id,
        media=[{"url": url, "content_type": kind} for url, kind in msg.media] or None,
    )
    stmt = _insert_inbound_statement(session.get_bind().dialect.name)
    # On the session's connection, not through the ORM's bulk-insert path: the same statement,
    # a fraction of the Python work (this runs on every message).
    return session.connection().execute(stmt, values).scalar()


def _sent_to_since(address):
    """How many messages went to `address` since :since (not counting held ones)."""
    return select(func.count()).select_from(Message).where(
        Message.address == address, Message.direction == "out",
        Message.created_at >= bindparam("since"), Message.status != "cancelled")


_SENT_TO_SINCE = _sent_to_since(bindparam("address"))
_SENT_KINDS_TO_SINCE = _SENT_TO_SINCE.where(Message.kind.in_(bindparam("kinds", expanding=True)))

# The highest level of the patient's red flags not resolved yet: 2 emergency, 1 urgent.
_UNRESOLVED = (select(func.max(case((Escalation.level == "emergency", 2), else_=1)))
               .where(Escalation.patient_id == Patient.id, Escalation.status != "resolved")
               .correlate(Patient).scalar_subquery())
_UNRESOLVED_LEVELS = {2: "emergency", 1: "urgent"}

# Built once: runs on every inbound message. Locks the patient's row (PostgreSQL) so two
# messages from one phone are handled one after the other, and finds, in the same round trip,
# what the bot sent the number lately (for the loop guard) and whether a red flag of theirs
# is unresolved (see _after_red_flag).
_PATIENT_BY_PHONE = (
    select(Patient, _sent_to_since(Patient.phone).scalar_subquery(), _UNRESOLVED)
    .where(Patient.phone == bindparam("phone")).with_for_update(of=Patient)
)


def handle_inbound_message(
    session: Session, ctx: ServiceContext, msg: InboundMessage, now: datetime
) -> InboundOutcome:
    """Record, then act on, one message from a phone. Safe to call twice with the same id."""
    since = now - timedelta(minutes=ctx.settings.loop_guard.window_minutes)
    row = session.execute(_PATIENT_BY_PHONE, {"phone": msg.sender, "since": since}).first()
    patient, sent, unresolved = (row[0], row[1], row[2]) if row else (None, None, None)
    message_id = record_inbound(session, msg, now, patient.id if patient else None)
    if message_id is None:
        log.info("duplicate inbound %s ignored", msg.provider_id)
        return InboundOutcome(duplicate=True)
    out = InboundOutcome(message_id=message_id)
    text = (msg.button_payload or msg.body or "").strip()
    looping = _looks_like_a_loop(session, ctx, msg, text, message_id, now, sent)
    escalated = len(session.info.get(ESCALATED_INFO, ()))
    _act_on(session, ctx, msg, patient, text, now, out, looping,
            _UNRESOLVED_LEVELS.get(unresolved))
    out.escalated = _escalated_since(session, escalated)
    if looping:
        _hold_replies(session, ctx, msg, out, now)
    elif msg.told_emergency:
        _hold_told_emergency(session, msg, out, now)
    return out


def _escalated_since(session: Session, before: int) -> str | None:
    """The highest level escalate() was called with in this transaction after its first
    `before` calls, or None."""
    levels = session.info.get(ESCALATED_INFO, [])[before:]
    return max_level(*levels) if levels else None


def _written_to_sender(session: Session, msg: InboundMessage, out: InboundOutcome):
    written = session.info.get("outbox", {})
    return [written[i] for i in out.outbox_ids if i in written and written[i][0].to == msg.sender]


def _cancel(item: OutboxItem, message: Message, reason: str, now: datetime) -> None:
    item.status, item.last_error = "cancelled", reason
    message.status, message.updated_at = "cancelled", now


def _hold_told_emergency(session: Session, msg: InboundMessage, out: InboundOutcome,
                         now: datetime) -> None:
    """A replayed message whose emergency instruction went out in TwiML during the outage:
    the escalation and its alerts go ahead; the patient is not told a second time."""
    for item, message in _written_to_sender(session, msg, out):
        if item.kind == "emergency":
            _cancel(item, message, "told during a database outage", now)


def _act_on(session: Session, ctx: ServiceContext, msg: InboundMessage, patient: Patient | None,
            text: str, now: datetime, out: InboundOutcome, looping: bool,
            unresolved: str | None = None) -> None:
    staff = ctx.settings.care_team.contact_by_phone(msg.sender)
    if staff is not None and patient is not None and _acks(session, ack_request(text)):
        # A care-team phone that is also enrolled as a patient (a nurse trying the bot, a
        # shared clinic phone): "ACK <ref>" from it is still an acknowledgement.
        out.patient_id = patient.id
        out.outbox_ids += _staff_command(session, ctx, staff, text, msg, now)
        return
    if patient is None:
        if staff is not None:
            out.outbox_ids += _staff_command(session, ctx, staff, text, msg, now)
        elif _number_keyword(session, ctx, msg, text, now, out):
            return
        else:
            log.info("inbound %s from a number that is not enrolled", out.message_id)
            out.outbox_ids += _unknown_sender(session, ctx, msg, text, now, out)
        return

    out.patient_id = patient.id
    # When the patient sent it (a message replayed from the spool arrived earlier than now).
    sent_at = msg.received_at or now
    if patient.last_inbound_at is None or patient.last_inbound_at < sent_at:
        patient.last_inbound_at = sent_at
    if patient.number_invalid_at is not None and msg.channel == patient.channel:
        # The carrier said this number could not take messages (and routine ones stopped),
        # yet the patient texts from it on their own channel: it works. (A WhatsApp message
        # says nothing about SMS.)
        audit(session, now, f"patient:{patient.id}", "patient.number_works", "patient",
              patient.id, number_invalid_cleared=patient.number_invalid_at.isoformat(),
              channel=msg.channel)
        patient.number_invalid_at = None
    reply = lambda key, **kw: _reply(session, ctx, patient, msg, key, now, **kw)  # noqa: E731

    command, said = patient_keyword(msg, text, patient)
    if command == "STOP":
        _set_status(session, patient, "opted_out", now, "patient.opt_out", said)
        conversations.interrupt_active(session, patient.id, now, reason="opted out")
        out.outbox_ids.append(reply("stopped"))
        return
    if command == "START" and is_discharged(patient):
        # Opting back in to messages is not a re-admission: a discharged patient's START
        # (or YES) leaves them discharged, told so, and is listed for the team to read.
        _set_status(session, patient, DISCHARGED, now, "patient.opt_in", said)
        mark_to_read(session, out.message_id)
        out.outbox_ids.append(reply("discharged"))
        return
    if command == "START":
        _set_status(session, patient, "active", now, "patient.opt_in", said)
        if patient.consent_at is None:
            # Never agreed to check-ins: "they will start again" would be untrue, and their
            # next YES must answer the consent question, so ask it (the welcome, as at
            # enrolment).
            out.outbox_ids += conversations.start_flow(
                session, ctx, patient, conversations.CONSENT_FLOW, now, channel=msg.channel)
        else:
            out.outbox_ids.append(reply("started"))
        return
    if command == "HELP":
        out.outbox_ids.append(reply("help"))
        if patient.status not in ("opted_out", DISCHARGED):  # then the question waiting
            out.outbox_ids += conversations.ask_again(session, ctx, patient, now,
                                                      channel=msg.channel)
        return

    # Red flags: checked on every message, before and whatever the conversation. A text with
    # none may end one begun in the texts just before it ("I can't feel", "my legs").
    triage, words = _red_flags_in(session, ctx, msg, text, now, out)
    out.level = triage.level
    # Routine flags (fatigue, "pain" at a stable level) go on the record, not into an alert.
    red_flags = [f for f in triage.flags if level_for_flags([f], ctx.vocabulary) != "routine"]
    if triage.level == "emergency" and not triage.hypothetical:
        # "3 and I can't feel my legs" at the pain question: the 3 is the check-in's answer;
        # so is the 2 of "2, and I can't feel my legs" at a numbered one, or a yes or no.
        conversations.record_answer_beside_emergency(session, ctx, patient, text, now)
        conversations.interrupt_active(session, patient.id, now, reason="emergency")
        out.outbox_ids += emergency_response(session, ctx, patient, red_flags, words,
                                             now, channel=msg.channel)
        return
    if triage.level != "routine" and triage.hypothetical:
        out.safety_net = True
        out.outbox_ids += [reply(key, kind="safety_net") for key in reply_keys(
            triage.flags, ctx.vocabulary, hypothetical=True)]
    elif triage.level == "urgent":
        out.outbox_ids += urgent_response(session, ctx, patient, red_flags, words, now,
                                          channel=msg.channel)

    if patient.status == "opted_out":
        # Nothing routine goes to an opted-out patient. But words they still write to the
        # clinic ("please ring me") are for the care team: listed to read (a red flag is
        # alerted above instead; a photo or a blank has nothing to read).
        if text and triage.level == "routine":
            mark_to_read(session, out.message_id)
        return
    if looping:
        return  # no reply will go out: don't move a conversation the patient can't see
    if patient.status == DISCHARGED:
        _from_discharged(session, ctx, patient, msg, now, out, unresolved)
        return

    if not text:
        # A photo, a voice note or a location: stored for the care team, but nobody reads it
        # now. Or nothing at all (a blank text, a WhatsApp message of a kind Twilio does not
        # pass on). Say so, and leave any conversation where it was: this is no answer (three
        # "not understood" at an emergency-tier question would alert the team).
        out.outbox_ids.append(reply("media_unreadable" if msg.media else "blank"))
        out.outbox_ids += conversations.ask_again(session, ctx, patient, now,
                                                  channel=msg.channel)
        return

    if unresolved and not _written_to_sender(session, msg, out) and (
            keys := _after_red_flag(session, ctx, patient, text, unresolved)):
        # "Your care team has your message": so it is listed for them to read.
        mark_to_read(session, out.message_id)
        out.outbox_ids += [reply(key) for key in keys]
        return
    answered = bool(out.outbox_ids)
    if msg.media and not answered:
        # Words with a photo (a voice note, a location): the words are read as any text, but
        # nobody can see the attachment, as when it comes alone. Say so first; the reply to
        # the words (the next question, a re-prompt) comes last and says what to do next.
        out.outbox_ids.append(reply("media_unreadable"))
    out.outbox_ids += conversations.handle_patient_text(
        session, ctx, patient, text, now, channel=msg.channel,
        already_answered=answered, message_id=out.message_id,
    )


SPLIT_TEXTS_EARLIER = 3  # at most this many earlier texts are read with a new one

# A patient's texts just before this one, newest first (ix_messages_address_created).
_EARLIER_TEXTS = (
    select(Message.id, Message.body)
    .where(Message.address == bindparam("address"), Message.direction == "in",
           Message.created_at >= bindparam("since"), Message.created_at <= bindparam("until"),
           Message.id != bindparam("current"))
    .order_by(Message.created_at.desc(), Message.id.desc()).limit(SPLIT_TEXTS_EARLIER))


def _red_flags_in(session: Session, ctx: ServiceContext, msg: InboundMessage, text: str,
                  now: datetime, out: InboundOutcome) -> tuple[TriageResult, str]:
    """(The triage of `text`, the words it quotes): the text alone, or, when it raises no red
    flag alone, read with the texts just before it (_split_red_flag). The normal path and the
    failure path (record_after_failure) both read a text this way."""
    triage = detect(text, ctx.vocabulary)
    if triage.level == "routine" and text:
        return _split_red_flag(session, ctx, msg, text, now, out) or (triage, text)
    return triage, text


def _split_red_flag(session: Session, ctx: ServiceContext, msg: InboundMessage, text: str,
                    now: datetime, out: InboundOutcome) -> tuple[TriageResult, str] | None:
    """A red flag the patient split across texts sent moments apart ("I can't feel", then "my
    legs"): (the triage of them read as one text, their words joined), or None.

    `text` raised no red flag alone. It is read after the texts from the same number (a
    patient's, or one that is not enrolled) sent within `split_texts_minutes`
    (config/red_flags.yaml) before it, by when each was sent (a message replayed from the
    spool counts from when it arrived): the latest few in a row that raised no red flag alone
    and are no keyword (STOP, HELP...). Only red flags this text completes count
    (triage.detect_joined), never one those texts raised together already: a third text does
    not alert the same pair again.

    A conditional question there ("what if my legs go numb?", which got the safety net, alone
    or split) that this text says is happening ("they are now": triage.detect_confirmed) is
    that question's red flag, no longer conditional, quoting every text from the question on
    (audited with confirmed=True). One indexed query."""
    minutes = split_texts_minutes(ctx.vocabulary)
    if not minutes:
        return None
    sent_at = msg.received_at or now
    rows = session.execute(_EARLIER_TEXTS, {
        "address": msg.sender, "since": sent_at - timedelta(minutes=minutes), "until": sent_at,
        "current": out.message_id}).all()
    earlier: list[str] = []
    ids: list[int] = []
    asked = False  # the oldest of `earlier` is a conditional question, asked alone
    for row in rows:
        body = (row.body or "").strip()
        if not body:
            continue  # a photo between the words
        if keyword_of(body) in CARRIER_WORDS:
            break
        alone = detect(body, ctx.vocabulary)
        if alone.level != "routine" and not alone.hypothetical:
            break  # a text that was handled as a red flag when it came
        earlier.insert(0, body)
        ids.append(row.id)
        if alone.level != "routine":
            # "what if my legs go numb?": answered with the safety net when it came, and
            # this text may say it is happening ("they are now"). It ends the run.
            asked = True
            break
    if not earlier:
        return None
    triage = detect_confirmed(earlier, text, ctx.vocabulary)
    confirmed = triage.level != "routine"
    if not confirmed:
        if asked:  # a question that flagged alone is no part of a red flag split in texts
            earlier, ids = earlier[1:], ids[:-1]
            if not earlier:
                return None
        triage = detect_joined(earlier, text, ctx.vocabulary)
    words = " ".join([*earlier, text])
    if triage.level == "routine":
        # Carriers do not always deliver texts in the order they were sent: "my legs" may
        # come before "I can't feel". Read this one before the text just before it, too.
        triage = detect_joined_before(text, earlier[-1], ctx.vocabulary)
        words, ids = f"{text} {earlier[-1]}", ids[:1]
        if triage.level == "routine":
            return None
    audit(session, now, "system", "triage.split_texts", "message", out.message_id,
          earlier=ids, flags=list(triage.flags), level=triage.level,
          hypothetical=triage.hypothetical, **({"confirmed": True} if confirmed else {}))
    log.warning("%s red flag across %d texts%s: message %s", triage.level, len(ids) + 1,
                " (a question confirmed)" if confirmed else "", out.message_id)
    return triage, words


def _from_discharged(session: Session, ctx: ServiceContext, patient: Patient,
                     msg: InboundMessage, now: datetime, out: InboundOutcome,
                     unresolved: str | None) -> None:
    """A discharged patient's text that is no keyword and no emergency (red flags were dealt
    with as for anyone). Listed for the team to read, with one reply unless one was already
    written (the urgent instruction, the safety net): while a red flag of theirs is unresolved,
    the hotline again (after_emergency / after_urgent); otherwise that they no longer get
    check-ins, and whom to call. No conversation starts: CHECKIN and the like do nothing."""
    mark_to_read(session, out.message_id)
    if _written_to_sender(session, msg, out):
        return
    keys = _after_keys(session, ctx, patient, unresolved) if unresolved else ["discharged"]
    out.outbox_ids += [_reply(session, ctx, patient, msg, key, now) for key in keys]


def _after_keys(session: Session, ctx: ServiceContext, patient: Patient,
                unresolved: str) -> list[str]:
    """The texts for a patient's text while their red flags are unresolved: after_<level> for
    the flags that share their level's text (spinal), after_<reply> for a flag with its own
    (self-harm: after_self_harm), each concern once (triage.reply_keys)."""
    flags = session.scalars(select(Escalation.flags).where(
        Escalation.patient_id == patient.id, Escalation.status != "resolved")).all()
    keys = reply_keys(sorted({f for fs in flags for f in fs or ()}), ctx.vocabulary,
                      level=unresolved)
    return [f"after_{unresolved}" if key in ("emergency", "urgent") else f"after_{key}"
            for key in keys]


def _after_red_flag(session: Session, ctx: ServiceContext, patient: Patient, text: str,
                    unresolved: str) -> list[str] | None:
    """The reply to a patient's text while a red flag of theirs is unresolved (`unresolved`:
    its level), when it would otherwise get the routine "saved for your care team, reply
    CHECKIN..." ("ok I've called them") or, before consent, the welcome all over again ("what
    do I do?"): `after_emergency` (the hotline again) or `after_urgent` (the team will call).
    None when the text goes to a conversation (the consent question still waiting, too) or
    starts a flow (CHECKIN starts the consent conversation before consent)."""
    if ctx.flows.by_keyword(text) is not None:
        return None
    if conversations.active_conversation(session, patient.id) is not None:
        return None
    return _after_keys(session, ctx, patient, unresolved)


def _replies_within_window(session: Session, ctx: ServiceContext, address: str,
                           now: datetime, kinds: tuple[str, ...] | None = None) -> int:
    """Messages written to this number within the loop guard's window (of these kinds)."""
    since = now - timedelta(minutes=ctx.settings.loop_guard.window_minutes)
    if kinds is None:
        return session.scalar(_SENT_TO_SINCE, {"address": address, "since": since})
    return session.scalar(_SENT_KINDS_TO_SINCE, {"address": address, "since": since,
                                                 "kinds": list(kinds)})


_PREVIOUS_INBOUND = (select(Message.body, Message.media)
                     .where(Message.address == bindparam("address"), Message.direction == "in",
                            Message.id < bindparam("before"))
                     .order_by(Message.id.desc()).limit(1))


def _looks_like_a_loop(session: Session, ctx: ServiceContext, msg: InboundMessage, text: str,
                       message_id: int, now: datetime, sent: int | None) -> bool:
    """An auto-responder answering each of our messages, not a busy patient.

    Over `max_replies` messages to this number within the window, and this message says the
    same as the one before it (a canned text, not a short answer such as "no" or "3" that a
    patient gives to question after question); or over twice `max_replies`, whatever it says.
    """
    limit = ctx.settings.loop_guard.max_replies
    if sent is None:  # not counted with the patient row (a number that is not enrolled)
        sent = _replies_within_window(session, ctx, msg.sender, now)
    if sent < limit:
        return False
    if sent >= 2 * limit:
        return True
    previous = session.execute(_PREVIOUS_INBOUND,
                               {"address": msg.sender, "before": message_id}).first()
    if previous is None:
        return False
    said = " ".join(text.lower().split())
    before = " ".join((previous.body or "").lower().split())
    return said == before and (len(said) > 3 or bool(msg.media and previous.media))


def _hold_replies(session: Session, ctx: ServiceContext, msg: InboundMessage,
                  out: InboundOutcome, now: datetime) -> None:
    """The loop guard is on for this number: cancel what this message would have sent to it.

    Everything that happened is kept (the message, any escalation and its alerts to the care
    team, the cancelled replies). One exception: the emergency instruction still goes out if
    none went to this number within the window.
    """
    mine = _written_to_sender(session, msg, out)
    emergency_sent = _replies_within_window(session, ctx, msg.sender, now, ("emergency",)) > \
        sum(1 for item, _ in mine if item.kind == "emergency")
    held = []
    for item, message in mine:
        if item.kind == "emergency" and not emergency_sent:
            emergency_sent = True
            continue
        _cancel(item, message, "loop guard", now)
        held.append(message.id)
    audit(session, now, "system", "inbound.loop_guard", "message", out.message_id,
          held=held, window_minutes=ctx.settings.loop_guard.window_minutes)
    log.warning("loop guard: message %s got no reply (%d held)", out.message_id, len(held))


def _number_keyword(session: Session, ctx: ServiceContext, msg: InboundMessage, text: str,
                    now: datetime, out: InboundOutcome) -> bool:
    """STOP, START and HELP from a number that is not enrolled. The number's choice is kept
    (audited by number), so a patient enrolled on it later starts opted out (see
    number_opted_out); WhatsApp has no carrier-level block to do this for us."""
    command, said = carrier_keyword(msg, text)
    if command == "STOP":
        audit(session, now, "number", "number.opt_out", "number", msg.sender,
              keyword=said, channel=msg.channel)
        out.outbox_ids.append(_reply(session, ctx, None, msg, "stopped", now))
        return True
    if command == "START":
        audit(session, now, "number", "number.opt_in", "number", msg.sender,
              keyword=said, channel=msg.channel)
        return False  # and the usual answer to a number we don't know
    if command == "HELP":
        out.outbox_ids.append(_reply(session, ctx, None, msg, "help", now))
        return True
    return False


def number_opted_out(session: Session, phone: str) -> bool:
    """Whether this number's last word to us, while not enrolled, was STOP."""
    last = session.scalars(
        select(AuditLog.action).where(AuditLog.subject_type == "number",
                                      AuditLog.subject_id == phone,
                                      AuditLog.action.in_(("number.opt_out", "number.opt_in")))
        .order_by(AuditLog.id.desc())).first()
    return last == "number.opt_out"


def _unknown_sender(session: Session, ctx: ServiceContext, msg: InboundMessage, text: str,
                    now: datetime, out: InboundOutcome,
                    read: tuple[TriageResult, str] | None = None) -> list[int]:
    """A number we don't know. A red flag from it (a patient's new phone, a carer) still gets
    the instruction for its tier (an emergency's, or the urgent one: the team will call today),
    and opens an escalation like a patient's: the team is alerted round the chain, asked to
    call the number, until someone acknowledges. A fever on chemotherapy texted from a new
    phone must not get only "we don't have this number"; nor must a question ("what if my
    legs go numb?"), which gets the safety net too, and no escalation. A red flag split
    across its texts ("my husband can't feel", then "his legs") is read as one, as a
    patient's is. `read`: the text already read by _red_flags_in (the failure path)."""
    triage, words = read or _red_flags_in(session, ctx, msg, text, now, out)
    out.level = triage.level
    if triage.level == "routine":
        return [_reply(session, ctx, None, msg, "not_enrolled", now)]
    if triage.hypothetical:
        # "What if his legs go numb?": nothing is happening, so nobody is alerted, but they
        # are told what to do if it does (the safety net), after who we are.
        out.safety_net = True
        return [_reply(session, ctx, None, msg, "not_enrolled", now),
                *(_reply(session, ctx, None, msg, key, now, kind="safety_net")
                  for key in reply_keys(triage.flags, ctx.vocabulary, hypothetical=True))]
    level = triage.level
    red_flags = [f for f in triage.flags if level_for_flags([f], ctx.vocabulary) != "routine"]
    # As for a patient: "the team will call you today" only with a new urgent alert, never
    # while an emergency from this number is unresolved (it would undercut the instruction).
    urgent_told = level == "urgent" and not has_unresolved_emergency(session, None, msg.sender)
    esc, alert_ids = escalate(session, ctx, None, level, red_flags, words, now,
                              phone=msg.sender)
    ids = []
    told = level == "emergency" or (urgent_told and esc.level == "urgent" and alert_ids)
    # each concern's text (the spinal instruction for its tier, self-harm's own: see
    # red_flags.urgent_response); a flag's own text goes every time
    keys = [key for key in reply_keys(red_flags, ctx.vocabulary, level=level)
            if told or key not in ("emergency", "urgent")]
    for key in keys:
        ids.append(enqueue(session, Draft(
            to=msg.sender, channel=msg.channel, body=ctx.text_for(None, key, name="Hello"),
            kind=level, priority=PRIORITY_EMERGENCY), now).id)
    if not told:
        # Added to an open escalation about this number, or one for an emergency: they were
        # told what to do; the polite reply names the clinic's phone.
        ids.append(_reply(session, ctx, None, msg, "not_enrolled", now))
    audit(session, now, "system", "alert.unknown_sender", "message", out.message_id,
          flags=list(triage.flags), escalation=esc.ref, level=level)
    log.warning("%s red flag from a number that is not enrolled: message %s", level,
                out.message_id)
    return ids + alert_ids


def _reply(session: Session, ctx: ServiceContext, patient: Patient | None, msg: InboundMessage,
           key: str, now: datetime, kind: str | None = None, **extra) -> int:
    body = ctx.text_for(patient, key, **extra)
    return enqueue(session, Draft(to=msg.sender, channel=msg.channel, body=body,
                                  kind=kind or key,
                                  patient_id=patient.id if patient else None), now).id


def _set_status(session: Session, patient: Patient, status: str, now: datetime, action: str,
                word: str) -> None:
    if patient.status != status:
        audit(session, now, f"patient:{patient.id}", action, "patient", patient.id,
              keyword=word, previous=patient.status)
        patient.status = status


def _acks(session: Session, request: AckRequest | None) -> bool:
    """Whether a text from a care-team phone that is also a patient's is an ACK: it says ACK,
    or it is an alert's ref alone (a bare five-letter word such as "THANK" is the patient's)."""
    if request is None:
        return False
    return not request.bare or session.scalar(
        select(Escalation.id).where(Escalation.ref == request.refs[0])) is not None


def _staff_command(session: Session, ctx: ServiceContext, staff, text: str,
                   msg: InboundMessage, now: datetime) -> list[int]:
    """A care-team phone texting the bot: `ACK <ref>` acknowledges an alert.

    A ref named in the text (after ACK, or next to it) is the one acknowledged; every one
    named, if several are ("ACK ABCDE FGHJK"), each with its receipt. ACK at the
    start with no ref of any alert ("Ack, calling him now", "ACK - on it", a ref mistyped)
    acknowledges the one open alert sent to this contact; the receipt names the patient, so a
    wrong guess shows at once. With several open, the reply lists them to choose from and
    nothing is acknowledged."""
    def say(key: str, **kw) -> list[int]:
        body = ctx.texts.render(key, "en", **kw)
        return [enqueue(session, Draft(to=msg.sender, channel=msg.channel, body=body,
                                       kind="staff", priority=PRIORITY_EMERGENCY), now).id]

    def take(ref: str, how: str | None) -> list[int]:
        try:
            esc, changed = acknowledge(session, ref, staff.name, now, actor=f"staff:{staff.id}",
                                       how=how)
        except EscalationNotFound:  # pragma: no cover - found just above, in this transaction
            return say("staff_unknown", ref=ref)
        if not changed:
            return say("staff_already", ref=ref, by=esc.acknowledged_by or "someone")
        # Who the alert was about: a typo in the ref that hits another open alert shows at once.
        patient = session.get(Patient, esc.patient_id) if esc.patient_id else None
        return say("staff_ack", ref=ref, by=staff.name,
                   patient=short_name(patient.name) if patient else "not enrolled",
                   patient_phone=patient.phone if patient else esc.phone)

    request = ack_request(text)
    if request is None:
        return say("staff_usage")
    # Every alert named ("ACK ABCDE FGHJK": two taken at once), each with its own receipt.
    named = [r for r in request.refs if session.scalar(
        select(Escalation.id).where(Escalation.ref == r)) is not None]
    if named:
        return [i for ref in named for i in take(ref, None)]
    if not request.leading:
        return say("staff_usage")
    mine = open_alerted_to(session, staff.phone)
    if len(mine) > 1:
        return say("staff_which", refs=_refs_list(session, mine))
    if not mine:
        if request.word and REF_SHAPE.fullmatch(request.word):
            return say("staff_unknown", ref=request.word)
        taken = taken_alerted_to(session, staff.phone, now)
        if taken is not None:
            # Someone else took the alert first: say who, not "no alert was sent to you".
            return say("staff_already", ref=taken.ref, by=taken.acknowledged_by or "someone")
        return say("staff_none")
    return take(mine[0].ref, "the one open alert sent to this contact")


def _refs_list(session: Session, escalations: list[Escalation]) -> str:
    """"ABCDE (Ada), FGHJK (not enrolled)", cut between entries ("+2 more") to fit."""
    entries = []
    for esc in escalations:
        patient = session.get(Patient, esc.patient_id) if esc.patient_id else None
        first = short_name(patient.name.split()[0], 20) if patient and patient.name else ""
        entries.append(f"{esc.ref} ({first or 'not enrolled'})")
    shown: list[str] = []
    for i, entry in enumerate(entries):
        left = len(entries) - i - 1
        line = ", ".join([*shown, entry, *([f"+{left} more"] if left else [])])
        if shown and len(line) > STAFF_REFS_CHARS:
            shown.append(f"+{left + 1} more")
            break
        shown.append(entry)
    return ", ".join(shown)


def record_after_failure(session: Session, ctx: ServiceContext, msg: InboundMessage,
                         now: datetime) -> InboundOutcome:
    """When handling a message failed: keep it, and still act on any red flag in it.

    Runs in a fresh transaction after the failed one rolled back. The message is stored as
    "unprocessed" (for the care team to read: /healthz counts them) and only the red-flag
    path runs (a question about one gets the safety net), and STOP, START (YES while opted
    out) and HELP, which must never be lost: the status changes (the patient's, or a
    number's that is not enrolled) and the usual answer goes (after HELP, the question
    waiting is asked again, as normally). A care-team phone gets the normal path's answer
    (how to acknowledge), or, for an ACK, that it did not count. A number that is not enrolled
    is otherwise answered as on the normal path (_unknown_sender): the polite reply, a
    question's safety net, a red flag's instruction and escalation (urgent too). The text is
    read for red flags as on the normal path (_red_flags_in): one split over it and the texts
    just before it, or a question there it confirms ("they are now"), is acted on too.
    """
    # Locked first, as handle_inbound_message locks it: a red flag of the patient's being
    # escalated elsewhere (a timeout) is waited for, then added to (see escalate).
    patient = session.scalars(select(Patient).where(Patient.phone == msg.sender)
                              .with_for_update()).first()
    message_id = record_inbound(session, msg, now, patient.id if patient else None,
                                status="unprocessed")
    if message_id is None:
        return InboundOutcome(duplicate=True)
    audit(session, now, "system", "inbound.unprocessed", "message", message_id)
    out = InboundOutcome(message_id=message_id, patient_id=patient.id if patient else None)
    escalated = len(session.info.get(ESCALATED_INFO, ()))
    text = (msg.button_payload or msg.body or "").strip()
    out.level = detect(text, ctx.vocabulary).level
    staff = ctx.settings.care_team.contact_by_phone(msg.sender)
    if staff is not None and (patient is None or _acks(session, ack_request(text))):
        # A care-team phone (also one enrolled as a patient, whose ACK is the nurse's on the
        # normal path too): the nurse must know the ACK did not count: the chain will page on.
        # Any other text from it gets what the normal path answers (_staff_command): how to
        # acknowledge, and that nothing was acknowledged.
        key = "staff_failed" if ack_request(text) is not None else "staff_usage"
        body = ctx.texts.render(key, "en")
        out.outbox_ids.append(enqueue(session, Draft(
            to=msg.sender, channel=msg.channel, body=body, kind="staff",
            priority=PRIORITY_EMERGENCY), now).id)
        return out
    if patient is None:
        if _number_keyword(session, ctx, msg, text, now, out):
            return out  # STOP (remembered for the number) or HELP, answered
        # START (remembered) and any other text: the sender is answered as on the normal
        # path: the polite reply naming the clinic's phone; a question's safety net; a red
        # flag's instruction for its tier (emergency or urgent) and its escalation. A red
        # flag may be split over this text and those just before it, or be a question of
        # theirs this text confirms ("they are now").
        looping = _still_looping(session, ctx, msg, text, message_id, now)  # before replying
        out.outbox_ids += _unknown_sender(session, ctx, msg, text, now, out)
        if looping:
            _hold_replies(session, ctx, msg, out, now)  # an auto-responder: as normally
        elif msg.told_emergency:
            _hold_told_emergency(session, msg, out, now)
        out.escalated = _escalated_since(session, escalated)
        return out
    command, said = patient_keyword(msg, text, patient)
    if command == "STOP":
        _set_status(session, patient, "opted_out", now, "patient.opt_out", said)
        _try_interrupt(session, patient, now, "opted out")
        out.outbox_ids.append(_reply(session, ctx, patient, msg, "stopped", now))
    elif command == "START" and is_discharged(patient):
        _set_status(session, patient, DISCHARGED, now, "patient.opt_in", said)
        out.outbox_ids.append(_reply(session, ctx, patient, msg, "discharged", now))
    elif command == "START":
        _set_status(session, patient, "active", now, "patient.opt_in", said)
        # Never agreed to check-ins: "they will start again" would be untrue. The normal path
        # asks the consent question (the welcome); here, in one text, without a conversation:
        # their message is saved, reply YES for check-ins (a YES then goes the normal path).
        out.outbox_ids.append(_reply(session, ctx, patient, msg, "started" if patient.consent_at
                                     else "awaiting_consent", now))
    elif command == "HELP":
        out.outbox_ids.append(_reply(session, ctx, patient, msg, "help", now))
        if patient.status not in ("opted_out", DISCHARGED):  # as on the normal path
            out.outbox_ids += _try_ask_again(session, ctx, patient, msg, now)
    # A keyword is read alone, as on the normal path; any other text may end a red flag begun
    # in the texts just before it, or confirm a question asked there.
    triage, words = ((detect(text, ctx.vocabulary), text) if command else
                     _red_flags_in(session, ctx, msg, text, now, out))
    out.level = triage.level
    if triage.level == "emergency" and not triage.hypothetical:
        _try_interrupt(session, patient, now, "emergency")
    _answer_red_flags(session, ctx, patient, msg, triage, words, now, out)
    if msg.told_emergency:  # replayed from the spool: the patient was told in the TwiML
        _hold_told_emergency(session, msg, out, now)
    out.escalated = _escalated_since(session, escalated)
    return out


def _answer_red_flags(session: Session, ctx: ServiceContext, patient: Patient,
                      msg: InboundMessage, triage: TriageResult, words: str, now: datetime,
                      out: InboundOutcome) -> None:
    """The failure paths' answer to a red flag in `words`: its tier's instruction and the
    escalation, or for a question about one ("what if my legs go numb?") the safety net, as on
    the normal path (never silence). Nothing for a routine text."""
    red_flags = [f for f in triage.flags if level_for_flags([f], ctx.vocabulary) != "routine"]
    if triage.level == "emergency" and not triage.hypothetical:
        out.outbox_ids += emergency_response(session, ctx, patient, red_flags, words, now,
                                             channel=msg.channel)
    elif triage.level == "urgent" and not triage.hypothetical:
        out.outbox_ids += urgent_response(session, ctx, patient, red_flags, words, now,
                                          channel=msg.channel)
    elif triage.level != "routine":
        out.safety_net = True
        out.outbox_ids += [_reply(session, ctx, patient, msg, key, now, kind="safety_net")
                           for key in reply_keys(triage.flags, ctx.vocabulary,
                                                 hypothetical=True)]


def record_last_resort(session: Session, ctx: ServiceContext, msg: InboundMessage,
                       now: datetime) -> InboundOutcome:
    """When record_after_failure raised too, the database up (a bug both paths trip): keep the
    message "unprocessed" for the team and do only what must never be lost, with as little as
    possible: a patient's STOP (the status and its answer), and a red flag in this text alone
    (its tier's instruction to the sender and the escalation; a question's safety net).
    Nothing else: no conversation, no split red flag, no care-team ACK (a person reads the
    message). Raises if any of it fails: the caller then spools the message (an emergency's
    instruction going back in the webhook's TwiML) for a replay to try again."""
    patient = session.scalars(select(Patient).where(Patient.phone == msg.sender)
                              .with_for_update()).first()
    message_id = record_inbound(session, msg, now, patient.id if patient else None,
                                status="unprocessed")
    if message_id is None:
        return InboundOutcome(duplicate=True)
    audit(session, now, "system", "inbound.unprocessed", "message", message_id,
          last_resort=True)
    out = InboundOutcome(message_id=message_id, patient_id=patient.id if patient else None)
    escalated = len(session.info.get(ESCALATED_INFO, ()))
    text = (msg.button_payload or msg.body or "").strip()
    triage = detect(text, ctx.vocabulary)
    out.level = triage.level
    if ctx.settings.care_team.contact_by_phone(msg.sender) is not None and patient is None:
        return out  # a care-team phone: its text is read by a person (no patient's flag)
    if patient is not None and patient_keyword(msg, text, patient)[0] == "STOP":
        _set_status(session, patient, "opted_out", now, "patient.opt_out", text)
        out.outbox_ids.append(_reply(session, ctx, patient, msg, "stopped", now))
        return out
    if patient is None:
        if triage.level != "routine":
            out.outbox_ids += _unknown_sender(session, ctx, msg, text, now, out,
                                              read=(triage, text))
    else:
        _answer_red_flags(session, ctx, patient, msg, triage, text, now, out)
    if msg.told_emergency:  # replayed from the spool: the patient was told in the TwiML
        _hold_told_emergency(session, msg, out, now)
    out.escalated = _escalated_since(session, escalated)
    log.error("inbound %s kept by the last resort (only STOP and red flags acted on)",
              message_id)
    return out


def _try_interrupt(session: Session, patient: Patient, now: datetime, reason: str) -> None:
    """On the failure path: end the patient's open conversation, as the normal path does
    after STOP or an emergency (no reminder of its question, their next text no answer to
    it). In a savepoint: if this is what failed, the rest (the status, the instruction, the
    alert) still goes, and the conversation is left as it was."""
    try:
        with session.begin_nested():
            conversations.interrupt_active(session, patient.id, now, reason=reason)
    except Exception:
        log.exception("inbound for patient %s: ending the conversation failed again; left open",
                      patient.id)


def _try_ask_again(session: Session, ctx: ServiceContext, patient: Patient,
                   msg: InboundMessage, now: datetime) -> list[int]:
    """On the failure path, after the help text: the question waiting, asked again as the
    normal path does (conversations.ask_again). In a savepoint: if this is what failed, the
    help text still goes, alone."""
    try:
        with session.begin_nested():
            return conversations.ask_again(session, ctx, patient, now, channel=msg.channel)
    except Exception:
        log.exception("inbound for patient %s: asking the question again failed again",
                      patient.id)
        return []


def _still_looping(session: Session, ctx: ServiceContext, msg: InboundMessage, text: str,
                   message_id: int, now: datetime) -> bool:
    """The loop guard on the failure path (_looks_like_a_loop), in a savepoint: if it is what
    failed, the replies go (an auto-responder is then answered as before)."""
    try:
        with session.begin_nested():
            return _looks_like_a_loop(session, ctx, msg, text, message_id, now, None)
    except Exception:
        log.exception("inbound %s: the loop guard failed again", message_id)
        return False
