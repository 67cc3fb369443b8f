"""Is the bot doing its job? For /healthz and `checkin-bot health`: the on-call view.

The web app can be up while nothing moves: the scheduler process died (no check-ins, no retries,
no re-alerts of unacknowledged red flags), or the carrier refuses every send. Each check here
says which, with numbers, and never a phone number or a message.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from bot.config import Settings
from bot.services.audit import audit
from bot.services.patients import DISCHARGED
from bot.store.models import (
    MAX_ID,
    TO_READ,
    UNPROCESSED,
    Escalation,
    Heartbeat,
    Message,
    OutboxItem,
    Patient,
)

SCHEDULER = "scheduler"
# A row due this long ago and still not sent means no dispatcher is sending.
OVERDUE_AFTER = timedelta(minutes=2)
# What the patient or the care team is sent about a red flag: a failure is never routine.
RED_FLAG_KINDS = ("alert", "emergency", "urgent")


def beat(session: Session, component: str, now: datetime, problem: str | None = None) -> None:
    """Record that `component` finished a round of work now (insert or update its row), and
    what went wrong in it, if anything."""
    dialect = session.get_bind().dialect.name
    insert_for = pg_insert if dialect == "postgresql" else sqlite_insert
    values = {"component": component, "beat_at": now, "host": socket.gethostname()[:80],
              "pid": os.getpid(), "problem": problem[:200] if problem else None}
    session.execute(insert_for(Heartbeat).values(**values).on_conflict_do_update(
        index_elements=["component"],
        set_={k: v for k, v in values.items() if k != "component"}))


def unprocessed_messages(session: Session) -> list[Message]:
    """Patients' messages that could not be handled (stored and checked for red flags, no
    more) and that nobody has marked read yet, newest first, however old. The condition is
    written as the partial index's own (ix_messages_unprocessed), so the index serves it."""
    return list(session.scalars(
        select(Message).where(UNPROCESSED, Message.direction == "in")
        .order_by(Message.id.desc())))


def messages_to_read(session: Session) -> list[Message]:
    """Patients' free-text messages the bot told them it had "saved for your care team" (a
    question, "please ring me", a late answer to a closed check-in) that nobody has marked
    read yet, newest first, every one of them (the oldest have waited longest: a cut-off would
    hide those). Written as the partial index's condition (ix_messages_to_read)."""
    return list(session.scalars(
        select(Message).where(TO_READ, Message.direction == "in")
        .order_by(Message.id.desc())))


def _zones_without_emergency_number(session: Session, settings: Settings) -> dict[str, int]:
    """Zones of patients (not discharged) in a country with no emergency number configured
    (see context.emergency_number_warning), with how many live in each. Enrolment warns once;
    a coordinator who missed it, or a change of settings, leaves them here to be found."""
    from bot.services.context import emergency_number_warning

    return {zone: count for zone, count in session.execute(
        select(Patient.timezone, func.count()).where(Patient.status != DISCHARGED)
        .group_by(Patient.timezone))
        if emergency_number_warning(settings, zone) is not None}


def _countries_without_emergency_number(session: Session,
                                        settings: Settings) -> dict[str, int]:
    """As _zones_without_emergency_number, by country code ("?" for a zone of none)."""
    from bot.domain.countries import zone_country

    out: dict[str, int] = {}
    for zone, count in _zones_without_emergency_number(session, settings).items():
        country = zone_country(zone) or "?"
        out[country] = out.get(country, 0) + count
    return out


def patients_without_emergency_number(session: Session, settings: Settings) -> list[Patient]:
    """Patients (not discharged) whose texts give clinic.emergency_number because their
    zone's country has none in clinic.emergency_numbers_abroad, by name."""
    zones = _zones_without_emergency_number(session, settings)
    if not zones:
        return []
    return list(session.scalars(select(Patient).where(
        Patient.status != DISCHARGED, Patient.timezone.in_(zones))
        .order_by(Patient.name, Patient.id)))


def mark_to_read(session: Session, message_id: int | None) -> None:
    """The bot has told the patient this message was passed on to the team: list it for them."""
    if message_id is not None:
        session.execute(update(Message).where(Message.id == message_id,
                                              Message.status == "received")
                        .values(status="to_read"))


def mark_read(session: Session, message_id: int, by: str, now: datetime,
              actor: str) -> tuple[Message | None, bool]:
    """A person has read a patient's message the bot could not handle, or one it passed on to
    the team (and followed it up): status "read", audited as inbound.read with who. Returns
    (message, changed): None for no such inbound message; a message not waiting to be read is
    left as it is."""
    if not 0 < message_id <= MAX_ID:  # no such row (and the drivers refuse such an int)
        return None, False
    message = session.get(Message, message_id, with_for_update=True)
    if message is None or message.direction != "in":
        return None, False
    if message.status not in ("unprocessed", "to_read"):
        return message, False
    message.status, message.updated_at = "read", now
    audit(session, now, actor, "inbound.read", "message", message.id, by=by)
    return message, True


def stale_after(settings: Settings) -> timedelta:
    """How long without a finished tick before the scheduler counts as stopped."""
    return timedelta(seconds=max(60.0, 6 * settings.scheduler.tick_seconds))


def report(session: Session, settings: Settings, now: datetime, spooled: int = 0,
           set_aside: int = 0) -> dict:
    """Every check with its figures, and `problems`: one short line per check that failed.
    `spooled`: inbound messages waiting in this host's spool for the database; `set_aside`:
    spool files a person must read (unreadable, or failing every replay)."""
    problems: list[str] = []
    if settings.messenger_name == "twilio" and not settings.public_url:
        # Without it no status_callback is passed: failed deliveries would go unnoticed.
        problems.append("config: CHECKIN_PUBLIC_URL is not set, so Twilio sends no delivery "
                        "receipts")
    if settings.messenger_name == "twilio" and not (settings.secret_key or settings.admin_token):
        from bot.services.staff import any_active

        if any_active(session):  # the web app refuses to start so (dashboard.check_signing_key)
            problems.append("config: staff accounts exist and CHECKIN_SECRET_KEY is not set: "
                            "the web app will not start")

    hb = session.get(Heartbeat, SCHEDULER)
    age = (now - hb.beat_at).total_seconds() if hb else None
    scheduler_ok = age is not None and age <= stale_after(settings).total_seconds()
    if hb is None:
        problems.append("scheduler: has never run against this database")
    elif not scheduler_ok:
        problems.append(f"scheduler: last tick {int(age)} s ago")
    elif hb.problem:
        scheduler_ok = False
        problems.append(f"scheduler: last tick {hb.problem}")

    cutoff = now - OVERDUE_AFTER
    overdue_rows = or_(
        and_(OutboxItem.status == "pending", OutboxItem.next_attempt_at <= cutoff),
        and_(OutboxItem.status == "sending", OutboxItem.claimed_until <= cutoff),
    )
    overdue, oldest = session.execute(
        select(func.count(), func.min(OutboxItem.next_attempt_at)).where(overdue_rows)).one()
    failed_24h = session.scalar(select(func.count()).select_from(OutboxItem).where(
        OutboxItem.status == "failed", OutboxItem.created_at >= now - timedelta(hours=24)))
    unprocessed = session.scalar(select(func.count()).select_from(Message).where(
        UNPROCESSED, Message.direction == "in"))
    unanswered = _unacknowledged(session, settings, now)
    for level, (count, oldest_at) in unanswered.items():
        if count:
            problems.append(
                f"escalations: {count} {level} red flag(s) still unacknowledged after every "
                f"care-team contact was alerted (oldest opened "
                f"{int((now - oldest_at).total_seconds() // 60)} min ago)")
    failed_alerts = session.scalar(select(func.count()).select_from(OutboxItem).join(
        Message, Message.id == OutboxItem.message_id).join(
        Escalation, Escalation.id == Message.escalation_id).where(
        OutboxItem.status == "failed", OutboxItem.kind == "alert", Escalation.status == "open"))
    failed_instructions = session.scalar(select(func.count()).select_from(OutboxItem).where(
        OutboxItem.status == "failed", OutboxItem.kind.in_(("emergency", "urgent")),
        OutboxItem.created_at >= now - timedelta(hours=24)))
    if failed_alerts:
        problems.append(f"alerts: {failed_alerts} care-team alert(s) of open red flags could "
                        "not be sent (a wrong number in care_team?)")
    if failed_instructions:
        problems.append(f"outbox: {failed_instructions} emergency or urgent instruction(s) to "
                        "patients could not be sent in the last 24 hours")
    if overdue:
        problems.append(f"outbox: {overdue} message(s) overdue")
    if unprocessed:
        problems.append(f"inbound: {unprocessed} patient message(s) could not be handled, only "
                        "checked for red flags: read them (checkin-bot unprocessed)")
    countries = _countries_without_emergency_number(session, settings)
    if countries:
        problems.append(
            f"config: {sum(countries.values())} patient(s) live in a country with no emergency "
            f"number configured ({', '.join(f'{c}: {n}' for c, n in sorted(countries.items()))}"
            f"): their texts say to call {settings.clinic.emergency_number}; add the country "
            "to clinic.emergency_numbers_abroad (listed in Needs attention)")
    if spooled:
        problems.append(f"spool: {spooled} inbound message(s) waiting for the database")
    if set_aside:
        problems.append(f"spool: {set_aside} file(s) set aside for a person to read "
                        "(.bad in CHECKIN_SPOOL_DIR)")

    return {
        "status": "ok" if not problems else "degraded",
        "problems": problems,
        "scheduler": {
            "ok": scheduler_ok,
            "last_tick": hb.beat_at.isoformat() if hb else None,
            "seconds_since_tick": None if age is None else round(age),
            "host": hb.host if hb else None,
            "pid": hb.pid if hb else None,
            "problem": hb.problem if hb else None,
        },
        "outbox": {
            "overdue": overdue,
            "oldest_overdue_seconds": (
                round((now - oldest).total_seconds()) if oldest else None),
            "failed_last_24h": failed_24h,
            "failed_alerts_open": failed_alerts,
            "failed_instructions_last_24h": failed_instructions,
        },
        "escalations": {
            f"{level}_unacknowledged_after_full_round": count
            for level, (count, _) in unanswered.items()
        },
        "unprocessed_inbound": unprocessed,
        "spooled_inbound": spooled,
        "spool_set_aside": set_aside,
    }



def _unacknowledged(session: Session, settings: Settings,
                    now: datetime) -> dict[str, tuple[int, datetime | None]]:
    """Open red flags that every contact of the escalation chain has had time to acknowledge
    and nobody has: the chain has gone all the way round (each contact alerted and their time
    run out, or their alert failed) since it last started. The alerts are not reaching anyone,
    or nobody is answering. Counted from the chain's position, which an upgrade from urgent to
    emergency resets, not from when the red flag was first opened. Per level: (how many, when
    the oldest was opened)."""
    chain = len(settings.care_team.escalation_chain)
    found = {}
    for level in ("emergency", "urgent"):
        found[level] = session.execute(
            select(func.count(), func.min(Escalation.created_at)).where(
                Escalation.status == "open", Escalation.level == level,
                Escalation.chain_position >= chain)).one()
    return found
