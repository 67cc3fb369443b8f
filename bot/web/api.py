"""JSON API for coordinators: enrol patients, list them, see and act on escalations."""

from __future__ import annotations

import hmac

from flask import Blueprint, abort, jsonify, request

from bot.services import escalations as esc_service
from bot.services.patients import Enrolment, InvalidField, list_patients, onboard_patient
from bot.web.common import runtime
from bot.web.serialize import escalation_json, patient_json

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


@bp.post("/patients")
def enrol():
    rt = runtime()
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        return _bad("body", "expected a JSON object")
    for key in ("phone", "name"):
        if not isinstance(data.get(key), str):
            return _bad(key, "required")
    e = Enrolment(
        phone=data["phone"], name=data["name"],
        timezone=str(data.get("timezone") or rt.settings.defaults.timezone),
        channel=str(data.get("channel") or "sms"),
        language=str(data.get("language") or rt.settings.defaults.language),
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
    by = str((request.get_json(silent=True) or {}).get("by") or "")[:80]
    if not by:
        return _bad("by", "required: who is taking this alert")
    try:
        with rt.transaction() as s:
            esc, _ = esc_service.acknowledge(s, ref, by, rt.clock.now(), actor=_actor())
            return jsonify(escalation_json(esc))
    except esc_service.EscalationNotFound:
        return jsonify(error=f"no escalation {ref}"), 404


@bp.post("/escalations/<ref>/resolve")
def resolve(ref: str):
    rt = runtime()
    note = str((request.get_json(silent=True) or {}).get("note") or "")
    if not note.strip():
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
