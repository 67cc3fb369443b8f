"""Review of time and the scheduler: a schedule saved while its run is in progress, and
routine messages that quiet hours would push to another day."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import select, text

from bot.scheduler import tick
from bot.services.dispatcher import Pacer
from bot.services.patients import Enrolment, enrol_patient
from bot.services.schedules import run_due_schedules, save_schedule
from bot.store.models import AuditLog, Conversation, Patient, Schedule

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


class _CarrierTimesOutOnce:
    """The dev carrier, but its first answer is lost (a read timeout: Twilio may have taken
    the message), as a slow Twilio API does."""

    name = "dev"

    def __init__(self, inner):
        self.inner, self.sent, self.timed_out = inner, inner.sent, False

    def send(self, message):
        from bot.messaging.base import SendError

        if not self.timed_out:
            self.timed_out = True
            raise SendError("transient", "read timeout", unclear=True)
        return self.inner.send(message)

    def call(self, *args, **kwargs):
        return self.inner.call(*args, **kwargs)


class TestAReminderHeldByQuietHours:
    @pytest.fixture
    def settings_overrides(self):
        return {"public_url": "https://bot.example.org"}  # an unclear send waits 10 minutes

    @pytest.fixture
    def messenger(self):
        from bot.messaging.dev import DevMessenger

        return _CarrierTimesOutOnce(DevMessenger(echo=False))

    def test_an_evening_reminder_that_could_not_go_before_quiet_hours_is_not_sent_next_morning(
            self, rt, clock, messenger):
        """The 20:50 reminder's send timed out; by the time it may go again it is 21:00 and
        quiet. Held until 08:00, "take your EVENING tablets" would arrive next morning, by
        the morning dose: as the scheduler's own rule for a late reminder, it is not sent. A
        reminder set inside quiet hours (accepted with a warning) still waits for their end."""
        clock.set(datetime(2026, 6, 1, 19, 0, tzinfo=UTC))  # Monday 20:00 London (BST)
        evening = _patient(rt, clock.now())
        night = _patient(rt, clock.now(), "+447700900601")
        with rt.transaction() as s:
            save_schedule(s, rt.ctx, s.get(Patient, evening), "reminder", "20:50", 1,
                          clock.now(), "t", {"reminder_text": "Take your EVENING tablets."})
            save_schedule(s, rt.ctx, s.get(Patient, night), "reminder", "22:30", 1,
                          clock.now(), "t", {"reminder_text": "Take your night tablets."})
        for at in (datetime(2026, 6, 1, 19, 50, tzinfo=UTC),  # written; the send times out
                   datetime(2026, 6, 1, 20, 0, 5, tzinfo=UTC),  # 21:00:05: quiet
                   datetime(2026, 6, 1, 21, 30, tzinfo=UTC),  # 22:30: the night one, held
                   datetime(2026, 6, 2, 7, 0, tzinfo=UTC),  # Tuesday 08:00
                   datetime(2026, 6, 2, 7, 30, tzinfo=UTC)):
            clock.set(at)
            tick(rt)
        assert [m.body for m in messenger.sent] == [
            "Reminder from Spine Oncology Clinic: Take your night tablets. Reply 1 if done, or "
            "2 if you can't make it."]
        with rt.transaction() as s:
            [cancelled] = s.scalars(select(AuditLog).where(
                AuditLog.action == "outbox.cancelled")).all()
            assert "too late" in cancelled.details["reason"]
            conv = s.scalars(select(Conversation).where(Conversation.patient_id == evening)).one()
            assert conv.status == "expired"  # a text tomorrow is not taken as its answer
        clock.set(datetime(2026, 6, 2, 19, 50, tzinfo=UTC))  # Tuesday's goes as usual
        tick(rt)
        assert len([m for m in messenger.sent if "EVENING" in (m.body or "")]) == 1


def test_a_reminder_that_could_not_go_for_hours_is_not_sent_late(rt, clock, messenger):
    """The 12:00 reminder was written, then nothing could be sent until 14:30 (the carrier or
    the bot down). It is not sent two and a half hours late, as the scheduler would not start
    it so late either; its conversation is closed. One that can go within the grace still goes."""
    from bot.services.conversations import start_flow

    clock.set(datetime(2026, 3, 2, 12, 0, tzinfo=UTC))  # London = UTC
    late, in_time = _patient(rt, clock.now()), _patient(rt, clock.now(), "+447700900601")
    with rt.transaction() as s:
        for pid, text in ((late, "Take your LUNCH tablets."), (in_time, "Drink some water.")):
            start_flow(s, rt.ctx, s.get(Patient, pid), "reminder", clock.now(), routine=True,
                       params={"reminder_text": text})
    clock.set(datetime(2026, 3, 2, 14, 30, tzinfo=UTC))
    with rt.transaction() as s:  # the second one was started later, on time for now
        conv = s.scalars(select(Conversation).where(Conversation.patient_id == in_time)).one()
        conv.started_at = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)
    rt.dispatcher.dispatch_due()
    assert [m.body for m in messenger.sent] == [
        "Reminder from Spine Oncology Clinic: Drink some water. Reply 1 if done, or 2 if you "
        "can't make it."]
    with rt.transaction() as s:
        conv = s.scalars(select(Conversation).where(Conversation.patient_id == late)).one()
        assert conv.status == "expired"
        [cancelled] = s.scalars(select(AuditLog).where(
            AuditLog.action == "outbox.cancelled")).all()
        assert "too late" in cancelled.details["reason"]
