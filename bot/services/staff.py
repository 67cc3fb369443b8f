"""Staff accounts: each care coordinator signs in to the dashboard as themselves.

Passwords are hashed with werkzeug.security (its default method, salted); only the hash is
stored, and neither the password nor its hash goes into the audit log or the logs. Every
change is audited (`staff.add`, `staff.disable`, `staff.enable`, `staff.password`).
Disabling an account or resetting its password ends its dashboard sessions at once; the
dashboard also checks the account on every request.

An account may also hold API tokens (`checkin-bot staff token ...`): random bearer tokens for
the JSON API, shown once when made; only their SHA-256 is stored. A token works while it is not
revoked and its account is active, and the API then records "user:<username>" as the actor.
Adding and revoking are audited (`staff.token_add`, `staff.token_revoke`), never with the
token or its hash.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from bot.services.audit import audit
from bot.services.patients import InvalidField, check_text
from bot.store.models import MAX_ID, DashboardSession, Staff, StaffToken

USERNAME_RE = re.compile(r"[a-z0-9._-]{3,32}")
USERNAME_RULE = "3 to 32 characters: lower-case letters, digits, '.', '_' or '-'"
NAME_CHARS = 60  # "Signed in as <name>"; the same limit as the dashboard's claimed names
MIN_PASSWORD = 12
MAX_PASSWORD = 1024


TOKEN_BYTES = 32  # secrets.token_urlsafe(32): 43 characters
LABEL_CHARS = 60
# last_used_at is written at most this often per token, not on every request
LAST_USED_EVERY = timedelta(minutes=1)


class StaffNotFound(LookupError):
    """No staff account with that username."""


class TokenNotFound(LookupError):
    """The account has no API token with that id."""


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
    check_text("name", name)  # invisible characters, as in a patient's name
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


def dashboard_usable(session: Session, settings) -> bool:
    """Whether the dashboard can be opened at all (as bot.web.dashboard._guard decides): the
    dev messenger, an admin token, or, on real phones without one, an active staff account
    and CHECKIN_SECRET_KEY to sign its sessions. Otherwise every page of it is a 403."""
    if settings.messenger_name == "dev" or settings.admin_token:
        return True
    return bool(settings.secret_key) and any_active(session)


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


# -- API tokens --------------------------------------------------------------------------------


def token_hash(token: str) -> str:
    """What is stored of a token: its SHA-256 (the token is random, so no salt is needed)."""
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def check_label(raw: str | None) -> str | None:
    """An optional note of where a token is used ("laptop"); None when blank."""
    label = " ".join((raw or "").split())
    if not label:
        return None
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in label):
        raise InvalidField("label", "contains a control character")
    if len(label) > LABEL_CHARS:
        raise InvalidField("label", f"at most {LABEL_CHARS} characters")
    return label


def add_token(session: Session, username: str, label: str | None, now: datetime,
              actor: str) -> tuple[StaffToken, str]:
    """A new API token for this account: (its row, the token). The token itself is not kept
    anywhere: the caller shows it once. Raises StaffNotFound, or InvalidField for a bad label
    or a disabled account (whose tokens would not work)."""
    label = check_label(label)
    staff = _get(session, username)
    if not staff.active:
        raise InvalidField("username", f"{username!r} is disabled: enable it first")
    token = secrets.token_urlsafe(TOKEN_BYTES)
    row = StaffToken(staff_id=staff.id, token_hash=token_hash(token), label=label,
                     created_at=now)
    session.add(row)
    session.flush()
    audit(session, now, actor, "staff.token_add", "staff", staff.id, username=staff.username,
          token_id=row.id, label=label)
    return row, token


def list_tokens(session: Session, username: str) -> list[StaffToken]:
    """The account's API tokens, oldest first, revoked ones too. Raises StaffNotFound."""
    staff = find_staff(session, username)
    if staff is None:
        raise StaffNotFound(username)
    return list(session.scalars(
        select(StaffToken).where(StaffToken.staff_id == staff.id).order_by(StaffToken.id)))


def revoke_token(session: Session, username: str, token_id: int, now: datetime,
                 actor: str) -> tuple[StaffToken, bool]:
    """Revoke one of the account's tokens: (token, whether it changed). A token already
    revoked stays as it was, and nothing is audited. Raises StaffNotFound, TokenNotFound."""
    staff = _get(session, username)
    if not 0 < token_id <= MAX_ID:  # no such row can exist (and drivers refuse such an int)
        raise TokenNotFound(token_id)
    row = session.scalar(select(StaffToken).where(
        StaffToken.id == token_id, StaffToken.staff_id == staff.id).with_for_update())
    if row is None:
        raise TokenNotFound(token_id)
    if row.revoked_at is not None:
        return row, False
    row.revoked_at = now
    audit(session, now, actor, "staff.token_revoke", "staff", staff.id,
          username=staff.username, token_id=row.id, label=row.label)
    return row, True


@dataclass(frozen=True)
class TokenCheck:
    """What a bearer token is: `staff` is set only for a live token (not revoked, account
    active); `known` says whether it is a staff token at all (live or not)."""

    known: bool
    staff: Staff | None = None
    token_id: int | None = None
    reason: str = "unknown"  # "ok", "revoked", "account disabled" (for the logs only)


def check_token(session: Session, token: str, now: datetime) -> TokenCheck:
    """Look a bearer token up by its hash. A live one's last_used_at is brought up to date if
    it is LAST_USED_EVERY old or more (so a busy client writes once a minute, not on every
    request)."""
    if not token:
        return TokenCheck(False)
    digest = token_hash(token)
    row = session.scalar(select(StaffToken).where(StaffToken.token_hash == digest))
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        return TokenCheck(False)
    staff = session.get(Staff, row.staff_id)
    if row.revoked_at is not None:
        return TokenCheck(True, token_id=row.id, reason="revoked")
    if staff is None or not staff.active:
        return TokenCheck(True, token_id=row.id, reason="account disabled")
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_EVERY:
        row.last_used_at = now
    return TokenCheck(True, staff=staff, token_id=row.id, reason="ok")


_unused_hash: str | None = None


def _dummy_hash() -> str:
    """A hash no password is known for: checked when the username is unknown or disabled, so
    a wrong username takes as long to refuse as a wrong password."""
    global _unused_hash
    if _unused_hash is None:
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
