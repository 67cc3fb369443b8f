"""The flow engine: a pure function from (flow, saved state, one event, time) to what happens.

No I/O and no clock of its own: the caller passes `now` and stores the returned state.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, ClassVar

from bot.domain import answers
from bot.domain.flows import (
    AskNode,
    BranchNode,
    Case,
    EndNode,
    Flow,
    SendNode,
    StartFlowNode,
    Variable,
    WaitNode,
)
from bot.domain.gsm7 import to_gsm7

MAX_STEPS = 50  # nodes visited for one event before the engine gives up on a loop

ACTIVE, WAITING, COMPLETED = "active", "waiting", "completed"
# In a state: the number question just answered and the question the flow then waited at,
# {"node": "pain", "at": "pain_new"}, so that a correction of that number at that question
# ("sorry I meant 8") can be taken (see correction).
CORRECTABLE = "correctable"
# The question an emoji-only reply was last let off at without using a try (see _Run.reply).
EMOJI_AT = "emoji_at"
_VARIABLE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class Start:
    """Begin the flow afresh (any previous state is discarded)."""


@dataclass(frozen=True)
class Inbound:
    """The patient sent a text. `aside`: it asks something of the team ("can I talk to a
    nurse?") rather than answering: not understood, it is followed by the question itself
    again, not the retry's "Sorry, we did not understand" (the try counts all the same)."""

    text: str
    aside: bool = False


@dataclass(frozen=True)
class Timeout:
    """The scheduler's tick: fires the wait's timeout path if its deadline has passed."""


Event = Start | Inbound | Timeout


class _Record:
    kind: ClassVar[str]

    def as_tuple(self) -> tuple[Any, ...]:
        """("answer", "consent", "yes"), ("flag", "fever"), ("ended",), ..."""
        return (self.kind, *(getattr(self, f.name) for f in fields(self)))


@dataclass(frozen=True)
class AnswerRecorded(_Record):
    """An answer saved under `key` ("yes"/"no", an int, a choice's value, or free text)."""
    kind: ClassVar[str] = "answer"
    key: str
    value: str | int


@dataclass(frozen=True)
class AnswerCorrected(_Record):
    """The patient corrected their answer to the question before (`node_id`, saved as `key`)
    from `previous` to `value`; an AnswerRecorded of `value` comes with it."""
    kind: ClassVar[str] = "corrected"
    node_id: str
    key: str
    previous: int
    value: int


@dataclass(frozen=True)
class AlsoAnswered(_Record):
    """One reply answered two questions: `first`, its opening words, the question waiting,
    and `words`, the rest, the question that follows it (`node_id`), which was not asked
    ("7, and yes its new" to the pain score: see two_answers). The AnswerRecorded of each
    come with it."""
    kind: ClassVar[str] = "also_answered"
    node_id: str
    first: str
    words: str


@dataclass(frozen=True)
class FlagRaised(_Record):
    """A named symptom flag, raised at most once per conversation."""
    kind: ClassVar[str] = "flag"
    name: str


@dataclass(frozen=True)
class FlowStarted(_Record):
    """This conversation ended by handing over to another flow; the caller starts it."""
    kind: ClassVar[str] = "start_flow"
    flow_id: str


@dataclass(frozen=True)
class Ended(_Record):
    """The conversation is completed."""
    kind: ClassVar[str] = "ended"


@dataclass(frozen=True)
class NotUnderstood(_Record):
    """A reply to `node_id` did not parse; `reason` is one of answers' reason constants."""
    kind: ClassVar[str] = "not_understood"
    node_id: str
    reason: str


@dataclass(frozen=True)
class NoWords(_Record):
    """A reply to `node_id` that is only emoji (a smiley, a thumbs up), not understood:
    the question is asked again, and no try is used (see answers.only_emoji)."""
    kind: ClassVar[str] = "no_words"
    node_id: str


@dataclass(frozen=True)
class TimedOut(_Record):
    """The wait at `node_id` passed its deadline with no reply."""
    kind: ClassVar[str] = "timeout"
    node_id: str


@dataclass(frozen=True)
class EngineError(_Record):
    """The engine stopped the conversation instead of failing: "step_limit" or "missing_node"."""
    kind: ClassVar[str] = "error"
    reason: str
    node_id: str | None


Record = (AnswerRecorded | AnswerCorrected | AlsoAnswered | FlagRaised | FlowStarted | Ended
          | NotUnderstood | NoWords | TimedOut | EngineError)


@dataclass
class StepResult:
    """What one event did: the state to store, texts to send, and events to record."""

    new_state: dict[str, Any] | None
    outbound: list[str] = field(default_factory=list)
    recorded: list[Record] = field(default_factory=list)


def pick_language(flow: Flow, wanted: object) -> str:
    """The patient's language if the flow has it, else the flow's default language."""
    return wanted if isinstance(wanted, str) and wanted in flow.languages else flow.language


def render(
    text: str | Mapping[str, str], flow: Flow, language: str, context: Mapping[str, Any]
) -> str:
    """The text in `language` (falling back to the default), with {variables} filled as GSM-7."""
    if isinstance(text, str):
        body = text
    else:
        body = text.get(language) or text.get(flow.language) or next(iter(text.values()), "")

    def fill(match: re.Match[str]) -> str:
        value = context.get(match.group(1))
        return to_gsm7(str(value)) if value is not None else ""

    return _VARIABLE.sub(fill, body)


class _Run:
    """The mutable work of one step; step() builds one per event."""

    def __init__(
        self, flow: Flow, state: dict[str, Any], now: datetime, context: Mapping[str, Any]
    ) -> None:
        self.flow, self.state, self.now, self.context = flow, state, now, context
        self.outbound: list[str] = []
        self.recorded: list[Record] = []
        self.steps = 0

    def say(self, text: Any) -> None:
        self.outbound.append(render(text, self.flow, self.state["language"], self.context))

    def raise_flags(self, names: list[str]) -> None:
        for name in names:
            if name not in self.state["flags"]:
                self.state["flags"].append(name)
                self.recorded.append(FlagRaised(name))

    def finish(self) -> None:
        self.state.update(status=COMPLETED, wait_deadline=None)
        self.recorded.append(Ended())

    def fail(self, reason: str, node_id: str | None) -> None:
        self.recorded.append(EngineError(reason, node_id))
        self.finish()

    def wait_at(self, node: AskNode | WaitNode) -> None:
        deadline = self.now + node.timeout.delta if node.timeout else None
        if self.state.get(EMOJI_AT) != node.id:
            self.state.pop(EMOJI_AT, None)
        self.state.update(
            node=node.id, status=WAITING, wait_deadline=deadline.isoformat() if deadline else None
        )

    def choose(self, cases: list[Case], value: Any, default: str) -> str:
        for case in cases:
            if _matches(case, value, self.state["flags"]):
                self.raise_flags(case.flags)
                return case.next
        return default

    def go(self, node_id: str) -> None:
        """Walk from node_id until the flow waits for a reply or ends."""
        while True:
            self.steps += 1
            if self.steps > MAX_STEPS:
                self.fail("step_limit", node_id)
                return
            node = self.flow.node(node_id)
            if node is None:
                self.fail("missing_node", node_id)
                return
            self.state.update(node=node.id, status=ACTIVE, tries=0, wait_deadline=None)
            self.raise_flags(node.flags)
            if isinstance(node, SendNode):
                self.say(node.text)
                node_id = node.next
            elif isinstance(node, BranchNode):
                value = self.state["answers"].get(node.on) if node.on else None
                node_id = self.choose(node.cases, value, node.next)
            elif isinstance(node, AskNode | WaitNode):
                if isinstance(node, AskNode):
                    self.say(node.text)
                self.wait_at(node)
                return
            elif isinstance(node, StartFlowNode):
                self.recorded.append(FlowStarted(node.flow))
                self.finish()
                return
            else:  # EndNode
                if isinstance(node, EndNode) and node.text is not None:
                    self.say(node.text)
                self.finish()
                return

    def save(self, key: str | None, value: str | int) -> None:
        if key:
            self.state["answers"][key] = value
            self.recorded.append(AnswerRecorded(key, value))

    def reply(self, text: str, aside: bool = False) -> None:
        node = self.flow.node(self.state["node"])
        if isinstance(node, WaitNode):
            self.save(node.save, text.strip())
            self.go(node.next)
            return
        if not isinstance(node, AskNode):
            self.fail("missing_node", self.state["node"])
            return
        corrected = correction(self.flow, self.state, text)
        if corrected is not None:
            self.correct(*corrected, node)
            return
        two = two_answers(self.flow, self.state, node, text)
        result = parse_reply(node, text) if two is None else two[0]
        if not result.ok and answers.only_emoji(text) and self.state.get(EMOJI_AT) != node.id:
            # A smiley or a thumbs up is no answer, but no wrong one either: the first at a
            # question is asked again without using one of its tries. More of them use tries
            # as any reply not understood does: a patient who keeps answering "any new
            # numbness?" with emoji must still reach the question's fallback (the team alerted
            # at a red-flag question), not be asked again until the check-in times out.
            self.state[EMOJI_AT] = node.id
            self.recorded.append(NoWords(node.id))
            self.say(node.retry.text if node.retry else node.text)
            self.wait_at(node)
            return
        if not result.ok:
            self.recorded.append(NotUnderstood(node.id, result.reason or "not_understood"))
            tries = self.state["tries"] + 1
            if _out_of_tries(node, self.state["tries"]):
                self.state.pop(CORRECTABLE, None)  # moved on: no longer the next question
                self.go(node.retry.fallback if node.retry else node.next)
                return
            self.say(node.text if aside else node.retry.text)
            self.wait_at(node)
            self.state["tries"] = tries
            return
        self.save(node.save, result.value)
        said = len(self.outbound)
        self.go(self.choose(node.cases, result.value, node.next))
        self.state.pop(CORRECTABLE, None)
        if two is not None and self.state["status"] == WAITING:
            _, head, tail, following, answer = two
            if self.state["node"] == following.id:
                # The rest of the reply answers the question just reached: it is not asked.
                del self.outbound[said:]
                self.recorded.append(AlsoAnswered(following.id, head, tail))
                self.save(following.save, answer)
                self.go(self.choose(following.cases, answer, following.next))
                return
        if node.answer.type == "integer" and node.save and self.state["status"] == WAITING:
            self.state[CORRECTABLE] = {"node": node.id, "at": self.state["node"]}

    def correct(self, asked: AskNode, value: int, waiting: AskNode) -> None:
        """The patient corrected their number to the question before (`asked`) while the flow
        waits at `waiting`: the answer is changed and the flags of the case it now chooses
        are raised (none is taken back: it may have been alerted already). When the flow
        would have walked from it to the same question, that question is asked again (its
        tries kept); otherwise the flow goes where the corrected answer leads, as it would
        have (pain 0 corrected to 8 asks "is this pain new?" that it skipped)."""
        key = str(asked.save)
        previous = self.state["answers"][key]
        self.save(key, value)
        self.recorded.append(AnswerCorrected(asked.id, key, previous, value))
        following = self.choose(asked.cases, value, asked.next)
        trial = _Run(self.flow, {**self.state, "answers": dict(self.state["answers"]),
                                 "flags": list(self.state["flags"])}, self.now, self.context)
        trial.go(following)
        if trial.state["status"] == WAITING and trial.state["node"] == waiting.id:
            self.say(waiting.text)
            self.wait_at(waiting)
            return
        self.go(following)
        if self.state["status"] == WAITING:
            self.state[CORRECTABLE] = {"node": asked.id, "at": self.state["node"]}
        else:
            self.state.pop(CORRECTABLE, None)


def correction(flow: Flow, state: Mapping[str, Any], text: str) -> tuple[AskNode, int] | None:
    """(the question before, the number put in place of its answer) when `text`, a reply to
    the question waiting right after a number question was answered, corrects that number in
    so many words ("sorry I meant 8", "8 not 3": answers.parse_correction); None otherwise,
    and then the reply is one to the question waiting."""
    marked = state.get(CORRECTABLE)
    if (not isinstance(marked, Mapping) or state.get("status") != WAITING
            or state.get("node") != marked.get("at")):
        return None
    asked = flow.node(marked.get("node"))
    if not isinstance(asked, AskNode) or asked.answer.type != "integer" or not asked.save:
        return None
    previous = (state.get("answers") or {}).get(asked.save)
    if not isinstance(previous, int) or isinstance(previous, bool):
        return None
    value = answers.parse_correction(text, asked.answer.min, asked.answer.max, previous)
    return None if value is None else (asked, value)


# Where a reply that answers two questions divides: a comma, full stop or the like, "and"
# (", and"), "y", "&", " - ". The first one only.
_TWO_ANSWERS_BREAK = re.compile(
    r"\s*(?:[,;.!\n]+|\s-+\s|\s&\s)\s*(?:(?:and|also|plus|y)\s+)?|\s+(?:and|plus|y)\s+",
    re.IGNORECASE)
# Words of a question's text that say nothing of what it is about.
_NOT_A_TOPIC = frozenset({
    "this", "that", "the", "and", "are", "for", "any", "have", "has", "had", "did", "does",
    "your", "you", "with", "when", "what", "from", "been", "reply", "yes", "not", "was", "were",
    "que", "los", "las", "una", "por", "con", "para", "como", "esta", "este", "usted", "responda",
    "del", "mas", "sus"})


def _topic_words(flow: Flow, asked: AskNode, following: AskNode) -> set[str]:
    """The words of `following`'s question, in every language, that `asked`'s does not use:
    what it asks about ("new", "different", "usual" for "is this pain new, or different from
    your usual pain?" after the pain score)."""
    def words(node: AskNode) -> set[str]:
        texts = node.text.values() if isinstance(node.text, Mapping) else [node.text]
        return {w for t in texts for w in answers.tokens(render(t, flow, flow.language, {}))}
    return {w for w in words(following) - words(asked)
            if len(w) >= 3 and not w.isdigit() and w not in _NOT_A_TOPIC}


def two_answers(flow: Flow, state: Mapping[str, Any], node: AskNode, text: str,
                ) -> tuple[answers.ParseResult, str, str, AskNode, str | int] | None:
    """A reply to a number (or numbered) question that also answers, clearly, the YES/NO
    question its answer leads to, which has not been asked: "7, and yes its new" to the
    pain score ("is this pain new?" follows a score of 1 or more). (The answer to `node`,
    the words that gave it, the rest, that next question, the rest's answer to it), or None.

    Clearly: the reply divides at its first break (a comma, "and") into words that answer
    `node` alone and words that answer the next question alone, with a yes or a no and a
    word of that question's own ("new", "different", "usual", "nuevo"): "7, yes it's bad" is
    no answer to "is it new?", and that question is asked. The next question must be where a
    case of `node` leads, straight (a follow-up), not its `next`: "0, and no" does not answer
    "any new numbness?", a question the patient has not seen. Neither part may answer the
    other question, and the whole reply, if it answers `node`, must give the same answer."""
    if node.answer.type not in ("integer", "choice"):
        return None
    match = _TWO_ANSWERS_BREAK.search(text)
    if match is None or match.start() == 0:
        return None
    head, tail = text[:match.start()].strip(), text[match.end():].strip()
    first = parse_reply(node, head)
    if not first.ok or not tail:
        return None
    whole = parse_reply(node, text)
    if whole.ok and whole.value != first.value:
        return None
    case = next((c for c in node.cases if _matches(c, first.value, state.get("flags") or [])),
                None)
    following = flow.node(case.next) if case is not None else None
    if (not isinstance(following, AskNode) or following.answer.type != "yesno"
            or following.id == node.id):
        return None
    second = parse_reply(following, tail)
    if not second.ok or parse_reply(node, tail).ok or parse_reply(following, head).ok:
        return None
    said = answers.tokens(tail)
    phrases = [*answers.YES_PHRASES, *answers.NO_PHRASES, *following.answer.all_yes_words(),
               *following.answer.all_no_words()]
    if not (any(answers.is_yes_or_no_word(w) for w in said)
            or any(answers.tokens(p) and " ".join(answers.tokens(p)) in " ".join(said)
                   for p in phrases)):
        return None  # "7, it is": no yes or no in it
    if not _topic_words(flow, node, following) & set(said):
        return None
    return first, head, tail, following, second.value  # type: ignore[return-value]


def understands(flow: Flow, state: Mapping[str, Any], text: str) -> bool:
    """Whether the question waiting takes `text` as its answer (alone, or with the next
    question's: two_answers)."""
    node = flow.node(state.get("node"))
    return isinstance(node, AskNode) and (parse_reply(node, text).ok
                                          or two_answers(flow, state, node, text) is not None)


def _out_of_tries(node: AskNode, tries: int) -> bool:
    """Whether one more reply not understood, after `tries`, ends the asking (the retry's
    fallback, or the question's next without a retry) instead of asking again."""
    return node.retry is None or tries + 1 >= node.retry.max_tries


def asks_again(flow: Flow, state: Mapping[str, Any]) -> bool:
    """Whether a reply not understood now would be followed by the question waiting (its
    retry text, or the question itself for an aside), not by the end of the asking."""
    node = flow.node(state.get("node"))
    return isinstance(node, AskNode) and not _out_of_tries(node, int(state.get("tries") or 0))


def question_text(flow: Flow, state: Mapping[str, Any], context: Mapping[str, Any]) -> str | None:
    """The question the conversation waits at, in its own words as it was asked (not the
    retry's), to ask it again after a reply that is no answer and uses no try (HELP, a
    photo); None when it waits at no question."""
    node = flow.node(state.get("node"))
    if state.get("status") != WAITING or not isinstance(node, AskNode):
        return None
    return render(node.text, flow, pick_language(flow, state.get("language")), context)


def parse_reply(node: AskNode, text: str) -> answers.ParseResult:
    """A reply to a question, parsed as the flow reads it: a choice as its option's own value
    ("quite_a_bit"), not its number."""
    spec = node.answer
    words = [option.all_words() for option in spec.options or []]
    result = answers.parse_answer(spec.type, text, spec.min, spec.max, words,
                                  spec.all_yes_words(), spec.all_no_words())
    if result.ok and spec.type == "choice" and spec.options and isinstance(result.value, int):
        return answers.ParseResult.understood(spec.options[result.value - 1].value)
    return result


_INSTRUCTION_AFTER = re.compile(r"^(.*\?)[^?]*$", re.DOTALL)


def question_and_meaning(flow: Flow, node_id: str | None, text: str,
                         context: Mapping[str, Any],
                         value: str | int | None = None) -> tuple[str, str] | None:
    """A reply to the question at `node_id` as the care team needs to read it: the question
    (in the flow's default language, the team's, without what follows its last "?": "Reply
    YES or NO.") and what the reply meant: "Yes", "quite a bit", "8 on a scale of 0 to 10",
    "not understood", or "" for a free-text answer. None when `node_id` is not a question.
    `value`: what the reply was taken to answer, when the question did not read it itself (a
    correction, "8 not 3")."""
    node = flow.node(node_id) if node_id else None
    if not isinstance(node, AskNode):
        return None
    question = " ".join(render(node.text, flow, flow.language, context).split())
    asked = _INSTRUCTION_AFTER.match(question)
    if asked:
        question = asked.group(1)
    spec = node.answer
    result = parse_reply(node, text) if value is None else answers.ParseResult.understood(value)
    if not result.ok:
        return question, "not understood"
    if spec.type == "yesno":
        return question, str(result.value).capitalize()
    if spec.type == "choice":
        return question, str(result.value).replace("_", " ")
    if spec.type == "integer" and spec.min is not None and spec.max is not None:
        return question, f"{result.value} on a scale of {spec.min} to {spec.max}"
    if spec.type == "integer":
        return question, str(result.value)
    return question, ""


def end_sentence(text: str) -> str:
    """`text` with a full stop added when it ends with a letter or a digit, so that what
    follows it reads as a new sentence ("Take your tablets" -> "Take your tablets.");
    unchanged after other punctuation ("Done?", "(at 9)", "Now!")."""
    return f"{text}." if text and text[-1].isalnum() else text


def with_sentences(values: Mapping[str, Any], variables: Mapping[str, Variable]) -> dict[str, Any]:
    """`values` (a context) with each value of a variable declared a sentence (`sentence:
    true` in variables.yaml) ended as one (end_sentence)."""
    return {key: end_sentence(value) if isinstance(value, str) and key in variables
            and variables[key].sentence else value for key, value in values.items()}


def _matches(case: Case, value: Any, flags: list[str]) -> bool:
    when = case.when
    numeric = isinstance(value, int) and not isinstance(value, bool)
    checks = [
        when.is_ is None or value == when.is_,
        when.in_ is None or value in when.in_,
        when.at_least is None or (numeric and value >= when.at_least),
        when.at_most is None or (numeric and value <= when.at_most),
        when.any_flag is None or any(flag in flags for flag in when.any_flag),
    ]
    return all(checks)


def new_state(flow: Flow, language: str) -> dict[str, Any]:
    """The state of a conversation that has not yet entered its start node."""
    return {
        "flow": flow.id, "revision": flow.revision, "language": language, "node": flow.start,
        "status": ACTIVE, "tries": 0, "answers": {}, "flags": [], "wait_deadline": None,
    }


def _deadline_passed(state: dict[str, Any], now: datetime) -> bool:
    deadline = state.get("wait_deadline")
    if not deadline:
        return False
    try:
        return now >= datetime.fromisoformat(deadline)
    except (TypeError, ValueError):
        return True  # an unreadable deadline must not strand the conversation


def step(
    flow: Flow,
    state: dict[str, Any] | None,
    event: Event,
    now: datetime,
    context: Mapping[str, Any],
) -> StepResult:
    """Apply one event to a conversation. Never raises on any patient text.

    `state` is None for a conversation that has not started (then only Start does anything).
    Raises ValueError for a naive `now` or a state saved for another flow or revision.
    """
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime (UTC)")
    now = now.astimezone(UTC)
    if isinstance(event, Start):
        language = pick_language(flow, context.get("language"))
        run = _Run(flow, new_state(flow, language), now, context)
        run.go(flow.start)
        return StepResult(run.state, run.outbound, run.recorded)
    if state is None:
        return StepResult(None)
    if (state.get("flow"), state.get("revision")) != (flow.id, flow.revision):
        raise ValueError(
            f"state belongs to {state.get('flow')!r} revision {state.get('revision')!r}, "
            f"not {flow.id!r} revision {flow.revision}: pass library.get(flow, revision)"
        )
    run = _Run(flow, _copy_state(flow, state), now, context)
    if run.state.get("status") != WAITING:
        return StepResult(run.state)
    if isinstance(event, Inbound):
        run.reply(event.text if isinstance(event.text, str) else str(event.text), event.aside)
    elif isinstance(event, Timeout) and _deadline_passed(run.state, now):
        node = flow.node(run.state["node"])
        timeout = getattr(node, "timeout", None)
        run.recorded.append(TimedOut(run.state["node"]))
        if timeout is None:
            run.finish()
        else:
            run.go(timeout.next)
    return StepResult(run.state, run.outbound, run.recorded)


def waiting_at(flow: Flow, node_id: str, now: datetime,
               context: Mapping[str, Any]) -> dict[str, Any]:
    """The state of a conversation of `flow` that starts waiting for the answer to the
    question at `node_id`, the caller having asked it in its own words: nothing is said and
    no flag raised. Raises ValueError when `node_id` is not a question of the flow."""
    node = flow.node(node_id)
    if not isinstance(node, AskNode):
        raise ValueError(f"{node_id!r} is not a question of {flow.id!r}")
    run = _Run(flow, new_state(flow, pick_language(flow, context.get("language"))),
               now.astimezone(UTC), context)
    run.wait_at(node)
    return run.state


def _copy_state(flow: Flow, state: dict[str, Any]) -> dict[str, Any]:
    return {
        **new_state(flow, flow.language), **state, "answers": dict(state.get("answers") or {}),
        "flags": list(state.get("flags") or []),
        "language": pick_language(flow, state.get("language")),
    }


def can_raise_flags(flow: Flow, node_id: str) -> bool:
    """Whether the answer awaited at `node_id` can raise a red flag: a case of the question
    does, or the node its retries fall back to (an answer never understood) does."""
    node = flow.node(node_id)
    if node is None or node.kind != "ask":
        return False
    if any(case.flags for case in node.cases):
        return True
    fallback = flow.node(node.retry.fallback) if node.retry else None
    return bool(fallback is not None and fallback.flags)


def takes_free_text(flow: Flow, node_id: str | None) -> bool:
    """Whether the reply awaited at `node_id` is kept as the patient wrote it (a question
    answered in free text, "anything else you want your care team to know?", or a wait)."""
    node = flow.node(node_id) if node_id else None
    return isinstance(node, WaitNode) or (isinstance(node, AskNode)
                                          and node.answer.type == "text")


def flags_of_answer(flow: Flow, key: str, value: Any) -> list[str]:
    """The red flags an answer saved as `key` raised, as the flow's question that saves it
    reads it (the case it chose); [] when no question saves `key` or it raises none."""
    node = next((n for n in flow.nodes if isinstance(n, AskNode) and n.save == key), None)
    return [] if node is None else _flags_of_value(node, value)


def _flags_of_value(node: AskNode, value: Any) -> list[str]:
    """The flags of the case the question chooses for an understood `value`."""
    case = next((c for c in node.cases if _matches(c, value, [])), None)
    return list(case.flags) if case is not None else []


def flags_of_unanswered(flow: Flow, node_id: str, replies: int) -> list[str]:
    """The red flags a question raised when `replies` replies to it were not understood and
    none was: its fallback's, once they used up its tries; [] before (it timed out)."""
    node = flow.node(node_id)
    if not isinstance(node, AskNode) or node.retry is None or replies < node.retry.max_tries:
        return []
    fallback = flow.node(node.retry.fallback)
    return list(fallback.flags) if fallback is not None else []


def flags_of_reply(flow: Flow, node_id: str, text: str) -> list[str]:
    """The red flags a reply to the question at `node_id` raises as the flow reads it (the
    case it would choose); [] when it is not understood or raises none."""
    node = flow.node(node_id)
    if not isinstance(node, AskNode):
        return []
    result = parse_reply(node, text)
    return _flags_of_value(node, result.value) if result.ok else []
