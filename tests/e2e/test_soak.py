"""`make soak` at a small scale, so the suite proves the soak itself works: its own
Redis, real vLLM engine, fast upstream and gateway; a Redis restart and an engine
restart during the load; every outcome counted; the leak checks computed.

The full run (100,000 requests) is `make soak`; its figures are in
docs/reliability.md and bench/results/soak.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import LOG_DIR

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).parents[2]
REQUESTS = 3000


def test_soak_counts_every_request_through_a_redis_and_an_engine_restart(
    tmp_path: Path,
) -> None:
    log = LOG_DIR / "soak.log"
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "bench.soak", "--requests", str(REQUESTS), "--warmup", "500"]
    argv += ["--concurrency", "8", "--out", str(tmp_path)]
    with log.open("wb") as out:
        done = subprocess.run(
            argv,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=900,
            check=False,
        )
    assert done.returncode == 0, log.read_text()[-3000:]
    report = json.loads((tmp_path / "soak.json").read_text())
    assert all(report["checks"].values())
    assert report["sent"] >= REQUESTS
    outcomes = report["outcomes"]
    counted = sum(sum(per_kind.values()) for per_kind in outcomes.values())
    assert counted == report["sent"]
    # The mix really happened: cache misses and hits, streams read to the end,
    # streams abandoned, the limited key refused, the real engine used.
    assert outcomes["miss"]["200"] > 0
    assert outcomes["hit"]["200"] > 0
    assert outcomes["stream"]["done"] > 0
    assert outcomes["abort"]["aborted"] > 0
    assert outcomes["limited"].get("429", 0) > 0
    real = [outcomes.get(k, {}) for k in ("real", "real-hit", "real-stream", "real-abort")]
    assert sum(o.get("200", 0) + o.get("done", 0) + o.get("aborted", 0) for o in real) > 0
    events = [name for _, name in report["events"]]
    assert events == ["redis restart", "engine restart", "engine back"], events
    assert report["real_recovery_s"] is not None
    assert (tmp_path / "soak.md").exists()
    assert (tmp_path / "soak.png").stat().st_size > 0
