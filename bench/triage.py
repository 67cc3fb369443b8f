"""Throughput of the red-flag detector over the labelled message set.

    .venv/bin/python bench/triage.py [--repeats N] [--rounds N]

Prints messages per second (median of several timed repeats over the whole labelled set) and the
median time per message in microseconds (each message timed over several rounds). Warm-up runs
are not timed: they include compiling the phrase regexes the set needs (done on first use).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.domain.triage import detect, load_vocabulary  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9, help="timed passes over the set")
    parser.add_argument("--rounds", type=int, default=50, help="timings per message")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    vocabulary = load_vocabulary()
    load_ms = (time.perf_counter() - started) * 1000
    data = ROOT / "tests" / "data" / "triage_labelled.yaml"
    messages = [item["text"] for item in yaml.safe_load(data.read_text(encoding="utf-8"))]
    for _ in range(3):  # warm-up
        for text in messages:
            detect(text, vocabulary)

    passes = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        for text in messages:
            detect(text, vocabulary)
        passes.append(time.perf_counter() - started)
    per_message = []
    for text in messages:
        started = time.perf_counter()
        for _ in range(args.rounds):
            detect(text, vocabulary)
        per_message.append((time.perf_counter() - started) / args.rounds * 1e6)

    throughput = [len(messages) / seconds for seconds in passes]
    print(f"vocabulary load:          {load_ms:8.0f} ms")
    print(f"messages in labelled set: {len(messages):8d}")
    print(f"throughput (median of {args.repeats}): {statistics.median(throughput):8.0f} messages/s"
          f"   (min {min(throughput):.0f}, max {max(throughput):.0f})")
    print(f"per message (median):     {statistics.median(per_message):8.1f} us"
          f"   (p90 {statistics.quantiles(per_message, n=10)[-1]:.1f} us,"
          f" max {max(per_message):.1f} us)")


if __name__ == "__main__":
    main()
