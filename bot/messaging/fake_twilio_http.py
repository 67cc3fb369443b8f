"""A fake Twilio REST API at the SDK's HTTP boundary, for tests and the local benchmark.

Give it to the real SDK: ``Client(sid, token, http_client=FakeTwilioHttpClient())``. The SDK builds
the request and parses the response (raising TwilioRestException on 4xx/5xx) exactly as it would
against api.twilio.com; only the network is replaced.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from requests.structures import CaseInsensitiveDict
from twilio.http import HttpClient
from twilio.http.response import Response

_MESSAGES_URL = re.compile(r"/2010-04-01/Accounts/(?P<account>[^/]+)/Messages\.json$")
_CALLS_URL = re.compile(r"/2010-04-01/Accounts/(?P<account>[^/]+)/Calls\.json$")
# GSM-7 basic set (ASCII part and common Latin-1 letters) and the escape-table characters that
# cost two septets. Anything else makes the whole message UCS-2. Good enough for segment counts.
_GSM7_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENDED = set("^{}\\[]~|€\f")


@dataclass(frozen=True)
class RecordedRequest:
    """One request the SDK made."""

    method: str
    url: str
    params: dict[str, Any]
    data: dict[str, Any]
    headers: dict[str, str]
    auth: tuple[str, str] | None
    timeout: float | None


class FakeTwilioHttpClient(HttpClient):
    """Records requests; answers like Twilio's Messages and Calls APIs unless told otherwise.
    Thread-safe."""

    def __init__(self, *, latency: float = 0.0) -> None:
        super().__init__(logging.getLogger(__name__), is_async=False, timeout=None)
        self.latency = latency  # seconds slept per request, outside the lock (benchmarks)
        self.requests: list[RecordedRequest] = []
        # Each message (SM...) and call (CA...) made, with its SID.
        self.created: list[tuple[RecordedRequest, str]] = []
        self._scripted: deque[Response | BaseException] = deque()
        self._lock = threading.Lock()

    def queue_response(
        self,
        status: int,
        json_body: dict[str, Any] | str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Make the next request (in any thread) get this response instead of the default."""
        text = json_body if isinstance(json_body, str) else json.dumps(json_body or {})
        response = Response(status, text, _headers(headers))
        with self._lock:
            self._scripted.append(response)

    def queue_error(
        self, status: int, code: int, message: str, headers: dict[str, str] | None = None
    ) -> None:
        """Shortcut: queue a Twilio-style error body {"code", "message", "more_info", "status"}."""
        body = {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        }
        self.queue_response(status, body, headers)

    def queue_exception(self, exc: BaseException) -> None:
        """Make the next request raise exc (e.g. requests.exceptions.ConnectionError())."""
        with self._lock:
            self._scripted.append(exc)

    @property
    def last_request(self) -> RecordedRequest:
        """The most recent request; IndexError if there was none."""
        with self._lock:
            return self.requests[-1]

    def reset(self) -> None:
        """Forget recorded requests and anything still queued."""
        with self._lock:
            self.requests.clear()
            self.created.clear()
            self._scripted.clear()

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
        """Record the call, then return the next scripted outcome or a Twilio-like default."""
        recorded = RecordedRequest(
            method=method.upper(),
            url=url,
            params=dict(params or {}),
            data=dict(data or {}),
            headers=dict(headers or {}),
            auth=auth,
            timeout=timeout,
        )
        with self._lock:
            self.requests.append(recorded)
            scripted = self._scripted.popleft() if self._scripted else None
        if self.latency:
            time.sleep(self.latency)
        if isinstance(scripted, BaseException):
            raise scripted
        if scripted is not None:
            return scripted
        match = _MESSAGES_URL.search(recorded.url)
        call = _CALLS_URL.search(recorded.url)
        if recorded.method != "POST" or not (match or call):
            body = {"code": 20404, "message": "The requested resource was not found",
                    "status": 404}
            return Response(404, json.dumps(body), _headers(None))
        if call:
            created = _call_json(call["account"], recorded.data)
        else:
            refused = _content_variables_refused(recorded.data)
            if refused is not None:
                return refused
            created = _message_json(match["account"], recorded.data)
        with self._lock:
            self.created.append((recorded, created["sid"]))
        return Response(201, json.dumps(created), _headers(None))


# Twilio refuses (21656) a template variable that is empty or holds a line break, a tab or more
# than four spaces in a row; WhatsApp would not deliver it.
_BAD_VARIABLE = re.compile(r"[\n\t]| {5,}")


def _content_variables_refused(data: dict[str, Any]) -> Response | None:
    """The 400 Twilio answers for ContentVariables it cannot use, or None when they are fine."""
    if "ContentSid" not in data or "ContentVariables" not in data:
        return None
    try:
        variables = json.loads(str(data["ContentVariables"]))
    except ValueError:
        variables = None
    if isinstance(variables, dict) and all(
            isinstance(v, str) and v and not _BAD_VARIABLE.search(v)
            for v in variables.values()):
        return None
    body = {"code": 21656, "message": "The ContentVariables Parameter is invalid",
            "more_info": "https://www.twilio.com/docs/errors/21656", "status": 400}
    return Response(400, json.dumps(body), _headers(None))


def _message_json(account_sid: str, data: dict[str, Any]) -> dict[str, Any]:
    sid = "SM" + uuid.uuid4().hex
    now = format_datetime(datetime.now(UTC))
    via_service = "MessagingServiceSid" in data and "From" not in data
    body = str(data.get("Body", ""))
    return {
        "account_sid": account_sid,
        "api_version": "2010-04-01",
        "body": body,
        "date_created": now,
        "date_sent": None,
        "date_updated": now,
        "direction": "outbound-api",
        "error_code": None,
        "error_message": None,
        "from": data.get("From"),
        "messaging_service_sid": data.get("MessagingServiceSid"),
        "num_media": "0",
        # Like Twilio: a Messaging Service picks the sender later, so segments are "0" for now.
        "num_segments": "0" if via_service else str(count_segments(body)),
        "price": None,
        "price_unit": "USD",
        "sid": sid,
        "status": "accepted" if via_service else "queued",
        "subresource_uris": {
            "media": f"/2010-04-01/Accounts/{account_sid}/Messages/{sid}/Media.json"
        },
        "to": data.get("To"),
        "uri": f"/2010-04-01/Accounts/{account_sid}/Messages/{sid}.json",
    }


def _call_json(account_sid: str, data: dict[str, Any]) -> dict[str, Any]:
    """What Twilio answers to a Calls.create: 201 with a CA... SID, queued."""
    sid = "CA" + uuid.uuid4().hex
    now = format_datetime(datetime.now(UTC))
    return {
        "account_sid": account_sid,
        "answered_by": None,
        "api_version": "2010-04-01",
        "caller_name": None,
        "date_created": now,
        "date_updated": now,
        "direction": "outbound-api",
        "duration": None,
        "end_time": None,
        "forwarded_from": None,
        "from": data.get("From"),
        "from_formatted": data.get("From"),
        "group_sid": None,
        "parent_call_sid": None,
        "phone_number_sid": None,
        "price": None,
        "price_unit": "USD",
        "queue_time": "0",
        "sid": sid,
        "start_time": None,
        "status": "queued",
        "subresource_uris": {
            "notifications": f"/2010-04-01/Accounts/{account_sid}/Calls/{sid}/Notifications.json",
            "recordings": f"/2010-04-01/Accounts/{account_sid}/Calls/{sid}/Recordings.json",
        },
        "to": data.get("To"),
        "to_formatted": data.get("To"),
        "trunk_sid": None,
        "uri": f"/2010-04-01/Accounts/{account_sid}/Calls/{sid}.json",
    }


def count_segments(body: str) -> int:
    """SMS segments for body: GSM-7 160/153 per segment, else UCS-2 70/67."""
    if not body:
        return 1
    if all(c in _GSM7_BASIC or c in _GSM7_EXTENDED for c in body):
        units = sum(2 if c in _GSM7_EXTENDED else 1 for c in body)
        single, multi = 160, 153
    else:
        units = len(body.encode("utf-16-le")) // 2  # emoji take two UCS-2 code units
        single, multi = 70, 67
    return 1 if units <= single else -(-units // multi)


def _headers(extra: dict[str, str] | None) -> CaseInsensitiveDict:
    # The real TwilioHttpClient hands the SDK requests' CaseInsensitiveDict; so do we.
    headers = CaseInsensitiveDict({"Content-Type": "application/json"})
    headers.update(extra or {})
    return headers
