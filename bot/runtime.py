"""The runtime: everything the web app, the scheduler and the CLI share, built from Settings."""

from __future__ import annotations

import gc
import json
import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from bot.clock import Clock, SystemClock
from bot.config import ConfigError, DatabaseUnreachable, Settings
from bot.messaging.base import Messenger
from bot.services.context import ServiceContext
from bot.services.dispatcher import UNRECORDED_RETRY_SECONDS, Dispatcher
from bot.services.spool import Spool, SpooledStatus
from bot.store.db import make_engine, make_session_factory, ping, transaction
from bot.texts import load_texts

log = logging.getLogger(__name__)
SPOOL_TRIES = 3  # a spooled file that fails this often with the database up is set aside


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    clock: Clock
    messenger: Messenger
    ctx: ServiceContext
    dispatcher: Dispatcher
    # "inline": send a reply before the request returns (tests); "background": right after, on
    # a worker thread; "none": leave it to the scheduler's dispatcher loop.
    dispatch_mode: str = "background"
    spool: Spool | None = None
    spool_retry_seconds: float = 5.0
    _pool: ThreadPoolExecutor | None = field(default=None, repr=False)
    _pool_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _replayer: threading.Thread | None = field(default=None, repr=False)
    _last_spool_look: float = field(default=float("-inf"), repr=False)
    _spool_failures: dict[str, int] = field(default_factory=dict, repr=False)
    _spool_senders: dict[str, str] = field(default_factory=dict, repr=False)  # file -> sender
    # False while the start-up database checks wait for a database that was down when this
    # web worker started (build_runtime's database_may_be_down): see database_ready
    database_checked: bool = True
    database_problem: str | None = None
    _check_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _next_check: float = field(default=float("-inf"), repr=False)

    def transaction(self) -> AbstractContextManager[Session]:
        return transaction(self.sessions)

    def dispatch_soon(self, outbox_ids: list[int], urgent_only: bool = False) -> None:
        """Send these outbox rows now; the scheduler's sweep is the safety net if this fails.
        `urgent_only`: routine rows are left to the sweep, which paces them (see
        Dispatcher.dispatch_ids)."""
        if not outbox_ids or self.dispatch_mode == "none":
            return
        if self.dispatch_mode == "inline":
            self.dispatcher.dispatch_ids(outbox_ids, urgent_only)
            return
        self._submit(self._dispatch_quietly, list(outbox_ids), urgent_only)

    def claim_on_write(self, session: Session) -> None:
        """Rows this transaction writes are sent right after it commits: write them claimed."""
        if self.dispatch_mode != "none":
            session.info["claim_until"] = self.clock.now() + timedelta(
                seconds=self.settings.outbox.claim_seconds)

    def claim_for_sending(self, session: Session, outbox_ids: list[int]) -> list:
        """In the request's own transaction: claim the rows it wrote, to send after commit."""
        if self.dispatch_mode == "none":
            return []
        return self.dispatcher.claim_new(session, outbox_ids)

    def send_claimed(self, jobs: list) -> None:
        """After commit: send what claim_for_sending took (a crash leaves them to the sweep)."""
        if not jobs:
            return
        if self.dispatch_mode == "inline":
            self.dispatcher.send_jobs(jobs)
            return
        self._submit(self._guarded, self.dispatcher.send_jobs, jobs)

    def _submit(self, fn, *args) -> None:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=self.settings.outbox.send_threads, thread_name_prefix="dispatch")
        self._pool.submit(fn, *args)

    def _dispatch_quietly(self, ids: list[int], urgent_only: bool = False) -> None:
        self._guarded(self.dispatcher.dispatch_ids, ids, urgent_only)

    @staticmethod
    def _guarded(fn, *args) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("immediate dispatch failed; the scheduler will retry")

    def database_ready(self) -> bool:
        """Whether the database passed the start-up checks (migrated, stored flow revisions
        loaded). Always, unless this web worker started while the database was down: then the
        checks run again (every few seconds at most) until they pass, and until then inbound
        messages go to the spool rather than to a database this process has not checked."""
        if self.database_checked:
            return True
        with self._check_lock:
            if self.database_checked:
                return True
            now = time.monotonic()
            if now < self._next_check:
                return False
            self._next_check = now + self.spool_retry_seconds
            try:
                _check_database(self.engine, self.ctx.flows)
            except DatabaseUnreachable as exc:
                self.database_problem = str(exc)
                return False
            except ConfigError as exc:
                if self.database_problem != str(exc):
                    log.error("%s; inbound messages wait in the spool until it is done", exc)
                self.database_problem = str(exc)
                return False
            self.database_checked, self.database_problem = True, None
            log.warning("the database answers and passed the start-up checks; the spool will "
                        "be replayed")
            return True

    # -- the inbound spool (bot/services/spool.py) ----------------------------------------------

    def replay_spool(self) -> int:
        """Put spooled inbound messages through the normal path, oldest first. Stops at the
        first one the database still refuses; returns how many went in.

        A file the database answers for but cannot take yet (an OperationalError: the
        patient's row held past lock_timeout, a statement timeout) is no file that "keeps
        failing": it waits, with its sender's later files (kept in order), for the next
        replay, however long, and is never set aside, where a red flag in it would never be
        escalated. Only other errors (a bug that the message trips every time) count towards
        setting a file aside."""
        from bot.services.receiving import store_and_handle

        done = 0
        if not self.database_ready():
            return done
        waiting: set[str] = set()  # senders (sids) whose older file the database refused
        for path in self.spool.pending() if self.spool else []:
            try:
                msg = Spool.load(path)
            except FileNotFoundError:
                continue  # another replayer (a second worker, the scheduler) took it
            except ValueError:
                log.error("spool file %s is unreadable; set aside as .bad", path.name)
                Spool.set_aside(path)
                continue
            key = f"status:{msg.sid}" if isinstance(msg, SpooledStatus) else msg.sender
            if key in waiting:
                continue  # after an older one of theirs that must go in first
            try:
                if isinstance(msg, SpooledStatus):
                    self._replay_status(msg)
                else:
                    store_and_handle(self, msg)
            except Exception as exc:
                if not ping(self.engine):
                    log.warning("spool replay paused: the database is still unavailable")
                    break
                if isinstance(exc, OperationalError):
                    log.warning("spooled file %s: the database cannot take it yet (%s); "
                                "kept for the next replay", path.name, type(exc.orig).__name__)
                    waiting.add(key)
                    continue
                # The database answers but this one file keeps failing: after a few tries,
                # keep it aside for a person (reported on /healthz) rather than let it hold
                # up every message behind it.
                tries = self._spool_failures[path.name] = \
                    self._spool_failures.get(path.name, 0) + 1
                log.exception("spooled file %s failed with the database up (try %d of %d)",
                              path.name, tries, SPOOL_TRIES)
                if tries >= SPOOL_TRIES:
                    Spool.set_aside(path)
                    self._spool_failures.pop(path.name, None)
                    log.error("spool file %s set aside as .bad for a person to read",
                              path.name)
                    continue
                break
            self._spool_failures.pop(path.name, None)
            Spool.remove(path)
            done += 1
        if done:
            log.warning("replayed %d spooled inbound message(s)", done)
        return done

    def replay_spooled_from(self, sender: str) -> None:
        """A new message from `sender` is about to be handled: first put in that sender's
        messages still waiting in the spool, oldest first, so that one person's messages are
        handled in the order they were sent (a STOP texted during an outage is not applied
        after the START texted just after it). Costs one look at the spool folder when it is
        empty. Raises, as store_and_handle does, when the database cannot take them: the new
        message then goes to the spool behind them."""
        from bot.services.receiving import store_and_handle

        paths = self.spool.pending_inbound() if self.spool else []
        if not paths:
            self._spool_senders.clear()
            return
        for path in paths:
            msg = None
            if path.name not in self._spool_senders:  # each file read once per process
                try:
                    msg = Spool.load(path)
                except (FileNotFoundError, ValueError):
                    continue  # taken by a replayer, or for the replayer to set aside
                self._spool_senders[path.name] = msg.sender
            if self._spool_senders[path.name] != sender:
                continue
            try:
                msg = msg or Spool.load(path)
            except (FileNotFoundError, ValueError):
                continue  # a replayer took it meanwhile
            try:
                store_and_handle(self, msg)
            except Exception:
                if not ping(self.engine):
                    raise
                # This one file fails with the database up: the replayer deals with it (and
                # sets it aside after a few tries); the new message need not wait.
                log.exception("spooled file %s failed before a newer message from its sender",
                              path.name)
                return
            Spool.remove(path)
            self._spool_senders.pop(path.name, None)

    def _replay_status(self, event: SpooledStatus) -> None:
        from bot.services.status import record_status

        with self.transaction() as session:
            ids = record_status(session, self.ctx, event.sid, event.status, event.code,
                                event.received_at, outbox_ref=event.outbox_ref)
        self.dispatch_soon(ids, urgent_only=True)  # routine copies: the paced sweep sends them

    def replay_spool_soon(self) -> None:
        """Cheap, after a message went in fine: look at the spool now and then (every few
        seconds at most) and replay what waits there, off the request's thread."""
        if self.spool is None or self.dispatch_mode == "inline":
            return
        now = time.monotonic()
        if now - self._last_spool_look < self.spool_retry_seconds:
            return
        self._last_spool_look = now
        if self.spool.pending():
            self.start_spool_replayer()

    def start_spool_replayer(self) -> None:
        """A thread that replays the spool every few seconds until it is empty. In "inline"
        mode (tests) and "none" (the scheduler ticks replay it) nothing starts here."""
        if self.dispatch_mode != "background" or self.spool is None:
            return
        with self._pool_lock:
            if self._replayer is not None and self._replayer.is_alive():
                return
            self._replayer = threading.Thread(target=self._replay_until_empty, daemon=True,
                                              name="spool-replay")
            self._replayer.start()

    def _replay_until_empty(self) -> None:
        while True:
            time.sleep(self.spool_retry_seconds)
            try:
                self.replay_spool()
            except Exception:
                log.exception("spool replay failed; trying again")
            # Decided under the lock start_spool_replayer takes: a file spooled just now
            # either is seen here or finds this thread gone and starts a new one.
            with self._pool_lock:
                if not self.spool.pending():
                    self._replayer = None
                    return

    def warm_up(self) -> None:
        """Ready a serving process before its first request: load what loads lazily (the SDK's
        API modules), open a database connection, then freeze what lives as long as the process.

        Why the freeze: the process holds hundreds of thousands of long-lived objects (flows,
        the red-flag vocabulary, SQLAlchemy's mappings, the SDK), and each of Python's full
        garbage collections walked them all again, 70-90 ms with a request waiting (seen in
        bench/webhook.py's open loop). Frozen, they are left out of every later collection.
        Only for serving processes built once: frozen objects are never freed.
        """
        warm = getattr(self.messenger, "warm_up", None)
        if warm is not None:
            warm()
        ping(self.engine)
        gc.collect()
        gc.freeze()

    def warm_vocabulary(self) -> None:
        """Compile every red-flag phrase now (for a runtime built with vocabulary "checked").
        Messages triaged meanwhile are triaged in full: what they need is compiled for them."""
        from bot.domain import triage

        try:
            triage.warm_up(self.ctx.vocabulary)
        except (ValueError, re.error) as exc:
            raise ConfigError(f"red flags: {exc}") from None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        try:  # sends whose record could not be written yet: a last try before they are lost
            self.dispatcher.record_unrecorded()
        except Exception:
            log.exception("could not record sends kept in memory; they may be sent again")
        self.engine.dispose()


def build_messenger(settings: Settings) -> Messenger:
    if settings.messenger_name == "twilio":
        from bot.messaging.twilio_messenger import TwilioMessenger

        t = settings.twilio
        return TwilioMessenger.from_credentials(
            t.account_sid, t.auth_token, from_number=t.from_number,
            whatsapp_from=t.whatsapp_from, messaging_service_sid=t.messaging_service_sid,
        )
    from bot.messaging.dev import DevMessenger

    return DevMessenger()


def load_flow_library(settings: Settings):
    """Load and validate every flow; a broken flow stops start-up with its error lines."""
    from bot.domain.flows import FlowError, load_flows

    try:
        library = load_flows(settings.flows_dir)
    except FlowError as exc:
        raise ConfigError(f"flows: {exc}") from None
    _check_room_for_settings(settings, library)
    return library


def _check_room_for_settings(settings: Settings, library) -> None:
    """Every clinic setting a flow text can name fits the room its variable declares: the
    linter checked the texts for 2 SMS with that many characters, and the bot sends the
    setting's value (a deployment's own flows folder may give less room than the settings take)."""
    from bot.services.context import clinic_values

    c = settings.clinic
    values = clinic_values(settings)
    sources = {  # variable -> (setting named in the error, every value the bot may send)
        "clinic_name": ("clinic.name", [values["clinic_name"]]),
        "clinic_phone": ("clinic.phone", [values["clinic_phone"]]),
        "hotline": ("clinic.acute_oncology_hotline", [values["hotline"]]),
        "emergency_number": ("clinic.emergency_number",
                             [c.emergency_number, *c.emergency_numbers_abroad.values()]),
        "crisis_line": ("clinic.crisis_line", [c.crisis_line, *c.crisis_lines_abroad.values()]),
    }
    for name, (setting, given) in sources.items():
        variable = library.variables.get(name)
        if variable is None:
            continue
        longest = max(given, key=len)
        if len(longest) > variable.max_length:
            abroad = "" if longest == given[0] else " (or its _abroad values)"
            raise ConfigError(
                f"flows: {settings.flows_dir}: variable {name} has max_length "
                f"{variable.max_length}, but {setting}{abroad} is {len(longest)} characters "
                f"({longest!r}); flow texts were checked for 2 SMS with {variable.max_length}: "
                "raise max_length in variables.yaml (and run `checkin-bot flows lint`) or shorten "
                "the setting")


VOCABULARY_MODES = ("warm", "checked", "lazy")


def _load_vocabulary(mode: str = "warm"):
    """The red-flag vocabulary at start-up (config/red_flags.yaml, once per process):

    - "warm": read, check and compile every phrase now, not on a patient's message (web
      workers, the scheduler);
    - "checked": read and check it now (a broken file stops start-up), its phrase regexes
      compiled later by warm_vocabulary or on first use (`serve`, `health`);
    - "lazy": nothing now; read and compiled on first use, if any (an operator's command that
      reads no patient's words: it answers in a second, not after ten of compiling).
    """
    from bot.domain import triage

    if mode == "lazy":
        return None  # None = the default, read on first use
    try:
        if mode == "warm":
            triage.warm_up()  # loads, compiles and caches the default vocabulary file
        else:
            triage._default_vocabulary()
        return None  # None = the cached default
    except (ValueError, re.error) as exc:
        raise ConfigError(f"red flags: {exc}") from None


def _vocabulary_in_use(vocabulary):
    from bot.domain import triage

    return vocabulary if vocabulary is not None else triage._default_vocabulary()


def _sqlite_file(engine: Engine) -> Path | None:
    """The SQLite database's file, as an absolute path; None for PostgreSQL or in memory."""
    url = engine.url
    name = url.database or ""
    if url.get_backend_name() != "sqlite" or not name or name == ":memory:" \
            or name.startswith("file:") or url.query.get("mode") == "memory":
        return None
    return Path(name).resolve()


def _check_database(engine: Engine, flows) -> None:
    """The schema is migrated, and no flow was edited without a new revision number.

    Every revision a conversation ever started on is stored; loading them back here lets old
    conversations finish on their own revision, and `register` refuses a file whose content
    differs from the stored copy of the same revision.
    """
    from sqlalchemy import inspect, select

    from bot.domain.flows import Flow, FlowError
    from bot.store.models import FlowRevision

    where = ""
    path = _sqlite_file(engine)
    if path is not None:
        # A relative path is from the current folder: run from elsewhere, the bot would find
        # (and SQLite would create) an empty file there, and say only "not migrated".
        if not path.exists():
            raise ConfigError(f"database: no SQLite file at {path}; run `checkin-bot db "
                              "upgrade` to create it, or set CHECKIN_DATABASE_URL (a relative "
                              "path is from the current folder)")
        where = f" (SQLite file {path})"
    try:
        tables = set(inspect(engine).get_table_names())
    except Exception as exc:
        detail = str(getattr(exc, "orig", exc)).splitlines()[0][:120]
        raise DatabaseUnreachable(f"database: cannot connect: {detail}{where}") from None
    if "flow_revisions" not in tables:
        raise ConfigError(f"database: not migrated; run `checkin-bot db upgrade`{where}")
    with engine.connect() as conn:
        rows = conn.execute(select(FlowRevision.definition)).scalars().all()
    try:
        for definition in rows:
            flows.register(Flow.from_json(json.dumps(definition)))
    except FlowError as exc:
        raise ConfigError(f"flows: {exc.errors[0]}") from None


def build_runtime(
    settings: Settings,
    *,
    clock: Clock | None = None,
    messenger: Messenger | None = None,
    engine: Engine | None = None,
    dispatch_mode: str = "background",
    vocabulary: str = "warm",
    database_may_be_down: bool = False,
) -> Runtime:
    """Wire the pieces. Raises ConfigError when flows or texts are broken, or the red-flag
    vocabulary (unless `vocabulary` is "lazy": see _load_vocabulary). A database that cannot
    be reached raises DatabaseUnreachable, unless `database_may_be_down` (a web worker: it must
    start and keep patients' messages in the spool; see Runtime.database_ready)."""
    if vocabulary not in VOCABULARY_MODES:
        raise ValueError(f"vocabulary: {vocabulary!r} is not one of {VOCABULARY_MODES}")
    texts = load_texts()
    flows = load_flow_library(settings)
    clock = clock or SystemClock()
    engine = engine or make_engine(settings.database_url,
                                  limits=settings.database_limits.as_limits())
    sessions = make_session_factory(engine)
    messenger = messenger or build_messenger(settings)
    # Before the vocabulary: compiling it takes seconds (minutes on a loaded host), and a
    # database that is not there or not migrated is said at once, not after all of that.
    problem = None
    try:
        _check_database(engine, flows)
    except DatabaseUnreachable as exc:
        if not database_may_be_down:
            raise
        problem = str(exc)
        log.error("%s; starting anyway: inbound messages wait in the spool until it answers",
                  exc)
    mode, vocabulary = vocabulary, _load_vocabulary(vocabulary)
    # every text a red flag names as its own reply, in each of the deployment's languages (not
    # for a command that reads no patient's words: it sends none of them)
    named = _vocabulary_in_use(vocabulary).reply_texts() if mode != "lazy" else None
    problems = texts.problems(named, settings.languages)
    if problems:
        raise ConfigError(problems[0])
    if settings.messenger_name == "twilio" and not settings.public_url:
        log.warning("CHECKIN_PUBLIC_URL is not set: sends carry no status callback, so failed "
                    "deliveries will not be seen (see /healthz)")
    ctx = ServiceContext(settings=settings, texts=texts, clock=clock, flows=flows,
                         vocabulary=vocabulary)
    dispatcher = Dispatcher(sessions, messenger, settings, clock, context_for=ctx.patient_values)
    if dispatch_mode == "background":  # web workers: no sweep here to write kept records
        dispatcher.unrecorded_retry_seconds = UNRECORDED_RETRY_SECONDS
    return Runtime(settings=settings, engine=engine, sessions=sessions, clock=clock,
                   messenger=messenger, ctx=ctx, dispatcher=dispatcher,
                   dispatch_mode=dispatch_mode, spool=Spool(settings.spool_dir),
                   database_checked=problem is None, database_problem=problem)
