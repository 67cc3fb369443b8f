"""Logging: one line per event, key=value. Never message bodies or phone numbers at INFO."""

from __future__ import annotations

import logging
import sys


def setup_logging(level: int = logging.INFO) -> None:
    root = logging.getLogger()
    if any(getattr(h, "_checkin", False) for h in root.handlers):
        root.setLevel(level)
        return
    handler = logging.StreamHandler(sys.stderr)
    handler._checkin = True  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter(
        "%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("apscheduler", "twilio.http_client", "werkzeug", "alembic"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
