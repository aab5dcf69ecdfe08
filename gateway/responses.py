"""The Responses API's state: Portico keeps the responses, per tenant; engines keep none.

Why the gateway and not the engine: vLLM keeps responses only when started with
``VLLM_ENABLE_RESPONSES_API_STORE=1``, in its process memory, never freed (its
own FIXME), lost when the engine restarts, and readable by anyone who knows an
id. Behind a gateway, a follow-up would also have to reach the one engine that
made its predecessor. So every request reaches its engine with ``store: false``
and a response id the gateway chose, and the gateway keeps, per response:

- ``input``: the conversation it answered, as items (earlier turns' input and
  output, then this request's own input, as the engine read it: redacted when
  redaction is on), and
- ``response``: the response object the client received.

A follow-up's ``previous_response_id`` becomes ``input`` + ``response.output`` +
the follow-up's own input, which is what vLLM's own store would have rendered
(instructions are not carried over: OpenAI's rule, and vLLM's). Any engine can
answer any turn; prefix affinity still sends a conversation to the engine that
holds its prefix in its cache.

Records live under ``<prefix>:responses:<tenant digest>:<id>`` for ``ttl_s``,
compressed and, with encryption keys configured, sealed under their key as
authenticated data. A tenant's lookup of another tenant's id finds nothing: the
same 404 as an id that never existed. A record that does not open or parse is
treated as absent, never returned as garbage.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import zlib
from dataclasses import replace
from typing import Any

from gateway.cache import CacheStore
from gateway.errors import InvalidRequest, NotFound, RedisUnavailable
from gateway.exchange import Call
from gateway.protocol import ResponsesRequest, parse
from gateway.redis_policy import RedisPolicy
from gateway.sealing import Sealer, is_sealed
from gateway.settings import ResponsesSettings

_log = logging.getLogger("portico.responses")


def new_response_id() -> str:
    """An id no client chose and none can guess (vLLM's own are 16 hex digits)."""
    return "resp_" + secrets.token_hex(16)


def as_items(value: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A request's ``input`` as items: a string is one user message (vLLM's reading)."""
    return [{"role": "user", "content": value}] if isinstance(value, str) else list(value)


def not_found(response_id: str) -> NotFound:
    return NotFound(
        f"Response with id '{response_id[:256]}' not found.",
        param="response_id",
        code="response_not_found",
    )


class ResponseStore:
    def __init__(
        self,
        backend: CacheStore,
        settings: ResponsesSettings,
        max_body_bytes: int,
        policy: RedisPolicy,
        sealer: Sealer | None = None,
    ) -> None:
        self._backend = backend
        self._ttl_s = settings.ttl_s
        # A follow-up's body (the conversation inlined) may be as large as any request
        # body; a record holds that conversation plus the response's own output.
        self._max_body = max_body_bytes
        self._max_bytes = 2 * max_body_bytes
        self._policy = policy
        self._sealer = sealer

    @staticmethod
    def _key(tenant: str, response_id: str) -> str:
        return hashlib.sha256(tenant.encode()).hexdigest()[:32] + ":" + response_id

    async def load(self, tenant: str, response_id: str) -> dict[str, Any] | None:
        """``tenant``'s record of ``response_id``, or None. Redis trouble is a 503
        (RedisUnavailable): a missing record would be a wrong answer, not a degraded one."""
        key = self._key(tenant, response_id)
        stored = await self._backend.get(key)
        if stored is None:
            return None
        if self._sealer is not None:
            opened = self._sealer.open(stored, b"responses:" + key.encode())
        else:
            opened = None if is_sealed(stored) else stored
        return None if opened is None else self._decode(opened)

    def _decode(self, stored: bytes) -> dict[str, Any] | None:
        inflater = zlib.decompressobj()
        try:
            raw = inflater.decompress(stored, self._max_bytes + 1)
            record = json.loads(raw) if inflater.eof and len(raw) <= self._max_bytes else None
        except (zlib.error, ValueError):
            return None
        if not isinstance(record, dict):
            return None
        valid = isinstance(record.get("input"), list) and isinstance(record.get("response"), dict)
        return record if valid else None

    async def save(self, tenant: str, response_id: str, record: dict[str, Any]) -> None:
        """Keep ``record``; one over twice the body limit (it could never be continued),
        or a Redis failure, keeps nothing: the answer itself was delivered, and a
        follow-up then gets 400."""
        raw = json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode()
        if len(raw) > self._max_bytes:
            _log.warning("response %s not stored: %d bytes over the limit", response_id, len(raw))
            return
        key = self._key(tenant, response_id)
        stored = zlib.compress(raw, 1)
        if self._sealer is not None:
            stored = self._sealer.seal(stored, b"responses:" + key.encode())
        try:
            await self._backend.set(key, stored, self._ttl_s)
        except RedisUnavailable as exc:
            self._policy.tolerate(exc, "a response store write")

    async def delete(self, tenant: str, response_id: str) -> bool:
        return await self._backend.delete(self._key(tenant, response_id))

    async def resume(self, call: Call) -> Call:
        """``call`` with its response id, and with the conversation its
        ``previous_response_id`` names inlined as ``input`` (400 if there is none)."""
        request = call.request
        if not isinstance(request, ResponsesRequest):
            raise TypeError("not a Responses API call")
        call = replace(call, response_id=new_response_id())
        previous = request.previous_response_id
        if previous is None:
            return call
        record = await self.load(call.principal.id, previous)
        if record is None:
            raise InvalidRequest(
                f"Previous response with id '{previous[:256]}' not found.",
                param="previous_response_id",
                code="previous_response_not_found",
            )
        output = record["response"].get("output")
        conversation = [*record["input"], *(output if isinstance(output, list) else [])]
        payload = json.loads(call.body)
        payload["input"] = conversation + as_items(request.input)
        del payload["previous_response_id"]
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        if len(body) > self._max_body:
            raise InvalidRequest(
                "This conversation has grown past the gateway's request size limit; "
                "start a new one, or send a shorter history as 'input'.",
                param="previous_response_id",
                code="conversation_too_large",
            )
        return replace(
            call, body=body, request=parse(ResponsesRequest, body), previous_response_id=previous
        )

    def keeper(self, call: Call) -> ResponseKeeper:
        return ResponseKeeper(self, call)


class ResponseKeeper:
    """What a Responses API call leaves behind: its record, kept (when the client did
    not say ``store: false``) before the client sees the end of the answer. Takes the
    cache ticket's place in an ``Exchange``: responses are never served from the cache
    (each has its own id, and a conversation's state is the store's)."""

    result = "bypass"  # x-cache

    def __init__(self, store: ResponseStore, call: Call) -> None:
        request = call.request
        if not isinstance(request, ResponsesRequest) or call.response_id is None:
            raise TypeError("not a resumed Responses API call")
        self._store = store
        self._call = call
        self._tenant = call.principal.id
        self._id = call.response_id
        self._stored = request.stored
        self._input = as_items(request.input)
        self._finished = False

    def recorder(self) -> None:
        return None  # a stream's final response object is kept by the ResponsesTap

    def relayed(self, body: bytes) -> tuple[bytes, dict[str, Any] | None]:
        """A whole answer's body for the client, and what to keep of it."""
        try:
            response = json.loads(body)
        except ValueError:
            return body, None
        if not isinstance(response, dict) or response.get("object") != "response":
            return body, None
        self._call.restate(response)
        out = json.dumps(response, ensure_ascii=False, separators=(",", ":")).encode()
        return out, {"response": response}

    async def finish(self, entry: dict[str, Any] | None = None) -> None:
        if self._finished:
            return
        self._finished = True
        if entry is not None and self._stored:
            record = {"input": self._input, "response": entry["response"]}
            await self._store.save(self._tenant, self._id, record)
