"""The `checkin-bot` command line."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
import unicodedata

import click

from bot.config import ConfigError, DatabaseUnreachable, load_settings
from bot.logs import setup_logging


def _fail(message: str, code: int = 2) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _patient(s, number: str):
    """The patient with this (normalised) number; an unknown number ends the command, exit 1
    (as a missing thing: exit 2 is kept for bad input)."""
    from bot.services.patients import find_patient

    patient = find_patient(s, number)
    if patient is None:
        _fail(f"no patient with number {number}", 1)
    return patient


# Shown as escapes rather than printed: what a terminal acts on (line breaks, a carriage return,
# escape sequences that move the cursor or erase lines) and what reorders the text (bidi).
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
                  "\u2066\u2067\u2068\u2069")


def _shown(text: str | None) -> str:
    """Text someone else wrote (a patient's message) for one line of a listing: control and
    bidi characters are shown as escapes (\\n, \\r, \\x1b, \\u202e), so that a message can
    neither hide nor fake other lines on the operator's terminal."""
    return "".join(
        ch.encode("unicode_escape").decode("ascii")
        if unicodedata.category(ch) in ("Cc", "Zl", "Zp") or ch in _BIDI else ch
        for ch in text or "")


def _local(value, clinic: str, patient: str | None = None) -> str:
    """A time for the person reading a listing, in the clinic's zone (defaults.timezone) with
    its abbreviation: "2026-12-07 22:15 GMT". With a patient's zone other than the clinic's
    (a schedule's next run), theirs first and the clinic's in brackets, as the dashboard's
    patient page shows it: "2026-12-07 17:15 EST (2026-12-07 22:15 GMT)". `value` is an
    aware datetime or a UTC ISO string as --json gives it; none is "-"."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    if value is None:
        return "-"
    if isinstance(value, str):
        value = datetime.fromisoformat(value)

    def shown(zone: str) -> str:
        local = value.astimezone(ZoneInfo(zone))
        return f"{local:%Y-%m-%d %H:%M} {local.tzname()}"

    if patient is None or patient == clinic:
        return shown(clinic)
    return f"{shown(patient)} ({shown(clinic)})"


def _runtime(dispatch_mode: str = "inline", vocabulary: str = "lazy"):
    """The runtime for a command. The red-flag vocabulary is left uncompiled ("lazy": compiled
    on first use, if any): seconds of CPU that an operator's command reading no patient's
    words (escalations list / ack, patients add / list...) must not wait for. The processes
    that triage ask for it: the scheduler "warm", serve "checked" (see build_runtime)."""
    from bot.runtime import build_runtime

    try:
        return build_runtime(load_settings(), dispatch_mode=dispatch_mode,
                             vocabulary=vocabulary)
    except DatabaseUnreachable as exc:
        _fail(str(exc), 1)  # as a database error mid-command: try again later
    except ConfigError as exc:
        _fail(str(exc))


def _number(phone: str) -> str:
    """A number as the operator typed it, in E.164: one without its country code is read in
    the clinic's country (see patients.phone_region). Raises InvalidField."""
    from bot.services.patients import normalise_phone, phone_region

    try:
        settings = load_settings()
    except ConfigError as exc:
        _fail(str(exc))
    return normalise_phone(phone, phone_region(settings))


def _actor() -> str:
    return "cli:" + (os.environ.get("USER") or "operator")


def _person(option: str, value: str) -> str:
    """A name given on the command line for the record: not blank, no control characters."""
    from bot.services.patients import InvalidField, check_text

    if not value.strip():
        _fail(f"{option}: required: who is taking it")
    try:
        return check_text(option, value).strip()[:80]
    except InvalidField as exc:
        _fail(str(exc))


class _Commands(click.Group):
    """Every command: a database error under it (a row another process holds past
    lock_timeout, a connection lost, a statement timed out) is one line naming the reason,
    exit 1, not a traceback. Each command's writes are one transaction, rolled back."""

    def invoke(self, ctx: click.Context):
        from sqlalchemy.exc import OperationalError

        try:
            return super().invoke(ctx)
        except OperationalError as exc:
            logging.getLogger(__name__).debug("database error", exc_info=True)  # -v shows it
            reason = (str(exc.orig or exc).strip().splitlines() or ["unknown error"])[0]
            _fail(f"database: {reason} (the command did not complete: check, then run it "
                  "again)", 1)


@click.group(cls=_Commands)
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def main(verbose: bool) -> None:
    """SMS and WhatsApp check-ins for people living with spinal cancer."""
    setup_logging(logging.DEBUG if verbose else logging.INFO)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--reload", is_flag=True, help="Restart on code changes (development).")
@click.option("--no-scheduler", is_flag=True,
              help="Don't run the scheduler in this process (run `checkin-bot scheduler`).")
def serve(host: str, port: int, reload: bool, no_scheduler: bool) -> None:
    """Run the web app (webhooks, API, simulator) with the scheduler in-process."""
    from bot.scheduler import build_scheduler, stop_gracefully
    from bot.web.app import create_app

    # The vocabulary is read and checked now (a broken red_flags.yaml stops serve here); its
    # phrase regexes are compiled on a thread once serving, see below.
    rt = _runtime(dispatch_mode="background", vocabulary="checked")
    try:
        app = create_app(rt)
    except ConfigError as exc:
        _fail(str(exc))
    # Under the reloader the parent only watches files; the child (WERKZEUG_RUN_MAIN=true)
    # serves. Start the scheduler in exactly one of them.
    serving_process = not reload or os.environ.get("WERKZEUG_RUN_MAIN") == "true"
    stopped_by: list[str] = []

    def interrupt(signum, _frame) -> None:
        """SIGTERM stops the server as Ctrl-C does, so that the scheduler stops gracefully
        and the process exits 0 (under --reload, werkzeug's own SIGTERM handler replaces this
        one, to the same effect). Another signal while the tick finishes is ignored (SIGKILL
        still stops it at once)."""
        stopped_by.append(signal.Signals(signum).name)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
        raise KeyboardInterrupt

    sched = None
    try:
        if serving_process:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, interrupt)
        if serving_process and not no_scheduler:
            sched = build_scheduler(rt, blocking=False)
            sched.start()
            click.echo(f"scheduler started in process {os.getpid()}")
        if serving_process:
            rt.warm_up()
            _warm_vocabulary_meanwhile(rt)
            click.echo(f"checkin-bot on http://{host}:{port} (messenger: {rt.messenger.name})")
            if rt.messenger.name == "dev":
                click.echo(f"phone simulator: http://{host}:{port}/simulator")
        app.run(host=host, port=port, use_reloader=reload, threaded=True)
    except KeyboardInterrupt:  # werkzeug's server ends on it too, and returns
        pass
    finally:
        if sched is not None and sched.running:  # the running tick finishes
            stop_gracefully(sched, stopped_by[0] if stopped_by else "server stopped")
        rt.close()  # and the sends in flight


def _warm_vocabulary_meanwhile(rt) -> None:
    """Compile the red-flag phrases on a thread while serve already answers (/healthz at once,
    not after seconds of compiling). A webhook that comes meanwhile is triaged in full: the
    phrases it needs are compiled for it first (bot.domain.triage), it is only slower."""
    def warm() -> None:
        started = time.monotonic()
        try:
            rt.warm_vocabulary()
        except Exception:  # checked at start-up; a message compiles what it needs anyway
            logging.getLogger(__name__).exception("red-flag vocabulary warm-up failed")
            return
        logging.getLogger(__name__).info("red-flag vocabulary compiled in %.1f s",
                                         time.monotonic() - started)

    threading.Thread(target=warm, daemon=True, name="vocabulary-warm-up").start()


@main.command()
def scheduler() -> None:
    """Run the scheduler as its own process (production: exactly one, or more on PostgreSQL).

    SIGTERM (systemd, Docker, Procfile runners) or Ctrl-C stops it: no new job starts, the
    running tick finishes (allow 30 s), then it exits 0."""
    from bot.scheduler import run_until_signalled

    rt = _runtime(dispatch_mode="none", vocabulary="warm")  # triages spooled and late replies
    try:  # SIGTERM or Ctrl-C: the running tick finishes, then exit 0
        run_until_signalled(rt, started=lambda: click.echo(
            "checkin-bot scheduler running (SIGTERM or Ctrl-C stops it once the running tick "
            "has finished)"))
    finally:
        rt.close()


@main.command()
def health() -> None:
    """Print the on-call checks as JSON; exit 0 if all is well, 1 if degraded, 2 if down."""
    from bot.runtime import build_runtime
    from bot.services import health as checks
    from bot.services.spool import Spool
    from bot.store.db import ping

    settings = None

    def down(problem: str) -> None:
        # Still JSON on stdout, as for ok and degraded: this is when a cron job reads it most.
        # Whatever stops the bot from starting (a bad setting, a database that is not migrated,
        # a broken flow) is "down" too. The spool is counted when the settings say where it is.
        body = {"status": "down", "problems": [problem]}
        if settings is not None:
            body["spooled_inbound"] = len(Spool(settings.spool_dir).pending_inbound())
        click.echo(json.dumps(body, indent=2))
        sys.exit(2)

    try:
        settings = load_settings()
    except ConfigError as exc:
        down(str(exc))
    try:
        # The vocabulary read and checked (a broken red_flags.yaml stops the web app and the
        # scheduler: down), not compiled (seconds of CPU that a cron check need not spend).
        rt = build_runtime(settings, dispatch_mode="inline", vocabulary="checked")
    except ConfigError as exc:
        down(str(exc))
    try:
        if not ping(rt.engine):
            down("database: unavailable")
        with rt.transaction() as s:
            body = checks.report(s, rt.settings, rt.clock.now(), len(rt.spool.pending_inbound()),
                                 rt.spool.set_aside_count())
    finally:
        rt.close()
    click.echo(json.dumps(body, indent=2))
    sys.exit(0 if body["status"] == "ok" else 1)


@main.group()
def db() -> None:
    """Database commands."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply every migration (creates the SQLite file if needed)."""
    from sqlalchemy.exc import OperationalError

    from bot.store.migrate import upgrade

    try:
        settings = load_settings()
    except ConfigError as exc:
        _fail(str(exc))
    try:
        before, after = upgrade(settings.database_url)
    except OperationalError as exc:
        # Unreachable, refused, a missing database: one line (the driver's first), no
        # traceback; the URL's password is not in the driver's message.
        reason = str(exc.orig or exc).strip().splitlines()[0]
        _fail(f"database: cannot reach it, nothing migrated: {reason}", 1)
    if before == after:
        click.echo(f"database is up to date (revision {after})")
    else:
        click.echo(f"database upgraded: {before or 'empty'} -> {after}")


@main.group()
def patients() -> None:
    """Enrol and list patients."""


@patients.command("add")
@click.option("--phone", required=True)
@click.option("--name", required=True)
@click.option("--timezone", "zone", default=None,
              help="IANA Area/Location zone, e.g. Europe/London (not GMT or UTC).")
@click.option("--channel", default=None,
              help="sms or whatsapp. [default: sms; whatsapp for a whatsapp:+... number]")
@click.option("--language", default=None)
def patients_add(phone, name, zone, channel, language) -> None:
    """Enrol a patient and send the welcome (consent) message."""
    from bot.services.context import emergency_number_warning
    from bot.services.patients import Enrolment, InvalidField, onboard_patient

    rt = _runtime()
    s_ = rt.settings
    e = Enrolment(phone=phone, name=name, timezone=zone or s_.defaults.timezone,
                  channel=channel, language=language or s_.defaults.language)
    try:
        with rt.transaction() as s:
            patient, ids = onboard_patient(s, rt.ctx, e, rt.clock.now(), actor=_actor())
            line = f"enrolled {patient.phone} {patient.name} (id {patient.id})"
            warning = emergency_number_warning(s_, patient.timezone)
    except InvalidField as exc:
        _fail(str(exc))
    rt.dispatch_soon(ids)
    if warning:
        click.echo(f"warning: {warning}", err=True)
    click.echo(line)


@patients.command("update")
@click.option("--phone", required=True, help="The patient's number (finds the patient).")
@click.option("--new-phone", default=None,
              help="The patient's new number; messages not sent yet go to it.")
@click.option("--name", default=None)
@click.option("--timezone", "zone", default=None,
              help="IANA Area/Location zone, e.g. Europe/London (not GMT or UTC).")
@click.option("--channel", default=None, help="sms or whatsapp.")
@click.option("--language", default=None)
@click.option("--pause/--resume", "pause", default=None,
              help="Withhold routine messages (check-ins, reminders), or send them again.")
@click.option("--readmit", is_flag=True,
              help="Re-admit a discharged patient (status active; set new schedules after).")
def patients_update(phone, new_phone, name, zone, channel, language, pause, readmit) -> None:
    """Correct a patient's details or number, or pause or resume their routine messages
    (audited).

    A patient who opted out (texted STOP) cannot be paused or resumed: only they can opt
    back in, by texting START. A discharged patient cannot be paused or resumed either:
    --readmit makes them active again (their old schedules stay stopped)."""
    from bot.services.patients import (
        DISCHARGED,
        InvalidField,
        PatientChanges,
        StatusRefused,
        refuse_resume,
        update_patient,
    )

    if readmit and pause is not None:
        _fail("--readmit cannot go with --pause or --resume")
    status = "active" if readmit else None if pause is None else (
        "paused" if pause else "active")
    changes = PatientChanges(phone=new_phone, name=name, timezone=zone, channel=channel,
                             language=language, status=status)
    if changes.empty():
        _fail("nothing to change: give --new-phone, --name, --timezone, --channel, --language, "
              "--pause, --resume or --readmit")
    try:
        number = _number(phone)
    except InvalidField as exc:
        _fail(str(exc))
    rt = _runtime()
    try:
        with rt.transaction() as s:
            patient = _patient(s, number)
            if pause is False:
                refuse_resume(patient)
            if readmit and patient.status != DISCHARGED:
                raise StatusRefused(f"{patient.phone} is not discharged (status "
                                    f"{patient.status}): there is nothing to re-admit")
            result = update_patient(s, patient, changes, ctx=rt.ctx,
                                    now=rt.clock.now(), actor=_actor())
            lines = [f"{key}: {old} -> {new}" for key, (old, new) in result.changes.items()]
            clinic, zone = rt.settings.defaults.timezone, patient.timezone
            lines += [f"schedule {i}: next {_local(old, clinic, zone)} -> "
                      f"{_local(new, clinic, zone)}" for i, old, new in result.moved]
            lines += [f"message {i} held for quiet hours: {_local(old, clinic)} -> "
                      f"{_local(new, clinic)}" for i, old, new in result.retimed]
            if result.readdressed:
                lines.append(f"{len(result.readdressed)} message(s) not sent yet now go to "
                             "the new number")
            head = (f"updated {patient.phone} (id {patient.id})" if result.changes
                    else f"nothing changed for {patient.phone} (id {patient.id})")
    except InvalidField as exc:
        _fail(str(exc))
    except StatusRefused as exc:
        _fail(str(exc), 1)
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(head)
    for line in lines:
        click.echo(f"  {line}")


@patients.command("discharge")
@click.option("--phone", required=True, help="The patient's number (finds the patient).")
@click.option("--reason", required=True,
              help="Why the check-ins end: discharged, transferred, hospice care, died "
                   "(1 to 200 characters; kept in the audit record).")
def patients_discharge(phone: str, reason: str) -> None:
    """End a patient's check-ins for good (audited with the reason): their schedules stop,
    open conversations end and routine messages not sent yet are cancelled.

    A red flag they text still gets its instruction and alerts the care team; any other
    text is listed to read and answered once with the clinic's number. Re-admit with
    `patients update --readmit`."""
    from bot.services.patients import (
        AlreadyDischarged,
        InvalidField,
        check_reason,
        discharge_patient,
    )

    try:
        number = _number(phone)
        check_reason(reason)
    except InvalidField as exc:
        _fail(str(exc))
    rt = _runtime()
    try:
        with rt.transaction() as s:
            patient = _patient(s, number)
            result = discharge_patient(s, patient, reason, now=rt.clock.now(), actor=_actor())
            line = (f"discharged {patient.phone} (id {patient.id}): "
                    f"{len(result.schedules)} schedule(s) stopped, "
                    f"{len(result.conversations)} conversation(s) ended, "
                    f"{len(result.cancelled)} message(s) not sent cancelled")
            if patient.status == "opted_out":
                line += "; they opted out (STOP) and stay so"
    except InvalidField as exc:
        _fail(str(exc))
    except AlreadyDischarged as exc:
        _fail(str(exc), 1)
    click.echo(line)


@patients.command("list")
@click.option("--json", "as_json", is_flag=True)
def patients_list(as_json: bool) -> None:
    """One line per patient: id, E.164 number, status, consent, channel, name."""
    from bot.services.patients import list_patients
    from bot.web.serialize import patient_json

    rt = _runtime()
    with rt.transaction() as s:
        rows = [patient_json(p) for p in list_patients(s)]

    def line(p: dict) -> str:
        consent = "consented" if p["consent_at"] else "no-consent"
        return (f"{p['id']:>5}  {p['phone']:<16} {p['status']:<10} {consent:<10} "
                f"{p['channel']:<8} {_shown(p['name'])}")

    _emit(rows, as_json, "no patients", line)


@main.group()
def staff() -> None:
    """Staff accounts: each coordinator signs in to the dashboard, and uses the API, as
    themselves."""


def _new_password(from_stdin: bool) -> str:
    """The password, from a prompt (twice, not shown) or one line of standard input; checked
    here so that nothing is stored if it is refused."""
    from bot.services.patients import InvalidField
    from bot.services.staff import check_password

    if from_stdin:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True,
                                err=True)
    try:
        return check_password(password)
    except InvalidField as exc:
        _fail(str(exc))


def _warn_without_a_key(rt) -> None:
    settings = rt.settings
    if settings.messenger_name != "dev" and not (settings.admin_token or settings.secret_key):
        click.echo("warning: with the Twilio messenger, the web app will not start while staff "
                   "accounts exist and neither CHECKIN_SECRET_KEY nor CHECKIN_ADMIN_TOKEN is "
                   "set", err=True)


@staff.command("add")
@click.option("--username", required=True, help="3-32 lower-case letters, digits, . _ -")
@click.option("--name", required=True, help="The name the dashboard shows and records.")
@click.option("--password-stdin", is_flag=True,
              help="Read the password from one line of standard input (for scripts).")
def staff_add(username: str, name: str, password_stdin: bool) -> None:
    """Add an account (audited). The password is asked for twice, or read from stdin."""
    from bot.services.patients import InvalidField
    from bot.services.staff import add_staff, check_display_name, check_username

    try:  # before asking for a password that would be thrown away
        check_username(username)
        check_display_name(name)
    except InvalidField as exc:
        _fail(str(exc))
    password = _new_password(password_stdin)
    rt = _runtime()
    try:
        with rt.transaction() as s:
            account = add_staff(s, username, name, password, rt.clock.now(), actor=_actor())
            line = f"added {account.username} ({account.display_name})"
    except InvalidField as exc:
        _fail(str(exc))
    click.echo(line)
    _warn_without_a_key(rt)


@staff.command("list")
def staff_list() -> None:
    """One line per account: username, active or disabled, last sign-in, name."""
    from bot.services.staff import list_staff

    rt = _runtime()
    with rt.transaction() as s:
        rows = [(a.username, a.display_name, a.active, a.last_login_at) for a in list_staff(s)]
    if not rows:
        click.echo("none: no staff accounts")
    clinic = rt.settings.defaults.timezone
    for username, name, active, last in rows:
        when = _local(last, clinic) if last else "never signed in"
        click.echo(f"{username:<32} {'active' if active else 'disabled':<8} {when:<20} {name}")


def _set_active(username: str, active: bool) -> None:
    from bot.services.staff import StaffNotFound, set_active

    rt = _runtime()
    try:
        with rt.transaction() as s:
            account, changed = set_active(s, username, active, rt.clock.now(), actor=_actor())
            state = "enabled" if active else "disabled"
            line = f"{account.username} {state}" if changed else \
                f"{account.username} was already {state}: nothing changed"
    except StaffNotFound:
        _fail(f"no staff account {username!r}", 1)
    click.echo(line)


@staff.command("disable")
@click.argument("username")
def staff_disable(username: str) -> None:
    """Disable an account: it cannot sign in, and its open sessions end (audited)."""
    _set_active(username, False)


@staff.command("enable")
@click.argument("username")
def staff_enable(username: str) -> None:
    """Enable an account again (audited)."""
    _set_active(username, True)


@staff.command("password")
@click.argument("username")
@click.option("--password-stdin", is_flag=True,
              help="Read the new password from one line of standard input (for scripts).")
def staff_password(username: str, password_stdin: bool) -> None:
    """Reset an account's password; its open sessions end (audited)."""
    from bot.services.staff import StaffNotFound, find_staff, set_password

    rt = _runtime()
    with rt.transaction() as s:  # say so before asking for a password
        if find_staff(s, username) is None:
            _fail(f"no staff account {username!r}", 1)
    password = _new_password(password_stdin)
    try:
        with rt.transaction() as s:
            set_password(s, username, password, rt.clock.now(), actor=_actor())
    except StaffNotFound:
        _fail(f"no staff account {username!r}", 1)
    click.echo(f"password of {username} changed; its dashboard sessions have ended")


@staff.group("token")
def staff_token() -> None:
    """API tokens: a staff account's own bearer tokens for the JSON API."""


@staff_token.command("add")
@click.argument("username")
@click.option("--label", default=None, help='Where it is used, e.g. "laptop" (at most 60 '
                                            'characters).')
def staff_token_add(username: str, label: str | None) -> None:
    """Make an API token for an account (audited). The token is printed once, alone on
    standard output; only its hash is kept."""
    from bot.services.patients import InvalidField
    from bot.services.staff import StaffNotFound, add_token

    rt = _runtime()
    try:
        with rt.transaction() as s:
            row, token = add_token(s, username, label, rt.clock.now(), actor=_actor())
            token_id, label = row.id, row.label
    except StaffNotFound:
        _fail(f"no staff account {username!r}", 1)
    except InvalidField as exc:
        _fail(str(exc))
    click.echo(f"API token {token_id} for {username}" + (f" ({label})" if label else "")
               + ": shown this once, keep it now (Authorization: Bearer <token>)", err=True)
    click.echo(token)


@staff_token.command("list")
@click.argument("username")
def staff_token_list(username: str) -> None:
    """The account's API tokens: id, live or revoked, created, last used, label (never the
    token)."""
    from bot.services.staff import StaffNotFound, list_tokens

    rt = _runtime()
    try:
        with rt.transaction() as s:
            rows = [(t.id, t.label, t.created_at, t.last_used_at, t.revoked_at)
                    for t in list_tokens(s, username)]
    except StaffNotFound:
        _fail(f"no staff account {username!r}", 1)
    if not rows:
        click.echo(f"none: {username} has no API tokens")
    clinic = rt.settings.defaults.timezone
    for token_id, label, created, used, revoked in rows:
        state = f"revoked {_local(revoked, clinic)}" if revoked else "live"
        click.echo(f"{token_id:>5}  {state:<28} created {_local(created, clinic)}  last used "
                   f"{_local(used, clinic) if used else 'never':<20}  {label or '-'}")


@staff_token.command("revoke")
@click.argument("username")
@click.argument("token_id", metavar="ID", type=int)
def staff_token_revoke(username: str, token_id: int) -> None:
    """Revoke one of the account's API tokens: it stops working at once (audited)."""
    from bot.services.staff import StaffNotFound, TokenNotFound, revoke_token

    rt = _runtime()
    try:
        with rt.transaction() as s:
            _, changed = revoke_token(s, username, token_id, rt.clock.now(), actor=_actor())
    except StaffNotFound:
        _fail(f"no staff account {username!r}", 1)
    except TokenNotFound:
        _fail(f"{username} has no API token {token_id}", 1)
    click.echo(f"API token {token_id} of {username} revoked" if changed else
               f"API token {token_id} of {username} was already revoked: nothing changed")


@main.command()
@click.option("--phone", required=True)
@click.option("--json", "as_json", is_flag=True, help="A JSON array (default: readable text).")
def transcript(phone: str, as_json: bool) -> None:
    """Every message to and from a number, oldest first."""
    from sqlalchemy import select

    from bot.services.patients import InvalidField, find_patient
    from bot.store.models import Message
    from bot.web.serialize import message_json

    try:
        number = _number(phone)
    except InvalidField as exc:
        _fail(str(exc))
    rt = _runtime()
    with rt.transaction() as s:
        rows = [message_json(m) for m in s.scalars(
            select(Message).where(Message.address == number).order_by(Message.id))]
        enrolled = find_patient(s, number) is not None
    if not rows and not enrolled:  # a typo, or the wrong database: not "no messages"
        _fail(f"no patient with number {number}, and no messages to or from it", 1)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no messages to or from {number}")
    clinic = rt.settings.defaults.timezone
    for m in rows:
        arrow = "<-" if m["direction"] == "in" else "->"
        media = "".join(f" [{a['content_type'] or 'attachment'}: {a['url']}]" for a in m["media"])
        click.echo(f"{_local(m['created_at'], clinic)} {arrow} [{m['status']}] {_shown(m['body'])}"
                   f"{_shown(media)}")


@main.group()
def escalations() -> None:
    """See and act on red-flag escalations."""


def _whose(s, esc) -> str:
    """Whose red flag: "Ada Lovelace, +447700900123" ("not enrolled, +44..." for a number
    that is not), so that a mistyped ref that hit another open alert shows at once."""
    from bot.store.models import Patient

    patient = s.get(Patient, esc.patient_id) if esc.patient_id else None
    if patient is None:
        return f"not enrolled, {esc.phone}"
    return f"{_shown(patient.name)}, {patient.phone}"


@escalations.command("list")
@click.option("--open", "open_only", is_flag=True, help="Only those not resolved.")
@click.option("--json", "as_json", is_flag=True)
def escalations_list(open_only: bool, as_json: bool) -> None:
    """Red-flag escalations, newest first: ref, patient, level, flags, status, when, who took
    it and when."""
    from bot.services.escalations import list_escalations
    from bot.web.serialize import escalation_json

    rt = _runtime()
    clinic = rt.settings.defaults.timezone
    with rt.transaction() as s:
        found = list_escalations(s, open_only)
        rows = [escalation_json(e) for e in found]
        # The number to call (and to give `transcript --phone`), enrolled or not.
        numbers = {e.id: e.patient.phone if e.patient else e.phone for e in found}
    _emit(rows, as_json, "no open escalations" if open_only else "no escalations",
          lambda e: f"{e['id']:>4} {e['ref']} "
                    f"{_shown(e['patient']) or 'not enrolled'} {numbers[e['id']] or '-'} "
                    f"{e['level']} {','.join(e['flags'])} "
                    f"{e['status']} {_local(e['created_at'], clinic)} "
                    f"{e['acknowledged_by'] or '-'} "
                    f"{_local(e['acknowledged_at'], clinic)}")


@escalations.command("ack")
@click.argument("ref")
@click.option("--by", required=True, help="Who is taking it.")
def escalations_ack(ref: str, by: str) -> None:
    """Acknowledge: the alert chain stops."""
    from bot.services.escalations import EscalationNotFound, acknowledge

    by = _person("by", by)
    rt = _runtime()
    try:
        with rt.transaction() as s:
            esc, changed = acknowledge(s, ref, by, rt.clock.now(), actor=_actor())
            msg = (f"{esc.ref} acknowledged by {by}: {_whose(s, esc)}; the alert chain has "
                   "stopped" if changed else
                   f"{esc.ref} ({_whose(s, esc)}) is {esc.status} (by {esc.acknowledged_by})")
    except EscalationNotFound:
        _fail(f"no escalation {ref}", 1)
    click.echo(msg)


@escalations.command("resolve")
@click.argument("ref")
@click.option("--note", required=True, help="What was done (required, not blank).")
@click.option("--by", default=None,
              help="Who dealt with it (recorded as acknowledging it if nobody had; "
                   "default: cli:$USER).")
def escalations_resolve(ref: str, note: str, by: str | None) -> None:
    """Close an escalation with a note: what was done."""
    from bot.services.escalations import NOTE_CHARS, EscalationNotFound, resolve
    from bot.services.patients import InvalidField, check_text

    if not note.strip():
        _fail("note: required: say what was done")
    if len(note) > NOTE_CHARS:
        _fail(f"note: at most {NOTE_CHARS} characters")
    try:
        check_text("note", note, multiline=True)
    except InvalidField as exc:
        _fail(str(exc))
    by = _actor() if by is None else _person("by", by)
    rt = _runtime()
    already = None
    try:
        with rt.transaction() as s:
            esc, changed = resolve(s, ref, note, rt.clock.now(), actor=_actor(), by=by)
            if changed:
                msg = f"{esc.ref} resolved: {_whose(s, esc)}"
            else:  # audited by the service
                already = (f"{esc.ref} was already resolved at "
                           f"{_local(esc.resolved_at, rt.settings.defaults.timezone)}; "
                           "its note is kept: "
                           f"{esc.resolution_note}")
    except EscalationNotFound:
        _fail(f"no escalation {ref}", 1)
    if already:
        _fail(already, 1)
    click.echo(msg)


@main.group()
def schedules() -> None:
    """Recurring check-ins and reminders."""


@schedules.command("add")
@click.option("--phone", required=True)
@click.option("--flow", "flow_id", default="checkin", show_default=True)
@click.option("--at", "local_time", default="10:00", show_default=True,
              help="HH:MM in the patient's zone.")
@click.option("--every-days", default=7, show_default=True, type=int)
@click.option("--text", "reminder_text", default=None,
              help="For reminders (required): what to remind, at most 100 characters.")
@click.option("--first-day", default=None,
              help="The first run's day: a weekday (monday, or mon) or YYYY-MM-DD; later runs "
                   "every N days from it (every 7: the same weekday).")
def schedules_add(phone, flow_id, local_time, every_days, reminder_text, first_day) -> None:
    """Set a recurring flow. A check-in schedule replaces the patient's current one; a
    reminder replaces one only with the same text and time."""
    from bot.services.patients import InvalidField
    from bot.services.schedules import save_schedule, schedule_weekday
    from bot.web.api import check_flow

    rt = _runtime()
    try:
        number = _number(phone)
        with rt.transaction() as s:
            patient = _patient(s, number)
            check_flow(rt.ctx, flow_id)
            params = {"reminder_text": reminder_text} if reminder_text is not None else {}
            result = save_schedule(s, rt.ctx, patient, flow_id, local_time, every_days,
                                   rt.clock.now(), _actor(), params, first_day)
            sched = result.schedule
            verb = "replaced" if result.replaced else "added"
            line = f"schedule {sched.id} {verb}: {flow_id} every {sched.every_days} days at " \
                   f"{sched.local_time}{_on_weekday(schedule_weekday(sched, patient.timezone))}" \
                   f" ({patient.timezone}), next " \
                   f"{_local(sched.next_due_at, rt.settings.defaults.timezone, patient.timezone)}"
            if result.replaced:
                old = result.replaced
                line += f" (was every {old['every_days']} days at {old['at']})"
            warnings = result.warnings
    except InvalidField as exc:
        _fail(str(exc))
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(line)


@schedules.command("list")
@click.option("--phone", default=None, help="Only this patient's schedules.")
@click.option("--all", "include_inactive", is_flag=True, help="Also removed schedules.")
@click.option("--json", "as_json", is_flag=True)
def schedules_list(phone, include_inactive, as_json) -> None:
    """One line per schedule: id, patient, flow, rhythm, next time."""
    from bot.services.patients import InvalidField
    from bot.services.schedules import list_schedules, schedule_weekday
    from bot.store.models import Patient
    from bot.web.serialize import iso

    rt = _runtime()
    try:
        with rt.transaction() as s:
            patient_id = None
            if phone is not None:
                number = _number(phone)
                patient = _patient(s, number)
                patient_id = patient.id
            rows = []
            for sc in list_schedules(s, patient_id, include_inactive):
                p = s.get(Patient, sc.patient_id)
                rows.append({
                    "id": sc.id, "patient_id": sc.patient_id, "phone": p.phone,
                    "flow": sc.flow_id, "at": sc.local_time, "every_days": sc.every_days,
                    "timezone": p.timezone, "params": dict(sc.params or {}),
                    "active": sc.active, "next_due_at": iso(sc.next_due_at),
                    "last_run_at": iso(sc.last_run_at),
                    "weekday": schedule_weekday(sc, p.timezone),
                })
    except InvalidField as exc:
        _fail(str(exc))

    def line(r: dict) -> str:
        state = "" if r["active"] else " (removed)"
        text = f' "{r["params"]["reminder_text"]}"' if "reminder_text" in r["params"] else ""
        return (f"{r['id']:>5}  {r['phone']:<16} {r['flow']:<9} every {r['every_days']}d "
                f"at {r['at']} {r['timezone']}{_on_weekday(r['weekday'])}  "
                f"next {_local(r['next_due_at'], clinic, r['timezone'])}{state}{text}")

    clinic = rt.settings.defaults.timezone
    none = ("no schedules" if include_inactive else "no active schedules") + (
        f" for {number}" if phone is not None else "")
    _emit(rows, as_json, none, line)


def _on_weekday(weekday: str | None) -> str:
    """" on Mondays" for a schedule on a weekday (whole weeks), else ""."""
    return f" on {weekday.capitalize()}s" if weekday else ""


@schedules.command("remove")
@click.argument("schedule_id", type=int)
def schedules_remove(schedule_id: int) -> None:
    """Stop a schedule (kept as removed, for the record)."""
    from bot.services.schedules import ScheduleNotFound, remove_schedule
    from bot.store.models import Patient

    rt = _runtime()
    try:
        with rt.transaction() as s:
            sched = remove_schedule(s, schedule_id, rt.clock.now(), _actor())
            patient = s.get(Patient, sched.patient_id)  # ids are easy to mistype: say whose
            line = (f"schedule {sched.id} removed: {sched.flow_id} every {sched.every_days} "
                    f"days at {sched.local_time} ({patient.timezone}) for "
                    f"{_shown(patient.name)}, {patient.phone}")
    except ScheduleNotFound:
        _fail(f"no active schedule {schedule_id}", 1)
    click.echo(line)


@main.command("failed-messages")
@click.option("--json", "as_json", is_flag=True)
def failed_messages(as_json: bool) -> None:
    """Messages the bot could not deliver (given up after retries, or refused by the carrier)."""
    from bot.services.dispatcher import failed_messages as query
    from bot.web.serialize import failed_json

    rt = _runtime()
    with rt.transaction() as s:
        rows = [failed_json(item, message) for item, message in query(s)]
    clinic = rt.settings.defaults.timezone
    _emit(rows, as_json, "no failed messages",
          lambda r: f"{r['message_id']:>6} {_local(r['created_at'], clinic)} {r['to']:<16} "
                    f"{r['kind']:<10} attempts={r['attempts']} {r['error']}")


def _emit(rows: list[dict], as_json: bool, none: str, line) -> None:
    """One JSON object per line, or `line(row)` for people. No rows: `none` for people (on
    stderr with --json, which then prints nothing), so that "none" is not silence."""
    if not rows:
        click.echo(none, err=as_json)
    for r in rows:
        click.echo(json.dumps(r) if as_json else line(r))


@main.command()
@click.option("--json", "as_json", is_flag=True)
@click.option("--read", "read_id", type=int, help="Mark this message read (audited).")
@click.option("--by", default=None, help="Who read it (with --read).")
def unprocessed(as_json: bool, read_id: int | None, by: str | None) -> None:
    """Patients' messages the bot could not handle (only red flags, STOP, START and HELP were
    acted on): read each, follow up with the patient, then mark it read."""
    from bot.services.health import unprocessed_messages

    _inbound_to_read(unprocessed_messages, as_json, read_id, by, "no unprocessed messages",
                     "no unprocessed message {id}")


@main.command("to-read")
@click.option("--json", "as_json", is_flag=True)
@click.option("--read", "read_id", type=int, help="Mark this message read (audited).")
@click.option("--by", default=None, help="Who read it (with --read).")
def to_read(as_json: bool, read_id: int | None, by: str | None) -> None:
    """Patients' free text the bot told them was saved for the care team (a question, "please
    ring me", a late answer), as the dashboard lists it: read each, follow up, mark it read."""
    from bot.services.health import messages_to_read

    _inbound_to_read(messages_to_read, as_json, read_id, by, "no messages to read",
                     "no message {id} waiting to be read")


def _inbound_to_read(listing, as_json: bool, read_id: int | None, by: str | None, none: str,
                     not_waiting: str) -> None:
    """List patients' messages waiting for a person (`listing(session)`), or mark one read."""
    from bot.services.health import mark_read
    from bot.store.models import Patient
    from bot.web.serialize import iso

    if read_id is not None:
        if not by or not by.strip():
            _fail("--read needs --by NAME")
        by = _person("by", by)  # as for escalations: kept in the audit record
    rt = _runtime()
    with rt.transaction() as s:
        if read_id is not None:
            _, changed = mark_read(s, read_id, by, rt.clock.now(), actor=_actor())
            if not changed:  # not found, or read already: exit 1, as for any id not found
                _fail(not_waiting.format(id=read_id), 1)
            click.echo(f"message {read_id} marked read by {by}")
            return
        rows = []
        for m in listing(s):
            patient = s.get(Patient, m.patient_id) if m.patient_id else None
            rows.append({"message_id": m.id, "created_at": iso(m.created_at),
                         "phone": m.address, "patient": patient.name if patient else None,
                         "channel": m.channel, "body": m.body})
    clinic = rt.settings.defaults.timezone
    _emit(rows, as_json, none,
          lambda r: f"{r['message_id']:>6} {_local(r['created_at'], clinic)} {r['phone']:<16} "
                    f"{_shown(r['patient']) or '(not enrolled)'}: {_shown(r['body'])}")


@main.command("audit")
@click.option("--patient", "phone", default=None, help="Only records about this patient (their "
              "number): their details, schedules, conversations, messages and red flags.")
@click.option("--actor", default=None,
              help="Only records by this actor: cli:jo, user:alice, system, or the name alone.")
@click.option("--action", default=None, help="Only actions starting with this: schedule, "
                                             "patient.update, escalation.resolve.")
@click.option("--since", default=None, metavar="YYYY-MM-DD",
              help="From the start of this day (in the clinic's zone).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True)
def audit_log(phone, actor, action, since, limit, as_json) -> None:
    """The audit log, newest first: when (in the clinic's zone), who, what, the patient if
    any, and the record's details in short (--json: each whole record)."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from bot.services.audit import audit_records, describe, patient_of
    from bot.services.patients import InvalidField
    from bot.web.serialize import iso

    try:
        number = _number(phone) if phone is not None else None
    except InvalidField as exc:
        _fail(str(exc))
    rt = _runtime()
    zone = ZoneInfo(rt.settings.defaults.timezone)
    start = None
    if since is not None:
        try:
            start = datetime.strptime(since, "%Y-%m-%d").replace(tzinfo=zone)
        except ValueError:
            _fail(f"since: {since!r} is not a date (YYYY-MM-DD)")
    with rt.transaction() as s:
        patient = _patient(s, number) if number is not None else None
        rows = []
        for r in audit_records(s, patient=patient, actor=actor, action=action, since=start,
                               limit=limit):
            whose = patient or patient_of(s, r)
            rows.append({"id": r.id, "at": iso(r.at), "actor": r.actor, "action": r.action,
                         "subject_type": r.subject_type, "subject_id": r.subject_id,
                         "patient_id": whose.id if whose else None,
                         "patient": whose.name if whose else None,
                         "details": r.details or {}, "short": describe(r)})

    def line(r: dict) -> str:
        return (f"{_local(r['at'], zone.key)}  {_shown(r['actor'])}  {r['action']}  "
                f"{_shown(r['patient']) or '-'}  {_shown(r['short'])}")

    none = "no audit records" + (f" about {number}" if number else "")
    if as_json:
        for r in rows:
            del r["short"]
    _emit(rows, as_json, none, line)


def _add_optional_commands() -> None:
    """Commands that live in their own modules."""
    from bot.cli_flows import flows_group, simulate_command
    from bot.cli_triage import triage_command

    main.add_command(flows_group)
    main.add_command(simulate_command)
    main.add_command(triage_command)


_add_optional_commands()
