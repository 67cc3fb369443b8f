"""Review of time and the scheduler: a schedule saved while its run is in progress."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import select, text

from bot.services.dispatcher import Pacer
from bot.services.patients import Enrolment, enrol_patient
from bot.services.schedules import run_due_schedules, save_schedule
from bot.store.models import Patient, Schedule

PHONE = "+447700900600"


@pytest.fixture(autouse=True)
def _fast_pacer(rt):
    rt.dispatcher.pacer = Pacer(1000)


def _patient(rt, now, phone=PHONE, zone="Europe/London"):
    with rt.transaction() as s:
        p = enrol_patient(s, Enrolment(phone, "Ana", zone), languages=["en", "es"],
                          now=now, actor="t")
        p.consent_at = now
        return p.id


def _wait_until_blocked(rt, timeout=20.0):
    """Until some other connection waits on a row lock (PostgreSQL)."""
    deadline = time.monotonic() + timeout
    with rt.engine.connect() as conn:
        while time.monotonic() < deadline:
            waiting = conn.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND pid <> pg_backend_pid() AND datname = current_database()")).scalar()
            conn.rollback()
            if waiting:
                return
            time.sleep(0.05)
    raise AssertionError("the coordinator's save never waited for the scheduler")


class TestASaveWhileTheScheduleRuns:
    @pytest.fixture
    def settings_overrides(self):
        return {"database_limits": {"lock_timeout_seconds": 30, "statement_timeout_seconds": 30}}

    def test_moving_the_checkin_as_it_runs_does_not_bring_a_second_one_that_day(self, rt, clock):
        """The scheduler is sending Monday's 10:00 check-in (its transaction not yet
        committed: a fan-out of many patients takes a while) when a coordinator moves it to
        14:00. The save must see the run: next Monday at 14:00, not a second check-in at
        14:00 today."""
        if rt.engine.dialect.name != "postgresql":
            pytest.skip("row locks: PostgreSQL only (SQLite takes one writer at a time)")
        clock.set(datetime(2026, 5, 25, 8, 0, tzinfo=UTC))  # Monday 09:00 London (BST)
        pid = _patient(rt, clock.now())
        with rt.transaction() as s:
            save_schedule(s, rt.ctx, s.get(Patient, pid), "checkin", "10:00", 7, clock.now(), "t")
        clock.set(datetime(2026, 5, 25, 9, 0, 1, tzinfo=UTC))  # 10:00:01 London
        scheduler = rt.sessions()
        scheduler.begin()
        assert run_due_schedules(scheduler, rt.ctx, clock.now())  # the check-in is written
        errors: list[BaseException] = []

        def coordinator():
            try:
                with rt.transaction() as s:
                    save_schedule(s, rt.ctx, s.get(Patient, pid), "checkin", "14:00", 7,
                                  clock.now(), "api:coordinator")
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        worker = threading.Thread(target=coordinator)
        worker.start()
        try:
            _wait_until_blocked(rt)
        finally:
            scheduler.commit()
            scheduler.close()
            worker.join(30)
        assert errors == []
        with rt.transaction() as s:
            sched = s.scalars(select(Schedule).where(Schedule.active.is_(True))).one()
            assert sched.local_time == "14:00"
            assert sched.next_due_at == datetime(2026, 6, 1, 13, 0, tzinfo=UTC)

