"""Operators' commands: how the long-running ones stop, and what the others tell the person
running them at night."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def _env(tmp_path) -> dict[str, str]:
    """A migrated SQLite database of its own, the dev messenger, nothing from the caller's
    Twilio or config settings."""
    env = {**os.environ, "CHECKIN_DATABASE_URL": f"sqlite:///{tmp_path / 'ops.db'}",
           "CHECKIN_SPOOL_DIR": str(tmp_path / "spool"), "PYTHONUNBUFFERED": "1"}
    for var in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "CHECKIN_CONFIG", "CHECKIN_MESSENGER"):
        env.pop(var, None)
    subprocess.run([BIN / "checkin-bot", "db", "upgrade"], env=env, check=True,
                   capture_output=True)
    return env


def _wait_for(proc: subprocess.Popen, text: str, seconds: float = 30) -> str:
    """Lines of the process's output up to the first that holds `text`."""
    seen = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if text in line:
            return "".join(seen)
    proc.kill()
    pytest.fail(f"no {text!r} in the output: {''.join(seen)}{proc.communicate()[0]}")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_the_scheduler_process_stops_cleanly_on_sigterm_and_sigint(tmp_path, sig):
    """systemd, Docker and Procfile runners stop a process with SIGTERM (Ctrl-C is SIGINT):
    the scheduler lets its running tick finish, says it stopped, and exits 0, which a
    supervisor reads as a clean stop rather than a crash."""
    proc = subprocess.Popen([BIN / "checkin-bot", "scheduler"], env=_env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_for(proc, "scheduler running")
    proc.send_signal(sig)
    try:
        output = proc.communicate(timeout=15)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"still running 15 s after {sig.name}: {proc.communicate()[0]}")
    assert proc.returncode == 0, output
    assert f"scheduler stopped ({sig.name})" in output, output
    assert "Traceback" not in output, output


def test_sigterm_lets_the_running_tick_finish_and_starts_no_other(cli, monkeypatch, tmp_path,
                                                                 caplog):
    """The signal comes halfway through a tick: the tick runs to its end (its transactions
    are not cut short), no job starts after it, and the previous handlers are put back."""
    import logging
    import threading

    from bot import scheduler

    config = tmp_path / "fast.yaml"
    config.write_text("scheduler:\n  tick_seconds: 0.2\n")
    monkeypatch.setenv("CHECKIN_CONFIG", str(config))
    ticks: list[str] = []
    in_tick = threading.Event()

    def slow_tick(rt):
        ticks.append("start")
        in_tick.set()
        time.sleep(1.5)
        ticks.append("end")

    monkeypatch.setattr(scheduler, "tick", slow_tick)
    # SIGTERM once the tick has begun; and, if none began in two minutes (a machine far too
    # busy), anyway, so that the test fails on its asserts instead of waiting for ever.
    threading.Thread(target=lambda: (in_tick.wait(120), os.kill(os.getpid(), signal.SIGTERM)),
                     daemon=True).start()
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with caplog.at_level(logging.INFO, logger="bot.scheduler"):
        res = cli("scheduler")
    assert res.exit_code == 0, res.output
    assert ticks == ["start", "end"]
    time.sleep(0.5)  # two more tick intervals: nothing starts
    assert ticks == ["start", "end"]
    assert "scheduler stopped (SIGTERM)" in caplog.text
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_serve_stops_its_scheduler_cleanly_on_sigterm(tmp_path):
    from tests.test_scheduler import _free_port

    port = _free_port()
    proc = subprocess.Popen([BIN / "checkin-bot", "serve", "--port", str(port)],
                            env=_env(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    _wait_for(proc, f"checkin-bot on http://127.0.0.1:{port}")
    time.sleep(0.5)  # the server is listening
    proc.send_signal(signal.SIGTERM)
    try:
        output = proc.communicate(timeout=15)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"still running 15 s after SIGTERM: {proc.communicate()[0]}")
    assert proc.returncode == 0, output
    assert "scheduler stopped (SIGTERM)" in output, output
    assert "Traceback" not in output, output


@pytest.mark.parametrize(("args", "none"), [
    (["escalations", "list"], "no escalations"),
    (["escalations", "list", "--open"], "no open escalations"),
    (["schedules", "list"], "no active schedules"),
    (["schedules", "list", "--all"], "no schedules"),
    (["schedules", "list", "--phone", "+44 7700 900123"], "no active schedules for +447700900123"),
])
def test_an_empty_listing_says_so_instead_of_printing_nothing(cli, args, none):
    """Silence at night reads as "the command is broken" or "the wrong database"; with --json
    standard output stays empty (parseable) and the line goes to standard error."""
    cli("patients", "add", "--phone", "+447700900123", "--name", "Ada")
    res = cli(*args)
    assert res.exit_code == 0 and res.output == f"{none}\n"
    res = cli(*args, "--json")
    assert res.exit_code == 0 and res.stdout == "" and res.stderr == f"{none}\n"


def test_escalations_list_has_a_help_line(cli):
    res = cli("escalations", "--help")
    assert res.exit_code == 0
    assert "  list     Red-flag escalations, newest first: ref, patient, level," in res.output


def _red_flag(client, phone="+447700900123", name="Ada Lovelace"):
    client.post("/simulator/api/patients", json={"phone": phone, "name": name})
    client.post("/simulator/api/messages", json={"phone": phone,
                                                 "body": "my legs gave way and I wet myself"})


def test_ack_and_resolve_name_whose_red_flag_it_was(cli, client, rt):
    """A ref typed wrong by one letter can be another patient's open red flag: the command
    names the patient and number, as the ACK receipt by text does, so it shows at once."""
    from sqlalchemy import select

    from bot.store.models import Escalation

    _red_flag(client)
    with rt.transaction() as s:
        ref = s.scalars(select(Escalation.ref)).one()
    res = cli("escalations", "ack", ref.lower(), "--by", "Nurse Jo")
    assert res.exit_code == 0
    assert res.output == (f"{ref} acknowledged by Nurse Jo: Ada Lovelace, +447700900123; the "
                          "alert chain has stopped\n")
    res = cli("escalations", "ack", ref, "--by", "Nurse Kim")
    assert res.exit_code == 0
    assert res.output == (f"{ref} (Ada Lovelace, +447700900123) is acknowledged (by Nurse "
                          "Jo)\n")
    res = cli("escalations", "resolve", ref, "--note", "MRI booked", "--by", "Nurse Jo")
    assert res.exit_code == 0
    assert res.output == f"{ref} resolved: Ada Lovelace, +447700900123\n"


def test_schedules_remove_names_the_patient_and_what_stopped(cli):
    """Schedule ids are easy to mistype: the line says whose check-in or reminder stopped."""
    cli("patients", "add", "--phone", "+447700900123", "--name", "Ada Lovelace")
    added = cli("schedules", "add", "--phone", "+447700900123", "--flow", "reminder",
                "--at", "20:00", "--every-days", "1", "--text", "Take your dexamethasone")
    assert added.exit_code == 0, added.output
    schedule_id = added.output.split()[1]
    res = cli("schedules", "remove", schedule_id)
    assert res.exit_code == 0
    assert res.output == (f"schedule {schedule_id} removed: reminder every 1 days at 20:00 "
                          "(Europe/London) for Ada Lovelace, +447700900123\n")


def test_a_database_error_mid_command_is_one_line_and_exit_1_not_a_traceback(cli, client, rt):
    """A row held by another transaction past lock_timeout (PostgreSQL), or a database that
    fails under the command: the operator gets one line naming the reason, exit 1, and
    nothing half done, instead of a page of traceback at night."""
    from sqlalchemy import select, text

    from bot.store.db import make_engine
    from bot.store.models import Escalation

    _red_flag(client)
    with rt.transaction() as s:
        ref = s.scalars(select(Escalation.ref)).one()
    other = make_engine(rt.settings.database_url)
    with other.connect() as stuck:
        stuck.begin()
        if other.dialect.name == "postgresql":  # another process holds the alert's row
            stuck.execute(select(Escalation.id).with_for_update())
            reason = "canceling statement due to lock timeout"
        else:  # SQLite has one writer at a time and waits for it: a real failure instead
            stuck.execute(text("DROP TABLE audit_log"))
            stuck.commit()
            reason = "no such table: audit_log"
        res = cli("escalations", "ack", ref, "--by", "Nurse Jo")
        stuck.rollback()
    other.dispose()
    assert res.exit_code == 1, res.output
    assert res.output == (f"error: database: {reason} (the command did not complete: check, "
                          "then run it again)\n")
    with rt.transaction() as s:
        assert s.scalars(select(Escalation.status)).one() == "open"


def test_escalations_list_gives_the_number_to_call(cli, client, rt):
    """The on-call reads the list to call the patient: the number is on the line, enrolled or
    not (and is what `transcript --phone` takes)."""
    from sqlalchemy import select

    from bot.store.models import Escalation

    _red_flag(client)
    with rt.transaction() as s:
        esc = s.scalars(select(Escalation)).one()
        ref, created = esc.ref, esc.created_at
    res = cli("escalations", "list", "--open")
    assert res.exit_code == 0
    assert res.output == (f"   1 {ref} Ada Lovelace +447700900123 emergency "
                          f"bladder_dysfunction,limb_weakness open "
                          f"{created:%Y-%m-%d %H:%M} GMT - -\n")  # the clinic's zone


@pytest.mark.parametrize("command", [("patients", "list"), ("escalations", "list"),
                                     ("schedules", "list")])
def test_a_database_that_cannot_be_reached_is_exit_1_as_any_database_error(cli, monkeypatch,
                                                                            command):
    """Unreachable at start-up or failing mid-command, the operator's scripts see the same
    exit 1 ("try again later"); exit 2 stays for what they typed or configured wrong."""
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("CHECKIN_DATABASE_URL",
                       f"postgresql+psycopg://postgres@127.0.0.1:{port}/nothing")
    res = cli(*command)
    assert res.exit_code == 1, res.output
    assert res.output.startswith("error: database: cannot connect: ")
    assert len(res.output.strip().splitlines()) == 1


@pytest.mark.parametrize("port", ["99999", "65536", "0", "-1"])
def test_serve_refuses_a_port_out_of_range_rather_than_serve_on_another(cli, monkeypatch,
                                                                         port):
    """The resolver takes a port over 65535 modulo 65536: `serve --port 99999` said
    "checkin-bot on http://127.0.0.1:99999" and listened on 34463 (Twilio and the proxy
    pointed at nothing). Port 0 would listen on a random one."""
    started = []
    monkeypatch.setattr("flask.Flask.run", lambda self, **kw: started.append(kw.get("port")))
    res = cli("serve", "--port", port, "--no-scheduler")
    assert res.exit_code == 2, res.output
    assert "--port" in res.output and "1<=x<=65535" in res.output
    assert started == []
