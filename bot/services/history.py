"""A patient's check-in answers over time, for the care team: one column per check-in (newest
first), one row per question, each answer marked when it raised a red flag as its flow read it
(the flow's own cases, of the revision the check-in ran on). A question asked whose replies
were never understood ("not understood", with the last reply) or that was never answered (it
timed out: "no reply") has a cell too, with the flags its fallback raised; only a question not
asked has none. Read by the dashboard's patient page and GET /api/patients/<id>/checkins."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.domain import engine
from bot.domain.flows import Flow
from bot.domain.triage import level_for_flags
from bot.services.context import ServiceContext
from bot.services.conversations import CHECKIN_FLOW, UNANSWERED, flow_for
from bot.store.models import Answer, Conversation

CHECKINS_SHOWN = 8  # columns: about two months of weekly check-ins
TEXT_CHARS = 60  # a free-text answer is cut to this in a cell (the transcript has it whole)


NOT_UNDERSTOOD = "not_understood"  # replies came, none understood (the fallback, or a timeout)
NO_REPLY = "no_reply"  # asked, and it timed out with no reply


@dataclass(frozen=True)
class Cell:
    value: Any  # as stored: "yes", 7, "not_at_all", a text; None when never understood
    shown: str  # as a person reads it
    flags: tuple[str, ...]  # the red flags it raised
    level: str | None  # the highest of their tiers (emergency, urgent), None without flags
    unanswered: str | None = None  # NOT_UNDERSTOOD or NO_REPLY; None for an answer
    reply: str | None = None  # NOT_UNDERSTOOD: the last reply, as the patient wrote it


@dataclass(frozen=True)
class CheckinColumn:
    conversation_id: int
    started_at: datetime
    status: str  # active, waiting, completed, expired, interrupted, superseded...


@dataclass(frozen=True)
class CheckinHistory:
    columns: list[CheckinColumn]
    rows: list[tuple[str, str, list[Cell | None]]]  # (key, label, one cell per column)

    def series(self, key: str) -> list[tuple[datetime, int]]:
        """(when, value) of a numeric answer, oldest first: the pain trend."""
        for row_key, _label, cells in self.rows:
            if row_key == key:
                return [(col.started_at, cell.value) for col, cell in
                        reversed(list(zip(self.columns, cells, strict=True)))
                        if cell is not None and isinstance(cell.value, int)
                        and not isinstance(cell.value, bool)]
        return []


def label_for(key: str) -> str:
    """"worst_pain" -> "Worst pain"."""
    return key.replace("_", " ").capitalize()


def _cut(text: str) -> str:
    return text if len(text) <= TEXT_CHARS else text[:TEXT_CHARS - 3].rstrip() + "..."


def _shown(value: Any) -> str:
    if isinstance(value, str):
        return _cut(value.replace("_", " ") if value.replace("_", "").isalpha() else value)
    return str(value)


def _level(flags: tuple[str, ...], ctx: ServiceContext) -> str:
    """The tier of an answer's flags. A flag an older revision of the flow raised that the
    red-flag vocabulary no longer knows (renamed, removed) is taken as an emergency: the higher
    tier when unsure, and the check-in still shows rather than the page failing."""
    try:
        return level_for_flags(list(flags), ctx.vocabulary)
    except ValueError:
        return "emergency"


def _unanswered(flow: Flow, conv: Conversation) -> dict[str, tuple[str, str | None, list[str]]]:
    """{saved key: (NOT_UNDERSTOOD or NO_REPLY, the last reply, the flags raised)} of the
    check-in's questions left without an understood answer (one key may be asked twice: the
    pain question and its reminder)."""
    found: dict[str, tuple[str, str | None, list[str]]] = {}
    for node_id, entry in ((conv.state or {}).get(UNANSWERED) or {}).items():
        node = flow.node(node_id)
        key = getattr(node, "save", None) if node is not None and node.kind == "ask" else None
        if not key:
            continue
        replies = int(entry.get("replies") or 0)
        kind, reply, flags = found.get(key, (NO_REPLY, None, []))
        if replies:
            kind, reply = NOT_UNDERSTOOD, entry.get("last") or reply
        flags = flags + [f for f in engine.flags_of_unanswered(flow, node_id, replies)
                         if f not in flags]
        found[key] = (kind, reply, flags)
    return found


def _replied(conv: Conversation) -> bool:
    """Whether the patient sent the check-in a reply that was not understood."""
    return any(entry.get("replies") for entry in
               ((conv.state or {}).get(UNANSWERED) or {}).values())


def _cell(ctx: ServiceContext, value: Any, shown: str, flags: tuple[str, ...],
          **unanswered: Any) -> Cell:
    level = _level(flags, ctx) if flags else None
    return Cell(value, shown, flags, level if level in ("emergency", "urgent") else None,
                **unanswered)


def checkin_history(session: Session, ctx: ServiceContext, patient_id: int,
                    limit: int = CHECKINS_SHOWN) -> CheckinHistory:
    """The patient's last `limit` check-ins that they replied to (at least one answer, or a
    reply that was not understood), newest first."""
    answered = set(session.scalars(select(Answer.conversation_id).where(
        Answer.patient_id == patient_id).distinct()))
    convs = []
    for conv in session.scalars(
            select(Conversation)
            .where(Conversation.patient_id == patient_id, Conversation.flow_id == CHECKIN_FLOW)
            .order_by(Conversation.started_at.desc(), Conversation.id.desc())):
        if conv.id in answered or _replied(conv):
            convs.append(conv)
            if len(convs) == limit:
                break
    by_conv: dict[int, dict[str, Any]] = {c.id: {} for c in convs}
    for answer in session.scalars(select(Answer).where(
            Answer.conversation_id.in_(list(by_conv))).order_by(Answer.id)):
        by_conv[answer.conversation_id][answer.question_key] = answer.value  # the last one
    flows = {c.id: flow_for(session, ctx, c) for c in convs}
    missed = {c.id: _unanswered(flows[c.id], c) for c in convs}
    keys: list[str] = []  # in the order the questions come in the flow
    for conv in convs:
        for node in flows[conv.id].nodes:
            key = getattr(node, "save", None)
            if key and key not in keys and any(
                    key in by_conv[c.id] or key in missed[c.id] for c in convs):
                keys.append(key)
    rows = []
    for key in keys:
        cells: list[Cell | None] = []
        for conv in convs:
            if key in by_conv[conv.id]:
                value = by_conv[conv.id][key]
                flags = tuple(engine.flags_of_answer(flows[conv.id], key, value))
                cells.append(_cell(ctx, value, _shown(value), flags))
            elif key in missed[conv.id]:
                kind, reply, flags = missed[conv.id][key]
                shown = ("no reply" if kind == NO_REPLY else
                         f'not understood: "{_cut(reply)}"' if reply else "not understood")
                cells.append(_cell(ctx, None, shown, tuple(flags), unanswered=kind,
                                   reply=reply))
            else:
                cells.append(None)  # not asked
        rows.append((key, label_for(key), cells))
    columns = [CheckinColumn(c.id, c.started_at, c.status) for c in convs]
    return CheckinHistory(columns, rows)
