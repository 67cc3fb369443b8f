"""Taking in one inbound message, whatever happens to the database.

1. Handle it in one transaction (bot.services.inbound).
2. If that fails, store it as "unprocessed" in a fresh transaction and act on any red flag.
   If that fails too (a bug, the database up), the last resort: stored "unprocessed", and only
   STOP and the text's red flag acted on (inbound.record_last_resort).
3. If the database cannot take it at all, write it to the local spool (bot.services.spool) and,
   for an emergency, answer at once in the webhook's own TwiML: the instruction to the patient
   and, on the same channel, an alert to the on-call contact. The spool is replayed through
   steps 1-2 when the database is back. If the disk refuses too, the message is lost: the
   webhook still answers 200 (Twilio would not retry a 5xx), the emergency instruction goes
   back in TwiML all the same, and the patient is asked to send the message again.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import replace

from sqlalchemy.exc import OperationalError

from bot.domain.triage import detect, reply_keys
from bot.services.escalations import alert_details
from bot.services.inbound import (
    InboundMessage,
    InboundOutcome,
    handle_inbound_message,
    record_after_failure,
    record_last_resort,
)

log = logging.getLogger(__name__)


def _handle(rt, msg: InboundMessage):
    with rt.transaction() as session:
        rt.claim_on_write(session)
        outcome = handle_inbound_message(session, rt.ctx, msg, rt.clock.now())
        return outcome, rt.claim_for_sending(session, outcome.outbox_ids)


# PostgreSQL's serialization failure and deadlock; SQLite's busy writer. Not a lost or refused
# connection: then the database is likely away, and the message must reach the spool (and an
# emergency its TwiML answer) well within Twilio's 15 s, not after a second wait.
_RETRY_SQLSTATES = frozenset({"40001", "40P01"})


def _worth_retrying(exc: OperationalError) -> bool:
    if exc.connection_invalidated:
        return False
    if getattr(exc.orig, "sqlstate", None) in _RETRY_SQLSTATES:
        return True
    return "database is locked" in str(exc.orig)


def store_and_handle(rt, msg: InboundMessage) -> InboundOutcome:
    """Steps 1-2. Raises only if the database could not store the message at all."""
    try:
        try:
            outcome, jobs = _handle(rt, msg)
        except OperationalError as exc:
            if not _worth_retrying(exc):
                raise
            # The transaction rolled back whole: handle the message again from the start, once.
            log.warning("handling an inbound message hit a passing database error; trying "
                        "once more")
            outcome, jobs = _handle(rt, msg)
    except Exception:
        log.exception("handling inbound message failed; storing it unprocessed")
        try:
            with rt.transaction() as session:
                outcome = record_after_failure(session, rt.ctx, msg, rt.clock.now())
        except OperationalError:
            raise  # the database cannot take it now: the spool (step 3)
        except Exception:
            # A bug the failure path trips too, the database up: spooled, the message would
            # fail every replay the same way and be set aside, its red flag never escalated.
            log.exception("the failure path failed too; keeping the message by the last resort")
            with rt.transaction() as session:
                outcome = record_last_resort(session, rt.ctx, msg, rt.clock.now())
        _after_commit(rt.dispatch_soon, outcome.outbox_ids)
        return outcome
    _after_commit(rt.send_claimed, jobs)
    return outcome


def _after_commit(send, what) -> None:
    """Send what the committed transaction wrote. The message is stored and acted on by now:
    an error here (the database gone just after the commit) must not reach the caller, who
    would spool the message and answer an emergency again in TwiML. The sweep sends the rows
    when their claim runs out."""
    try:
        send(what)
    except Exception:
        log.exception("sending right after an inbound message failed; the sweep sends it")


def spool_inbound(rt, msg: InboundMessage) -> InboundOutcome:
    """Step 3. Never raises for a disk that refuses: see _not_kept."""
    now = rt.clock.now()
    text = (msg.button_payload or msg.body or "").strip()
    triage = detect(text, rt.ctx.vocabulary)
    told = triage.level == "emergency" and not triage.hypothetical
    msg = replace(msg, provider_id=msg.provider_id or f"SIM{uuid.uuid4().hex}",
                  received_at=msg.received_at or now, told_emergency=told)
    try:
        rt.spool.put(msg)
    except OSError as exc:
        return _not_kept(rt, msg, text, triage, told, exc)
    log.error("database unavailable: inbound message kept in the local spool%s",
              "; emergency instruction sent in TwiML" if told else "")
    rt.start_spool_replayer()
    out = InboundOutcome(spooled=True, level=triage.level)
    if told:
        out.outage_replies += _emergency_replies(rt, msg, text, triage)
    return out


def _emergency_replies(rt, msg: InboundMessage, text: str, triage) -> list:
    """The instruction to the patient and, if the on-call contact takes messages on the
    patient's channel (TwiML answers from the number the patient texted), an alert to them."""
    # each concern's text: self-harm's own, never "lie flat" for it (triage.reply_keys)
    replies = [(None, rt.ctx.text_for(None, key, name="Hello")) for key in
               reply_keys(triage.flags, rt.ctx.vocabulary, level="emergency")]
    team = rt.settings.care_team
    oncall = team.contact(team.escalation_chain[0])
    if oncall.channel == msg.channel:
        body = rt.ctx.texts.render("alert_outage", "en", patient_phone=msg.sender,
                                   **alert_details(triage.flags, text, rt.ctx.vocabulary))
        to = f"whatsapp:{oncall.phone}" if msg.channel == "whatsapp" else oncall.phone
        replies.append((to, body))
    return replies


def _not_kept(rt, msg: InboundMessage, text: str, triage, told: bool,
              exc: OSError) -> InboundOutcome:
    """Neither the database nor the local disk could keep the message. Twilio does not retry
    a messaging webhook that answered 5xx (only a failed connection, unless the URL's
    connection overrides ask for more), and a 5xx carries no TwiML: an error would lose the
    message in silence and leave an emergency unanswered. So the webhook answers 200: an
    emergency with its instruction (and the on-call alert, where TwiML can reach them), and
    the patient is told the message did not reach the care team, to send it again (unless
    the on-call was alerted: then someone has it). The operator gets an ERROR."""
    log.error("an inbound message could not be kept: the database could not take it and the "
              "local spool refused it too (%s, errno %s)%s; the patient is asked to send it "
              "again. Free the spool directory's disk now.", type(exc).__name__, exc.errno,
              "; it was an emergency, its instruction sent in TwiML" if told else "")
    out = InboundOutcome(level=triage.level, lost=True)
    if told:
        out.outage_replies += _emergency_replies(rt, msg, text, triage)
    if not any(to for to, _ in out.outage_replies):  # nobody on the team has it
        out.outage_replies.append((None, rt.ctx.text_for(None, "not_received", name="Hello")))
    return out
