"""Benchmark: signed inbound messages at the bot under gunicorn, next to a bare Flask endpoint.

For each database (SQLite, then PostgreSQL if reachable): enrol 1,000 consented patients, each
waiting on the check-in's first question; start gunicorn; send every patient's signed answer at a
steady 100 requests/s (open loop) and measure latency; then a closed-loop burst for throughput.
The same is done against a bare Flask endpoint under the same gunicorn settings (the ceiling), and
against a "floor" endpoint that does only what any bot keeping the issue's promises must do per
message (bench/apps.py: signature, one transaction for the message and its outbox row, the SDK
send, a second transaction for the SID). Afterwards the database is checked: every inbound
message stored once, every one answered once.

The CPU each closed-loop request costs is counted per process group (gunicorn's workers, the
PostgreSQL server, this load generator), up to the moment every reply has been sent: on a small
machine they share the same cores, and this shows where the time goes. Each database is measured
`--rounds` times from the same starting point; medians are printed, as the machine is noisy.

    .venv/bin/python bench/webhook.py [--patients 1000] [--rate 100] [--workers 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import psutil
import requests
from sqlalchemy import func, select, text
from twilio.request_validator import RequestValidator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.apps import floor_tables  # noqa: E402
from bot.clock import SystemClock  # noqa: E402
from bot.config import load_settings  # noqa: E402
from bot.messaging.dev import DevMessenger  # noqa: E402
from bot.runtime import build_runtime  # noqa: E402
from bot.services.conversations import start_flow  # noqa: E402
from bot.services.patients import Enrolment, enrol_patient  # noqa: E402
from bot.store.db import make_engine  # noqa: E402
from bot.store.migrate import upgrade  # noqa: E402
from bot.store.models import Message, OutboxItem, Patient  # noqa: E402

TOKEN = "bench-auth-token"
PUBLIC = "https://bench.example.org"
PATH = "/webhooks/twilio/message"
PG_URL = os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/checkin_bench")


def env_for(url: str) -> dict[str, str]:
    return {
        **os.environ,
        "CHECKIN_DATABASE_URL": url,
        "CHECKIN_MESSENGER": "twilio",
        "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
        "TWILIO_AUTH_TOKEN": TOKEN,
        "TWILIO_FROM": "+447700900999",
        "CHECKIN_PUBLIC_URL": PUBLIC,
        "PYTHONPATH": str(ROOT),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare(url: str, patients: int) -> list[str]:
    """A fresh schema with `patients` consented patients mid check-in; returns their numbers."""
    upgrade(url)
    engine = make_engine(url)
    tables = ("status_events", "answers", "outbox", "messages", "audit_log", "escalations",
              "schedules", "conversations", "flow_revisions", "patients", "heartbeats")
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            # TRUNCATE leaves no dead rows behind, so no autovacuum runs during the next round
            # (its CPU would be counted as the bot's).
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY"))
        else:
            for table in tables:
                conn.execute(text(f"DELETE FROM {table}"))
    settings = load_settings(env={"CHECKIN_DATABASE_URL": url})
    rt = build_runtime(settings, messenger=DevMessenger(echo=False), engine=engine,
                       dispatch_mode="none", clock=SystemClock())
    phones = [f"+447700{i + 910000:06d}" for i in range(patients)]
    now = rt.clock.now()
    with rt.transaction() as s:
        for phone in phones:
            p = enrol_patient(s, Enrolment(phone, "Bench Patient", "Europe/London"),
                              languages=settings.languages, now=now, actor="bench")
            p.consent_at = now
            p.last_inbound_at = now
            start_flow(s, rt.ctx, p, "checkin", now)
        s.execute(OutboxItem.__table__.update().values(status="sent"))
    rt.close()
    meta, _, _ = floor_tables()
    meta.drop_all(engine)
    meta.create_all(engine)
    if url.startswith("postgresql"):
        # Vacuum and analyse now, not in autovacuum's own time during the measurement.
        admin = make_engine(url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text("VACUUM ANALYZE"))
            # And write out now what the enrolment dirtied, rather than in a checkpoint that
            # lands in the middle of a measurement.
            conn.execute(text("CHECKPOINT"))
        admin.dispose()
    return phones


def start_gunicorn(app: str, url: str, workers: int, threads: int,
                   boot_wait: float = 5.0) -> tuple[subprocess.Popen, str]:
    port = free_port()
    # The app logs each send at INFO, as in production (the cost counts); the lines go to a
    # file, not between the figures.
    log_path = Path(tempfile.gettempdir()) / f"bench-gunicorn-{app}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--workers", str(workers), "--threads", str(threads),
         "--bind",
         f"127.0.0.1:{port}", "--log-level", "warning", f"bench.apps:{app}()"],
        env=env_for(url), cwd=ROOT, stderr=log_path.open("ab"))
    base = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            requests.post(base + "/nope", timeout=5)
            time.sleep(boot_wait)  # the first worker answers; give the others time to boot
            return proc, base
        except requests.RequestException:
            if proc.poll() is not None:
                raise RuntimeError(f"gunicorn ({app}) exited with {proc.returncode}; "
                                   f"see {log_path}") from None
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"gunicorn ({app}) did not start")


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def signed(phone: str, sid: str, body: str) -> tuple[dict, dict]:
    params = {"MessageSid": sid, "From": phone, "To": "+447700900999", "Body": body}
    sig = RequestValidator(TOKEN).compute_signature(PUBLIC + PATH, params)
    return params, {"X-Twilio-Signature": sig}


class Client:
    """A keep-alive HTTP client light enough not to eat the CPU the server needs."""

    def __init__(self, base: str) -> None:
        host, port = base.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=30)

    def post(self, params: dict, headers: dict) -> int:
        body = urlencode(params)
        self.conn.request("POST", PATH, body=body, headers={
            **headers, "Content-Type": "application/x-www-form-urlencoded"})
        response = self.conn.getresponse()
        response.read()
        return response.status


def open_loop(base: str, phones: list[str], rate: float, tag: str) -> list[float]:
    """Send one request per phone at `rate`/s regardless of answers; return latencies (s)."""
    latencies: list[float] = []
    errors = []
    lock = threading.Lock()
    local = threading.local()
    signed_requests = [signed(p, f"SM{tag}{i:028d}", "3") for i, p in enumerate(phones)]

    def one(params: dict, headers: dict) -> None:
        client = getattr(local, "client", None) or Client(base)
        local.client = client
        t0 = time.perf_counter()
        status = client.post(params, headers)
        dt = time.perf_counter() - t0
        with lock:
            latencies.append(dt)
            if status != 200:
                errors.append(status)

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=32) as pool:
        for i, (params, headers) in enumerate(signed_requests):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            pool.submit(one, params, headers)
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed: {sorted(set(errors))}")
    return latencies


def closed_loop(base: str, phones: list[str], concurrency: int, tag: str) -> float:
    """As fast as `concurrency` clients can go over `phones`; return requests/s."""
    work = iter([signed(p, f"SM{tag}{i:028d}", "help me understand")
                 for i, p in enumerate(phones)])
    lock = threading.Lock()
    failures = []

    def worker():
        client = Client(base)
        while True:
            with lock:
                nxt = next(work, None)
            if nxt is None:
                return
            status = client.post(*nxt)
            if status != 200:
                failures.append(status)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise RuntimeError(f"{len(failures)} requests failed: {sorted(set(failures))}")
    return len(phones) / (time.perf_counter() - t0)


def fsync_latency(directory: str, count: int = 300) -> str:
    """How long this disk takes to make 8 KiB durable (write + fdatasync), as each commit
    asks of PostgreSQL: a slow or stalling disk shows in the bot's p99 on PostgreSQL, and this
    says how much of it is the machine."""
    times = []
    fd, path = tempfile.mkstemp(dir=directory)
    try:
        block = os.urandom(8192)
        for i in range(count):
            t0 = time.perf_counter()
            os.pwrite(fd, block, (i % 16) * 8192)
            os.fdatasync(fd)
            times.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        os.unlink(path)
    return (f"disk: write + fdatasync of 8 KiB, {count} times: p50 {pct(times, 50):.1f} ms, "
            f"p99 {pct(times, 99):.1f} ms, max {max(times) * 1000:.1f} ms")


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))] * 1000


def check_database(url: str, expected_inbound: int) -> str:
    """Every inbound stored once and answered once, every reply sent."""
    time.sleep(2)  # let background sends finish
    engine = make_engine(url)
    with engine.connect() as c:
        inbound = c.scalar(select(func.count()).select_from(Message).where(
            Message.direction == "in"))
        distinct = c.scalar(select(func.count(func.distinct(Message.provider_id))).where(
            Message.direction == "in"))
        replies = c.scalar(select(func.count()).select_from(Message).where(
            Message.direction == "out", Message.kind != "welcome",
            Message.conversation_id.is_not(None) | (Message.kind == "received"),
            Message.created_at > c.scalar(select(func.max(Patient.created_at)))))
        unsent = c.scalar(select(func.count()).select_from(OutboxItem).where(
            OutboxItem.status != "sent"))
    engine.dispose()
    ok = inbound == distinct == expected_inbound and unsent == 0
    return (f"inbound stored {inbound} (distinct {distinct}, expected {expected_inbound}); "
            f"replies {replies}; outbox not sent {unsent}: {'OK' if ok else 'MISMATCH'}")


def check_floor(url: str, expected_inbound: int) -> str:
    time.sleep(2)
    _, inbox, outbox = floor_tables()
    engine = make_engine(url)
    with engine.connect() as c:
        inbound = c.scalar(select(func.count()).select_from(inbox))
        replies = c.scalar(select(func.count()).select_from(outbox))
        unsent = c.scalar(_unsent("floor"))
    engine.dispose()
    ok = inbound == replies == expected_inbound and unsent == 0
    return (f"inbound {inbound}, replies {replies}, not sent {unsent}: "
            f"{'OK' if ok else 'MISMATCH'}")


@dataclass
class Figures:
    p50: float  # ms, open loop
    p99: float  # ms, open loop
    throughput: float  # req/s, closed loop
    cpu: dict[str, float]  # ms of CPU per closed-loop request, by process group
    # ms from the bot writing a reply (with the inbound message) to its send being recorded,
    # open loop: p50, p99, max (the bot only)
    reply: tuple[float, float, float] | None = None


def _cpu_by_pid(processes) -> dict[int, float]:
    out = {}
    for p in processes:
        try:
            t = p.cpu_times()
            out[p.pid] = t.user + t.system
        except psutil.Error:
            pass
    return out


def cpu_snapshot(server_pid: int, url: str) -> dict[str, dict[int, float]]:
    """CPU seconds so far, per process, of the gunicorn tree, the database server's processes,
    and this load generator."""
    master = psutil.Process(server_pid)
    snap = {"web": _cpu_by_pid([master, *master.children(recursive=True)]),
            "load generator": {0: time.process_time()}}
    if url.startswith("postgresql"):
        snap["database"] = _cpu_by_pid(
            p for p in psutil.process_iter(["name"]) if (p.info["name"] or "") == "postgres")
    return snap


def cpu_used(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds between two snapshots, per process: one that started in between counts in
    full; one that ended in between (a database connection closed) is lost, so this can
    undercount, never go negative."""
    return sum(t - before.get(pid, 0.0) for pid, t in after.items())


def _unsent(app: str):
    if app == "floor":
        out = floor_tables()[2]
        return select(func.count()).select_from(out).where(out.c.status != "sent")
    return select(func.count()).select_from(OutboxItem).where(OutboxItem.status != "sent")


def reply_delays(url: str) -> tuple[float, float, float]:
    """Of the replies written since the enrolment, how long each waited to be sent (ms)."""
    engine = make_engine(url)
    try:
        with engine.connect() as c:
            enrolled = c.scalar(select(func.max(Patient.created_at)))
            rows = c.execute(select(OutboxItem.created_at, OutboxItem.sent_at).where(
                OutboxItem.created_at > enrolled, OutboxItem.sent_at.is_not(None))).all()
    finally:
        engine.dispose()
    delays = [(sent - created).total_seconds() for created, sent in rows]
    return pct(delays, 50), pct(delays, 99), max(delays) * 1000


def wait_until_sent(url: str, app: str, timeout: float = 60) -> None:
    """Until the outbox is empty of unsent rows, so the CPU counted covers the sends too."""
    engine = make_engine(url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            with engine.connect() as c:
                if not c.scalar(_unsent(app)):
                    return
            time.sleep(0.2)
    finally:
        engine.dispose()


def measure(app: str, url: str, phones: list[str], args, tag: str) -> Figures:
    proc, base = start_gunicorn(app, url, args.workers, args.threads)
    try:
        lat = open_loop(base, phones, args.rate, tag=f"{app[0]}o{tag}")
        if app != "bare":
            wait_until_sent(url, app)
        reply = reply_delays(url) if app == "checkin" else None
        before = cpu_snapshot(proc.pid, url)
        tput = closed_loop(base, phones, args.concurrency, tag=f"{app[0]}c{tag}")
        if app != "bare":
            wait_until_sent(url, app)
        after = cpu_snapshot(proc.pid, url)
    finally:
        stop(proc)
    cpu = {k: cpu_used(before[k], after[k]) * 1000 / len(phones) for k in before}
    return Figures(pct(lat, 50), pct(lat, 99), tput, cpu, reply)


def _line(app: str, f: Figures, rate: float, concurrency: int) -> str:
    cpu = ", ".join(f"{k} {v:.1f}" for k, v in f.cpu.items())
    return (f"  {app:8s} open loop {rate:.0f} req/s: p50 {f.p50:6.1f} ms  p99 {f.p99:6.1f} ms"
            f"  | closed loop x{concurrency}: {f.throughput:7.1f} req/s"
            f"  | CPU ms per request: {cpu}")


def run(label: str, url: str, args) -> None:
    rounds: list[tuple[Figures, Figures, Figures]] = []
    for r in range(args.rounds):
        print(f"{label}, round {r + 1} of {args.rounds}:", flush=True)
        phones = prepare(url, args.patients)  # the same starting point every round
        print(f"  {fsync_latency(args.disk_probe_dir)}", flush=True)
        bare = measure("bare", url, phones, args, tag=str(r))
        print(_line("bare", bare, args.rate, args.concurrency), flush=True)
        floor = measure("floor", url, phones, args, tag=str(r))
        print(_line("floor", floor, args.rate, args.concurrency), flush=True)
        print(f"  floor database check: {check_floor(url, 2 * len(phones))}", flush=True)
        checkin = measure("checkin", url, phones, args, tag=str(r))
        print(_line("checkin", checkin, args.rate, args.concurrency), flush=True)
        print("  checkin reply sent after (open loop): p50 {:.1f} ms  p99 {:.1f} ms  "
              "max {:.1f} ms".format(*checkin.reply), flush=True)
        print(f"  ratio checkin/bare throughput: {checkin.throughput / bare.throughput:.2f}"
              f"  (floor/bare {floor.throughput / bare.throughput:.2f})")
        print(f"  database check: {check_database(url, 2 * len(phones))}", flush=True)
        rounds.append((bare, floor, checkin))
    if len(rounds) > 1:
        def med(values):
            values = list(values)
            return (f"{statistics.median(values):.2f} (range {min(values):.2f}-"
                    f"{max(values):.2f})")
        checkins = [c for _, _, c in rounds]
        print(f"{label}, medians of {len(rounds)} rounds:")
        print(f"  bare throughput {med(b.throughput for b, _, _ in rounds)} req/s")
        print(f"  floor p99 {med(f.p99 for _, f, _ in rounds)} ms; "
              f"throughput {med(f.throughput for _, f, _ in rounds)} req/s; "
              f"ratio {med(f.throughput / b.throughput for b, f, _ in rounds)}")
        for key in rounds[0][1].cpu:
            print(f"  floor CPU ms per request, {key}: {med(f.cpu[key] for _, f, _ in rounds)}")
        print(f"  checkin p50 {med(c.p50 for c in checkins)} ms; "
              f"p99 {med(c.p99 for c in checkins)} ms; "
              f"throughput {med(c.throughput for c in checkins)} req/s")
        print(f"  ratio {med(c.throughput / b.throughput for b, _, c in rounds)}")
        print(f"  checkin reply sent after: p99 {med(c.reply[1] for c in checkins)} ms; "
              f"max {med(c.reply[2] for c in checkins)} ms")
        for key in checkins[0].cpu:
            print(f"  checkin CPU ms per request, {key}: {med(c.cpu[key] for c in checkins)}")


def main() -> None:
    # A SIGTERM (e.g. from `timeout`) unwinds through the finally blocks that stop gunicorn.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100.0)
    # One sync worker per core: this work is CPU-bound, and more workers only contend.
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--threads", type=int, default=1, help="gunicorn --threads (gthread)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3,
                        help="measure each database this many times; medians are printed")
    parser.add_argument("--disk-probe-dir", default=tempfile.gettempdir(),
                        help="a folder on the disk the database writes to (the fsync probe)")
    args = parser.parse_args()
    print(f"bench/webhook.py: {args.patients} patients, gunicorn --workers {args.workers} "
          f"--threads {args.threads}, "
          f"{os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        print("SQLite:")
        run("sqlite", f"sqlite:///{tmp}/bench.db", args)
    try:
        admin = make_engine(PG_URL.rsplit("/", 1)[0] + "/postgres",
                            isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            name = PG_URL.rsplit("/", 1)[1]
            if not c.scalar(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}):
                c.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
    except Exception as exc:  # no server here: say so rather than fail the whole run
        print(f"PostgreSQL: skipped ({type(exc).__name__}: cannot reach {PG_URL})")
        return
    print("PostgreSQL:")
    run("postgresql", PG_URL, args)


if __name__ == "__main__":
    main()
