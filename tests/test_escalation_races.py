"""One escalation per patient episode, whichever paths open it at the same moment.

A check-in question whose timeout counts no answer as a red flag (a flow may say so: "no reply
to 'any new weakness?' is treated as yes") escalates from the scheduler's timeout sweep. The
patient's own red flag, texted at that moment, escalates from the webhook. On PostgreSQL both
read "no open escalation" unless they wait for each other: two escalations, two refs, two
alert chains for one patient."""

from __future__ import annotations

import shutil
import threading

import pytest
import yaml
from sqlalchemy import select

from bot.config import REPO_ROOT
from bot.services import escalations
from bot.services.conversations import process_due_timeouts, start_flow
from bot.services.inbound import InboundMessage, handle_inbound_message, record_after_failure
from bot.store.models import Escalation, Patient
from tests.test_red_flags_e2e import PHONE, enrol

URGENT = "back pain is 9/10 and wakes me every night"
URGENT_FLAGS = ["new_back_pain", "night_pain", "severe_pain"]
# Flows whose question counts no reply as yes: its timeout raises the flag, emergency or urgent.
TIMEOUT_FLAGS = {"weakness": ("limb_weakness", "emergency"),
                 "pain_control": ("uncontrolled_pain", "urgent")}


def _no_reply_is_yes(flow_id: str, flag: str) -> dict:
    return {
        "id": flow_id, "revision": 1, "title": "No reply is yes", "language": "en",
        "languages": ["en"], "start": "ask",
        "nodes": [
            {"id": "ask", "kind": "ask",
             "text": {"en": "Any new weakness in your legs, or pain your tablets do not help? "
                            "Reply YES or NO."},
             "answer": {"type": "yesno"},
             "retry": {"text": {"en": "Sorry, please reply YES or NO."}, "max_tries": 3,
                       "fallback": "flagged"},
             "timeout": {"after": "1h", "next": "flagged"},
             "cases": [{"when": {"is": "yes"}, "next": "flagged"}],
             "next": "fine"},
            {"id": "flagged", "kind": "send", "flags": [flag],
             "text": {"en": "We have asked your care team to call you."}, "next": "done"},
            {"id": "fine", "kind": "end", "text": {"en": "Thank you."}},
            {"id": "done", "kind": "end"},
        ],
    }


@pytest.fixture
def settings_overrides(tmp_path):
    flows = tmp_path / "flows"
    shutil.copytree(REPO_ROOT / "flows", flows, ignore=shutil.ignore_patterns("tests"))
    for flow_id, (flag, _) in TIMEOUT_FLAGS.items():
        (flows / f"{flow_id}.yaml").write_text(
            yaml.safe_dump(_no_reply_is_yes(flow_id, flag), sort_keys=False))
    return {"flows_dir": str(flows)}


def _postgresql_patient(rt) -> int:
    if not rt.settings.database_url.startswith("postgres"):
        pytest.skip("concurrent writers: PostgreSQL only (SQLite takes one writer at a time)")
    return enrol(rt)


@pytest.fixture(params=sorted(TIMEOUT_FLAGS))
def waiting(request, rt, clock):
    """A consented patient whose question went unanswered: its timeout is due, and raises
    (patient id, its flag, that flag's level)."""
    pid = _postgresql_patient(rt)
    with rt.transaction() as s:
        start_flow(s, rt.ctx, s.get(Patient, pid), request.param, clock.now())
    clock.advance(hours=1, minutes=1)
    return (pid, *TIMEOUT_FLAGS[request.param])


def _pause_first(monkeypatch):
    """The thread named "first" stops right after it looked for an open escalation, until
    released."""
    inside, release = threading.Event(), threading.Event()
    real = escalations.open_escalation_for

    def paused(*args, **kw):
        found = real(*args, **kw)
        if threading.current_thread().name == "first":
            inside.set()
            release.wait(10)
        return found

    monkeypatch.setattr(escalations, "open_escalation_for", paused)
    return inside, release


def _run(name, fn, failures):
    def target():
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            failures.append(exc)
    thread = threading.Thread(target=target, name=name)
    thread.start()
    return thread


def _escalations(rt):
    with rt.transaction() as s:
        return [(e.patient_id, e.level, e.flags) for e in
                s.scalars(select(Escalation).order_by(Escalation.id))]


def _sweep(rt, swept):
    def sweep():
        with rt.transaction() as s:
            swept.append(process_due_timeouts(s, rt.ctx, rt.clock.now()))
    return sweep


def _text(rt, body, sid, after_failure=False):
    def handle():
        msg = InboundMessage("sms", PHONE, body, provider_id=sid)
        with rt.transaction() as s:
            if after_failure:  # the webhook's handling failed: only the red-flag path runs
                record_after_failure(s, rt.ctx, msg, rt.clock.now())
            else:
                handle_inbound_message(s, rt.ctx, msg, rt.clock.now())
    return handle


@pytest.mark.parametrize("after_failure", [False, True], ids=["webhook", "after_failure"])
def test_a_timeout_red_flag_and_the_patients_own_at_once_open_one_escalation(
        rt, waiting, monkeypatch, after_failure):
    """The sweep has read "no open escalation" for the timed-out question; the patient's
    urgent text arrives before it commits. It waits for the sweep and is added to its
    escalation (as a second red flag is), instead of opening a second one."""
    inside, release = _pause_first(monkeypatch)
    failures: list[BaseException] = []
    swept: list[list[int]] = []
    first = _run("first", _sweep(rt, swept), failures)
    assert inside.wait(10)
    second = _run("second", _text(rt, URGENT, "SM" + "1" * 32, after_failure), failures)
    second.join(1.0)  # it waits for the sweep to finish
    release.set()
    first.join(20)
    second.join(20)
    assert not first.is_alive() and not second.is_alive() and failures == []
    assert swept and swept[0] != []  # the timeout fired
    pid, flag, level = waiting
    assert _escalations(rt) == [(pid, level, sorted([flag, *URGENT_FLAGS]))]


def test_a_timeout_due_while_the_patients_red_flag_is_being_handled_waits_for_it(
        rt, waiting, monkeypatch, clock):
    """The other order: the patient's urgent text has read "no open escalation" and not
    committed when the sweep finds the question's wait over. The sweep leaves that patient
    for the next tick (it does not wait on a patient being handled, which could deadlock), and
    then adds its red flag to the patient's escalation."""
    inside, release = _pause_first(monkeypatch)
    failures: list[BaseException] = []
    swept: list[list[int]] = []
    first = _run("first", _text(rt, URGENT, "SM" + "2" * 32), failures)
    assert inside.wait(10)
    second = _run("second", _sweep(rt, swept), failures)
    second.join(10)
    release.set()
    first.join(20)
    second.join(20)
    assert not first.is_alive() and not second.is_alive() and failures == []
    assert swept == [[]]  # left for the next tick
    pid, flag, level = waiting
    assert _escalations(rt) == [(pid, "urgent", URGENT_FLAGS)]
    clock.advance(hours=1, minutes=1)  # the patient's text was no answer: the wait runs out
    _sweep(rt, swept)()
    assert swept[1] != []
    assert _escalations(rt) == [(pid, level, sorted([flag, *URGENT_FLAGS]))]


def test_escalate_itself_makes_a_second_red_flag_of_the_patient_wait(rt, monkeypatch):
    """Whatever path calls it, and whether or not that path locked the patient first, two
    escalations of one patient at once become one: escalate locks the patient's row."""
    inside, release = _pause_first(monkeypatch)
    failures: list[BaseException] = []
    pid = _postgresql_patient(rt)

    def red_flag(level, flags):
        def run():
            with rt.transaction() as s:
                escalations.escalate(s, rt.ctx, s.get(Patient, pid), level, flags, None,
                                     rt.clock.now())
        return run

    first = _run("first", red_flag("urgent", ["fever"]), failures)
    assert inside.wait(10)
    second = _run("second", red_flag("emergency", ["sensory_loss"]), failures)
    second.join(1.0)
    release.set()
    first.join(20)
    second.join(20)
    assert not first.is_alive() and not second.is_alive() and failures == []
    assert _escalations(rt) == [(pid, "emergency", ["fever", "sensory_loss"])]
