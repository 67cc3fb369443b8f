"""Plain dicts for JSON output (API, CLI)."""

from __future__ import annotations

from datetime import datetime

from bot.store.models import Escalation, Message, OutboxItem, Patient


def iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def patient_json(p: Patient) -> dict:
    return {
        "id": p.id, "phone": p.phone, "name": p.name, "channel": p.channel,
        "timezone": p.timezone, "language": p.language, "status": p.status,
        "consent_at": iso(p.consent_at), "created_at": iso(p.created_at),
    }


def message_json(m: Message) -> dict:
    return {
        "id": m.id, "direction": m.direction, "channel": m.channel, "body": m.body,
        "kind": m.kind, "status": m.status, "segments": m.segments,
        "media": m.media or [], "created_at": iso(m.created_at),
    }


def escalation_json(e: Escalation) -> dict:
    return {
        "id": e.id, "ref": e.ref, "patient_id": e.patient_id,
        "patient": e.patient.name if e.patient else None,
        "phone": None if e.patient else e.phone,  # a number that is not enrolled
        "level": e.level,
        "flags": list(e.flags), "status": e.status, "created_at": iso(e.created_at),
        "acknowledged_by": e.acknowledged_by, "acknowledged_at": iso(e.acknowledged_at),
        "resolved_at": iso(e.resolved_at), "resolution_note": e.resolution_note,
        "alerts_sent": e.alerts_sent,
    }


def failed_json(item: OutboxItem, m: Message) -> dict:
    return {
        "message_id": m.id, "patient_id": item.patient_id, "to": item.to,
        "channel": item.channel, "kind": item.kind, "attempts": item.attempts,
        "error": item.last_error, "error_code": m.error_code, "created_at": iso(m.created_at),
    }
