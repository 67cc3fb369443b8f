"""The phone simulator (dev messenger only): text the bot from a browser as any patient.

Its JSON endpoints are guarded like /api (the same require_admin_token): with
CHECKIN_ADMIN_TOKEN set they need it, or a staff API token, as a bearer token (the page asks
for it once and keeps it in the tab's sessionStorage); without one (`make run`) they are open. The page itself holds no patient data and is always served.
"""

from __future__ import annotations

from flask import Blueprint, g, jsonify, render_template, request
from sqlalchemy import select

from bot.services.audit import audit
from bot.services.inbound import InboundMessage
from bot.services.patients import (
    Enrolment,
    InvalidField,
    check_text,
    find_patient,
    list_patients,
    normalise_phone,
    onboard_patient,
    phone_region,
)
from bot.store.models import MAX_ID, Message
from bot.web.api import json_body, require_admin_token
from bot.web.common import receive_message, runtime
from bot.web.serialize import message_json, patient_json

bp = Blueprint("simulator", __name__, url_prefix="/simulator")


@bp.before_request
def _authorise():
    if request.endpoint != "simulator.page":
        require_admin_token()


def _bad(exc: InvalidField):
    return jsonify(error=str(exc), field=exc.field), 400


def _text(data: dict, key: str, default: str) -> str:
    """A string field; `default` when absent, null or blank (the page sends its empty form
    fields as ""); a number or a boolean is refused, and so are NUL, control characters and
    lone surrogates."""
    value = data.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise InvalidField(key, "must be a string")
    return check_text(key, value) if value.strip() else default


@bp.get("")
@bp.get("/")
def page():
    return render_template("simulator.html", clinic=runtime().settings.clinic.name)


@bp.get("/api/patients")
def patients():
    rt = runtime()
    with rt.transaction() as s:
        return jsonify([patient_json(p) for p in list_patients(s)])


def _actor() -> str:
    """Who enrols through the simulator: the staff account of the API token it was given
    (see require_admin_token), else "simulator"."""
    staff = g.get("api_staff")
    return f"user:{staff.username}" if staff is not None else "simulator"


@bp.post("/api/patients")
def pick_patient():
    """Select the patient with this number, enrolling (and welcoming) them if new."""
    rt = runtime()
    try:
        data = json_body()
        phone = normalise_phone(_text(data, "phone", ""), phone_region(runtime().settings))
        with rt.transaction() as s:
            patient = find_patient(s, phone)
            ids: list[int] = []
            created = patient is None
            if created:
                e = Enrolment(
                    phone=phone, name=_text(data, "name", "Test Patient"),
                    timezone=_text(data, "timezone", rt.settings.defaults.timezone),
                    channel=_text(data, "channel", "sms"),
                    language=_text(data, "language", rt.settings.defaults.language),
                )
                patient, ids = onboard_patient(s, rt.ctx, e, rt.clock.now(), actor=_actor(),
                                               respect_quiet_hours=False)
            body = patient_json(patient)
    except InvalidField as exc:
        return _bad(exc)
    rt.dispatch_soon(ids)
    return jsonify(patient=body, created=created), 201 if created else 200


@bp.post("/api/messages")
def send():
    """The simulated phone texts the bot."""
    rt = runtime()
    try:
        data = json_body()
        body = data.get("body")
        if not isinstance(body, str) or not body.strip():
            raise InvalidField("body", "empty message")
        check_text("body", body, multiline=True, invisible_ok=True)  # a phone may send one
        phone = normalise_phone(_text(data, "phone", ""), phone_region(runtime().settings))
    except InvalidField as exc:
        return _bad(exc)
    with rt.transaction() as s:
        patient = find_patient(s, phone)
        channel = patient.channel if patient else "sms"
    outcome = receive_message(rt, InboundMessage(channel=channel, sender=phone, body=body))
    if outcome.message_id is not None:
        # Stored as the patient's own text: the audit log says who typed it, and where.
        with rt.transaction() as s:
            audit(s, rt.clock.now(), _actor(), "simulator.text", "message", outcome.message_id,
                  channel=channel)
    # What the bot did with it, as far as the whole handling went: "emergency" or "urgent" (a
    # red flag, in the text or raised by a check-in answer such as YES to "any new
    # numbness?": the care team alerted), "safety_net" (a question about one, "what if my
    # legs go numb?": what to do if it happens, nobody alerted) or "routine".
    if outcome.escalated:
        level = outcome.escalated
    elif outcome.safety_net:
        level = "safety_net"
    else:
        # Spooled in a database outage: only the text's triage is known (its instruction
        # went back at once); otherwise nobody was alerted.
        level = outcome.level if outcome.spooled else "routine"
    return jsonify(message_id=outcome.message_id, level=level), 201


@bp.get("/api/messages")
def messages():
    """Messages to and from a number, oldest first, after an id (for polling)."""
    rt = runtime()
    try:
        phone = normalise_phone(request.args.get("phone", ""), phone_region(runtime().settings))
    except InvalidField as exc:
        return _bad(exc)
    after = request.args.get("after", "0").strip() or "0"
    if not (after.isascii() and after.isdigit()) or len(after) > 10 or int(after) > MAX_ID:
        return _bad(InvalidField("after", f"expected a message id from 0 to {MAX_ID}"))
    after = int(after)
    with rt.transaction() as s:
        rows = s.scalars(
            select(Message)
            .where(Message.address == phone, Message.id > after)
            .order_by(Message.id)
        ).all()
        return jsonify([message_json(m) for m in rows])
