"""TwilioMessenger against the real twilio SDK, with only the HTTP layer faked."""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
import requests
import urllib3.exceptions
from twilio.rest import Client

from bot.messaging.base import OutgoingMessage, SendError
from bot.messaging.fake_twilio_http import FakeTwilioHttpClient, count_segments
from bot.messaging.twilio_messenger import TwilioMessenger, _ResponseRecorder

ACCOUNT_SID = "AC" + "1" * 32
TOKEN = "test-token"
FROM = "+15005550006"
WA_FROM = "+14155238886"
SERVICE = "MG" + "2" * 32
PATIENT = "+447700900123"
MESSAGES_URL = f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"


@pytest.fixture
def fake() -> FakeTwilioHttpClient:
    return FakeTwilioHttpClient()


def messenger(fake: FakeTwilioHttpClient, **kw) -> TwilioMessenger:
    kw = kw or {"from_number": FROM, "whatsapp_from": WA_FROM}
    return TwilioMessenger(Client(ACCOUNT_SID, TOKEN, http_client=fake), **kw)


def sms(body: str = "How is your pain today? Reply 0-10", **kw) -> OutgoingMessage:
    return OutgoingMessage(to=PATIENT, channel="sms", body=body, **kw)


def send_error(m: TwilioMessenger, message: OutgoingMessage | None = None) -> SendError:
    with pytest.raises(SendError) as info:
        m.send(message or sms())
    return info.value


# --- requests ---------------------------------------------------------------------------------


def test_sms_posts_to_from_body_and_status_callback_to_messages_endpoint(fake):
    result = messenger(fake).send(sms("Hello", status_callback="https://bot.example/status"))

    req = fake.last_request
    assert req.method == "POST"
    assert req.url == MESSAGES_URL
    assert req.auth == (ACCOUNT_SID, TOKEN)
    assert req.data == {
        "To": PATIENT,
        "From": FROM,
        "Body": "Hello",
        "StatusCallback": "https://bot.example/status",
    }
    assert result.provider_id.startswith("SM") and len(result.provider_id) == 34
    assert result.status == "queued"
    assert result.segments == 1


def test_status_callback_omitted_when_not_given(fake):
    messenger(fake).send(sms())
    assert "StatusCallback" not in fake.last_request.data


def test_messaging_service_sid_replaces_from_when_configured(fake):
    m = messenger(fake, from_number=FROM, messaging_service_sid=SERVICE)
    result = m.send(sms())

    assert fake.last_request.data["MessagingServiceSid"] == SERVICE
    assert "From" not in fake.last_request.data
    assert result.status == "accepted"
    # Twilio reports num_segments "0" until the service picks a sender: unknown, not zero.
    assert result.segments is None


def test_whatsapp_free_text_uses_whatsapp_prefixes_and_body(fake):
    messenger(fake).send(OutgoingMessage(to=PATIENT, channel="whatsapp", body="Thanks"))

    data = fake.last_request.data
    assert data["To"] == f"whatsapp:{PATIENT}"
    assert data["From"] == f"whatsapp:{WA_FROM}"
    assert data["Body"] == "Thanks"


def test_whatsapp_sender_given_with_prefix_is_not_prefixed_twice(fake):
    m = messenger(fake, whatsapp_from=f"whatsapp:{WA_FROM}")
    m.send(OutgoingMessage(to=PATIENT, channel="whatsapp", body="Thanks"))
    assert fake.last_request.data["From"] == f"whatsapp:{WA_FROM}"


def test_whatsapp_template_sends_content_sid_and_json_variables_without_body(fake):
    template = OutgoingMessage(
        to=PATIENT,
        channel="whatsapp",
        content_sid="HX" + "3" * 32,
        content_variables={"1": "Sam", "2": "Monday"},
    )
    messenger(fake).send(template)

    data = fake.last_request.data
    assert data["ContentSid"] == "HX" + "3" * 32
    assert json.loads(data["ContentVariables"]) == {"1": "Sam", "2": "Monday"}
    assert "Body" not in data
    assert data["To"] == f"whatsapp:{PATIENT}"


def test_whatsapp_via_messaging_service(fake):
    m = messenger(fake, messaging_service_sid=SERVICE)
    m.send(OutgoingMessage(to=PATIENT, channel="whatsapp", body="Thanks"))
    assert fake.last_request.data["To"] == f"whatsapp:{PATIENT}"
    assert fake.last_request.data["MessagingServiceSid"] == SERVICE
    assert "From" not in fake.last_request.data


def test_segments_come_from_num_segments(fake):
    fake.queue_response(201, {"sid": "SM" + "a" * 32, "status": "queued", "num_segments": "3"})
    assert messenger(fake).send(sms()).segments == 3


def test_fake_counts_segments_like_twilio():
    assert count_segments("a" * 160) == 1
    assert count_segments("a" * 161) == 2
    assert count_segments("a" * 153 * 2 + "a") == 3
    assert count_segments("{" * 80) == 1 and count_segments("{" * 81) == 2
    assert count_segments("it’s" + "a" * 70) == 2  # curly apostrophe forces UCS-2


# --- refused locally, nothing sent ------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        (OutgoingMessage(to="07700900123", channel="sms", body="hi"), "invalid_number"),
        (OutgoingMessage(to=PATIENT, channel="sms"), "permanent"),
        (OutgoingMessage(to=PATIENT, channel="sms", body="hi", content_sid="HX1"), "permanent"),
        (OutgoingMessage(to=PATIENT, channel="telegram", body="hi"), "permanent"),
    ],
)
def test_malformed_messages_are_refused_without_calling_twilio(fake, message, kind):
    assert send_error(messenger(fake), message).kind == kind
    assert fake.requests == []


def test_channel_without_a_sender_is_permanent(fake):
    m = messenger(fake, from_number=FROM)
    err = send_error(m, OutgoingMessage(to=PATIENT, channel="whatsapp", body="hi"))
    assert err.kind == "permanent"
    assert fake.requests == []


def test_a_sender_is_required():
    with pytest.raises(ValueError):
        TwilioMessenger(Client(ACCOUNT_SID, TOKEN, http_client=FakeTwilioHttpClient()))


# --- error mapping ------------------------------------------------------------------------------


def test_429_with_retry_after_is_transient_with_retry_after(fake):
    fake.queue_error(429, 20429, "Too Many Requests", headers={"Retry-After": "2"})
    err = send_error(messenger(fake))
    assert err.kind == "transient" and err.retryable
    assert err.retry_after == 2
    assert err.code == 20429 and err.http_status == 429


def test_retry_after_as_http_date(fake):
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    fake.queue_error(429, 20429, "Too Many Requests", headers={"retry-after": when})
    assert 25 <= send_error(messenger(fake)).retry_after <= 30


def test_429_without_retry_after_has_none(fake):
    fake.queue_error(429, 20429, "Too Many Requests")
    err = send_error(messenger(fake))
    assert err.kind == "transient" and err.retry_after is None


def test_rfc9457_error_body_is_mapped_too(fake):
    # Newer endpoints answer with problem details; the SDK raises TwilioServiceException.
    body = {
        "type": "https://www.twilio.com/docs/errors/20429",
        "title": "Too Many Requests",
        "status": 429,
        "code": 20429,
    }
    fake.queue_response(429, body, headers={"Retry-After": "7"})
    err = send_error(messenger(fake))
    assert (err.kind, err.code, err.retry_after) == ("transient", 20429, 7)


def test_503_is_transient(fake):
    fake.queue_response(503, "<html>Service Unavailable</html>")
    err = send_error(messenger(fake))
    assert err.kind == "transient" and err.http_status == 503
    assert err.code is None  # the SDK's fallback code (= HTTP status) is not a Twilio code


@pytest.mark.parametrize(
    "exc",
    [
        requests.exceptions.ConnectionError("connection refused"),
        requests.exceptions.ReadTimeout("read timed out"),
        ConnectionResetError(),
    ],
)
def test_network_errors_are_transient(fake, exc):
    fake.queue_exception(exc)
    err = send_error(messenger(fake))
    assert err.kind == "transient" and err.retry_after is None


def _wrapped(reason):
    """A requests ConnectionError as requests raises it: around urllib3's MaxRetryError."""
    return requests.exceptions.ConnectionError(
        urllib3.exceptions.MaxRetryError(None, "/2010-04-01/Accounts", reason))


@pytest.mark.parametrize(
    ("exc", "unclear"),
    [
        # the request may have reached Twilio: it may have taken the message
        (requests.exceptions.ReadTimeout("read timed out"), True),
        (requests.exceptions.ConnectionError(urllib3.exceptions.ProtocolError(
            "Connection aborted.", ConnectionResetError())), True),
        (requests.exceptions.ChunkedEncodingError("response ended early"), True),
        (ConnectionResetError(), True),
        (TimeoutError(), True),
        # no connection was made: nothing can have been sent
        (requests.exceptions.ConnectTimeout("connect timed out"), False),
        (_wrapped(urllib3.exceptions.NewConnectionError(None, "Connection refused")), False),
        (_wrapped(urllib3.exceptions.NameResolutionError("api.twilio.com", None, "no DNS")),
         False),
        (requests.exceptions.SSLError("handshake failed"), False),
        (ConnectionRefusedError(), False),
    ],
)
def test_a_network_error_says_whether_twilio_may_have_taken_the_message(fake, exc, unclear):
    fake.queue_exception(exc)
    err = send_error(messenger(fake))
    assert err.kind == "transient" and err.unclear is unclear


@pytest.mark.parametrize(("status", "unclear"), [(502, True), (504, True), (500, False),
                                                 (503, False)])
def test_a_gateway_error_may_hide_a_message_twilio_took(fake, status, unclear):
    fake.queue_error(status, status, "gateway")
    err = send_error(messenger(fake))
    assert err.kind == "transient" and err.unclear is unclear


def test_retry_after_is_not_taken_from_an_earlier_response(fake):
    m = messenger(fake)
    fake.queue_error(429, 20429, "Too Many Requests", headers={"Retry-After": "9"})
    send_error(m)
    fake.queue_exception(requests.exceptions.ConnectionError())
    assert send_error(m).retry_after is None


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (400, 21610, "opted_out"),
        (400, 21211, "invalid_number"),
        (400, 21614, "invalid_number"),
        (400, 21408, "permanent"),  # geo permission: our account, not the number
        (400, 63016, "outside_window"),
        (400, 30003, "transient"),
        (400, 21617, "permanent"),
        (401, 20003, "permanent"),
    ],
)
def test_twilio_error_codes_map_to_kinds(fake, status, code, kind):
    fake.queue_error(status, code, f"Twilio error {code}")
    err = send_error(messenger(fake))
    assert (err.kind, err.code, err.http_status) == (kind, code, status)
    assert err.retryable == (kind == "transient")


def test_opted_out_is_not_retryable(fake):
    fake.queue_error(400, 21610, "Attempt to send to unsubscribed recipient")
    err = send_error(messenger(fake))
    assert err.kind == "opted_out" and not err.retryable


def test_unknown_4xx_is_permanent_with_code_and_message(fake):
    fake.queue_error(400, 21617, "The concatenated message body exceeds the 1600 character limit")
    err = send_error(messenger(fake))
    assert err.kind == "permanent" and err.code == 21617
    assert "1600 character limit" in str(err)


def test_error_text_does_not_carry_the_phone_number(fake):
    fake.queue_error(400, 21211, f"The 'To' number {PATIENT} is not a valid phone number.")
    err = send_error(messenger(fake))
    assert err.kind == "invalid_number"
    assert PATIENT not in str(err) and PATIENT[1:] not in str(err)


def test_logs_have_sid_and_code_but_no_number_or_body(fake, caplog):
    caplog.set_level(logging.DEBUG, logger="bot.messaging.twilio_messenger")
    m = messenger(fake)
    result = m.send(sms("secret symptom text"))
    fake.queue_error(400, 21610, f"{PATIENT} unsubscribed")
    send_error(m, sms("secret symptom text"))

    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert result.provider_id in logged and "21610" in logged
    assert PATIENT not in logged and "secret symptom" not in logged


# --- header recorder ---------------------------------------------------------------------------


def test_recorder_keeps_the_last_response_per_thread():
    fake = FakeTwilioHttpClient()
    recorder = _ResponseRecorder(fake)
    fake.queue_response(429, {}, headers={"Retry-After": "5"})
    recorder.request("POST", MESSAGES_URL, data={})
    seen = {}

    def other_thread():
        seen["before"] = recorder.last_response
        recorder.request("POST", MESSAGES_URL, data={})
        seen["after"] = recorder.last_response.status_code

    worker = threading.Thread(target=other_thread)
    worker.start()
    worker.join()

    assert seen == {"before": None, "after": 201}
    assert recorder.last_response.status_code == 429
    assert recorder.last_response.headers["retry-after"] == "5"


def test_messenger_wraps_the_client_once_and_stays_transparent(fake):
    client = Client(ACCOUNT_SID, TOKEN, http_client=fake)
    TwilioMessenger(client, from_number=FROM)
    TwilioMessenger(client, from_number=FROM).send(sms())
    assert isinstance(client.http_client, _ResponseRecorder)
    assert client.http_client.inner is fake
    assert client.http_client.requests is fake.requests  # delegated attribute
    assert len(fake.requests) == 1


def test_from_credentials_passes_http_client_through(fake):
    m = TwilioMessenger.from_credentials(ACCOUNT_SID, TOKEN, http_client=fake, from_number=FROM)
    m.send(sms())
    assert m.name == "twilio"
    assert fake.last_request.auth == (ACCOUNT_SID, TOKEN)


def test_from_credentials_default_http_client_has_a_timeout():
    # The SDK's TwilioHttpClient defaults to no timeout at all; a stalled socket would hang.
    m = TwilioMessenger.from_credentials(ACCOUNT_SID, TOKEN, from_number=FROM)
    assert m._client.http_client.inner.timeout == 10.0


def test_whatsapp_sender_is_named_beside_the_messaging_service_when_both_are_set(fake):
    """TWILIO_WHATSAPP_FROM with TWILIO_MESSAGING_SERVICE_SID: Twilio takes From "instead of or
    in addition to" MessagingServiceSid (error 21603's page), the From then being the sender
    out of the service's pool. Dropping it left the choice of WhatsApp sender to the pool."""
    m = messenger(fake, from_number=FROM, whatsapp_from=WA_FROM, messaging_service_sid=SERVICE)
    m.send(OutgoingMessage(to=PATIENT, channel="whatsapp", body="Thanks"))
    data = fake.last_request.data
    assert data["MessagingServiceSid"] == SERVICE
    assert data["From"] == f"whatsapp:{WA_FROM}"
    assert data["To"] == f"whatsapp:{PATIENT}"
    template = OutgoingMessage(to=PATIENT, channel="whatsapp", content_sid="HX" + "3" * 32)
    m.send(template)
    assert fake.last_request.data["From"] == f"whatsapp:{WA_FROM}"
    assert fake.last_request.data["MessagingServiceSid"] == SERVICE
    # SMS still goes from the service's pool: TWILIO_FROM beside a service is the number
    # alert calls come from (a service cannot call), not an SMS sender.
    m.send(sms())
    assert "From" not in fake.last_request.data
    assert fake.last_request.data["MessagingServiceSid"] == SERVICE
