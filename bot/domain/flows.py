"""Conversation flows as data: the YAML format's model, the variables, and the flow library.

One flow per YAML file (see flows/README.md). The model only checks shape and types; the
rules that look across nodes, texts and files live in flow_lint.py, and load_flows() runs both
so that a broken flow stops the bot from starting.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, model_validator

FLAG_NAMES = frozenset({
    "limb_weakness", "sensory_loss", "saddle_anaesthesia", "bladder_dysfunction",
    "bowel_dysfunction", "gait_balance", "radicular_pain", "severe_pain", "night_pain",
    "cough_pain", "uncontrolled_pain", "new_back_pain", "fever", "constipation", "fatigue",
})
NODE_KINDS = ("send", "ask", "wait", "branch", "start_flow", "end")
ANSWER_TYPES = ("yesno", "integer", "choice", "text")
SHIPPED_FLOWS_DIR = Path(__file__).resolve().parents[2] / "flows"

_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
# Sized to the columns they are stored in: node ids in conversations.current_node and answer
# keys in answers.question_key (64); a flow's id is also the kind of every message it writes
# (messages.kind and outbox.kind, 20). Longer, PostgreSQL refuses the row (SQLite would not).
Identifier = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]
FlowId = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=20)]
Language = Annotated[str, Field(pattern=r"^[a-z]{2,3}$")]


class FlowError(Exception):
    """One or more flows are broken; `errors` holds one line per problem."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = list(errors)


def parse_duration(text: str) -> timedelta:
    """'4h' -> 4 hours; also '30m', '2d', '1h30m', '45s'. Raises ValueError otherwise."""
    match = _DURATION.match(text.strip()) if isinstance(text, str) else None
    if not match or not any(match.groups()):
        raise ValueError(f"{text!r} is not a duration like 30m, 4h or 2d")
    days, hours, minutes, seconds = (int(group or 0) for group in match.groups())
    delta = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    if delta <= timedelta(0):
        raise ValueError(f"{text!r} must be longer than zero")
    return delta


def _check_text(value: Any) -> Any:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        return value
    raise ValueError("must be a text or a mapping of language to text, e.g. {en: ..., es: ...}")


def _yes_no_word(value: Any) -> Any:
    # YAML 1.1 reads an unquoted yes/no as a boolean.
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return [_yes_no_word(item) for item in value]
    return value


Text = Annotated[str | dict[str, str], BeforeValidator(_check_text)]
def _check_duration(value: Any) -> Any:
    parse_duration(value)
    return value


Duration = Annotated[str, BeforeValidator(_check_duration)]
AnswerValue = Annotated[str | int, BeforeValidator(_yes_no_word)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)


class Condition(_Model):
    """All given tests must hold. Value tests look at the answer (or `on` key of a branch)."""

    is_: AnswerValue | None = Field(None, alias="is")
    in_: Annotated[list[str | int], BeforeValidator(_yes_no_word)] | None = Field(None, alias="in")
    at_least: int | None = None
    at_most: int | None = None
    any_flag: list[str] | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> Condition:
        if all(v is None for v in (self.is_, self.in_, self.at_least, self.at_most, self.any_flag)):
            raise ValueError("needs at least one of is, in, at_least, at_most, any_flag")
        return self

    @property
    def tests_value(self) -> bool:
        return any(v is not None for v in (self.is_, self.in_, self.at_least, self.at_most))


class Case(_Model):
    when: Condition
    next: str
    flags: list[str] = []


Words = list[str] | dict[str, list[str]]


def _all_words(words: Words | None) -> list[str]:
    if words is None:
        return []
    if isinstance(words, list):
        return list(words)
    return [word for by_language in words.values() for word in by_language]


class Option(_Model):
    value: Identifier
    words: Words = []

    def all_words(self) -> list[str]:
        return _all_words(self.words)


class AnswerSpec(_Model):
    type: Literal["yesno", "integer", "choice", "text"]
    min: int | None = None
    max: int | None = None
    options: list[Option] | None = None
    # A yes/no question's own ways of saying yes or no ("ok" to agree, "stop texting me").
    yes_words: Words | None = None
    no_words: Words | None = None

    def all_yes_words(self) -> list[str]:
        return _all_words(self.yes_words)

    def all_no_words(self) -> list[str]:
        return _all_words(self.no_words)

    @model_validator(mode="after")
    def _fits_type(self) -> AnswerSpec:
        if self.type != "yesno" and (self.yes_words is not None or self.no_words is not None):
            raise ValueError("yes_words and no_words are only for yesno answers")
        if self.type != "integer" and (self.min is not None or self.max is not None):
            raise ValueError("min and max are only for integer answers")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min is greater than max")
        if self.type == "choice" and (not self.options or len(self.options) < 2):
            raise ValueError("a choice needs at least two options")
        if self.type != "choice" and self.options is not None:
            raise ValueError("options are only for choice answers")
        return self


class Retry(_Model):
    text: Text
    max_tries: int = Field(3, ge=1, le=10)
    fallback: str


class Timeout(_Model):
    after: Duration
    next: str

    @property
    def delta(self) -> timedelta:
        return parse_duration(self.after)


class _Node(_Model):
    id: Identifier
    flags: list[str] = []


class SendNode(_Node):
    kind: Literal["send"]
    text: Text
    next: str


class AskNode(_Node):
    kind: Literal["ask"]
    text: Text
    answer: AnswerSpec
    save: Identifier | None = None
    retry: Retry | None = None
    timeout: Timeout | None = None
    cases: list[Case] = []
    next: str

    @model_validator(mode="after")
    def _retry_when_needed(self) -> AskNode:
        if self.retry is None and self.answer.type != "text":
            raise ValueError(f"retry is required for {self.answer.type} questions")
        return self


class WaitNode(_Node):
    kind: Literal["wait"]
    save: Identifier | None = None
    timeout: Timeout | None = None
    next: str


class BranchNode(_Node):
    kind: Literal["branch"]
    on: Identifier | None = None
    cases: list[Case] = []
    next: str

    @model_validator(mode="after")
    def _on_when_needed(self) -> BranchNode:
        if self.on is None and any(case.when.tests_value for case in self.cases):
            raise ValueError("cases test a value but the branch has no 'on' key")
        return self


class StartFlowNode(_Node):
    kind: Literal["start_flow"]
    flow: FlowId


class EndNode(_Node):
    kind: Literal["end"]
    text: Text | None = None


Node = Annotated[
    SendNode | AskNode | WaitNode | BranchNode | StartFlowNode | EndNode,
    Field(discriminator="kind"),
]


class Flow(_Model):
    """One revision of one flow."""

    id: FlowId
    revision: int = Field(ge=1)
    title: str
    language: Language
    languages: list[Language] = Field(min_length=1)
    start: str
    triggers: list[Annotated[str, Field(pattern=r"^[A-Z0-9]+$")]] = []
    nodes: list[Node] = Field(min_length=1)
    _index: dict[str, Any] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _default_language_declared(self) -> Flow:
        if self.language not in self.languages:
            raise ValueError(f"default language {self.language!r} is not in languages")
        return self

    def model_post_init(self, context: Any, /) -> None:
        for node in self.nodes:
            self._index.setdefault(node.id, node)

    def node(self, node_id: str) -> Any:
        """The node with this id, or None."""
        return self._index.get(node_id)

    def to_json(self) -> str:
        """The whole definition as JSON: the snapshot a conversation keeps (see flows/README.md)."""
        return self.model_dump_json(by_alias=True, exclude_none=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Flow:
        """A flow from a snapshot made by to_json()."""
        return cls.model_validate_json(text)

    def fingerprint(self) -> str:
        """sha256 of the canonical definition: differs whenever anything in the flow changes."""
        data = self.model_dump(mode="json", by_alias=True)
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


class Variable(_Model):
    """A text variable such as {name}: its worst-case length decides how long texts may be."""

    max_length: int = Field(ge=1, le=500)
    example: str = ""
    description: str = ""
    # A sentence of its own inside a text ("{reminder_text} Reply 1 if done"): the service
    # adds a full stop when the value ends with a letter or a digit (engine.end_sentence).
    sentence: bool = False


class VariablesFile(_Model):
    variables: dict[Identifier, Variable]


def normalise_keyword(word: str) -> str:
    """'check-in ' -> 'CHECKIN': what a keyword trigger is compared on."""
    return re.sub(r"[^A-Z0-9]", "", word.upper())


class FlowLibrary:
    """Every loaded flow revision by id: the current one from the files, and older snapshots."""

    def __init__(self, flows: Iterable[Flow] = (), variables: dict[str, Variable] | None = None):
        self.variables: dict[str, Variable] = dict(variables or {})
        self._revisions: dict[str, dict[int, Flow]] = {}
        self._current: dict[str, int] = {}
        self._keywords: dict[str, str] = {}
        for flow in flows:
            self.register(flow)
            self._current[flow.id] = flow.revision
            for word in flow.triggers:
                self._keywords[normalise_keyword(word)] = flow.id

    def register(self, flow: Flow) -> None:
        """Keep a revision (e.g. a snapshot stored with a conversation); the current one stays.

        Raises FlowError when a different definition is already known under the same revision:
        a flow was edited without bumping its revision number.
        """
        known = self._revisions.setdefault(flow.id, {}).get(flow.revision)
        if known is not None and known.fingerprint() == flow.fingerprint():
            return
        if known is not None:
            raise FlowError([
                f"flow {flow.id!r} revision {flow.revision} differs from the stored definition "
                "of that revision: give the changed flow a new revision number"
            ])
        self._revisions[flow.id][flow.revision] = flow

    def get(self, flow_id: str, revision: int | None = None) -> Flow:
        """The current revision, or the given one. Raises KeyError when it is not known."""
        if revision is None:
            if flow_id not in self._current:
                raise KeyError(f"no current flow {flow_id!r}")
            revision = self._current[flow_id]
        try:
            return self._revisions[flow_id][revision]
        except KeyError:
            raise KeyError(f"flow {flow_id!r} revision {revision} is not loaded") from None

    def by_keyword(self, word: str) -> Flow | None:
        """The current flow that the keyword (e.g. "CHECKIN", "check-in") starts, or None."""
        flow_id = self._keywords.get(normalise_keyword(word))
        return self.get(flow_id) if flow_id else None

    def revisions(self, flow_id: str) -> list[int]:
        return sorted(self._revisions.get(flow_id, {}))

    def current(self) -> list[Flow]:
        """The current revision of every flow, by id."""
        return [self.get(flow_id) for flow_id in sorted(self._current)]

    def __contains__(self, flow_id: object) -> bool:
        return flow_id in self._current


def load_flows(directory: str | Path, variables_file: str | Path | None = None) -> FlowLibrary:
    """Load and validate every flow in `directory`; raise FlowError listing all problems."""
    from bot.domain.flow_lint import lint_paths

    report = lint_paths([Path(directory)], variables_file=variables_file)
    if report.errors:
        raise FlowError(report.errors)
    return FlowLibrary(report.flows, report.variables)
