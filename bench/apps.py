"""WSGI apps for bench/webhook.py, each built by gunicorn in its workers.

`checkin()`: the real bot (settings from the environment the benchmark sets), with the real
twilio SDK whose HTTP client is the fake from bot.messaging (a fixed latency stands in for
Twilio's API), so replies are sent exactly as in production minus the network.
`floor()`: the least any bot that keeps the issue's promises must do per message, and nothing
else: check the signature, store the message and a reply's outbox row in one transaction
(insert-if-absent on MessageSid), send the reply through the same SDK and fake after commit, and
record its SID in a second transaction. No patient, no conversation, no red flags. Its tables
(bench_floor_in, bench_floor_out) are made by bench/webhook.py.
`bare()`: a Flask endpoint that answers empty TwiML and does nothing else: the ceiling of
Flask + gunicorn on this machine.
"""

from __future__ import annotations

import gc
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
    runtime = build_runtime(settings, messenger=messenger, dispatch_mode="background")
    app = create_app(runtime)
    runtime.warm_up()  # as bot.wsgi.make_app does
    return app


def floor_tables():
    from sqlalchemy import Column, Integer, MetaData, String, Table

    meta = MetaData()
    inbox = Table("bench_floor_in", meta, Column("id", Integer, primary_key=True),
                  Column("sid", String(64), unique=True, nullable=False),
                  Column("sender", String(32)), Column("body", String(1600)))
    outbox = Table("bench_floor_out", meta, Column("id", Integer, primary_key=True),
                   Column("to", String(32)), Column("body", String(1600)),
                   Column("status", String(16)), Column("sid", String(64)))
    return meta, inbox, outbox


def floor() -> Flask:
    from concurrent.futures import ThreadPoolExecutor

    from flask import abort, request
    from sqlalchemy import insert, update
    from sqlalchemy.dialects.postgresql import insert as pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert
    from twilio.request_validator import RequestValidator
    from twilio.rest import Client

    from bot.messaging.fake_twilio_http import FakeTwilioHttpClient
    from bot.store.db import make_engine

    # Room for the request and every send thread at once: no connection opened and closed
    # per send (the bot's sends share one writer, see dispatcher.GroupCommit).
    engine = make_engine(os.environ["CHECKIN_DATABASE_URL"], pool_size=10)
    _, inbox, outbox = floor_tables()
    dialect_insert = pg_insert if engine.dialect.name == "postgresql" else sqlite_insert
    store_in = (dialect_insert(inbox).on_conflict_do_nothing(index_elements=["sid"])
                .returning(inbox.c.id))
    store_out = insert(outbox).returning(outbox.c.id)
    mark_sent = update(outbox)
    validator = RequestValidator(os.environ["TWILIO_AUTH_TOKEN"])
    public = os.environ["CHECKIN_PUBLIC_URL"]
    latency = float(os.environ.get("BENCH_TWILIO_LATENCY", "0.05"))
    client = Client(os.environ["TWILIO_ACCOUNT_SID"], os.environ["TWILIO_AUTH_TOKEN"],
                    http_client=FakeTwilioHttpClient(latency=latency))
    sender = os.environ["TWILIO_FROM"]
    pool = ThreadPoolExecutor(8)
    app = Flask(__name__)
    # The same start as the bot's (Runtime.warm_up): the SDK loaded, a connection open, and the
    # long-lived objects frozen out of the garbage collector's full passes.
    _ = client.messages
    with engine.connect():
        pass
    gc.collect()
    gc.freeze()
    twiml = '<?xml version="1.0" encoding="UTF-8"?><Response />'

    def send(row_id: int, to: str, body: str) -> None:
        sent = client.messages.create(to=to, from_=sender, body=body,
                                      status_callback=public + "/webhooks/twilio/status")
        with engine.begin() as c:
            c.execute(mark_sent.where(outbox.c.id == row_id).values(status="sent",
                                                                    sid=sent.sid))

    @app.post("/webhooks/twilio/message")
    def message():
        form = request.form
        if not validator.validate(public + request.path, form,
                                  request.headers.get("X-Twilio-Signature", "")):
            abort(403)
        to, body = form["From"], "Thank you, your answer is recorded."
        with engine.begin() as c:
            stored = c.execute(store_in, {"sid": form["MessageSid"], "sender": to,
                                          "body": form.get("Body", "")}).scalar()
            row_id = stored and c.execute(store_out, {"to": to, "body": body,
                                                      "status": "sending"}).scalar()
        if row_id:
            pool.submit(send, row_id, to, body)
        return Response(twiml, mimetype="application/xml")

    return app


def bare() -> Flask:
    app = Flask(__name__)
    twiml = '<?xml version="1.0" encoding="UTF-8"?><Response />'

    @app.post("/webhooks/twilio/message")
    def message():
        return Response(twiml, mimetype="application/xml")

    return app
