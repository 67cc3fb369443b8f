"""The outbox dispatcher with the real twilio SDK (fake HTTP): sends, retries, never twice."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from bot.messaging.base import SendError, SendResult
from bot.messaging.dev import DevMessenger
from bot.runtime import build_runtime
from bot.services.dispatcher import RECLAIM_GRACE, GroupCommit, Pacer
from bot.services.outbox import PRIORITY_EMERGENCY, PRIORITY_ROUTINE, Draft, enqueue
from bot.services.patients import Enrolment, enrol_patient
from bot.store.models import AuditLog, Escalation, Message, OutboxItem, Patient, StatusEvent
from tests.twilio_support import (  # noqa: F401 - fixtures
    FROM_NUMBER,
    PUBLIC_URL,
    TWILIO_SETTINGS,
    fake_http,
    messenger,
    sent_to,
    settings_overrides,
)

PHONE = "+447700900123"
GRACE = RECLAIM_GRACE.total_seconds()


def _patient(rt, channel="sms", **kw):
    with rt.transaction() as s:
        p = enrol_patient(s, Enrolment(PHONE, "Ada Lovelace", "Europe/London", channel),
                          languages=["en", "es"], now=rt.clock.now(), actor="test")
        for k, v in kw.items():
            setattr(p, k, v)
        return p.id


def _queue(rt, pid, body="Time for your check-in.", channel="sms", routine=False, kind="reply"):
    with rt.transaction() as s:
        return enqueue(s, Draft(to=PHONE, channel=channel, body=body, kind=kind,
                                routine=routine, patient_id=pid,
                                priority=PRIORITY_ROUTINE if routine else 1), rt.clock.now()).id


def _item(rt, item_id):
    with rt.transaction() as s:
        item = s.get(OutboxItem, item_id)
        return item, s.get(Message, item.message_id)


def _inbound(rt, channel, at, address=PHONE, pid=None):
    """A message the number sent us on this channel at this time (as inbound.py stores it)."""
    with rt.transaction() as s:
        s.add(Message(direction="in", channel=channel, address=address, body="hi",
                      kind="inbound", status="received", patient_id=pid, created_at=at,
                      updated_at=at))
        if pid is not None:
            s.get(Patient, pid).last_inbound_at = at


def test_sends_with_the_right_request_and_records_sid_and_segments(rt, fake_http):
    pid = _patient(rt)
    item_id = _queue(rt, pid, body="Hello \u201cAda\u201d \u2014 time for your check-in\u2026")
    assert rt.dispatcher.dispatch_due() == 1
    [data] = sent_to(fake_http, PHONE)
    assert data["To"] == PHONE
    assert data["From"] == FROM_NUMBER
    # the row named in the URL: a callback tells which row it is about even with no SID known
    assert data["StatusCallback"] == (f"{PUBLIC_URL}/webhooks/twilio/status"
                                      f"?outbox={item_id}&via=sms")
    assert data["Body"] == 'Hello "Ada" - time for your check-in...'  # made plain GSM-7
    item, message = _item(rt, item_id)
    assert item.status == "sent"
    assert message.provider_id.startswith("SM")
    assert message.segments == 1
    assert message.status == "queued"


def test_429_is_retried_after_retry_after(rt, fake_http, clock):
    pid = _patient(rt)
    item_id = _queue(rt, pid)
    fake_http.queue_error(429, 20429, "Too Many Requests", headers={"Retry-After": "30"})
    assert rt.dispatcher.dispatch_due() == 0
    item, message = _item(rt, item_id)
    assert item.status == "pending"
    assert item.next_attempt_at == clock.now() + timedelta(seconds=30)
    clock.advance(seconds=29)
    assert rt.dispatcher.dispatch_due() == 0
    assert len(fake_http.requests) == 1
    clock.advance(seconds=1)
    assert rt.dispatcher.dispatch_due() == 1
    assert len(fake_http.requests) == 2
    item, message = _item(rt, item_id)
    assert item.status == "sent" and item.attempts == 2


def test_a_huge_retry_after_is_honoured_only_up_to_the_longest_backoff(rt, fake_http, clock):
    """A Retry-After of a day (a proxy's, or a mistake) held the message a day: an emergency
    instruction too. It is honoured up to max_backoff_seconds, as the backoff itself is."""
    pid = _patient(rt)
    item_id = _queue(rt, pid)
    fake_http.queue_error(429, 20429, "Too Many Requests", headers={"Retry-After": "86400"})
    assert rt.dispatcher.dispatch_due() == 0
    item, _ = _item(rt, item_id)
    assert item.status == "pending"
    assert item.next_attempt_at == clock.now() + timedelta(
        seconds=rt.settings.outbox.max_backoff_seconds)


def test_transient_failures_stop_after_max_attempts_and_are_recorded(rt, fake_http, clock):
    pid = _patient(rt)
    item_id = _queue(rt, pid)
    for _ in range(rt.settings.outbox.max_attempts):
        fake_http.queue_error(503, 503, "Service Unavailable")
        rt.dispatcher.dispatch_due()
        clock.advance(seconds=rt.settings.outbox.max_backoff_seconds)
    assert rt.dispatcher.dispatch_due() == 0
    item, message = _item(rt, item_id)
    assert item.status == "failed" and message.status == "failed"
    assert len(fake_http.requests) == rt.settings.outbox.max_attempts
    with rt.transaction() as s:
        actions = s.scalars(select(AuditLog.action)).all()
    assert "outbox.failed" in actions


def test_21610_opts_the_patient_out_and_is_not_retried(rt, fake_http, clock):
    pid = _patient(rt)
    item_id = _queue(rt, pid)
    fake_http.queue_error(400, 21610, "Attempt to send to unsubscribed recipient")
    rt.dispatcher.dispatch_due()
    clock.advance(hours=1)
    rt.dispatcher.dispatch_due()
    assert len(fake_http.requests) == 1
    item, _ = _item(rt, item_id)
    assert item.status == "failed"
    with rt.transaction() as s:
        assert s.get(Patient, pid).status == "opted_out"


def test_our_stop_confirmation_refused_with_21610_is_not_a_failure_to_follow_up(
        client, rt, fake_http):
    """With Twilio's opt-out handling, Twilio answers STOP itself and refuses ours."""
    from bot.services.dispatcher import failed_messages
    from tests.test_webhooks import enrol, texted

    pid = enrol(rt)
    fake_http.queue_error(400, 21610, "Attempt to send to unsubscribed recipient")
    texted(client, "STOP")
    with rt.transaction() as s:
        assert s.get(Patient, pid).status == "opted_out"
        assert failed_messages(s) == []
        [item] = s.scalars(select(OutboxItem)).all()
        assert (item.kind, item.status) == ("stopped", "cancelled")


def test_21211_marks_the_number_invalid(rt, fake_http):
    pid = _patient(rt)
    _queue(rt, pid)
    fake_http.queue_error(400, 21211, "The 'To' number is not a valid phone number.")
    rt.dispatcher.dispatch_due()
    with rt.transaction() as s:
        assert s.get(Patient, pid).number_invalid_at is not None


def test_a_crash_between_commit_and_send_sends_exactly_once_after_restart(
        rt, settings, fake_http, messenger, clock):
    pid = _patient(rt)
    item_id = _queue(rt, pid)  # committed; the process "dies" before dispatching
    rt.close()
    restarted = build_runtime(settings, clock=clock, messenger=messenger, dispatch_mode="inline")
    try:
        assert restarted.dispatcher.dispatch_due() == 1
        assert restarted.dispatcher.dispatch_due() == 0
        restarted.dispatcher.dispatch_ids([item_id])
    finally:
        restarted.close()
    assert len(sent_to(fake_http, PHONE)) == 1


def test_a_crash_mid_send_is_retried_once_the_claim_expires(rt, fake_http, clock):
    pid = _patient(rt)
    item_id = _queue(rt, pid)
    assert rt.dispatcher._claim(item_id, paced=False) is not None  # claimed, then "crash"
    assert rt.dispatcher.dispatch_due() == 0  # another dispatcher leaves a live claim alone
    clock.advance(seconds=rt.settings.outbox.claim_seconds + GRACE + 1)
    assert rt.dispatcher.dispatch_due() == 1
    assert len(sent_to(fake_http, PHONE)) == 1


def test_an_expired_claim_is_taken_over_only_after_a_grace_period(rt, fake_http, clock):
    """A web worker sent the row while the database was away longer than the claim: it writes
    its record within a few seconds of the database coming back, before the sweep resends."""
    pid = _patient(rt)
    item_id = _queue(rt, pid)
    assert rt.dispatcher._claim(item_id, paced=False) is not None
    clock.advance(seconds=rt.settings.outbox.claim_seconds + 1)
    assert rt.dispatcher.dispatch_due() == 0
    clock.advance(seconds=GRACE)
    assert rt.dispatcher.dispatch_due() == 1


def test_two_dispatchers_racing_send_each_message_once(rt, fake_http):
    pid = _patient(rt)
    ids = [_queue(rt, pid, body=f"message {i}") for i in range(20)]
    barrier = threading.Barrier(4)

    def run():
        barrier.wait()
        rt.dispatcher.dispatch_due()
        rt.dispatcher.dispatch_ids(ids)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bodies = sorted(d["Body"] for d in sent_to(fake_http, PHONE))
    assert bodies == sorted(f"message {i}" for i in range(20))


def test_routine_messages_are_withheld_from_opted_out_patients(rt, fake_http):
    pid = _patient(rt, status="opted_out")
    item_id = _queue(rt, pid, routine=True, kind="checkin")
    rt.dispatcher.dispatch_due()
    assert fake_http.requests == []
    item, message = _item(rt, item_id)
    assert item.status == "cancelled" and message.status == "cancelled"


def test_routine_messages_wait_for_the_end_of_quiet_hours(rt, fake_http, clock):
    clock.set(datetime(2026, 3, 2, 3, 0, tzinfo=UTC))  # 03:00 in London
    pid = _patient(rt)
    item_id = _queue(rt, pid, routine=True, kind="checkin")
    rt.dispatcher.dispatch_due()
    assert fake_http.requests == []
    item, _ = _item(rt, item_id)
    assert item.next_attempt_at == datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    clock.set(datetime(2026, 3, 2, 8, 0, tzinfo=UTC))
    assert rt.dispatcher.dispatch_due() == 1


def test_whatsapp_outside_24h_sends_the_template(rt, fake_http, clock):
    pid = _patient(rt, channel="whatsapp", last_inbound_at=clock.now() - timedelta(hours=25))
    _queue(rt, pid, channel="whatsapp", kind="checkin", routine=True)
    rt.dispatcher.dispatch_due()
    [data] = sent_to(fake_http, PHONE)
    assert data["To"] == f"whatsapp:{PHONE}"
    assert data["ContentSid"] == rt.settings.twilio.whatsapp_templates["checkin"].content_sid
    assert '"Ada"' in data["ContentVariables"]
    assert "Body" not in data


def test_whatsapp_inside_24h_sends_free_text(rt, fake_http, clock):
    pid = _patient(rt, channel="whatsapp")
    _inbound(rt, "whatsapp", clock.now() - timedelta(hours=2), pid=pid)
    _queue(rt, pid, channel="whatsapp", kind="checkin", routine=True, body="Pain 0-10?")
    rt.dispatcher.dispatch_due()
    [data] = sent_to(fake_http, PHONE)
    assert data["Body"] == "Pain 0-10?"
    assert "ContentSid" not in data


def test_whatsapp_63016_falls_back_to_the_template(rt, fake_http, clock):
    pid = _patient(rt, channel="whatsapp")
    _inbound(rt, "whatsapp", clock.now() - timedelta(hours=2), pid=pid)
    _queue(rt, pid, channel="whatsapp", kind="checkin", routine=True)
    fake_http.queue_error(400, 63016, "Failed to send freeform message outside the window")
    rt.dispatcher.dispatch_due()
    rt.dispatcher.dispatch_due()
    first, second = sent_to(fake_http, PHONE)
    assert "Body" in first and "ContentSid" in second


def test_pacer_spaces_sends_per_sender():
    slept: list[float] = []
    now = [100.0]
    pacer = Pacer(2.0, sleep=lambda d: (slept.append(d), now.__setitem__(0, now[0] + d)),
                  monotonic=lambda: now[0])
    for _ in range(3):
        pacer.wait("sms:+1")
    pacer.wait("sms:+2")  # another sender has its own budget
    assert slept == [pytest.approx(0.5), pytest.approx(0.5)]


@pytest.fixture
def dev_rt(settings, clock):
    runtime = build_runtime(settings, clock=clock, messenger=DevMessenger(echo=False),
                            dispatch_mode="inline")
    yield runtime
    runtime.close()


class _PacerTime:
    """The pacer's clock and sleep, by hand: sleeping moves the clock."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    def pacer(self, rate: float) -> Pacer:
        return Pacer(rate, sleep=self.sleep, monotonic=lambda: self.now)


def test_routine_fan_out_is_paced_to_the_configured_rate(dev_rt):
    pid = _patient(dev_rt)
    t = _PacerTime()
    dev_rt.dispatcher.pacer = t.pacer(1.0)
    for i in range(3):
        _queue(dev_rt, pid, routine=True, kind="checkin", body=f"m{i}")
    sent_at = []
    for _ in range(8):  # the dispatch job's passes, every dispatch_poll_seconds
        before = len(dev_rt.messenger.sent)
        dev_rt.dispatcher.dispatch_due()
        sent_at += [t.now] * (len(dev_rt.messenger.sent) - before)
        t.now += dev_rt.settings.scheduler.dispatch_poll_seconds
    assert [m.body for m in dev_rt.messenger.sent] == ["m0", "m1", "m2"]
    assert [sent_at[1] - sent_at[0], sent_at[2] - sent_at[1]] == [pytest.approx(1.0)] * 2
    with dev_rt.transaction() as s:
        assert {i.status for i in s.scalars(select(OutboxItem))} == {"sent"}


def test_a_pass_sends_urgent_rows_first_and_only_the_routine_ones_due_within_it(dev_rt):
    """A paced fan-out is sent a little at each pass of the sweep, so an emergency (or its
    retry) that falls due meanwhile waits about one pass, not for the whole batch."""
    pid = _patient(dev_rt)
    t = _PacerTime()
    dev_rt.dispatcher.pacer = t.pacer(1.0)
    poll = dev_rt.settings.scheduler.dispatch_poll_seconds
    for i in range(10):
        _queue(dev_rt, pid, routine=True, kind="checkin", body=f"m{i}")
    assert dev_rt.dispatcher.dispatch_due() == 1
    assert sum(t.slept) == 0
    with dev_rt.transaction() as s:
        enqueue(s, Draft(to="+447700900001", channel="sms", body="ALERT", kind="alert",
                         priority=PRIORITY_EMERGENCY), dev_rt.clock.now())
    _queue(dev_rt, pid, body="a reply")
    t.now += poll
    start = t.now
    dev_rt.dispatcher.dispatch_due()
    assert [m.body for m in dev_rt.messenger.sent] == ["m0", "ALERT", "a reply", "m1"]
    assert t.now - start <= poll  # the pass waited for the pacer no longer than its budget


def test_a_slow_pass_is_bounded_for_a_slow_sender(dev_rt):
    """Two-segment messages at 1 segment/s: a pass never waits more than its budget."""
    pid = _patient(dev_rt)
    t = _PacerTime()
    dev_rt.dispatcher.pacer = t.pacer(1.0)
    poll = dev_rt.settings.scheduler.dispatch_poll_seconds
    for i in range(4):
        _queue(dev_rt, pid, routine=True, kind="checkin", body=f"{i}" * 200)  # 2 segments
    for _ in range(20):
        start = t.now
        dev_rt.dispatcher.dispatch_due()
        assert t.now - start <= poll
        t.now += poll
    assert len(dev_rt.messenger.sent) == 4


def test_group_commit_returns_each_caller_after_its_own_entry_is_written():
    written: list[list[int]] = []
    first_write_started = threading.Event()
    release_first_write = threading.Event()

    def write(batch):
        if not written:
            first_write_started.set()
            release_first_write.wait(5)
        written.append(list(batch))

    log = GroupCommit(write)
    done: dict[int, bool] = {}

    def add(n):
        log.add(n)
        # Back from add: the entry must already be in a written batch.
        done[n] = any(n in batch for batch in written)

    first = threading.Thread(target=add, args=(0,))
    first.start()
    assert first_write_started.wait(5)
    # While the first write is held up, nine more callers queue their entries.
    others = [threading.Thread(target=add, args=(n,)) for n in range(1, 10)]
    for t in others:
        t.start()
    deadline = time.monotonic() + 5
    while len(log._pending) < 9 and time.monotonic() < deadline:
        time.sleep(0.005)
    release_first_write.set()
    for t in [first, *others]:
        t.join(5)
    assert done == {n: True for n in range(10)}
    assert sorted(n for batch in written for n in batch) == list(range(10))  # each once
    # The nine that queued behind the first write went out together, in one write.
    assert written == [[0], sorted(written[1])] and sorted(written[1]) == list(range(1, 10))


def test_concurrent_sends_each_record_their_own_sid(rt, fake_http):
    """Replies sent at once from many threads: each message keeps the SID of its own send."""
    fake_http.latency = 0.02
    pid = _patient(rt)
    ids = [_queue(rt, pid, body=f"reply {i}") for i in range(24)]
    threads = [threading.Thread(target=rt.dispatcher.dispatch_ids, args=([i],)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sids = {}
    for item_id in ids:
        item, message = _item(rt, item_id)
        assert item.status == "sent" and item.claimed_until is None
        sids[message.body] = message.provider_id
    assert len(set(sids.values())) == 24
    # The fake answered each request with the SID it made; match them by body.
    answered = {r.data["Body"]: sid for r, sid in fake_http.created}
    assert sids == answered


def test_group_commit_tries_a_failed_write_once_more():
    attempts: list[list[str]] = []

    def flaky(batch):
        attempts.append(list(batch))
        if len(attempts) == 1:
            raise ConnectionError("database went away")

    GroupCommit(flaky, sleep=lambda s: None).add("a")
    assert attempts == [["a"], ["a"]]

    def broken(batch):
        raise ConnectionError("still down")

    with pytest.raises(ConnectionError):
        GroupCommit(broken, sleep=lambda s: None).add("b")


def test_a_send_recorded_after_the_database_blinked(rt, fake_http, monkeypatch):
    """The carrier took the message; the first attempt to record it fails, the second holds."""
    pid = _patient(rt)
    item_id = _queue(rt, pid)
    real = rt.dispatcher._write_successes
    calls = []

    def first_fails(batch):
        calls.append(len(batch))
        if len(calls) == 1:
            raise ConnectionError("connection reset")
        real(batch)

    monkeypatch.setattr(rt.dispatcher._successes, "_write", first_fails)
    monkeypatch.setattr(rt.dispatcher._successes, "_sleep", lambda s: None)
    assert rt.dispatcher.dispatch_due() == 1
    item, message = _item(rt, item_id)
    assert calls == [1, 1]
    assert item.status == "sent" and message.provider_id.startswith("SM")
    assert len(sent_to(fake_http, PHONE)) == 1


def test_a_status_callback_racing_the_sid_record_is_not_lost(rt, fake_http):
    """The callback's transaction runs while the dispatcher records the SID, neither seeing the
    other's uncommitted work: the event waits, and the scheduler's tick applies it."""
    from bot.messaging.base import SendResult
    from bot.scheduler import tick
    from bot.services.status import record_status

    pid = _patient(rt)
    item_id = _queue(rt, pid)
    job = rt.dispatcher._claim(item_id, paced=False)
    result = SendResult(provider_id="SMrace" + "0" * 26, status="queued", segments=1)
    recorder = threading.Thread(target=rt.dispatcher._write_successes, args=([(job, result)],))
    with rt.transaction() as s:
        record_status(s, rt.ctx, result.provider_id, "delivered", None, rt.clock.now())
        recorder.start()
        time.sleep(0.3)  # the recorder runs now, while the callback is uncommitted
    recorder.join(10)
    item, message = _item(rt, item_id)
    assert item.status == "sent" and message.provider_id == result.provider_id
    tick(rt)
    item, message = _item(rt, item_id)
    assert message.status == "delivered"
    tick(rt)  # applied once: nothing waits any more
    with rt.transaction() as s:
        assert s.scalars(select(StatusEvent.applied)).all() == [True]


def test_recording_a_send_twice_does_not_undo_a_callback_in_between(rt, fake_http):
    """A record retried after an unclear failure (it had committed) keeps "delivered"."""
    from bot.messaging.base import SendResult
    from bot.services.status import record_status

    pid = _patient(rt)
    item_id = _queue(rt, pid)
    job = rt.dispatcher._claim(item_id, paced=False)
    result = SendResult(provider_id="SMtwice" + "0" * 25, status="queued", segments=1)
    rt.dispatcher._write_successes([(job, result)])
    with rt.transaction() as s:
        record_status(s, rt.ctx, result.provider_id, "delivered", None, rt.clock.now())
    rt.dispatcher._write_successes([(job, result)])
    assert _item(rt, item_id)[1].status == "delivered"


# -- emergencies keep trying through a carrier outage ------------------------------------------

def _urgent(rt, kind="emergency", to=PHONE, channel="sms", body="Call the hotline now",
            pid=None, escalation_id=None):
    with rt.transaction() as s:
        return enqueue(s, Draft(to=to, channel=channel, body=body, kind=kind,
                                priority=PRIORITY_EMERGENCY, patient_id=pid,
                                escalation_id=escalation_id), rt.clock.now()).id


def _retry_while_pending(rt, item_id, clock, rounds=200):
    """Run the sweep at each retry time until the row is settled; returns the row."""
    for _ in range(rounds):
        rt.dispatcher.dispatch_due()
        item, message = _item(rt, item_id)
        if item.status != "pending":
            return item, message
        clock.set(item.next_attempt_at)
    raise AssertionError("still pending")


def test_an_emergency_is_retried_through_minutes_of_transient_errors(rt, fake_http, clock):
    """Twilio refusing for half an hour (429s, then 503s) must not drop "call the hotline
    now": the old policy gave up after 6 attempts, about a minute."""
    item_id = _urgent(rt)
    start = clock.now()
    for _ in range(6):
        fake_http.queue_error(429, 20429, "Too Many Requests", headers={"Retry-After": "1"})
    for _ in range(6):
        fake_http.queue_error(503, 503, "Service Unavailable")
    item, message = _retry_while_pending(rt, item_id, clock)
    assert item.status == "sent" and item.attempts == 13
    assert message.provider_id.startswith("SM")
    assert clock.now() - start > timedelta(minutes=20)
    assert len(sent_to(fake_http, PHONE)) == 13


def test_an_alert_is_retried_until_its_budget_runs_out_then_moves_the_chain(rt, fake_http,
                                                                          clock):
    from bot.services.escalations import escalate

    pid = _patient(rt)
    with rt.transaction() as s:
        esc, [item_id] = escalate(s, rt.ctx, s.get(Patient, pid), "emergency",
                                  ["limb_weakness"], "legs", clock.now())
        esc_id = esc.id
    budget = timedelta(minutes=rt.settings.outbox.urgent_retry_minutes)
    start = clock.now()
    for _ in range(100):
        fake_http.queue_error(503, 503, "Service Unavailable")
    item, message = _retry_while_pending(rt, item_id, clock)
    assert item.status == "failed" and message.status == "failed"
    assert clock.now() >= start + budget  # kept trying for the whole budget...
    assert clock.now() < start + budget + timedelta(
        seconds=rt.settings.outbox.max_backoff_seconds + 1)  # ...and not much longer
    assert item.attempts > rt.settings.outbox.max_attempts
    with rt.transaction() as s:
        assert s.get(Escalation, esc_id).next_alert_at == clock.now()  # next contact now


def test_a_routine_message_still_stops_after_max_attempts(rt, fake_http, clock):
    pid = _patient(rt)
    item_id = _queue(rt, pid, routine=True, kind="checkin")
    for _ in range(20):
        fake_http.queue_error(503, 503, "Service Unavailable")
    item, _ = _retry_while_pending(rt, item_id, clock)
    assert item.status == "failed" and item.attempts == rt.settings.outbox.max_attempts


# -- a send whose record cannot be written ------------------------------------------------------

ONCALL = "+447700900001"


def _claimed_on_write(rt, pid):
    """What the reply path does for an emergency: the instruction to the patient and the
    care team's alert written claimed in one transaction, sent after commit."""
    with rt.transaction() as s:
        rt.claim_on_write(s)
        ids = [enqueue(s, Draft(to=PHONE, channel="sms", body="Call the hotline now",
                                kind="emergency", priority=PRIORITY_EMERGENCY, patient_id=pid),
                       rt.clock.now()).id,
               enqueue(s, Draft(to=ONCALL, channel="sms", body="ALERT: call Ada", kind="alert",
                                priority=PRIORITY_EMERGENCY), rt.clock.now()).id]
        return ids, rt.claim_for_sending(s, ids)


def _records_fail(rt, monkeypatch) -> dict:
    """Writing a send's record fails (with no pause before the retry) while database["down"]."""
    real = rt.dispatcher._write_successes
    database = {"down": True}

    def write(batch):
        if database["down"]:
            raise ConnectionError("connection reset")
        real(batch)

    monkeypatch.setattr(rt.dispatcher._successes, "_write", write)
    monkeypatch.setattr(rt.dispatcher._successes, "_sleep", lambda s: None)
    return database


def test_a_send_whose_record_fails_strands_nothing_and_is_not_sent_twice(
        rt, fake_http, clock, monkeypatch, caplog):
    pid = _patient(rt)
    ids, jobs = _claimed_on_write(rt, pid)
    database = _records_fail(rt, monkeypatch)
    assert rt.dispatcher.send_jobs(jobs) == 2  # the alert went out too
    assert len(sent_to(fake_http, PHONE)) == 1 and len(sent_to(fake_http, ONCALL)) == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert sum("could not record 1 accepted send" in w for w in warnings) == 2
    assert not any(PHONE in w or ONCALL in w or "hotline" in w for w in warnings)

    clock.advance(seconds=rt.settings.outbox.claim_seconds + 1)  # the claims ran out
    rt.dispatcher.dispatch_due()  # the database is still down: nothing sent again
    rt.dispatcher.dispatch_ids(ids)
    assert len(fake_http.requests) == 2
    database["down"] = False
    rt.dispatcher.dispatch_due()  # writes the records first, then finds nothing to send
    assert len(fake_http.requests) == 2
    for item_id in ids:
        item, message = _item(rt, item_id)
        assert item.status == "sent" and message.provider_id.startswith("SM")
    assert rt.dispatcher._unrecorded == {}


def test_a_web_worker_writes_kept_records_by_itself_before_the_claims_run_out(
        rt, fake_http, clock, monkeypatch):
    """No sweep runs in a web worker: it tries again by itself (and before its next send)."""
    pid = _patient(rt)
    ids, jobs = _claimed_on_write(rt, pid)
    database = _records_fail(rt, monkeypatch)
    rt.dispatcher.unrecorded_retry_seconds = 0.05
    assert rt.dispatcher.send_jobs(jobs) == 2
    assert set(rt.dispatcher._unrecorded) == set(ids)
    time.sleep(0.2)  # still down: kept
    assert set(rt.dispatcher._unrecorded) == set(ids)
    database["down"] = False
    deadline = time.monotonic() + 5
    while rt.dispatcher._unrecorded and time.monotonic() < deadline:
        time.sleep(0.01)
    assert rt.dispatcher._unrecorded == {}
    assert [_item(rt, i)[0].status for i in ids] == ["sent", "sent"]
    clock.advance(seconds=rt.settings.outbox.claim_seconds + 1)
    assert rt.dispatcher.dispatch_due() == 0 and len(fake_http.requests) == 2


def test_the_next_reply_writes_kept_records_first(rt, fake_http, monkeypatch):
    pid = _patient(rt)
    ids, jobs = _claimed_on_write(rt, pid)
    database = _records_fail(rt, monkeypatch)
    rt.dispatcher.send_jobs(jobs)
    database["down"] = False
    _, more = _claimed_on_write(rt, pid)
    assert rt.dispatcher.send_jobs(more) == 2
    assert rt.dispatcher._unrecorded == {}
    assert [_item(rt, i)[0].status for i in ids] == ["sent", "sent"]


def test_group_commit_hands_a_batch_it_cannot_write_to_on_failure():
    failed: list[list[str]] = []

    def broken(batch):
        raise ConnectionError("still down")

    GroupCommit(broken, sleep=lambda s: None, on_failure=failed.append).add("b")
    assert failed == [["b"]]


# -- a job that outlived its claim ---------------------------------------------------------------

def test_a_reply_whose_claim_ran_out_in_the_send_pool_is_sent_once(rt, fake_http, clock):
    pid = _patient(rt)
    _, jobs = _claimed_on_write(rt, pid)
    clock.advance(seconds=rt.settings.outbox.claim_seconds + GRACE + 1)  # the pool was backed up
    assert rt.dispatcher.dispatch_due() == 2  # the sweep takes the rows over
    assert rt.dispatcher.send_jobs(jobs) == 0  # the pool's stale jobs are not sent
    assert len(sent_to(fake_http, PHONE)) == 1 and len(sent_to(fake_http, ONCALL)) == 1


def test_a_job_near_the_end_of_its_claim_is_left_to_the_sweep(rt, fake_http, clock):
    pid = _patient(rt)
    ids, jobs = _claimed_on_write(rt, pid)
    o = rt.settings.outbox
    clock.advance(seconds=o.claim_seconds - o.send_margin_seconds + 1)  # a send could outlast it
    assert rt.dispatcher.send_jobs(jobs) == 0
    assert fake_http.requests == []
    assert _item(rt, ids[0])[0].status == "sending"
    assert rt.dispatcher.dispatch_due() == 0  # the claim still holds
    clock.advance(seconds=o.send_margin_seconds + GRACE)
    assert rt.dispatcher.dispatch_due() == 2
    assert len(fake_http.requests) == 2


def test_an_outcome_is_not_written_over_a_newer_claim(rt, fake_http, clock):
    pid = _patient(rt)
    item_id = _queue(rt, pid)
    stale = rt.dispatcher._claim(item_id, paced=False)
    clock.advance(seconds=rt.settings.outbox.claim_seconds + GRACE + 1)
    current = rt.dispatcher._claim(item_id, paced=False)  # the sweep claimed it again
    assert current.attempts == stale.attempts + 1
    rt.dispatcher._record_failure(stale, SendError("transient", "Service Unavailable", code=503))
    item, _ = _item(rt, item_id)
    assert (item.status, item.attempts, item.claimed_until) == (
        "sending", current.attempts, current.claimed_until)  # still under the new claim
    result = SendResult(provider_id="SMstale" + "0" * 25, status="queued", segments=1)
    rt.dispatcher._write_successes([(stale, result)])
    assert _item(rt, item_id)[0].status == "sending"
    rt.dispatcher.send_jobs([current])
    item, message = _item(rt, item_id)
    assert item.status == "sent" and message.provider_id != result.provider_id


# -- the WhatsApp window and templates -----------------------------------------------------------

def test_an_sms_from_a_whatsapp_patient_does_not_open_the_whatsapp_window(rt, fake_http, clock):
    pid = _patient(rt, channel="whatsapp")
    _inbound(rt, "whatsapp", clock.now() - timedelta(hours=25), pid=pid)
    _inbound(rt, "sms", clock.now() - timedelta(minutes=5), pid=pid)  # last_inbound_at: now
    _queue(rt, pid, channel="whatsapp", kind="checkin", routine=True)
    rt.dispatcher.dispatch_due()
    [data] = sent_to(fake_http, PHONE)
    assert data["ContentSid"] == rt.settings.twilio.whatsapp_templates["checkin"].content_sid
    assert "Body" not in data


def test_a_whatsapp_reply_in_a_checkin_needs_no_window_query(client, rt, fake_http, clock):
    """The reply path knows the patient just wrote on WhatsApp: no extra query to find out."""
    from sqlalchemy import event

    from tests.test_webhooks import enrol, texted

    enrol(rt, channel="whatsapp")
    statements: list[str] = []

    def log_statement(conn, cursor, statement, *args):
        statements.append(" ".join(statement.split()))

    event.listen(rt.engine, "before_cursor_execute", log_statement)
    try:
        texted(client, "CHECKIN", channel="whatsapp")
    finally:
        event.remove(rt.engine, "before_cursor_execute", log_statement)
    wa = sent_to(fake_http, PHONE)
    assert wa and all("Body" in d and "ContentSid" not in d for d in wa)
    with rt.transaction() as s:
        kinds = s.scalars(select(OutboxItem.kind)).all()
    assert "checkin" in kinds  # a kind with a template: the window mattered
    assert not any(st.startswith("SELECT") and "messages.channel" in st for st in statements)


def _variables(data) -> dict:
    import json

    return json.loads(data["ContentVariables"])


def test_an_emergency_template_to_a_number_not_enrolled_is_filled(rt, fake_http, clock):
    _urgent(rt, channel="whatsapp", to="+447700900555")
    rt.dispatcher.dispatch_due()
    [data] = sent_to(fake_http, "+447700900555")
    assert data["ContentSid"] == rt.settings.twilio.whatsapp_templates["emergency"].content_sid
    assert _variables(data) == {"1": "+44 20 7946 0999",
                                "2": rt.settings.clinic.emergency_number}


WHATSAPP_ONCALL = {
    "contacts": [
        {"id": "oncall", "name": "On-call nurse", "phone": ONCALL, "channel": "whatsapp"},
        {"id": "coordinator", "name": "Coordinator", "phone": "+447700900002"},
        {"id": "consultant", "name": "Consultant", "phone": "+447700900003"},
    ],
}


class TestWhatsAppCareTeam:
    @pytest.fixture
    def settings_overrides(self):
        return {**TWILIO_SETTINGS, "care_team": WHATSAPP_ONCALL}

    def _alert(self, rt):
        from bot.services.escalations import escalate

        pid = _patient(rt)
        with rt.transaction() as s:
            esc, [item_id] = escalate(s, rt.ctx, s.get(Patient, pid), "emergency",
                                      ["limb_weakness"], "legs", rt.clock.now())
            return esc.ref, item_id

    def test_an_alert_template_is_filled_from_its_escalation(self, rt, fake_http):
        ref, _ = self._alert(rt)
        rt.dispatcher.dispatch_due()
        [data] = sent_to(fake_http, ONCALL)
        assert data["To"] == f"whatsapp:{ONCALL}"
        assert data["ContentSid"] == rt.settings.twilio.whatsapp_templates["alert"].content_sid
        assert _variables(data) == {"1": ref}

    def test_a_contact_who_wrote_on_whatsapp_today_gets_the_alert_as_text(self, rt, fake_http,
                                                                          clock):
        _inbound(rt, "whatsapp", clock.now() - timedelta(hours=3), address=ONCALL)
        ref, _ = self._alert(rt)
        rt.dispatcher.dispatch_due()
        [data] = sent_to(fake_http, ONCALL)
        assert "ContentSid" not in data and ref in data["Body"]

    def test_a_contact_who_wrote_by_sms_only_gets_the_template(self, rt, fake_http, clock):
        _inbound(rt, "sms", clock.now() - timedelta(hours=3), address=ONCALL)
        self._alert(rt)
        rt.dispatcher.dispatch_due()
        [data] = sent_to(fake_http, ONCALL)
        assert "ContentSid" in data


class TestAnUnfillableTemplate:
    """A template naming a variable the bot has no value for is never sent with "{ward}"."""

    TEMPLATES = {"alert": {"content_sid": "HX" + "0" * 31 + "4",
                           "variables": {"1": "{ref}", "2": "{ward}"}}}

    @pytest.fixture
    def settings_overrides(self, request):
        fallback = request.param
        return {**TWILIO_SETTINGS, "care_team": WHATSAPP_ONCALL,
                "twilio": {**TWILIO_SETTINGS["twilio"], "whatsapp_templates": self.TEMPLATES,
                           "sms_fallback_for_whatsapp": fallback}}

    @pytest.mark.parametrize("settings_overrides", [True, False], indirect=True)
    def test_it_sends_text_instead(self, rt, fake_http, settings_overrides):
        ref, item_id = TestWhatsAppCareTeam._alert(self, rt)
        rt.dispatcher.dispatch_due()
        [data] = sent_to(fake_http, ONCALL)
        assert "ContentSid" not in data and ref in data["Body"]
        fallback = settings_overrides["twilio"]["sms_fallback_for_whatsapp"]
        assert data["To"] == (ONCALL if fallback else f"whatsapp:{ONCALL}")
        item, message = _item(rt, item_id)
        assert item.status == "sent"
        assert item.channel == message.channel == ("sms" if fallback else "whatsapp")


def _held_checkin(rt, clock, fake_http):
    """A scheduled check-in started at 07:00 in London, its questions held until 08:00."""
    from bot.services.conversations import start_flow

    clock.set(datetime(2026, 3, 2, 7, 0, tzinfo=UTC))
    pid = _patient(rt)
    with rt.transaction() as s:
        ids = start_flow(s, rt.ctx, s.get(Patient, pid), "checkin", clock.now(), routine=True)
    rt.dispatcher.dispatch_due()
    assert ids and sent_to(fake_http, PHONE) == []
    return pid, ids


def test_held_questions_of_a_conversation_closed_by_an_emergency_are_not_sent(
        rt, fake_http, clock):
    from bot.services.inbound import InboundMessage, handle_inbound_message

    pid, held = _held_checkin(rt, clock, fake_http)
    clock.set(datetime(2026, 3, 2, 7, 30, tzinfo=UTC))
    with rt.transaction() as s:
        out = handle_inbound_message(s, rt.ctx, InboundMessage(
            "sms", PHONE, "my legs gave way and I wet myself"), clock.now())
    rt.dispatch_soon(out.outbox_ids)
    told = [d["Body"] for d in sent_to(fake_http, PHONE)]
    assert len(told) == 1 and "this could be serious" in told[0]
    clock.set(datetime(2026, 3, 2, 8, 5, tzinfo=UTC))  # quiet hours over
    rt.dispatcher.dispatch_due()
    # Nothing more to the patient: not the check-in's greeting and first question after the
    # emergency instruction, about a conversation that was closed by it.
    assert [d["Body"] for d in sent_to(fake_http, PHONE)] == told
    for item_id in held:
        item, message = _item(rt, item_id)
        assert (item.status, message.status) == ("cancelled", "cancelled")
        assert item.last_error == "conversation interrupted: emergency"
    with rt.transaction() as s:
        reasons = [a.details["reason"] for a in s.scalars(select(AuditLog).where(
            AuditLog.action == "outbox.cancelled"))]
    assert reasons == ["conversation interrupted: emergency"] * len(held)


def test_a_row_of_a_conversation_closed_while_it_was_being_claimed_is_not_sent(
        rt, fake_http, clock):
    """The dispatcher checks too: a row that escaped the cancelling (claimed at that moment,
    then put back) is held when its conversation is no longer open."""
    from bot.store.models import Conversation

    pid, held = _held_checkin(rt, clock, fake_http)
    with rt.transaction() as s:
        conv = s.scalars(select(Conversation).where(Conversation.patient_id == pid)).one()
        conv.status = "superseded"  # as if closed without reaching the held rows
    clock.set(datetime(2026, 3, 2, 8, 5, tzinfo=UTC))
    rt.dispatcher.dispatch_due()
    assert sent_to(fake_http, PHONE) == []
    item, _ = _item(rt, held[0])
    assert (item.status, item.last_error) == ("cancelled", "conversation superseded")


def test_the_reply_path_reads_the_patient_and_conversation_once(rt, clock):
    """Sending a reply right after its transaction wrote it needs the patient (holds, the
    WhatsApp window) and the conversation (closed meanwhile?): the objects the transaction
    loaded are kept, so no second SELECT of either (two round trips a message on PostgreSQL)."""
    from sqlalchemy import event

    from bot.services.conversations import start_flow
    from bot.services.inbound import InboundMessage
    from bot.services.receiving import store_and_handle

    pid = _patient(rt)
    with rt.transaction() as s:
        start_flow(s, rt.ctx, s.get(Patient, pid), "checkin", clock.now())
    statements = []
    listener = lambda *a: statements.append(a[2].split()[0:4])  # noqa: E731
    event.listen(rt.engine, "before_cursor_execute", listener)
    try:
        out = store_and_handle(rt, InboundMessage("sms", PHONE, "3", provider_id="SM" + "7" * 32))
    finally:
        event.remove(rt.engine, "before_cursor_execute", listener)
    assert out.outbox_ids
    reads = [" ".join(s) for s in statements if s[0] == "SELECT"]
    assert sum("patients.id," in r for r in reads) == 1, reads
    assert sum("conversations.id," in r for r in reads) == 1, reads
