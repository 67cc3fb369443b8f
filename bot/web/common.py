"""Helpers shared by the blueprints."""

from __future__ import annotations

import logging

from flask import current_app

from bot.runtime import Runtime

log = logging.getLogger(__name__)


def runtime() -> Runtime:
    return current_app.extensions["checkin"]


def receive_message(rt: Runtime, msg) -> object:
    """Handle one inbound message; if that fails, still store it and act on red flags.

    Returns the InboundOutcome. Raises only if even the fallback could not store the message,
    so that the carrier retries it later.
    """
    from bot.services.inbound import handle_inbound_message, record_after_failure

    try:
        with rt.transaction() as session:
            outcome = handle_inbound_message(session, rt.ctx, msg, rt.clock.now())
            jobs = rt.claim_for_sending(session, outcome.outbox_ids)
    except Exception:
        log.exception("handling inbound message failed; storing it unprocessed")
        with rt.transaction() as session:
            outcome = record_after_failure(session, rt.ctx, msg, rt.clock.now())
        rt.dispatch_soon(outcome.outbox_ids)
        return outcome
    rt.send_claimed(jobs)
    return outcome
