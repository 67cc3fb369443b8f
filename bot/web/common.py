"""Helpers shared by the blueprints."""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta

from flask import current_app

from bot.runtime import Runtime

log = logging.getLogger(__name__)


def runtime() -> Runtime:
    return current_app.extensions["checkin"]


def recent_failures(kind: str, address: str, now: datetime, window: timedelta,
                    add: bool = False) -> int:
    """Failed sign-ins of `kind` (dashboard passwords or tokens, API tokens) from `address`
    within `window`, counting this one if `add` (this web worker's own count)."""
    lock, failures = current_app.extensions.setdefault(
        f"{kind}_failures", (threading.Lock(), {}))
    with lock:
        times = [t for t in failures.get(address, []) if now - t < window]
        if add:
            times.append(now)
        if times:
            failures[address] = times
        else:
            failures.pop(address, None)
        return len(times)


def receive_message(rt: Runtime, msg) -> object:
    """Take in one inbound message so that it is never lost (see bot.services.receiving).

    Returns the InboundOutcome; if neither the database nor the local spool could keep the
    message, one with `lost` set whose replies ask the patient to send it again (Twilio does
    not retry a webhook that answered 5xx).
    """
    from bot.services.receiving import spool_inbound, store_and_handle

    if not rt.database_ready():  # this worker started while the database was down
        return spool_inbound(rt, msg)
    try:
        rt.replay_spooled_from(msg.sender)  # the sender's older messages first, if any wait
        outcome = store_and_handle(rt, msg)
    except Exception:
        log.exception("the database could not store an inbound message")
        return spool_inbound(rt, msg)
    rt.replay_spool_soon()  # the database works: anything spooled earlier can go in now
    return outcome
