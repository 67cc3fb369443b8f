"""The flow validator: one exact error line per broken fixture, and the shipped flows pass."""

from pathlib import Path

import pytest
from click.testing import CliRunner

from bot.cli_flows import flows_group
from bot.domain.flow_lint import lint_paths
from bot.domain.flows import FlowError, load_flows
from bot.domain.keywords import CARRIER_WORDS

REPO = Path(__file__).resolve().parents[1]
FIXTURES = "tests/fixtures/broken_flows"

# fixture file -> the one line `flows lint` must print for it
EXPECTED = {
    "unknown_key": "node pain: unknown key 'saveas'",
    "wrong_type": "revision: input should be a valid integer, got 'two'",
    "missing_key": "node hello: missing key 'next'",
    "unknown_node_kind": "node question: unknown node kind 'question' "
    "(expected one of send, ask, wait, branch, start_flow, end)",
    "bad_duration": "node question: timeout.after: '4 hours' is not a duration like 30m, 4h or 2d",
    "missing_retry": "node question: retry is required for yesno questions",
    "duplicate_yaml_key": "line 13: duplicate key 'next'",
    "invalid_yaml": "line 7: expected <block end>, but found '<block mapping start>'",
    "default_language_undeclared": "default language 'fr' is not in languages",
    "duplicate_node_id": "node hello: duplicate node id",
    "missing_target": "node hello: next 'goodbye' does not exist",
    "missing_start": "start node 'begin' does not exist",
    "unreachable": "node orphan: not reachable from the start node 'hello'",
    "dead_loop": "node a: loops a -> b -> a without waiting for a reply or ending",
    "no_timeout": "node question: waits for a reply but has no timeout path",
    "unknown_variable": "node hello: text (en) uses unknown variable {nmae}",
    "missing_language": "node hello: text has no 'es' version",
    "extra_language": "node hello: text has a 'fr' version but the flow's languages are en, es",
    "curly_apostrophe": "node hello: text (en) has characters that are not plain GSM-7: "
    "'’' (U+2019)",
    "too_long": "node hello: text (en) takes 3 SMS segments with variables at their maximum "
    "length (the limit is 2)",
    "unknown_flag": "node question: cases[1]: unknown flag 'numbness'",
    "bad_case_value": "node question: cases[1] tests 'maybe', which is not an answer (yes, no)",
    "text_case_value": "node question: cases[1] tests the value of a free-text answer",
    "branch_unknown_key": "node check: branches on 'pain_score', which no node saves",
    "reserved_trigger": "trigger 'STOP' is reserved (carrier keywords, YES and NO)",
    "reserved_trigger_spanish": "trigger 'ALTA' is reserved (carrier keywords, YES and NO)",
    "reserved_option_word": "node pain_level: answer.options[1].words: 'Baja' is a keyword "
    "(it opts the patient out): a reply of only that never reaches the flow",
    "reserved_yes_word": "node question: answer.yes_words: 'iniciar!' is a keyword (it opts "
    "the patient back in): a reply of only that never reaches the flow",
    "unknown_start_flow": "node handover: starts flow 'followup', which is not loaded",
    "yes_words_not_yesno": "node question: answer: yes_words and no_words are only for yesno "
    "answers",
    "no_reply_loop": "node question: never ends if the patient does not reply: "
    "question -> reminder -> question",
    # The service sends its emergency instruction ("...lie flat and keep still...") for an
    # emergency-tier flag: a flow's own "please call" after it, worded otherwise, is a second
    # emergency text, and a question after it is asked of a patient told to call now.
    "emergency_end_repeats": "node question: cases[1] raises emergency-tier flag "
    "'sensory_loss', then node alerted gives {hotline} or {emergency_number}: the emergency "
    "instruction the bot sends for it does, so it would be said twice in other words",
    "emergency_asks_on": "node question: cases[1] raises emergency-tier flag 'sensory_loss', "
    "then asks node fever: the check-in must end at the emergency instruction",
    "start_flow_loop": "node again: starts flow 'broken_start_loop', which comes back here "
    "without waiting for a reply: broken_start_loop -> broken_start_loop",
}
# These break only next to the shipped flows, so they are linted together with flows/.
EXPECTED_WITH_SHIPPED = {
    "duplicate_flow_id": "flow id 'welcome' is already defined in flows/welcome.yaml",
    "duplicate_trigger": "trigger 'CHECKIN' is already used by flow 'checkin' (flows/checkin.yaml)",
}


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
    monkeypatch.chdir(REPO)


def lint(*paths):
    return CliRunner().invoke(flows_group, ["lint", *paths])


def test_shipped_flows_pass():
    result = lint("flows/")
    assert result.exit_code == 0, result.output
    assert result.output == "OK: 3 flow(s) in 3 file(s), no errors\n"


def test_default_path_is_flows_folder():
    result = lint()
    assert result.exit_code == 0, result.output
    assert result.output.startswith("OK: 3 flow(s)")


def test_every_fixture_has_an_expected_line():
    names = {path.stem for path in (REPO / FIXTURES).glob("*.yaml")}
    assert names == set(EXPECTED) | set(EXPECTED_WITH_SHIPPED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_broken_fixture(name):
    path = f"{FIXTURES}/{name}.yaml"
    result = lint(path)
    assert result.exit_code == 1
    assert result.output.splitlines() == [f"{path}: {EXPECTED[name]}", "1 error(s) in 1 file(s)"]


@pytest.mark.parametrize("name", sorted(EXPECTED_WITH_SHIPPED))
def test_broken_fixture_next_to_shipped_flows(name):
    path = f"{FIXTURES}/{name}.yaml"
    assert lint(path).exit_code == 0  # fine on its own
    result = lint("flows", path)
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"{path}: {EXPECTED_WITH_SHIPPED[name]}",
        "1 error(s) in 4 file(s)",
    ]


def test_curly_apostrophe_is_rejected():
    report = lint_paths([Path(FIXTURES) / "curly_apostrophe.yaml"])
    assert any("not plain GSM-7: '’'" in line for line in report.errors)


def test_text_over_two_segments_is_rejected_only_with_variables_at_max_length(tmp_path):
    report = lint_paths([Path(FIXTURES) / "too_long.yaml"])
    assert any("takes 3 SMS segments" in line for line in report.errors)
    # The same text with a short variable fits: it is the declared maximum that breaks it.
    (tmp_path / "variables.yaml").write_text("variables:\n  reminder_text: {max_length: 10}\n")
    short = tmp_path / "variables.yaml"
    report = lint_paths([Path(FIXTURES) / "too_long.yaml"], variables_file=short)
    assert report.errors == []


def test_folder_reports_every_broken_file():
    result = lint(FIXTURES)
    assert result.exit_code == 1
    for name, line in EXPECTED.items():
        assert f"{FIXTURES}/{name}.yaml: {line}" in result.output


def test_missing_path_is_an_error():
    result = lint("flows/nope.yaml")
    assert result.exit_code == 1
    assert "flows/nope.yaml: no such file or directory" in result.output


def test_broken_variables_file(tmp_path):
    (tmp_path / "variables.yaml").write_text("variables:\n  name: {max_len: 20}\n")
    report = lint_paths([tmp_path])
    assert sorted(report.errors) == [
        f"{tmp_path}/variables.yaml: variables.name: missing key 'max_length'",
        f"{tmp_path}/variables.yaml: variables.name: unknown key 'max_len'",
    ]


def test_load_flows_refuses_a_broken_flow(tmp_path):
    for name in ("welcome", "checkin", "reminder", "variables"):
        (tmp_path / f"{name}.yaml").write_text((REPO / "flows" / f"{name}.yaml").read_text())
    (tmp_path / "broken.yaml").write_text((REPO / FIXTURES / "unknown_flag.yaml").read_text())
    with pytest.raises(FlowError) as caught:
        load_flows(tmp_path)
    assert caught.value.errors == [f"{tmp_path}/broken.yaml: {EXPECTED['unknown_flag']}"]


def _flow_with(tmp_path, answer: str, triggers: str = "[]") -> Path:
    path = tmp_path / "words.yaml"
    path.write_text(f"""id: words
revision: 1
title: Words
language: es
languages: [es]
start: question
triggers: {triggers}
nodes:
  - id: question
    kind: ask
    text: "Responda SI o NO."
    answer: {answer}
    retry: {{text: "Responda SI o NO, por favor.", fallback: done}}
    timeout: {{after: 24h, next: done}}
    next: done
  - id: done
    kind: end
""")
    return path


@pytest.mark.parametrize("word", sorted(CARRIER_WORDS))
def test_every_keyword_the_bot_acts_on_is_a_reserved_trigger(tmp_path, word):
    report = lint_paths([_flow_with(tmp_path, "{type: yesno}", f"[{word}]")])
    assert report.errors == [f"{tmp_path}/words.yaml: trigger {word!r} is reserved "
                             "(carrier keywords, YES and NO)"]


@pytest.mark.parametrize(("no_words", "error"), [
    # An opt-out is a stronger no, and "stop please" is still read as one: allowed (the
    # shipped consent question has "stop").
    ("[stop, baja, parar]", None),
    ("[ayuda]", "answer.no_words: 'ayuda' is a keyword (it asks for help)"),
    ("{es: [Reanudar]}", "answer.no_words: 'Reanudar' is a keyword (it opts the patient "
     "back in)"),
])
def test_a_no_word_may_opt_out_but_not_opt_in_or_ask_for_help(tmp_path, no_words, error):
    report = lint_paths([_flow_with(tmp_path, f"{{type: yesno, no_words: {no_words}}}")])
    assert report.errors == ([f"{tmp_path}/words.yaml: node question: {error}: a reply of only "
                              "that never reaches the flow"] if error else [])


def test_a_keyword_inside_an_answer_phrase_is_fine(tmp_path):
    answer = "{type: yesno, yes_words: [\"quiero el alta\"], no_words: [\"no quiero parar\"]}"
    assert lint_paths([_flow_with(tmp_path, answer)]).errors == []
