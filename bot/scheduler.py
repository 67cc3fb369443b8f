"""Time-driven work: conversation wait timeouts, escalation re-alerts, schedules, the outbox.

`checkin-bot scheduler` runs this in its own process for production. `checkin-bot serve` runs it
in-process, once. Every job claims its rows with row locks (FOR UPDATE SKIP LOCKED on
PostgreSQL; SQLite takes the database write lock up front), so two scheduler processes never do
the same due item twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.blocking import BlockingScheduler

from bot.runtime import Runtime
from bot.services import conversations, escalations, health, schedules, status

log = logging.getLogger(__name__)


@dataclass
class TickReport:
    timeouts: int = 0
    realerts: int = 0
    scheduled: int = 0
    sent: int = 0


def tick(rt: Runtime) -> TickReport:
    """Process every due timer once, each kind in its own transaction, then send what's queued."""
    report = TickReport()
    rt.replay_spool()  # inbound messages kept on disk while the database was down
    now = rt.clock.now()
    with rt.transaction() as s:
        report.timeouts = len(conversations.process_due_timeouts(s, rt.ctx, now))
    with rt.transaction() as s:
        report.realerts = len(escalations.realert_due(s, rt.ctx, now))
    with rt.transaction() as s:
        report.scheduled = len(schedules.run_due_schedules(s, rt.ctx, now))
    with rt.transaction() as s:  # callbacks that beat the record of their SID
        status.apply_waiting_statuses(s, rt.ctx, now)
    report.sent = rt.dispatcher.dispatch_due()
    with rt.transaction() as s:  # for /healthz: the scheduler is alive and got through a tick
        health.beat(s, health.SCHEDULER, rt.clock.now())
    return report


def _safe(fn, rt: Runtime):
    def job():
        try:
            fn(rt)
        except Exception:
            log.exception("scheduler job %s failed; it runs again next interval", fn.__name__)
    job.__name__ = fn.__name__
    return job


def _dispatch(rt: Runtime) -> None:
    rt.dispatcher.dispatch_due()


def build_scheduler(rt: Runtime, blocking: bool) -> BackgroundScheduler | BlockingScheduler:
    cls = BlockingScheduler if blocking else BackgroundScheduler
    sched = cls(timezone="UTC", job_defaults={"coalesce": True, "max_instances": 1,
                                              "misfire_grace_time": 30})
    sched.add_job(_safe(tick, rt), "interval", seconds=rt.settings.scheduler.tick_seconds,
                  id="tick")
    sched.add_job(_safe(_dispatch, rt), "interval",
                  seconds=rt.settings.scheduler.dispatch_poll_seconds, id="dispatch")
    return sched
