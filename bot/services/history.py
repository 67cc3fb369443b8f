"""A patient's check-in answers over time, for the care team: one column per check-in (newest
first), one row per question, each answer marked when it raised a red flag as its flow read it
(the flow's own cases, of the revision the check-in ran on). Read by the dashboard's patient
page and GET /api/patients/<id>/checkins."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.domain import engine
from bot.domain.triage import level_for_flags
from bot.services.context import ServiceContext
from bot.services.conversations import CHECKIN_FLOW, flow_for
from bot.store.models import Answer, Conversation

CHECKINS_SHOWN = 8  # columns: about two months of weekly check-ins
TEXT_CHARS = 60  # a free-text answer is cut to this in a cell (the transcript has it whole)


@dataclass(frozen=True)
class Cell:
    value: Any  # as stored: "yes", 7, "not_at_all", a text
    shown: str  # as a person reads it
    flags: tuple[str, ...]  # the red flags it raised
    level: str | None  # the highest of their tiers (emergency, urgent), None without flags


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


def _shown(value: Any) -> str:
    if isinstance(value, str):
        text = value.replace("_", " ") if value.replace("_", "").isalpha() else value
        return text if len(text) <= TEXT_CHARS else text[:TEXT_CHARS - 3].rstrip() + "..."
    return str(value)


def _level(flags: tuple[str, ...], ctx: ServiceContext) -> str:
    """The tier of an answer's flags. A flag an older revision of the flow raised that the
    red-flag vocabulary no longer knows (renamed, removed) is taken as an emergency: the higher
    tier when unsure, and the check-in still shows rather than the page failing."""
    try:
        return level_for_flags(list(flags), ctx.vocabulary)
    except ValueError:
        return "emergency"


def checkin_history(session: Session, ctx: ServiceContext, patient_id: int,
                    limit: int = CHECKINS_SHOWN) -> CheckinHistory:
    """The patient's last `limit` check-ins that have at least one answer, newest first."""
    convs = list(session.scalars(
        select(Conversation)
        .where(Conversation.patient_id == patient_id, Conversation.flow_id == CHECKIN_FLOW,
               Conversation.id.in_(select(Answer.conversation_id)
                                   .where(Answer.patient_id == patient_id)))
        .order_by(Conversation.started_at.desc(), Conversation.id.desc()).limit(limit)))
    by_conv: dict[int, dict[str, Any]] = {c.id: {} for c in convs}
    for answer in session.scalars(select(Answer).where(
            Answer.conversation_id.in_(list(by_conv))).order_by(Answer.id)):
        by_conv[answer.conversation_id][answer.question_key] = answer.value  # the last one
    keys: list[str] = []  # in the order the questions come in the flow
    flows = {c.id: flow_for(session, ctx, c) for c in convs}
    for conv in convs:
        for node in flows[conv.id].nodes:
            key = getattr(node, "save", None)
            if key and key not in keys and any(key in by_conv[c.id] for c in convs):
                keys.append(key)
    rows = []
    for key in keys:
        cells: list[Cell | None] = []
        for conv in convs:
            if key not in by_conv[conv.id]:
                cells.append(None)
                continue
            value = by_conv[conv.id][key]
            flags = tuple(engine.flags_of_answer(flows[conv.id], key, value))
            level = _level(flags, ctx) if flags else None
            cells.append(Cell(value, _shown(value), flags,
                              level if level in ("emergency", "urgent") else None))
        rows.append((key, label_for(key), cells))
    columns = [CheckinColumn(c.id, c.started_at, c.status) for c in convs]
    return CheckinHistory(columns, rows)
