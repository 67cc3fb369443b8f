"""Sign test webhook requests the way Twilio does, so they pass RequestValidator."""

from __future__ import annotations

from collections.abc import Mapping

from twilio.request_validator import RequestValidator


def sign(token: str, url: str, params: Mapping[str, str]) -> str:
    """X-Twilio-Signature for a form POST of params to url (the exact public URL Twilio calls)."""
    return RequestValidator(token).compute_signature(url, dict(params))
