"""The flow validator: every rule a flow must pass before the bot will run it.

Each problem is one line, `path/file.yaml: node <id>: <problem>` or `path/file.yaml: <problem>`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from bot.domain.flows import (
    FLAG_NAMES,
    NODE_KINDS,
    SHIPPED_FLOWS_DIR,
    AskNode,
    BranchNode,
    EndNode,
    Flow,
    SendNode,
    StartFlowNode,
    Variable,
    VariablesFile,
    WaitNode,
    normalise_keyword,
)
from bot.domain.gsm7 import non_gsm_chars, segments
from bot.domain.keywords import CARRIER_WORDS, NO_WORDS, YES_WORDS, carrier_command, keyword_of
from bot.domain.triage_vocab import flag_levels

MAX_SEGMENTS = 2
VARIABLES_FILE = "variables.yaml"
# Not a trigger: the opt-out, opt-in and help keywords the bot acts on (English and Spanish,
# bot/domain/keywords.py), and replies that already mean an answer.
RESERVED_KEYWORDS = CARRIER_WORDS | YES_WORDS | NO_WORDS
_DOES = {"STOP": "it opts the patient out", "START": "it opts the patient back in",
         "HELP": "it asks for help"}
VARIABLE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass
class LintReport:
    """What linting found: error lines, the flows that parsed, and the variables used."""

    errors: list[str] = field(default_factory=list)
    flows: list[Flow] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    variables: dict[str, Variable] = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)  # flow id -> file it came from


class _StrictLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a repeated key (PyYAML keeps the last) and reads keys as
    written: YAML 1.1 would turn the key `on:` (or `yes:`, `no:`) into a boolean."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        self.flatten_mapping(node)  # keeps "<<: *anchor" merges working
        mapping: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, bool):
                key = key_node.value
            if not isinstance(key, str | int | float | type(None)):
                raise yaml.constructor.ConstructorError(
                    None, None, "a key must be a plain word", key_node.start_mark
                )
            if key in mapping:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            mapping[key] = self.construct_object(value_node, deep=deep)
        return mapping


def read_yaml(path: Path) -> tuple[Any, str | None]:
    """(data, None), or (None, problem) when the file can't be read as YAML."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"cannot read file: {exc.__class__.__name__}"
    try:
        return yaml.load(text, Loader=_StrictLoader), None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}: " if mark else ""
        return None, f"{where}{exc.problem or exc.context}"
    except yaml.YAMLError as exc:
        return None, f"invalid YAML: {exc}"


def _dotted(loc: list[Any]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int) and not isinstance(item, bool):
            parts.append(f"[{item + 1}]")  # positions count from 1, as a person reads a list
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts)


def _problem(error: dict[str, Any], loc: list[Any]) -> str:
    kind, message = error["type"], error["msg"]
    parent = _dotted(loc[:-1])
    prefix = f"{parent}: " if parent else ""
    if kind == "extra_forbidden":
        return f"{prefix}unknown key {loc[-1]!r}"
    if kind == "missing":
        return f"{prefix}missing key {loc[-1]!r}"
    if kind == "union_tag_invalid":
        kinds = ", ".join(NODE_KINDS)
        return f"unknown node kind {error['ctx']['tag']!r} (expected one of {kinds})"
    if kind == "union_tag_not_found":
        return "missing key 'kind'"
    message = message.removeprefix("Value error, ")
    message = message[:1].lower() + message[1:]
    value = error.get("input")
    if kind != "value_error" and isinstance(value, str | int | float | bool):
        message = f"{message}, got {value!r}"
    where = _dotted(loc)
    return f"{where}: {message}" if where else message


def schema_errors(path: Path, raw: Any, exc: ValidationError) -> list[str]:
    """ValidationError from the model as error lines, naming the node where there is one."""
    lines: list[str] = []
    for error in exc.errors():
        loc = list(error["loc"])
        label = f"{path}: "
        if len(loc) >= 2 and loc[0] == "nodes" and isinstance(loc[1], int):
            raw_node = raw["nodes"][loc[1]]
            node_id = raw_node.get("id") if isinstance(raw_node, dict) else None
            label += f"node {node_id if isinstance(node_id, str) else '#' + str(loc[1] + 1)}: "
            loc = loc[2:]
            if loc and loc[0] in NODE_KINDS:
                loc = loc[1:]
        line = label + _problem(error, loc)
        if line not in lines:
            lines.append(line)
    return lines


def load_variables(path: Path) -> tuple[dict[str, Variable], list[str]]:
    """The declared variables in a variables.yaml, and any error lines."""
    raw, problem = read_yaml(path)
    if problem:
        return {}, [f"{path}: {problem}"]
    try:
        return dict(VariablesFile.model_validate(raw).variables), []
    except ValidationError as exc:
        return {}, schema_errors(path, raw, exc)


def _targets(node: Any) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    if isinstance(node, SendNode | AskNode | WaitNode | BranchNode):
        found.append(("next", node.next))
    for index, case in enumerate(getattr(node, "cases", []), start=1):
        found.append((f"cases[{index}].next", case.next))
    if getattr(node, "timeout", None) is not None:
        found.append(("timeout.next", node.timeout.next))
    if getattr(node, "retry", None) is not None:
        found.append(("retry.fallback", node.retry.fallback))
    return found


def _texts(node: Any) -> list[tuple[str, Any]]:
    found = []
    if isinstance(node, SendNode | AskNode | EndNode) and node.text is not None:
        found.append(("text", node.text))
    if isinstance(node, AskNode) and node.retry is not None:
        found.append(("retry.text", node.retry.text))
    return found


def _longest(variable: Variable | None) -> str:
    """A variable's longest value: max_length letters, and the full stop of a sentence."""
    if variable is None:
        return ""
    return "X" * variable.max_length + ("." if variable.sentence else "")


def _text_problems(flow: Flow, label: str, text: Any, variables: dict[str, Variable]) -> list[str]:
    versions = text if isinstance(text, dict) else {flow.language: text}
    problems = [
        f"{label} has a {lang!r} version but the flow's languages are {', '.join(flow.languages)}"
        for lang in versions if lang not in flow.languages
    ]
    missing = [lang for lang in flow.languages if lang not in versions]
    problems += [f"{label} has no {lang!r} version" for lang in missing]
    for lang, body in versions.items():
        unknown = [name for name in VARIABLE.findall(body) if name not in variables]
        problems += [f"{label} ({lang}) uses unknown variable {{{name}}}" for name in unknown]
        bad = non_gsm_chars(body)
        if bad:
            shown = ", ".join(f"{char!r} (U+{ord(char):04X})" for char in bad)
            problems.append(f"{label} ({lang}) has characters that are not plain GSM-7: {shown}")
            continue
        longest = VARIABLE.sub(lambda m: _longest(variables.get(m.group(1))), body)
        count = segments(longest)
        if count > MAX_SEGMENTS:
            problems.append(
                f"{label} ({lang}) takes {count} SMS segments with variables at their maximum "
                f"length (the limit is {MAX_SEGMENTS})"
            )
    return problems


def _possible_values(flow: Flow, node: Any) -> list[Any] | None:
    """The answers a node can record, or None when any value goes (integers, free text)."""
    if isinstance(node, BranchNode):
        savers = [n for n in flow.nodes if getattr(n, "save", None) == node.on]
        node = savers[0] if savers else None
    if not isinstance(node, AskNode):
        return None
    if node.answer.type == "yesno":
        return ["yes", "no"]
    if node.answer.type == "choice":
        return [option.value for option in node.answer.options or []]
    return None


def _case_problems(flow: Flow, node: Any) -> list[str]:
    problems = []
    if isinstance(node, BranchNode) and node.on is not None:
        if not any(getattr(n, "save", None) == node.on for n in flow.nodes):
            problems.append(f"branches on {node.on!r}, which no node saves")
    possible = _possible_values(flow, node)
    for index, case in enumerate(getattr(node, "cases", []), start=1):
        when = case.when
        if isinstance(node, AskNode) and node.answer.type == "text" and when.tests_value:
            problems.append(f"cases[{index}] tests the value of a free-text answer")
            continue
        wanted = ([when.is_] if when.is_ is not None else []) + list(when.in_ or [])
        for value in wanted if possible is not None else []:
            if value not in possible:
                known = ", ".join(str(v) for v in possible)
                problems.append(f"cases[{index}] tests {value!r}, which is not an answer ({known})")
        for flag in case.flags + list(when.any_flag or []):
            if flag not in FLAG_NAMES:
                problems.append(f"cases[{index}]: unknown flag {flag!r}")
    return problems


def _keyword_word_problems(node: Any) -> list[str]:
    """An answer's word that is, alone, a keyword (BAJA, ALTA, AYUDA, STOP...): a reply of only
    that word is acted on as the keyword and never reaches the flow ("baja" meant as "low" would
    opt the patient out). A stop word among a yes/no question's no_words is allowed: opting
    out is a stronger no, and the word still reads as no inside a reply ("stop please")."""
    if not isinstance(node, AskNode):
        return []
    answer = node.answer
    lists = [(f"answer.options[{i}].words", option.all_words(), ())
             for i, option in enumerate(answer.options or [], start=1)]
    lists += [("answer.yes_words", answer.all_yes_words(), ()),
              ("answer.no_words", answer.all_no_words(), ("STOP",))]
    problems = []
    for label, words, allowed in lists:
        for word in words:
            command = carrier_command(keyword_of(word))
            if command is not None and command not in allowed:
                problems.append(f"{label}: {word!r} is a keyword ({_DOES[command]}): a reply "
                                "of only that never reaches the flow")
    return problems


_CALL_NOW = ("{hotline}", "{emergency_number}")


def _emergency_flag(flags: list[str]) -> str | None:
    """The first of `flags` of the emergency tier (config/red_flags.yaml), if any."""
    levels = flag_levels()  # the file's declared levels: nothing compiled at start-up
    for flag in flags:
        if flag in FLAG_NAMES and levels.get(flag) == "emergency":
            return flag
    return None


def _emergency_problems(flow: Flow, node: Any) -> list[str]:
    """An emergency-tier flag, raised on entering `node` or by one of its cases, makes the
    service send its emergency instruction (config/messages.yaml `emergency`: the hotline,
    the emergency number, lie flat and keep still) and alert the team. What the flow then
    says without another reply must not give {hotline} or {emergency_number} again (a second
    call-now text worded otherwise), and it must end there, not ask more questions of a
    patient just told to call now. A flow's own words of why ("we could not understand your
    answer, so we have alerted your care team") are fine."""
    starts = []
    flag = _emergency_flag(list(node.flags))
    if flag is not None:
        starts.append(("", flag, node.id))
    for index, case in enumerate(getattr(node, "cases", []), start=1):
        flag = _emergency_flag(list(case.flags))
        if flag is not None:
            starts.append((f"cases[{index}] ", flag, case.next))
    problems = []
    for label, flag, start in starts:
        raised = f"{label}raises emergency-tier flag {flag!r}"
        path, seen, todo = [], set(), [start]
        while todo:
            current = flow.node(todo.pop())
            if current is None or current.id in seen:
                continue
            seen.add(current.id)
            path.append(current)
            if isinstance(current, SendNode | BranchNode):
                todo.extend(target for _, target in _targets(current))
        for current in path:
            for _, text in _texts(current):
                bodies = text.values() if isinstance(text, dict) else [text]
                if isinstance(current, AskNode | WaitNode) and current.id != node.id:
                    continue  # reported below as a question asked after it
                if any(v in body for body in bodies for v in _CALL_NOW):
                    problems.append(
                        f"{raised}, then node {current.id} gives {{hotline}} or "
                        "{emergency_number}: the emergency instruction the bot sends for it "
                        "does, so it would be said twice in other words")
                    break
        for current in path:
            if isinstance(current, AskNode | WaitNode) and current.id != node.id:
                problems.append(f"{raised}, then asks node {current.id}: the check-in must end "
                                "at the emergency instruction")
    return problems


def _reachable(flow: Flow) -> set[str]:
    seen, todo = set(), [flow.start]
    while todo:
        node = flow.node(todo.pop())
        if node is None or node.id in seen:
            continue
        seen.add(node.id)
        todo.extend(target for _, target in _targets(node))
    return seen


def _loop_through(flow: Flow, start: str) -> list[str] | None:
    """A path start -> ... -> start through nodes that neither wait nor end, if one exists."""
    successors = {node.id: [target for _, target in _targets(node)
                            if isinstance(flow.node(target), SendNode | BranchNode)]
                  for node in flow.nodes}
    return _cycle(start, successors)


def _reached_at_once(flow: Flow, node_id: str) -> list[Any]:
    """The nodes that wait, end or hand over, reached from node_id through send and branch
    nodes only: where a conversation can stop, or leave, without another reply."""
    found, seen, todo = [], set(), [node_id]
    while todo:
        node = flow.node(todo.pop())
        if node is None or node.id in seen:
            continue
        seen.add(node.id)
        if isinstance(node, SendNode | BranchNode):
            todo.extend(target for _, target in _targets(node))
        else:
            found.append(node)
    return found


def _cycle(start: str, successors: dict[str, list[str]]) -> list[str] | None:
    """A path start -> ... -> start in the graph `successors`, if one exists."""
    for first in successors.get(start, []):
        back = _path(first, start, successors)
        if back is not None:
            return [start, *back]
    return None


def _no_reply_loops(flow: Flow) -> dict[str, list[str]]:
    """Waiting nodes whose timeouts, with no reply ever, come back to them: the patient is
    asked again and again and the conversation never ends. Node id -> the loop."""
    successors = {
        node.id: [n.id for n in _reached_at_once(flow, node.timeout.next)
                  if isinstance(n, AskNode | WaitNode)]
        for node in flow.nodes
        if isinstance(node, AskNode | WaitNode) and node.timeout is not None
    }
    loops: dict[str, list[str]] = {}
    looped: set[str] = set()
    for node_id in successors:
        if node_id in looped:
            continue
        loop = _cycle(node_id, successors)
        if loop:
            looped.update(loop)
            loops[node_id] = loop
    return loops


def _handover_loops(report: LintReport) -> list[str]:
    """Flows that start one another, round to the first, without waiting for a reply: the
    service would start them for ever. Only a hand-over reached from a flow's start without a
    wait counts; after a wait the patient's reply (or a timeout) breaks the round."""
    at_once = {
        flow.id: [node for node in _reached_at_once(flow, flow.start)
                  if isinstance(node, StartFlowNode)]
        for flow in report.flows
    }
    successors = {flow_id: [node.flow for node in nodes] for flow_id, nodes in at_once.items()}
    lines = []
    for flow in report.flows:
        for node in at_once[flow.id]:
            back = _path(node.flow, flow.id, successors)
            if back is None:
                continue
            lines.append(
                f"{report.paths[flow.id]}: node {node.id}: starts flow {node.flow!r}, which "
                f"comes back here without waiting for a reply: {' -> '.join([flow.id, *back])}"
            )
    return lines


def _path(start: str, goal: str, successors: dict[str, list[str]]) -> list[str] | None:
    """start -> ... -> goal in the graph `successors`, if one exists."""
    parents: dict[str, str | None] = {start: None}
    todo = [start]
    while todo:
        current = todo.pop(0)
        if current == goal:
            chain = [current]
            while parents[chain[-1]] is not None:
                chain.append(parents[chain[-1]])
            return list(reversed(chain))
        for target in successors.get(current, []):
            if target not in parents:
                parents[target] = current
                todo.append(target)
    return None


def lint_flow(path: Path, flow: Flow, variables: dict[str, Variable]) -> list[str]:
    """Every rule that looks at one flow on its own."""
    lines = []
    if flow.node(flow.start) is None:
        lines.append(f"{path}: start node {flow.start!r} does not exist")
    for word in flow.triggers:
        if normalise_keyword(word) in RESERVED_KEYWORDS:
            lines.append(f"{path}: trigger {word!r} is reserved (carrier keywords, YES and NO)")
    reachable, looped, seen_ids = _reachable(flow), set(), set()
    no_reply_loops = _no_reply_loops(flow)
    for node in flow.nodes:
        problems = []
        if node.id in seen_ids:
            problems.append("duplicate node id")
        seen_ids.add(node.id)
        for label, target in _targets(node):
            if flow.node(target) is None:
                problems.append(f"{label} {target!r} does not exist")
        if isinstance(node, AskNode | WaitNode) and node.timeout is None:
            problems.append("waits for a reply but has no timeout path")
        if node.id not in reachable and flow.node(flow.start) is not None:
            problems.append(f"not reachable from the start node {flow.start!r}")
        if isinstance(node, SendNode | BranchNode) and node.id not in looped:
            loop = _loop_through(flow, node.id)
            if loop:
                looped.update(loop)
                problems.append(f"loops {' -> '.join(loop)} without waiting for a reply or ending")
        if node.id in no_reply_loops:
            loop = " -> ".join(no_reply_loops[node.id])
            problems.append(f"never ends if the patient does not reply: {loop}")
        problems += [f"unknown flag {flag!r}" for flag in node.flags if flag not in FLAG_NAMES]
        problems += _case_problems(flow, node)
        problems += _emergency_problems(flow, node)
        problems += _keyword_word_problems(node)
        for label, text in _texts(node):
            problems += _text_problems(flow, label, text, variables)
        lines += [f"{path}: node {node.id}: {problem}" for problem in problems]
    return lines


def _flow_files(paths: list[Path], report: LintReport) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
            files += [f for f in found if f.name != VARIABLES_FILE]
        elif path.is_file():
            files.append(path)
        else:
            report.errors.append(f"{path}: no such file or directory")
    return files


def _find_variables_file(paths: list[Path]) -> Path | None:
    for path in paths:
        candidate = (path if path.is_dir() else path.parent) / VARIABLES_FILE
        if candidate.is_file():
            return candidate
    shipped = SHIPPED_FLOWS_DIR / VARIABLES_FILE
    return shipped if shipped.is_file() else None


def lint_paths(paths: list[Path], variables_file: str | Path | None = None) -> LintReport:
    """Lint flow files and folders (a folder's *.yaml, not its sub-folders) as one set.

    Variables come from `variables_file`, else the first variables.yaml beside the given
    paths, else the shipped flows/variables.yaml.
    """
    report = LintReport()
    paths = [Path(p) for p in paths]
    found = Path(variables_file) if variables_file else _find_variables_file(paths)
    if found is not None:
        report.variables, errors = load_variables(found)
        report.errors += errors
    report.files = _flow_files(paths, report)
    keywords: dict[str, str] = {}
    for path in report.files:
        raw, problem = read_yaml(path)
        if problem or not isinstance(raw, dict):
            report.errors.append(f"{path}: {problem or 'expected a mapping of flow keys'}")
            continue
        try:
            flow = Flow.model_validate(raw)
        except ValidationError as exc:
            report.errors += schema_errors(path, raw, exc)
            continue
        report.errors += lint_flow(path, flow, report.variables)
        if flow.id in report.paths:
            first = report.paths[flow.id]
            report.errors.append(f"{path}: flow id {flow.id!r} is already defined in {first}")
            continue
        for word in flow.triggers:
            owner = keywords.setdefault(normalise_keyword(word), flow.id)
            if owner != flow.id:
                where = report.paths[owner]
                report.errors.append(
                    f"{path}: trigger {word!r} is already used by flow {owner!r} ({where})"
                )
        report.paths[flow.id] = path
        report.flows.append(flow)
    for flow in report.flows:
        for node in flow.nodes:
            if isinstance(node, StartFlowNode) and node.flow not in report.paths:
                where = report.paths[flow.id]
                report.errors.append(
                    f"{where}: node {node.id}: starts flow {node.flow!r}, which is not loaded"
                )
    report.errors += _handover_loops(report)
    return report
