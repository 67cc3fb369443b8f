"""The care coordinators' dashboard: who needs attention now, the patients, their transcripts;
enrolling patients and setting their schedules.

Server-rendered HTML (templates in bot/web/templates/dashboard/), no JavaScript. Every action
goes through the services the API uses (bot.services.escalations, patients, schedules) and
leaves an audit record with the signed-in person as its actor.

Access:
- at least one active staff account (`checkin-bot staff add`): /dashboard/login asks for a
  username and password; the actor is "user:<username>" (verified). The account is checked
  on every request, so disabling it ends its sessions at once.
- otherwise, as before and like /api: with CHECKIN_ADMIN_TOKEN, the token and a name the
  coordinator types (actor "dashboard:<name>", claimed, not verified); no token on the dev
  messenger (`make run`): open, but the name is still asked for once; no token on the Twilio
  messenger: refused (403), as the API is.

The session is a signed cookie of the dashboard's own (path /dashboard, HttpOnly,
SameSite=Strict, Secure on https), signed with a key derived from CHECKIN_SECRET_KEY if set,
else from the admin token, so every gunicorn worker agrees, and changing the key signs
everyone out. It holds the name (or the staff account's id and username), whether the token
was given, a random session id (held server-side too, see DashboardSession), a random CSRF
token that every POST form must carry, and a one-shot message for the next page. Nothing in it
is patient data: the patients page's search (a name or number) is kept on the session's row
(DashboardSession.search), never in the cookie or a URL.
"""

from __future__ import annotations

import bisect
import hashlib
import hmac
import logging
import posixpath
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from flask import (
    Blueprint,
    abort,
    g,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import case, delete, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, selectinload
from unidecode import unidecode
from werkzeug.exceptions import HTTPException

from bot.domain.schedule import WEEKDAYS, rhythm
from bot.services import audit as audit_service
from bot.services import escalations as esc_service
from bot.services import health
from bot.services import schedules as sched_service
from bot.services import staff as staff_service
from bot.services.audit import audit
from bot.services.context import (
    emergency_number_warning,
    number_zone_warning,
    readable_phone,
)
from bot.services.conversations import CHECKIN_FLOW
from bot.services.dispatcher import quiet_hours_hold
from bot.services.history import checkin_history
from bot.services.patients import (
    CHANNELS,
    DISCHARGED,
    REASON_CHARS,
    AlreadyDischarged,
    Enrolment,
    InvalidField,
    PatientChanges,
    StatusRefused,
    check_language,
    check_text,
    check_timezone,
    current_discharge,
    discharge_patient,
    is_discharged,
    normalise_phone,
    onboard_patient,
    phone_examples,
    phone_region,
    refuse_resume,
    update_patient,
)
from bot.services.schedules import list_schedules
from bot.store.models import (
    MAX_ID,
    AuditLog,
    Conversation,
    DashboardSession,
    Escalation,
    Message,
    OutboxItem,
    Patient,
    Schedule,
    Staff,
)
from bot.web.api import REF_RE
from bot.web.common import recent_failures, runtime

log = logging.getLogger(__name__)

bp = Blueprint("dashboard", __name__, url_prefix="/dashboard")

COOKIE = "checkin_dashboard"
COOKIE_PATH = "/dashboard"
SESSION_SECONDS = 12 * 3600  # one long shift; then sign in again
SESSIONS_KEPT = timedelta(days=1)  # ended sessions' rows go this long after they ran out
REFRESH_SECONDS = 30
NAME_CHARS = 60  # "dashboard:" + name fits AuditLog.actor (80)
NOTE_CHARS = esc_service.NOTE_CHARS
TRANSCRIPT_MESSAGES = 1000  # the newest ones, shown oldest first
FAILED_HOURS = 24
RECENT_DAYS = 7
# The check-in flow's node for "we have not heard back, this check-in is now closed".
NO_REPLY_END = "no_reply_end"
OPT_OUT_WORD_CHARS = 30  # the word an opt-out was made with, as shown
# A red flag's words on its card on the first page: longer ones are quoted around the phrases
# that raised it (as the SMS alert does), the whole a tap away. A thousand characters shown
# whole would push the first red flag's Call button off a phone's first screen.
CARD_WORDS_CHARS = 140


# -- the session cookie ----------------------------------------------------------------------


def _serializer() -> URLSafeTimedSerializer:
    """Signs the cookie with HMAC-SHA256(CHECKIN_SECRET_KEY, "checkin-dashboard-session"), or,
    without that, HMAC-SHA256(admin token, the same).

    Without either (dev messenger only: see _guard and check_signing_key) the key comes from
    the database URL: stable across processes, and the dashboard is a development one then.
    """
    settings = runtime().settings
    if settings.secret_key:
        key = hmac.new(settings.secret_key.encode(), b"checkin-dashboard-session",
                       hashlib.sha256).digest()
    elif settings.admin_token:
        key = hmac.new(settings.admin_token.encode(), b"checkin-dashboard-session",
                       hashlib.sha256).digest()
    else:
        key = hmac.new(f"dev:{settings.database_url}".encode(),
                       b"checkin-dashboard-session", hashlib.sha256).digest()
    return URLSafeTimedSerializer(key, salt="checkin-dashboard",
                                  signer_kwargs={"digest_method": hashlib.sha256})


def _token_mark(settings) -> str:
    """Which admin token a session was opened with, kept in its cookie: changing the token
    ends those sessions even when CHECKIN_SECRET_KEY, not the token, signs the cookie. An
    HMAC under the signing secret, so the cookie (signed, not encrypted) does not let anyone
    test guesses at the token without that secret."""
    key = (settings.secret_key or settings.admin_token or "").encode()
    return hmac.new(key, b"checkin-dashboard-token:" + settings.admin_token.encode(),
                    hashlib.sha256).hexdigest()[:32]


def _load_session() -> None:
    g.dash = {}
    g.dash_modified = False
    raw = request.cookies.get(COOKIE)
    if raw:
        try:
            data = _serializer().loads(raw, max_age=SESSION_SECONDS)
        except BadSignature:  # expired, tampered with, or signed with an older token
            data = None
        if isinstance(data, dict):
            g.dash = data


def _session_set(**values: Any) -> None:
    g.dash.update(values)
    g.dash_modified = True


def _csrf_token() -> str:
    if not isinstance(g.dash.get("csrf"), str):
        _session_set(csrf=secrets.token_urlsafe(32))
    return g.dash["csrf"]


def _flash(text: str, kind: str = "ok") -> None:
    _session_set(flash={"text": text, "kind": kind})


def _take_flash() -> dict | None:
    message = g.dash.pop("flash", None)
    if message is not None:
        g.dash_modified = True
    return message if isinstance(message, dict) else None


def _session_hash(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


@dataclass(frozen=True)
class Access:
    """Who is signed in on this request, and how the dashboard signs people in."""

    staff_mode: bool  # at least one active staff account: username and password
    signed_in: bool
    name: str | None = None  # shown and recorded as who did it (the account's display name)
    username: str | None = None  # a staff account's, verified


def _access() -> Access:
    """Checked once a request, first thing (see _guard), before any transaction of the page's
    own: the check reads the database."""
    cached = g.get("dash_access")
    if cached is None:
        cached = g.dash_access = _read_access()
    return cached


def _signed_in() -> bool:
    return _access().signed_in


def _read_access() -> Access:
    """A session that still holds: not signed out, less than SESSION_SECONDS since sign-in
    (however busy: not sliding), and
    - with staff accounts in use: signed in with one that is still active;
    - else: a name, signed in with the token when one is set."""
    rt = runtime()
    sid = g.dash.get("sid")
    with rt.transaction() as s:
        staff_mode = staff_service.any_active(s)
        refused = Access(staff_mode, False)
        if not isinstance(sid, str):
            return refused
        staff_id = g.dash.get("staff_id")
        if staff_mode:
            if not isinstance(staff_id, int):  # a token session from before the accounts
                return refused
        else:
            if not isinstance(g.dash.get("name"), str) or not g.dash["name"]:
                return refused
            if rt.settings.admin_token and not (
                    isinstance(g.dash.get("auth"), str)
                    and hmac.compare_digest(g.dash["auth"], _token_mark(rt.settings))):
                return refused  # not signed in with the token, or with one changed since
        row = s.get(DashboardSession, _session_hash(sid))
        if (row is None or row.ended_at is not None
                or rt.clock.now() - row.started_at >= timedelta(seconds=SESSION_SECONDS)):
            return refused
        if not staff_mode:
            return Access(False, True, name=g.dash["name"])
        account = s.get(Staff, staff_id)
        if account is None or not account.active or row.staff_id != account.id:
            return refused
        return Access(True, True, name=account.display_name, username=account.username)


# Wrong tokens from one address: after this many within the window, that address is refused
# without a check until the window has passed (per web worker).
LOGIN_FAILURES = 5
LOGIN_WINDOW = timedelta(minutes=10)


def _recent_failures(address: str, now: datetime, add: bool = False) -> int:
    """Wrong tokens or passwords from `address` within LOGIN_WINDOW (this app's own count)."""
    return recent_failures("dashboard_login", address, now, LOGIN_WINDOW, add)


def _name() -> str:
    return _access().name


def _actor() -> str:
    access = _access()
    if access.username:
        return f"user:{access.username}"
    return f"dashboard:{access.name}"


def clean_name(raw: str | None) -> str:
    """A person's name for the audit log: printable characters, spaces collapsed, short."""
    text = "".join(ch if ch.isprintable() else " " for ch in (raw or ""))
    return " ".join(text.split())[:NAME_CHARS]


def _safe_next(target: str | None) -> str:
    """A path inside the dashboard to go back to (never another site, nor another part of
    this one: no "..", no encoded slashes)."""
    if target and target.startswith("/dashboard") and not target.startswith("//") \
            and "\\" not in target and all(ch.isprintable() for ch in target):
        path = target.split("?", 1)[0]
        if ".." not in path and "%" not in path and \
                posixpath.normpath(path).startswith("/dashboard"):
            return target
    return url_for("dashboard.index")


# -- every request ---------------------------------------------------------------------------


@bp.before_request
def _guard():
    # Off as staff.dashboard_usable says (alerts leave out their link to it then).
    settings = runtime().settings
    keyless = settings.messenger_name != "dev" and not settings.admin_token
    if keyless and not settings.secret_key:
        return _off("The dashboard is off: set CHECKIN_ADMIN_TOKEN to use it with the Twilio "
                    "messenger (real phones), or, with staff accounts, CHECKIN_SECRET_KEY.")
    _load_session()
    access = _access()  # now, outside any transaction of the page's own
    if keyless and not access.staff_mode:
        return _off("The dashboard is off: set CHECKIN_ADMIN_TOKEN to use it with the Twilio "
                    "messenger (real phones), or add staff accounts (checkin-bot staff add).")
    if request.method == "POST":
        given = request.form.get("csrf", "")
        expected = g.dash.get("csrf")
        if not isinstance(expected, str) or not hmac.compare_digest(
                given.encode("utf-8", "replace"), expected.encode()):
            if request.endpoint == "dashboard.resolve" and not _signed_in():
                return _sign_in_to_resolve()  # the cookie ran out with the session
            abort(400, description="This form has expired or did not come from the "
                                   "dashboard. Nothing was changed. Go back, reload the page "
                                   "and try again.")
    if request.endpoint == "dashboard.login":
        return None
    if not _signed_in():
        if request.endpoint == "dashboard.resolve":
            return _sign_in_to_resolve()
        if request.method == "POST":
            return redirect(url_for("dashboard.login"), 303)
        target = request.full_path.rstrip("?")
        if request.endpoint == "dashboard.patients" and "q" in request.args:
            target = request.path  # an old search's name or number stays out of the address
        return redirect(url_for("dashboard.login", next=target), 303)
    for key, value in (request.view_args or {}).items():
        if isinstance(value, int) and value > MAX_ID:
            abort(404, description=f"No {key.removesuffix('_id')} {value}.")
    return None


def _off(message: str):
    return render_template("dashboard/error.html", code=403, title="Dashboard off",
                           message=message, signed_in=False), 403


def clean_note(raw: str | None) -> str:
    """A resolution note as stored: printable characters, lines and tabs kept, trimmed."""
    text = "".join(ch for ch in (raw or "") if ch.isprintable() or ch in "\n\t")
    return text.strip()[:NOTE_CHARS]


ESCALATION_PAGE_RE = re.compile(r"/dashboard/escalations/([A-Za-z0-9]{1,16})")


def _kept_note(target: str) -> str:
    """A resolution note carried through the sign-in form (see _sign_in_to_resolve), when
    the page to go back to is a red flag's."""
    return clean_note(request.form.get("note")) if ESCALATION_PAGE_RE.fullmatch(target) else ""


def _sign_in_to_resolve():
    """Resolve pressed after the session ended (12 h after signing in: a note typed at 3 a.m.
    by someone signed in at 3 p.m.). Nothing is saved; the sign-in page says so and carries
    the note in its form (not in the cookie), and after signing in the red flag's page shows
    it again, to check and save with one tap."""
    ref = (request.view_args or {}).get("ref", "")
    if not REF_RE.match(ref.strip()):
        abort(404, description="No such red flag.")
    ref = ref.strip().upper()
    target = url_for("dashboard.escalation", ref=ref)
    error = (f"Your sign-in ran out before this was saved, so {ref} is not resolved yet: sign "
             "in again and your note comes back to save.")
    note = clean_note(request.form.get("note"))
    if _access().staff_mode:
        return _render("dashboard/login.html", 401, error=error, staff_mode=True,
                       needs_token=False, next=target, username="", note=note)
    return _render("dashboard/login.html", 401, needs_token=bool(runtime().settings.admin_token),
                   next=target, error=error, name=g.dash.get("name") or "", note=note)


def _after_sign_in(target: str, note: str):
    """Where a sign-in goes: the page asked for; with a note kept from a resolve the session
    ran out on, that red flag's page showing the note, not saved yet."""
    match = ESCALATION_PAGE_RE.fullmatch(target)
    if note and match:
        _access()  # who is signed in now: read before the page's own transaction
        with runtime().transaction() as s:
            esc = s.scalars(select(Escalation).options(selectinload(Escalation.patient))
                            .where(Escalation.ref == match.group(1).upper())).first()
            if esc is not None and esc.status == "resolved":
                _flash(_taken_message(s, esc) + " Your note was not saved.", "error")
            elif esc is not None:
                return _render("dashboard/escalation.html", esc=esc,
                               who=_who(esc.patient, esc.phone),
                               flags=[f.replace("_", " ") for f in esc.flags], error=None,
                               note=note, kept=True)
    return redirect(target, 303)


def check_signing_key(rt) -> None:
    """At start-up: refuse to run the web app with staff accounts on the Twilio messenger and
    nothing to sign their sessions with but the database URL (CHECKIN_SECRET_KEY or
    CHECKIN_ADMIN_TOKEN is needed). An account added later is met by _guard, which keeps the
    dashboard off then. A database that does not answer (or is not migrated yet) is left to
    the rest of the start-up: the dashboard stays off without a key anyway."""
    from bot.config import ConfigError

    settings = rt.settings
    if settings.messenger_name == "dev" or settings.admin_token or settings.secret_key:
        return
    try:
        with rt.transaction() as s:
            in_use = staff_service.any_active(s)
    except SQLAlchemyError:
        return
    if in_use:
        raise ConfigError("config: secret_key: staff accounts exist and the messenger is "
                          "twilio: set CHECKIN_SECRET_KEY (or CHECKIN_ADMIN_TOKEN) to sign "
                          "dashboard sessions")


@bp.after_request
def _finish(response):
    if getattr(g, "dash_modified", False):
        response.set_cookie(
            COOKIE, _serializer().dumps(g.dash), max_age=SESSION_SECONDS, path=COOKIE_PATH,
            httponly=True, samesite="Strict", secure=_served_over_https())
    return _protect(response)


def _served_over_https() -> bool:
    """This request came over https: as Flask sees it (directly, or behind ProxyFix), or to
    the host of an https CHECKIN_PUBLIC_URL (a TLS proxy in front that ProxyFix is not told
    of; the same app reached on the inside by another name, over http, is not)."""
    if request.is_secure:
        return True
    public = urlsplit(runtime().settings.public_url or "")
    try:
        host = urlsplit("//" + request.host).hostname
    except ValueError:  # a Host header that is no host ("[")
        return False
    return public.scheme == "https" and bool(public.hostname) and public.hostname == host


def _protect(response):
    # Patient data: never cached, never framed; no script runs on these pages.
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'")
    return response


@bp.errorhandler(HTTPException)
def _error(exc: HTTPException):
    code = exc.code or 500
    message = exc.description if code != 500 else "Something went wrong on the server."
    try:
        signed_in = "dash" in g and _signed_in()
    except SQLAlchemyError:  # the database is what failed: say so without a name
        signed_in = False
    res = render_template("dashboard/error.html", code=code, title=exc.name, message=message,
                          signed_in=signed_in, me=_name() if signed_in else None,
                          csrf=_csrf_token() if "dash" in g else "",
                          clinic=runtime().settings.clinic.name)
    headers = [(k, v) for k, v in exc.get_headers() if k.lower() != "content-type"]
    return res, code, headers


def error_page(exc: HTTPException):
    """The dashboard's error page for a URL under /dashboard/ that matches no page (routing's
    404 and 405, which the blueprint's own handler never sees)."""
    _load_session()
    body, code, headers = _error(exc)
    response = make_response(body, code, headers)
    return _protect(response)


# -- rendering helpers -----------------------------------------------------------------------


def _when(value: datetime | None, zone: str | None = None) -> str:
    """A time as the dashboard shows it: in the clinic's zone, with the zone's abbreviation.
    With a patient's `zone` other than the clinic's, in theirs first and then the clinic's:
    "Mon 02 Mar 22:00 EST (Tue 03 Mar 03:00 GMT)", so that a schedule set for 22:00 their
    time reads 22:00."""
    if value is None:
        return "-"
    clinic = runtime().settings.defaults.timezone

    def shown(tz: str) -> str:
        local = value.astimezone(ZoneInfo(tz))
        return local.strftime("%a %d %b %H:%M ") + (local.tzname() or "")

    if zone is None or zone == clinic:
        return shown(clinic)
    return f"{shown(zone)} ({shown(clinic)})"


def _relative(now: datetime, value: datetime | None) -> str:
    """How long ago (or in how long) `value` is: "5 min ago", "in 1 h 50 min"."""
    if value is None:
        return "-"
    seconds = (now - value).total_seconds()
    future = seconds < 0
    seconds = abs(seconds)
    if seconds < 60:
        span = "under a minute"
    elif seconds < 3600:
        span = f"{int(seconds // 60)} min"
    elif seconds < 48 * 3600:
        span = f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"
    else:
        span = f"{int(seconds // 86400)} days"
    return f"in {span}" if future else f"{span} ago"


DIALABLE_RE = re.compile(r"\+[1-9][0-9]{6,14}")


@bp.app_template_filter("dialable")
def _dialable(phone: str | None) -> bool:
    """An E.164 number a phone can call from a tel: link (not "?", a short code or a
    sender id)."""
    return bool(phone and DIALABLE_RE.fullmatch(phone))


@bp.app_template_filter("rhythm")
def _rhythm(every_days: int, weekday: str | None = None) -> str:
    return rhythm(every_days, weekday)


@bp.app_template_filter("readable_phone")
def _readable_phone(phone: str | None) -> str:
    """+447700900123 -> +44 7700 900123: read at a glance, as the texts to patients write it."""
    return readable_phone(phone) if phone else ""


def _render(template: str, status: int = 200, **context: Any):
    rt = runtime()
    now = rt.clock.now()

    def ago(value: datetime | None) -> str:
        return _relative(now, value)

    signed_in = _signed_in()
    body = render_template(
        template, when=_when, ago=ago, said=esc_service.words_to_read, csrf=_csrf_token(),
        flash=_take_flash(), signed_in=signed_in, me=_name() if signed_in else None, now=now,
        clinic=rt.settings.clinic.name, zone=rt.settings.defaults.timezone,
        phone_examples=phone_examples(phone_region(rt.settings)), **context)
    return body, status


def _back(default: str | None = None):
    return redirect(_safe_next(request.form.get("next") or default), 303)


# -- sign in and out -------------------------------------------------------------------------


@bp.route("/login", methods=["GET", "POST"])
def login():
    rt = runtime()
    target = _safe_next(request.values.get("next"))
    note = _kept_note(target)
    if _access().staff_mode:
        return _staff_login(rt, target, note)
    needs_token = bool(rt.settings.admin_token)
    if request.method == "GET":
        return _render("dashboard/login.html", needs_token=needs_token, next=target, note=note,
                       error=None, name=g.dash.get("name") or "")
    name = clean_name(request.form.get("name"))
    if needs_token:
        address = request.remote_addr or "unknown"
        now = rt.clock.now()
        if _recent_failures(address, now) >= LOGIN_FAILURES:
            log.warning("dashboard: sign-in refused: too many wrong tokens from one address")
            return _render("dashboard/login.html", 429, needs_token=True, next=target, note=note,
                           name=name, error="Too many wrong tokens from here. Try again in "
                                            f"{int(LOGIN_WINDOW.total_seconds() // 60)} "
                                            "minutes.")
        given = request.form.get("token", "")
        if not hmac.compare_digest(given.encode("utf-8", "replace"),
                                   rt.settings.admin_token.encode()):
            failures = _recent_failures(address, now, add=True)
            if failures <= LOGIN_FAILURES:  # one record per failure up to the limit, no flood
                with rt.transaction() as s:
                    audit(s, now, f"dashboard:{name or 'unknown'}",
                          "dashboard.login_failed", "dashboard", None, reason="wrong token",
                          name_unverified=True, failures=failures)
            log.warning("dashboard: failed sign-in (wrong admin token)")
            return _render("dashboard/login.html", 403, needs_token=True, next=target, note=note,
                           name=name, error="That admin token is wrong. Nothing was opened; "
                                            "the attempt has been recorded.")
    if not name:
        return _render("dashboard/login.html", 400, needs_token=needs_token, next=target,
                       note=note,
                       name="", error="Enter your name: every action is recorded with it.")
    with rt.transaction() as s:
        now = rt.clock.now()
        sid = _start_session(s, now, name)
        audit(s, now, f"dashboard:{name}", "dashboard.login", "dashboard", None,
              with_token=needs_token)
    _signed_in_now({"name": name, "auth": _token_mark(rt.settings) if needs_token else False,
                    "sid": sid})
    log.info("dashboard: %s signed in", name)
    return _after_sign_in(target, note)


def _start_session(s: Session, now: datetime, name: str, staff_id: int | None = None) -> str:
    """A fresh session on every sign-in, held server-side too; returns its id (for the
    cookie only: the row keeps its hash)."""
    sid = secrets.token_urlsafe(32)
    # Sessions long over are of no more use (the audit log keeps every sign-in).
    s.execute(delete(DashboardSession).where(
        DashboardSession.started_at < now - timedelta(seconds=SESSION_SECONDS) - SESSIONS_KEPT))
    s.add(DashboardSession(id_hash=_session_hash(sid), name=name, started_at=now,
                           staff_id=staff_id))
    return sid


def _signed_in_now(values: dict[str, Any]) -> None:
    """The new session's cookie, with a new CSRF token; who is signed in is checked again if
    this request renders a page."""
    g.dash = {**values, "csrf": secrets.token_urlsafe(32)}
    g.dash_modified = True
    g.dash_access = None


def _staff_login(rt, target: str, note: str = ""):
    """Username and password, while staff accounts are in use. A wrong username, a wrong
    password and a disabled account get the same answer; the audit log says which."""
    username = clean_name(request.form.get("username")).lower()
    form = {"staff_mode": True, "needs_token": False, "next": target, "username": username,
            "note": note}
    if request.method == "GET":
        return _render("dashboard/login.html", error=None, **form)
    password = request.form.get("password", "")
    if not username or not password:
        return _render("dashboard/login.html", 400, error="Enter your username and password.",
                       **form)
    address = request.remote_addr or "unknown"
    now = rt.clock.now()
    if _recent_failures(address, now) >= LOGIN_FAILURES:
        log.warning("dashboard: sign-in refused: too many failed sign-ins from one address")
        return _render("dashboard/login.html", 429, error="Too many failed sign-ins from here. "
                       f"Try again in {int(LOGIN_WINDOW.total_seconds() // 60)} minutes.",
                       **form)
    with rt.transaction() as s:
        account, reason = staff_service.authenticate(s, username, password)
        if account is None:
            failures = _recent_failures(address, now, add=True)
            if failures <= LOGIN_FAILURES:  # one record per failure up to the limit, no flood
                # What was typed is recorded only when it could be a username: people type
                # their password into the wrong field.
                typed = username if staff_service.USERNAME_RE.fullmatch(username) else None
                audit(s, now, f"dashboard:{typed or 'unknown'}", "dashboard.login_failed",
                      "dashboard", None, username=typed, username_unverified=True,
                      reason=reason, failures=failures)
        else:
            account.last_login_at = now
            staff_id, username = account.id, account.username
            sid = _start_session(s, now, username, staff_id)
            audit(s, now, f"user:{username}", "dashboard.login", "dashboard", None,
                  staff_id=staff_id)
    if account is None:
        log.warning("dashboard: failed sign-in (wrong username or password)")
        return _render("dashboard/login.html", 403, error="Wrong username or password. Nothing "
                       "was opened; the attempt has been recorded.", **form)
    _signed_in_now({"staff_id": staff_id, "username": username, "sid": sid})
    log.info("dashboard: user:%s signed in", username)
    return _after_sign_in(target, note)


@bp.post("/logout")
def logout():
    """End the session here and on the server: a copy of the cookie opens nothing after."""
    rt = runtime()
    sid = g.dash.get("sid")
    with rt.transaction() as s:
        now = rt.clock.now()
        row = s.get(DashboardSession, _session_hash(sid)) if isinstance(sid, str) else None
        if row is not None and row.ended_at is None:
            row.ended_at = now
        if row is not None:
            row.search = None  # the patients page's search goes with the session
        audit(s, now, _actor(), "dashboard.logout", "dashboard", None)
    g.dash = {"csrf": secrets.token_urlsafe(32)}
    g.dash_modified = True
    g.dash_access = Access(_access().staff_mode, False)
    return redirect(url_for("dashboard.login"), 303)


# -- needs attention -------------------------------------------------------------------------


@dataclass
class Who:
    """A patient, or a number that is not enrolled."""

    name: str | None
    phone: str
    patient_id: int | None


def _who(patient: Patient | None, phone: str | None) -> Who:
    if patient is not None:
        return Who(patient.name, patient.phone, patient.id)
    return Who(None, phone or "?", None)


def _urgency_order():
    return (case((Escalation.level == "emergency", 0), else_=1), Escalation.created_at,
            Escalation.id)


def _escalation_rows(s: Session, status: str) -> list[dict]:
    settings = runtime().settings
    team = settings.care_team
    rows = []
    chain = team.escalation_chain
    for esc in s.scalars(select(Escalation).options(selectinload(Escalation.patient))
                         .where(Escalation.status == status).order_by(*_urgency_order())):
        current = team.contact(chain[esc.chain_position % len(chain)])
        following = team.contact(chain[(esc.chain_position + 1) % len(chain)])
        rows.append({"esc": esc, "who": _who(esc.patient, esc.phone),
                     "flags": [f.replace("_", " ") for f in esc.flags],
                     "excerpt": _card_excerpt(esc),
                     "alerting": current.name if esc.alerts_sent else None,
                     "next_contact": following.name + (
                         " again" if following.id == current.id else "")})
    return rows


def _card_excerpt(esc: Escalation) -> str | None:
    """A red flag's words as its card on the first page quotes them when they are too long to
    show whole (None: short enough): at most CARD_WORDS_CHARS, around the phrases the
    detector matched, the highest tier first, as the care team's SMS alert quotes them."""
    whole = esc_service.words_to_read(esc.words)
    if len(whole) <= CARD_WORDS_CHARS:
        return None
    return esc_service.quote_around_flags(" ".join(whole.split()), set(esc.flags),
                                          runtime().ctx.vocabulary, CARD_WORDS_CHARS)


def _taken_message(s: Session, esc: Escalation) -> str:
    """Who already took (or closed) this red flag, and when."""
    now = runtime().clock.now()
    if esc.status == "resolved":
        last = s.scalars(select(AuditLog).where(
            AuditLog.action == "escalation.resolve", AuditLog.subject_type == "escalation",
            AuditLog.subject_id == esc.ref).order_by(AuditLog.id.desc())).first()
        who = (last.details.get("by") or last.actor) if last else None
        return (f"{esc.ref} was already resolved{f' by {who}' if who else ''} "
                f"{_ago(now, esc.resolved_at)}. Nothing was changed.")
    return (f"{esc.ref} was already acknowledged by {esc.acknowledged_by or 'someone'} "
            f"{_ago(now, esc.acknowledged_at)}. Nothing was changed.")


def _actor_name(s: Session, actor: str) -> str:
    """Who an audit record's actor is, as a coordinator knows them: a staff account's name
    for "user:alice" (its username if the account is gone), the name typed for
    "dashboard:Jo" and "api:Jo"; anything else (cli:$USER, system) as it is."""
    kind, _, name = actor.partition(":")
    if kind == "user":
        account = staff_service.find_staff(s, name)
        return account.display_name if account else name
    return name if kind in ("dashboard", "api") and name else actor


def _ago(now: datetime, at: datetime | None) -> str:
    if at is None:
        return ""
    zone = ZoneInfo(runtime().settings.defaults.timezone)
    return f"at {at.astimezone(zone).strftime('%H:%M on %d %b')} ({_relative(now, at)})"


def _message_rows(s: Session, messages: list[Message]) -> list[dict]:
    """Patients' messages waiting for a person, each with who sent it and, when too long to
    show whole on its card, a quote of it (the whole under the card's button, as a red
    flag's)."""
    rows = []
    for m in messages:
        patient = s.get(Patient, m.patient_id) if m.patient_id else None
        rows.append({"message": m, "who": _who(patient, m.address),
                     "excerpt": _message_excerpt(m.body)})
    return rows


def _message_excerpt(body: str | None) -> str | None:
    """A message as its card quotes it when too long to show whole (None: short enough): at
    most CARD_WORDS_CHARS, around any red-flag words the detector finds in it (already acted
    on, and what a coordinator reads first), else its start, cut between words."""
    if body is None or len(body) <= CARD_WORDS_CHARS:
        return None
    return esc_service.quote_around_flags(" ".join(body.split()), set(),
                                          runtime().ctx.vocabulary, CARD_WORDS_CHARS)


def _failed_rows(s: Session, now: datetime) -> list[dict]:
    team = runtime().settings.care_team
    rows = []
    for item, m in s.execute(
            select(OutboxItem, Message).join(Message, Message.id == OutboxItem.message_id)
            .where(OutboxItem.status == "failed",
                   OutboxItem.created_at >= now - timedelta(hours=FAILED_HOURS))
            .order_by(OutboxItem.id.desc()).limit(200)):
        patient = s.get(Patient, item.patient_id) if item.patient_id else None
        contact = None if patient else team.contact_by_phone(item.to)
        rows.append({"item": item, "message": m, "who": _who(patient, item.to),
                     "contact": contact.name if contact else None})
    return rows


def _abroad_rows(s: Session) -> list[dict]:
    """Patients whose texts give the clinic's emergency number, as none is configured for the
    country they live in: each with that country and the crisis line their texts give."""
    from bot.domain.countries import country_name, zone_country
    from bot.services.context import crisis_line_for

    settings = runtime().settings
    rows = []
    for patient in health.patients_without_emergency_number(s, settings):
        code = zone_country(patient.timezone)
        rows.append({"patient": patient,
                     "country": f"{country_name(code)} ({code})" if code else "no one country",
                     "crisis_line": crisis_line_for(settings, patient.timezone)})
    return rows


def _opted_out_rows(s: Session, now: datetime) -> list[dict]:
    """Patients opted out now who did so (STOP, or the carrier said so) in the last 7 days."""
    since = now - timedelta(days=RECENT_DAYS)
    latest: dict[int, AuditLog] = {}
    for row in s.scalars(select(AuditLog).where(
            AuditLog.action.in_(("patient.opt_out", "patient.opted_out")),
            AuditLog.subject_type == "patient", AuditLog.at >= since)
            .order_by(AuditLog.id)):
        if row.subject_id and row.subject_id.isdigit():
            latest[int(row.subject_id)] = row
    rows = []
    for pid, row in latest.items():
        patient = s.get(Patient, pid)
        if patient is not None and patient.status == "opted_out":
            if row.action == "patient.opt_out":
                # The word that did it (STOP, CANCEL, BAJA, CANCELAR...), as the bot read it:
                # a Spanish CANCELAR meant as "cancel my appointment" can be spotted.
                word = (row.details or {}).get("keyword")
                word = " ".join(str(word).split()).upper()[:OPT_OUT_WORD_CHARS] if word \
                    else "STOP"
                rows.append({"patient": patient, "at": row.at, "how": "replied",
                             "word": word})
            else:
                rows.append({"patient": patient, "at": row.at, "how": "carrier: opted out",
                             "word": None})
    return sorted(rows, key=lambda r: r["at"], reverse=True)


def _expired_rows(s: Session, now: datetime) -> list[dict]:
    """Check-ins of the last 7 days that ended without the patient finishing them (not a
    discharged patient's)."""
    rows = []
    for conv, patient in s.execute(
            select(Conversation, Patient).join(Patient, Patient.id == Conversation.patient_id)
            # A discharged patient's missed check-ins are no longer anyone's to chase.
            .where(Conversation.flow_id == CHECKIN_FLOW, Patient.status != DISCHARGED,
                   Conversation.updated_at >= now - timedelta(days=RECENT_DAYS),
                   Conversation.status.in_(("expired", "superseded", "completed")))
            .order_by(Conversation.updated_at.desc())):
        if conv.status == "completed" and conv.current_node != NO_REPLY_END:
            continue
        how = {"expired": "closed unanswered", "superseded": "replaced by the next one"}.get(
            conv.status, "no reply: closed")
        answers = len((conv.state or {}).get("answers") or {})
        # Wrote to us after it closed ("sorry, was asleep"): their words are among the
        # messages to read, not lost.
        wrote_since = s.scalars(select(func.max(Message.created_at)).where(
            Message.patient_id == patient.id, Message.direction == "in",
            Message.created_at > conv.updated_at)).first()
        rows.append({"conv": conv, "patient": patient, "how": how, "answers": answers,
                     "wrote_since": wrote_since})
    return rows


@bp.get("")
@bp.get("/")
def index():
    rt = runtime()
    now = rt.clock.now()
    spooled = len(rt.spool.pending_inbound()) if rt.spool else 0
    set_aside = rt.spool.set_aside_count() if rt.spool else 0
    with rt.transaction() as s:
        report = health.report(s, rt.settings, now, spooled, set_aside)
        context = {
            "problems": report["problems"],
            "open": _escalation_rows(s, "open"),
            "acknowledged": _escalation_rows(s, "acknowledged"),
            "unprocessed": _message_rows(s, health.unprocessed_messages(s)),
            "to_read": _message_rows(s, health.messages_to_read(s)),
            "failed": _failed_rows(s, now),
            "invalid": list(s.scalars(select(Patient).where(
                Patient.number_invalid_at.is_not(None), Patient.status != DISCHARGED).order_by(
                Patient.number_invalid_at.desc()))),
            "abroad": _abroad_rows(s),
            "emergency_number": rt.settings.clinic.emergency_number,
            "opted_out": _opted_out_rows(s, now),
            "expired": _expired_rows(s, now),
        }
        return _render("dashboard/index.html", refresh=REFRESH_SECONDS, **context)


def _ref_or_404(ref: str) -> str:
    if not REF_RE.match(ref.strip()):
        abort(404, description="No such red flag.")
    return ref.strip().upper()


@bp.post("/escalations/<ref>/ack")
def acknowledge(ref: str):
    rt = runtime()
    ref = _ref_or_404(ref)
    now = rt.clock.now()
    try:
        with rt.transaction() as s:
            esc, changed = esc_service.acknowledge(s, ref, _name(), now, actor=_actor())
            if not changed:  # audited by the service
                _flash(_taken_message(s, esc), "error")
                return _back()
    except esc_service.EscalationNotFound:
        abort(404, description=f"No red flag {ref}.")
    log.info("dashboard: %s acknowledged %s", _name(), ref)
    _flash(f"{ref} acknowledged by you ({_name()}). The alert chain has stopped.")
    return _back()


@bp.get("/escalations/<ref>")
def escalation(ref: str):
    """One red flag, with the form to resolve it (a page of its own: the main page reloads
    every 30 s and would wipe a note being typed)."""
    rt = runtime()
    ref = _ref_or_404(ref)
    with rt.transaction() as s:
        esc = s.scalars(select(Escalation).options(selectinload(Escalation.patient))
                        .where(Escalation.ref == ref)).first()
        if esc is None:
            abort(404, description=f"No red flag {ref}.")
        return _render("dashboard/escalation.html", esc=esc, who=_who(esc.patient, esc.phone),
                       flags=[f.replace("_", " ") for f in esc.flags], error=None, note="")


@bp.post("/escalations/<ref>/resolve")
def resolve(ref: str):
    rt = runtime()
    ref = _ref_or_404(ref)
    note = clean_note(request.form.get("note"))
    now = rt.clock.now()
    try:
        with rt.transaction() as s:
            esc = esc_service.find_by_ref(s, ref)  # locks the row until the commit
            if not note and esc.status != "resolved":
                return _render("dashboard/escalation.html", 400, esc=esc,
                               who=_who(esc.patient, esc.phone),
                               flags=[f.replace("_", " ") for f in esc.flags], note="",
                               error="Write a note: what was done, and by whom.")
            esc, changed = esc_service.resolve(s, ref, note, now, actor=_actor(), by=_name())
            if not changed:  # already resolved: the service audited the attempt
                _flash(_taken_message(s, esc), "error")
                return redirect(url_for("dashboard.index"), 303)
    except esc_service.EscalationNotFound:
        abort(404, description=f"No red flag {ref}.")
    log.info("dashboard: %s resolved %s", _name(), ref)
    _flash(f"{ref} resolved by you ({_name()}).")
    return _back(url_for("dashboard.index"))


@bp.post("/messages/<int:message_id>/read")
def read_message(message_id: int):
    rt = runtime()
    now = rt.clock.now()
    with rt.transaction() as s:
        message, changed = health.mark_read(s, message_id, _name(), now, _actor())
        if message is None:
            abort(404, description=f"No message {message_id} from a patient.")
        if not changed:
            last = s.scalars(select(AuditLog).where(
                AuditLog.action == "inbound.read", AuditLog.subject_type == "message",
                AuditLog.subject_id == str(message_id)).order_by(AuditLog.id.desc())).first()
            who = f" by {last.details.get('by') or last.actor}" if last else ""
            _flash(f"Message {message_id} was already marked read{who}"
                   f"{' ' + _ago(now, last.at) if last else ''}. Nothing was changed.",
                   "error")
            return _back()
    log.info("dashboard: %s marked message %s read", _name(), message_id)
    _flash(f"Message {message_id} marked read by you ({_name()}).")
    return _back()


# -- patients --------------------------------------------------------------------------------


# The patients page lists this many a page, with Next and Previous links (keyset, as GET
# /api/patients: a link holds the id of the page's last, or first, patient, and the page goes
# on from where that patient stands in the order; a patient enrolled meanwhile shifts nothing).
PATIENTS_PAGE = 100
SEARCH_DIGITS = 4  # a search with at least this many digits also looks at phone numbers


def _patient_key(discharged: bool, name: str, patient_id: int) -> tuple[bool, str, int]:
    """The patients page's order. Discharged patients last: the list is for those still in
    the service. Names in the order of the alphabet, whatever their case or accents ("van
    Dijk", "Émile"): the database's own order (SQLite, PostgreSQL's C collation) puts them
    after "Z", so the order is computed here, on every patient's name, id and status only."""
    return discharged, unidecode(name).casefold(), patient_id


def _search_matches(query: str, name: str, phone: str) -> bool:
    """A name containing the search, whatever the case or accents ("emile" finds "Émile");
    or, with SEARCH_DIGITS digits or more, a number containing them as typed in any form
    ("07700 900123", "+44 7700 900123", "900123")."""
    if unidecode(query).casefold() in unidecode(name).casefold():
        return True
    digits = re.sub(r"[^0-9]", "", query).lstrip("0")
    return len(digits) >= SEARCH_DIGITS and digits in phone


def _this_session(s: Session) -> DashboardSession | None:
    """The signed-in session's row (see _read_access), in the page's own transaction."""
    sid = g.dash.get("sid")
    return s.get(DashboardSession, _session_hash(sid)) if isinstance(sid, str) else None


def _cursor_arg(key: str) -> int | None:
    raw = request.args.get(key, "")
    return int(raw) if raw.isdigit() and 0 < int(raw) <= MAX_ID else None


@bp.post("/patients")
def search_patients():
    """Find a patient: the name or number typed is kept on this session's row (not in a URL:
    a browser's history, a proxy's access log, the paging links would hold it) and the page
    shows it until Clear (action=clear, or a blank search) or sign-out. 303 to the bare page."""
    term = "" if request.form.get("action") == "clear" else clean_name(request.form.get("q"))
    with runtime().transaction() as s:
        row = _this_session(s)
        if row is not None:
            row.search = term or None
    return redirect(url_for("dashboard.patients"), 303)


@bp.get("/patients")
def patients():
    """A page of PATIENTS_PAGE patients in _patient_key's order; the session's search (see
    search_patients) keeps to those whose name (or number) contains it, on every page;
    ?after=<id> / ?before=<id>: the page after (before) that patient. A cursor that names no
    patient starts from the first page.

    ?q= (a bookmark or history entry from when the search was in the address) is ignored, not
    taken as a search: the page goes to its bare address at once, saying to use the form, so
    that the old address stops being of use and is not bookmarked again, and a link can not
    set what a coordinator's list shows."""
    rt = runtime()
    if "q" in request.args:
        if request.args["q"].strip():
            _flash("A search is no longer kept in the page's address, where it showed a "
                   "patient's name or number: type it under Find a patient.", "warn")
        return redirect(url_for("dashboard.patients"), 303)
    after, before = _cursor_arg("after"), _cursor_arg("before")
    with rt.transaction() as s:
        row = _this_session(s)
        query = (row.search or "") if row is not None else ""
        everyone = s.execute(select(Patient.id, Patient.name, Patient.status, Patient.phone)).all()
        keys = sorted(_patient_key(status == DISCHARGED, name, pid)
                      for pid, name, status, phone in everyone
                      if not query or _search_matches(query, name, phone))
        # Where the cursor's patient stands now, matching the search or not.
        cursor = s.get(Patient, after or before) if (after or before) else None
        start = 0
        if cursor is not None:
            at = _patient_key(cursor.status == DISCHARGED, cursor.name, cursor.id)
            if after:
                start = bisect.bisect_right(keys, at)
            else:
                start = max(0, bisect.bisect_left(keys, at) - PATIENTS_PAGE)
        shown = [key[2] for key in keys[start:start + PATIENTS_PAGE]]
        by_id = {p.id: p for p in s.scalars(select(Patient).where(Patient.id.in_(shown)))}
        next_checkin = dict(s.execute(
            select(Schedule.patient_id, func.min(Schedule.next_due_at))
            .where(Schedule.active.is_(True), Schedule.flow_id == CHECKIN_FLOW,
                   Schedule.patient_id.in_(shown))
            .group_by(Schedule.patient_id)).all())
        latest = (select(func.max(Message.id))
                  .where(Message.direction == "in", Message.patient_id.in_(shown))
                  .group_by(Message.patient_id))
        last_in = {m.patient_id: m for m in s.scalars(
            select(Message).where(Message.id.in_(latest)))}
        rows = [{"patient": by_id[pid], "next_checkin": next_checkin.get(pid),
                 "last_in": last_in.get(pid)} for pid in shown if pid in by_id]
        paging = {  # a cursor only: the search is the session's
            "first": start + 1, "last": start + len(shown), "found": len(keys),
            "previous": url_for("dashboard.patients", before=shown[0])
            if shown and start > 0 else None,
            "next": url_for("dashboard.patients", after=shown[-1])
            if shown and start + len(shown) < len(keys) else None,
        }
        return _render("dashboard/patients.html", rows=rows, total=len(everyone), query=query,
                       paging=paging)


@bp.get("/patients/<int:patient_id>")
def patient(patient_id: int):
    rt = runtime()
    with rt.transaction() as s:
        return _patient_page(s, _patient_or_404(s, patient_id))


@bp.get("/audit")
def audit_page():
    """The audit log, newest first (the last AUDIT_LIMIT): every sign-in and every change, by
    whom; ?patient=<id> for one patient's trail (linked from their page), ?actor= and
    ?action= as `checkin-bot audit` reads them. Reading it is not audited."""
    rt = runtime()
    raw = request.args.get("patient", "")
    actor = clean_name(request.args.get("actor"))
    action = clean_name(request.args.get("action"))
    with rt.transaction() as s:
        p = None
        if raw:
            if not raw.isdigit() or int(raw) > MAX_ID:
                abort(404, description=f"No patient {raw}.")
            p = _patient_or_404(s, int(raw))
        rows = []
        for row in audit_service.audit_records(s, patient=p, actor=actor, action=action):
            whose = p or audit_service.patient_of(s, row)
            rows.append({"row": row, "who": _actor_name(s, row.actor),
                         "patient": whose,
                         "what": audit_service.describe(row, phone=_readable_phone)})
        return _render("dashboard/audit.html", rows=rows, p=p, actor=actor, action=action,
                       limit=audit_service.AUDIT_LIMIT)


def _patient_or_404(s: Session, patient_id: int) -> Patient:
    p = s.get(Patient, patient_id)
    if p is None:
        abort(404, description=f"No patient {patient_id}.")
    return p


def _patient_page(s: Session, p: Patient, status: int = 200, checkin: dict | None = None,
                  reminder: dict | None = None, details: dict | None = None,
                  discharge: dict | None = None):
    """A patient's page; `checkin` / `reminder` / `details` / `discharge`: that form posted
    back with an error (the values typed and the error), shown again as it was.

    The forms are far down the page (thousands of pixels on a phone), and the page comes
    back at its top: the error is said there too, in the flash area, with a link to the
    form, or a refused save would look as if nothing happened."""
    settings = runtime().settings
    refused = next(((form_id, form["error"]) for form_id, form in (
        ("checkin-form", checkin), ("reminder-form", reminder), ("details-form", details),
        ("discharge-form", discharge)) if form and form.get("error")), None)
    form_alert = {"form": refused[0], "text": refused[1]["text"]} if refused else None
    total = s.scalar(select(func.count()).select_from(Message).where(
        Message.patient_id == p.id))
    newest = list(s.scalars(select(Message).where(Message.patient_id == p.id)
                            .order_by(Message.created_at.desc(), Message.id.desc())
                            .limit(TRANSCRIPT_MESSAGES)))
    # A message held back (quiet hours, a retry) went out later than it was written: say when.
    sent_late = {mid: sent for mid, created, sent in s.execute(
        select(OutboxItem.message_id, OutboxItem.created_at, OutboxItem.sent_at)
        .where(OutboxItem.message_id.in_([m.id for m in newest if m.direction == "out"]),
               OutboxItem.sent_at.is_not(None)))
        if (sent - created).total_seconds() > 60}
    escalations = list(s.scalars(select(Escalation).where(Escalation.patient_id == p.id)
                                 .order_by(Escalation.created_at.desc(),
                                           Escalation.id.desc())))
    schedules = list_schedules(s, p.id)
    current = next((sc for sc in schedules if sc.flow_id == CHECKIN_FLOW), None)
    if current is not None:
        checkin_values = {"at": current.local_time, "every_days": str(current.every_days),
                          "first_day": ""}
    else:
        checkin_values = {"at": settings.defaults.checkin_at,
                          "every_days": str(settings.defaults.checkin_every_days or 7),
                          "first_day": ""}
    history = checkin_history(s, runtime().ctx, p.id)
    discharged = current_discharge(s, p.id) if is_discharged(p) else None
    return _render("dashboard/patient.html", status, p=p, messages=newest[::-1], total=total,
                   sent_late=sent_late, history=history,
                   pain_chart=_pain_chart(history.series("worst_pain")),
                   escalations=escalations, schedules=schedules, has_checkin=current is not None,
                   checkin={**checkin_values, "error": None, **(checkin or {})},
                   reminder={"reminder_text": "", "at": "09:00", "every_days": "1",
                             "first_day": "", "error": None, **(reminder or {})},
                   weekday_of={sc.id: sched_service.schedule_weekday(sc, p.timezone)
                               for sc in schedules},
                   weekdays=WEEKDAYS,
                   details={**_shown_details(p), "was": _shown_details(p), "error": None,
                            **(details or {})},
                   languages=settings.languages,
                   quiet=settings.quiet_hours,
                   discharged=discharged,
                   discharged_by=_actor_name(s, discharged.actor) if discharged else None,
                   discharge={"reason": "", "error": None, **(discharge or {})},
                   reason_chars=REASON_CHARS, form_alert=form_alert)


PAIN_CHART = (360, 160, 20)  # width, height, margin (px)


def _pain_chart(series: list[tuple[datetime, int]]) -> dict | None:
    """Worst pain (0-10) at each check-in shown, oldest left, as points of a small inline SVG
    line; None with fewer than two check-ins (no line to draw)."""
    if len(series) < 2:
        return None
    width, height, margin = PAIN_CHART
    step = (width - 2 * margin) / (len(series) - 1)
    scale = (height - 2 * margin) / 10
    zone = ZoneInfo(runtime().settings.defaults.timezone)
    points = [{"x": round(margin + i * step, 1), "y": round(height - margin - value * scale, 1),
               "value": value, "at": at, "day": at.astimezone(zone).strftime("%d %b")}
              for i, (at, value) in enumerate(series)]
    return {"width": width, "height": height, "points": points,
            "line": " ".join(f"{pt['x']},{pt['y']}" for pt in points),
            "severe_y": round(height - margin - 7 * scale, 1), "margin": margin}


# -- enrolling patients and setting their schedules ------------------------------------------
# The same services as POST /api/patients and /api/patients/<id>/schedules, with the same
# rules and audit (actor "dashboard:<name>"). A bad field shows the form again, with the
# values typed and a message naming the field.

ENROL_FIELDS = ("phone", "name", "timezone", "channel", "language")
SCHEDULE_FIELDS = ("at", "every_days", "reminder_text", "first_day")
FIELD_LABELS = {"phone": "Phone", "name": "Name", "timezone": "Timezone", "channel": "Channel",
                "language": "Language", "flow": "Schedule", "at": "Time",
                "every_days": "Every N days", "reminder_text": "Reminder text",
                "first_day": "First day",
                "reason": "Reason"}
_WHOLE_NUMBER = re.compile(r"[0-9]{1,6}")


def _form_text(key: str, multiline: bool = False) -> str:
    """A text field of the posted form, as the API takes its string fields: a blank one is
    refused (never read as a default), and so is one with a control character
    (bot.services.patients.check_text). Spaces around it are dropped."""
    value = request.form.get(key, "")
    if not value.strip():
        raise InvalidField(key, "required")
    return check_text(key, value, multiline).strip()


def _form_days(key: str = "every_days") -> int:
    value = request.form.get(key, "").strip()
    if not _WHOLE_NUMBER.fullmatch(value):
        raise InvalidField(key, "must be a whole number from 1 to 366")
    return int(value)


def _field_error(exc: InvalidField) -> dict[str, str]:
    return {"field": exc.field, "text": f"{FIELD_LABELS.get(exc.field, exc.field)}: "
                                        f"{exc.message}"}


def _enrol_page(values: dict[str, str] | None = None, error: dict | None = None,
                status: int = 200):
    settings = runtime().settings
    form = {"phone": "", "name": "", "timezone": settings.defaults.timezone, "channel": "sms",
            "language": settings.defaults.language, **(values or {})}
    return _render("dashboard/enrol.html", status, form=form, error=error, channels=CHANNELS,
                   languages=settings.languages)


@bp.get("/patients/new")
def enrol_form():
    return _enrol_page()


@bp.post("/patients/new")
def enrol():
    """Enrol and welcome a patient, as POST /api/patients does (onboard_patient)."""
    rt = runtime()
    values = {key: request.form.get(key, "") for key in ENROL_FIELDS}
    try:
        e = Enrolment(phone=_form_text("phone"), name=_form_text("name"),
                      timezone=_form_text("timezone"), channel=_form_text("channel"),
                      language=_form_text("language"))
        now = rt.clock.now()
        with rt.transaction() as s:  # a number enrolled meanwhile elsewhere: InvalidField
            patient, ids = onboard_patient(s, rt.ctx, e, now, actor=_actor())
            patient_id, opted_out = patient.id, patient.status == "opted_out"
            warning = "; ".join(w for w in (
                emergency_number_warning(rt.settings, patient.timezone),
                # the form's first value left as it was, with a number of another country
                patient.timezone == rt.settings.defaults.timezone
                and number_zone_warning(patient.phone, patient.timezone)) if w)
            zone = patient.timezone
    except InvalidField as exc:
        return _enrol_page(values, _field_error(exc), 400)
    rt.dispatch_soon(ids)
    log.info("dashboard: %s enrolled patient %s", _name(), patient_id)
    warned = f" Warning: {warning}." if warning else ""
    if opted_out:
        _flash(f"Patient {patient_id} enrolled by you ({_name()}). This number had texted "
               "STOP: nothing is sent to it until the patient texts START." + warned, "warn")
    else:
        # The welcome is routine: held while it is quiet hours in their zone, as the
        # dispatcher decides it (quiet_hours_hold); said so only then.
        held_until = quiet_hours_hold(rt.settings, zone, now)
        if held_until is None:
            when = "is on its way."
        else:
            when = (f"waits for the end of quiet hours in their zone ({zone}): it goes "
                    f"{_when(held_until, zone)}.")
        _flash(f"Patient {patient_id} enrolled by you ({_name()}). The welcome, asking for "
               f"their consent, {when}" + warned, "warn" if warning else "ok")
    return redirect(url_for("dashboard.patient", patient_id=patient_id), 303)


@bp.post("/patients/<int:patient_id>/schedules")
def set_schedule(patient_id: int):
    """Set the check-in (replacing the current one) or add a reminder, as POST
    /api/patients/<id>/schedules does (save_schedule); its warnings are shown."""
    rt = runtime()
    flow = request.form.get("flow", CHECKIN_FLOW)
    values = {key: request.form.get(key, "") for key in SCHEDULE_FIELDS}
    try:
        with rt.transaction() as s:
            p = _patient_or_404(s, patient_id)
            check_text("flow", flow)
            at, every_days = _form_text("at"), _form_days()
            # Optional: blank is none (the next such time, as before).
            first_day = check_text("first_day", request.form.get("first_day", "")).strip()
            params = {}
            if "reminder_text" in request.form:
                params["reminder_text"] = check_text(
                    "reminder_text", request.form["reminder_text"], multiline=True)
            result = sched_service.save_schedule(s, rt.ctx, p, flow, at, every_days,
                                                 rt.clock.now(), _actor(), params,
                                                 first_day or None)
            sc = result.schedule
            what = "Check-in" if flow == CHECKIN_FLOW else flow.capitalize()
            done = "changed" if result.replaced else "set" if flow == CHECKIN_FLOW else "added"
            how_often = rhythm(sc.every_days, sched_service.schedule_weekday(sc, p.timezone))
            text = (f"{what} {done} by you ({_name()}): {sc.local_time} in the patient's zone, "
                    f"{how_often}. Next: {_when(sc.next_due_at, p.timezone)}.")
            if result.replaced:
                text += (f" It replaced {result.replaced['at']} "
                         f"{rhythm(result.replaced['every_days'])}.")
            text += "".join(f" Warning: {w}." for w in result.warnings)
            schedule_id = sc.id
    except InvalidField as exc:
        form = "reminder" if "reminder_text" in request.form else "checkin"
        with rt.transaction() as s:
            return _patient_page(s, _patient_or_404(s, patient_id), 400,
                                 **{form: {**values, "error": _field_error(exc)}})
    log.info("dashboard: %s saved schedule %s (%s) of patient %s", _name(), schedule_id, flow,
             patient_id)
    _flash(text, "warn" if result.warnings else "ok")
    return redirect(url_for("dashboard.patient", patient_id=patient_id), 303)


DETAIL_FIELDS = ("phone", "name", "timezone", "channel", "language")


def _shown_details(p: Patient) -> dict[str, str]:
    """A patient's details as the details form shows them."""
    return {key: getattr(p, key) for key in DETAIL_FIELDS}


def _posted_was() -> dict[str, str] | None:
    """The details as the page posting the form showed them (its was_* fields), or None
    from a page without them."""
    was = {key: request.form.get(f"was_{key}") for key in DETAIL_FIELDS}
    if any(value is None for value in was.values()):
        return None
    return was


def _details_changed(p: Patient, was: dict[str, str] | None) -> PatientChanges:
    """The details form's changes: only the fields changed on the page (typed differently
    from what it showed), so that a field someone else changed since the page was loaded
    keeps their value. One changed here and there too is refused (InvalidField naming it),
    to be looked at again. A page without was_* fields: every field, as typed."""
    typed = {key: _form_text(key) for key in DETAIL_FIELDS
             if key != "phone" or key in request.form}
    if was is None:
        return PatientChanges(**typed)
    wanted = {}
    for key, value in typed.items():
        meant = _canonical(key, value)  # "07700 900456" is "+44 7700 900456"
        if meant == _canonical(key, was[key]):
            continue  # not changed here: whatever the patient's row now says stays
        now_is = getattr(p, key)
        if meant == _canonical(key, now_is):
            continue  # the same change made meanwhile elsewhere: nothing left to do
        if _canonical(key, now_is) != _canonical(key, was[key]):
            raise _ChangedMeanwhile(key, f"was changed by someone else since this page was "
                                         f"loaded, from {was[key]} to {now_is}: check it and "
                                         "save again")
        wanted[key] = value
    if not wanted:
        raise _NothingTyped()
    return PatientChanges(**wanted)


def _canonical(key: str, value: str) -> str:
    """A detail as it would be stored (a number in E.164, a zone or language in its case), to
    compare what was typed with what the page showed and the row holds now: the same number
    typed another way is the same number. What does not pass its check is compared as typed
    (update_patient then refuses it, naming the field)."""
    settings = runtime().settings
    try:
        if key == "phone":
            return normalise_phone(value, phone_region(settings))
        if key == "timezone":
            return check_timezone(value, settings.defaults.timezone)
        if key == "language":
            return check_language(value, settings.languages)
    except InvalidField:
        pass
    return value.strip().lower() if key == "channel" else value.strip()


class _NothingTyped(Exception):
    """The details form was saved with nothing changed on it."""


class _ChangedMeanwhile(InvalidField):
    """A field changed on the details form was changed by someone else since its page was
    loaded."""


@bp.post("/patients/<int:patient_id>/details")
def update_details(patient_id: int):
    """Correct a patient's details, or pause / resume their routine messages, as PATCH
    /api/patients/<id> does (update_patient: the same checks and audit)."""
    rt = runtime()
    values = {key: request.form.get(key, "") for key in DETAIL_FIELDS}
    was = _posted_was()
    action = request.form.get("action", "")
    status = {"pause": "paused", "resume": "active", "readmit": "active"}.get(action)
    try:
        with rt.transaction() as s:
            _patient_or_404(s, patient_id)
            # Locked (PostgreSQL) and read afresh: another coordinator's save waits, and its
            # changes are what _details_changed compares with.
            p = s.get(Patient, patient_id, with_for_update=True, populate_existing=True)
            if action == "resume":
                refuse_resume(p)  # a discharged patient is re-admitted, not resumed
            if action == "readmit" and p.status != DISCHARGED:
                raise StatusRefused(f"{p.phone} is not discharged (status {p.status}): there "
                                    "is nothing to re-admit")
            if status is not None:
                changes = PatientChanges(status=status)
            else:
                # A form without the phone field (a page loaded before it had one) leaves it.
                changes = _details_changed(p, was)
            result = update_patient(s, p, changes, ctx=rt.ctx, now=rt.clock.now(),
                                    actor=_actor())
            changed = ", ".join(f"{k} {old} -> {new}" for k, (old, new) in
                                result.changes.items())
            moved, retimed = len(result.moved), len(result.retimed)
            readdressed = len(result.readdressed)
            warnings = result.warnings
    except InvalidField as exc:
        with rt.transaction() as s:
            p = _patient_or_404(s, patient_id)
            # The form again as typed, still compared with what the page showed before; a
            # field someone else changed (refused above) with what it is now, so that saving
            # again, checked, saves it.
            shown = dict(was) if was is not None else _shown_details(p)
            if isinstance(exc, _ChangedMeanwhile):
                shown[exc.field] = getattr(p, exc.field)
            return _patient_page(s, p, 400,
                                 details={**values, "was": shown, "error": _field_error(exc)})
    except _NothingTyped:
        _flash("Nothing was changed: the details were already so.")
        return redirect(url_for("dashboard.patient", patient_id=patient_id), 303)
    except StatusRefused as exc:
        _flash(f"{exc}. Nothing was changed.", "error")
        return redirect(url_for("dashboard.patient", patient_id=patient_id), 303)
    log.info("dashboard: %s updated patient %s", _name(), patient_id)
    if not changed:
        _flash("Nothing was changed: the details were already so.")
    else:
        _flash(f"Changed by you ({_name()}): {changed}."
               + (f" {moved} schedule(s) moved to the new zone." if moved else "")
               + (f" {retimed} message(s) held for quiet hours re-timed to the new zone."
                  if retimed else "")
               + (f" {readdressed} message(s) not sent yet now go to the new number."
                  if readdressed else "")
               + "".join(f" Warning: {w}." for w in warnings),
               "warn" if warnings else "ok")
    return redirect(url_for("dashboard.patient", patient_id=patient_id), 303)


@bp.post("/patients/<int:patient_id>/discharge")
def discharge(patient_id: int):
    """End a patient's check-ins with a reason, as POST /api/patients/<id>/discharge does
    (discharge_patient: the same checks and audit)."""
    rt = runtime()
    reason = request.form.get("reason", "")
    try:
        with rt.transaction() as s:
            p = _patient_or_404(s, patient_id)
            result = discharge_patient(s, p, reason, now=rt.clock.now(), actor=_actor())
            opted_out = result.patient.status == "opted_out"
            text = (f"Discharged by you ({_name()}): {len(result.schedules)} schedule(s) "
                    f"stopped, {len(result.conversations)} conversation(s) ended, "
                    f"{len(result.cancelled)} message(s) not sent cancelled.")
            if opted_out:
                text += " They had opted out (STOP) and stay so."
    except InvalidField as exc:
        with rt.transaction() as s:
            return _patient_page(s, _patient_or_404(s, patient_id), 400,
                                 discharge={"reason": reason, "error": _field_error(exc)})
    except AlreadyDischarged as exc:
        _flash(f"{exc}. Nothing was changed.", "error")
        return redirect(url_for("dashboard.patient", patient_id=patient_id), 303)
    log.info("dashboard: %s discharged patient %s", _name(), patient_id)
    _flash(text)
    return redirect(url_for("dashboard.patient", patient_id=patient_id), 303)


@bp.post("/schedules/<int:schedule_id>/remove")
def remove_schedule(schedule_id: int):
    """Stop a schedule, as DELETE /api/schedules/<id> does (remove_schedule)."""
    rt = runtime()
    now = rt.clock.now()
    try:
        with rt.transaction() as s:
            sc = sched_service.remove_schedule(s, schedule_id, now, _actor())
            patient_id, flow = sc.patient_id, sc.flow_id
    except sched_service.ScheduleNotFound:
        with rt.transaction() as s:
            sc = s.get(Schedule, schedule_id)
            if sc is None:
                abort(404, description=f"No schedule {schedule_id}.")
            last = s.scalars(select(AuditLog).where(
                AuditLog.action == "schedule.remove", AuditLog.subject_type == "schedule",
                AuditLog.subject_id == str(schedule_id)).order_by(AuditLog.id.desc())).first()
            who = f" by {_actor_name(s, last.actor)}" if last else ""
            _flash(f"Schedule {schedule_id} was already removed{who}"
                   f"{' ' + _ago(now, last.at) if last else ''}. Nothing was changed.", "error")
            return redirect(url_for("dashboard.patient", patient_id=sc.patient_id), 303)
    log.info("dashboard: %s removed schedule %s of patient %s", _name(), schedule_id, patient_id)
    _flash(f"Schedule {schedule_id} ({flow}) removed by you ({_name()}).")
    return redirect(url_for("dashboard.patient", patient_id=patient_id), 303)
