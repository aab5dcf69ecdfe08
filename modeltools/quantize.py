"""``portico model quantize``: 4-bit GPTQ or AWQ weights with llm-compressor.

The output is a compressed-tensors checkpoint (vLLM loads it directly, with
``quant_method: compressed-tensors`` in its ``config.json``). The plan
(scheme, group size, recipe layout) is built by pure functions; llm-compressor,
torch and transformers are imported only inside :func:`run`, so the launcher
and the gateway never pay for them and never need the ``quantize`` extra, which lives
in its own venv (:mod:`modeltools.toolchain`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, get_args
from unittest import mock

from engine import model
from engine.checkpoint import read_config
from engine.errors import ConfigurationError, EngineError, ModelError
from engine.settings import EngineSettings
from modeltools import calibration

Method = Literal["gptq", "awq"]
Scheme = Literal["W4A16", "W4A8"]
METHODS: tuple[str, ...] = get_args(Method)
SCHEMES: tuple[str, ...] = get_args(Scheme)

# Architectures with the Llama layer layout (q/k/v/o, gate/up/down projections,
# input/post-attention norms), which both recipes and llm-compressor's AWQ
# mappings assume. Only Llama itself is exercised by the tests.
SUPPORTED_ARCHITECTURES = frozenset(
    {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"}
)
# Largest first: bigger groups mean fewer scales (smaller files); the group has
# to divide every quantized layer's input width or the layer cannot be packed.
GROUP_SIZES = (128, 64, 32)
IGNORED_MODULES = ("lm_head",)  # the output projection stays full precision: 4-bit
# logits cost far more quality than the few megabytes they would save
MANIFEST = "portico-quantization.json"


@dataclass(frozen=True)
class Plan:
    """Everything that decides the quantized checkpoint, before any weight is read."""

    method: Method
    scheme: Scheme
    group_size: int
    samples: int
    max_seq_length: int
    ignore: tuple[str, ...] = IGNORED_MODULES


def check_choice(method: str, scheme: str) -> tuple[Method, Scheme]:
    """Refuse an unknown method or scheme by name, listing the supported ones."""
    if method not in METHODS:
        raise ConfigurationError(
            f"quantization method {method!r} is not supported; choose one of {', '.join(METHODS)}."
        )
    if scheme not in SCHEMES:
        raise ConfigurationError(
            f"scheme {scheme!r} is not supported; choose W4A16 (int4 weights, 16-bit "
            "activations: GPU or AVX-512 CPU) or W4A8 (int4 weights, int8 activations: "
            "runs on AVX2 CPUs too)."
        )
    return method, scheme  # type: ignore[return-value]  # narrowed by the checks above


def check_model(config: Mapping[str, Any], source: str) -> None:
    """Refuse a checkpoint the recipes do not fit: other layouts or already quantized."""
    if "quantization_config" in config:
        method = config["quantization_config"].get("quant_method", "unknown")
        raise ConfigurationError(
            f"{source} is already quantized ({method}); quantize the full-precision model."
        )
    architectures = config.get("architectures") or []
    if not any(arch in SUPPORTED_ARCHITECTURES for arch in architectures):
        raise ConfigurationError(
            f"{source} is a {', '.join(architectures) or 'model of unknown architecture'}; "
            f"portico model quantize supports {', '.join(sorted(SUPPORTED_ARCHITECTURES))}."
        )


def choose_group_size(config: Mapping[str, Any]) -> int:
    """The largest group size dividing the model's hidden and intermediate widths.

    Every quantized Linear layer reads either the hidden state (q/k/v/o, gate/up)
    or the MLP's intermediate state (down). SmolLM2-135M has hidden 576, which
    128 does not divide, so it gets 64.
    """
    widths = [config.get("hidden_size"), config.get("intermediate_size")]
    if not all(isinstance(width, int) and width > 0 for width in widths):
        raise ModelError("config.json lacks hidden_size/intermediate_size; cannot pick groups.")
    for size in GROUP_SIZES:
        if all(width % size == 0 for width in widths):  # type: ignore[operator]
            return size
    raise ConfigurationError(
        f"no group size in {GROUP_SIZES} divides the layer widths {widths}; "
        "this model cannot be quantized with grouped 4-bit weights."
    )


def config_groups(scheme: Scheme, group_size: int) -> dict[str, dict[str, Any]]:
    """compressed-tensors' config group for the scheme, as plain data.

    Weights: symmetric int4, one scale per ``group_size`` inputs (what vLLM's
    kernels expect). W4A8 adds int8 activations quantized per token at run
    time, which is what vLLM's CPU kernel (Dynamic4bitLinearKernel) serves.
    """
    weights = {
        "num_bits": 4,
        "type": "int",
        "symmetric": True,
        "strategy": "group",
        "group_size": group_size,
        "dynamic": False,
    }
    activations = None
    if scheme == "W4A8":
        activations = {
            "num_bits": 8,
            "type": "int",
            "symmetric": True,
            "strategy": "token",
            "dynamic": True,
        }
    return {
        "group_0": {"targets": ["Linear"], "weights": weights, "input_activations": activations}
    }


def recipe_layout(plan: Plan) -> list[tuple[str, dict[str, Any]]]:
    """The recipe as (llm-compressor modifier name, arguments), in order.

    GPTQ quantizes with error correction in one modifier. AWQ is a transform in
    llm-compressor 0.14: it rescales channels for the scheme, and a
    QuantizationModifier after it does the rounding.
    """
    quantization = {"config_groups": config_groups(plan.scheme, plan.group_size)}
    quantization["ignore"] = list(plan.ignore)  # type: ignore[assignment]
    if plan.method == "gptq":
        return [("GPTQModifier", quantization)]
    return [("AWQModifier", {}), ("QuantizationModifier", quantization)]


def has_toolchain() -> bool:
    """llm-compressor is importable here (inside the toolchain venv, or installed by hand)."""
    return importlib.util.find_spec("llmcompressor") is not None


def require_extra() -> None:
    """Refuse early, with the way to get it, when llm-compressor is missing."""
    if not has_toolchain():
        raise ConfigurationError(
            "quantizing needs llm-compressor: `portico model quantize` runs in its own "
            "toolchain venv, built on first use (see docs/quantization.md); or install "
            "the 'quantize' extra into a venv without vllm."
        )


def _log(message: str) -> None:
    print(f"portico: {message}", file=sys.stderr, flush=True)


def run(plan: Plan, source: str, samples: list[str], output: Path) -> float:
    """Quantize ``source`` into ``output``; returns the seconds it took. Raises EngineError."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    began = time.monotonic()
    _log(f"loading {source}")
    tokenizer = AutoTokenizer.from_pretrained(source)
    # Calibrate in float32 on CPU: for the bundled model on a 2-core CPU, GPTQ
    # took 8.5 min in bf16 against ~2 min in float32 (and AVX2 has no bf16 maths).
    on_cpu = not torch.accelerator.is_available()
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32 if on_cpu else "auto")
    dataset = _tokenized(tokenizer, samples[: plan.samples], plan.max_seq_length)
    _log(
        f"{plan.method.upper()} {plan.scheme}, group size {plan.group_size}, "
        f"{len(dataset)} calibration samples of at most {plan.max_seq_length} tokens"
    )
    _oneshot(plan, model, tokenizer, dataset)
    _log(f"saving compressed-tensors checkpoint to {output}")
    output.mkdir(parents=True, exist_ok=True)
    _restore_dtype(model, source)
    model.save_pretrained(str(output), save_compressed=True)
    tokenizer.save_pretrained(str(output))
    seconds = time.monotonic() - began
    manifest = {**asdict(plan), "source": source, "seconds": round(seconds, 1)}
    (output / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    _log(f"done in {seconds:.0f} s")
    return seconds


def _restore_dtype(model: Any, source: str) -> None:
    """Save in the source checkpoint's dtype (bf16 for the bundled model): GPU kernels
    take only fp16/bf16, and the unquantized embedding stays half the size. The
    int4 values survive the cast: |q| <= 8 and a bf16 rounding of q*scale and of
    scale moves q by far less than the 0.5 that would change it."""
    from transformers import AutoConfig

    wanted = getattr(AutoConfig.from_pretrained(source), "dtype", None)
    if wanted is not None and wanted != model.dtype:
        model.to(wanted)
        model.config.dtype = wanted


def _tokenized(tokenizer: Any, samples: list[str], max_length: int) -> Any:
    from datasets import Dataset

    encoded = tokenizer(samples, truncation=True, max_length=max_length)
    return Dataset.from_dict(
        {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
    )


def _oneshot(plan: Plan, model: Any, tokenizer: Any, dataset: Any) -> None:
    from llmcompressor.entrypoints.oneshot import oneshot
    from llmcompressor.modifiers import quantization, transform

    modifiers = {
        "GPTQModifier": quantization.GPTQModifier,
        "QuantizationModifier": quantization.QuantizationModifier,
        "AWQModifier": transform.AWQModifier,
    }
    recipe = [modifiers[name](**arguments) for name, arguments in recipe_layout(plan)]
    with _no_pinned_memory_without_accelerator():
        oneshot(
            model=model,
            processor=tokenizer,
            dataset=dataset,
            recipe=recipe,
            max_seq_length=plan.max_seq_length,
            num_calibration_samples=len(dataset),
            shuffle_calibration_samples=False,  # the same run gives the same checkpoint
        )


@contextlib.contextmanager
def _no_pinned_memory_without_accelerator() -> Iterator[None]:
    """AWQ pins its cached activations for fast host-to-GPU copies; without an
    accelerator torch refuses ("Cannot access accelerator device when none is
    available"). Pinning is only a speed-up, so on CPU it is skipped."""
    import torch
    from llmcompressor.pipelines.cache import IntermediatesCache

    if torch.accelerator.is_available():
        yield
        return
    # Patched for the duration only, and typed the same whether or not mypy sees
    # llm-compressor (it lives in the quantization toolchain's venv).
    with mock.patch.object(IntermediatesCache, "pin_memory", _no_pin):
        yield


def _no_pin(self: object, batch_index: int, input_names: object = None) -> None:
    """IntermediatesCache.pin_memory, doing nothing."""


@dataclass(frozen=True)
class Request:
    """What ``portico model quantize`` was asked to do."""

    model: str
    method: str
    scheme: str
    output: Path
    calibration: Path | None = None
    samples: int = 128
    max_seq_length: int = 512


@dataclass(frozen=True)
class Checked:
    """A request that passed every cheap check: the plan, the source and its samples."""

    plan: Plan
    source: str
    samples: list[str]


def check(request: Request, settings: EngineSettings) -> Checked:
    """Everything that can be checked without llm-compressor: choices, calibration set,
    output directory, the model (prepared, so the bundled one is converted once). Raises
    EngineError."""
    method, scheme = check_choice(request.method, request.scheme)
    if request.samples < 1 or request.max_seq_length < 8:
        raise ConfigurationError("--samples must be at least 1 and --max-seq-length at least 8.")
    samples = (
        calibration.load(request.calibration)
        if request.calibration is not None
        else calibration.bundled(calibration.CALIBRATION)
    )
    if request.output.exists() and any(request.output.iterdir()):
        raise ConfigurationError(f"output directory {request.output} exists and is not empty.")
    checkpoint = model.prepare(settings.model_copy(update={"model": request.model}))
    config = _config(checkpoint.source)
    check_model(config, checkpoint.source)
    plan = Plan(
        method=method,
        scheme=scheme,
        group_size=choose_group_size(config),
        samples=min(request.samples, len(samples)),
        max_seq_length=request.max_seq_length,
    )
    return Checked(plan, checkpoint.source, samples)


def quantize(request: Request, settings: EngineSettings) -> Path:
    """Check everything that can be checked cheaply, then quantize. Raises EngineError."""
    checked = check(request, settings)
    require_extra()
    try:
        # llm-compressor logs to stdout (loguru, set up when it is imported); stdout
        # is reserved for the command's result, the checkpoint's path.
        with contextlib.redirect_stdout(sys.stderr):
            run(checked.plan, checked.source, checked.samples, request.output)
    except EngineError:
        raise
    except Exception as exc:  # llm-compressor and torch raise many unrelated types
        raise ModelError(f"quantization failed: {type(exc).__name__}: {exc}") from exc
    return request.output


def _config(source: str) -> dict[str, Any]:
    path = Path(source)
    if path.is_dir():
        return read_config(path)
    from transformers import AutoConfig

    config: dict[str, Any] = AutoConfig.from_pretrained(source).to_dict()
    return config
