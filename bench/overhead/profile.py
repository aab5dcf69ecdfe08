"""Profile the gateway's CPU per request, every feature on, under load.

Runs the gateway in this process (uvicorn with uvloop and httptools, as in
production) inside ``cProfile`` with a CPU-time clock, in front of the fake
upstream, with auth, Redis rate limits, a Redis cache miss per request, metrics and
the access log (the ``overhead`` scenario's settings, see scenario.py); drives it from
bench.overhead.load in a child process (closed loop); prints the functions by own CPU
time and by cumulative time.

    python -m bench.overhead.profile [--concurrency 32] [--requests 20000] [--top 40]

Needs Redis on 127.0.0.1:6379 (`make redis`). What the profile led to is in
docs/architecture.md.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import subprocess
import sys
import threading
import time
import uuid

import uvicorn

from bench.core.procs import REPO, fake_upstream_service, free_port
from bench.core.stack import delete_namespace
from bench.overhead.scenario import features_env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    prefix = f"bench-profile-{uuid.uuid4().hex[:8]}"
    port = free_port()
    upstream = fake_upstream_service(REPO / "bench" / "results" / "logs" / "profile-upstream.log")
    upstream.start()
    upstream.wait_ready()
    os.environ.update({"PORTICO_ENGINE_URL": upstream.base_url, **features_env(prefix)})
    from gateway.app import create_app  # after the environment is set

    config = uvicorn.Config(
        create_app(), port=port, loop="uvloop", http="httptools", access_log=False,
        log_level="warning",
    )  # fmt: skip
    server = uvicorn.Server(config)
    profile = cProfile.Profile(timer=time.process_time)

    def drive() -> None:
        while not server.started:
            time.sleep(0.05)
        point = {
            "index": 0, "target": "gateway", "url": f"http://127.0.0.1:{port}/v1/chat/completions",
            "target_pid": os.getpid(), "upstream_pid": upstream.pid,
            "concurrency": args.concurrency, "requests": args.requests, "warmup": 500,
            "stream": False, "round": 0, "rate": 0.0,
        }  # fmt: skip
        done = subprocess.run(
            [sys.executable, "-m", "bench.overhead.load"],
            input=json.dumps({"points": [point]}),
            cwd=REPO,
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        events = [json.loads(line) for line in done.stdout.splitlines()]
        result = next(e for e in events if e["event"] == "point")
        print(
            f"{args.requests} requests at c={args.concurrency}: "
            f"{result['target_cpu_s'] / args.requests * 1000:.3f} ms CPU per request "
            f"(profiled, so slower than unprofiled), errors {result['errors']}"
        )
        server.should_exit = True

    threading.Thread(target=drive, daemon=True).start()
    try:
        profile.runcall(server.run)
    finally:
        upstream.stop()
        delete_namespace(prefix)
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats(order).print_stats(args.top)
        print(out.getvalue())


if __name__ == "__main__":
    main()
