"""Flask application factory. Nothing is built at import time."""

from __future__ import annotations

from flask import Flask, jsonify
from werkzeug.middleware.proxy_fix import ProxyFix

from bot.runtime import Runtime
from bot.store.db import ping


def create_app(runtime: Runtime) -> Flask:
    """Build the web app around an already wired runtime (see bot.runtime.build_runtime)."""
    app = Flask(__name__)
    app.extensions["checkin"] = runtime
    app.config["JSON_SORT_KEYS"] = False
    if runtime.settings.proxy_fix:
        n = runtime.settings.proxy_fix
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n, x_port=n)

    from bot.web.api import bp as api_bp
    from bot.web.webhooks import bp as webhooks_bp

    app.register_blueprint(webhooks_bp)
    app.register_blueprint(api_bp)
    if runtime.settings.messenger_name == "dev":
        from bot.web.simulator import bp as simulator_bp

        app.register_blueprint(simulator_bp)

    @app.get("/healthz")
    def healthz():
        if ping(runtime.engine):
            return jsonify(status="ok", messenger=runtime.messenger.name)
        return jsonify(status="database unavailable"), 503

    return app
