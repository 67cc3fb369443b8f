"""What we rely on from twilio.request_validator.RequestValidator (pure SDK behaviour)."""

from __future__ import annotations

import base64
import hashlib
import hmac

from twilio.request_validator import RequestValidator

from tests.twilio_signing import sign

TOKEN = "12345678901234567890123456789012"
URL = "https://bot.example.org/twilio/sms?clinic=leeds"
PARAMS = {"From": "+447700900123", "Body": "7", "MessageSid": "SM" + "0" * 32}


def test_a_signed_request_validates():
    assert RequestValidator(TOKEN).validate(URL, PARAMS, sign(TOKEN, URL, PARAMS))


def test_signature_is_hmac_sha1_of_url_then_params_sorted_by_name():
    payload = URL + "".join(name + PARAMS[name] for name in sorted(PARAMS))
    digest = hmac.new(TOKEN.encode(), payload.encode(), hashlib.sha1).digest()
    assert sign(TOKEN, URL, PARAMS) == base64.b64encode(digest).decode()


def test_param_order_does_not_matter():
    reversed_params = dict(reversed(list(PARAMS.items())))
    assert sign(TOKEN, URL, reversed_params) == sign(TOKEN, URL, PARAMS)


def test_scheme_must_match_so_http_behind_a_proxy_fails():
    signature = sign(TOKEN, URL, PARAMS)
    http_url = URL.replace("https://", "http://")
    assert not RequestValidator(TOKEN).validate(http_url, PARAMS, signature)


def test_query_string_is_part_of_the_signed_url():
    signature = sign(TOKEN, URL, PARAMS)
    validator = RequestValidator(TOKEN)
    assert not validator.validate(URL.split("?")[0], PARAMS, signature)
    assert not validator.validate(URL.replace("leeds", "york"), PARAMS, signature)


def test_path_and_host_must_match():
    signature = sign(TOKEN, URL, PARAMS)
    validator = RequestValidator(TOKEN)
    assert not validator.validate(URL.replace("/sms", "/sms/"), PARAMS, signature)
    assert not validator.validate(URL.replace("bot.", "www."), PARAMS, signature)


def test_explicit_port_is_tolerated_by_the_sdk():
    # validate() tries the URL with and without the port, so :443 on https still passes.
    signature = sign(TOKEN, URL, PARAMS)
    with_port = URL.replace("bot.example.org", "bot.example.org:443")
    assert RequestValidator(TOKEN).validate(with_port, PARAMS, signature)


def test_tampered_params_or_wrong_token_fail():
    signature = sign(TOKEN, URL, PARAMS)
    assert not RequestValidator(TOKEN).validate(URL, {**PARAMS, "Body": "0"}, signature)
    assert not RequestValidator(TOKEN).validate(URL, {**PARAMS, "Extra": "x"}, signature)
    assert not RequestValidator("another-token").validate(URL, PARAMS, signature)


def test_a_portless_signature_validates_on_any_port():
    # Surprising but true: validate() also checks the URL with its port removed, so the port is
    # not bound by the signature. Don't rely on the port to tell deployments apart.
    signature = sign(TOKEN, "http://localhost/twilio/sms", PARAMS)
    assert RequestValidator(TOKEN).validate("http://localhost:5001/twilio/sms", PARAMS, signature)
