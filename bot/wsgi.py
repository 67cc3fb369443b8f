"""WSGI entry for gunicorn: `gunicorn 'bot.wsgi:make_app()'`. Run the scheduler separately."""

from flask import Flask

from bot.config import load_settings
from bot.logs import setup_logging
from bot.runtime import build_runtime
from bot.web.app import create_app


def make_app() -> Flask:
    """Built once per gunicorn worker, after the fork."""
    setup_logging()
    # A database that is down must not stop the worker: patients' messages go to the spool.
    runtime = build_runtime(load_settings(), dispatch_mode="background",
                            database_may_be_down=True)
    app = create_app(runtime)
    runtime.warm_up()
    return app
