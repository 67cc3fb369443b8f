"""Twilio webhooks: inbound messages (SMS and WhatsApp), delivery status callbacks, and the
key pressed on an emergency alert call (and how that call ended).

Every request must carry a valid X-Twilio-Signature for the URL Twilio called; anything else is
refused with 403 before a single row is written.
"""

from __future__ import annotations

import logging
from urllib.parse import quote

from flask import Blueprint, Response, abort, request
from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse

from bot.config import DatabaseUnreachable
from bot.services import voice
from bot.services.escalations import EscalationNotFound, acknowledge
from bot.services.inbound import InboundMessage
from bot.services.patients import InvalidField, normalise_phone
from bot.services.spool import SpooledStatus
from bot.services.status import callback_ref, record_status
from bot.web.common import receive_message, runtime

log = logging.getLogger(__name__)
bp = Blueprint("webhooks", __name__, url_prefix="/webhooks/twilio")
# Each route also answers with a trailing slash (".../message/", as a URL is easily pasted into
# Twilio's console): a 404 there would lose every message, and Twilio does not retry one. The
# signature is checked against the path as called, slash and all, as Twilio signed it.


def _public_url() -> str:
    """The URL Twilio signed: the configured public base + path + query, else what we received."""
    base = runtime().settings.public_url
    # The query exactly as sent: request.url would decode %2F, %7E or UTF-8 escapes, and
    # Twilio signed the encoded form.
    query = request.query_string.decode("latin-1")
    if not base:  # behind ProxyFix, scheme and host are the ones the proxy was asked for
        base = f"{request.scheme}://{request.host}{request.root_path}"
    return base + request.path + (f"?{query}" if query else "")


def _require_signature() -> None:
    token = runtime().settings.twilio.auth_token
    signature = request.headers.get("X-Twilio-Signature", "")
    if not token or not signature or not RequestValidator(token).validate(
        _public_url(), request.form, signature
    ):
        log.warning("rejected webhook %s: %s", request.path,
                    "no auth token configured" if not token else "bad or missing signature")
        abort(403)


def _twiml(replies=()) -> Response:
    """Empty TwiML (replies go through the outbox), except while the database is down: then
    an emergency's replies go back in the response itself (see bot.services.receiving)."""
    response = MessagingResponse()
    for to, body in replies:
        if to:
            response.message(body, to=to)
        else:
            response.message(body)
    return Response(str(response), mimetype="application/xml")


@bp.post("/message", strict_slashes=False)
def inbound_message():
    _require_signature()
    rt = runtime()
    form = request.form
    raw_from = form.get("From", "")
    channel = "whatsapp" if raw_from.startswith("whatsapp:") else "sms"
    try:
        sender = normalise_phone(raw_from)
    except InvalidField:
        sender = raw_from.removeprefix("whatsapp:")[:20]  # short code or alphanumeric id
    msg = InboundMessage(
        channel=channel,
        sender=sender,
        body=form.get("Body", ""),
        provider_id=form.get("MessageSid") or form.get("SmsSid"),
        opt_out_type=form.get("OptOutType"),
        button_payload=form.get("ButtonPayload"),
        media=_media(form),
    )
    outcome = receive_message(rt, msg)
    return _twiml(outcome.outage_replies)


def _media(form) -> tuple[tuple[str, str], ...]:
    """Photos, voice notes...: (MediaUrl{i}, MediaContentType{i}) for i < NumMedia; and a
    location shared on WhatsApp, as ("geo:LAT,LON?q=LABEL, ADDRESS", "location")."""
    count = form.get("NumMedia", "0")
    n = min(int(count), 10) if count.isdigit() else 0  # Twilio sends at most 10
    media = tuple((form[f"MediaUrl{i}"], form.get(f"MediaContentType{i}", ""))
                  for i in range(n) if form.get(f"MediaUrl{i}"))
    place = _location(form)
    return (*media, ("geo:" + place, "location")) if place else media


def _location(form) -> str | None:
    """A WhatsApp location (Latitude, Longitude, and any Label and Address Twilio sends with
    an empty Body) as "LAT,LON?q=LABEL, ADDRESS" (percent-encoded), or None."""
    lat, lon = form.get("Latitude", "").strip(), form.get("Longitude", "").strip()
    try:
        if not (-90 <= float(lat) <= 90 and -180 <= float(lon) <= 180):
            return None
    except ValueError:
        return None
    named = ", ".join(v for v in (form.get("Label", "").strip(),
                                  form.get("Address", "").strip()) if v)[:500]
    return f"{lat[:24]},{lon[:24]}" + (f"?q={quote(named, safe=' ,')}" if named else "")


@bp.post("/status", strict_slashes=False)
def status_callback():
    _require_signature()
    rt = runtime()
    form = request.form
    sid = form.get("MessageSid") or form.get("SmsSid")
    # Twilio adds statuses now and then; one we don't know is stored, not applied (and kept to
    # the column's size rather than refused).
    status = (form.get("MessageStatus") or form.get("SmsStatus") or "").lower()[:24]
    if not sid or not status:
        return Response("missing MessageSid or MessageStatus", status=400)
    code = form.get("ErrorCode")
    error_code = int(code) if code and code.isdigit() else None
    routes = ("sms", "whatsapp", "template")
    return _record_status(rt, sid, status, error_code, _named_row(routes))


def _named_row(routes: tuple[str, ...]) -> str | None:
    """The outbox row and route our callback URL named (signed with the rest of the URL), if
    they are well formed: a row id that fits the column and one of `routes`."""
    named, via = request.args.get("outbox", ""), request.args.get("via", "")
    if named.isdigit() and len(named) <= 9 and via in routes:
        return callback_ref(int(named), via)
    return None


def _record_status(rt, sid: str, status: str, error_code: int | None,
                   outbox_ref: str | None) -> Response:
    """Apply a status callback (a text's or an alert call's), or spool it."""
    try:
        if not rt.database_ready():  # this worker started while the database was down
            raise DatabaseUnreachable(rt.database_problem or "database: not checked yet")
        with rt.transaction() as session:
            ids = record_status(session, rt.ctx, sid, status, error_code, rt.clock.now(),
                                outbox_ref=outbox_ref)
    except Exception:
        # Twilio does not retry a status callback: keep it on disk until the database is back
        # (a failed WhatsApp message must still fall back to SMS, a failed alert move on).
        # If the disk refuses too, the 500 at least shows in Twilio's debugger.
        log.exception("the database could not store a status callback; spooling it")
        rt.spool.put_status(SpooledStatus(sid=sid, status=status, code=error_code,
                                          received_at=rt.clock.now(), outbox_ref=outbox_ref))
        rt.start_spool_replayer()
        return Response(status=204)
    # An SMS copy or a template an emergency or an alert needs goes now; a routine one is left
    # to the sweep, which keeps to the sender's rate (a failed fan-out's callbacks come in a
    # burst).
    rt.dispatch_soon(ids, urgent_only=True)
    rt.replay_spool_soon()
    return Response(status=204)


@bp.post("/voice/ack", strict_slashes=False)
def voice_ack():
    """A key pressed on an emergency alert call (see bot.services.voice). 1 acknowledges the
    escalation as the contact called, as their ACK by text would; the answer is said to them."""
    _require_signature()
    rt = runtime()
    ref, contact_id = request.args.get("esc", ""), request.args.get("contact", "")
    contact = next((c for c in rt.settings.care_team.contacts if c.id == contact_id), None)
    if request.form.get("Digits", "") != voice.ACK_DIGIT or contact is None or not ref:
        return _voice("Not acknowledged.")
    try:
        with rt.transaction() as session:
            esc, changed = acknowledge(session, ref, contact.name, rt.clock.now(),
                                       actor=f"staff:{contact.id}", how="pressed 1 on the call")
            taken_by = esc.acknowledged_by
    except EscalationNotFound:
        return _voice("Not acknowledged.")
    except Exception:
        log.exception("the database could not store an acknowledgement by phone")
        return _voice("Not acknowledged. Please text A C K and the reference.")
    if not changed:
        return _voice(f"Already acknowledged by {taken_by or 'someone'}.")
    return _voice("Acknowledged. Thank you.")


def _voice(words: str) -> Response:
    return Response(voice.say_twiml(words), mimetype="application/xml")


@bp.post("/voice/status", strict_slashes=False)
def voice_status_callback():
    """How an alert call ended (Twilio's status callback for a call): kept on its message as a
    delivery status (see voice.CALL_STATUSES), as a text's callback is."""
    _require_signature()
    rt = runtime()
    form = request.form
    sid = form.get("CallSid", "")
    call_status = (form.get("CallStatus") or "").lower()
    if not sid or not call_status:
        return Response("missing CallSid or CallStatus", status=400)
    status = voice.CALL_STATUSES.get(call_status, call_status[:24])
    return _record_status(rt, sid, status, None, _named_row(("voice",)))
