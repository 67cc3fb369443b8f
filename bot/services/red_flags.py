"""What the bot does when a red flag shows, from free text or from a structured answer."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy.orm import Session

from bot.services.context import ServiceContext
from bot.services.escalations import escalate, has_unresolved_emergency
from bot.services.outbox import PRIORITY_EMERGENCY, Draft, enqueue
from bot.store.models import Patient

log = logging.getLogger(__name__)


def emergency_response(session: Session, ctx: ServiceContext, patient: Patient,
                       flags: list[str], words: str | None, now: datetime,
                       channel: str | None = None) -> list[int]:
    """Tell the patient what to do now and alert the care team, whatever state or hour."""
    item = enqueue(session, Draft(
        to=patient.phone, channel=channel or patient.channel,
        body=ctx.text_for(patient, "emergency"), kind="emergency",
        priority=PRIORITY_EMERGENCY, patient_id=patient.id), now)
    _, alert_ids = escalate(session, ctx, patient, "emergency", flags, words, now)
    log.warning("emergency escalation patient=%s flags=%s", patient.id, ",".join(flags))
    return [item.id, *alert_ids]


def urgent_response(session: Session, ctx: ServiceContext, patient: Patient, flags: list[str],
                    words: str | None, now: datetime, channel: str | None = None) -> list[int]:
    """Tell the patient the team will call today; open (or add to) a same-day escalation.

    When the patient has an emergency that is not resolved, the patient is not told "we'll call
    today", which would undercut the emergency instruction: the flags are added to the open
    emergency, or (if it was acknowledged) reach the team as a new urgent alert.
    """
    esc, alert_ids = escalate(session, ctx, patient, "urgent", flags, words, now)
    ids = list(alert_ids)
    if esc.level == "urgent" and alert_ids and not has_unresolved_emergency(session, patient.id):
        ids.insert(0, enqueue(session, Draft(
            to=patient.phone, channel=channel or patient.channel,
            body=ctx.text_for(patient, "urgent"), kind="urgent",
            priority=PRIORITY_EMERGENCY, patient_id=patient.id), now).id)
    log.warning("urgent escalation patient=%s flags=%s", patient.id, ",".join(flags))
    return ids
