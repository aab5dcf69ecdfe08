"""``portico engine serve`` refuses bad settings before vLLM starts, and explains
a vLLM that dies during start-up, with a non-zero exit code either way."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.e2e

LLAMA_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_attention_heads": 9,
    "num_hidden_layers": 30,
    "num_key_value_heads": 3,
    "vocab_size": 49152,
    "max_position_embeddings": 8192,
}


def _serve(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "engine", "serve", "--port", str(free_port()), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def _checkpoint(tmp_path: Path, config: dict[str, object]) -> Path:
    directory = tmp_path / "ckpt"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def test_missing_model_path_is_a_clear_error(tmp_path: Path) -> None:
    result = _serve("--model", str(tmp_path / "no-such-model"))
    assert result.returncode == 2
    assert "does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_quantization_contradicting_the_checkpoint_is_refused(tmp_path: Path) -> None:
    result = _serve("--model", str(_checkpoint(tmp_path, LLAMA_CONFIG)), "--quantization", "awq")
    assert result.returncode == 2
    assert "no quantization_config" in result.stderr
    assert "Traceback" not in result.stderr


def test_w4a16_checkpoint_is_refused_before_start_exactly_where_the_cpu_lacks_avx512(
    tmp_path: Path,
) -> None:
    # vLLM-CPU's W4A16 kernel exists only in its AVX-512 build. `command` runs the
    # same checks as `serve`, then prints vLLM's command line instead of starting it.
    gptq = {**LLAMA_CONFIG, "quantization_config": {"quant_method": "gptq", "bits": 4}}
    argv = [sys.executable, "-m", "engine", "command"]
    argv += ["--model", str(_checkpoint(tmp_path, gptq)), "--device", "cpu"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if "avx512f" in Path("/proc/cpuinfo").read_text():
        assert result.returncode == 0, result.stderr  # this machine can run it: not refused
        assert "vllm.entrypoints.openai.api_server" in result.stdout
    else:
        assert result.returncode == 2
        assert "AVX-512" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_engine_dying_during_startup_reports_its_output_and_code(tmp_path: Path) -> None:
    # A config without weights: the launcher's checks pass, vLLM fails loading.
    result = _serve(
        "--model", str(_checkpoint(tmp_path, LLAMA_CONFIG)), "--enforce-eager", timeout=300
    )
    assert result.returncode not in (0, 2)
    assert "engine exited with code" in result.stderr
    assert "Last output" in result.stderr
