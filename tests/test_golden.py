"""Golden conversation scripts: one test per script in flows/tests, plus the runner itself."""

import shutil
from pathlib import Path

import pytest
import yaml

from bot.domain.flows import load_flows
from bot.flowtest import ScriptError, find_scripts, run_script, run_scripts

REPO = Path(__file__).resolve().parents[1]
LIBRARY = load_flows(REPO / "flows")
SCRIPTS = find_scripts([REPO / "flows" / "tests"])


def test_every_flow_has_at_least_two_scripts():
    flows = [yaml.safe_load(path.read_text())["flow"] for path in SCRIPTS]
    for flow in LIBRARY.current():
        assert flows.count(flow.id) >= 2, flow.id


@pytest.mark.parametrize("path", SCRIPTS, ids=[path.stem for path in SCRIPTS])
def test_golden_script(path):
    result = run_script(path, LIBRARY)
    assert result.passed, "\n" + result.diff


def broken_copy(tmp_path, name="welcome_yes.yaml"):
    target = tmp_path / name
    shutil.copy(REPO / "flows" / "tests" / name, target)
    text = target.read_text().replace("Your first check-in will come soon.", "Bye for now.")
    target.write_text(text)
    return target


def test_failure_shows_a_unified_diff(tmp_path):
    result = run_script(broken_copy(tmp_path), LIBRARY)
    assert not result.passed
    assert "(expected)" in result.diff and "(actual)" in result.diff
    assert "-bot: Thank you, Maria. Bye for now." in result.diff
    assert "+bot: Thank you, Maria. Your first check-in will come soon." in result.diff


def test_update_rewrites_bot_texts_and_keeps_the_rest(tmp_path):
    path = broken_copy(tmp_path)
    result = run_script(path, LIBRARY, update=True)
    assert result.passed and result.updated
    rewritten = yaml.safe_load(path.read_text())
    original = yaml.safe_load((REPO / "flows" / "tests" / path.name).read_text())
    assert rewritten == original
    assert run_script(path, LIBRARY).passed


def test_update_fills_in_missing_bot_steps(tmp_path):
    path = tmp_path / "new.yaml"
    path.write_text('flow: reminder\nsteps:\n  - patient: "2"\n')
    assert not run_script(path, LIBRARY).passed  # the bot's texts were not written down
    run_script(path, LIBRARY, update=True)
    steps = yaml.safe_load(path.read_text())["steps"]
    assert [next(iter(step)) for step in steps] == ["bot", "patient", "bot"]
    assert steps[2]["bot"][0].startswith("Thank you for letting us know.")
    assert run_script(path, LIBRARY).passed


def test_wrong_expectation_fails_even_after_update(tmp_path):
    path = tmp_path / "wrong.yaml"
    path.write_text(
        'flow: welcome\nsteps:\n  - patient: "no"\n'
        '  - expect: {answers: {consent: "yes"}, flags: [fever]}\n'
    )
    result = run_script(path, LIBRARY, update=True)
    assert not result.passed
    assert '-expect answers: {"consent": "yes"}' in result.diff
    assert '+expect answers: {"consent": "no"}' in result.diff
    assert '-expect flags: ["fever"]' in result.diff
    assert "+expect flags: []" in result.diff


def test_broken_script_is_reported(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("flow: welcome\nsteps:\n  - shout: hello\n")
    with pytest.raises(ScriptError, match="step 1: expected one of patient, wait, bot, expect"):
        run_script(path, LIBRARY)
    (result,) = run_scripts([path], LIBRARY)
    assert not result.passed and "step 1" in result.diff
