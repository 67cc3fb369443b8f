"""The `flows test` and `simulate` commands, through click's CliRunner."""

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from bot.cli_flows import flows_group, simulate_command

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
    monkeypatch.chdir(REPO)


def test_flows_test_passes_on_shipped_scripts():
    result = CliRunner().invoke(flows_group, ["test"])
    assert result.exit_code == 0, result.output
    assert "PASS flows/tests/welcome_yes.yaml" in result.output
    assert result.output.splitlines()[-1].endswith(" passed, 0 failed")


def test_flows_test_fails_with_a_diff_and_update_fixes_it(tmp_path):
    script = tmp_path / "welcome_yes.yaml"
    shutil.copy(REPO / "flows/tests/welcome_yes.yaml", script)
    script.write_text(script.read_text().replace("will come soon", "is coming"))
    failed = CliRunner().invoke(flows_group, ["test", str(script)])
    assert failed.exit_code == 1
    assert f"FAIL {script}" in failed.output
    assert "+bot: Thank you, Maria. Your first check-in will come soon." in failed.output
    assert failed.output.splitlines()[-1] == "0 passed, 1 failed"
    updated = CliRunner().invoke(flows_group, ["test", "--update", str(script)])
    assert updated.exit_code == 0, updated.output
    assert f"PASS {script} (updated)" in updated.output
    assert CliRunner().invoke(flows_group, ["test", str(script)]).exit_code == 0


def test_flows_test_refuses_broken_flows(tmp_path):
    shutil.copy(REPO / "tests/fixtures/broken_flows/unknown_flag.yaml", tmp_path / "x.yaml")
    result = CliRunner().invoke(flows_group, ["test", "--flows", str(tmp_path)])
    assert result.exit_code == 1
    assert f"{tmp_path}/x.yaml: node question: cases[1]: unknown flag 'numbness'" in result.output


def test_simulate_a_whole_checkin_from_piped_lines():
    replies = "8\nyes\nno\nno\nno\nno\nno\nno\nno\nno\nno\nno\nno\n2\nno\n"
    result = CliRunner().invoke(simulate_command, ["checkin"], input=replies)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("bot: Hi Maria, this is your check-in from Spine Oncology")
    assert "patient: 8" in lines
    assert "  [saved worst_pain = 8]" in lines
    assert "  [flag raised: severe_pain]" in lines
    assert "  [flag raised: new_back_pain]" in lines
    assert lines[-3].startswith("bot: Thank you, Maria. Your answers have gone to your care team")
    assert lines[-2:] == ["[conversation completed]", "[flags raised: severe_pain, new_back_pain]"]


def test_simulate_spanish_with_a_name():
    result = CliRunner().invoke(
        simulate_command, ["welcome", "--language", "es", "--name", "Ana"], input="sí\n"
    )
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0].startswith("bot: Hola Ana, le escribe")
    assert "bot: Gracias, Ana. Pronto recibira su primera consulta." in result.output


def test_simulate_wait_fires_the_timeout_and_input_can_run_out():
    result = CliRunner().invoke(simulate_command, ["welcome"], input="/wait 49h\n")
    assert result.exit_code == 0, result.output
    assert "  [no reply in time at consent]" in result.output
    assert "bot: Reminder from Spine Oncology Clinic: reply YES" in result.output
    assert "[conversation still waiting for a reply at consent_reminder]" in result.output


def test_simulate_unknown_flow():
    result = CliRunner().invoke(simulate_command, ["nope"])
    assert result.exit_code == 2
    assert "no flow 'nope' (flows: checkin, reminder, welcome)" in result.output


def test_simulate_with_a_flows_folder_that_does_not_load_is_a_setting_mistake(tmp_path):
    """exit 2 is for what was typed or configured wrong (README); a folder that is not there
    said so and exited 1, as a failing test run does."""
    result = CliRunner().invoke(simulate_command, ["checkin", "--flows", str(tmp_path / "nope")])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: flows: ") and "no such file" in result.output


def test_simulate_shows_the_deployments_clinic_numbers_not_the_examples(monkeypatch, tmp_path):
    """What an author sees is what this deployment's patients get: the clinic, hotline and
    emergency number of its settings (config/default.yaml, CHECKIN_CONFIG, the environment),
    written as the bot writes them, not the examples in flows/variables.yaml."""
    config = tmp_path / "leeds.yaml"
    config.write_text('clinic:\n  name: Leeds Spinal Clinic\n  phone: "+44 113 496 0000"\n'
                      '  acute_oncology_hotline: "+44 113 496 0999"\n'
                      '  emergency_number: "112"\n')
    monkeypatch.setenv("CHECKIN_CONFIG", str(config))
    result = CliRunner().invoke(simulate_command, ["checkin"], input="/quit\n")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == (
        "bot: Hi Maria, this is your check-in from Leeds Spinal Clinic, about the time since "
        "your last check-in (the last 7 days if this is your first). If you need help now, "
        "call +44 113 496 0999, or 112 in an emergency.")


def test_simulate_with_settings_that_do_not_load_says_why(monkeypatch, tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text('clinic:\n  acute_oncology_hotline: "call us"\n')
    monkeypatch.setenv("CHECKIN_CONFIG", str(config))
    result = CliRunner().invoke(simulate_command, ["checkin"], input="/quit\n")
    assert result.exit_code == 2
    assert result.output.startswith("error: config: clinic.acute_oncology_hotline"), \
        result.output


def test_simulate_refuses_a_language_the_deployment_does_not_offer(monkeypatch):
    """--language fr showed the English texts as if that were what a French speaker gets; the
    deployment offers only its `languages`, as enrolment does."""
    monkeypatch.delenv("CHECKIN_CONFIG", raising=False)
    result = CliRunner().invoke(simulate_command, ["welcome", "--language", "fr"],
                                input="/quit\n")
    assert result.exit_code == 2
    assert result.output == "error: language: must be one of en, es\n"
    spanish = CliRunner().invoke(simulate_command, ["welcome", "--language", "ES"],
                                 input="/quit\n")
    assert spanish.exit_code == 0 and spanish.output.startswith("bot: Hola Maria")


def test_simulate_shows_the_emergency_the_bot_would_send_and_stops_there():
    # In production every text is checked for red flags before the flow sees it: an
    # emergency gets the urgent-care instruction, the care team is alerted, the check-in ends.
    result = CliRunner().invoke(simulate_command, ["checkin"],
                                input="7\nI cant feel my legs\nno\n")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    at = lines.index("patient: I cant feel my legs")
    assert lines[at + 1] == "  [red flag: emergency (sensory_loss)]"
    assert lines[at + 2].startswith("bot: Maria, this could be serious and needs checking now. "
                                     "Call the acute oncology hotline now on")
    assert lines[at + 3] == ("  [the care team is alerted at once, and again until someone "
                             "acknowledges; the check-in stops here]")
    assert "patient: no" not in lines  # nothing more is read: the conversation has ended
    assert "not understood" not in result.output
    assert lines[-2:] == ["[conversation ended by the red flag]",
                          "[flags raised: severe_pain, sensory_loss]"]


def test_simulate_shows_the_safety_net_for_a_question_and_goes_on():
    result = CliRunner().invoke(simulate_command, ["checkin"],
                                input="what if my legs go numb?\n3\n")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    at = lines.index("patient: what if my legs go numb?")
    assert lines[at + 1] == "  [a question about a red flag: the safety net]"
    assert lines[at + 2].startswith("bot: If you ever get new weakness, numbness")
    assert "  [saved worst_pain = 3]" in lines  # the check-in goes on


def test_simulate_shows_an_urgent_red_flag_and_goes_on():
    result = CliRunner().invoke(simulate_command, ["checkin"], input="3\nI have a fever\n")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    at = lines.index("patient: I have a fever")
    assert lines[at + 1].startswith("  [red flag: urgent (")
    assert lines[at + 2].startswith("bot: Maria, thank you for telling us. Your care team will")
    assert lines[at + 3] == "  [the care team is told, to call the patient today]"


def test_simulate_stop_and_help_as_the_bot_answers_them():
    stopped = CliRunner().invoke(simulate_command, ["checkin"], input="3\nStop\nno\n")
    lines = stopped.output.splitlines()
    at = lines.index("patient: Stop")
    assert lines[at + 1].startswith("bot: You will get no more messages from Spine Oncology")
    assert "patient: no" not in lines
    assert lines[-2] == "[conversation ended: the patient opted out]"
    helped = CliRunner().invoke(simulate_command, ["checkin", "--language", "es"],
                                input="ayuda\n")
    lines = helped.output.splitlines()
    at = lines.index("patient: ayuda")
    assert "STOP" in lines[at + 1] and lines[at + 1].startswith("bot: ")
    assert lines[at + 2] == lines[1]  # the question waiting, asked again
