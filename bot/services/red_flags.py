"""What the bot does when a red flag shows, from free text or from a structured answer."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy.orm import Session

from bot.domain.triage import reply_keys
from bot.services.context import ServiceContext
from bot.services.escalations import escalate, has_unresolved_emergency
from bot.services.outbox import PRIORITY_EMERGENCY, Draft, enqueue
from bot.store.models import Patient

log = logging.getLogger(__name__)


def emergency_response(session: Session, ctx: ServiceContext, patient: Patient,
                       flags: list[str], words: str | None, now: datetime,
                       channel: str | None = None) -> list[int]:
    """Tell the patient what to do now and alert the care team, whatever state or hour.

    What to do is the text of each concern (triage.reply_keys): the spinal emergency's (lie
    flat, call the hotline) only for a spinal flag, self-harm's own (the crisis line), both
    when both; each sent as kind "emergency" (sent when opted out, kept by the loop guard)."""
    ids = [enqueue(session, Draft(
        to=patient.phone, channel=channel or patient.channel,
        body=ctx.text_for(patient, key), kind="emergency",
        priority=PRIORITY_EMERGENCY, patient_id=patient.id), now).id
        for key in reply_keys(flags, ctx.vocabulary, level="emergency")]
    _, alert_ids = escalate(session, ctx, patient, "emergency", flags, words, now)
    log.warning("emergency escalation patient=%s flags=%s", patient.id, ",".join(flags))
    return [*ids, *alert_ids]


def urgent_response(session: Session, ctx: ServiceContext, patient: Patient, flags: list[str],
                    words: str | None, now: datetime, channel: str | None = None) -> list[int]:
    """Tell the patient the team will call today; open (or add to) a same-day escalation.

    When the patient has an emergency that is not resolved, the patient is not told "we'll call
    today", which would undercut the emergency instruction: the flags are added to the open
    emergency, or (if it was acknowledged) reach the team as a new urgent alert.

    A flag with its own reply (self-harm: the crisis line, the emergency number) gets it every
    time it is raised, added to an open escalation or not: it undercuts nothing, and a patient
    who says it again must not be left with no answer or a spinal one.
    """
    esc, alert_ids = escalate(session, ctx, patient, "urgent", flags, words, now)
    ids = list(alert_ids)
    told = esc.level == "urgent" and alert_ids and not has_unresolved_emergency(session, patient.id)
    keys = [key for key in reply_keys(flags, ctx.vocabulary, level="urgent")
            if key != "urgent" or told]
    for key in reversed(keys):
        ids.insert(0, enqueue(session, Draft(
            to=patient.phone, channel=channel or patient.channel,
            body=ctx.text_for(patient, key), kind="urgent",
            priority=PRIORITY_EMERGENCY, patient_id=patient.id), now).id)
    log.warning("urgent escalation patient=%s flags=%s", patient.id, ",".join(flags))
    return ids
