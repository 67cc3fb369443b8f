"""What an operator meets: the README's commands and claims, checked against the program."""

import json

import pytest
from click.testing import CliRunner

from bot.cli import main
from bot.config import ConfigError, load_settings


@pytest.mark.parametrize("url", ["nonsense", "mysql://db.example.org/checkin", ""])
def test_a_bad_database_url_is_a_config_error_naming_the_key(url):
    # README, Configuration: "a bad value stops the bot with one line naming the key".
    with pytest.raises(ConfigError) as err:
        load_settings(env={}, overrides={"database_url": url})
    message = str(err.value)
    assert message.startswith("config: database_url: ")
    assert "\n" not in message


@pytest.mark.parametrize("url", ["sqlite:///var/checkin.db", "sqlite:////tmp/x.db",
                                 "postgresql://user:pass@db.example.org/checkin",
                                 "postgres://user@db.example.org:5433/checkin",
                                 "postgresql+psycopg://user@db.example.org/checkin"])
def test_the_database_urls_the_readme_names_are_accepted(url):
    assert load_settings(env={"CHECKIN_DATABASE_URL": url}).database_url == url


@pytest.mark.parametrize("args", [["db", "upgrade"], ["patients", "list"]])
def test_a_bad_database_url_stops_a_command_with_exit_2_and_one_line(args, monkeypatch):
    # Before: a traceback, exit 1, which `checkin-bot health` in cron reads as "degraded".
    monkeypatch.setenv("CHECKIN_DATABASE_URL", "nonsense")
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2
    assert res.output.strip().splitlines() == [
        "error: config: database_url: not a database URL: expected sqlite:///PATH or "
        "postgresql://USER:PASSWORD@HOST/NAME"]


def _plain_env(monkeypatch, tmp_path):
    monkeypatch.setenv("CHECKIN_SPOOL_DIR", str(tmp_path / "spool"))
    for var in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "CHECKIN_CONFIG", "CHECKIN_MESSENGER"):
        monkeypatch.delenv(var, raising=False)


def test_health_on_a_database_that_is_not_migrated_is_down_in_json(monkeypatch, tmp_path):
    # README: `health` exits 2 when down, "still JSON, with the inbound messages waiting in the
    # spool". The bot refuses to start on this database, so a cron job must read "down".
    _plain_env(monkeypatch, tmp_path)
    monkeypatch.setenv("CHECKIN_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    (tmp_path / "empty.db").touch()
    result = CliRunner().invoke(main, ["health"])
    assert result.exit_code == 2
    assert json.loads(result.stdout) == {
        "status": "down",
        "problems": ["database: not migrated; run `checkin-bot db upgrade` "
                     f"(SQLite file {tmp_path / 'empty.db'})"],
        "spooled_inbound": 0}


def test_health_with_a_bad_setting_is_down_in_json(monkeypatch, tmp_path):
    _plain_env(monkeypatch, tmp_path)
    monkeypatch.setenv("CHECKIN_DATABASE_URL", "nonsense")
    result = CliRunner().invoke(main, ["health"])
    assert result.exit_code == 2
    body = json.loads(result.stdout)
    assert body["status"] == "down"
    assert body["problems"] == ["config: database_url: not a database URL: expected "
                                "sqlite:///PATH or postgresql://USER:PASSWORD@HOST/NAME"]


def test_make_clean_keeps_the_database_and_the_spool():
    # var/ holds the SQLite database (`make run`) and, by default (CHECKIN_SPOOL_DIR), the
    # spool of patients' messages waiting for the database: `make clean` (a rebuild of the
    # virtualenv) must not delete them.
    import shutil
    import subprocess
    from pathlib import Path

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    root = Path(__file__).resolve().parents[1]
    dry_run = subprocess.run(["make", "-n", "-C", str(root), "clean"], capture_output=True,
                             text=True, check=True).stdout
    assert "rm -rf" in dry_run
    assert "var" not in dry_run.split()


def test_db_upgrade_on_an_unreachable_database_is_one_line_exit_1(monkeypatch):
    monkeypatch.setenv("CHECKIN_DATABASE_URL", "postgresql://nobody:hunter2@127.0.0.1:1/none")
    res = CliRunner().invoke(main, ["db", "upgrade"])
    assert res.exit_code == 1, res.output
    [line] = res.output.strip().splitlines()
    assert line.startswith("error: database: cannot reach it, nothing migrated: ")
    assert "hunter2" not in line


def test_a_sqlite_file_that_is_not_there_is_named_and_not_created(monkeypatch, tmp_path):
    # The default URL is relative (sqlite:///var/checkin.db): run from another folder, the
    # bot used to create an empty file there and say "not migrated", or "unable to open
    # database file" with no name, to an operator at night.
    _plain_env(monkeypatch, tmp_path)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "var").mkdir()
    monkeypatch.setenv("CHECKIN_DATABASE_URL", "sqlite:///var/checkin.db")
    expected = (f"database: no SQLite file at {tmp_path / 'var' / 'checkin.db'}; run "
                "`checkin-bot db upgrade` to create it, or set CHECKIN_DATABASE_URL (a relative "
                "path is from the current folder)")
    result = CliRunner().invoke(main, ["escalations", "list"])
    assert result.exit_code == 2 and result.stderr == f"error: {expected}\n"
    result = CliRunner().invoke(main, ["health"])
    assert result.exit_code == 2 and json.loads(result.stdout)["problems"] == [expected]
    assert list((tmp_path / "var").iterdir()) == []
    # An empty file (not migrated) is named too.
    (tmp_path / "var" / "checkin.db").touch()
    result = CliRunner().invoke(main, ["escalations", "list"])
    assert result.stderr == ("error: database: not migrated; run `checkin-bot db upgrade` "
                             f"(SQLite file {tmp_path / 'var' / 'checkin.db'})\n")


def test_db_upgrade_says_what_it_did(monkeypatch, tmp_path):
    from alembic.script import ScriptDirectory

    from bot.store.migrate import alembic_config

    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    monkeypatch.setenv("CHECKIN_DATABASE_URL", f"sqlite:///{tmp_path}/new.db")
    first = CliRunner().invoke(main, ["db", "upgrade"])
    assert first.exit_code == 0, first.output
    assert first.output.strip() == f"database upgraded: empty -> {head}"
    again = CliRunner().invoke(main, ["db", "upgrade"])
    assert again.output.strip() == f"database is up to date (revision {head})"
