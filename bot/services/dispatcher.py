"""Sends what the outbox holds: claim, decide, send, record; retry what failed for a passing reason.

A row is claimed by one conditional UPDATE (pending and due, or a claim whose lease ran out), so
two dispatchers in different processes never send the same row. The send happens outside any
transaction; the outcome is written in a new one.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Integer, String, and_, bindparam, case, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from bot.clock import Clock
from bot.config import Settings
from bot.domain import gsm7
from bot.domain.schedule import in_quiet_hours, quiet_hours_end
from bot.messaging.base import Messenger, OutgoingMessage, SendError, SendResult
from bot.services.audit import audit
from bot.services.escalations import alert_not_delivered
from bot.services.outbox import PRIORITY_REPLY
from bot.store.db import transaction
from bot.store.models import Message, OutboxItem, Patient
from bot.store.statuses import advance_status

log = logging.getLogger(__name__)
WHATSAPP_WINDOW = timedelta(hours=24)


class Pacer:
    """Spaces sends per sender to a configured rate (real time, shared by this process)."""

    def __init__(self, rate_per_second: float, sleep=time.sleep, monotonic=time.monotonic):
        self.interval = 1.0 / rate_per_second
        self._next: dict[str, float] = {}
        self._lock = threading.Lock()
        self._sleep = sleep
        self._monotonic = monotonic

    def wait(self, sender: str, segments: int = 1) -> float:
        with self._lock:
            now = self._monotonic()
            slot = max(now, self._next.get(sender, now))
            self._next[sender] = slot + self.interval * max(1, segments)
        delay = slot - now
        if delay > 0:
            self._sleep(delay)
        return delay


class GroupCommit:
    """Write entries from many threads in batches, each caller returning once its own is written.

    A caller appends its entry, then waits its turn at the writer lock; whoever holds the lock
    writes everything pending. So when `add` returns, the entry is in the database (written by
    this thread or by the one before it), and concurrent callers share one transaction.

    A failed write is tried once more after a short pause (a dropped database connection is
    replaced by then). If that fails too, the error reaches the caller that wrote the batch; the
    rows of the batch stay claimed and are sent again when the claim runs out, as after a crash.
    """

    def __init__(self, write, retry_after: float = 0.5, sleep=time.sleep) -> None:
        self._write = write
        self._retry_after = retry_after
        self._sleep = sleep
        self._pending: list = []
        self._pending_lock = threading.Lock()
        self._write_lock = threading.Lock()

    def add(self, entry) -> None:
        """`write` must not call `add` (the lock is not re-entrant): follow-up work, such as
        sending more, belongs after `add` returns."""
        with self._pending_lock:
            self._pending.append(entry)
        with self._write_lock:
            with self._pending_lock:
                batch, self._pending = self._pending, []
            if not batch:
                return
            try:
                self._write(batch)
            except Exception:
                log.warning("recording %d sends failed; trying once more", len(batch),
                            exc_info=True)
                self._sleep(self._retry_after)
                self._write(batch)


@dataclass
class _Job:
    item_id: int
    message_id: int
    attempts: int
    outgoing: OutgoingMessage
    sender: str
    paced: bool
    patient_id: int | None = None
    extra: dict = field(default_factory=dict)


class Dispatcher:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        messenger: Messenger,
        settings: Settings,
        clock: Clock,
        context_for=None,
        sleep=time.sleep,
    ) -> None:
        self.sessions = sessions
        self.messenger = messenger
        self.settings = settings
        self.clock = clock
        self.pacer = Pacer(settings.twilio.send_rate_per_second, sleep=sleep)
        self._successes = GroupCommit(self._write_successes)
        self._context_for = context_for or (lambda patient: {})

    # -- entry points -------------------------------------------------------------------------

    def dispatch_ids(self, ids: list[int]) -> int:
        """Send these rows now if still unsent (the reply path right after a webhook commits).

        The rows are claimed together in one transaction; each outcome is recorded as soon as
        the carrier answers, so a crash can repeat at most the one send in flight.
        """
        now = self.clock.now()
        with transaction(self.sessions) as s:
            jobs = [job for i in ids if (job := self._claim_in(s, i, False, now)) is not None]
        return sum(self._send(job) for job in jobs)

    def dispatch_due(self, limit: int = 100) -> int:
        """Send due rows, most urgent first, paced per sender for routine traffic."""
        now = self.clock.now()
        with transaction(self.sessions) as s:
            ids = list(s.scalars(
                select(OutboxItem.id).where(_claimable(now))
                .order_by(OutboxItem.priority, OutboxItem.id).limit(limit)
            ))
        return sum(self._send_one(i, paced=True) for i in ids)

    # -- one row ------------------------------------------------------------------------------

    def _send_one(self, item_id: int, paced: bool) -> int:
        job = self._claim(item_id, paced)
        return 0 if job is None else self._send(job)

    def _send(self, job: _Job) -> int:
        if job.paced:
            self.pacer.wait(job.sender, gsm7.segments(job.outgoing.body or ""))
        try:
            result = self.messenger.send(job.outgoing)
        except SendError as err:
            self._record_failure(job, err)
            return 0
        except Exception as exc:  # an adapter bug or an unexpected network error: retry later
            log.exception("send raised for outbox item %s", job.item_id)
            self._record_failure(job, SendError("transient", type(exc).__name__))
            return 0
        self._record_success(job, result)
        return 1

    def _claim(self, item_id: int, paced: bool) -> _Job | None:
        now = self.clock.now()
        with transaction(self.sessions) as s:
            return self._claim_in(s, item_id, paced, now)

    def _claim_in(self, s: Session, item_id: int, paced: bool, now: datetime) -> _Job | None:
        """Claim one committed row in the caller's transaction; None if not ours to send now."""
        claimed = s.execute(
            update(OutboxItem)
            .where(OutboxItem.id == item_id, _claimable(now))
            .values(
                status="sending",
                claimed_until=now + timedelta(seconds=self.settings.outbox.claim_seconds),
                attempts=OutboxItem.attempts + 1,
            )
            .execution_options(synchronize_session=False)
        ).rowcount
        if claimed != 1:
            return None
        item = s.get(OutboxItem, item_id, populate_existing=True)
        return self._prepare(s, item, paced, now)

    def claim_new(self, s: Session, ids: list[int]) -> list[_Job]:
        """Claim rows written in the caller's own, still open, transaction.

        Nobody else can see them before it commits, so no conditional update is needed; the
        objects are already in the session, so this costs no query. Rows written already
        claimed (see outbox.enqueue) are all taken, listed in `ids` or not, so none waits for
        its claim to run out. Send the jobs after commit.
        """
        now = self.clock.now()
        jobs = []
        written = s.info.get("outbox", {})
        # Written claimed by this transaction and not cancelled since (e.g. by the loop guard).
        pre_claimed = {i for i, (item, _) in written.items() if item.status == "sending"}
        for item_id in dict.fromkeys([*ids, *pre_claimed]):
            item = written[item_id][0] if item_id in written else s.get(OutboxItem, item_id)
            if item is None:
                continue
            if item_id not in pre_claimed:
                if item.status != "pending" or item.next_attempt_at > now:
                    continue
                item.status = "sending"
                item.claimed_until = now + timedelta(seconds=self.settings.outbox.claim_seconds)
                item.attempts += 1
            job = self._prepare(s, item, False, now)
            if job is not None:
                jobs.append(job)
        return jobs

    def send_jobs(self, jobs: list[_Job]) -> int:
        return sum(self._send(job) for job in jobs)

    def _prepare(self, s: Session, item: OutboxItem, paced: bool, now: datetime) -> _Job | None:
        """Apply holds (opted out, quiet hours) to a claimed row, or build what to send."""
        q = self.settings.quiet_hours
        message = s.get(Message, item.message_id)
        # Only routine holds and the WhatsApp window need the patient row.
        needs_patient = item.patient_id and (item.routine or item.channel == "whatsapp")
        patient = s.get(Patient, item.patient_id) if needs_patient else None
        hold = self._hold_reason(item, patient, now)
        if hold == "defer":
            item.status = "pending"
            item.claimed_until = None
            item.attempts -= 1
            item.next_attempt_at = quiet_hours_end(now, patient.timezone, q.start, q.end)
            return None
        if hold:
            item.status = "cancelled"
            item.last_error = hold
            message.status = "cancelled"
            message.updated_at = now
            audit(s, now, "system", "outbox.cancelled", "message", message.id, reason=hold)
            return None
        outgoing = self._outgoing(item, message, patient, now)
        return _Job(
            item_id=item.id, message_id=message.id, attempts=item.attempts,
            outgoing=outgoing, sender=self._sender(item.channel),
            paced=paced and item.priority > PRIORITY_REPLY, patient_id=item.patient_id,
        )

    def _hold_reason(self, item: OutboxItem, patient: Patient | None, now: datetime) -> str | None:
        if patient is None or not item.routine:
            return None
        if patient.status in ("opted_out", "paused"):
            return f"patient {patient.status}"
        if patient.number_invalid_at is not None:
            return "number invalid"
        q = self.settings.quiet_hours
        if in_quiet_hours(now, patient.timezone, q.start, q.end):
            return "defer"
        return None

    def _outgoing(self, item: OutboxItem, message: Message, patient: Patient | None,
                  now: datetime) -> OutgoingMessage:
        public = self.settings.public_url
        callback = f"{public}/webhooks/twilio/status" if public else None
        if item.channel == "whatsapp":
            in_window = (
                patient is not None and patient.last_inbound_at is not None
                and now - patient.last_inbound_at < WHATSAPP_WINDOW
            )
            template = self.settings.twilio.whatsapp_templates.get(item.kind)
            if (item.variant == "template" or not in_window) and template is not None:
                values = self._context_for(patient) if patient else {}
                variables = {k: _fill(v, values) for k, v in template.variables.items()}
                return OutgoingMessage(to=item.to, channel="whatsapp",
                                       content_sid=template.content_sid,
                                       content_variables=variables, status_callback=callback)
        return OutgoingMessage(to=item.to, channel=item.channel, body=message.body,
                               status_callback=callback)

    def _sender(self, channel: str) -> str:
        t = self.settings.twilio
        if t.messaging_service_sid:
            return t.messaging_service_sid
        return f"{channel}:{(t.whatsapp_from if channel == 'whatsapp' else t.from_number) or ''}"

    # -- outcomes -----------------------------------------------------------------------------

    def _record_success(self, job: _Job, result: SendResult) -> None:
        self._successes.add((job, result))

    def _write_successes(self, batch: list[tuple[_Job, SendResult]]) -> None:
        """Record what the carrier accepted: one transaction for every send that finished while
        the previous batch was being written (group commit), so a busy worker pays for one
        commit per batch rather than one per message. A status callback that came before this
        is applied by the scheduler's next tick (status.apply_waiting_statuses)."""
        now = self.clock.now()
        items = [{"_id": job.item_id, "_now": now,
                  "_variant": "template" if job.outgoing.content_sid else None}
                 for job, _ in batch]
        messages = [{"_id": job.message_id, "_sid": result.provider_id,
                     "_status": advance_status("queued", result.status), "_now": now,
                     "_segments": result.segments or None}
                    for job, result in batch]
        with transaction(self.sessions) as s:
            conn = s.connection()
            conn.execute(_MARK_SENT, items)  # one executemany per table
            conn.execute(_SET_PROVIDER_ID, messages)
        for job, result in batch:
            log.info("sent outbox item %s as %s", job.item_id, result.provider_id)

    def _record_failure(self, job: _Job, err: SendError) -> None:
        now = self.clock.now()
        o = self.settings.outbox
        with transaction(self.sessions) as s:
            item = s.get(OutboxItem, job.item_id)
            message = s.get(Message, job.message_id)
            patient = s.get(Patient, item.patient_id) if item.patient_id else None
            item.claimed_until = None
            item.last_error = f"{err.kind}:{err.code or ''} {str(err)[:150]}"
            message.error_code = err.code
            message.updated_at = now
            log.warning("send failed for outbox item %s: %s code=%s", item.id, err.kind, err.code)
            if err.kind == "transient" and item.attempts < o.max_attempts:
                delay = min(o.max_backoff_seconds, o.backoff_seconds * 2 ** (item.attempts - 1))
                delay = max(delay, err.retry_after or 0)
                item.status = "pending"
                item.next_attempt_at = now + timedelta(seconds=delay)
                message.status = "queued"
                return
            if err.kind == "outside_window" and item.variant != "template" and (
                item.kind in self.settings.twilio.whatsapp_templates
            ):
                item.status, item.variant, item.next_attempt_at = "pending", "template", now
                message.status = "queued"
                return
            if item.channel == "whatsapp" and self.settings.twilio.sms_fallback_for_whatsapp \
                    and err.kind in ("outside_window", "permanent"):
                item.status, item.channel, item.variant, item.next_attempt_at = (
                    "pending", "sms", None, now)
                message.channel = "sms"
                message.body = gsm7.to_gsm7(message.body or "")
                message.status = "queued"
                audit(s, now, "system", "outbox.sms_fallback", "message", message.id,
                      code=err.code)
                return
            item.status = "failed"
            message.status = "failed"
            if patient is not None and err.kind == "opted_out" and patient.status != "opted_out":
                patient.status = "opted_out"
                audit(s, now, "system", "patient.opted_out", "patient", patient.id,
                      source="carrier", code=err.code)
            if patient is not None and err.kind == "invalid_number":
                patient.number_invalid_at = now
                audit(s, now, "system", "patient.number_invalid", "patient", patient.id,
                      code=err.code)
            audit(s, now, "system", "outbox.failed", "message", message.id,
                  kind=err.kind, code=err.code, attempts=item.attempts)
            if message.escalation_id is not None:
                alert_not_delivered(s, message.escalation_id, now, f"{err.kind} {err.code or ''}")


# Statements for recording sends, built once (Core: no ORM bookkeeping on this hot path).
_outbox = OutboxItem.__table__
_messages = Message.__table__
_MARK_SENT = (
    update(_outbox).where(_outbox.c.id == bindparam("_id"))
    .values(status="sent", sent_at=bindparam("_now"), claimed_until=None,
            variant=func.coalesce(bindparam("_variant", type_=String), _outbox.c.variant))
)
# The status is set only with the SID: a write repeated after an unclear failure must not
# undo a callback applied in between.
_SET_PROVIDER_ID = (
    update(_messages).where(_messages.c.id == bindparam("_id"))
    .values(provider_id=bindparam("_sid"),
            status=case((_messages.c.provider_id.is_(None), bindparam("_status")),
                        else_=_messages.c.status),
            updated_at=bindparam("_now"),
            segments=func.coalesce(bindparam("_segments", type_=Integer), _messages.c.segments))
)


def _claimable(now: datetime):
    return or_(
        and_(OutboxItem.status == "pending", OutboxItem.next_attempt_at <= now),
        and_(OutboxItem.status == "sending", OutboxItem.claimed_until < now),
    )


def _fill(template: str, values: dict) -> str:
    try:
        return template.format(**values)
    except (KeyError, IndexError):
        return template


def failed_messages(session: Session, limit: int = 200) -> list[tuple[OutboxItem, Message]]:
    """Outbox rows that ended failed, newest first: for the care team to follow up by phone."""
    rows = session.execute(
        select(OutboxItem, Message).join(Message, Message.id == OutboxItem.message_id)
        .where(OutboxItem.status == "failed")
        .order_by(OutboxItem.id.desc()).limit(limit)
    ).all()
    return [(item, message) for item, message in rows]
