"""JSON API for coordinators: enrol patients, list them, set their schedules, see and act on
escalations."""

from __future__ import annotations

import hmac
from typing import Any

from flask import Blueprint, abort, jsonify, request
from pydantic import BaseModel, ConfigDict, StrictInt, StrictStr, ValidationError

from bot.services import escalations as esc_service
from bot.services import schedules as sched_service
from bot.services.patients import Enrolment, InvalidField, list_patients, onboard_patient
from bot.store.models import Patient, Schedule
from bot.web.common import runtime
from bot.web.serialize import escalation_json, iso, patient_json

bp = Blueprint("api", __name__, url_prefix="/api")


@bp.before_request
def _authorise():
    """Bearer CHECKIN_ADMIN_TOKEN; without a token the API is open only with the dev messenger."""
    settings = runtime().settings
    token = settings.admin_token
    if token is None:
        if settings.messenger_name != "dev":
            abort(403)
        return
    given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    if not hmac.compare_digest(given.encode(), token.encode()):
        abort(401)


def _actor() -> str:
    return "api:" + (request.headers.get("X-Actor") or "coordinator")[:60]


def _bad(field: str, message: str):
    return jsonify(error=f"{field}: {message}", field=field), 400


def _body(required: bool = True) -> dict[str, Any]:
    """The request's JSON object; raises InvalidField("body") for anything else (a list, a
    number, broken JSON). A missing body is {} unless `required`."""
    data = request.get_json(silent=True)
    if data is None and not required and not request.get_data():
        return {}
    if not isinstance(data, dict):
        raise InvalidField("body", "expected a JSON object")
    return data


def _text(data: dict[str, Any], key: str, default: str | None = None) -> str:
    """A string field: absent (or null) gives `default`; anything else must be a non-empty
    string, so 0, false and "" are refused rather than read as the default."""
    value = data.get(key)
    if value is None:
        if default is None:
            raise InvalidField(key, "required")
        return default
    if not isinstance(value, str) or not value.strip():
        raise InvalidField(key, "must be a non-empty string")
    return value


@bp.errorhandler(InvalidField)
def _invalid(exc: InvalidField):
    return _bad(exc.field, exc.message)


@bp.post("/patients")
def enrol():
    rt = runtime()
    data = _body()
    e = Enrolment(
        phone=_text(data, "phone"), name=_text(data, "name"),
        timezone=_text(data, "timezone", rt.settings.defaults.timezone),
        channel=_text(data, "channel", "sms"),
        language=_text(data, "language", rt.settings.defaults.language),
    )
    try:
        with rt.transaction() as s:
            patient, ids = onboard_patient(s, rt.ctx, e, rt.clock.now(), actor=_actor())
            body = patient_json(patient)
    except InvalidField as exc:
        return _bad(exc.field, exc.message)
    rt.dispatch_soon(ids)
    return jsonify(body), 201


@bp.get("/patients")
def patients():
    rt = runtime()
    with rt.transaction() as s:
        return jsonify([patient_json(p) for p in list_patients(s)])


@bp.get("/escalations")
def escalations():
    rt = runtime()
    open_only = request.args.get("open") in ("1", "true", "yes")
    with rt.transaction() as s:
        return jsonify([escalation_json(e) for e in esc_service.list_escalations(s, open_only)])


@bp.post("/escalations/<ref>/ack")
def ack(ref: str):
    rt = runtime()
    by = _body(required=False).get("by")
    if not isinstance(by, str) or not by.strip():
        return _bad("by", "required: who is taking this alert")
    by = by.strip()[:80]
    try:
        with rt.transaction() as s:
            esc, _ = esc_service.acknowledge(s, ref, by, rt.clock.now(), actor=_actor())
            return jsonify(escalation_json(esc))
    except esc_service.EscalationNotFound:
        return jsonify(error=f"no escalation {ref}"), 404


@bp.post("/escalations/<ref>/resolve")
def resolve(ref: str):
    rt = runtime()
    note = _body(required=False).get("note")
    if not isinstance(note, str) or not note.strip():
        return _bad("note", "required")
    try:
        with rt.transaction() as s:
            esc = esc_service.resolve(s, ref, note, rt.clock.now(), actor=_actor())
            return jsonify(escalation_json(esc))
    except esc_service.EscalationNotFound:
        return jsonify(error=f"no escalation {ref}"), 404


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


def schedule_json(sc: Schedule, patient: Patient | None = None) -> dict:
    return {
        "id": sc.id, "patient_id": sc.patient_id, "flow": sc.flow_id, "at": sc.local_time,
        "every_days": sc.every_days, "timezone": patient.timezone if patient else None,
        "reminder_text": (sc.params or {}).get("reminder_text"), "active": sc.active,
        "next_due_at": iso(sc.next_due_at), "last_run_at": iso(sc.last_run_at),
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


@bp.post("/patients/<int:patient_id>/schedules")
def set_schedule(patient_id: int):
    """Add a schedule; a check-in schedule replaces the patient's current one (200, with
    `replaced`), a new one is 201. `warnings` says, e.g., that the time is in quiet hours."""
    rt = runtime()
    try:
        body = ScheduleBody.model_validate(_body())
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else "body"
        return _bad(field, err["msg"])
    params = {"reminder_text": body.reminder_text} if body.reminder_text is not None else {}
    with rt.transaction() as s:
        patient = _patient_or_404(s, patient_id)
        result = sched_service.save_schedule(s, rt.ctx, patient, body.flow, body.at,
                                             body.every_days, rt.clock.now(), _actor(), params)
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
