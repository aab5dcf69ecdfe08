"""Two real vLLM CPU engines behind one gateway: the session's engine (A) and a second
one (B) that this module starts, kills (SIGKILL of its whole process tree, as when a pod
dies) and starts again. Which engine served a request is read from the engines' own
Prometheus counters, not from anything the gateway says about itself."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import psutil
import pytest

from tests.conftest import free_port
from tests.e2e.conftest import LOG_DIR, MODEL, Stack
from tests.gateway.processes import gateway_env, gateways, metric

pytestmark = pytest.mark.e2e

KEY = "routing-e2e-key"
STARTUP_TIMEOUT_S = 600
# About 600 tokens: prefilling it is most of a short request's time on this CPU, and
# what vLLM's prefix cache saves when the same engine sees it again.
SYSTEM = (
    "You are the support assistant of a small bicycle repair shop in Lyon. "
    "Answer briefly, politely and only about bicycles, repairs, prices and opening hours. "
    "The shop opens from nine to six on weekdays and from ten to four on Saturdays. "
    "A standard tune-up costs forty euros; a wheel truing costs fifteen euros. "
) * 8
QUESTIONS = (
    "Do you fix brakes?", "When are you open?", "How much is a tune-up?",
    "Can you true a wheel?", "Do you sell tyres?", "Are you open Sunday?",
)  # fmt: skip


class Engine:
    """One real engine process (``portico engine serve``) on a fixed port."""

    def __init__(self, name: str, url: str, port: int | None = None) -> None:
        self.name = name
        self.url = url
        self.port = port
        self._proc: subprocess.Popen[bytes] | None = None

    def metric(self, name: str, **labels: str) -> float:
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        total = 0.0
        for line in text.splitlines():
            if line.startswith((name + "{", name + " ")) and all(
                f'{k}="{v}"' in line for k, v in labels.items()
            ):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def generations(self) -> float:
        return self.metric("http_requests_total", handler="/v1/chat/completions") + self.metric(
            "http_requests_total", handler="/v1/completions"
        )

    def start(self) -> None:
        assert self.port is not None
        argv = [sys.executable, "-m", "engine", "serve", "--port", str(self.port)]
        argv += ["--enforce-eager", "--max-model-len", "4096"]
        log = (LOG_DIR / f"engine-{self.name}.log").open("ab")
        # vLLM pins its model threads to core 0 by default; on this 2-core machine the
        # second engine computes on core 1, as two engines on two hosts would not share.
        env = {**os.environ, "VLLM_CPU_OMP_THREADS_BIND": "1"}
        self._proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self._ready():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"engine {self.name} did not start; see {LOG_DIR}")
            time.sleep(1)

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/v1/models", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def kill(self) -> None:
        """SIGKILL the whole tree at once: the supervisor, vLLM's server and its engine core."""
        if self._proc is None:
            return
        try:
            tree = [psutil.Process(self._proc.pid)]
            tree += tree[0].children(recursive=True)
        except psutil.NoSuchProcess:
            tree = []
        for proc in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(signal.SIGKILL)
        self._proc.wait(timeout=30)
        psutil.wait_procs(tree, timeout=30)
        self._proc = None


@pytest.fixture(scope="module")
def engines(stack: Stack) -> Iterator[tuple[Engine, Engine]]:
    port = free_port()
    b = Engine("b", f"http://127.0.0.1:{port}", port)
    b.start()
    try:
        yield Engine("a", stack.engine_url), b
    finally:
        b.kill()


def _gateway(engines: tuple[Engine, Engine], **routing: str) -> Any:
    settings = {f"PORTICO_ROUTING__{k.upper()}": v for k, v in routing.items()}
    env = gateway_env(
        PORTICO_ENGINES=",".join(e.url for e in engines),
        PORTICO_API_KEYS=KEY,
        PORTICO_ROUTING__HEALTH_INTERVAL_S="0.5",
        PORTICO_ROUTING__BREAKER_FAILURES="1",
        PORTICO_ROUTING__BREAKER_RESET_S="1",
        **settings,
    )
    return gateways(1, env, LOG_DIR)


def _chat(base_url: str, system: str, question: str) -> str:
    with openai.OpenAI(base_url=base_url + "/v1", api_key=KEY, max_retries=0) as client:
        answer = client.chat.completions.create(
            model=MODEL,
            messages=[
                {"role": "system", "content": system},
                {"role": "user", "content": question},
            ],
            max_tokens=4,
            temperature=0,
        )
    return answer.choices[0].message.content or ""


def test_two_real_engines_a_shared_system_prompt_stays_on_one_engine_and_hits_its_prefix_cache(
    engines: tuple[Engine, Engine],
) -> None:
    a, b = engines
    with _gateway(engines) as (url,):
        system = f"[{uuid.uuid4().hex}] " + SYSTEM  # new to both engines' prefix caches
        before = [(e.generations(), e.metric("vllm:prefix_cache_hits_total")) for e in engines]
        for question in QUESTIONS:
            _chat(url, system, question)
        after = [(e.generations(), e.metric("vllm:prefix_cache_hits_total")) for e in engines]
        served = [int(n1 - n0) for (n0, _), (n1, _) in zip(before, after, strict=True)]
        hits = [h1 - h0 for (_, h0), (_, h1) in zip(before, after, strict=True)]
        assert sorted(served) == [0, 6], f"a and b served {served}"
        warm = served.index(6)
        # The 5 requests after the first reuse the system prompt's full KV blocks (vLLM
        # caches whole 128-token blocks: at least 3 of the ~600-token prompt).
        assert hits[warm] >= 5 * 384, f"prefix-cache hits {hits} (tokens)"
        assert hits[1 - warm] == 0

        # Different system prompts are spread over both engines.
        spread_before = [e.generations() for e in engines]
        for i in range(12):
            _chat(url, f"[{uuid.uuid4().hex}] shop {i}. " + SYSTEM[:400], "Hello?")
        spread = [e.generations() - n for e, n in zip(engines, spread_before, strict=True)]
        assert all(n >= 1 for n in spread), f"a and b served {spread}"
        assert a.url != b.url


def test_two_real_engines_a_conversation_continues_on_whichever_engine_answers(
    engines: tuple[Engine, Engine],
) -> None:
    """Responses API follow-ups carry their conversation through the gateway, not an
    engine's store: with round robin, each turn lands on the other engine, and the
    answers are those of engine A's own store (on for direct calls in this session)."""
    a, _ = engines
    turns = ("What is the capital of France?", "And of Italy?", "And of Spain?")
    settings: dict[str, Any] = {"model": MODEL, "temperature": 0, "max_output_tokens": 16}
    own: list[str] = []
    previous = None
    with openai.OpenAI(base_url=a.url + "/v1", api_key="none", max_retries=0) as client:
        for turn in turns:
            answer = client.responses.create(input=turn, previous_response_id=previous, **settings)
            own.append(answer.output_text)
            previous = answer.id
    with (
        _gateway(engines, strategy="round_robin") as (url,),
        openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0) as client,
    ):
        served, through, previous = [], [], None
        for turn in turns:
            before = [e.metric("http_requests_total", handler="/v1/responses") for e in engines]
            answer = client.responses.create(input=turn, previous_response_id=previous, **settings)
            after = [e.metric("http_requests_total", handler="/v1/responses") for e in engines]
            served.append([n1 - n0 for n0, n1 in zip(before, after, strict=True)].index(1))
            through.append(answer.output_text)
            previous = answer.id
    assert served[0] != served[1], served
    assert served[1] != served[2], served
    assert through == own


async def _stream(client: openai.AsyncOpenAI, started: asyncio.Event, topic: str) -> str:
    """One long stream; 'done' if it ended normally, 'error' if the SDK raised mid-stream."""
    stream = await client.completions.create(
        model=MODEL,
        prompt=f"Tell a long story about a {topic}.",  # distinct: the cache would merge them
        max_tokens=400,
        temperature=0,
        stream=True,
        extra_body={"ignore_eos": True},
    )
    try:
        async for _ in stream:
            started.set()
    except openai.APIError:
        return "error"
    return "done"


async def _complete(client: openai.AsyncOpenAI, prompt: str, long: bool = False) -> int:
    """A non-stream completion; ``long``: 200 tokens whatever the model says, so it is
    surely still running a few seconds later."""
    extra = {"ignore_eos": True} if long else None
    answer = await client.completions.create(
        model=MODEL, prompt=prompt, max_tokens=200 if long else 24, temperature=0,
        extra_body=extra,
    )  # fmt: skip
    return answer.usage.completion_tokens if answer.usage else 0


async def _running_at_least(engine: Engine, count: int, timeout_s: float) -> None:
    """Wait until ``engine`` runs ``count`` requests (polled: it is another process)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await asyncio.to_thread(engine.metric, "vllm:num_requests_running") >= count:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{engine.url} never ran {count} requests at once")


def test_two_real_engines_one_killed_mid_load_loses_no_unstarted_request_and_is_taken_back(
    engines: tuple[Engine, Engine],
) -> None:
    a, b = engines
    # Least outstanding: 4 concurrent streams split 2 and 2, whatever their prompts.
    with _gateway(engines, strategy="least_outstanding") as (url,):

        def client() -> openai.AsyncOpenAI:  # one per event loop
            return openai.AsyncOpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0)

        async def load() -> tuple[list[str], list[int]]:
            async with client() as sdk:
                return await _load(sdk)

        async def _load(sdk: openai.AsyncOpenAI) -> tuple[list[str], list[int]]:
            started = [asyncio.Event() for _ in range(4)]
            topics = ("lighthouse", "baker", "river", "comet")
            streams = [
                asyncio.create_task(_stream(sdk, s, t))
                for s, t in zip(started, topics, strict=True)
            ]
            async with asyncio.timeout(120):
                await asyncio.gather(*(s.wait() for s in started))
            assert b.metric("vllm:num_requests_running") >= 1  # b is mid-generation
            pending = [
                asyncio.create_task(_complete(sdk, f"Count to {i}.", long=True)) for i in range(6)
            ]
            # Kill b only once non-stream requests run on it too (beyond its 2 streams):
            # those must then be retried on a, whatever the timing of this machine.
            await _running_at_least(b, 3, timeout_s=60)
            b.kill()  # mid-load: two streams and some non-stream requests are on it
            after_kill = [_complete(sdk, f"Name a colour {i}.") for i in range(6)]
            async with asyncio.timeout(300):
                outcomes = await asyncio.gather(*streams)
                tokens = await asyncio.gather(*pending, *after_kill)
            return list(outcomes), list(tokens)

        outcomes, tokens = asyncio.run(load())
        # Streams on a: complete. Streams on b: an error event, which the SDK raises.
        assert sorted(outcomes) == ["done", "done", "error", "error"]
        # Every non-stream request succeeded: the ones caught on b were not started
        # for the client (no byte sent) and were resent to a.
        assert all(t > 0 for t in tokens), tokens
        assert metric(url, "portico_engine_retries_total") >= 1  # some were caught on b
        assert metric(url, "portico_streams_broken_total") == 2  # b's two streams
        assert metric(url, "portico_engine_healthy") == 1
        assert httpx.get(url + "/readyz", timeout=5).status_code == 200  # a covers the model
        # Nothing leaked: the scrape is the one request in flight, no engine slot held.
        assert metric(url, "portico_requests_in_flight") == 1
        assert metric(url, "portico_engine_in_flight") == 0
        assert a.metric("vllm:num_requests_running") == 0

        b.start()  # the restarted engine is taken back without touching the gateway
        deadline = time.monotonic() + 30
        while metric(url, "portico_engine_healthy") < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert metric(url, "portico_engine_healthy") == 2
        before = b.generations()

        async def burst() -> list[int]:
            async with client() as sdk:
                return list(await asyncio.gather(*(_complete(sdk, f"Hi {i}") for i in range(4))))

        assert all(t > 0 for t in asyncio.run(burst()))
        assert b.generations() - before >= 1
    assert a.generations() > 0
