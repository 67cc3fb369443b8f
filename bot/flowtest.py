"""Golden conversation scripts: run a flow against a script of patient replies and time passing.

A script (flows/tests/*.yaml) names a flow and lists steps; the conversation starts before
the first step:

    flow: welcome
    description: The patient agrees.
    context: {language: en}          # optional, over the variables' examples
    steps:
      - bot: ["Hi Maria, ...", "..."]  # exactly what the bot sent since the last event
      - patient: "YES"
      - bot: ["Thank you, Maria. ..."]
      - wait: 49h                       # time passes, then the timeout fires if it is due
      - expect: {answers: {consent: "yes"}, flags: [], status: completed}

A failure is shown as a unified diff of the expected and the actual transcript; `update`
rewrites every `bot` step from what the engine actually sent (comments are not kept).
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from bot.domain.engine import (
    FlagRaised,
    Inbound,
    Start,
    StepResult,
    Timeout,
    step,
    with_sentences,
)
from bot.domain.flows import FlowLibrary, Variable, parse_duration
from bot.domain.triage import level_for_flags
from bot.texts import Texts, load_texts

DEFAULT_START = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)  # a Monday morning
EVENT_KEYS = ("patient", "wait")
STEP_KEYS = ("patient", "wait", "bot", "expect")
EXPECT_KEYS = ("answers", "flags", "status")


class ScriptError(Exception):
    """A golden script that cannot be run as written."""


@dataclass
class ScriptResult:
    """One script's outcome: `diff` is empty when it passed."""

    path: Path
    passed: bool
    diff: str = ""
    updated: bool = False


def default_context(variables: dict[str, Variable], language: str = "en") -> dict[str, Any]:
    """Every declared variable at its example value, plus the language."""
    context: dict[str, Any] = {name: var.example for name, var in variables.items()}
    context["language"] = language
    return context


def raises_emergency(result: StepResult) -> bool:
    """Whether the step raised a flag of the emergency tier (config/red_flags.yaml)."""
    flags = [r.name for r in result.recorded if isinstance(r, FlagRaised)]
    return bool(flags) and level_for_flags(flags) == "emergency"


def as_sent(result: StepResult, context: dict[str, Any], texts: Texts) -> list[str]:
    """What the patient gets for one step, in the order the service sends it
    (bot/services/conversations.py `_apply`): the flow's texts, then, when the step raised an
    emergency-tier flag, the bot's emergency instruction (`emergency` in
    config/messages.yaml, in the patient's language), with the team alerted."""
    sent = list(result.outbound)
    if raises_emergency(result):
        values = {k: v for k, v in context.items() if k != "language"}
        sent.append(texts.render("emergency", str(context.get("language") or "en"), **values))
    return sent


def find_scripts(paths: list[Path]) -> list[Path]:
    """The *.yaml scripts in the given files and folders, sorted."""
    found: list[Path] = []
    for path in map(Path, paths):
        found += sorted(path.glob("*.yaml")) if path.is_dir() else [path]
    return found


def _plain(value: Any) -> Any:
    """YAML's unquoted yes/no read as booleans mean the answers "yes"/"no"."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


class _ScriptLoader(yaml.SafeLoader):
    """Reads a `patient` reply exactly as written: YAML 1.1 would make `010` the number 8,
    `1:30` the number 90, `On` true, and a blank reply null, which reached the engine as
    "None" (a no)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        mapping = super().construct_mapping(node, deep=deep)
        for key_node, value_node in node.value:
            if key_node.value == "patient" and isinstance(value_node, yaml.ScalarNode):
                mapping["patient"] = value_node.value
        return mapping


def _read(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_ScriptLoader)
    except (OSError, yaml.YAMLError) as exc:
        raise ScriptError(f"{path}: cannot read script: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("flow"), str):
        raise ScriptError(f"{path}: a script is a mapping with a 'flow' and 'steps'")
    if not isinstance(raw.get("steps", []), list):
        raise ScriptError(f"{path}: 'steps' must be a list")
    for number, item in enumerate(raw.get("steps", []), start=1):
        if not isinstance(item, dict) or len(item) != 1 or next(iter(item)) not in STEP_KEYS:
            raise ScriptError(
                f"{path}: step {number}: expected one of {', '.join(STEP_KEYS)}, got {item!r}"
            )
    return raw


def _expect_lines(expected: dict[str, Any], state: dict[str, Any] | None) -> tuple[list, list]:
    state = state or {}
    actual_values = {
        "answers": state.get("answers", {}),
        "flags": sorted(state.get("flags", [])),
        "status": state.get("status"),
    }
    wanted, got = [], []
    for key in EXPECT_KEYS:
        if key in expected:
            value = _plain(expected[key])
            value = sorted(value) if key == "flags" and isinstance(value, list) else value
            wanted.append(f"expect {key}: {json.dumps(value, sort_keys=True)}")
            got.append(f"expect {key}: {json.dumps(actual_values[key], sort_keys=True)}")
    unknown = sorted(set(expected) - set(EXPECT_KEYS))
    wanted += [f"expect {key}: (unknown expectation)" for key in unknown]
    return wanted, got


def run_script(path: Path, library: FlowLibrary, update: bool = False) -> ScriptResult:
    """Run one script; with `update`, rewrite its bot steps from the actual output."""
    raw = _read(path)
    try:
        flow = library.get(raw["flow"])
    except KeyError:
        raise ScriptError(f"{path}: no flow {raw['flow']!r} is loaded") from None
    context = default_context(library.variables)
    context.update({k: str(v) for k, v in _plain(raw.get("context") or {}).items()})
    context = with_sentences(context, library.variables)  # as the service passes them
    now = raw.get("start_at", DEFAULT_START)
    now = datetime.fromisoformat(now) if isinstance(now, str) else now
    now = now if now.tzinfo else now.replace(tzinfo=UTC)

    messages = load_texts()  # the bot's own texts: the emergency instruction a step may add
    result = step(flow, None, Start(), now, context)
    state, sent = result.new_state, as_sent(result, context, messages)
    expected_lines, actual_lines, new_steps = ["start"], ["start"], []
    checked: list[str] | None = None

    def close_event() -> None:
        # Compare what the bot sent for the last event with the bot steps that followed it.
        expected_lines.extend(f"bot: {text}" for text in checked or [])
        actual_lines.extend(f"bot: {text}" for text in sent)
        if sent or checked is not None:
            new_steps.append({"bot": list(sent)})

    for item in raw.get("steps", []):
        key, value = next(iter(item.items()))
        if key == "bot":
            texts = value if isinstance(value, list) else [value]
            checked = (checked or []) + [str(_plain(text)) for text in texts]
            continue
        if key == "expect":
            close_event()
            sent, checked = [], None
            wanted, got = _expect_lines(value if isinstance(value, dict) else {}, state)
            expected_lines.extend(wanted)
            actual_lines.extend(got)
            new_steps.append(item)
            continue
        close_event()
        if key == "patient":
            text = str(_plain(value))
            result = step(flow, state, Inbound(text), now, context)
            line, value = f"patient: {text}", text
        else:
            try:
                now = now + parse_duration(str(value))
            except ValueError as exc:
                raise ScriptError(f"{path}: wait: {exc}") from None
            result = step(flow, state, Timeout(), now, context)
            line = f"wait: {value}"
        expected_lines.append(line)
        actual_lines.append(line)
        new_steps.append({key: value})
        state, sent, checked = result.new_state, as_sent(result, context, messages), None
    close_event()

    bot_only = [line for line in expected_lines if not line.startswith("bot: ")]
    updated = False
    if update:
        rewritten = dict(raw, steps=new_steps)
        if rewritten != raw:
            path.write_text(
                yaml.safe_dump(rewritten, sort_keys=False, allow_unicode=True, width=10_000),
                encoding="utf-8",
            )
            updated = True
        # After rewriting, only expectations (answers, flags, status) can still differ.
        actual_check = [line for line in actual_lines if not line.startswith("bot: ")]
        expected_lines, actual_lines = bot_only, actual_check
    diff = "".join(
        difflib.unified_diff(
            [line + "\n" for line in expected_lines],
            [line + "\n" for line in actual_lines],
            fromfile=f"{path} (expected)",
            tofile=f"{path} (actual)",
        )
    )
    return ScriptResult(path=path, passed=not diff, diff=diff, updated=updated)


def run_scripts(
    paths: list[Path], library: FlowLibrary, update: bool = False
) -> list[ScriptResult]:
    """Run every script found under `paths`; a script that can't run counts as failed."""
    results = []
    for path in find_scripts(paths):
        try:
            results.append(run_script(path, library, update=update))
        except ScriptError as exc:
            results.append(ScriptResult(path=path, passed=False, diff=str(exc) + "\n"))
    return results
