"""Helpers shared by the blueprints."""

from __future__ import annotations

import logging

from flask import current_app

from bot.runtime import Runtime

log = logging.getLogger(__name__)


def runtime() -> Runtime:
    return current_app.extensions["checkin"]


def receive_message(rt: Runtime, msg) -> object:
    """Take in one inbound message so that it is never lost (see bot.services.receiving).

    Returns the InboundOutcome. Raises only if neither the database nor the local spool could
    keep the message, so that the carrier retries it later.
    """
    from bot.services.receiving import spool_inbound, store_and_handle

    try:
        rt.replay_spooled_from(msg.sender)  # the sender's older messages first, if any wait
        outcome = store_and_handle(rt, msg)
    except Exception:
        log.exception("the database could not store an inbound message")
        return spool_inbound(rt, msg)
    rt.replay_spool_soon()  # the database works: anything spooled earlier can go in now
    return outcome
