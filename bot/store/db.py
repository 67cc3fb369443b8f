"""Engine and session factory. Built by the runtime, never at import time."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker


def normalise_url(url: str) -> str:
    """Plain postgresql:// URLs use psycopg 3, the driver this project installs."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    return url


def make_engine(url: str, *, limits: DatabaseLimits | None = None, **kwargs) -> Engine:
    """Create an engine; SQLite gets WAL, a busy timeout and foreign keys; PostgreSQL gets
    `limits` (see postgres_limits) when given."""
    url = normalise_url(url)
    # Statement parameters hold phone numbers and message bodies: keep them out of error
    # messages and tracebacks that reach the logs.
    kwargs.setdefault("hide_parameters", True)
    if url.startswith("sqlite"):
        kwargs.setdefault("connect_args", {"timeout": 30, "check_same_thread": False})
        engine = create_engine(url, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            # pysqlite's own transaction handling defers BEGIN; take control so that a
            # transaction that will write takes the lock up front (BEGIN IMMEDIATE) and two
            # writers can't both read-then-write.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            if ":memory:" not in url and "mode=memory" not in url:
                cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        lock_path = _lock_file_for(url)

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):
            if lock_path:
                _writer_lock(conn, lock_path).acquire()
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        if lock_path:
            @event.listens_for(engine, "commit")
            def _sqlite_commit(conn):
                # Commit now, so that the lock is released after it; SQLAlchemy's own
                # commit() that follows finds no open transaction and does nothing.
                conn.connection.dbapi_connection.commit()
                _writer_lock(conn, lock_path).release()

            @event.listens_for(engine, "rollback")
            def _sqlite_rollback(conn):
                conn.connection.dbapi_connection.rollback()
                _writer_lock(conn, lock_path).release()

            @event.listens_for(engine, "close")
            def _sqlite_close(dbapi_conn, record):
                lock = record.info.pop("writer_lock", None)
                if lock is not None:
                    lock.close()

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    if limits is not None:
        kwargs["connect_args"] = {**postgres_limits(limits), **kwargs.get("connect_args", {})}
    return create_engine(url, **kwargs)


@dataclass(frozen=True)
class DatabaseLimits:
    """How long a serving process waits on PostgreSQL before giving up, in seconds.

    A webhook has 15 s to answer Twilio. A database that does not answer (a host gone from
    the network, a row lock held by a stuck transaction) must fail well within that, so that the
    message still reaches the spool or is stored unprocessed, and an emergency is still
    answered, instead of the request hanging until Twilio gives up on it.
    """

    connect_timeout: float = 3
    lock_timeout: float = 3
    statement_timeout: float = 5


def postgres_limits(limits: DatabaseLimits) -> dict[str, object]:
    """libpq connection parameters for `limits`: the connect timeout; TCP keepalives and a TCP
    user timeout, so that a server gone silent mid-request is noticed in seconds, not the
    kernel's minutes; and the server's own lock and statement timeouts for every session."""
    return {
        "connect_timeout": max(2, round(limits.connect_timeout)),  # libpq's least is 2 s
        "keepalives": 1,
        "keepalives_idle": 4,
        "keepalives_interval": 1,
        "keepalives_count": 2,
        "tcp_user_timeout": int(limits.statement_timeout * 1000),
        "options": (f"-c lock_timeout={int(limits.lock_timeout * 1000)} "
                    f"-c statement_timeout={int(limits.statement_timeout * 1000)}"),
    }


class _WriterLock:
    """An exclusive flock held for the length of a SQLite transaction.

    SQLite's own busy handler sleeps in growing steps (up to 100 ms) while another process
    holds the write lock, which wrecks latency with several gunicorn workers. A kernel file lock
    wakes the next writer the moment the previous one commits.
    """

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        self.held = False

    def acquire(self) -> None:
        if not self.held:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            self.held = True

    def release(self) -> None:
        if self.held:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            self.held = False

    def close(self) -> None:
        self.release()
        os.close(self.fd)


def _writer_lock(conn, path: str) -> _WriterLock:
    """The lock that belongs to this pooled DBAPI connection (one file descriptor each)."""
    info = conn.connection.info
    lock = info.get("writer_lock")
    if lock is None:
        lock = info["writer_lock"] = _WriterLock(path)
    return lock


def _lock_file_for(url: str) -> str | None:
    """The lock file beside a SQLite database file; None for in-memory databases."""
    path = url.split("///", 1)[1] if "///" in url else ""
    path = path.split("?", 1)[0]
    if not path or path == ":memory:" or "mode=memory" in url:
        return None
    return path + ".lock"


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on error."""
    with factory() as session, session.begin():
        yield session


def ping(engine: Engine) -> bool:
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:
        return False


