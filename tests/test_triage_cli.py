"""The `triage` click command (bot/cli_triage.py), driven with click's CliRunner."""

from __future__ import annotations

import json

from click.testing import CliRunner

from bot.cli_triage import triage_command
from bot.domain.triage_vocab import DEFAULT_PATH


def run(input_text: str, *args: str):
    return CliRunner().invoke(triage_command, list(args), input=input_text)


def test_one_json_object_per_input_line():
    result = run("cant feel my legs\npain 3/10\n\nif my legs go numb what do I do?\ntemp 38.5\n")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert [r["text"] for r in rows] == [
        "cant feel my legs", "pain 3/10", "", "if my legs go numb what do I do?", "temp 38.5"]
    assert [r["level"] for r in rows] == ["emergency", "routine", "routine", "emergency", "urgent"]
    assert rows[0]["flags"] == ["sensory_loss"]
    assert rows[0]["matches"] == ["sensory_loss: cant feel my legs"]
    assert rows[3]["hypothetical"] is True and rows[0]["hypothetical"] is False
    assert rows[4]["flags"] == ["fever"]
    for row in rows:
        assert set(row) == {"text", "level", "flags", "hypothetical", "matches"}


def test_unicode_and_windows_line_ends():
    result = run("no siento las piernas 😟\r\nañadir\r\n")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert rows[0] == {"text": "no siento las piernas 😟", "level": "emergency",
                       "flags": ["sensory_loss"], "hypothetical": False,
                       "matches": ["sensory_loss: no siento las piernas"]}
    assert "😟" in result.output  # not escaped
    assert rows[1]["level"] == "routine"


def test_empty_input_writes_nothing():
    result = run("")
    assert result.exit_code == 0
    assert result.output == ""


def test_custom_vocabulary(tmp_path):
    text = DEFAULT_PATH.read_text(encoding="utf-8").replace(
        "      - dead leg\n", "      - dead leg\n      - legs on strike\n")
    path = tmp_path / "red_flags.yaml"
    path.write_text(text, encoding="utf-8")
    assert json.loads(run("legs on strike\n").output)["level"] == "routine"
    result = run("legs on strike\n", "--vocabulary", str(path))
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["flags"] == ["limb_weakness"]


def test_malformed_vocabulary_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("flags: {}\n", encoding="utf-8")
    result = run("hello\n", "--vocabulary", str(path))
    assert result.exit_code == 2  # configured wrong (README), as `serve` says of the same file
    assert result.output.startswith("error: red flags: ")
    assert "missing top-level section 'context'" in result.output
    assert str(path) in result.output


def test_missing_vocabulary_file(tmp_path):
    result = run("hello\n", "--vocabulary", str(tmp_path / "nope.yaml"))
    assert result.exit_code == 2
    assert "cannot read the vocabulary file" in result.output
