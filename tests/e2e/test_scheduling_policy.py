"""vLLM's scheduling policy on the real CPU engine, one engine per policy, each with a
single sequence slot so requests queue. A long request holds the slot; then B (priority
10) and C (priority 0) queue in that order. Under ``priority`` C overtakes B; under
``fcfs`` vLLM 0.32 accepts the field (200) and ignores it, so B goes first."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import free_port
from tests.e2e.conftest import LOG_DIR, MODEL

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

STARTUP_TIMEOUT_S = 600
OCCUPIER_TOKENS = 300  # ~15 s of decoding here: B and C queue well within it


def _engine_metric(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith((name + "{", name + " "))
    )


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/v1/models", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture(scope="module", params=["fcfs", "priority"])
def engine(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """(policy, base URL) of a ``python -m engine serve --scheduling-policy POLICY``."""
    policy: str = request.param
    port = free_port()
    argv = [sys.executable, "-m", "engine", "serve", "--port", str(port)]
    argv += ["--enforce-eager", "--max-model-len", "4096", "--max-num-seqs", "1"]
    argv += ["--scheduling-policy", policy]
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    with (LOG_DIR / f"engine-{policy}.log").open("ab") as log:
        # Core 1, as in test_routing_real_engines: the session's engine computes on core 0.
        env = {**os.environ, "VLLM_CPU_OMP_THREADS_BIND": "1"}
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not _ready(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the {policy} engine did not start; see {LOG_DIR}")
            time.sleep(1)
        yield policy, url
    finally:
        proc.send_signal(signal.SIGTERM)  # the launcher stops vLLM and its engine core
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_for(url: str, metric: str, value: float) -> None:
    deadline = time.monotonic() + 30
    while _engine_metric(url, metric) < value:
        assert time.monotonic() < deadline, f"{metric} never reached {value}"
        time.sleep(0.05)


def test_a_lower_priority_value_overtakes_a_queued_request_only_under_priority(
    engine: tuple[str, str],
) -> None:
    policy, url = engine
    finished: list[str] = []
    statuses: dict[str, int] = {}

    def send(name: str, priority: int, tokens: int) -> None:
        body = {
            "model": MODEL, "prompt": "Count: 1, 2, 3,", "max_tokens": tokens,
            "temperature": 0, "ignore_eos": True, "priority": priority,
        }  # fmt: skip
        answer = httpx.post(f"{url}/v1/completions", json=body, timeout=300)
        statuses[name] = answer.status_code
        finished.append(name)

    threads = [threading.Thread(target=send, args=("A", 0, OCCUPIER_TOKENS))]
    threads[0].start()
    _wait_for(url, "vllm:num_requests_running", 1)
    for waiting, (name, priority) in enumerate((("B", 10), ("C", 0)), start=1):
        threads.append(threading.Thread(target=send, args=(name, priority, 8)))
        threads[-1].start()
        _wait_for(url, "vllm:num_requests_waiting", waiting)
    for thread in threads:
        thread.join(timeout=300)

    assert statuses == {"A": 200, "B": 200, "C": 200}  # fcfs accepts the field too
    assert finished == (["A", "C", "B"] if policy == "priority" else ["A", "B", "C"])
