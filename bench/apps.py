"""WSGI apps for bench/webhook.py, each built by gunicorn in its workers.

`checkin()`: the real bot (settings from the environment the benchmark sets), with the real
twilio SDK whose HTTP client is the fake from bot.messaging (a fixed latency stands in for
Twilio's API), so replies are sent exactly as in production minus the network.
`bare()`: a Flask endpoint that answers empty TwiML and does nothing else: the ceiling of
Flask + gunicorn on this machine.
"""

from __future__ import annotations

import os

from flask import Flask, Response


def checkin() -> Flask:
    from bot.config import load_settings
    from bot.logs import setup_logging
    from bot.messaging.fake_twilio_http import FakeTwilioHttpClient
    from bot.messaging.twilio_messenger import TwilioMessenger
    from bot.runtime import build_runtime
    from bot.web.app import create_app

    setup_logging()
    settings = load_settings()
    t = settings.twilio
    latency = float(os.environ.get("BENCH_TWILIO_LATENCY", "0.05"))
    messenger = TwilioMessenger.from_credentials(
        t.account_sid, t.auth_token, http_client=FakeTwilioHttpClient(latency=latency),
        from_number=t.from_number)
    return create_app(build_runtime(settings, messenger=messenger,
                                    dispatch_mode="background"))


def bare() -> Flask:
    app = Flask(__name__)
    twiml = '<?xml version="1.0" encoding="UTF-8"?><Response />'

    @app.post("/webhooks/twilio/message")
    def message():
        return Response(twiml, mimetype="application/xml")

    return app
