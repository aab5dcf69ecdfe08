"""The gateway's one settings object, read from ``PORTICO_*`` environment variables.

Built once by :func:`gateway.app.create_app` and validated there: unsafe
combinations (no API keys outside dev mode) stop the process at start-up.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from gateway.discovery import EngineSource
from gateway.hosts import AllowedHostPatterns
from gateway.jwt_keys import MIN_SECRET_BYTES, load_public_key
from gateway.proxies import TrustedProxies
from gateway.redaction import KINDS, Kind
from gateway.sealing import parse_key


class UpstreamTimeouts(BaseModel):
    """Explicit limits on every wait for an engine. There is no total cap on purpose:
    a healthy stream may run for minutes; ``stream_idle_s`` catches a stalled one."""

    connect_s: float = Field(3.0, gt=0, description="TCP connect to an engine.")
    first_byte_s: float = Field(
        60.0, gt=0,
        description="Streams: wait for the response headers (the engine queues, prefills).",
    )  # fmt: skip
    generation_s: float = Field(
        600.0, gt=0,
        description="Non-streamed requests: wait for the whole answer (vLLM sends its headers "
        "only when generation ends, so this bounds the generation, not the first byte).",
    )  # fmt: skip
    stream_idle_s: float = Field(
        60.0, gt=0, description="Max gap between two chunks of a response body."
    )
    probe_s: float = Field(2.0, gt=0, description="Health and model-list probes.")


class Limits(BaseModel):
    """Request caps checked before any engine is called."""

    max_body_bytes: int = Field(1_048_576, gt=0, description="Request body size cap (413).")
    max_tokens: int = Field(
        4096, gt=0, description="Cap on max_tokens / max_completion_tokens (400)."
    )
    max_n: int = Field(8, gt=0, description="Cap on n and best_of (400).")
    max_prompts: int = Field(
        64, gt=0, description="Cap on the prompts of one batched /v1/completions request (400)."
    )
    max_inputs: int = Field(
        2048,
        gt=0,
        description="Cap on the inputs of one /v1/embeddings request (400; OpenAI's own limit).",
    )
    max_stop: int = Field(16, gt=0, description="Cap on the number of stop sequences (400).")
    max_stop_chars: int = Field(
        256, gt=0, description="Cap on the length of each stop sequence, in characters (400)."
    )
    body_read_s: float = Field(
        30.0, gt=0,
        description="Time allowed to receive the whole request body, however it trickles in "
        "(408 past it).",
    )  # fmt: skip
    max_headers: int = Field(100, gt=0, description="Cap on the number of request headers (431).")
    max_header_bytes: int = Field(
        32_768, gt=0, description="Cap on the request headers' total size, names and values (431)."
    )
    max_url_bytes: int = Field(
        8192, gt=0, description="Cap on the request target's size, path and query (414)."
    )
    max_buffered_body_bytes: int = Field(
        256 * 1_048_576, gt=0,
        description="Cap on the request-body bytes one gateway process holds at once, all "
        "requests together (503 with Retry-After for a body that would go over it). Keep it "
        "well below the process's memory limit.",
    )  # fmt: skip

    @model_validator(mode="after")
    def _one_body_fits(self) -> Limits:
        if self.max_buffered_body_bytes < self.max_body_bytes:
            raise ValueError("max_buffered_body_bytes must be at least max_body_bytes")
        return self


class RedisSettings(BaseModel):
    """How the gateway treats Redis, which holds keys, limits and usage when configured."""

    timeout_s: float = Field(
        0.05, gt=0, description="Per-call Redis timeout; a slow Redis must not slow requests."
    )
    failure_policy: Literal["open", "closed"] = Field(
        "open",
        description="When Redis fails: 'open' admits requests (limits not enforced, counted in "
        "portico_redis_fail_open_total; keys seen in the last minute keep working), "
        "'closed' answers 503 with Retry-After.",
    )
    breaker_failures: int = Field(
        3, ge=1, description="Consecutive failures that open the circuit breaker."
    )
    breaker_reset_s: float = Field(
        2.0, gt=0, description="Seconds the breaker stays open before one probe call."
    )
    prefix: str = Field("portico", description="Namespace for every Redis key Portico writes.")


class RateLimitSettings(BaseModel):
    """Defaults for principals whose key or token sets no limit of its own."""

    default_rpm: int | None = Field(None, gt=0, description="Requests per minute (None: no limit).")
    default_tpm: int | None = Field(None, gt=0, description="Tokens per minute (None: no limit).")
    window_s: float = Field(60.0, gt=0, description="Length of the sliding window.")
    per_model: bool = Field(
        False,
        description="Count rpm/tpm per (principal, model) pair instead of per principal.",
    )
    default_max_tokens: int | None = Field(
        None, gt=0,
        description="max_tokens the gateway sets on a request that sets neither max_tokens nor "
        "max_completion_tokens, so the engine never generates more than was reserved; capped "
        "by the key's max_tokens, PORTICO_LIMITS__MAX_TOKENS and the model's context length. "
        "Unset: that cap.",
    )  # fmt: skip
    auth_failures_per_ip: int = Field(
        20, gt=0, description="Failed authentications per client IP per window before 429."
    )


class CacheSettings(BaseModel):
    """The response cache (Redis when configured, else an in-process LRU)."""

    mode: Literal["deterministic", "all", "off"] = Field(
        "deterministic",
        description="'deterministic' caches only temperature=0 or seeded requests; 'all' "
        "caches every request; 'off' disables the cache. Per request: X-Portico-Cache: on|off.",
    )
    ttl_s: int = Field(
        3600, ge=0, description="Entry lifetime unless Cache-Control max-age sets one."
    )
    max_ttl_s: int = Field(86400, ge=0, description="Upper bound on a requested max-age.")
    max_entry_bytes: int = Field(1_048_576, gt=0, description="Larger answers are not stored.")
    memory_max_bytes: int = Field(
        64 * 1_048_576, gt=0, description="Size of the in-process cache (no Redis)."
    )
    merge_wait_s: float = Field(
        120.0, gt=0, description="How long an identical request waits for the one in flight."
    )


class ResponsesSettings(BaseModel):
    """Stored responses of the Responses API (Redis when configured, else in-process)."""

    ttl_s: int = Field(
        30 * 86400, gt=0,
        description="How long a stored response (and the conversation it answered) can be "
        "retrieved and continued with previous_response_id: 30 days, as OpenAI keeps them.",
    )  # fmt: skip
    memory_max_bytes: int = Field(
        64 * 1_048_576, gt=0,
        description="Size of the in-process response store (no Redis); the least recently "
        "used responses are dropped beyond it.",
    )  # fmt: skip


class FilesSettings(BaseModel):
    """Uploaded files of the Files API, the Batch API's input (docs/batch.md)."""

    max_bytes: int = Field(
        16 * 1_048_576, gt=0,
        description="Largest file one upload may carry (413 past it). The upload's body may "
        "be this plus 64 KiB of multipart framing; no other route's cap changes.",
    )  # fmt: skip
    max_lines: int = Field(
        50_000, gt=0,
        description="Most lines one batch input file may have, blank ones included (400 past it).",
    )  # fmt: skip
    tenant_max_bytes: int = Field(
        64 * 1_048_576, gt=0,
        description="Bytes of files one caller may have stored at once, all files together "
        "(400 file_storage_limit_exceeded for an upload that would go over it); deleted and "
        "expired files give theirs back.",
    )  # fmt: skip
    total_max_bytes: int = Field(
        128 * 1_048_576, gt=0,
        description="Bytes of files all callers together may have stored (in Redis, or this "
        "process): 503 file_storage_full past it. Files have no Redis TTL and are never "
        "evicted, so keep this well under Redis' maxmemory, or uploads would fill the memory "
        "every other tenant's limits and cache need.",
    )  # fmt: skip
    ttl_s: int = Field(
        30 * 86400, gt=0,
        description="How long a file lives after its upload (its expires_at); an expired file "
        "is gone for every read and its bytes are freed.",
    )  # fmt: skip
    sweep_interval_s: float = Field(
        60.0, gt=0, description="How often expired files are deleted from the store."
    )
    redis_timeout_s: float = Field(
        5.0, gt=0,
        description="Time limit on one Redis call of the file store (a file is up to "
        "max_bytes; PORTICO_REDIS__TIMEOUT_S is sized for the small calls of every request).",
    )  # fmt: skip


class BatchesSettings(BaseModel):
    """The Batch API's runner: the workers every replica runs (docs/batch.md)."""

    concurrency: int = Field(
        2, ge=0, le=256,
        description="Batch lines this replica runs at once (0: this replica runs none). "
        "Batch lines use engine slots only when no interactive request waits for one.",
    )  # fmt: skip
    lease_s: float = Field(
        60.0, gt=0,
        description="How long a line stays with the replica running it without word from "
        "it; a replica that dies loses its lines to the others after this. Renewed every "
        "third of it while the line runs.",
    )  # fmt: skip
    poll_interval_s: float = Field(
        1.0, gt=0, description="How often an idle worker looks for batch lines to run."
    )
    retry_s: float = Field(
        5.0, gt=0,
        description="How long a line refused for now (engines full, 503; a limit without "
        "Retry-After) waits before it is tried again. A line is retried until the batch's "
        "completion window ends.",
    )  # fmt: skip
    tpm: int | None = Field(
        None, gt=0,
        description="Tokens per minute a principal's batch lines may use, in their own window "
        "(None: no limit). Batch lines are not counted in the key's rpm and tpm, so a batch "
        "never eats the interactive limit; the key's token budget is charged.",
    )  # fmt: skip
    engine_priority: int = Field(
        0, ge=0,
        description="vLLM 'priority' sent with batch lines (higher: served later; 0: not "
        "sent). Takes effect on engines started with --scheduling-policy priority "
        "(PORTICO_ENGINE_SCHEDULING_POLICY); an fcfs engine ignores it.",
    )  # fmt: skip
    tenant_max_active: int = Field(
        16, gt=0,
        description="Batches one caller may have unfinished or created in the last minute "
        "(429 too_many_batches past it): bounds one tenant's share of the workers, and how "
        "often it can make the gateway validate a large input file.",
    )  # fmt: skip
    input_cache_batches: int = Field(
        4, gt=0,
        description="Batch input files a replica keeps parsed in memory while it runs them "
        "(each at most PORTICO_FILES__MAX_BYTES).",
    )  # fmt: skip


class RedactionSettings(BaseModel):
    """Optional PII redaction of prompt text before it reaches an engine (docs/pii.md)."""

    mode: Literal["off", "redact"] = Field(
        "off",
        description="'redact' replaces e-mail addresses, phone, card, SSN, NINO and IBAN "
        "numbers with [EMAIL], [PHONE], ... in every string the model reads (prompts, every "
        "message field, text content parts, tools, documents, template arguments: "
        "docs/pii.md) before the engine (and the cache key) sees them, and refuses (400) "
        "chat content parts of a type it does not know; 'off' leaves request bodies untouched.",
    )
    kinds: Annotated[list[Kind], NoDecode] = Field(
        default_factory=lambda: list(KINDS),
        description="Comma-separated kinds to redact: email, phone, card, ssn, nino, iban.",
    )

    @field_validator("kinds", mode="before")
    @classmethod
    def _split_kinds(cls, value: object) -> object:
        if isinstance(value, str):
            return [k.strip().lower() for k in value.split(",") if k.strip()]
        return value


class RoutingSettings(BaseModel):
    """How requests are spread over several engines, and what happens when they are full
    or failing. See docs/routing.md."""

    strategy: Literal["affinity", "least_outstanding", "round_robin"] = Field(
        "affinity",
        description="affinity: a session or shared prompt prefix sticks to one engine (bounded "
        "load), other requests go to the least busy; least_outstanding: always the least busy; "
        "round_robin: engines in turn (the baseline bench/ compares against).",
    )
    max_in_flight: int = Field(
        64, gt=0, description="Requests one engine may have outstanding; beyond it they queue."
    )
    queue_size: int = Field(
        256, ge=0, description="Requests waiting for a free engine slot; beyond it, 503 at once."
    )
    queue_wait_s: float = Field(
        5.0, gt=0, description="Longest wait in that queue before 503 with Retry-After."
    )
    retries: int = Field(
        2, ge=0, le=5,
        description="Extra attempts on a different engine, only before any byte reached the "
        "client and only after a connection failure or an engine 503.",
    )  # fmt: skip
    breaker_failures: int = Field(
        3, ge=1, description="Consecutive failures that take an engine out of rotation."
    )
    breaker_reset_s: float = Field(
        5.0, gt=0, description="How long an engine stays out before a half-open /health probe."
    )
    health_interval_s: float = Field(
        5.0, gt=0, description="Period of the active /health check of every engine."
    )
    affinity_prefix_chars: int = Field(
        2048, ge=0,
        description="Prompt characters (system prompt and first messages) hashed to pick the "
        "same engine for a shared prefix, so vLLM's prefix cache hits. 0 disables it.",
    )  # fmt: skip
    affinity_load_factor: float = Field(
        1.25, ge=1.0,
        description="Bounded load: a prefix's engine is skipped when it has more than this "
        "factor times the average outstanding requests.",
    )  # fmt: skip
    dns_refresh_s: float = Field(
        5.0, gt=0,
        description="How often dns+http:// engine names (a Kubernetes headless Service) are "
        "resolved again; each address is one engine.",
    )  # fmt: skip
    session_header: str = Field(
        "x-session-id",
        description="Request header naming a session; requests with it (or with the 'user' "
        "field) stick to one engine.",
    )


class JWTSettings(BaseModel):
    """JWT bearer verification; off unless a secret, a public key or a JWKS URL is set."""

    secret: SecretStr | None = Field(
        None, description="HS256 shared secret (at least 32 bytes). Verifies HS256 tokens only."
    )
    public_key: str | None = Field(
        None,
        description="PEM public key: RSA of 2048+ bits verifies RS256 only, EC P-256 verifies "
        "ES256 only. Literal \\n sequences are read as newlines.",
    )
    jwks_url: str | None = Field(
        None, description="JWKS endpoint; RS256/ES256 tokens pick their key by the kid header."
    )
    audience: str | None = Field(
        None,
        description="Required aud claim when set. When unset, a token carrying aud is refused.",
    )
    issuer: str | None = Field(None, description="Required iss claim when set.")
    leeway_s: float = Field(30, ge=0, description="Clock skew allowed on exp, nbf and iat.")
    jwks_min_refresh_s: float = Field(
        30, gt=0, description="A token with an unknown kid refetches the JWKS at most this often."
    )
    jwks_timeout_s: float = Field(2, gt=0, description="Time limit on one JWKS fetch.")

    @property
    def enabled(self) -> bool:
        return any(v is not None for v in (self.secret, self.public_key, self.jwks_url))

    @field_validator("secret")
    @classmethod
    def _strong_secret(cls, value: SecretStr | None) -> SecretStr | None:
        raw = "" if value is None else value.get_secret_value()
        if value is not None and len(raw.encode()) < MIN_SECRET_BYTES:
            raise ValueError(
                f"the HS256 secret must be at least {MIN_SECRET_BYTES} bytes; "
                "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(48))'"
            )
        if raw.lstrip().startswith("-----BEGIN"):
            raise ValueError("the HS256 secret looks like a PEM key: set it as public_key instead")
        return value

    @field_validator("public_key")
    @classmethod
    def _usable_public_key(cls, value: str | None) -> str | None:
        if value is not None:
            load_public_key(value)
        return value

    @field_validator("jwks_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("jwks_url must be an http(s) URL")
        return value


class GatewaySettings(BaseSettings):
    """Everything the gateway process is configured with."""

    # hide_input_in_errors: a value refused at start-up (a malformed encryption key, the
    # open-gateway check) must not print the secrets it was given into the log.
    model_config = SettingsConfigDict(
        env_prefix="PORTICO_", env_nested_delimiter="__", extra="ignore",
        hide_input_in_errors=True,
    )  # fmt: skip

    engine_url: str = Field(
        "http://127.0.0.1:8000", description="Base URL of the vLLM engine (no /v1)."
    )
    engines: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated engine base URLs; each engine's models are read from its "
        "/v1/models. A dns+http://name:port entry is every address the name resolves to "
        "(a Kubernetes headless Service), re-resolved. Unset: PORTICO_ENGINE_URL alone.",
    )
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated API keys accepted as Bearer tokens or X-API-Key. "
        "Held only as SHA-256 digests after start-up.",
    )
    dev_mode: bool = Field(
        False,
        description="Allows running with no API keys (open gateway). One process, local only.",
    )
    trusted_proxies: TrustedProxies = Field(
        default_factory=list,
        description="Comma-separated IPs or CIDRs of proxies whose X-Forwarded-For is believed: "
        "from them, the right-most address that is not a listed proxy is the client (the "
        "address the per-IP auth-failure limit counts). Empty: the header is ignored and "
        "the connection's peer is the client.",
    )
    allowed_hosts: AllowedHostPatterns = Field(
        default_factory=list,
        description="Comma-separated names the gateway answers in the Host header: exact "
        "names or IPs, *.example.com (its subdomains) or * (any); ports are ignored. Any "
        "other Host gets 400 invalid_host; /healthz, /readyz and /metrics answer any Host "
        "(probes and scrapes use the pod IP). Empty: any Host, with a start-up warning "
        "outside dev mode; set it in production (the Helm chart does).",
    )
    isolate_prefix_cache: bool = Field(
        True,
        description="Give every principal its own vLLM prefix cache (the gateway sets vLLM's "
        "cache_salt per principal), so no tenant can learn from timing whether another "
        "tenant's prompt is cached. False shares cached prefixes across tenants.",
    )
    models_refresh_s: float = Field(
        10.0, gt=0, description="How long the engine's model list is trusted before re-reading."
    )
    redis_url: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("PORTICO_REDIS_URL", "REDIS_URL", "redis_url"),
        description="Redis for keys, limits and usage shared by every replica "
        "(redis://host:6379/0). Unset: in-memory stores, correct for one process only.",
    )
    admin_token: SecretStr | None = Field(
        None,
        description="Bearer token for /admin; it holds every permission. Unset: /admin accepts "
        "only keys and JWTs holding the route's permission (keys:read, keys:write, "
        "model_admin, admin).",
    )
    encryption_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated encryption keys (32 random bytes, URL-safe base64, "
        "newest first): every cached answer, stored response, uploaded file, and key records' "
        "names and "
        "metadata are encrypted at rest (AES-256-GCM) under the first; any of them "
        "decrypts, so rotate by putting a new key first and dropping the old once its "
        "entries expired. Unset: stored in clear.",
    )

    @field_validator("encryption_keys", mode="before")
    @classmethod
    def _valid_encryption_keys(cls, value: object) -> object:
        # Checked here so a malformed key stops start-up, naming no key material.
        texts = value.split(",") if isinstance(value, str) else value
        if not isinstance(texts, list):
            return value
        found = [t.get_secret_value() if isinstance(t, SecretStr) else str(t) for t in texts]
        keys = [t.strip() for t in found if t.strip()]
        for i, text in enumerate(keys):
            try:
                parse_key(text)
            except ValueError as exc:
                raise ValueError(f"PORTICO_ENCRYPTION_KEYS entry {i + 1}: {exc}") from None
        return keys

    key_pepper: SecretStr | None = Field(
        None,
        description="Server-side secret mixed into key digests (HMAC-SHA256). Changing it "
        "invalidates every stored key.",
    )
    upstream: UpstreamTimeouts = Field(default_factory=UpstreamTimeouts)
    limits: Limits = Field(default_factory=Limits)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    rate_limits: RateLimitSettings = Field(default_factory=RateLimitSettings)
    jwt: JWTSettings = Field(default_factory=JWTSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    responses: ResponsesSettings = Field(default_factory=ResponsesSettings)
    files: FilesSettings = Field(default_factory=FilesSettings)
    batches: BatchesSettings = Field(default_factory=BatchesSettings)
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    redaction: RedactionSettings = Field(default_factory=RedactionSettings)
    drain_grace_s: float = Field(
        25.0, ge=0,
        description="On SIGTERM: how long in-flight requests and streams may take to finish "
        "(new ones get 503) before the process exits. Keep it below Kubernetes' "
        "terminationGracePeriodSeconds.",
    )  # fmt: skip
    log_level: str = Field("info", description="Python logging level.")
    prometheus_multiproc_dir: str | None = Field(
        None,
        validation_alias=AliasChoices("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir"),
        description="Directory shared by uvicorn workers for metrics (prometheus-client's own "
        "variable; `portico gateway serve --workers N` sets it). Unset: one process.",
    )

    @model_validator(mode="before")
    @classmethod
    def _split_keys(cls, data: object) -> object:
        if isinstance(data, dict) and isinstance(data.get("api_keys"), str):
            data["api_keys"] = [k.strip() for k in data["api_keys"].split(",") if k.strip()]
        if isinstance(data, dict) and isinstance(data.get("engines"), str):
            data["engines"] = [u.strip() for u in data["engines"].split(",") if u.strip()]
        return data

    @property
    def engine_urls(self) -> list[str]:
        """The engines to route to: ``engines`` when set, else ``engine_url`` alone."""
        urls = self.engines or [self.engine_url]
        return list(dict.fromkeys(u.rstrip("/") for u in urls))

    @model_validator(mode="after")
    def _check_engine_entries(self) -> GatewaySettings:
        for entry in self.engine_urls:
            EngineSource.parse(entry)  # ValueError names the bad entry
        return self

    @model_validator(mode="after")
    def _refuse_open_gateway(self) -> GatewaySettings:
        # With Redis, keys live there (created through /admin); without it, keys
        # must come from settings unless this is an explicitly open dev gateway.
        if not self.api_keys and not self.dev_mode and self.redis_url is None:
            raise ValueError(
                "no API keys configured: set PORTICO_API_KEYS, or PORTICO_DEV_MODE=true "
                "to run an open gateway for local development"
            )
        return self
