"""A runtime on the Twilio messenger: the real SDK with a fake only at its HTTP boundary."""

from __future__ import annotations

import pytest

from bot.messaging.fake_twilio_http import FakeTwilioHttpClient
from bot.messaging.twilio_messenger import TwilioMessenger

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "test-auth-token-not-a-secret"
FROM_NUMBER = "+447700900999"
WHATSAPP_FROM = "+447700900998"
PUBLIC_URL = "https://bot.example.org"

TWILIO_SETTINGS = {
    "messenger": "twilio",
    "public_url": PUBLIC_URL,
    "twilio": {
        "account_sid": ACCOUNT_SID,
        "auth_token": AUTH_TOKEN,
        "from_number": FROM_NUMBER,
        "whatsapp_from": WHATSAPP_FROM,
        "send_rate_per_second": 1000,
    },
}


@pytest.fixture
def settings_overrides():
    return TWILIO_SETTINGS


@pytest.fixture
def fake_http():
    return FakeTwilioHttpClient()


@pytest.fixture
def messenger(fake_http):
    return TwilioMessenger.from_credentials(
        ACCOUNT_SID, AUTH_TOKEN, http_client=fake_http,
        from_number=FROM_NUMBER, whatsapp_from=WHATSAPP_FROM,
    )


def sent_to(fake_http, number: str) -> list[dict]:
    """Form data of every Messages.create the SDK made to this number (any channel)."""
    return [r.data for r in fake_http.requests if r.data.get("To", "").endswith(number)]
