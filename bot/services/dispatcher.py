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
from zoneinfo import ZoneInfo

from sqlalchemy import Integer, String, and_, bindparam, case, func, or_, select, true, update
from sqlalchemy.orm import Session, sessionmaker

from bot.clock import Clock
from bot.config import Settings
from bot.domain import gsm7
from bot.domain.schedule import in_quiet_hours, quiet_hours_end
from bot.messaging.base import Messenger, OutgoingMessage, SendError, SendResult
from bot.services import voice
from bot.services.audit import audit
from bot.services.escalations import ALERT_CALL, alert_not_delivered
from bot.services.outbox import (
    PRIORITY_EMERGENCY,
    PRIORITY_REPLY,
    SENT_WHEN_OPTED_OUT,
    heard_on_whatsapp,
    sms_copy_since,
)
from bot.services.status import confirm_earlier_send, queue_sms_copy
from bot.store.db import transaction
from bot.store.models import Conversation, Escalation, Message, OutboxItem, Patient
from bot.store.statuses import advance_status

# A conversation closed before its end: what it still had to send is not sent.
CLOSED_EARLY = ("interrupted", "superseded")

log = logging.getLogger(__name__)


class Pacer:
    """Spaces sends per sender to a configured rate (real time, shared by this process)."""

    def __init__(self, rate_per_second: float, sleep=time.sleep, monotonic=time.monotonic):
        self.interval = 1.0 / rate_per_second
        self._next: dict[str, float] = {}
        self._lock = threading.Lock()
        self._sleep = sleep
        self._monotonic = monotonic

    def now(self) -> float:
        return self._monotonic()

    def slot(self, sender: str) -> float:
        """When (on this pacer's clock) a send from this sender could start, without taking it."""
        with self._lock:
            now = self._monotonic()
            return max(now, self._next.get(sender, now))

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
    replaced by then). If that fails too, the whole batch (every caller's entry in it, not only
    the writer's) goes to `on_failure`; without one, the error reaches the caller that wrote
    the batch.
    """

    def __init__(self, write, retry_after: float = 0.5, sleep=time.sleep,
                 on_failure=None) -> None:
        self._write = write
        self._retry_after = retry_after
        self._sleep = sleep
        self._on_failure = on_failure
        self._pending: list = []
        self._pending_lock = threading.Lock()
        self._write_lock = threading.Lock()

    def add(self, entry) -> None:
        """`write` must not call `add` (the lock is not re-entrant): follow-up work, such as
        sending more, belongs after `add` returns."""
        self.add_all([entry])

    def add_all(self, entries: list) -> None:
        with self._pending_lock:
            self._pending.extend(entries)
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
                try:
                    self._write(batch)
                except Exception:
                    if self._on_failure is None:
                        raise
                    log.warning("recording %d sends failed again", len(batch), exc_info=True)
                    self._on_failure(batch)


@dataclass
class _Job:
    item_id: int
    message_id: int
    attempts: int
    outgoing: OutgoingMessage
    sender: str
    paced: bool
    claimed_until: datetime  # not sent once too little of the claim is left (see _send)
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
        self._successes = GroupCommit(self._write_successes, on_failure=self._keep_unrecorded)
        self._context_for = context_for or (lambda patient: {})
        # Sends the carrier accepted whose record could not be written (the database was
        # down): outbox id -> (job, result). Written again before the next dispatch claims
        # anything; until then this process does not claim these rows again.
        self._unrecorded: dict[int, tuple[_Job, SendResult]] = {}
        self._unrecorded_lock = threading.Lock()
        # Where no sweep runs in this process (web workers), also try every so many seconds,
        # before the claims run out and another process's sweep sends the rows again.
        self.unrecorded_retry_seconds: float | None = None
        self._retrier: threading.Thread | None = None

    # -- entry points -------------------------------------------------------------------------

    def dispatch_ids(self, ids: list[int], urgent_only: bool = False) -> int:
        """Send these rows now if still unsent (the reply path right after a webhook commits).

        The rows are claimed together in one transaction; each outcome is recorded as soon as
        the carrier answers, so a crash can repeat at most the one send in flight.
        `urgent_only`: send only replies, emergencies and alerts now; routine rows are left to
        the sweep, which paces them per sender (copies and retries a status callback queues:
        a failed fan-out comes back as a burst of callbacks, and must keep to the rate too).
        """
        self.record_unrecorded()
        now = self.clock.now()
        with transaction(self.sessions) as s:
            jobs = [job for i in ids
                    if (job := self._claim_in(s, i, False, now, urgent_only)) is not None]
        return self._send_all(jobs)

    def dispatch_due(self, limit: int = 100, max_seconds: float | None = None) -> int:
        """One pass of the sweep: every due reply, emergency and alert first (not paced, most
        urgent first), then routine rows, paced per sender, but only those the pacer lets go
        within about one dispatch interval. A pass stays short, so an emergency that falls due
        (or is retried) during a large routine fan-out waits at most about one interval.
        `max_seconds`: claim nothing more once the pass has taken this long (the scheduler's
        tick, which must not be held up by a slow carrier; the dispatch job sends the rest)."""
        self.record_unrecorded()
        started = self.pacer.now()
        stop = started + max_seconds if max_seconds is not None else float("inf")
        now = self.clock.now()
        with transaction(self.sessions) as s:
            rows = s.execute(
                select(OutboxItem.id, OutboxItem.priority, OutboxItem.channel)
                .where(_claimable(now))
                .order_by(OutboxItem.priority, OutboxItem.id).limit(limit)
            ).all()
        sent = 0
        for item_id, priority, _ in rows:
            if priority <= PRIORITY_REPLY and self.pacer.now() < stop:
                sent += self._send_one(item_id, paced=False)
        # The pacer keeps each sender's next slot between passes, so the rate holds although
        # each pass sends only what is due within its budget.
        deadline = min(self.pacer.now() + self.settings.scheduler.dispatch_poll_seconds, stop)
        full: set[str] = set()
        for item_id, priority, channel in rows:
            if priority <= PRIORITY_REPLY or self.pacer.now() >= stop:
                continue
            sender = self._sender(channel)
            if sender in full or self.pacer.slot(sender) > deadline:
                full.add(sender)  # this sender's budget for the pass is spent
                continue
            sent += self._send_one(item_id, paced=True)
        return sent

    def send_jobs(self, jobs: list[_Job]) -> int:
        """Send claimed jobs one by one; one that fails (say its outcome cannot be written)
        does not stop the others."""
        self.record_unrecorded()
        return self._send_all(jobs)

    def _send_all(self, jobs: list[_Job]) -> int:
        sent = 0
        for job in jobs:
            try:
                sent += self._send(job)
            except Exception:
                log.exception("outbox item %s: sending or recording it failed; it is sent "
                              "again when its claim runs out", job.item_id)
        return sent

    # -- one row ------------------------------------------------------------------------------

    def _send_one(self, item_id: int, paced: bool) -> int:
        job = self._claim(item_id, paced)
        return 0 if job is None else self._send_all([job])

    def _send(self, job: _Job) -> int:
        if job.paced:
            self.pacer.wait(job.sender, gsm7.segments(job.outgoing.body or ""))
        # A job can wait (in the send pool, behind the pacer) until its claim has run out or
        # nearly: the sweep may then claim the row again and send it too. Leave it to the sweep.
        margin = timedelta(seconds=self.settings.outbox.send_margin_seconds)
        if self.clock.now() + margin > job.claimed_until:
            log.warning("outbox item %s: too little of its claim is left to send it; left to "
                        "the sweep", job.item_id)
            return 0
        try:
            if job.outgoing.channel == "voice":  # an alert call: its body is the TwiML
                result = self.messenger.call(job.outgoing.to, job.outgoing.body or "",
                                             job.outgoing.status_callback)
            else:
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

    def _claim_in(self, s: Session, item_id: int, paced: bool, now: datetime,
                  urgent_only: bool = False) -> _Job | None:
        """Claim one committed row in the caller's transaction; None if not ours to send now
        (`urgent_only`: nor if it is routine)."""
        if item_id in self._unrecorded:  # sent by this process; its record is still to write
            return None
        urgent = OutboxItem.priority <= PRIORITY_REPLY if urgent_only else true()
        claimed = s.execute(
            update(OutboxItem)
            .where(OutboxItem.id == item_id, _claimable(now), urgent)
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
        claim = timedelta(seconds=self.settings.outbox.claim_seconds)
        claim_until = s.info.get("claim_until")
        # When this transaction began writing claimed rows (Runtime.claim_on_write): a patient
        # whose last_inbound_at is this recent wrote the message this transaction answers.
        answering_since = claim_until - claim if claim_until is not None else None
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
                item.claimed_until = now + claim
                item.attempts += 1
            job = self._prepare(s, item, False, now, answering_since)
            if job is not None:
                jobs.append(job)
        return jobs

    def _prepare(self, s: Session, item: OutboxItem, paced: bool, now: datetime,
                 answering_since: datetime | None = None) -> _Job | None:
        """Apply holds (opted out, quiet hours) to a claimed row, or build what to send."""
        q = self.settings.quiet_hours
        message = s.get(Message, item.message_id)
        if item.attempts > 1 and confirm_earlier_send(
                s, self.settings, item, message, now) is not None:
            # (Any SMS fallback its callbacks queued is sent by the next pass.)
            log.info("outbox item %s: Twilio took an earlier attempt (its status callback "
                     "came); not sent again", item.id)
            return None
        # Routine holds, the opt-out hold and the WhatsApp window need the patient row (on the
        # reply path it is already in the session: no query).
        # A row tried before may predate a change of the patient's number (it was being sent
        # then): its patient is read to send it to the number they have now.
        needs_patient = item.patient_id and (item.routine or item.channel == "whatsapp"
                                             or item.kind not in SENT_WHEN_OPTED_OUT
                                             or item.attempts > 1)
        patient = s.get(Patient, item.patient_id) if needs_patient else None
        if patient is not None and item.to != patient.phone:
            log.info("outbox item %s: the patient's number changed since it was written; "
                     "sent to the new one", item.id)
            audit(s, now, "system", "outbox.readdressed", "message", message.id,
                  reason="the patient's number changed")
            item.to = message.address = patient.phone
        hold = self._hold_reason(item, patient, now)
        if hold is None and item.kind in ("alert", ALERT_CALL) \
                and message.escalation_id is not None:
            esc = s.get(Escalation, message.escalation_id)
            if esc is not None and esc.status != "open":
                # Someone took it while this alert (or its call) waited (a retry, a copy): "no
                # one else will be alerted", the acknowledgement said.
                hold = f"escalation {esc.status}"
        if hold is None and message.conversation_id is not None:
            conv = s.get(Conversation, message.conversation_id)  # on the reply path: no query
            if conv is not None and conv.status in CLOSED_EARLY:
                # Interrupted (an emergency, STOP, a new flow) or superseded while this waited:
                # its question is about a conversation that no longer listens.
                hold = f"conversation {conv.status}"
        if hold in (None, "defer") and item.routine \
                and self._reminder_too_late(s, message, patient, now):
            # Held for quiet hours, or simply late: a send retried for hours, the bot down.
            hold = "too late for a reminder: it would reach the patient past its time"
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
        outgoing = self._outgoing(s, item, message, patient, now, answering_since)
        return _Job(
            item_id=item.id, message_id=message.id, attempts=item.attempts,
            outgoing=outgoing, sender=self._sender(item.channel),
            paced=paced and item.priority > PRIORITY_REPLY, claimed_until=item.claimed_until,
            patient_id=item.patient_id,
        )

    def _reminder_too_late(self, s: Session, message: Message, patient: Patient,
                           now: datetime) -> bool:
        """Whether this routine message, about to be sent or held for quiet hours, is a
        reminder's question (an open conversation of a flow with a text of its own, such as
        "take your EVENING tablets") that would reach the patient later than the scheduler
        lets a late reminder go: over REMINDER_GRACE after it would have gone when it was
        started, or on a later local day (a send that failed for hours, the bot down, or one
        that waited until quiet hours began).

        Such a question is not sent, and its conversation is closed: it waits for no answer.
        A reminder set inside quiet hours is held until they end, as always."""
        from bot.services.schedules import REMINDER_GRACE

        if message.conversation_id is None:
            return False
        conv = s.get(Conversation, message.conversation_id)
        if conv is None or conv.status not in ("active", "waiting") \
                or not (conv.state or {}).get("params"):
            return False
        q, zone = self.settings.quiet_hours, patient.timezone
        on_time = quiet_hours_end(conv.started_at, zone, q.start, q.end)
        held_until = quiet_hours_end(now, zone, q.start, q.end)
        tz = ZoneInfo(zone)
        if held_until - on_time <= REMINDER_GRACE \
                and held_until.astimezone(tz).date() == on_time.astimezone(tz).date():
            return False
        log.warning("message %s: the reminder of conversation %s would reach the patient at "
                    "%s, too late; not sent", message.id, conv.id, held_until.isoformat())
        conv.status, conv.wait_deadline, conv.updated_at = "expired", None, now
        audit(s, now, "system", "conversation.expired", "conversation", conv.id,
              patient_id=conv.patient_id, flow=conv.flow_id,
              reason="its reminder could not be sent in time")
        return True

    def _hold_reason(self, item: OutboxItem, patient: Patient | None, now: datetime) -> str | None:
        if patient is None:
            return None
        if (patient.status == "opted_out" and item.to == patient.phone
                and item.kind not in SENT_WHEN_OPTED_OUT):
            # Said STOP after this was written (a reply waiting out a 429, say): nothing but
            # what STOP, HELP and a red flag call for goes to them now.
            return "patient opted_out"
        if not item.routine:
            return None
        if patient.status in ("opted_out", "paused", "discharged"):
            return f"patient {patient.status}"
        if patient.number_invalid_at is not None:
            return "number invalid"
        if quiet_hours_hold(self.settings, patient.timezone, now) is not None:
            return "defer"
        return None

    def _outgoing(self, s: Session, item: OutboxItem, message: Message,
                  patient: Patient | None, now: datetime,
                  answering_since: datetime | None = None) -> OutgoingMessage:
        public = self.settings.public_url

        def callback(route: str) -> str | None:
            # The row and route in the URL: a callback then tells which row it is about even
            # when the send's answer (its SID) never reached us. Twilio signs the URL with it.
            return (f"{public}/webhooks/twilio/status?outbox={item.id}&via={route}"
                    if public else None)

        if item.channel == "voice":
            return OutgoingMessage(to=item.to, channel="voice", body=message.body,
                                   status_callback=voice.status_url(public, item.id))
        template = self.settings.twilio.whatsapp_templates.get(item.kind)
        if item.channel == "whatsapp" and template is not None and (
                item.variant == "template"
                or not self._in_whatsapp_window(s, item, patient, now, answering_since)):
            values = self._template_values(s, message, patient)
            variables = {k: _fill(v, values) for k, v in template.variables.items()}
            if None not in variables.values():
                return OutgoingMessage(to=item.to, channel="whatsapp",
                                       content_sid=template.content_sid,
                                       content_variables=variables,
                                       status_callback=callback("template"))
            # Never a template with a "{placeholder}" left in it.
            fallback = self.settings.twilio.sms_fallback_for_whatsapp
            log.warning("outbox item %s: the %s template has a variable with no value here; "
                        "sending %s instead", item.id, item.kind,
                        "an SMS" if fallback else "free text")
            if fallback:
                _switch_to_sms(s, item, message, now, reason="template variable")
        return OutgoingMessage(to=item.to, channel=item.channel, body=message.body,
                               status_callback=callback(item.channel))

    def _in_whatsapp_window(self, s: Session, item: OutboxItem, patient: Patient | None,
                            now: datetime, answering_since: datetime | None) -> bool:
        """Whether this number wrote to us on WhatsApp within 24 hours (any other channel, an
        SMS say, does not open the window)."""
        if (answering_since is not None and patient is not None and item.to == patient.phone
                and patient.last_inbound_at is not None
                and patient.last_inbound_at >= answering_since):
            # The reply path, answering a message from this patient stored in this very
            # transaction: replies go back on the channel the message came on, so a WhatsApp
            # reply answers a WhatsApp message. No query on the hot path. (Were that ever
            # wrong, Twilio's 63016 turns the send into the template, see _record_failure.)
            return True
        return heard_on_whatsapp(s, item.to, now)

    def _template_values(self, s: Session, message: Message, patient: Patient | None) -> dict:
        """What a template's variables may use: the patient's (see ServiceContext
        .patient_values) and, for a care-team alert, its escalation's ref, level and patient."""
        if message.escalation_id is None:
            return dict(self._context_for(patient))
        esc = s.get(Escalation, message.escalation_id)
        if esc is None:
            return dict(self._context_for(patient))
        subject = esc.patient  # None for a red flag from a number that is not enrolled
        who = subject.name if subject else getattr(esc, "phone", None) or ""
        # The alert goes to the care team, at the clinic: its emergency number is the
        # clinic's, not the one where the patient lives.
        return {**self._context_for(subject), "ref": esc.ref, "level": esc.level.upper(),
                "patient": who[:30],
                "emergency_number": self.settings.clinic.emergency_number}

    def _sender(self, channel: str) -> str:
        t = self.settings.twilio
        if t.messaging_service_sid:
            return t.messaging_service_sid
        return f"{channel}:{(t.whatsapp_from if channel == 'whatsapp' else t.from_number) or ''}"

    # -- outcomes -----------------------------------------------------------------------------

    def _record_success(self, job: _Job, result: SendResult) -> None:
        self._successes.add((job, result))

    def _keep_unrecorded(self, batch: list[tuple[_Job, SendResult]]) -> None:
        """The carrier took these but their record could not be written: keep them to write
        before the next dispatch, so this process does not send them again meanwhile."""
        with self._unrecorded_lock:
            for job, result in batch:
                self._unrecorded[job.item_id] = (job, result)
            if self.unrecorded_retry_seconds is not None and self._retrier is None:
                self._retrier = threading.Thread(target=self._record_until_done, daemon=True,
                                                 name="record-retry")
                self._retrier.start()
        log.warning("could not record %d accepted send(s) (outbox items %s); kept to record "
                    "before the next dispatch", len(batch),
                    ", ".join(str(job.item_id) for job, _ in batch))

    def _record_until_done(self) -> None:
        while True:
            time.sleep(self.unrecorded_retry_seconds or UNRECORDED_RETRY_SECONDS)
            with self._unrecorded_lock:
                if not self._unrecorded:
                    self._retrier = None
                    return
            try:
                self.record_unrecorded()
            except Exception:
                log.exception("recording kept sends failed; trying again")

    def record_unrecorded(self) -> None:
        """Write the sends kept by _keep_unrecorded (no-op when there are none)."""
        if not self._unrecorded:
            return
        with self._unrecorded_lock:
            entries = list(self._unrecorded.values())
        if entries:
            log.warning("recording %d send(s) whose record failed earlier", len(entries))
            self._successes.add_all(entries)

    def _write_successes(self, batch: list[tuple[_Job, SendResult]]) -> None:
        """Record what the carrier accepted: one transaction for every send that finished while
        the previous batch was being written (group commit), so a busy worker pays for one
        commit per batch rather than one per message. A status callback that came before this
        is applied by the scheduler's next tick (status.apply_waiting_statuses)."""
        now = self.clock.now()
        items = [{"_id": job.item_id, "_attempts": job.attempts, "_now": now,
                  "_variant": "template" if job.outgoing.content_sid else None}
                 for job, _ in batch]
        messages = [{"_id": job.message_id, "_sid": result.provider_id,
                     "_status": advance_status("queued", result.status), "_now": now,
                     "_segments": result.segments or None}
                    for job, result in batch]
        with transaction(self.sessions) as s:
            conn = s.connection()
            marked = conn.execute(_MARK_SENT, items).rowcount  # one executemany per table
            conn.execute(_SET_PROVIDER_ID, messages)
            if conn.dialect.supports_sane_multi_rowcount and 0 <= marked < len(items):
                log.warning("%d of %d sends were recorded after their rows had been claimed "
                            "again", len(items) - marked, len(items))
        if self._unrecorded:
            with self._unrecorded_lock:
                for job, _ in batch:
                    self._unrecorded.pop(job.item_id, None)
        for job, result in batch:
            log.info("sent outbox item %s as %s", job.item_id, result.provider_id)

    def _may_retry(self, item: OutboxItem, now: datetime) -> bool:
        """After a transient failure. Emergency instructions, urgent replies, care-team alerts
        and staff replies keep being retried until `urgent_retry_minutes` after they were
        written (a carrier outage of minutes must not drop them); others `max_attempts` times."""
        o = self.settings.outbox
        if item.attempts < o.max_attempts:
            return True
        return item.priority <= PRIORITY_EMERGENCY and (
            now < item.created_at + timedelta(minutes=o.urgent_retry_minutes))

    def _record_failure(self, job: _Job, err: SendError) -> None:
        now = self.clock.now()
        o = self.settings.outbox
        with transaction(self.sessions) as s:
            item = s.get(OutboxItem, job.item_id, with_for_update=True)
            if item is None or item.status != "sending" or item.attempts != job.attempts:
                # Claimed again since (this job outlived its claim): the new claim decides.
                log.warning("outbox item %s: send failed (%s) after the row was claimed again; "
                            "left to that claim", job.item_id, err.kind)
                return
            message = s.get(Message, job.message_id)
            patient = s.get(Patient, item.patient_id) if item.patient_id else None
            item.claimed_until = None
            item.last_error = f"{err.kind}:{err.code or ''} {str(err)[:150]}"
            message.error_code = err.code
            message.updated_at = now
            log.warning("send failed for outbox item %s: %s code=%s", item.id, err.kind, err.code)
            if err.kind == "transient" and self._may_retry(item, now):
                exponent = min(max(item.attempts - 1, 0), 30)
                delay = min(o.max_backoff_seconds, o.backoff_seconds * 2 ** exponent)
                # Twilio's Retry-After is honoured, up to the longest backoff: a day's from a
                # proxy (or a mistake) would hold an emergency instruction a day.
                delay = max(delay, min(err.retry_after or 0, o.max_backoff_seconds))
                if err.unclear and item.priority > PRIORITY_REPLY and self.settings.public_url:
                    # Twilio may have taken it: give its status callback time to say so
                    # (see confirm_earlier_send) rather than send a check-in twice.
                    delay = max(delay, o.unclear_wait_seconds)
                    item.last_error = f"unclear:{err.code or ''} {str(err)[:150]}"
                item.status = "pending"
                item.next_attempt_at = now + timedelta(seconds=delay)
                message.status = "queued"
                return
            if err.kind == "outside_window" and item.variant != "template" and (
                item.kind in self.settings.twilio.whatsapp_templates
            ):
                item.status, item.variant, item.next_attempt_at = "pending", "template", now
                message.status = "queued"
                if item.priority <= PRIORITY_EMERGENCY and self._sms_copy_wanted(
                        s, item, message, patient):
                    # As when 63016 comes in a status callback (status.after_failure): an
                    # emergency or an alert does not wait to learn whether the template got
                    # through; its words go by SMS too, now.
                    queue_sms_copy(s, message, now, item, err.code)
                return
            if item.channel == "whatsapp" and item.variant == "template" \
                    and err.kind in ("outside_window", "permanent") \
                    and sms_copy_since(s, message):
                # The template beside an SMS copy (an emergency refused with 63016): the
                # person has the words already; a second SMS would only repeat them.
                item.status, message.status = "cancelled", "cancelled"
                audit(s, now, "system", "outbox.cancelled", "message", message.id,
                      reason="template refused; the SMS copy went", code=err.code)
                return
            if item.channel == "whatsapp" and self.settings.twilio.sms_fallback_for_whatsapp \
                    and err.kind in ("outside_window", "permanent"):
                _switch_to_sms(s, item, message, now, code=err.code)
                item.status, item.next_attempt_at = "pending", now
                message.status = "queued"
                return
            if err.kind == "opted_out" and item.kind == "stopped":
                # Our answer to STOP, refused because the carrier has already opted the number
                # out and sent its own confirmation: nothing for the team to follow up.
                item.status, message.status = "cancelled", "cancelled"
                item.last_error = "opted out: the carrier confirmed the STOP itself"
                audit(s, now, "system", "outbox.cancelled", "message", message.id,
                      reason="carrier opt-out confirmation", code=err.code)
                return
            # What the carrier says of a number the patient no longer has (changed while this
            # was being sent) is not about the patient's number now.
            current = patient is not None and item.to == patient.phone
            if patient is not None and not current and err.kind != "transient":
                # Refused for the old number (21211, 21610...): the words never reached the
                # patient; they go to the number they have now (_prepare re-addresses the row).
                log.info("outbox item %s: refused for a number the patient no longer has; "
                         "sent again to the new one", item.id)
                item.status, item.next_attempt_at = "pending", now
                message.status = "queued"
                return
            item.status = "failed"
            message.status = "failed"
            if current and err.kind == "opted_out" and patient.status != "opted_out":
                patient.status = "opted_out"
                audit(s, now, "system", "patient.opted_out", "patient", patient.id,
                      source="carrier", code=err.code)
            if current and err.kind == "invalid_number":
                patient.number_invalid_at = now
                audit(s, now, "system", "patient.number_invalid", "patient", patient.id,
                      code=err.code)
            audit(s, now, "system", "outbox.failed", "message", message.id,
                  kind=err.kind, code=err.code, attempts=item.attempts)
            if message.escalation_id is not None:
                alert_not_delivered(s, message.escalation_id, now, f"{err.kind} {err.code or ''}",
                                    message_id=message.id,
                                    chain_length=len(self.settings.care_team.escalation_chain))


    def _sms_copy_wanted(self, s: Session, item: OutboxItem, message: Message,
                         patient: Patient | None) -> bool:
        """Whether this WhatsApp row's words may also go by SMS, as status.after_failure
        decides it: the fallback on, to a patient (one opted out only for what STOP leaves
        them) or a care-team alert's contact, with words, and no SMS of them sent already."""
        addressee = item.patient_id is not None or message.escalation_id is not None
        reachable = (patient is None or patient.status != "opted_out"
                     or item.kind in SENT_WHEN_OPTED_OUT)
        return (self.settings.twilio.sms_fallback_for_whatsapp and addressee and reachable
                and bool(message.body) and not sms_copy_since(s, message))


def quiet_hours_hold(settings: Settings, zone: str, now: datetime) -> datetime | None:
    """Whether a routine message to a patient in `zone` (a check-in, a reminder, the welcome)
    claimed at `now` is held for quiet hours, as the dispatcher decides it: None when it is
    not quiet hours there (it goes now), else when they end, in UTC (it waits until then)."""
    q = settings.quiet_hours
    if not in_quiet_hours(now, zone, q.start, q.end):
        return None
    return quiet_hours_end(now, zone, q.start, q.end)


def _switch_to_sms(s: Session, item: OutboxItem, message: Message, now: datetime,
                   **details) -> None:
    """Send this WhatsApp row by SMS instead (sms_fallback_for_whatsapp)."""
    item.channel, item.variant = "sms", None
    message.channel = "sms"
    message.body = gsm7.to_gsm7(message.body or "")
    # Counted here as enqueue counts an SMS: a Messaging Service reports no segments on send.
    message.segments = gsm7.segments(message.body)
    message.updated_at = now
    audit(s, now, "system", "outbox.sms_fallback", "message", message.id, **details)


# Statements for recording sends, built once (Core: no ORM bookkeeping on this hot path).
_outbox = OutboxItem.__table__
_messages = Message.__table__
# Only while the row is still under the claim the job was sent on (attempts match): a job
# that outlived its claim must not overwrite what the new claim does.
_MARK_SENT = (
    update(_outbox).where(_outbox.c.id == bindparam("_id"),
                          _outbox.c.attempts == bindparam("_attempts"))
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


# A claim that ran out is taken over only this long after: a web worker that sent the row
# while the database was away writes its record within UNRECORDED_RETRY_SECONDS of the
# database coming back, and the sweep must not send the row again first.
RECLAIM_GRACE = timedelta(seconds=15)
UNRECORDED_RETRY_SECONDS = 5.0


def _claimable(now: datetime):
    return or_(
        and_(OutboxItem.status == "pending", OutboxItem.next_attempt_at <= now),
        and_(OutboxItem.status == "sending", OutboxItem.claimed_until < now - RECLAIM_GRACE),
    )


def _fill(template: str, values: dict) -> str | None:
    """The template variable filled in, or None when it names a value not given or comes out
    empty. Its whitespace is made single spaces: Twilio refuses (21656) a variable that is
    empty or holds a line break, a tab or more than four spaces in a row (a name typed so)."""
    try:
        filled = template.format(**values)
    except (KeyError, IndexError, AttributeError, ValueError):
        return None
    return " ".join(filled.split()) or None


def failed_messages(session: Session, limit: int = 200) -> list[tuple[OutboxItem, Message]]:
    """Outbox rows that ended failed, newest first: for the care team to follow up by phone."""
    rows = session.execute(
        select(OutboxItem, Message).join(Message, Message.id == OutboxItem.message_id)
        .where(OutboxItem.status == "failed")
        .order_by(OutboxItem.id.desc()).limit(limit)
    ).all()
    return [(item, message) for item, message in rows]
