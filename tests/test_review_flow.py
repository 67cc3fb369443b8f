"""Review of the flow area: answer parsing, the linter and the golden runner."""

from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.domain.answers import ParseResult, parse_choice, parse_integer, parse_yesno
from bot.domain.engine import Inbound, Start, step
from bot.domain.flows import load_flows

REPO = Path(__file__).resolve().parents[1]
NOW = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)
CONTEXT = {
    "name": "Maria", "clinic_name": "Spine Clinic", "clinic_phone": "020 7946 0000",
    "hotline": "0808 157 0192", "emergency_number": "999", "language": "en",
}
LIBRARY = load_flows(REPO / "flows")


def _options(flow_id, node_id):
    node = LIBRARY.get(flow_id).node(node_id)
    return [option.all_words() for option in node.answer.options]


# ---- a "no" that is not a zero -------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "no idea", "No idea, it hurts a lot", "No, worse than ever", "no better",
    "no relief at all", "none of your business", "no painkillers help",
])
def test_a_no_that_does_not_mean_no_pain_is_not_read_as_a_zero(text):
    assert not parse_integer(text, 0, 10).ok


@pytest.mark.parametrize("text", ["no", "none", "no pain", "No pain at all", "none today",
                                  "nada", "nada de dolor", "no pain, thanks"])
def test_no_pain_is_still_a_zero(text):
    assert parse_integer(text, 0, 10) == ParseResult(ok=True, value=0)


@pytest.mark.parametrize("text", ["no energy", "No energy at all", "no idea",
                                  "Nope, shattered", "never felt so tired", "no change"])
def test_a_no_with_more_to_say_is_not_the_lowest_tiredness_option(text):
    assert not parse_choice(text, _options("checkin", "fatigue")).ok


@pytest.mark.parametrize("text", ["no problem", "No worries", "yes I will take them later",
                                  "yes nope"])
def test_a_reminder_reply_is_not_picked_by_a_yes_or_no_word_alone(text):
    assert not parse_choice(text, _options("reminder", "remind")).ok


@pytest.mark.parametrize("text, value", [
    ("yes I took them", 1), ("Yep all good", 1), ("took them", 1),  # 1: done
    ("no I forgot", 2), ("No sorry", 2), ("missed it", 2)])  # 2: cannot
def test_everyday_replies_to_a_reminder_are_understood(text, value):
    """The rule above must not re-prompt what people answer a tablet reminder with."""
    result = parse_choice(text, _options("reminder", "remind"))
    assert (result.ok, result.value) == (True, value)


@pytest.mark.parametrize(("text", "value"), [
    ("no", 1), ("None x", 1), ("no thanks", 1), ("para nada", 1), ("no, not at all", 1),
])
def test_a_plain_no_is_still_the_lowest_tiredness_option(text, value):
    assert parse_choice(text, _options("checkin", "fatigue")) == ParseResult(ok=True, value=value)


@pytest.mark.parametrize(("text", "value"), [("Yes", 1), ("yes thanks", 1), ("No", 2),
                                             ("no, can't make it", 2), ("Si, hecho", 1)])
def test_a_plain_yes_or_no_still_answers_the_reminder(text, value):
    assert parse_choice(text, _options("reminder", "remind")) == ParseResult(ok=True, value=value)


def test_no_idea_to_the_pain_question_asks_again_instead_of_skipping_the_pain_questions():
    flow = LIBRARY.get("checkin")
    state = step(flow, None, Start(), NOW, CONTEXT).new_state
    result = step(flow, state, Inbound("No idea, it hurts a lot"), NOW, CONTEXT)
    assert result.new_state["node"] == "pain"
    assert "worst_pain" not in result.new_state["answers"]
    assert result.outbound == [
        "Sorry, we did not understand. Please reply with one number from 0 (no pain) to 10 "
        "(worst pain), for example 3."]


# ---- the linter: flows that never stop -----------------------------------------------------

def _flow_file(folder, flow_id, nodes):
    import yaml

    data = {"id": flow_id, "revision": 1, "title": flow_id, "language": "en",
            "languages": ["en"], "start": nodes[0]["id"], "nodes": nodes}
    (folder / f"{flow_id}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def test_two_flows_that_start_each_other_at_once_are_refused(tmp_path):
    from bot.domain.flow_lint import lint_paths

    _flow_file(tmp_path, "ping", [{"id": "hi", "kind": "send", "text": "Ping.", "next": "go"},
                                  {"id": "go", "kind": "start_flow", "flow": "pong"}])
    _flow_file(tmp_path, "pong", [{"id": "go", "kind": "start_flow", "flow": "ping"}])
    report = lint_paths([tmp_path], variables_file=REPO / "flows" / "variables.yaml")
    assert report.errors == [
        f"{tmp_path}/ping.yaml: node go: starts flow 'pong', which comes back here without "
        "waiting for a reply: ping -> pong -> ping",
        f"{tmp_path}/pong.yaml: node go: starts flow 'ping', which comes back here without "
        "waiting for a reply: pong -> ping -> pong",
    ]


def test_a_hand_over_after_a_reply_is_not_a_loop(tmp_path):
    from bot.domain.flow_lint import lint_paths

    _flow_file(tmp_path, "ping", [
        {"id": "q", "kind": "ask", "text": "Again? Reply YES or NO.", "answer": {"type": "yesno"},
         "retry": {"text": "YES or NO?", "fallback": "bye"},
         "timeout": {"after": "1h", "next": "bye"}, "next": "go"},
        {"id": "go", "kind": "start_flow", "flow": "pong"},
        {"id": "bye", "kind": "end"}])
    _flow_file(tmp_path, "pong", [{"id": "go", "kind": "start_flow", "flow": "ping"}])
    assert lint_paths([tmp_path], variables_file=REPO / "flows" / "variables.yaml").errors == []


def test_a_wait_whose_timeout_comes_back_to_itself_is_refused(tmp_path):
    from bot.domain.flow_lint import lint_paths

    _flow_file(tmp_path, "idle", [
        {"id": "pause", "kind": "wait", "timeout": {"after": "1d", "next": "pause"},
         "next": "bye"},
        {"id": "bye", "kind": "end"}])
    report = lint_paths([tmp_path], variables_file=REPO / "flows" / "variables.yaml")
    assert report.errors == [f"{tmp_path}/idle.yaml: node pause: never ends if the patient "
                             "does not reply: pause -> pause"]


# ---- yes/no: the everyday short answers ----------------------------------------------------

@pytest.mark.parametrize("text", ["No I haven't", "No, I haven't", "no i havent", "I haven't",
                                  "No, it hasn't", "No it isn't", "No I didn't", "Nope, haven't",
                                  "No, it doesn't", "No I wasn't", "No tengo",
                                  "No, no he tenido"])
def test_a_no_with_its_own_verb_is_a_no(text):
    assert parse_yesno(text) == ParseResult(ok=True, value="no")


@pytest.mark.parametrize("text", ["Yes it has", "Yes it does", "yes I have", "Sí, he tenido",
                                  "si tengo"])
def test_a_yes_with_its_own_verb_is_a_yes(text):
    assert parse_yesno(text) == ParseResult(ok=True, value="yes")


@pytest.mark.parametrize("text", ["yes I haven't", "I haven't, yes", "Yes, it hasn't"])
def test_a_verb_that_contradicts_the_yes_or_no_is_not_understood(text):
    assert not parse_yesno(text).ok


# ---- golden scripts: the patient's words reach the engine as written ----------------------

@pytest.mark.parametrize(("written", "sent"), [("", ""), ("010", "010"), ("On", "On"),
                                               ("1:30", "1:30"), ("'7'", "7")])
def test_a_golden_script_sends_the_patients_words_as_written(tmp_path, written, sent):
    from bot.flowtest import run_script

    script = tmp_path / "words.yaml"
    script.write_text("flow: checkin\nsteps:\n  - patient: 0\n"
                      f"  - patient: {written}\n  - expect: {{status: waiting}}\n")
    flow = LIBRARY.get("checkin")
    state = step(flow, None, Start(), NOW, CONTEXT).new_state
    state = step(flow, state, Inbound("0"), NOW, CONTEXT).new_state
    expected = step(flow, state, Inbound(sent), NOW, CONTEXT)
    result = run_script(script, LIBRARY, update=True)
    import yaml

    steps = yaml.safe_load(script.read_text())["steps"]
    assert steps[3] == {"patient": sent}  # --update keeps the words too
    assert steps[4] == {"bot": expected.outbound}
    assert result.passed


def test_a_blank_reply_in_a_golden_script_is_not_read_as_none(tmp_path):
    from bot.flowtest import run_script

    script = tmp_path / "blank.yaml"
    # "None" (what YAML made of the blank) would be read as NO and move on to weakness.
    weakness = LIBRARY.get("checkin").node("weakness").text["en"]
    script.write_text("flow: checkin\nsteps:\n  - patient: 0\n  - patient:\n"
                      f"  - bot: ['{weakness}']\n"
                      "  - expect: {answers: {worst_pain: 0, numbness: 'no'}}\n")
    result = run_script(script, LIBRARY)
    assert not result.passed
    assert "+bot: Sorry, we did not understand. Please reply YES or NO." in result.diff


# ---- a slash between two scores is a range, not a score out of something ------------------

@pytest.mark.parametrize("text", ["6/7", "6 / 7", "six/seven", "7/8", "6 of 7"])
def test_two_scores_with_a_slash_are_not_understood(text):
    assert not parse_integer(text, 0, 10).ok


@pytest.mark.parametrize(("text", "value"), [("6/10", 6), ("6 out of 10", 6), ("10/10", 10),
                                             ("seven out of ten", 7), ("0/10", 0)])
def test_a_score_out_of_the_scale_is_still_understood(text, value):
    assert parse_integer(text, 0, 10) == ParseResult(ok=True, value=value)


def test_a_score_out_of_the_choice_scale_is_still_understood():
    options = _options("checkin", "fatigue")
    assert parse_choice("4/5", options) == ParseResult(ok=True, value=4)
    assert not parse_choice("2/3", options).ok


def test_six_slash_seven_pain_is_asked_again_not_taken_as_six():
    flow = LIBRARY.get("checkin")
    state = step(flow, None, Start(), NOW, CONTEXT).new_state
    result = step(flow, state, Inbound("6/7"), NOW, CONTEXT)
    assert result.new_state["node"] == "pain"
    assert result.new_state["answers"] == {}


# ---- yes/no: a yes with how much or how often -----------------------------------------------

@pytest.mark.parametrize("text", ["yes a bit", "Yes a little", "yes slightly", "yeah sometimes",
                                  "yes occasionally", "yes a lot", "yes very", "yes quite a bit",
                                  "yes a little bit", "yes mild", "si un poco", "si a veces",
                                  "yes, a bit", "Yes abit"])
def test_a_yes_with_how_much_or_how_often_is_a_yes(text):
    # "Is the pain worse at night?" "yes a bit": re-asking it was no help to the patient, and
    # to "any new numbness?" the yes is the answer that matters.
    assert parse_yesno(text) == ParseResult(ok=True, value="yes")


@pytest.mark.parametrize("text", ["no a bit", "no sometimes", "a bit", "sometimes", "no, a little",
                                  "yes a bit no", "a little yes no"])
def test_a_degree_beside_a_no_or_alone_is_not_understood(text):
    # "no, a little" may mean a little yes: asked again, as before.
    assert not parse_yesno(text).ok


# ---- yes/no: an answer and its reason with no comma between -----------------------------------

@pytest.mark.parametrize(("text", "value"), [
    ("yes its new", "yes"), ("yes it is new", "yes"), ("Yeah worse at night", "yes"),
    ("yes started last week", "yes"), ("yes but only when I lie down", "yes"),
    ("no its the same as always", "no"), ("no its fine", "no"), ("nope same as usual", "no"),
    ("Si es nuevo", "yes"),
])
def test_an_answer_then_its_reason_without_a_comma_is_understood(text, value):
    # "Is this pain new?" "yes its new": as "yes, it's new" was.
    assert parse_yesno(text) == ParseResult(ok=True, value=value)


@pytest.mark.parametrize("text", ["no only when I cough", "no my feet are numb",
                                  "no its getting worse", "yes I dont think so", "yes no",
                                  "no but sometimes", "yes not really"])
def test_a_reason_that_may_take_the_answer_back_is_still_asked_again(text):
    assert not parse_yesno(text).ok


@pytest.mark.parametrize("text", [
    "no feeling in my legs", "not able to walk", "dont feel my feet", "no sensation",
    "never felt this weak", "no control of my bladder", "no strength in my legs", "not walking",
    "no idea", "no clue", "nothing below my waist", "no puedo caminar", "no siento las piernas",
])
def test_a_no_that_negates_the_words_after_it_is_not_a_no(text):
    # No comma: the no is the rest's own negation ("no feeling in my legs" is numbness), not
    # an answer followed by its reason. Asked again, as before answers without a comma.
    assert not parse_yesno(text).ok


def test_no_sensation_to_the_numbness_question_is_asked_again_not_saved_as_no():
    flow = LIBRARY.get("checkin")
    state = step(flow, None, Start(), NOW, CONTEXT).new_state
    state = step(flow, state, Inbound("0"), NOW, CONTEXT).new_state
    assert state["node"] == "numbness"
    result = step(flow, state, Inbound("no sensation in my feet"), NOW, CONTEXT)
    assert result.new_state["node"] == "numbness"
    assert "numbness" not in result.new_state["answers"]


@pytest.mark.parametrize("text", ["not a lot", "no a lot", "no, a lot", "nope very much",
                                  "no, quite a lot", "no, somewhat", "no un poco", "nah abit"])
def test_how_much_after_a_no_is_asked_again(text):
    # "Any new numbness?" "not a lot": a little numbness, maybe. As "no, a little" is.
    assert not parse_yesno(text).ok
