"""Time-driven work: conversation wait timeouts, escalation re-alerts, schedules, the outbox.

`checkin-bot scheduler` runs this in its own process for production. `checkin-bot serve` runs it
in-process, once. Either stops gracefully on SIGTERM (how systemd, Docker and Procfile runners
stop a process) or SIGINT (Ctrl-C): no new job starts, the running ones (a tick) finish.

Every job claims its rows with row locks (FOR UPDATE SKIP LOCKED on PostgreSQL; SQLite takes
the database write lock up front), so two scheduler processes never do the same due item twice.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

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
    failed: list[str] = field(default_factory=list)  # steps that raised this tick


def tick(rt: Runtime) -> TickReport:
    """Process every due timer once, each kind in its own transaction, then send what's queued.

    Each step runs even if another failed (a broken flow must not stop the re-alerts of an
    unacknowledged emergency); re-alerts go first. A failed step is logged and named in the
    heartbeat, so /healthz shows it. The sending is one pass of the dispatcher, which sends
    routine messages only as far as the pacer allows within about one dispatch interval, and
    claims nothing more after tick_seconds (see Dispatcher.dispatch_due): neither a large
    fan-out nor a slow carrier holds up the tick; the "dispatch" job sends the rest.
    """
    report = TickReport()
    now = rt.clock.now()

    def step(name: str, fn) -> None:
        try:
            fn()
        except Exception:
            log.exception("scheduler step %s failed; it runs again next tick", name)
            report.failed.append(name)

    def realerts():
        failures: list[str] = []
        with rt.transaction() as s:
            report.realerts = len(escalations.realert_due(s, rt.ctx, now, failures=failures))
        if failures:  # the others went out; this names the step on /healthz
            raise RuntimeError(f"re-alert failed for {len(failures)} escalation(s)")

    def timeouts():
        with rt.transaction() as s:
            report.timeouts = len(conversations.process_due_timeouts(s, rt.ctx, now))

    def scheduled():
        with rt.transaction() as s:
            report.scheduled = len(schedules.run_due_schedules(s, rt.ctx, now))
            gave_up = list(s.info.get(schedules.FAILED_INFO_KEY, []))
        if gave_up:  # the others ran; this names the step on /healthz
            raise RuntimeError(f"{len(gave_up)} schedule(s) gave up after passing database "
                               "errors")

    def waiting_statuses():  # callbacks that beat the record of their SID
        with rt.transaction() as s:
            status.apply_waiting_statuses(s, rt.ctx, now)

    def dispatch():  # bounded: the "dispatch" job, every dispatch_poll_seconds, sends the rest
        report.sent = rt.dispatcher.dispatch_due(max_seconds=rt.settings.scheduler.tick_seconds)

    step("realerts", realerts)
    step("spool", rt.replay_spool)  # inbound messages kept on disk while the database was down
    step("timeouts", timeouts)
    step("schedules", scheduled)
    step("statuses", waiting_statuses)
    step("dispatch", dispatch)
    with rt.transaction() as s:  # for /healthz: the scheduler is alive, and how its tick went
        problem = f"failed: {', '.join(report.failed)}" if report.failed else None
        health.beat(s, health.SCHEDULER, rt.clock.now(), problem=problem)
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


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def stop_gracefully(sched: BackgroundScheduler, why: str) -> None:
    """No new job starts; wait for the running ones (a tick, a dispatch pass) to finish."""
    log.info("scheduler stopping (%s): no new jobs start; waiting for the running tick to "
             "finish", why)
    sched.shutdown(wait=True)
    log.info("scheduler stopped (%s)", why)


def run_until_signalled(rt: Runtime, started: Callable[[], None] = lambda: None) -> str:
    """Run the scheduler until SIGTERM or SIGINT, then stop it gracefully; returns the
    signal's name. Call from the main thread (Python runs signal handlers there).

    Without this a SIGTERM ended the process at once, possibly halfway through a tick. A
    second signal while the tick finishes changes nothing (SIGKILL still stops it at once):
    the tick is bounded (its sending stops taking rows after tick_seconds)."""
    stop = threading.Event()
    received: list[str] = []

    def on_signal(signum, _frame) -> None:
        received.append(signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in STOP_SIGNALS}
    sched = build_scheduler(rt, blocking=False)
    try:
        sched.start()
        started()
        while not stop.wait(1):  # woken by the handler; the timeout only bounds the wait
            pass
        stop_gracefully(sched, received[0])
        return received[0]
    finally:
        if sched.running:  # something above raised: still let the running tick finish
            sched.shutdown(wait=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
