"""The benchmark's two webhook steps in one process, for comparing code and profiling it.

Builds the bot as bench/apps.py's `checkin()` does (the real twilio SDK over the fake HTTP client,
here with no latency, and the reply sent inline), on a fresh SQLite file (or BENCH_INPROCESS_URL),
with `--patients` patients mid check-in. Each patient texts "3" (step 1), then the first
`--second` of them "help me understand" (step 2, a reply not understood at a yes/no question).
Prints the CPU time each step took per message. `--profile FILE` writes a cProfile of step 2.
Give `--root` another checkout to measure that code with this script (e.g. a `git worktree`).

    .venv/bin/python bench/inprocess.py [--patients 1000] [--second 300] [--profile out.prof]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--second", type=int, default=300, help="patients who send step 2")
    parser.add_argument("--profile", type=Path, help="write a cProfile of step 2 here")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1],
                        help="the checkout whose code is measured")
    args = parser.parse_args()
    sys.path.insert(0, str(args.root.resolve()))

    import bench.webhook as bw
    from bot.config import load_settings
    from bot.logs import setup_logging
    from bot.messaging.fake_twilio_http import FakeTwilioHttpClient
    from bot.messaging.twilio_messenger import TwilioMessenger
    from bot.runtime import build_runtime
    from bot.web.app import create_app

    url = os.environ.get("BENCH_INPROCESS_URL") or \
        f"sqlite:///{tempfile.mkdtemp()}/inprocess.db"
    os.environ.update(bw.env_for(url))
    phones = bw.prepare(url, args.patients)
    setup_logging()
    logging.getLogger().handlers[0].setStream(open(os.devnull, "w"))  # the cost, not the lines
    settings = load_settings()
    t = settings.twilio
    messenger = TwilioMessenger.from_credentials(
        t.account_sid, t.auth_token, http_client=FakeTwilioHttpClient(latency=0),
        from_number=t.from_number)
    runtime = build_runtime(settings, messenger=messenger, dispatch_mode="inline")
    app = create_app(runtime)
    runtime.warm_up()
    client = app.test_client()

    def post(phone: str, sid: str, body: str) -> None:
        params, headers = bw.signed(phone, sid, body)
        status = client.post(bw.PATH, data=params, headers=headers, base_url=bw.PUBLIC).status_code
        if status != 200:
            raise RuntimeError(f"webhook answered {status}")

    t0 = time.process_time()
    for i, phone in enumerate(phones):
        post(phone, f"SMa{i:030d}", "3")
    t1 = time.process_time()
    second = phones[:args.second]
    profiler = None
    if args.profile:
        import cProfile
        profiler = cProfile.Profile()
        profiler.enable()
    for i, phone in enumerate(second):
        post(phone, f"SMb{i:030d}", "help me understand")
    t2 = time.process_time()
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(args.profile)
    runtime.close()
    print(f"step 1 ('3' to the pain question): {(t1 - t0) * 1000 / len(phones):.2f} ms CPU a "
          f"message over {len(phones)}")
    print(f"step 2 ('help me understand' at a yes/no question): "
          f"{(t2 - t1) * 1000 / max(len(second), 1):.2f} ms CPU a message over {len(second)}"
          f"{' (profiled)' if profiler else ''}")


if __name__ == "__main__":
    main()
