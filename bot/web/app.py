"""Flask application factory. Nothing is built at import time."""

from __future__ import annotations

import logging

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from bot.runtime import Runtime
from bot.services import health
from bot.store.db import ping

log = logging.getLogger(__name__)
JSON_PREFIXES = ("/api/", "/simulator/api/")


def create_app(runtime: Runtime) -> Flask:
    """Build the web app around an already wired runtime (see bot.runtime.build_runtime).
    Raises ConfigError when the dashboard's staff accounts would have no secret to sign their
    sessions with (bot.web.dashboard.check_signing_key)."""
    app = Flask(__name__)
    app.extensions["checkin"] = runtime
    app.json.sort_keys = False  # keep "status" first, as written
    from bot.web.api import MAX_CONTENT_LENGTH, json_error

    app.config["MAX_CONTENT_LENGTH"] = MAX_CONTENT_LENGTH  # larger: 413

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        """JSON for the JSON endpoints (routing's 404 and 405 too, which no blueprint sees);
        Flask's own page elsewhere."""
        if (request.path + "/").startswith(JSON_PREFIXES):
            return json_error(exc)
        if request.path.startswith("/dashboard/"):
            from bot.web.dashboard import error_page

            return error_page(exc)
        return exc

    if runtime.settings.proxy_fix:
        n = runtime.settings.proxy_fix
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n, x_port=n)

    from bot.web.api import bp as api_bp
    from bot.web.dashboard import bp as dashboard_bp
    from bot.web.dashboard import check_signing_key

    check_signing_key(runtime)  # ConfigError: staff accounts, Twilio, nothing to sign with
    from bot.web.webhooks import bp as webhooks_bp

    app.register_blueprint(webhooks_bp)
    app.register_blueprint(api_bp)
    app.register_blueprint(dashboard_bp)
    if runtime.settings.messenger_name == "dev":
        from bot.web.simulator import bp as simulator_bp

        app.register_blueprint(simulator_bp)
        if runtime.settings.admin_token:
            log.info("phone simulator at /simulator: its page asks for CHECKIN_ADMIN_TOKEN")

    runtime.replay_spool_soon()  # anything a previous run kept on disk

    @app.get("/healthz")
    def healthz():
        """200 while the web app and its database work (load balancers: keep sending webhooks).

        The body says whether the rest of the bot is moving too (the scheduler's last tick, the
        outbox); `?strict=1` turns "degraded" into a 503, for a monitor that pages someone.
        """
        spooled = len(runtime.spool.pending_inbound()) if runtime.spool else 0
        if not ping(runtime.engine):
            return jsonify(status="down", problems=["database: unavailable"],
                           spooled_inbound=spooled), 503
        if not runtime.database_ready():  # started while it was down; checks not passed yet
            return jsonify(status="down", problems=[runtime.database_problem],
                           spooled_inbound=spooled), 503
        with runtime.transaction() as session:
            body = health.report(session, runtime.settings, runtime.clock.now(), spooled,
                                 runtime.spool.set_aside_count() if runtime.spool else 0)
        body["messenger"] = runtime.messenger.name
        strict = request.args.get("strict", "") not in ("", "0", "false")
        return jsonify(body), 503 if strict and body["status"] != "ok" else 200

    return app
