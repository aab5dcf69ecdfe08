"""What one request did, gathered while it runs, reported once when it ends.

The middleware opens a ``RequestRecord`` for every request and keeps it in a
context variable; the handler and the services fill in what only they know
(principal, model, cache result, engine, tokens, time spent waiting on the
engine, first token). At the end, the middleware turns it into metrics and one
JSON log line. The record holds ids, names from configuration and numbers;
never a key, a prompt or a completion.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RequestRecord:
    request_id: str
    started: float = field(default_factory=time.perf_counter)
    principal: str = "-"
    model: str = "none"  # a model the engine serves, or "none": a bounded metric label
    cache: str | None = None
    engine: str | None = None
    stream: bool = False
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    upstream_s: float = 0.0  # time spent waiting on the engine (headers and body chunks)
    first_token_at: float | None = None

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def overhead(self) -> float:
        """The gateway's own time so far: everything but the waits on the engine."""
        return max(0.0, self.elapsed() - self.upstream_s)

    def ttft(self) -> float | None:
        return None if self.first_token_at is None else self.first_token_at - self.started

    def add_usage(self, usage: Any) -> None:
        if isinstance(usage, dict):
            # The Responses API names them input_tokens and output_tokens.
            prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
            completion = usage.get("completion_tokens", usage.get("output_tokens"))
            self.prompt_tokens = prompt if isinstance(prompt, int) else None
            self.completion_tokens = completion if isinstance(completion, int) else None


_current: ContextVar[RequestRecord | None] = ContextVar("portico_request", default=None)


def begin(request_id: str) -> RequestRecord:
    record = RequestRecord(request_id=request_id)
    _current.set(record)
    return record


def current() -> RequestRecord:
    """The running request's record (a detached one outside a request, e.g. in tests)."""
    record = _current.get()
    return record if record is not None else RequestRecord(request_id="-")
