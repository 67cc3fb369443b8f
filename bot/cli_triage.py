"""`checkin-bot triage`: run the red-flag detector over messages, one per line (JSON lines out).

    $ printf 'cant feel my legs\npain 3/10\n' | checkin-bot triage
    {"text": "cant feel my legs", "level": "emergency", "flags": ["sensory_loss"], ...}
    {"text": "pain 3/10", "level": "routine", "flags": ["pain"], ...}

Use it to check a vocabulary change against real (anonymised) messages before deploying it.
"""

from __future__ import annotations

import json
from typing import TextIO

import click

from bot.domain.triage import detect, load_vocabulary


@click.command("triage")
@click.option("--vocabulary", "vocabulary_path", type=click.Path(dir_okay=False),
              default=None, help="Vocabulary YAML file (default: config/red_flags.yaml).")
@click.argument("source", type=click.File("r", encoding="utf-8"), default="-", required=False)
def triage_command(vocabulary_path: str | None, source: TextIO) -> None:
    """Read one message per line on stdin (or SOURCE); write one JSON object per line.

    Each object has text, level (emergency|urgent|routine), flags, hypothetical and matches
    (the phrases that were read as red flags).
    """
    try:
        vocabulary = load_vocabulary(vocabulary_path)
    except ValueError as exc:  # configured wrong: exit 2, said as `serve` says it
        click.echo(f"error: red flags: {exc}", err=True)
        raise click.exceptions.Exit(2) from None
    for line in source:
        text = line.rstrip("\r\n")
        result = detect(text, vocabulary)
        click.echo(json.dumps({
            "text": text,
            "level": result.level,
            "flags": list(result.flags),
            "hypothetical": result.hypothetical,
            "matches": list(result.matches),
        }, ensure_ascii=False))
