"""Review of the coordinators' side (API, dashboard, CLI admin commands): regressions."""

from __future__ import annotations

import unicodedata

import pytest
from click.testing import CliRunner

from bot.cli import main
from tests.test_dashboard import add_message, enrol, page, section, sign_in

PHONE = "+447700900123"


def _raw_controls(text: str) -> list[str]:
    """Characters that a terminal acts on rather than shows (but the line breaks between
    lines of output)."""
    return [ch for ch in text if unicodedata.category(ch) in ("Cc", "Zl", "Zp") and ch != "\n"]


@pytest.mark.parametrize(("status", "args"), [
    ("to_read", ("to-read",)),
    ("unprocessed", ("unprocessed",)),
    ("to_read", ("transcript", "--phone", PHONE)),
])
def test_cli_listings_escape_control_characters_in_a_patients_text(cli, rt, status, args):
    # `cli`: the environment of the test database
    """A text can carry terminal escape sequences (here: move up a line and erase it) or a
    carriage return: printed raw, it would wipe the line listing the message before it, and
    the operator would never see that patient's message. Each message stays one line, with the
    control characters shown as escapes."""
    pid = enrol(rt, PHONE)
    add_message(rt, pid, "in", "please ring me, the pain is worse", status=status)
    add_message(rt, pid, "in", "ok\x1b[1A\x1b[2K\rthanks\nbye", status=status)
    # color=True: as on a terminal (click strips escape sequences only when it is not one)
    res = CliRunner().invoke(main, list(args), color=True)
    assert res.exit_code == 0, res.output
    assert _raw_controls(res.output) == []
    lines = res.output.splitlines()
    assert len(lines) == 2
    assert any(line.endswith("please ring me, the pain is worse") for line in lines)
    assert any(line.endswith("ok\\x1b[1A\\x1b[2K\\rthanks\\nbye") for line in lines)


@pytest.mark.parametrize("args", [
    ("schedules", "remove", str(2**31)),
    ("schedules", "remove", str(2**63)),
    ("to-read", "--read", str(2**31), "--by", "Jo"),
    ("unprocessed", "--read", str(2**63), "--by", "Jo"),
])
def test_cli_ids_beyond_the_database_range_are_not_found_not_a_traceback(cli, args):
    """A mistyped id larger than any key can be: the API answers 404; the CLI said nothing
    useful (a driver error and a traceback on PostgreSQL, OverflowError on SQLite)."""
    res = cli(*args)
    assert isinstance(res.exception, SystemExit), repr(res.exception)
    assert res.exit_code in (1, 2) and "error: no " in res.output


def test_every_message_waiting_to_be_read_is_listed_not_only_the_newest_200(cli, rt, client):
    """A busy weekend: 205 messages patients were told were passed on to the team. The
    dashboard's count said 200 and the five oldest, waiting longest, were on no page; the CLI
    listed 200 too."""
    pid = enrol(rt, PHONE)
    ids = [add_message(rt, pid, "in", f"message number {i}", status="to_read")
           for i in range(205)]
    sign_in(client, token=None)
    text = section(page(client), "to-read")
    assert "Messages from patients to read (205)" in text
    assert f'data-message="{ids[0]}"' in text
    listed = cli("to-read")
    assert listed.exit_code == 0
    assert len(listed.output.splitlines()) == 205
    assert "message number 0" in listed.output.splitlines()[-1]
