"""Conversations: run the pure flow engine against state stored in the conversations table.

A conversation keeps the flow revision it started on: each revision a conversation starts on is
snapshotted in flow_revisions, so a deploy of revision 2 leaves revision-1 conversations running
revision 1, even after a restart.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.domain import engine
from bot.domain.answers import (
    asks_the_team,
    asks_to_stop,
    is_thanks,
    only_emoji,
    parse_yesno,
)
from bot.domain.flows import AskNode, Flow
from bot.domain.triage import detect, level_for_flags
from bot.services.audit import audit
from bot.services.context import ServiceContext
from bot.services.escalations import answer_words, escalate
from bot.services.health import mark_to_read
from bot.services.outbox import (
    PRIORITY_EMERGENCY,
    PRIORITY_REPLY,
    PRIORITY_ROUTINE,
    Draft,
    enqueue,
    heard_on_whatsapp,
)
from bot.services.red_flags import emergency_response, urgent_response
from bot.store.claims import claim_due
from bot.store.models import (
    Answer,
    Conversation,
    FlowRevision,
    Message,
    OutboxItem,
    Patient,
    Schedule,
)

log = logging.getLogger(__name__)
OPEN = ("active", "waiting")
TEMPLATE_OPEN_WAIT = timedelta(hours=48)
CONSENT_FLOW = "welcome"
CHECKIN_FLOW = "checkin"  # the symptom check-in: scheduled, and shown on the dashboard
# The welcome's short consent question ("reply YES to get regular symptom check-ins"): a
# patient who said NO (or whose welcome ended unanswered or not understood) and texts again
# is asked it in one text (`awaiting_consent`); a YES to it agrees, and its wait ends
# without another text (see _ask_consent_again).
CONSENT_AGAIN_AT = "consent_reminder"
# A reply this soon after a conversation closed unanswered (its wait timed out) is read as a
# late answer to the question it closed at, for red flags only (see _late_answer).
LATE_ANSWER_WINDOW = timedelta(hours=24)
TIMED_OUT_AT = "timed_out_at"
# The questions left without an understood answer, for the care team's check-in table (see
# bot.services.history): {node id: {"replies": how many were not understood, "last": the last
# of them, cut to UNANSWERED_REPLY_CHARS, or None}}. A question that timed out with no reply
# has 0 replies.
UNANSWERED = "unanswered"
UNANSWERED_REPLY_CHARS = 160


# Built once: this runs on every patient message. The row is locked (PostgreSQL) so that a
# wait timeout firing in the scheduler and the patient's reply cannot both move the same
# conversation: whichever comes second sees what the first did (the timeout sweep skips a
# locked row and finds it no longer due).
_ACTIVE_CONVERSATION = (
    select(Conversation)
    .where(Conversation.patient_id == bindparam("patient_id"), Conversation.status.in_(OPEN))
    .order_by(Conversation.id.desc()).limit(1).with_for_update()
)


def active_conversation(session: Session, patient_id: int) -> Conversation | None:
    return session.scalars(_ACTIVE_CONVERSATION, {"patient_id": patient_id}).first()


def interrupt_active(session: Session, patient_id: int, now: datetime, reason: str) -> None:
    """Stop every open conversation of the patient (an emergency, STOP, a new flow)."""
    for conv in session.scalars(select(Conversation).where(
            Conversation.patient_id == patient_id, Conversation.status.in_(OPEN))):
        conv.status = "interrupted"
        conv.wait_deadline = None
        conv.updated_at = now
        conv.state = {**conv.state, "interrupted": reason}
        _cancel_unsent(session, conv, now, f"conversation interrupted: {reason}")


def interrupt_unsent(session: Session, patient_id: int, now: datetime, reason: str) -> list[int]:
    """Stop the patient's open conversations nothing of which has been sent (all their
    messages written but never tried: held for quiet hours, say), as interrupt_active does;
    returns their ids. One the patient has been sent anything of stays open: they may answer
    it. For a patient paused: a check-in held until 08:00 that the pause cancels must not
    stay open, waiting on a question they never had (its "your check-in is waiting" reminder
    would follow on resuming, and their texts be taken as its answers)."""
    stopped = []
    for conv in session.scalars(select(Conversation).where(
            Conversation.patient_id == patient_id, Conversation.status.in_(OPEN))
            .order_by(Conversation.id).with_for_update()):
        items = list(session.scalars(
            select(OutboxItem).join(Message, Message.id == OutboxItem.message_id)
            .where(Message.conversation_id == conv.id).with_for_update(of=OutboxItem)))
        if not items or any(item.status != "pending" or item.attempts for item in items):
            continue
        conv.status, conv.wait_deadline, conv.updated_at = "interrupted", None, now
        conv.state = {**conv.state, "interrupted": reason}
        _cancel_rows(session, items, now, f"conversation interrupted: {reason}")
        audit(session, now, "system", "conversation.interrupted", "conversation", conv.id,
              patient_id=patient_id, flow=conv.flow_id, reason=reason)
        stopped.append(conv.id)
    return stopped


def supersede(session: Session, conv: Conversation, now: datetime, by: str) -> None:
    """Close a conversation still waiting for a reply that has not come, because something
    scheduled must start now (see bot.services.schedules). Audited."""
    conv.status = "superseded"
    conv.wait_deadline = None
    conv.updated_at = now
    conv.state = {**conv.state, "superseded": by}
    _cancel_unsent(session, conv, now, "conversation superseded")
    audit(session, now, "system", "conversation.superseded", "conversation", conv.id,
          patient_id=conv.patient_id, flow=conv.flow_id, node=conv.current_node, by=by)


def _snapshot(session: Session, flow: Flow, now: datetime) -> None:
    exists = session.scalars(select(FlowRevision.id).where(
        FlowRevision.flow_id == flow.id, FlowRevision.revision == flow.revision)).first()
    if exists is None:
        try:
            with session.begin_nested():
                session.add(FlowRevision(flow_id=flow.id, revision=flow.revision,
                                         definition=json.loads(flow.to_json()), loaded_at=now))
        except IntegrityError:
            pass  # another process stored the same revision first


def flow_for(session: Session, ctx: ServiceContext, conv: Conversation) -> Flow:
    """The exact revision the conversation started on, from memory or its stored snapshot."""
    try:
        return ctx.flows.get(conv.flow_id, conv.flow_revision)
    except KeyError:
        row = session.scalars(select(FlowRevision).where(
            FlowRevision.flow_id == conv.flow_id,
            FlowRevision.revision == conv.flow_revision)).one()
        flow = Flow.from_json(json.dumps(row.definition))
        ctx.flows.register(flow)
        return flow


def _context(ctx: ServiceContext, patient: Patient, params: dict[str, Any]) -> dict[str, Any]:
    """The engine's context: the patient's values and the conversation's `params`, a value
    declared a sentence (flows/variables.yaml) ending with a full stop: "Take your
    dexamethasone" reads "... dexamethasone. Reply 1 if done", not "... dexamethasone Reply"."""
    params = engine.with_sentences(params, ctx.flows.variables)
    return {**ctx.patient_values(patient), **params, "language": patient.language}


def start_flow(session: Session, ctx: ServiceContext, patient: Patient, flow_id: str,
               now: datetime, *, routine: bool = False, params: dict[str, Any] | None = None,
               channel: str | None = None) -> list[int]:
    """Start a flow for the patient (ending any open conversation). Returns outbox ids."""
    flow = ctx.flows.get(flow_id)
    conv = _new_conversation(session, patient, flow, now)
    params = dict(params or {})
    if _needs_template_opening(session, ctx, patient, flow.id, channel, now):
        return _open_with_template(session, ctx, patient, conv, flow, params, now)
    result = engine.step(flow, None, engine.Start(), now, _context(ctx, patient, params))
    if result.new_state is not None:
        result.new_state["params"] = params
    return _apply(session, ctx, patient, conv, flow, result, now, routine=routine,
                  channel=channel)


def _new_conversation(session: Session, patient: Patient, flow: Flow,
                      now: datetime) -> Conversation:
    """A new conversation of `flow` for the patient, ending any open one."""
    _snapshot(session, flow, now)
    interrupt_active(session, patient.id, now, reason=f"started {flow.id}")
    conv = Conversation(patient_id=patient.id, flow_id=flow.id, flow_revision=flow.revision,
                        state={}, status="active", started_at=now, updated_at=now)
    session.add(conv)
    session.flush()
    return conv


def _ask_consent_again(session: Session, ctx: ServiceContext, patient: Patient,
                       now: datetime, *, channel: str) -> list[int]:
    """Ask a patient whose welcome ended without consent (NO, unanswered, not understood:
    see _welcome_ended_unagreed), and has texted since, the welcome's consent question again
    in one text (`awaiting_consent`: who we are, their message is saved, reply YES, the
    hotline), not in the three welcome texts: a YES to it gives consent as the welcome's
    would. It answers the patient's own text, so no WhatsApp opening is needed."""
    flow = ctx.flows.get(CONSENT_FLOW)
    conv = _new_conversation(session, patient, flow, now)
    state = {**engine.waiting_at(flow, CONSENT_AGAIN_AT, now, _context(ctx, patient, {})),
             "params": {}}
    _apply(session, ctx, patient, conv, flow, engine.StepResult(state), now, routine=False,
           channel=channel)
    return [enqueue(session, Draft(
        to=patient.phone, channel=channel, body=ctx.text_for(patient, "awaiting_consent"),
        kind=flow.id, patient_id=patient.id, conversation_id=conv.id), now).id]


def _welcome_ended_unagreed(session: Session, patient: Patient) -> bool:
    """Whether the patient, without consent, has been through a welcome that ended without
    it: they said NO, their replies were not understood, or it went unanswered (its question
    and reminder timed out). They have had its texts, so who we are and how to agree: a text
    from them now is words for the team. A welcome that never began (its WhatsApp opening
    unanswered: "expired") or was cut short ("interrupted") does not count."""
    if patient.consent_at is not None:
        return False
    ended = session.scalars(
        select(Conversation).where(Conversation.patient_id == patient.id,
                                   Conversation.flow_id == CONSENT_FLOW,
                                   Conversation.status == "completed")
        .order_by(Conversation.id.desc()).limit(1)).first()
    return ended is not None and (ended.state or {}).get("answers", {}).get("consent") != "yes"


def _declined_lately(session: Session, ctx: ServiceContext, patient: Patient,
                     now: datetime) -> Conversation | None:
    """The latest welcome (or consent question asked again) of a patient without consent in
    which they answered the consent question without agreeing: NO, or replies not understood
    (so it reached them and they read it), if it ended within
    `defaults.consent_yes_after_decline_days`. None otherwise: never answered (the welcome
    may never have reached them), long ago, or a welcome still open."""
    days = ctx.settings.defaults.consent_yes_after_decline_days
    if not days or not _welcome_ended_unagreed(session, patient):
        return None
    ended = session.scalars(
        select(Conversation).where(Conversation.patient_id == patient.id,
                                   Conversation.flow_id == CONSENT_FLOW,
                                   Conversation.status == "completed",
                                   Conversation.updated_at >= now - timedelta(days=days))
        .order_by(Conversation.id.desc()))
    for conv in ended:
        state = conv.state or {}
        if ((state.get("answers") or {}).get("consent") == "no"
                or any(entry.get("replies") for entry in (state.get(UNANSWERED) or {}).values())):
            return conv
    return None


def _consent_after_decline(session: Session, ctx: ServiceContext, patient: Patient,
                           declined: Conversation, text: str, now: datetime, *,
                           channel: str) -> list[int]:
    """A plain YES from a patient who lately answered the consent question without agreeing
    (see _declined_lately): the answer to that question, as if it were still waiting. A
    consent conversation takes it, so consent is what the welcome's YES gives: the answer
    stored, consent recorded and audited (`patient.consent`, with after_decline and the
    conversation declined in), the weekly check-in scheduled, and the welcome's thanks sent.
    It answers the patient's own text, so no WhatsApp opening is needed."""
    flow = ctx.flows.get(CONSENT_FLOW)
    conv = _new_conversation(session, patient, flow, now)
    context = _context(ctx, patient, {})
    state = {**engine.waiting_at(flow, CONSENT_AGAIN_AT, now, context), "params": {}}
    result = engine.step(flow, state, engine.Inbound(text), now, context)
    if result.new_state is not None:
        result.new_state["params"] = {}
    return _apply(session, ctx, patient, conv, flow, result, now, routine=False,
                  channel=channel, words=text, asked=CONSENT_AGAIN_AT,
                  consent_details={"after_decline": True, "declined_in": declined.id})


def _needs_template_opening(session: Session, ctx: ServiceContext, patient: Patient,
                            flow_id: str, channel: str | None, now: datetime) -> bool:
    """WhatsApp allows free text only within 24 h of the patient's last WhatsApp message (an
    SMS from the patient does not open the window)."""
    if (channel or patient.channel) != "whatsapp":
        return False
    if flow_id not in ctx.settings.twilio.whatsapp_templates:
        return False
    if channel == "whatsapp":
        return False  # started in answer to the WhatsApp message the patient just sent
    return not heard_on_whatsapp(session, patient.phone, now)


def _open_with_template(session: Session, ctx: ServiceContext, patient: Patient,
                        conv: Conversation, flow: Flow, params: dict[str, Any],
                        now: datetime) -> list[int]:
    """Send the approved template alone; the flow itself starts when the patient answers it.

    The row is a template whatever the window says when it goes. Its text says the same in
    words: it is what goes if the template fails and the SMS fallback takes over, and what the
    transcript shows."""
    conv.status = "waiting"
    conv.state = {"awaiting_open": True, "params": params}
    conv.wait_deadline = now + TEMPLATE_OPEN_WAIT
    item = enqueue(session, Draft(
        to=patient.phone, channel="whatsapp", body=ctx.text_for(patient, "template_open"),
        kind=flow.id, priority=PRIORITY_ROUTINE, routine=True, patient_id=patient.id,
        conversation_id=conv.id), now)
    item.variant = "template"
    return [item.id]


def _cancel_unsent(session: Session, conv: Conversation, now: datetime, reason: str,
                   opening_only: bool = False) -> None:
    """Cancel what the conversation wrote and has not sent yet, audited per message; a message
    being sent right now is left to go.

    The conversation is over (an emergency, STOP, a new flow): its held questions, WhatsApp
    opening or a reply waiting out a retry would only reach the patient after the emergency
    instruction or the new flow, about a conversation that no longer listens. Or, with
    `opening_only`, the patient wrote first: only the WhatsApp opening template is moot."""
    rows = select(OutboxItem).where(
        OutboxItem.message_id.in_(select(Message.id).where(Message.conversation_id == conv.id)),
        OutboxItem.status == "pending")
    if opening_only:
        rows = rows.where(OutboxItem.variant == "template")
    _cancel_rows(session, list(session.scalars(rows)), now, reason)


def _cancel_rows(session: Session, items: list[OutboxItem], now: datetime, reason: str) -> None:
    for item in items:
        item.status, item.last_error = "cancelled", reason
        message = session.get(Message, item.message_id)
        message.status, message.updated_at = "cancelled", now
        audit(session, now, "system", "outbox.cancelled", "message", message.id, reason=reason)


def advance(session: Session, ctx: ServiceContext, patient: Patient, conv: Conversation,
            event: engine.Event, now: datetime, *, routine: bool = False,
            channel: str | None = None, words: str | None = None) -> list[int]:
    """Feed one event (a reply, a timeout) to the conversation and store what it did."""
    flow = flow_for(session, ctx, conv)
    params = dict(conv.state.get("params") or {})
    if conv.state.get("awaiting_open"):
        if isinstance(event, engine.Timeout):
            conv.status, conv.wait_deadline, conv.updated_at = "expired", None, now
            return []
        # The patient answered the template (or wrote before it went): the flow starts now,
        # inside the window. An opening not sent yet has nothing left to say.
        _cancel_unsent(session, conv, now, "the patient wrote first", opening_only=True)
        result = engine.step(flow, None, engine.Start(), now, _context(ctx, patient, params))
        if result.new_state is not None:
            result.new_state["params"] = params
        return _apply(session, ctx, patient, conv, flow, result, now, routine=routine,
                      channel=channel)
    unsent = _unsent_rows(session, patient, conv) if isinstance(event, engine.Inbound) else []
    asked = conv.state.get("node") if isinstance(event, engine.Inbound) else None
    result = engine.step(flow, conv.state, event, now, _context(ctx, patient, params))
    if result.new_state is not None:
        result.new_state["params"] = params
    released: list[int] = []
    if unsent:
        # The patient wrote while messages of this conversation were still unsent (held by
        # quiet hours, say: a welcome written at night). Answered: they are moot, and would
        # ask again what was just answered. Not understood: the patient may never have seen
        # the question; it goes now, ahead of the re-prompt (they are awake and writing).
        if any(isinstance(r, engine.NotUnderstood | engine.NoWords) for r in result.recorded):
            for item in unsent:
                item.next_attempt_at, item.priority, item.routine = now, PRIORITY_REPLY, False
                released.append(item.id)
            audit(session, now, "system", "outbox.released", "conversation", conv.id,
                  messages=len(released), reason="the patient wrote before it was sent")
        else:
            _cancel_rows(session, unsent, now, "the patient answered before it was sent")
    return released + _apply(session, ctx, patient, conv, flow, result, now, routine=routine,
                             channel=channel, words=words, asked=asked)


def _unsent_rows(session: Session, patient: Patient, conv: Conversation) -> list[OutboxItem]:
    """This conversation's messages that are written but not sent (nor being sent: a row a
    dispatcher is claiming right now is skipped, and goes)."""
    return list(session.scalars(
        select(OutboxItem).join(Message, Message.id == OutboxItem.message_id)
        .where(OutboxItem.status == "pending", OutboxItem.patient_id == patient.id,
               Message.conversation_id == conv.id)
        .order_by(OutboxItem.id)
        .with_for_update(of=OutboxItem, skip_locked=True)))


def _apply(session: Session, ctx: ServiceContext, patient: Patient, conv: Conversation,
           flow: Flow, result: engine.StepResult, now: datetime, *, routine: bool,
           channel: str | None, words: str | None = None,
           asked: str | None = None,
           consent_details: dict[str, Any] | None = None) -> list[int]:
    """Store what a step did. `words`: the patient's reply that caused it, to the question
    at node `asked`. `consent_details`: more to audit with the consent it records, if any."""
    state = result.new_state or {}
    timed_out = [r.node_id for r in result.recorded if isinstance(r, engine.TimedOut)]
    if timed_out and state:
        # The question left unanswered, for a reply after the conversation closed (see
        # _late_answer); a reply in the conversation clears it.
        state = {**state, TIMED_OUT_AT: timed_out[-1]}
    elif words is not None and TIMED_OUT_AT in state:
        state = {k: v for k, v in state.items() if k != TIMED_OUT_AT}
    if state:
        state = _with_unanswered(state, result.recorded, words)
    conv.state = state
    conv.current_node = state.get("node")
    conv.status = state.get("status", "completed")
    deadline = state.get("wait_deadline")
    conv.wait_deadline = datetime.fromisoformat(deadline) if deadline else None
    conv.updated_at = now
    flags: list[str] = []
    follow_on: str | None = None
    corrected = next((r for r in result.recorded if isinstance(r, engine.AnswerCorrected)), None)
    also = next((r for r in result.recorded if isinstance(r, engine.AlsoAnswered)), None)
    for record in result.recorded:
        if isinstance(record, engine.AnswerRecorded):
            session.add(Answer(patient_id=patient.id, conversation_id=conv.id,
                               question_key=record.key, value=record.value, created_at=now))
            if (flow.id == CONSENT_FLOW and record.key == "consent" and record.value == "yes"
                    and patient.consent_at is None):
                patient.consent_at = now
                audit(session, now, f"patient:{patient.id}", "patient.consent", "patient",
                      patient.id, flow_revision=flow.revision, **(consent_details or {}))
                _schedule_first_checkin(session, ctx, patient, now)
            elif (flow.id == CONSENT_FLOW and record.key == "consent" and record.value == "no"
                    and patient.consent_at is not None):
                # "We will not send you check-in messages": scheduled flows skip a patient
                # without consent, so none follows.
                patient.consent_at = None
                audit(session, now, f"patient:{patient.id}", "patient.consent_withdrawn",
                      "patient", patient.id, flow_revision=flow.revision)
        elif isinstance(record, engine.FlagRaised):
            flags.append(record.name)
        elif isinstance(record, engine.FlowStarted):
            follow_on = record.flow_id
        elif isinstance(record, engine.EngineError):
            log.warning("flow %s r%s stopped: %s at %s", flow.id, flow.revision,
                        record.reason, record.node_id)
            audit(session, now, "system", "conversation.error", "conversation", conv.id,
                  reason=record.reason, node=record.node_id)
    ids: list[int] = []
    if corrected is not None:
        # "Sorry I meant 8": the red flags are the corrected question's, quoted with it.
        audit(session, now, f"patient:{patient.id}", "conversation.answer_corrected",
              "conversation", conv.id, patient_id=patient.id, flow=flow.id,
              node=corrected.node_id, key=corrected.key, previous=corrected.previous,
              value=corrected.value, flags=flags)
        asked = corrected.node_id
    level = level_for_flags(flags, ctx.vocabulary) if flags else "routine"
    if level == "emergency":
        # The emergency instruction (sent just below) is what the patient must do now: the
        # flow's own texts of this step, if any, only say why ("we could not understand your
        # answer, so we have alerted your care team"), so they go first, as urgently, and
        # never wait for the morning while the instruction goes (see flows/checkin.yaml).
        routine = False
    notes = [ctx.text_for(patient, "corrected", value=corrected.value)] if corrected else []
    for text in notes + result.outbound:
        ids.append(enqueue(session, Draft(
            to=patient.phone, channel=channel or patient.channel, body=text, kind=flow.id,
            priority=(PRIORITY_EMERGENCY if level == "emergency"
                      else PRIORITY_ROUTINE if routine else PRIORITY_REPLY),
            routine=routine, patient_id=patient.id, conversation_id=conv.id), now).id)
    if flags:
        said = (_in_context(ctx, patient, flow, state, asked, words,
                            corrected.value if corrected is not None else None)
                or f"answered in {flow.id}: {', '.join(flags)}")
        if also is not None:
            # One reply, two questions ("7, and yes its new"): each part under its question.
            said = " | ".join(filter(None, (
                _in_context(ctx, patient, flow, state, asked, also.first),
                _in_context(ctx, patient, flow, state, also.node_id, also.words)))) or said
        if level == "emergency":
            ids += emergency_response(session, ctx, patient, flags, said, now, channel=channel)
        elif level == "urgent":
            # The flow tells the patient what happens next; the team gets its same-day alert.
            ids += escalate(session, ctx, patient, "urgent", flags, said, now)[1]
            log.warning("urgent escalation patient=%s flags=%s", patient.id, ",".join(flags))
    if follow_on:
        ids += start_flow(session, ctx, patient, follow_on, now, routine=routine,
                          channel=channel)
    return ids


def _with_unanswered(state: dict[str, Any], recorded: list[engine.Record],
                     words: str | None) -> dict[str, Any]:
    """`state` with the questions this step left not understood (`words`, the reply) or
    unanswered (timed out) noted under UNANSWERED."""
    missed = [r for r in recorded if isinstance(r, engine.NotUnderstood | engine.TimedOut)]
    if not missed:
        return state
    noted = {node: dict(entry) for node, entry in (state.get(UNANSWERED) or {}).items()}
    for record in missed:
        entry = noted.setdefault(record.node_id, {"replies": 0, "last": None})
        if isinstance(record, engine.NotUnderstood):
            entry["replies"] += 1
            entry["last"] = (words or "").strip()[:UNANSWERED_REPLY_CHARS] or None
    return {**state, UNANSWERED: noted}


def _in_context(ctx: ServiceContext, patient: Patient, flow: Flow, state: dict[str, Any],
                asked: str | None, words: str | None,
                value: str | int | None = None) -> str | None:
    """The words an escalation keeps for a reply that raised a flag: a reply to a question
    with the question and what it meant ("Q: ...? A: y (Yes)": a bare "y" tells the care team
    nothing), any other reply as it came. `value`: what the reply meant, when the question
    would not read it so (a correction of its answer, "8 not 3")."""
    if not words:
        return words
    described = engine.question_and_meaning(
        flow, asked, words, _context(ctx, patient, dict(state.get("params") or {})), value)
    if described is None:
        return words
    question, meaning = described
    return answer_words(question, words, meaning)


def _schedule_first_checkin(session: Session, ctx: ServiceContext, patient: Patient,
                            now: datetime) -> None:
    """The welcome promises a check-in soon: schedule the weekly one unless one exists."""
    from bot.services.schedules import add_schedule

    d = ctx.settings.defaults
    if not d.checkin_every_days or "checkin" not in ctx.flows:
        return
    exists = session.scalars(select(Schedule.id).where(
        Schedule.patient_id == patient.id, Schedule.flow_id == CHECKIN_FLOW)).first()
    if exists is None:
        add_schedule(session, ctx, patient, "checkin", d.checkin_at, d.checkin_every_days, now,
                     actor="system")


def handle_patient_text(session: Session, ctx: ServiceContext, patient: Patient, text: str,
                        now: datetime, *, channel: str, already_answered: bool,
                        message_id: int | None = None) -> list[int]:
    """A patient's text that is not a carrier keyword or an emergency: route it. Free text
    outside any conversation is passed on to the team (listed to read: `message_id`, the
    stored inbound message). A flow's keyword (CHECKIN) starts its flow even while another
    conversation waits for a reply, as the texts promise ("text CHECKIN at any time"): it is
    no answer to the question waiting, and taken as one it would use up that question's
    tries (at "any new numbness?" the last one alerts the team as an emergency). Before
    consent, and in reply to a WhatsApp opening ("reply with any word"), it is a reply. A
    reply that asks something of the team instead of answering ("can I talk to a nurse?") is
    listed for them to read, and so is a free-text answer for them (see _asks_the_team,
    _words_for_the_team)."""
    conv = active_conversation(session, patient.id)
    triggered = ctx.flows.by_keyword(text)
    if conv is not None and (triggered is None or patient.consent_at is None
                             or conv.state.get("awaiting_open")):
        if conv.state.get("awaiting_open"):
            return _reply_to_opening(session, ctx, patient, conv, text, now, channel=channel,
                                     already_answered=already_answered, message_id=message_id)
        aside = _asks_the_team(session, ctx, conv, text)
        if (aside or _words_for_the_team(session, ctx, conv, text)
                or (triggered is None and _not_a_consent_answer(session, ctx, conv, text))):
            mark_to_read(session, message_id)
        if aside and _unsent_rows(session, patient, conv):
            # Written before the question reached them (held by quiet hours): as any reply
            # not understood, the question goes now, then the re-prompt (see advance).
            aside = False
        ids: list[int] = []
        if aside and not already_answered and engine.asks_again(flow_for(session, ctx, conv),
                                                               conv.state):
            # Not after the last try: its end (the team alerted, or whom to call) says it.
            ids.append(enqueue(session, Draft(
                to=patient.phone, channel=channel,
                body=ctx.text_for(patient, "stop_how" if asks_to_stop(text) else "aside"),
                kind="aside", patient_id=patient.id), now).id)
        return ids + advance(session, ctx, patient, conv, engine.Inbound(text, aside=aside), now,
                             channel=channel, words=text)
    if patient.consent_at is None:
        # Nothing but the consent conversation until the patient has said YES.
        if triggered is not None and triggered.id != CONSENT_FLOW and already_answered:
            return []
        plain_yes = triggered is None and _plain_yes(ctx, text)
        if (triggered is None and not plain_yes
                and _welcome_ended_unagreed(session, patient)):
            # Said NO (or never answered the welcome, or was not understood), and writes to
            # the clinic: their words are for the team, as a consented patient's are. One
            # short reply asks for consent again (none after a red flag's instruction).
            mark_to_read(session, message_id)
            if already_answered:
                return []
            if asks_to_stop(text):  # "please stop texting me": not asked to agree again
                return [enqueue(session, Draft(
                    to=patient.phone, channel=channel, body=ctx.text_for(patient, "stop_how"),
                    kind="received", patient_id=patient.id), now).id]
            return _ask_consent_again(session, ctx, patient, now, channel=channel)
        if plain_yes and parse_yesno(text, reasons=False).value == "yes":
            # A YES (not "ok": said to "we will not send you check-in messages", it only
            # says they heard) from a patient who answered the consent question lately
            # without agreeing: it answers that question. Otherwise the welcome again.
            declined = _declined_lately(session, ctx, patient, now)
            if declined is not None:
                return _consent_after_decline(session, ctx, patient, declined, text, now,
                                              channel=channel)
        ids = start_flow(session, ctx, patient, CONSENT_FLOW, now, channel=channel)
        return ids
    if triggered is not None:
        return start_flow(session, ctx, patient, triggered.id, now, channel=channel)
    if not already_answered:
        late = _late_answer(session, ctx, patient, text, now, channel=channel)
        if late is not None:
            return late
    if is_thanks(text):
        # "Thanks!", "ok x", a thumbs up after a check-in: kept with their messages, but no
        # "saved for your care team" (which invites another thank-you) nor the nurses' list.
        return []
    if text.strip():
        # Told (or, after a red-flag reply, shown) that the team has it: so list it for them.
        mark_to_read(session, message_id)
    if already_answered:
        return []
    body = ctx.text_for(patient, "stop_how" if asks_to_stop(text) else "received")
    return [enqueue(session, Draft(to=patient.phone, channel=channel, body=body,
                                   kind="received", patient_id=patient.id), now).id]


def _reply_to_opening(session: Session, ctx: ServiceContext, patient: Patient,
                      conv: Conversation, text: str, now: datetime, *, channel: str,
                      already_answered: bool, message_id: int | None) -> list[int]:
    """A reply to a WhatsApp opening ("reply with any word to see it"): the flow starts. Words
    in it that ask something of the team ("please call me", "who is this?", "please stop
    texting me") are listed for them to read, and the patient told so before the flow's
    first texts, as when they write them in reply to a question (`aside`, `stop_how`)."""
    ids: list[int] = []
    if asks_the_team(text) or asks_to_stop(text):
        mark_to_read(session, message_id)
        if not already_answered:
            ids.append(enqueue(session, Draft(
                to=patient.phone, channel=channel,
                body=ctx.text_for(patient, "stop_how" if asks_to_stop(text) else "aside"),
                kind="aside", patient_id=patient.id), now).id)
    return ids + advance(session, ctx, patient, conv, engine.Inbound(text), now,
                         channel=channel, words=text)


def _asking(conv: Conversation | None) -> bool:
    """Whether the conversation waits for the patient's reply to a question it has asked
    (not a WhatsApp opening waiting to be answered before the flow starts)."""
    return conv is not None and conv.status == "waiting" and not conv.state.get("awaiting_open")


def ask_again(session: Session, ctx: ServiceContext, patient: Patient, now: datetime, *,
              channel: str) -> list[int]:
    """The question waiting for the patient's answer, asked again in its own words after a
    reply to them that is no answer and uses no try (HELP, a photo, a blank text), so that
    they see what to answer next. Nothing when no question waits, or while that question is
    still unsent (held by quiet hours: it goes then, once). A WhatsApp opening ("reply with any
    word to see it") is answered by any reply, a sticker or a voice note too: the flow starts."""
    conv = active_conversation(session, patient.id)
    if conv is not None and conv.status == "waiting" and conv.state.get("awaiting_open"):
        return advance(session, ctx, patient, conv, engine.Inbound(""), now, channel=channel)
    if not _asking(conv):
        return []
    flow = flow_for(session, ctx, conv)
    text = engine.question_text(flow, conv.state, _context(
        ctx, patient, dict(conv.state.get("params") or {})))
    if text is None or _unsent_rows(session, patient, conv):
        return []
    return [enqueue(session, Draft(
        to=patient.phone, channel=channel, body=text, kind=flow.id, patient_id=patient.id,
        conversation_id=conv.id), now).id]


# An answer given with an emergency in one text, before or after it, in a clause of its own:
# a score ("3 and I can't feel my legs", "my legs gave way. 3/10"), a numbered or worded
# choice ("2, and I can't feel my legs", "a little and my legs gave way"), a yes or no ("yes,
# my legs gave way").
_SCORE = re.compile(r"(?:(?:my|the)\s+)?(?:pain|dolor)?\s*(?:is|was|es|de|:)?\s*(?P<n>\d{1,2})"
                    r"(?:\s*/\s*10|\s+out\s+of\s+10)?", re.I)
_CLAUSE_BREAK = re.compile(r"\s*(?:[,;.!]|\s+-\s+|\s+(?:and|but|y|pero)\s+)\s*", re.I)
_SHORT_ANSWER_WORDS = 4  # "2", "yes", "quite a bit", "can't make it"


def _answers_beside(node: AskNode, text: str) -> list[tuple[Any, str]]:
    """(value, answer, the rest of the text) for each answer to `node` that the first clause,
    or the last, of `text` gives on its own: the score alone for a number question ("pain 3"),
    a short reply the question reads otherwise ("2", "yes", "quite a bit")."""
    text = text.strip().rstrip(".! ")
    breaks = list(_CLAUSE_BREAK.finditer(text))
    if not breaks:
        return []
    first, last = breaks[0], breaks[-1]
    found = []
    for part, rest in ((text[:first.start()], text[first.end():]),
                       (text[last.end():], text[:last.start()])):
        if node.answer.type == "integer":
            score = _SCORE.fullmatch(part.strip())
            if score is None:
                continue
            part = score["n"]
        elif not part.strip() or len(part.split()) > _SHORT_ANSWER_WORDS:
            continue
        result = engine.parse_reply(node, part)
        if result.ok:
            found.append((result.value, part, rest))
    return found


def record_answer_beside_emergency(session: Session, ctx: ServiceContext, patient: Patient,
                                   text: str, now: datetime) -> None:
    """An emergency texted in reply to a question, with the answer in its own clause before or
    after it ("3 and I can't feel my legs" to the 0-10 pain question, "2, and I can't feel my
    legs" to a numbered one, "yes, my legs gave way" to a yes/no one): the answer is recorded
    as the question's, so the check-in history and the pain chart show it. Only when the rest
    of the text, without it, is the emergency and has no number in it ("... for 2 days"), the
    answer alone raises no red flag, the first and last clauses do not give two different
    answers, the text raises no flag of the question that the answer does not, and, but for
    a score, the answer is not one that denies every red flag the question asks about: a
    "no, but my legs are weak" to "any new numbness?" is no plain no (when unsure, the
    emergency wins; the team asks). Not at the consent question. Nothing else changes: the
    emergency is handled as any (the caller interrupts the conversation), no flag is
    raised."""
    conv = active_conversation(session, patient.id)
    if not _asking(conv) or conv.flow_id == CONSENT_FLOW:
        return  # consent is the welcome's to take, not an answer to record
    flow = flow_for(session, ctx, conv)
    node = flow.node(conv.state.get("node"))
    if not isinstance(node, AskNode) or node.answer.type == "text" or not node.save:
        return
    found = []
    for value, part, rest in _answers_beside(node, text):
        beside = detect(rest, ctx.vocabulary)
        if (beside.level == "emergency" and not beside.hypothetical
                and not re.search(r"\d", rest)
                and detect(part, ctx.vocabulary).level == "routine"):
            found.append((value, part))
    if not found or any(value != found[0][0] for value, _ in found):
        return
    value, part = found[0]
    asked_about = {flag for case in node.cases for flag in case.flags}
    answered = set(engine.flags_of_reply(flow, node.id, part))
    if (asked_about & set(detect(text, ctx.vocabulary).flags)) - answered:
        return  # "3 and I can't feel my legs, the pain is agony" (not 3, then)
    red = {flag for flag in asked_about if level_for_flags([flag], ctx.vocabulary) != "routine"}
    if node.answer.type != "integer" and red and not red & answered:
        return  # "no, but my legs are weak" to "any new numbness?": no plain no
    session.add(Answer(patient_id=patient.id, conversation_id=conv.id,
                       question_key=node.save, value=value, created_at=now))
    audit(session, now, f"patient:{patient.id}", "conversation.answer_beside_emergency",
          "conversation", conv.id, patient_id=patient.id, flow=conv.flow_id, node=node.id,
          key=node.save, value=value)


def _asks_the_team(session: Session, ctx: ServiceContext, conv: Conversation,
                   text: str) -> bool:
    """Whether a reply asks something of the team ("can I talk to a nurse?", "who is this?")
    instead of answering the question waiting: it is listed for the team to read, the
    patient is told so and whom to call, and the question is asked again. It still counts as
    a reply not understood: three at "any new numbness?" alert the team, as before."""
    if not _asking(conv) or not (asks_the_team(text) or asks_to_stop(text)):
        return False
    flow = flow_for(session, ctx, conv)
    node = flow.node(conv.state.get("node"))
    return (isinstance(node, AskNode) and not engine.understands(flow, conv.state, text)
            and engine.correction(flow, conv.state, text) is None)  # "I meant 8?"


def _words_for_the_team(session: Session, ctx: ServiceContext, conv: Conversation,
                        text: str) -> bool:
    """Whether a reply in the conversation is words for the care team to read, listed for
    them as the same words sent outside a check-in are: the answer to a free-text question
    ("anything else you want your care team to know?"; the check-in then says the answers
    have gone to the team), unless it only says no ("no thanks", "nada")."""
    if not _asking(conv) or not text.strip():
        return False
    if not engine.takes_free_text(flow_for(session, ctx, conv), conv.state.get("node")):
        return False
    return parse_yesno(text).value != "no"


def _plain_yes(ctx: ServiceContext, text: str) -> bool:
    """Whether a text only says yes, as the consent question reads yes ("yes please", "ok"):
    consent asked for, no words for the team."""
    node = ctx.flows.get(CONSENT_FLOW).node(CONSENT_AGAIN_AT)
    if not isinstance(node, AskNode):
        return False
    spec = node.answer
    return parse_yesno(text, spec.all_yes_words(), spec.all_no_words(),
                       reasons=False).value == "yes"


def _not_a_consent_answer(session: Session, ctx: ServiceContext, conv: Conversation,
                          text: str) -> bool:
    """Whether a reply to the consent question (the welcome's, or the short one asked again
    of a patient whose welcome ended without consent) is no answer to it: "I've been feeling
    awful since the op", "the pain is much worse this week". The question is asked again as
    before, and the words are for the team, listed as a consented patient's text outside a
    check-in is: they may be all this patient ever tells the clinic. A flow's keyword
    (CHECKIN) is no words for the team: the caller leaves it out."""
    if conv.flow_id != CONSENT_FLOW or not _asking(conv):
        return False
    node = flow_for(session, ctx, conv).node(conv.state.get("node"))
    return (isinstance(node, AskNode) and not engine.parse_reply(node, text).ok
            and not only_emoji(text))  # a smiley has nothing for the team to read


def _late_answer(session: Session, ctx: ServiceContext, patient: Patient, text: str,
                 now: datetime, *, channel: str) -> list[int] | None:
    """A reply that comes after the patient's last conversation closed unanswered (its
    question timed out: "we have not heard back, so this check-in is now closed"), within
    LATE_ANSWER_WINDOW, and that answers that question with a red flag: a YES to "any new
    numbness?" a day late. It goes through the same rules as an answer in time (the
    clinical brief: structured answers and free text alike; when unsure, the higher tier):
    the patient gets the instruction and the team the alert, with the question. Once only:
    the question is then spent. None when it is no such answer (listed to read, as before)."""
    recent = session.scalars(
        select(Conversation).where(Conversation.patient_id == patient.id)
        .order_by(Conversation.id.desc()).limit(1)).first()
    if recent is None or recent.status in OPEN or recent.updated_at < now - LATE_ANSWER_WINDOW:
        return None
    asked = (recent.state or {}).get(TIMED_OUT_AT)
    if not asked:
        return None
    flow = flow_for(session, ctx, recent)
    flags = engine.flags_of_reply(flow, asked, text)
    if not flags:
        return None
    recent.state = {k: v for k, v in recent.state.items() if k != TIMED_OUT_AT}
    recent.updated_at = now
    level = level_for_flags(flags, ctx.vocabulary)
    said = _in_context(ctx, patient, flow, recent.state, asked, text) or text
    audit(session, now, f"patient:{patient.id}", "conversation.late_answer", "conversation",
          recent.id, patient_id=patient.id, flow=recent.flow_id, node=asked, flags=flags,
          level=level)
    if level == "emergency":
        return emergency_response(session, ctx, patient, flags, said, now, channel=channel)
    if level == "urgent":
        return urgent_response(session, ctx, patient, flags, said, now, channel=channel)
    return None


def process_due_timeouts(session: Session, ctx: ServiceContext, now: datetime,
                         limit: int = 200) -> list[int]:
    """Fire the timeout path of every conversation whose wait ran out, once.

    The patient's row is locked (PostgreSQL), as the webhook locks it for a message of theirs:
    a timeout that raises a red flag and the patient's own red flag texted at that moment
    find one escalation, not open two (see escalations.escalate). A patient whose row is
    locked now (their message being handled, a coordinator's change) is left for the next
    tick rather than waited for: the webhook locks the patient, then the conversation, and
    this holds the conversation, so waiting could deadlock (and lose the timeout's red flag,
    see _timeout_failed). By the next tick their reply, if it was one, is in."""
    due = claim_due(session, Conversation, Conversation.status == "waiting",
                    Conversation.wait_deadline <= now, order_by=Conversation.wait_deadline,
                    limit=limit)
    ids: list[int] = []
    for conv in due:
        conv_id, flow_id = conv.id, conv.flow_id
        patient = session.scalars(
            select(Patient).where(Patient.id == conv.patient_id)
            .with_for_update(skip_locked=True).execution_options(populate_existing=True)).first()
        if patient is None:
            log.info("conversation %s: its patient is being handled; timeout left for the "
                     "next tick", conv_id)
            continue
        written = set(session.info.get("outbox", {}))
        try:
            with session.begin_nested():  # one broken conversation must not stop the others
                fired = advance(session, ctx, patient, conv, engine.Timeout(), now,
                                routine=True)
        except Exception as exc:
            outbox = session.info.get("outbox") or {}
            for key in set(outbox) - written:  # rolled back with the savepoint
                del outbox[key]
            _timeout_failed(session, conv_id, flow_id, now, exc)
            continue
        ids += fired
    return ids


def _timeout_failed(session: Session, conv_id: int, flow_id: str, now: datetime,
                    exc: Exception) -> None:
    """Close a conversation whose timeout path raised, so it cannot fail on every tick."""
    # Ids and the kind of error only: no phone numbers or message bodies in the log.
    log.error("conversation %s (flow %s): timeout failed with %s; closed as expired",
              conv_id, flow_id, type(exc).__name__)
    conv = session.get(Conversation, conv_id)
    conv.status, conv.wait_deadline, conv.updated_at = "expired", None, now
    audit(session, now, "system", "conversation.error", "conversation", conv_id,
          patient_id=conv.patient_id, flow=flow_id, error=type(exc).__name__,
          reason="timeout failed; closed")
