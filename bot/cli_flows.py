"""Command-line tools for flows: `flows lint`, `flows test [--update]` and `simulate`.

The project's main CLI adds `flows_group` and `simulate_command`; `python -m bot.cli_flows`
runs them on their own.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from bot.domain.engine import (
    WAITING,
    AlsoAnswered,
    AnswerRecorded,
    EngineError,
    FlagRaised,
    FlowStarted,
    Inbound,
    NotUnderstood,
    NoWords,
    Start,
    StepResult,
    TimedOut,
    Timeout,
    question_text,
    step,
)
from bot.domain.flow_lint import lint_paths
from bot.domain.flows import SHIPPED_FLOWS_DIR, FlowError, FlowLibrary, load_flows, parse_duration
from bot.domain.keywords import carrier_command, keyword_of
from bot.domain.triage import detect, level_for_flags, reply_keys
from bot.flowtest import as_sent, default_context, raises_emergency, run_scripts
from bot.services.context import clinic_values
from bot.texts import load_texts

PathArg = click.Path(path_type=Path)


def default_flows_dir() -> Path:
    """./flows when run from the repository, else the flows shipped beside the package."""
    local = Path("flows")
    return local if local.is_dir() else SHIPPED_FLOWS_DIR


def _library(flows_dir: Path | None, *, setting: bool = False) -> FlowLibrary:
    """The flows; broken ones end the command: exit 1 as a failing check (`flows test`), or,
    when they are a setting the command runs with (`simulate`), exit 2 and `error: flows:`."""
    try:
        return load_flows(flows_dir or default_flows_dir())
    except FlowError as exc:
        for line in exc.errors:
            click.echo(f"error: flows: {line}" if setting else line, err=setting)
        raise click.exceptions.Exit(2 if setting else 1) from None


def _settings():
    """The deployment's settings (config/default.yaml, CHECKIN_CONFIG, the environment), as
    the bot loads them; one that does not load ends the command as the bot's would (exit 2)."""
    from bot.config import ConfigError, load_settings

    try:
        return load_settings()
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        raise click.exceptions.Exit(2) from None


flows_group = click.Group("flows", help="Check and test the conversation flows.")


@flows_group.command("lint")
@click.argument("paths", nargs=-1, type=PathArg)
@click.option("--variables", type=PathArg, help="variables.yaml to use (default: found beside).")
def lint_command(paths: tuple[Path, ...], variables: Path | None) -> None:
    """Validate flow files and folders (default: flows/): one line per problem."""
    report = lint_paths(list(paths) or [default_flows_dir()], variables_file=variables)
    for line in report.errors:
        click.echo(line)
    if report.errors:
        click.echo(f"{len(report.errors)} error(s) in {len(report.files)} file(s)")
        raise click.exceptions.Exit(1)
    click.echo(f"OK: {len(report.flows)} flow(s) in {len(report.files)} file(s), no errors")


@flows_group.command("test")
@click.argument("paths", nargs=-1, type=PathArg)
@click.option("--update", is_flag=True, help="Rewrite the expected bot texts from the output.")
@click.option("--flows", "flows_dir", type=PathArg, help="Flows folder (default: flows/).")
def test_command(paths: tuple[Path, ...], update: bool, flows_dir: Path | None) -> None:
    """Run the golden conversation scripts (default: flows/tests/)."""
    library = _library(flows_dir)
    script_paths = list(paths) or [(flows_dir or default_flows_dir()) / "tests"]
    results = run_scripts(script_paths, library, update=update)
    for result in results:
        status = "PASS" if result.passed else "FAIL"
        click.echo(f"{status} {result.path}" + (" (updated)" if result.updated else ""))
        if result.diff:
            click.echo(result.diff.rstrip("\n"))
    failed = sum(not result.passed for result in results)
    click.echo(f"{len(results) - failed} passed, {failed} failed")
    if failed or not results:
        raise click.exceptions.Exit(1)


def _show(result: StepResult, context: dict, texts) -> None:
    for record in result.recorded:
        if isinstance(record, FlagRaised):
            click.echo(f"  [flag raised: {record.name}]")
        elif isinstance(record, AnswerRecorded):
            click.echo(f"  [saved {record.key} = {record.value!r}]")
        elif isinstance(record, AlsoAnswered):
            click.echo(f"  [the same reply answers {record.node_id}: {record.words!r}]")
        elif isinstance(record, NoWords):
            click.echo("  [no words: asked again, no try used]")
        elif isinstance(record, NotUnderstood):
            click.echo(f"  [not understood: {record.reason}]")
        elif isinstance(record, TimedOut):
            click.echo(f"  [no reply in time at {record.node_id}]")
        elif isinstance(record, FlowStarted):
            click.echo(f"  [hands over to flow {record.flow_id}]")
        elif isinstance(record, EngineError):
            click.echo(f"  [engine stopped the conversation: {record.reason}]")
    # As the bot sends them: an emergency-tier flag adds the emergency instruction.
    for text in as_sent(result, context, texts):
        click.echo(f"bot: {text}")
    if raises_emergency(result):
        click.echo("  [the care team is alerted at once, and again until someone acknowledges]")


@click.command("simulate")
@click.argument("flow_id")
@click.option("--language", default=None,
              help="The patient's language, one of the deployment's `languages` (default: its "
                   "defaults.language).")
@click.option("--name", help="The patient's name (default: the variables' example).")
@click.option("--flows", "flows_dir", type=PathArg, help="Flows folder (default: flows/).")
def simulate_command(flow_id: str, language: str | None, name: str | None,
                     flows_dir: Path | None) -> None:
    """Chat with a flow in the terminal, with the production engine and no database. The
    clinic, hotline and emergency number are this deployment's (its settings, as the bot
    loads them); the patient's name is the variables' example unless given.

    Type replies at the prompt, or pipe them in one per line. "/wait 4h" lets time pass
    (firing a due timeout); "/quit" stops.
    """
    library = _library(flows_dir, setting=True)
    if flow_id not in library:
        known = ", ".join(flow.id for flow in library.current())
        raise click.UsageError(f"no flow {flow_id!r} (flows: {known})")
    from bot.services.patients import InvalidField, check_language

    settings = _settings()
    try:  # as at enrolment: a language the deployment does not offer is refused
        language = check_language(language or settings.defaults.language, settings.languages)
    except InvalidField as exc:
        click.echo(f"error: {exc}", err=True)
        raise click.exceptions.Exit(2) from None
    flow = library.get(flow_id)
    context = default_context(library.variables, language)
    # The clinic, hotline and emergency number this deployment's patients are given, not the
    # variables' examples (those stay for the golden scripts, which must not depend on it).
    context.update(clinic_values(settings))
    if name:
        from bot.domain.names import greeting_name

        context["name"] = greeting_name(name, language)  # as texts call a patient: no title
    stdin = sys.stdin
    interactive = stdin.isatty()
    now = datetime.now(UTC)  # the CLI owns the clock; the engine is given it
    texts = load_texts()  # the bot's own replies (STOP, HELP, red flags)
    result = step(flow, None, Start(), now, context)
    _show(result, context, texts)
    state = result.new_state
    ended = None  # why the bot, not the flow, ended the conversation
    while state and state["status"] == WAITING:
        if interactive:
            try:
                line = click.prompt("you", default="", show_default=False, prompt_suffix="> ")
            except click.Abort:
                break
        else:
            raw = stdin.readline()
            if not raw:
                break
            line = raw.rstrip("\r\n")
            click.echo(f"patient: {line}")
        command = line.strip().lower()
        if command in ("/quit", "/exit"):
            break
        if command.startswith("/wait"):
            try:
                now += parse_duration(command.removeprefix("/wait").strip())
            except ValueError as exc:
                click.echo(f"  [{exc}]")
                continue
            result = step(flow, state, Timeout(), now, context)
        else:
            ended = _before_the_flow(line, flow, state, language, context, texts)
            if ended == "answered":
                continue
            if ended:
                break
            result = step(flow, state, Inbound(line), now, context)
        _show(result, context, texts)
        state = result.new_state
    flags = list(state["flags"]) if state else []
    if ended == "emergency":
        click.echo("[conversation ended by the red flag]")
        flags += [f for f in _red_flags(detect(line)) if f not in flags]
    elif ended == "stopped":
        click.echo("[conversation ended: the patient opted out]")
    elif state and state["status"] == WAITING:
        click.echo(f"[conversation still waiting for a reply at {state['node']}]")
    else:
        click.echo("[conversation completed]")
    click.echo(f"[flags raised: {', '.join(flags) or 'none'}]")


def _red_flags(triage) -> list[str]:
    """The red flags of a triage result (routine flags such as fatigue left out)."""
    return [f for f in triage.flags if level_for_flags([f]) != "routine"]


def _before_the_flow(line: str, flow, state: dict, language: str,
                     context: dict, texts) -> str | None:
    """What the bot does with a patient's text before the flow sees it (bot/services/inbound.py):
    STOP, START and HELP and their Spanish forms, then red flags. Shows it; returns "stopped" or
    "emergency" when that ends the conversation, "answered" when the text goes no further
    (HELP, START), None when the flow reads it next (also after an urgent red flag or the
    safety net, which the bot sends first)."""
    def say(key: str) -> None:
        values = {k: v for k, v in context.items() if k != "language"}
        click.echo(f"bot: {texts.render(key, language, **values)}")

    command = carrier_command(keyword_of(line))
    if command == "STOP":
        say("stopped")
        return "stopped"
    if command in ("START", "HELP"):
        say("started" if command == "START" else "help")
        again = question_text(flow, state, context)
        if again:
            click.echo(f"bot: {again}")
        return "answered"
    triage = detect(line)
    flags = ", ".join(_red_flags(triage))
    if triage.level == "routine":
        return None
    if triage.hypothetical:
        click.echo("  [a question about a red flag: the safety net]")
        for key in reply_keys(triage.flags, hypothetical=True):
            say(key)
        return None
    click.echo(f"  [red flag: {triage.level} ({flags})]")
    for key in reply_keys(triage.flags, level=triage.level):  # self-harm: its own text
        say(key)
    if triage.level == "emergency":
        click.echo("  [the care team is alerted at once, and again until someone "
                   "acknowledges; the check-in stops here]")
        return "emergency"
    click.echo("  [the care team is told, to call the patient today]")
    return None


@click.group()
def _cli() -> None:
    """Flow tools on their own (the main checkin-bot CLI has the same commands)."""


_cli.add_command(flows_group)
_cli.add_command(simulate_command)

if __name__ == "__main__":
    _cli(prog_name=f"{Path(sys.executable).name} -m bot.cli_flows")
