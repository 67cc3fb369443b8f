"""Audit records: every admin action and every change to an escalation leaves one."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from bot.store.models import AuditLog


def audit(
    session: Session,
    now: datetime,
    actor: str,
    action: str,
    subject_type: str,
    subject_id: object = None,
    **details: Any,
) -> None:
    session.add(
        AuditLog(
            at=now,
            actor=actor,
            action=action,
            subject_type=subject_type,
            subject_id=None if subject_id is None else str(subject_id),
            details=details,
        )
    )
