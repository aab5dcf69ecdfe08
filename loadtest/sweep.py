"""``portico loadtest``: a concurrency sweep against any OpenAI-compatible deployment.

For each concurrency level, a closed loop of streamed completions (each worker sends its
next request when its previous one ended), so the server batches up to that many
sequences. Per level: requests/s, completion tokens/s, time to the first content chunk
(TTFT) and total latency percentiles. The sweep answers a batch-size optimiser's
question: which concurrency gives the most tokens/s, and how much concurrency one
deployment takes before TTFT p99 leaves a latency target.

Completion tokens come from the usage chunk (``stream_options.include_usage``). Every
prompt starts with its own request number and the requests send ``Cache-Control:
no-cache, no-store``, so neither a response cache nor a prefix cache answers one request
from another's work.

Results: a table on the terminal (rich when installed), ``loadtest.json`` (every request
too), ``loadtest.md`` and ``loadtest.png`` (matplotlib, the ``loadtest`` extra).

Why not guidellm: see docs/loadtest.md.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from loadtest.errors import LoadTestError

Api = Literal["chat", "completions"]
DEFAULT_PROMPT = "Write a long, detailed story about a lighthouse keeper, with many characters."
CONNECT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class LoadTestConfig:
    """One sweep, validated; ``base_url`` is the OpenAI base URL (``.../v1``)."""

    base_url: str
    model: str
    api_key: str | None
    concurrency: tuple[int, ...]
    requests: int | None  # per level; None: 2 x concurrency, at least 8
    max_tokens: int
    prompt: str
    api: Api
    timeout_s: float
    ttft_slo_ms: float | None = None
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        problems = [
            "--concurrency levels must be >= 1" if min(self.concurrency, default=0) < 1 else "",
            "--requests must be >= 1" if self.requests is not None and self.requests < 1 else "",
            "--max-tokens must be >= 1" if self.max_tokens < 1 else "",
            "--timeout must be > 0" if not self.timeout_s > 0 else "",
            "--ttft-slo-ms must be > 0" if self.ttft_slo_ms is not None and self.ttft_slo_ms <= 0
            else "",
            "the prompt is empty" if not self.prompt.strip() else "",
            "--model is empty" if not self.model.strip() else "",
        ]  # fmt: skip
        if self.requests is not None and self.concurrency and self.requests < max(self.concurrency):
            # A closed loop with fewer requests than workers never reaches its level.
            problems.append(
                f"--requests {self.requests} is below --concurrency {max(self.concurrency)}:"
                " that level would never run that many requests at once"
            )
        if problems := [p for p in problems if p]:
            raise LoadTestError("; ".join(problems))

    def requests_at(self, concurrency: int) -> int:
        return self.requests if self.requests is not None else max(8, 2 * concurrency)

    @property
    def url(self) -> str:
        return f"{self.base_url}/{'chat/completions' if self.api == 'chat' else 'completions'}"


def normalize_base_url(url: str) -> str:
    """The OpenAI base URL: ``http://host:8080`` becomes ``http://host:8080/v1``; a URL
    with a path (``.../v1``, ``.../openai/v1``) is taken as given, as the OpenAI SDK does."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise LoadTestError(f"--base-url {url!r} is not an http(s) URL")
    base = url.strip().rstrip("/")
    return base if parts.path.strip("/") else base + "/v1"


def levels(values: Sequence[int]) -> tuple[int, ...]:
    """Concurrency levels in increasing order, each once."""
    return tuple(sorted(set(values)))


# --- one request --------------------------------------------------------------------


@dataclass(frozen=True)
class Chunk:
    """What one SSE line carried."""

    text: str = ""
    completion_tokens: int | None = None
    error: str | None = None
    done: bool = False


def parse_sse_line(line: str) -> Chunk | None:
    """A ``data:`` line of an OpenAI stream (chat deltas or completion text); None for
    anything else (comments, blank lines, ``event:`` fields)."""
    if not line.startswith("data:"):
        return None
    data = line[5:].strip()
    if data == "[DONE]":
        return Chunk(done=True)
    try:
        event = json.loads(data)
    except ValueError:
        return Chunk(error=f"malformed event: {data[:100]}")
    if not isinstance(event, dict):
        return Chunk(error=f"malformed event: {data[:100]}")
    if "error" in event:
        return Chunk(error=_message(event))
    pieces = []
    for choice in event.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        delta = choice.get("delta") or {}
        pieces.append(delta.get("content") or choice.get("text") or "")
    usage = event.get("usage")
    tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
    return Chunk(
        text="".join(pieces), completion_tokens=tokens if isinstance(tokens, int) else None
    )


def _message(body: Any) -> str:
    """The human part of an error body: OpenAI's ``error.message``, FastAPI's ``detail``."""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if error or body.get("detail"):
            return str(error or body["detail"])
    return str(body)[:200]


@dataclass
class Sample:
    """One request as the client saw it; times in seconds since it was sent."""

    latency_s: float = 0.0
    ttft_s: float | None = None
    completion_tokens: int = 0
    usage: bool = False  # tokens from the usage chunk, not counted from content chunks
    status: int = 0
    error: str | None = None  # a key for the errors column: "429", "timeout", ...
    detail: str = ""
    cache_hit: bool = False
    _chunks: int = 0
    _done: bool = False

    def feed(self, chunk: Chunk, elapsed_s: float) -> None:
        """Fold one event of the stream in, ``elapsed_s`` after the request was sent."""
        if chunk.error is not None:
            self.error, self.detail = "stream error", chunk.error
        if chunk.text:
            self._chunks += 1
            if self.ttft_s is None:
                self.ttft_s = elapsed_s
        if chunk.completion_tokens is not None:
            self.completion_tokens, self.usage = chunk.completion_tokens, True
        self._done = self._done or chunk.done

    def finish(self, elapsed_s: float) -> Sample:
        self.latency_s = elapsed_s
        if not self.usage:
            self.completion_tokens = self._chunks  # vLLM sends one token per chunk
        if self.error is None and not self._done:
            self.error, self.detail = "stream error", "the stream ended without [DONE]"
        return self


def request_body(config: LoadTestConfig, index: int) -> dict[str, Any]:
    prompt = f"[request {index}] {config.prompt}"
    body: dict[str, Any] = {
        "model": config.model,
        "max_tokens": config.max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if config.api == "chat":
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    if config.ignore_eos:
        body["ignore_eos"] = True  # vLLM: always generate max_tokens, as its own benchmarks
    return body


def _headers(config: LoadTestConfig) -> dict[str, str]:
    headers = {"cache-control": "no-cache, no-store"}
    if config.api_key:
        headers["authorization"] = f"Bearer {config.api_key}"
    return headers


async def send(client: httpx.AsyncClient, config: LoadTestConfig, index: int) -> Sample:
    """One streamed request, read to the end; never raises for a failed request."""
    sample = Sample()
    started = time.perf_counter()
    try:
        async with asyncio.timeout(config.timeout_s):
            request = client.build_request(
                "POST", config.url, json=request_body(config, index), headers=_headers(config)
            )
            response = await client.send(request, stream=True)
            try:
                sample.status = response.status_code
                sample.cache_hit = response.headers.get("x-cache") == "hit"
                if response.status_code != 200:
                    await response.aread()
                    sample.error, sample.detail = str(response.status_code), _body(response)
                    return sample.finish(time.perf_counter() - started)
                async for line in response.aiter_lines():
                    if (chunk := parse_sse_line(line)) is not None:
                        sample.feed(chunk, time.perf_counter() - started)
            finally:
                await response.aclose()
    except (TimeoutError, httpx.TimeoutException):
        sample.error, sample.detail = "timeout", f"no complete answer within {config.timeout_s} s"
    except httpx.TransportError as exc:
        sample.error, sample.detail = "connection", f"{type(exc).__name__}: {exc}"
    return sample.finish(time.perf_counter() - started)


def _body(response: httpx.Response) -> str:
    try:
        return _message(response.json())
    except ValueError:
        return response.text[:200]


def refusal(config: LoadTestConfig, sample: Sample) -> str:
    """The one-line reason the deployment refused the first request."""
    where = f"POST {config.url}"
    if sample.error == "connection":
        return f"cannot reach {where}: {sample.detail}"
    if sample.error == "timeout":
        return f"{where}: {sample.detail} (raise --timeout?)"
    if sample.status in (401, 403):
        hint = "pass --api-key or set OPENAI_API_KEY"
        return f"{where} answered {sample.status} (authentication failed: {hint}): {sample.detail}"
    if sample.status == 404:
        hint = "check --model and that --base-url is the OpenAI base URL, .../v1"
        return f"{where} answered 404 ({hint}): {sample.detail}"
    return f"{where} failed ({sample.error}): {sample.detail}"


# --- a level ------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100), linear between closest ranks; None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _ms(values: Sequence[float]) -> dict[str, float | None]:
    points = {f"p{q}": percentile(values, q) for q in (50, 90, 99)}
    return {name: None if v is None else v * 1000 for name, v in points.items()}


@dataclass(frozen=True)
class Level:
    """The results of one concurrency level. Rates count successful requests only."""

    concurrency: int
    requests: int
    ok: int
    errors: dict[str, int]
    wall_s: float
    requests_per_s: float
    tokens_per_s: float
    completion_tokens: int
    ttft_ms: dict[str, float | None]
    latency_ms: dict[str, float | None]
    request_tokens_per_s_p50: float | None  # completion tokens / latency, per request
    client_cpu_s: float
    without_usage: int
    cache_hits: int
    samples: list[dict[str, Any]] = field(default_factory=list, repr=False)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def summarize(concurrency: int, samples: Sequence[Sample], wall_s: float, cpu_s: float) -> Level:
    good = [s for s in samples if s.error is None]
    tokens = sum(s.completion_tokens for s in good)
    rates = [s.completion_tokens / s.latency_s for s in good if s.latency_s > 0]
    return Level(
        concurrency=concurrency,
        requests=len(samples),
        ok=len(good),
        errors=dict(Counter(s.error for s in samples if s.error is not None)),
        wall_s=wall_s,
        requests_per_s=len(good) / wall_s if wall_s > 0 else 0.0,
        tokens_per_s=tokens / wall_s if wall_s > 0 else 0.0,
        completion_tokens=tokens,
        ttft_ms=_ms([s.ttft_s for s in good if s.ttft_s is not None]),
        latency_ms=_ms([s.latency_s for s in good]),
        request_tokens_per_s_p50=percentile(rates, 50),
        client_cpu_s=cpu_s,
        without_usage=sum(1 for s in good if not s.usage),
        cache_hits=sum(1 for s in samples if s.cache_hit),
        samples=[{k: v for k, v in asdict(s).items() if not k.startswith("_")} for s in samples],
    )


@dataclass(frozen=True)
class Verdict:
    """The sizing answer: the most tokens/s, and the most concurrency within the SLO."""

    best: Level | None
    within_slo: Level | None


def choose(results: Sequence[Level], ttft_slo_ms: float | None) -> Verdict:
    """``within_slo`` is the highest level without errors whose TTFT p99 is under the
    target (a level that fails requests meets no target); None without a target."""
    served = [level for level in results if level.ok]
    best = max(served, key=lambda level: level.tokens_per_s, default=None)
    if ttft_slo_ms is None:
        return Verdict(best, None)
    passing = [
        level
        for level in served
        if not level.errors and (p99 := level.ttft_ms["p99"]) is not None and p99 <= ttft_slo_ms
    ]
    return Verdict(best, max(passing, key=lambda level: level.concurrency, default=None))


# --- the sweep ----------------------------------------------------------------------


async def _level(
    client: httpx.AsyncClient, config: LoadTestConfig, concurrency: int, first_index: int
) -> Level:
    count = config.requests_at(concurrency)
    counter = itertools.count()
    samples: list[Sample] = []

    async def worker() -> None:
        while (i := next(counter)) < count:
            samples.append(await send(client, config, first_index + i))

    cpu, started = time.process_time(), time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())
    wall_s = time.perf_counter() - started
    return summarize(concurrency, samples, wall_s, time.process_time() - cpu)


async def sweep(
    config: LoadTestConfig,
    on_level: Callable[[Level], None] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> list[Level]:
    """Run every level in increasing order, after one unmeasured request that both warms
    the deployment up and checks it accepts the key and model (else :class:`LoadTestError`)."""
    top = max(config.concurrency)
    limits = httpx.Limits(max_connections=top, max_keepalive_connections=top)
    # The read timeout bounds the gap between two chunks; ``timeout_s`` bounds the request.
    timeout = httpx.Timeout(config.timeout_s, connect=min(CONNECT_TIMEOUT_S, config.timeout_s))
    async with httpx.AsyncClient(limits=limits, timeout=timeout, transport=transport) as client:
        first = await send(client, config, 0)
        if first.error is not None:
            raise LoadTestError(refusal(config, first))
        results: list[Level] = []
        index = 1
        for concurrency in config.concurrency:
            results.append(await _level(client, config, concurrency, index))
            index += config.requests_at(concurrency)
            if on_level is not None:
                on_level(results[-1])
        return results
