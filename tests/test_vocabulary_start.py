"""The red-flag vocabulary costs seconds of CPU to compile: an operator's command that reads no
patient's words (escalations list / ack, patients list / add, health...) answers without it;
the processes that triage (web workers, `serve`, the scheduler) compile it before their first
message, and a broken config/red_flags.yaml still stops them at start with its error."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from bot import wsgi
from bot.config import ConfigError
from bot.domain import triage, triage_vocab
from bot.runtime import Runtime, build_runtime
from bot.services.escalations import escalate
from bot.services.patients import Enrolment, enrol_patient


@pytest.fixture(autouse=True)
def _read_again_after():
    yield
    triage._default_vocabulary.cache_clear()  # the next user reads the real file again


def _unloaded() -> None:
    """As in a fresh process: the default vocabulary not read yet."""
    triage._default_vocabulary.cache_clear()


@pytest.fixture
def broken_vocabulary(monkeypatch, tmp_path):
    """config/red_flags.yaml with a mistake in it."""
    path = tmp_path / "red_flags.yaml"
    path.write_text(triage_vocab.DEFAULT_PATH.read_text(encoding="utf-8")
                    .replace("negation_window:", "negation_windw:", 1), encoding="utf-8")
    monkeypatch.setattr(triage_vocab, "DEFAULT_PATH", path)
    _unloaded()


def _escalation(db_url, tmp_path) -> str:
    from bot.config import load_settings

    settings = load_settings(env={}, overrides={"database_url": db_url,
                                                "spool_dir": str(tmp_path / "spool")})
    rt = build_runtime(settings, dispatch_mode="none")
    try:
        with rt.transaction() as s:
            patient = enrol_patient(s, Enrolment(phone="+447700900123", name="Ada Lovelace",
                                                 timezone="Europe/London"),
                                    languages=["en", "es"], now=datetime(2026, 1, 1, tzinfo=UTC),
                                    actor="test")
            esc, _ids = escalate(s, rt.ctx, patient, "emergency", ["limb_weakness"],
                                 "my legs gave way", datetime(2026, 1, 1, tzinfo=UTC))
            return esc.ref
    finally:
        rt.close()


def test_operators_commands_do_not_compile_the_vocabulary(cli, db_url, tmp_path, monkeypatch):
    ref = _escalation(db_url, tmp_path)  # (its alert text reads the vocabulary)
    _unloaded()
    for target, name in ((triage_vocab, "compile_vocabulary"), (triage, "_compile")):
        monkeypatch.setattr(target, name, _raiser)  # reading or compiling it fails the test
    for args in (["escalations", "list"], ["escalations", "list", "--open", "--json"],
                 ["patients", "add", "--phone", "+447700900456", "--name", "Bo Peep",
                  "--timezone", "Europe/London"],
                 ["patients", "list"], ["patients", "update", "--phone", "+447700900456",
                                        "--name", "Bo Beep"],
                 ["transcript", "--phone", "+447700900123"],
                 ["schedules", "add", "--phone", "+447700900123"], ["schedules", "list"],
                 ["unprocessed"], ["to-read"], ["failed-messages"], ["audit"],
                 ["staff", "list"],
                 ["escalations", "ack", ref, "--by", "Dr Who"],
                 ["escalations", "resolve", ref, "--note", "rang her, 999 called"],
                 ["patients", "discharge", "--phone", "+447700900456", "--reason", "moved"]):
        res = cli(*args)
        assert res.exit_code == 0, (args, res.output, res.exception)


def _raiser(*_args, **_kwargs):
    raise AssertionError("the red-flag vocabulary was compiled")


def test_the_scheduler_refuses_a_broken_vocabulary_at_start(cli, broken_vocabulary,
                                                            monkeypatch):
    ran = []
    monkeypatch.setattr("bot.scheduler.run_until_signalled", lambda *a, **k: ran.append(1))
    res = cli("scheduler")
    assert res.exit_code == 2
    assert "red flags:" in res.output and "negation_windw" in res.output
    assert ran == []


def test_serve_refuses_a_broken_vocabulary_before_serving(cli, broken_vocabulary, monkeypatch):
    from flask import Flask

    ran = []
    monkeypatch.setattr(Flask, "run", lambda *a, **k: ran.append(1))
    res = cli("serve", "--no-scheduler")
    assert res.exit_code == 2
    assert "red flags:" in res.output and "negation_windw" in res.output
    assert ran == []


def test_web_workers_refuse_a_broken_vocabulary(broken_vocabulary, monkeypatch, db_url,
                                                tmp_path):
    monkeypatch.setenv("CHECKIN_DATABASE_URL", db_url)
    monkeypatch.setenv("CHECKIN_SPOOL_DIR", str(tmp_path / "spool"))
    with pytest.raises(ConfigError, match="red flags: .*negation_windw"):
        wsgi.make_app()


def test_health_reports_a_broken_vocabulary_as_down(cli, broken_vocabulary):
    res = cli("health")
    assert res.exit_code == 2
    assert "red flags:" in res.output and '"down"' in res.output


def test_web_workers_and_the_scheduler_compile_every_phrase_before_their_first_message(
        monkeypatch, db_url, tmp_path):
    _unloaded()
    monkeypatch.setattr(Runtime, "warm_up", lambda self: None)  # no gc.freeze in the tests
    monkeypatch.setenv("CHECKIN_DATABASE_URL", db_url)
    monkeypatch.setenv("CHECKIN_SPOOL_DIR", str(tmp_path / "spool"))
    app = wsgi.make_app()
    try:
        vocab = triage._default_vocabulary()
        assert all(entry[1].__class__ is not str for entries in vocab.dispatch.values()
                   for entry in entries)
    finally:
        app.extensions["checkin"].close()

    _unloaded()
    started = []
    monkeypatch.setattr("bot.scheduler.run_until_signalled",
                        lambda rt, started=None: started_append(rt))

    def started_append(rt):
        vocab = triage._default_vocabulary()
        started.append(all(entry[1].__class__ is not str for entries in vocab.dispatch.values()
                           for entry in entries))

    from click.testing import CliRunner

    from bot.cli import main
    assert CliRunner().invoke(main, ["scheduler"]).exit_code == 0
    assert started == [True]


def test_the_default_vocabulary_is_read_once_however_many_threads_ask(monkeypatch):
    _unloaded()
    calls = []
    real = triage_vocab.compile_vocabulary

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(triage_vocab, "compile_vocabulary", counted)
    barrier = threading.Barrier(6)
    results = []

    def ask():
        barrier.wait()
        results.append(triage.detect("my legs gave way").level)

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["emergency"] * 6
    assert len(calls) == 1


def test_a_message_that_comes_while_serve_still_compiles_is_triaged_in_full(settings, clock,
                                                                            messenger):
    """serve answers before its phrases are compiled (warm_vocabulary on a thread): a red
    flag texted meanwhile is still an emergency, its phrases compiled for it first."""
    from sqlalchemy import select

    from bot.services.inbound import InboundMessage
    from bot.services.receiving import store_and_handle
    from bot.store.models import Escalation

    _unloaded()
    rt = build_runtime(settings, clock=clock, messenger=messenger, dispatch_mode="inline",
                       vocabulary="checked")
    try:
        vocab = triage._default_vocabulary()
        assert all(entry[1].__class__ is str for entries in vocab.dispatch.values()
                   for entry in entries)  # read and checked, nothing compiled yet
        warming = threading.Thread(target=rt.warm_vocabulary)
        warming.start()
        store_and_handle(rt, InboundMessage(channel="sms", sender="+447700900123",
                                            body="my legs gave way and I wet myself"))
        warming.join()
        with rt.transaction() as s:
            esc = s.scalars(select(Escalation)).one()
            assert esc.level == "emergency"
            assert {"limb_weakness", "bladder_dysfunction"} <= set(esc.flags), esc.flags
        assert all(entry[1].__class__ is not str for entries in vocab.dispatch.values()
                   for entry in entries)
    finally:
        rt.close()


def test_build_runtime_refuses_an_unknown_vocabulary_mode(settings):
    with pytest.raises(ValueError, match="vocabulary"):
        build_runtime(settings, vocabulary="cold")


@pytest.mark.parametrize(("url", "exit_code", "says"), [
    ("sqlite:///{tmp}/empty.db", 2, "database: not migrated"),
    ("postgresql://nobody@127.0.0.1:9/none", 1, "database: cannot connect"),
])
def test_the_scheduler_names_a_wrong_database_before_compiling_the_vocabulary(
        cli, monkeypatch, tmp_path, url, exit_code, says):
    """The vocabulary takes seconds of CPU to compile (minutes on a loaded host): an operator
    who started `checkin-bot scheduler` (or a web worker) on a database that is not migrated
    or not there waited through all of it, in silence, before being told."""
    (tmp_path / "empty.db").touch()
    monkeypatch.setenv("CHECKIN_DATABASE_URL", url.format(tmp=tmp_path))
    compiled = []
    monkeypatch.setattr(triage, "warm_up", lambda *a, **k: compiled.append(a))
    res = cli("scheduler")
    assert res.exit_code == exit_code, res.output
    assert says in res.output
    assert compiled == []
