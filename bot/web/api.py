"""JSON API for coordinators: enrol patients, list them, set their schedules, see and act on
escalations."""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, abort, g, jsonify, make_response, request
from pydantic import BaseModel, ConfigDict, StrictInt, StrictStr, ValidationError
from sqlalchemy import select
from werkzeug.exceptions import HTTPException, TooManyRequests, Unauthorized

from bot.services import escalations as esc_service
from bot.services import schedules as sched_service
from bot.services import staff as staff_service
from bot.services.audit import audit
from bot.services.context import emergency_number_warning, number_zone_warning
from bot.services.patients import (
    AlreadyDischarged,
    Enrolment,
    InvalidField,
    PatientChanges,
    StatusRefused,
    check_reason,
    check_text,
    discharge_patient,
    list_patients,
    onboard_patient,
    update_patient,
)
from bot.store.models import MAX_ID, AuditLog, Escalation, Patient, Schedule
from bot.web.common import recent_failures, runtime
from bot.web.serialize import escalation_json, iso, patient_json

bp = Blueprint("api", __name__, url_prefix="/api")
log = logging.getLogger(__name__)

# Ids in URLs beyond MAX_ID (bot.store.models) cannot exist: such a URL is a 404, not a 500.
# A request body larger than this is a 413 (set on the app: see bot.web.app).
MAX_CONTENT_LENGTH = 256 * 1024
REF_RE = re.compile(r"^[A-Za-z0-9]{1,12}$")


# One answer for every token that does not open the API: missing, wrong, revoked, or a disabled
# account's (a caller learns nothing about which).
UNAUTHORIZED = ("the API token (Authorization: Bearer <a staff API token or "
                "CHECKIN_ADMIN_TOKEN>) is missing or wrong")


@dataclass(frozen=True)
class ApiStaff:
    """The staff account a request's API token belongs to (verified)."""

    username: str
    name: str


def _unauthorized() -> Unauthorized:
    return Unauthorized(description=UNAUTHORIZED, www_authenticate="Bearer")


# Wrong API tokens from one address: after this many within the window, that address gets a
# 429 without a check until the window has passed (per web worker), as the dashboard's sign-in.
# Each of the first ones is audited (api.auth_failed), never the token.
API_FAILURES = 10
API_FAILURE_WINDOW = timedelta(minutes=10)


def require_admin_token() -> None:
    """The bearer token check (see _check_token), with wrong tokens counted per address:
    audited, and after API_FAILURES within API_FAILURE_WINDOW refused with 429 for a while."""
    rt = runtime()
    now = rt.clock.now()
    address = request.remote_addr or "unknown"
    given = bool(request.headers.get("Authorization", "").strip())
    if given and recent_failures("api_token", address, now, API_FAILURE_WINDOW) >= API_FAILURES:
        log.warning("api: refused: too many wrong tokens from one address")
        raise TooManyRequests(description="too many wrong API tokens from here: try again in "
                                          f"{int(API_FAILURE_WINDOW.total_seconds() // 60)} "
                                          "minutes", retry_after=int(
                                              API_FAILURE_WINDOW.total_seconds()))
    try:
        _check_token(rt)
    except Unauthorized:
        if given:
            failures = recent_failures("api_token", address, now, API_FAILURE_WINDOW, add=True)
            if failures <= API_FAILURES:  # one record per failure up to the limit, no flood
                with rt.transaction() as s:
                    audit(s, now, "api:unverified", "api.auth_failed", "api", None,
                          path=request.path[:200], failures=failures)
        raise


def _check_token(rt) -> None:
    """A staff API token or CHECKIN_ADMIN_TOKEN as the bearer token; without the admin token
    set, open only with the dev messenger.

    A live staff token (not revoked, its account active) puts the account on `g.api_staff`:
    the actor is then "user:<username>", whatever X-Actor claims. A revoked token, or a
    disabled account's, is a 401 like a wrong one. Otherwise as before: the shared admin token
    (X-Actor names the coordinator, claimed), a 401 without it, or, with no admin token set, a
    403 with real phones (unless some other token was tried: 401). Shared by /api and the
    simulator's JSON endpoints.
    """
    settings = rt.settings
    g.api_staff = None
    g.api_shared = False  # opened with CHECKIN_ADMIN_TOKEN: see _name_required
    token = settings.admin_token
    header = request.headers.get("Authorization", "")
    scheme, _, credentials = header.partition(" ")
    # The scheme's name is case-insensitive (RFC 9110): "bearer" is "Bearer".
    given = (credentials if scheme.lower() == "bearer" else header).strip()
    if token is not None and hmac.compare_digest(given.encode("utf-8", "replace"),
                                                 token.encode()):
        g.api_shared = True
        return
    if given:
        with rt.transaction() as s:
            found = staff_service.check_token(s, given, rt.clock.now())
            if found.staff is not None:
                g.api_staff = ApiStaff(found.staff.username, found.staff.display_name)
                return
        if found.known:
            log.warning("api: refused staff API token %s (%s)", found.token_id, found.reason)
            raise _unauthorized()
    if token is None:
        if settings.messenger_name == "dev":
            return
        if given:
            raise _unauthorized()
        abort(403, description="the API is off: set CHECKIN_ADMIN_TOKEN, or use a staff API "
                               "token (checkin-bot staff token add), to use it with the "
                               "Twilio messenger")
    raise _unauthorized()


def _ids_in_range() -> None:
    """An id in the URL larger than any key can be is a 404 (the drivers would fail on it)."""
    for key, value in (request.view_args or {}).items():
        if isinstance(value, int) and value > MAX_ID:
            abort(404, description=f"no {key.removesuffix('_id')} {value}")


def _name_required():
    """A change made with the shared admin token must say who makes it (X-Actor), since the
    token does not: else the audit log would name nobody. An acknowledgement may name its
    person in `by` instead (which it needs anyway). 400 naming X-Actor; reading needs no
    name, nor a staff token (its account is the actor)."""
    if request.method in ("GET", "HEAD", "OPTIONS") or not g.get("api_shared"):
        return None
    if _claimed_name():
        return None
    if request.endpoint == "api.ack":
        data = request.get_json(silent=True)
        if isinstance(data, dict) and isinstance(data.get("by"), str) and data["by"].strip():
            return None
    return _bad("X-Actor", "required with the shared admin token: the name of who makes "
                           "this change, for the audit log (or use a staff API token)")


bp.before_request(require_admin_token)
bp.before_request(_name_required)
bp.before_request(_ids_in_range)  # after the token: a caller without it learns nothing


@bp.after_request
def _never_cached(response):
    """Patients' names, numbers and messages: no browser or proxy keeps a copy (as the
    dashboard's pages)."""
    response.headers["Cache-Control"] = "no-store"
    return response


def json_error(exc: HTTPException):
    """An HTTP error as {"error": ...} with its status (registered for /api and
    /simulator/api in bot.web.app). A 500 says no more than that."""
    code = exc.code or 500
    res = jsonify(error=exc.description if code != 500 else "internal server error")
    res.status_code = code
    for key, value in exc.get_headers():  # WWW-Authenticate (401), Allow (405)
        if key.lower() != "content-type":
            res.headers[key] = value
    return res


def _claimed_name() -> str:
    """The X-Actor header's name: printable characters, trimmed ("" without one)."""
    return "".join(ch for ch in (request.headers.get("X-Actor") or "")
                   if ch.isprintable()).strip()


def _actor(by: str | None = None) -> str:
    """"user:<username>" with a staff API token; else "api:" and the X-Actor name (claimed),
    or `by` (an acknowledgement's person) without one."""
    staff = g.get("api_staff")
    if staff is not None:
        return f"user:{staff.username}"
    return "api:" + (_claimed_name() or (by or "").strip() or "coordinator")[:60]


def _person() -> str | None:
    """The person to record in a field such as `by` when the body names none: the staff
    account's name with its API token, else the coordinator X-Actor names; None without."""
    staff = g.get("api_staff")
    if staff is not None:
        return staff.name
    return _claimed_name()[:80] or None


def _bad(field: str, message: str):
    return jsonify(error=f"{field}: {message}", field=field), 400


def json_body(required: bool = True) -> dict[str, Any]:
    """The request's JSON object; raises InvalidField("body") for anything else (a list, a
    number, broken or too deeply nested JSON). A missing body is {} unless `required`."""
    try:
        data = request.get_json(silent=True)
    except RecursionError:
        raise InvalidField("body", "JSON nested too deeply") from None
    if data is None and not required and not request.get_data():
        return {}
    if not isinstance(data, dict):
        raise InvalidField("body", "expected a JSON object")
    return data


def _text(data: dict[str, Any], key: str, default: str | None = None,
          multiline: bool = False) -> str:
    """A string field: absent (or null) gives `default`; anything else must be a non-empty
    string, so 0, false and "" are refused rather than read as the default."""
    value = data.get(key)
    if value is None:
        if default is None:
            raise InvalidField(key, "required")
        return default
    if not isinstance(value, str) or not value.strip():
        raise InvalidField(key, "must be a non-empty string")
    return check_text(key, value, multiline)


@bp.errorhandler(InvalidField)
def _invalid(exc: InvalidField):
    return _bad(exc.field, exc.message)


ENROL_FIELDS = ("phone", "name", "timezone", "channel", "language")
OPTED_OUT_AT_ENROLMENT = ("this number texted STOP before it was enrolled: the patient starts "
                          "opted out, and nothing is sent to them (no welcome) until they "
                          "text START")


@bp.post("/patients")
def enrol():
    rt = runtime()
    data = json_body()
    for key in data:  # a misspelt field ("time_zone") must not quietly become the default
        if key not in ENROL_FIELDS:
            raise InvalidField(key[:40], "not a field of an enrolment (fields: "
                                         f"{', '.join(ENROL_FIELDS)})")
    e = Enrolment(
        phone=_text(data, "phone"), name=_text(data, "name"),
        timezone=_text(data, "timezone", rt.settings.defaults.timezone),
        # none given: WhatsApp for a "whatsapp:" number, else SMS (channel_for)
        channel=None if data.get("channel") is None else _text(data, "channel"),
        language=_text(data, "language", rt.settings.defaults.language),
    )
    try:
        with rt.transaction() as s:
            patient, ids = onboard_patient(s, rt.ctx, e, rt.clock.now(), actor=_actor())
            warnings = []
            if patient.status == "opted_out":  # as the dashboard says at enrolment
                warnings.append(OPTED_OUT_AT_ENROLMENT)
            # e.g. no emergency number configured for the country the patient lives in
            warning = emergency_number_warning(rt.settings, patient.timezone)
            if warning:
                warnings.append(warning)
            # the clinic's zone by default for a number of another country
            abroad = "timezone" not in data and number_zone_warning(patient.phone,
                                                                    patient.timezone)
            if abroad:
                warnings.append(abroad)
            body = {**patient_json(patient), "warnings": warnings}
    except InvalidField as exc:
        return _bad(exc.field, exc.message)
    rt.dispatch_soon(ids)
    return jsonify(body), 201


# PATCH /api/patients/<id>: the fields a coordinator may correct.
PATIENT_FIELDS = ("phone", "name", "timezone", "channel", "language", "status")


@bp.patch("/patients/<int:patient_id>")
def update(patient_id: int):
    """Correct a patient's details (a new phone number too: what is not sent yet goes to it),
    or pause (`"status": "paused"`) or resume (`"active"`) their routine messages; "active"
    re-admits a discharged patient. 400 for a number another patient has, as at enrolment;
    409 for a status change of a patient who opted out, and for pausing a discharged one."""
    rt = runtime()
    data = json_body()
    given: dict[str, str] = {}
    for key, value in data.items():
        if key not in PATIENT_FIELDS:
            raise InvalidField(key[:40], "cannot be changed here (fields: "
                                         f"{', '.join(PATIENT_FIELDS)})")
        if value is None:  # null is not "leave it": say so rather than guess
            raise InvalidField(key, "must be a non-empty string")
        given[key] = _text(data, key)
    with rt.transaction() as s:
        patient = _patient_or_404(s, patient_id)
        try:
            result = update_patient(s, patient, PatientChanges(**given), ctx=rt.ctx,
                                    now=rt.clock.now(), actor=_actor())
        except StatusRefused as exc:
            return jsonify(error=f"status: {exc}", field="status"), 409
        body = {**patient_json(patient),
                "changed": {k: {"from": old, "to": new}
                            for k, (old, new) in result.changes.items()},
                "schedules_moved": [{"id": i, "from": iso(a), "to": iso(b)}
                                    for i, a, b in result.moved],
                "held_retimed": [{"id": i, "from": iso(a), "to": iso(b)}
                                 for i, a, b in result.retimed],
                "messages_readdressed": len(result.readdressed),
                "warnings": result.warnings}
    return jsonify(body)


@bp.post("/patients/<int:patient_id>/discharge")
def discharge(patient_id: int):
    """End a patient's check-ins: {"reason": "..."} (1 to 200 characters, kept in the audit
    record). 400 naming `reason`; 404 for no such patient; 409 if already discharged.
    Re-admit with PATCH {"status": "active"}."""
    rt = runtime()
    data = json_body()
    for key in data:
        if key != "reason":
            raise InvalidField(key[:40], "not a field of a discharge (fields: reason)")
    if not isinstance(data.get("reason"), str):
        raise InvalidField("reason", "required: why the check-ins end (1 to 200 characters)")
    reason = check_reason(data["reason"])
    with rt.transaction() as s:
        patient = _patient_or_404(s, patient_id)
        try:
            result = discharge_patient(s, patient, reason, now=rt.clock.now(), actor=_actor())
        except AlreadyDischarged as exc:
            return jsonify(error=f"status: {exc}", field="status"), 409
        body = {**patient_json(result.patient), "reason": result.reason,
                "schedules_stopped": result.schedules,
                "conversations_interrupted": len(result.conversations),
                "messages_cancelled": len(result.cancelled)}
    return jsonify(body)


# Lists come in pages: `limit` rows (default PAGE_LIMIT, at most PAGE_MAX) and, when there are
# more, the next page's `cursor` in X-Next-Cursor and a Link rel="next" URL. The body stays a
# bare JSON list. A cursor is the position of the page's last row (keyset: a row added or
# removed meanwhile shifts nothing), opaque to clients.
PAGE_LIMIT, PAGE_MAX = 100, 500
_DIGITS = re.compile(r"[0-9]{1,4}")


def _page_limit() -> int:
    raw = request.args.get("limit")
    if raw is None:
        return PAGE_LIMIT
    if not _DIGITS.fullmatch(raw) or not 1 <= int(raw) <= PAGE_MAX:
        abort(make_response(_bad("limit", f"a whole number from 1 to {PAGE_MAX} (default "
                                          f"{PAGE_LIMIT})")))
    return int(raw)


def _cursor(kind: str, row_id: int, at: datetime | None = None) -> str:
    raw = json.dumps([kind, row_id, iso(at)], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _cursor_given(kind: str) -> tuple[int, datetime | None] | None:
    """The (id, time) position a `cursor` of this list holds; a cursor that is not one from
    this list is a 400 naming it."""
    raw = request.args.get("cursor")
    if raw is None:
        return None
    try:
        got, row_id, at = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        if got != kind or type(row_id) is not int or not 0 < row_id <= MAX_ID:
            raise ValueError(raw)
        when = None if at is None else datetime.fromisoformat(at)
        if when is not None:
            if when.tzinfo is None:
                raise ValueError(at)
            when = when.astimezone(UTC)
    except (ValueError, TypeError, OverflowError, RecursionError, binascii.Error):
        abort(make_response(_bad("cursor", "not a cursor of this list: give the X-Next-Cursor "
                                           "of the page before, unchanged")))
    return row_id, when


def _paged(rows: list, limit: int, body, cursor):
    """The JSON list of the first `limit` rows (fetched: up to limit + 1), with the next
    page's cursor (`cursor(last row)`) when there are more."""
    res = jsonify([body(r) for r in rows[:limit]])
    if len(rows) > limit:
        after = cursor(rows[limit - 1])
        args = {k: v for k, v in request.args.items() if k not in ("cursor", "limit")}
        res.headers["X-Next-Cursor"] = after
        res.headers["Link"] = (f'<{request.base_url}?'
                               f'{urlencode({**args, "limit": limit, "cursor": after})}>; '
                               'rel="next"')
    return res


@bp.get("/patients")
def patients():
    rt = runtime()
    limit = _page_limit()
    position = _cursor_given("patients")
    with rt.transaction() as s:
        rows = list_patients(s, after_id=position[0] if position else None, limit=limit + 1)
        return _paged(rows, limit, patient_json, lambda p: _cursor("patients", p.id))


@bp.get("/escalations")
def escalations():
    rt = runtime()
    open_only = request.args.get("open") in ("1", "true", "yes")
    limit = _page_limit()
    position = _cursor_given("escalations")
    if position is not None and position[1] is None:
        abort(make_response(_bad("cursor", "not a cursor of this list")))
    with rt.transaction() as s:
        rows = esc_service.list_escalations(
            s, open_only, before=(position[1], position[0]) if position else None,
            limit=limit + 1)
        return _paged(rows, limit, escalation_json,
                      lambda e: _cursor("escalations", e.id, e.created_at))


def _conflict(s, esc: Escalation):
    """409: someone else already took (or closed) this escalation; says who and when."""
    if esc.status == "resolved":
        last = s.scalars(select(AuditLog).where(
            AuditLog.action == "escalation.resolve", AuditLog.subject_type == "escalation",
            AuditLog.subject_id == esc.ref).order_by(AuditLog.id.desc())).first()
        who = (last.details.get("by") or last.actor) if last else None
        message = f"{esc.ref} was already resolved at {iso(esc.resolved_at)}" + (
            f" by {who}" if who else "")
    else:
        message = (f"{esc.ref} was already acknowledged by {esc.acknowledged_by or 'someone'} "
                   f"at {iso(esc.acknowledged_at)}")
    return jsonify(error=message, escalation=escalation_json(esc)), 409


def _ref_or_404(ref: str) -> str:
    if not REF_RE.match(ref.strip()):
        abort(404, description=f"no escalation {ref[:20]!r}")
    return ref


@bp.post("/escalations/<ref>/ack")
def ack(ref: str):
    """Acknowledge: the alert chain stops. 409 if someone already did (or it is resolved).
    `by` names who takes it; with a staff API token it defaults to the account's name."""
    rt = runtime()
    data = json_body(required=False)
    staff = g.get("api_staff")
    if staff is not None and data.get("by") is None:  # the account's own name
        by = staff.name
    elif not isinstance(data.get("by"), str) or not data["by"].strip():
        return _bad("by", "required: who is taking this alert")
    else:
        by = check_text("by", data["by"]).strip()[:80]
    _ref_or_404(ref)
    now = rt.clock.now()
    try:
        with rt.transaction() as s:
            esc, changed = esc_service.acknowledge(s, ref, by, now, actor=_actor(by))
            if not changed:  # audited by the service
                return _conflict(s, esc)
            return jsonify(escalation_json(esc))
    except esc_service.EscalationNotFound:
        return jsonify(error=f"no escalation {ref}"), 404


@bp.post("/escalations/<ref>/resolve")
def resolve(ref: str):
    """Close an escalation with a note. `by` (optional; else the staff token's account name, or
    X-Actor) is recorded as who acknowledged it if nobody had. 409 if it is already resolved (the first note stays)."""
    rt = runtime()
    data = json_body(required=False)
    note = _text(data, "note", multiline=True)
    if len(note) > esc_service.NOTE_CHARS:
        raise InvalidField("note", f"at most {esc_service.NOTE_CHARS} characters")
    by = _text(data, "by", "").strip()[:80] or _person()
    _ref_or_404(ref)
    now = rt.clock.now()
    try:
        with rt.transaction() as s:
            esc, changed = esc_service.resolve(s, ref, note, now, actor=_actor(), by=by)
            if not changed:  # audited by the service
                return _conflict(s, esc)
            return jsonify(escalation_json(esc))
    except esc_service.EscalationNotFound:
        return jsonify(error=f"no escalation {ref}"), 404


def check_flow(ctx, flow_id: str) -> str:
    """`flow_id` if the flow library has it, else InvalidField("flow") naming the flows that
    can be scheduled (shared with `checkin-bot schedules add`)."""
    from bot.services.conversations import CONSENT_FLOW

    if flow_id not in ctx.flows:
        known = ", ".join(sorted(f.id for f in ctx.flows.current() if f.id != CONSENT_FLOW))
        shown = flow_id if len(flow_id) <= 40 else flow_id[:37] + "..."
        raise InvalidField("flow", f"unknown flow {shown!r} (flows: {known})")
    return flow_id


@bp.get("/messages/failed")
def failed_messages():
    """Messages that could not be delivered, for the care team to follow up."""
    from bot.services.dispatcher import failed_messages as query
    from bot.web.serialize import failed_json

    rt = runtime()
    with rt.transaction() as s:
        return jsonify([failed_json(i, m) for i, m in query(s)])


# -- schedules -----------------------------------------------------------------------------


class ScheduleBody(BaseModel):
    """POST /api/patients/<id>/schedules."""

    model_config = ConfigDict(extra="forbid")

    flow: StrictStr = "checkin"
    at: StrictStr = "10:00"
    every_days: StrictInt = 7
    reminder_text: StrictStr | None = None
    # The first run's day: a weekday ("monday", "mon") or a date YYYY-MM-DD.
    first_day: StrictStr | None = None


def schedule_json(sc: Schedule, patient: Patient | None = None) -> dict:
    """A schedule; `weekday` ("monday") when every_days is whole weeks, else None."""
    return {
        "id": sc.id, "patient_id": sc.patient_id, "flow": sc.flow_id, "at": sc.local_time,
        "every_days": sc.every_days, "timezone": patient.timezone if patient else None,
        "reminder_text": (sc.params or {}).get("reminder_text"), "active": sc.active,
        "next_due_at": iso(sc.next_due_at), "last_run_at": iso(sc.last_run_at),
        "weekday": sched_service.schedule_weekday(sc, patient.timezone) if patient else None,
    }


def _patient_or_404(s, patient_id: int) -> Patient:
    patient = s.get(Patient, patient_id)
    if patient is None:
        abort(404, description=f"no patient {patient_id}")
    return patient


@bp.get("/patients/<int:patient_id>/schedules")
def patient_schedules(patient_id: int):
    rt = runtime()
    include_inactive = request.args.get("all") in ("1", "true", "yes")
    with rt.transaction() as s:
        patient = _patient_or_404(s, patient_id)
        return jsonify([schedule_json(sc, patient) for sc in
                        sched_service.list_schedules(s, patient_id, include_inactive)])


@bp.get("/patients/<int:patient_id>/checkins")
def patient_checkins(patient_id: int):
    """The patient's last check-ins with answers, newest first: each with its answers by
    question, and the red flags each answer raised (see bot.services.history)."""
    from bot.services.history import checkin_history

    rt = runtime()
    with rt.transaction() as s:
        _patient_or_404(s, patient_id)
        history = checkin_history(s, rt.ctx, patient_id)
    return jsonify([
        {"conversation_id": col.conversation_id, "started_at": iso(col.started_at),
         "status": col.status,
         "answers": {key: _answer_json(cells[i])
                     for key, _label, cells in history.rows if cells[i] is not None}}
        for i, col in enumerate(history.columns)])


def _answer_json(cell) -> dict[str, Any]:
    """An answer and its flags; a question never understood or answered also says which
    (`unanswered`: not_understood or no_reply) and the last reply not understood."""
    if cell.unanswered is None:
        return {"value": cell.value, "flags": list(cell.flags)}
    return {"value": None, "flags": list(cell.flags), "unanswered": cell.unanswered,
            "reply": cell.reply}


@bp.post("/patients/<int:patient_id>/schedules")
def set_schedule(patient_id: int):
    """Add a schedule; a check-in schedule replaces the patient's current one (200, with
    `replaced`), a new one is 201. `warnings` says, e.g., that the time is in quiet hours."""
    rt = runtime()
    try:
        body = ScheduleBody.model_validate(json_body())
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else "body"
        return _bad(field, err["msg"])
    check_text("flow", body.flow)
    check_flow(rt.ctx, body.flow)
    check_text("at", body.at)
    if body.reminder_text is not None:
        check_text("reminder_text", body.reminder_text, multiline=True)
    if body.first_day is not None:
        check_text("first_day", body.first_day)
    params = {"reminder_text": body.reminder_text} if body.reminder_text is not None else {}
    with rt.transaction() as s:
        patient = _patient_or_404(s, patient_id)
        result = sched_service.save_schedule(s, rt.ctx, patient, body.flow, body.at,
                                             body.every_days, rt.clock.now(), _actor(), params,
                                             body.first_day)
        out = {**schedule_json(result.schedule, patient), "replaced": result.replaced,
               "warnings": result.warnings}
    return jsonify(out), 200 if result.replaced else 201


@bp.delete("/schedules/<int:schedule_id>")
def delete_schedule(schedule_id: int):
    rt = runtime()
    try:
        with rt.transaction() as s:
            sc = sched_service.remove_schedule(s, schedule_id, rt.clock.now(), _actor())
            return jsonify(schedule_json(sc, s.get(Patient, sc.patient_id)))
    except sched_service.ScheduleNotFound:
        return jsonify(error=f"no active schedule {schedule_id}"), 404
