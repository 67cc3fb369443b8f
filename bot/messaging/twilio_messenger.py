"""Messenger adapter for Twilio Programmable Messaging (SMS and WhatsApp) and Programmable
Voice (alert calls), on the real SDK."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from email.utils import parsedate_to_datetime
from typing import Any

import requests
import urllib3.exceptions
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http import HttpClient
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from bot.messaging.base import OutgoingMessage, SendError, SendResult

log = logging.getLogger(__name__)

_E164 = re.compile(r"^\+[1-9]\d{1,14}$")
# Twilio puts the recipient's number in some error texts ("The 'To' number +44... is not valid").
_PHONE_LIKE = re.compile(r"(?<!\w)\+?\d{7,15}(?!\w)")
_WHATSAPP = "whatsapp:"

OPTED_OUT = 21610
OUTSIDE_WINDOW = 63016
TOO_MANY_REQUESTS = 20429
UNREACHABLE = 30003
# 21211 "Invalid 'To' phone number" and 21614 "'To' number is not a valid mobile number" (a
# landline) both mean the number on file can't receive our messages: a coordinator must fix it.
# 21408 "Permission to send an SMS has not been enabled for the region" is deliberately NOT here:
# the number is fine, our account's geo permissions are not, so it is "permanent" (an ops fix).
INVALID_NUMBER_CODES = frozenset({21211, 21614})

# Requests' network failures (ConnectTimeout is both ConnectionError and Timeout) plus the builtin
# ones a custom http_client might raise. The SDK does not wrap these in TwilioException.
_NETWORK_ERRORS = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
    ConnectionError,
    TimeoutError,
)


def _may_have_been_taken(exc: BaseException) -> bool:
    """Whether a network failure may have come after Twilio received the request: a read
    timeout, or the connection dropped while waiting for the answer. Not when no connection
    was made (refused, DNS, connect timeout, TLS handshake, proxy), so the request never left."""
    if isinstance(exc, (requests.exceptions.ConnectTimeout, requests.exceptions.SSLError,
                        requests.exceptions.ProxyError, ConnectionRefusedError)):
        return False
    if isinstance(exc, requests.exceptions.ConnectionError) and exc.args:
        reason = getattr(exc.args[0], "reason", exc.args[0])
        # NewConnectionError and NameResolutionError are ConnectTimeoutErrors in urllib3 2.
        if isinstance(reason, urllib3.exceptions.ConnectTimeoutError):
            return False
    return True


class _ResponseRecorder(HttpClient):
    """Delegating HttpClient that remembers, per thread, the last Response it returned.

    Why: twilio 9.13's Version.exception() builds TwilioRestException / TwilioServiceException
    from the response body only; the headers (Retry-After on a 429) are dropped, and the
    *_with_http_info methods only return headers on success. The one place that sees the whole
    Response is the http_client, so we wrap whatever client the SDK was given (real or fake) and
    read the headers back after the SDK raises. The request/response still flows through the
    unmodified SDK. Thread-local because one Client is shared by dispatcher threads, and
    Client.request() calls http_client.request() synchronously on the caller's thread.
    """

    def __init__(self, inner: HttpClient) -> None:
        super().__init__(getattr(inner, "logger", log), False, getattr(inner, "timeout", None))
        self.inner = inner
        self._local = threading.local()

    def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        """Forward to the wrapped client and remember its Response for this thread."""
        self._local.last = None
        response = self.inner.request(
            method,
            url,
            params=params,
            data=data,
            headers=headers,
            auth=auth,
            timeout=timeout,
            allow_redirects=allow_redirects,
        )
        self._local.last = response
        return response

    def forget(self) -> None:
        """Drop this thread's remembered response."""
        self._local.last = None

    @property
    def last_response(self) -> Response | None:
        """The Response this thread got from its latest request, if any."""
        return getattr(self._local, "last", None)

    def __getattr__(self, name: str) -> Any:
        # Anything else (session, proxy, a fake's .requests...) comes from the wrapped client.
        inner = self.__dict__.get("inner")
        if inner is None:
            raise AttributeError(name)
        return getattr(inner, name)


class TwilioMessenger:
    """Send OutgoingMessages through twilio.rest.Client and map failures to SendError kinds."""

    name = "twilio"

    def __init__(
        self,
        client: Client,
        *,
        from_number: str | None = None,
        whatsapp_from: str | None = None,
        messaging_service_sid: str | None = None,
    ) -> None:
        if not (from_number or whatsapp_from or messaging_service_sid):
            raise ValueError("need from_number, whatsapp_from or messaging_service_sid")
        if client.http_client.is_async:
            raise ValueError("TwilioMessenger needs a synchronous http_client")
        # Installs the recorder on the caller's Client (once); it is transparent to other users.
        if not isinstance(client.http_client, _ResponseRecorder):
            client.http_client = _ResponseRecorder(client.http_client)
        self._recorder: _ResponseRecorder = client.http_client
        self._client = client
        self._from_number = from_number
        self._whatsapp_from = _strip_whatsapp(whatsapp_from) if whatsapp_from else None
        self._messaging_service_sid = messaging_service_sid

    @classmethod
    def from_credentials(
        cls,
        account_sid: str,
        auth_token: str,
        *,
        http_client: HttpClient | None = None,
        timeout: float = 10.0,
        **kw: Any,
    ) -> TwilioMessenger:
        """Build the Client (with http_client, or a TwilioHttpClient with a timeout) and wrap it."""
        # TwilioHttpClient's default timeout is None: a stalled connection would hang a worker.
        http_client = http_client or TwilioHttpClient(timeout=timeout)
        return cls(Client(account_sid, auth_token, http_client=http_client), **kw)

    def warm_up(self) -> None:
        """Load the SDK's Messages API now. The Client imports it on first use (some 40 ms),
        which would otherwise land on the first patient's reply."""
        _ = self._client.messages

    def send(self, message: OutgoingMessage) -> SendResult:
        """Hand one message to Twilio; raise SendError if it is refused or can't be delivered."""
        params = self._create_params(message)
        with self._refusals_as_send_errors():
            created = self._client.messages.create(**params)
        segments = _segments(created.num_segments)
        log.debug("twilio send accepted sid=%s status=%s", created.sid, created.status)
        return SendResult(provider_id=created.sid, status=str(created.status), segments=segments)

    def call(self, to: str, twiml: str, status_callback: str | None = None) -> SendResult:
        """Phone `to` from the configured number (a Messaging Service cannot place calls) and
        play `twiml`; raise SendError as `send` does."""
        to = _strip_whatsapp(to)
        if not _E164.match(to):
            raise SendError("invalid_number", "recipient is not an E.164 number")
        if not self._from_number:
            raise SendError("permanent", "no number to call from (TWILIO_FROM)")
        if not twiml:
            raise SendError("permanent", "a call needs TwiML")
        params: dict[str, Any] = {"to": to, "from_": self._from_number, "twiml": twiml}
        if status_callback:
            params["status_callback"] = status_callback
        with self._refusals_as_send_errors():
            created = self._client.calls.create(**params)
        log.debug("twilio call accepted sid=%s status=%s", created.sid, created.status)
        # Twilio's call statuses start at "queued" too; what follows comes by status callback.
        return SendResult(provider_id=created.sid, status=str(created.status or "queued"))

    @contextmanager
    def _refusals_as_send_errors(self) -> Iterator[None]:
        """Turn what the SDK raises for one request into SendError kinds."""
        self._recorder.forget()
        try:
            yield
        except (TwilioRestException, TwilioServiceException) as exc:
            raise self._api_error(exc) from exc
        except _NETWORK_ERRORS as exc:
            # A read timeout is ambiguous: Twilio may have taken the message. Still transient,
            # but marked unclear: the dispatcher holds a routine message back until Twilio's
            # status callback (whose URL names the outbox row) says whether it went.
            unclear = _may_have_been_taken(exc)
            log.warning("twilio send failed kind=transient network=%s unclear=%s",
                        type(exc).__name__, unclear)
            raise SendError("transient", f"network error: {type(exc).__name__}",
                            unclear=unclear) from exc
        except (TwilioException, requests.exceptions.RequestException) as exc:
            # Sync SDK raises plain TwilioException only for misconfiguration (abstract client,
            # credential provider), and these requests errors are bad URLs/redirects: not network.
            log.warning("twilio send failed kind=permanent error=%s", type(exc).__name__)
            raise SendError("permanent", f"twilio client error: {type(exc).__name__}") from exc

    def _create_params(self, message: OutgoingMessage) -> dict[str, Any]:
        if message.channel not in ("sms", "whatsapp"):
            raise SendError("permanent", f"unsupported channel {message.channel!r}")
        to = _strip_whatsapp(message.to)
        if not _E164.match(to):
            raise SendError("invalid_number", "recipient is not an E.164 number")
        if bool(message.body) == bool(message.content_sid):
            raise SendError("permanent", "message needs exactly one of body or content_sid")

        whatsapp = message.channel == "whatsapp"
        params: dict[str, Any] = {"to": _WHATSAPP + to if whatsapp else to}
        if self._messaging_service_sid:
            params["messaging_service_sid"] = self._messaging_service_sid
            # A WhatsApp sender named beside the service is the one to send from: Twilio
            # takes From "instead of or in addition to" MessagingServiceSid (a sender in the
            # service's pool: 21711 for one that is not), keeping the service's features.
            # An SMS From beside a service is the number alert calls come from: SMS goes
            # from the pool.
            if whatsapp and self._whatsapp_from:
                params["from_"] = _WHATSAPP + self._whatsapp_from
        elif whatsapp and self._whatsapp_from:
            params["from_"] = _WHATSAPP + self._whatsapp_from
        elif not whatsapp and self._from_number:
            params["from_"] = self._from_number
        else:
            raise SendError("permanent", f"no sender configured for channel {message.channel}")

        if message.content_sid:
            params["content_sid"] = message.content_sid
            # Omitted when empty so Twilio falls back to the template's default placeholders.
            if message.content_variables:
                params["content_variables"] = json.dumps(message.content_variables)
        else:
            params["body"] = message.body
        if message.status_callback:
            params["status_callback"] = message.status_callback
        return params

    def _api_error(self, exc: TwilioRestException | TwilioServiceException) -> SendError:
        response = self._recorder.last_response
        status = exc.status or (response.status_code if response is not None else None)
        # When the error body has no "code" (or isn't JSON, e.g. a proxy's HTML 502), the SDK
        # sets code = HTTP status. Twilio's own codes are 5 digits, so drop those fallbacks.
        code = exc.code if isinstance(exc.code, int) and exc.code >= 10000 else None
        if isinstance(exc, TwilioServiceException):
            text = f"{exc.title}: {exc.detail}" if exc.detail else exc.title
        else:
            text = exc.msg
        # Never str(exc): TwilioRestException.__str__ emits ANSI colours when stderr is a tty.
        text = _PHONE_LIKE.sub("[number]", str(text or f"HTTP {status}"))

        kind = _classify(status, code)
        retry_after = None
        if kind == "transient" and response is not None:
            retry_after = _retry_after_seconds(response.headers)
        # A gateway's 502/504 (Twilio's edge gave up waiting on the API behind it): the API may
        # have taken the message all the same.
        unclear = kind == "transient" and status in (502, 504)
        log.warning("twilio send failed kind=%s code=%s http_status=%s", kind, code, status)
        return SendError(kind, text, code=code, http_status=status, retry_after=retry_after,
                         unclear=unclear)


def _classify(status: int | None, code: int | None) -> str:
    if code == OPTED_OUT:
        return "opted_out"
    if code in INVALID_NUMBER_CODES:
        return "invalid_number"
    if code == OUTSIDE_WINDOW:
        return "outside_window"
    if status == 429 or code in (TOO_MANY_REQUESTS, UNREACHABLE):
        return "transient"
    if status is not None and status >= 500:
        return "transient"
    return "permanent"


def _retry_after_seconds(headers: Any) -> float | None:
    """Parse Retry-After (delta-seconds or an HTTP date) from any mapping, case-insensitively."""
    if not headers:
        return None
    value = next((v for k, v in headers.items() if str(k).lower() == "retry-after"), None)
    if value is None:
        return None
    value = str(value).strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _segments(raw: Any) -> int | None:
    # Messages sent via a Messaging Service report num_segments "0" until a sender is chosen:
    # that means "not known yet", not zero segments.
    try:
        segments = int(raw)
    except (TypeError, ValueError):
        return None
    return segments or None


def _strip_whatsapp(address: str) -> str:
    return address[len(_WHATSAPP) :] if address.startswith(_WHATSAPP) else address
