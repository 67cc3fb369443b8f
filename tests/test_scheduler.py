"""The scheduler: due timers processed once, even with two scheduler processes on one database."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
from sqlalchemy import select

from bot.clock import FakeClock
from bot.messaging.dev import DevMessenger
from bot.runtime import build_runtime
from bot.scheduler import tick
from bot.services.conversations import start_flow
from bot.services.dispatcher import Pacer
from bot.services.escalations import escalate
from bot.services.patients import Enrolment, enrol_patient
from bot.services.schedules import add_schedule
from bot.store.models import Conversation, Message, Patient


class _PacerTime:
    """The dispatcher pacer's clock and sleep, by hand: sleeping moves the clock. What a pass
    does within its time budget is then the same on a loaded machine as on a quiet one."""

    def __init__(self) -> None:
        self.start = self.now = 100.0

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def pacer(self, rate: float) -> Pacer:
        return Pacer(rate, sleep=self.sleep, monotonic=lambda: self.now)


def _patients(rt, n, now):
    ids = []
    with rt.transaction() as s:
        for i in range(n):
            p = enrol_patient(s, Enrolment(f"+4477009{i + 500:05d}", f"P{i}", "Europe/London"),
                              languages=["en", "es"], now=now, actor="test")
            p.consent_at = now
            ids.append(p.id)
    return ids


def test_a_checkin_schedule_runs_once_per_week_in_the_patients_zone(rt, clock, messenger):
    rt.dispatcher.pacer = Pacer(1000)  # a tick sends only the routine messages due in a pass
    clock.set(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))  # Monday 09:00 London
    [pid] = _patients(rt, 1, clock.now())
    with rt.transaction() as s:
        sched = add_schedule(s, rt.ctx, s.get(Patient, pid), "checkin", "10:00", 7,
                             clock.now(), "test")
        assert sched.next_due_at == datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    tick(rt)
    assert messenger.sent == []
    clock.set(datetime(2026, 3, 2, 10, 0, tzinfo=UTC))
    tick(rt)
    tick(rt)
    first = len(messenger.sent)
    assert first >= 2  # intro and first question, once
    with rt.transaction() as s:
        assert len(s.scalars(select(Conversation)).all()) == 1


def test_schedule_skips_a_patient_with_an_open_checkin(rt, clock, messenger):
    [pid] = _patients(rt, 1, clock.now())
    with rt.transaction() as s:
        add_schedule(s, rt.ctx, s.get(Patient, pid), "checkin", "10:00", 1, clock.now(), "t")
    clock.advance(days=1)
    tick(rt)
    sent = len(messenger.sent)
    clock.advance(days=1)  # the first check-in is still waiting for its (24 h) reminder path
    tick(rt)
    with rt.transaction() as s:
        assert len(s.scalars(select(Conversation)).all()) == 1
    assert len(messenger.sent) >= sent


@pytest.mark.parametrize("reload", [False, True])
def test_serve_runs_the_scheduler_exactly_once_also_under_the_reloader(tmp_path, reload):
    port = _free_port()
    env = {**os.environ, "CHECKIN_DATABASE_URL": f"sqlite:///{tmp_path / 'serve.db'}",
           "PYTHONUNBUFFERED": "1"}
    for var in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "CHECKIN_CONFIG"):
        env.pop(var, None)
    bin_dir = Path(sys.executable).parent
    subprocess.run([bin_dir / "checkin-bot", "db", "upgrade"], env=env, check=True,
                   capture_output=True)
    args = [bin_dir / "checkin-bot", "serve", "--port", str(port)] + (["--reload"] * reload)
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        # A liveness bound, not a speed check: the reloader imports the app twice, which on a
        # loaded 2-core machine has taken longer than 30 s.
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).ok:
                    break
            except requests.RequestException:
                time.sleep(0.2)
        else:
            pytest.fail("serve did not answer /healthz")
        time.sleep(1.5)  # time for a second (wrong) scheduler start to show up
    finally:
        proc.terminate()
        output = proc.communicate(timeout=20)[0]
    assert output.count("scheduler started in process") == 1, output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.usefixtures("pg_engine")
def test_two_scheduler_instances_on_postgresql_process_every_due_item_once(settings):
    if not settings.database_url.startswith("postgres"):
        pytest.skip("row locks are what is tested: PostgreSQL only")
    start = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    clock = FakeClock(start)
    runtimes = [build_runtime(settings, clock=clock, messenger=DevMessenger(echo=False),
                              dispatch_mode="none") for _ in range(2)]
    for r in runtimes:  # each tick sends all the routine reminders it finds due
        r.dispatcher.pacer = Pacer(1000)
    setup = runtimes[0]
    ids = _patients(setup, 60, start)
    with setup.transaction() as s:
        for pid in ids[:40]:  # 40 check-ins waiting on their first question
            start_flow(s, setup.ctx, s.get(Patient, pid), "checkin", start)
        for pid in ids[40:]:  # 20 open emergencies, nobody acknowledging
            escalate(s, setup.ctx, s.get(Patient, pid), "emergency", ["limb_weakness"],
                     "legs weak", start)
    setup.dispatcher.dispatch_due(limit=1000)
    for r in runtimes:
        r.messenger.sent.clear()
    clock.advance(hours=25)  # every wait and every alert timer is due

    barrier = threading.Barrier(2)
    errors = []

    def run(r):
        try:
            barrier.wait()
            for _ in range(3):
                tick(r)
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(r,)) for r in runtimes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    sent = [m for r in runtimes for m in r.messenger.sent]
    with setup.transaction() as s:
        reminders = s.scalars(select(Message.address).where(
            Message.direction == "out", Message.kind == "checkin",
            Message.created_at > start)).all()
        convs = s.scalars(select(Conversation)).all()
    per_patient = Counter(reminders)
    assert len(per_patient) == 40 and set(per_patient.values()) == {1}
    assert all(c.current_node == "pain_reminder" for c in convs)
    oncall, second = (settings.care_team.contact(c).phone
                      for c in settings.care_team.escalation_chain[:2])
    assert Counter(m.to for m in sent)[second] == 20  # each escalation moved on exactly once
    assert len(sent) == 40 + 20
    for r in runtimes:
        r.close()


def test_consenting_schedules_the_weekly_checkin_in_the_patients_zone(client, rt, clock):
    from bot.store.models import Schedule

    clock.set(datetime(2026, 3, 2, 15, 0, tzinfo=UTC))  # Monday 15:00 UTC = 10:00 in New York
    client.post("/simulator/api/patients", json={"phone": "+1 415 555 2671", "name": "Ada",
                                                 "timezone": "America/New_York"})
    client.post("/simulator/api/messages", json={"phone": "+14155552671", "body": "yes"})
    with rt.transaction() as s:
        [sched] = s.scalars(select(Schedule)).all()
        assert (sched.flow_id, sched.every_days, sched.local_time) == ("checkin", 7, "10:00")
        assert sched.next_due_at == datetime(2026, 3, 3, 15, 0, tzinfo=UTC)  # tomorrow 10:00


def test_a_failing_step_does_not_stop_the_re_alerts_and_shows_on_healthz(rt, clock, messenger,
                                                                        monkeypatch):
    """A bug in one flow's timeout must not silence the alert chain of an emergency."""
    from bot.services import conversations
    from bot.web.app import create_app

    now = clock.now()
    [pid] = _patients(rt, 1, now)
    with rt.transaction() as s:
        escalate(s, rt.ctx, s.get(Patient, pid), "emergency", ["limb_weakness"], "legs", now)
    tick(rt)
    oncall, second = (rt.settings.care_team.contact(c)
                      for c in rt.settings.care_team.escalation_chain[:2])
    assert len([m for m in messenger.sent if m.to == oncall.phone]) == 1

    def broken(*args, **kwargs):
        raise RuntimeError("a flow bug")

    monkeypatch.setattr(conversations, "process_due_timeouts", broken)
    clock.advance(minutes=rt.settings.care_team.ack_timeout_minutes + 1)
    report = tick(rt)
    assert report.failed == ["timeouts"]
    assert report.realerts == 1 and len([m for m in messenger.sent if m.to == second.phone]) == 1
    body = create_app(rt).test_client().get("/healthz").get_json()
    assert body["status"] == "degraded"
    assert "scheduler: last tick failed: timeouts" in body["problems"]

    monkeypatch.undo()
    assert tick(rt).failed == []
    assert create_app(rt).test_client().get("/healthz").get_json()["problems"] == []


def test_a_large_routine_fan_out_does_not_hold_up_the_tick(rt, clock, messenger):
    """At 1 message/s, 20 check-ins due at once used to keep the tick sending for 20 s: no
    re-alert in the meantime, and /healthz saw the scheduler go stale. Now a tick sends what
    is due within one dispatch pass, and the dispatch job's passes send the rest."""
    from bot.services.outbox import PRIORITY_EMERGENCY, PRIORITY_ROUTINE, Draft, enqueue

    ids = _patients(rt, 20, clock.now())
    with rt.transaction() as s:
        for pid in ids:
            p = s.get(Patient, pid)
            enqueue(s, Draft(to=p.phone, channel="sms", body="Time for your check-in.",
                             kind="checkin", priority=PRIORITY_ROUTINE, routine=True,
                             patient_id=pid), clock.now())
    assert rt.settings.twilio.send_rate_per_second == 1.0
    t = _PacerTime()  # the pacer's clock by hand: the test measures seconds it cannot lose
    rt.dispatcher.pacer = t.pacer(1.0)
    tick(rt)
    assert t.now - t.start <= rt.settings.scheduler.dispatch_poll_seconds + 1
    assert 1 <= len(messenger.sent) <= 2  # a pass sends what is due within it, not all 20
    with rt.transaction() as s:  # an alert falls due in the middle of the fan-out
        enqueue(s, Draft(to="+447700900001", channel="sms", body="ALERT", kind="alert",
                         priority=PRIORITY_EMERGENCY), clock.now())
    before = t.now
    tick(rt)
    assert t.now - before <= rt.settings.scheduler.dispatch_poll_seconds + 1
    assert "+447700900001" in [m.to for m in messenger.sent]
    assert len(messenger.sent) < 21


class TestASlowCarrier:
    @pytest.fixture
    def settings_overrides(self):
        return {"scheduler": {"tick_seconds": 1}}

    def test_does_not_hold_up_the_tick(self, rt, clock, messenger, monkeypatch):
        """Twilio answering slowly (up to its 10 s timeout) with many alerts due: the tick
        stops taking rows after tick_seconds; the dispatch job sends the rest."""
        from bot.services.outbox import PRIORITY_EMERGENCY, Draft, enqueue

        with rt.transaction() as s:
            for i in range(12):
                enqueue(s, Draft(to=f"+4477009{i + 700:05d}", channel="sms", body="ALERT",
                                 kind="alert", priority=PRIORITY_EMERGENCY), clock.now())
        real_send = messenger.send
        t = _PacerTime()
        rt.dispatcher.pacer = t.pacer(1000)

        def slow_send(outgoing):
            t.now += 0.25  # Twilio taking a quarter of a second to answer
            return real_send(outgoing)

        monkeypatch.setattr(messenger, "send", slow_send)
        report = tick(rt)
        # tick_seconds is 1 and each send takes 0.25 s on the pacer's clock: the 4 sends that
        # start within the second, then the tick claims nothing more.
        assert report.sent == 4
        assert t.now - t.start == pytest.approx(1.0)
        assert rt.dispatcher.dispatch_due() == 12 - report.sent  # the dispatch job's pass
