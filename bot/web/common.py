"""Helpers shared by the blueprints."""

from __future__ import annotations

from flask import current_app

from bot.runtime import Runtime


def runtime() -> Runtime:
    return current_app.extensions["checkin"]
