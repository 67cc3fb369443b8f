"""Staff accounts: each care coordinator signs in to the dashboard as themselves.

Passwords are hashed with werkzeug.security (its default method, salted); only the hash is
stored, and neither the password nor its hash goes into the audit log or the logs. Every
change is audited (`staff.add`, `staff.disable`, `staff.enable`, `staff.password`).
Disabling an account or resetting its password ends its dashboard sessions at once; the
dashboard also checks the account on every request.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from bot.services.audit import audit
from bot.services.patients import InvalidField
from bot.store.models import DashboardSession, Staff

USERNAME_RE = re.compile(r"[a-z0-9._-]{3,32}")
USERNAME_RULE = "3 to 32 characters: lower-case letters, digits, '.', '_' or '-'"
NAME_CHARS = 60  # "Signed in as <name>"; the same limit as the dashboard's claimed names
MIN_PASSWORD = 12
MAX_PASSWORD = 1024


class StaffNotFound(LookupError):
    """No staff account with that username."""


def check_username(raw: str) -> str:
    if not USERNAME_RE.fullmatch(raw or ""):
        raise InvalidField("username", USERNAME_RULE)
    return raw


def check_display_name(raw: str) -> str:
    name = " ".join((raw or "").split())
    if not name:
        raise InvalidField("name", "required: the name the dashboard shows and records")
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in name):
        raise InvalidField("name", "contains a control character")
    if len(name) > NAME_CHARS:
        raise InvalidField("name", f"at most {NAME_CHARS} characters")
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise InvalidField("password", f"too short: at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise InvalidField("password", f"too long: at most {MAX_PASSWORD} characters")
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in password):
        raise InvalidField("password", "contains a control character")
    return password


def find_staff(session: Session, username: str) -> Staff | None:
    return session.scalar(select(Staff).where(Staff.username == username))


def any_active(session: Session) -> bool:
    """Whether the dashboard signs people in with their own accounts."""
    return session.scalar(select(Staff.id).where(Staff.active.is_(True)).limit(1)) is not None


def list_staff(session: Session) -> list[Staff]:
    return list(session.scalars(select(Staff).order_by(Staff.username)))


def add_staff(session: Session, username: str, name: str, password: str, now: datetime,
              actor: str) -> Staff:
    username = check_username(username)
    name = check_display_name(name)
    check_password(password)
    if find_staff(session, username) is not None:
        raise InvalidField("username", f"{username!r} is already taken")
    staff = Staff(username=username, display_name=name,
                  password_hash=generate_password_hash(password), active=True, created_at=now)
    try:
        with session.begin_nested():
            session.add(staff)
            session.flush()
    except IntegrityError:  # added elsewhere between the check and the insert
        if find_staff(session, username) is None:
            raise
        raise InvalidField("username", f"{username!r} is already taken") from None
    audit(session, now, actor, "staff.add", "staff", staff.id, username=username, name=name)
    return staff


def _get(session: Session, username: str) -> Staff:
    staff = session.scalar(select(Staff).where(Staff.username == username).with_for_update())
    if staff is None:
        raise StaffNotFound(username)
    return staff


def end_sessions(session: Session, staff_id: int, now: datetime) -> int:
    """End every dashboard session of this account that has not ended; returns how many."""
    result = session.execute(
        update(DashboardSession)
        .where(DashboardSession.staff_id == staff_id, DashboardSession.ended_at.is_(None))
        .values(ended_at=now))
    return result.rowcount or 0


def set_active(session: Session, username: str, active: bool, now: datetime,
               actor: str) -> tuple[Staff, bool]:
    """Enable or disable an account; (account, whether it changed). Disabling ends its
    sessions. Nothing changes, and nothing is audited, if it already was so."""
    staff = _get(session, username)
    if staff.active == active:
        return staff, False
    staff.active = active
    ended = 0 if active else end_sessions(session, staff.id, now)
    details = {"username": staff.username}
    if not active:
        details["sessions_ended"] = ended
    audit(session, now, actor, "staff.enable" if active else "staff.disable", "staff",
          staff.id, **details)
    return staff, True


def set_password(session: Session, username: str, password: str, now: datetime,
                 actor: str) -> Staff:
    """A new password (a reset); the account's sessions end, so it signs in again."""
    check_password(password)
    staff = _get(session, username)
    staff.password_hash = generate_password_hash(password)
    ended = end_sessions(session, staff.id, now)
    audit(session, now, actor, "staff.password", "staff", staff.id, username=staff.username,
          sessions_ended=ended)
    return staff


_unused_hash: str | None = None


def _dummy_hash() -> str:
    """A hash no password is known for: checked when the username is unknown or disabled, so
    a wrong username takes as long to refuse as a wrong password."""
    global _unused_hash
    if _unused_hash is None:
        import secrets

        _unused_hash = generate_password_hash(secrets.token_urlsafe(32))
    return _unused_hash


def authenticate(session: Session, username: str, password: str) -> tuple[Staff | None, str]:
    """The active account these credentials open, or None and why not (for the audit log
    only: the person signing in is told the same thing whatever the reason)."""
    staff = find_staff(session, username) if USERNAME_RE.fullmatch(username) else None
    if staff is None:
        check_password_hash(_dummy_hash(), password)
        return None, "no such account"
    if not check_password_hash(staff.password_hash, password):
        return None, "wrong password"
    if not staff.active:
        return None, "account disabled"
    return staff, "ok"
