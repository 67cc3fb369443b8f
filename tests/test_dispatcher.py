"""The outbox dispatcher with the real twilio SDK (fake HTTP): sends, retries, never twice."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from bot.messaging.dev import DevMessenger
from bot.runtime import build_runtime
from bot.services.dispatcher import GroupCommit, Pacer
from bot.services.outbox import PRIORITY_ROUTINE, Draft, enqueue
from bot.services.patients import Enrolment, enrol_patient
from bot.store.models import AuditLog, Message, OutboxItem, Patient, StatusEvent
from tests.twilio_support import (  # noqa: F401 - fixtures
    FROM_NUMBER,
    PUBLIC_URL,
    fake_http,
    messenger,
    sent_to,
    settings_overrides,
)

PHONE = "+447700900123"


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


def test_sends_with_the_right_request_and_records_sid_and_segments(rt, fake_http):
    pid = _patient(rt)
    item_id = _queue(rt, pid, body="Hello \u201cAda\u201d \u2014 time for your check-in\u2026")
    assert rt.dispatcher.dispatch_due() == 1
    [data] = sent_to(fake_http, PHONE)
    assert data["To"] == PHONE
    assert data["From"] == FROM_NUMBER
    assert data["StatusCallback"] == f"{PUBLIC_URL}/webhooks/twilio/status"
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
    clock.advance(seconds=rt.settings.outbox.claim_seconds + 1)
    assert rt.dispatcher.dispatch_due() == 1
    assert len(sent_to(fake_http, PHONE)) == 1


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
    pid = _patient(rt, channel="whatsapp", last_inbound_at=clock.now() - timedelta(hours=2))
    _queue(rt, pid, channel="whatsapp", kind="checkin", routine=True, body="Pain 0-10?")
    rt.dispatcher.dispatch_due()
    [data] = sent_to(fake_http, PHONE)
    assert data["Body"] == "Pain 0-10?"
    assert "ContentSid" not in data


def test_whatsapp_63016_falls_back_to_the_template(rt, fake_http, clock):
    pid = _patient(rt, channel="whatsapp", last_inbound_at=clock.now() - timedelta(hours=2))
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


def test_routine_fan_out_is_paced_to_the_configured_rate(dev_rt):
    pid = _patient(dev_rt)
    delays: list[float] = []
    dev_rt.dispatcher.pacer = Pacer(1.0, sleep=delays.append)
    for i in range(3):
        _queue(dev_rt, pid, routine=True, kind="checkin", body=f"m{i}")
    assert dev_rt.dispatcher.dispatch_due() == 3
    assert len([d for d in delays if d > 0.5]) == 2
    with dev_rt.transaction() as s:
        assert {i.status for i in s.scalars(select(OutboxItem))} == {"sent"}


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
