from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from engine.checkpoint import Checkpoint
from engine.command import (
    BUNDLED_CHAT_TEMPLATE,
    VLLM_SERVER_MODULE,
    build_command,
    resolve_device,
    resolve_dtype,
    validate,
)
from engine.errors import ConfigurationError
from engine.hardware import Hardware
from engine.settings import EngineSettings

AVX2_CPU = Hardware(vllm_build="cpu", cpu_flags=frozenset({"avx", "avx2"}), has_nvidia_device=False)
AVX512_CPU = Hardware(
    vllm_build="cpu", cpu_flags=frozenset({"avx2", "avx512f"}), has_nvidia_device=False
)
GPU_BUILD = Hardware(vllm_build="gpu", cpu_flags=frozenset({"avx2"}), has_nvidia_device=True)
NO_VLLM = Hardware(vllm_build="missing", cpu_flags=frozenset(), has_nvidia_device=False)

FULL_PRECISION = Checkpoint(source="/models/plain", served_name="plain", config_known=True)
UNKNOWN_CONFIG = Checkpoint(source="org/model", served_name="org/model")
GPTQ = Checkpoint(
    source="/models/gptq", served_name="gptq", config_known=True, quant_method="gptq",
    weight_only=True,
)  # fmt: skip
AWQ = Checkpoint(
    source="/models/awq", served_name="awq", config_known=True, quant_method="awq",
    weight_only=True,
)  # fmt: skip
W4A16_CT = Checkpoint(
    source="/models/w4a16", served_name="w4a16", config_known=True,
    quant_method="compressed-tensors", weight_only=True,
)  # fmt: skip
W4A8_CT = Checkpoint(
    source="/models/w4a8", served_name="w4a8", config_known=True,
    quant_method="compressed-tensors", weight_only=False,
)  # fmt: skip


def _settings(**values: Any) -> EngineSettings:
    return EngineSettings(**values)


def _flag_value(argv: list[str], flag: str) -> str:
    assert flag in argv, f"{flag} missing from {argv}"
    return argv[argv.index(flag) + 1]


# --- resolve_device ---------------------------------------------------------------


def test_auto_device_follows_the_installed_cpu_build() -> None:
    assert resolve_device(_settings(), AVX2_CPU) == "cpu"


def test_auto_device_follows_the_installed_gpu_build() -> None:
    assert resolve_device(_settings(), GPU_BUILD) == "cuda"


def test_explicit_device_matching_the_build_is_accepted() -> None:
    assert resolve_device(_settings(device="cpu"), AVX2_CPU) == "cpu"
    assert resolve_device(_settings(device="cuda"), GPU_BUILD) == "cuda"


def test_missing_vllm_is_a_configuration_error_naming_the_extras() -> None:
    with pytest.raises(ConfigurationError, match="vLLM is not installed") as excinfo:
        resolve_device(_settings(), NO_VLLM)
    assert "engine-cpu" in str(excinfo.value)


def test_cuda_device_with_the_cpu_build_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="device=cuda but the installed vLLM build runs"):
        resolve_device(_settings(device="cuda"), AVX512_CPU)


def test_cpu_device_with_the_gpu_build_points_at_the_cpu_extra() -> None:
    with pytest.raises(ConfigurationError, match="engine-cpu"):
        resolve_device(_settings(device="cpu"), GPU_BUILD)


# --- resolve_dtype ----------------------------------------------------------------


def test_auto_dtype_is_float32_on_cpu_and_auto_on_gpu() -> None:
    assert resolve_dtype(_settings(), "cpu") == "float32"
    assert resolve_dtype(_settings(), "cuda") == "auto"


def test_explicit_dtype_is_kept_on_every_device() -> None:
    assert resolve_dtype(_settings(dtype="bfloat16"), "cpu") == "bfloat16"
    assert resolve_dtype(_settings(dtype="float16"), "cuda") == "float16"


# --- build_command on CPU ---------------------------------------------------------


def test_cpu_command_runs_vllm_openai_server_with_this_interpreter() -> None:
    command = build_command(_settings(port=9001), FULL_PRECISION, "cpu")
    assert command.argv[:3] == [sys.executable, "-m", VLLM_SERVER_MODULE]
    assert _flag_value(command.argv, "--model") == "/models/plain"
    assert _flag_value(command.argv, "--served-model-name") == "plain"
    assert _flag_value(command.argv, "--host") == "127.0.0.1"
    assert _flag_value(command.argv, "--port") == "9001"


def test_served_model_name_setting_overrides_the_checkpoint_name() -> None:
    command = build_command(_settings(served_model_name="chat"), FULL_PRECISION, "cpu")
    assert _flag_value(command.argv, "--served-model-name") == "chat"


def test_cpu_command_uses_float32_when_dtype_is_auto() -> None:
    command = build_command(_settings(), FULL_PRECISION, "cpu")
    assert _flag_value(command.argv, "--dtype") == "float32"


def test_cpu_command_sets_the_kv_cache_space_environment() -> None:
    command = build_command(_settings(cpu_kvcache_space_gib=3), FULL_PRECISION, "cpu")
    assert command.env["VLLM_CPU_KVCACHE_SPACE"] == "3"


def test_enforce_eager_adds_the_flag_only_when_asked() -> None:
    assert (
        "--enforce-eager"
        in build_command(_settings(enforce_eager=True), FULL_PRECISION, "cpu").argv
    )
    assert "--enforce-eager" not in build_command(_settings(), FULL_PRECISION, "cpu").argv


@pytest.mark.parametrize("policy", ["fcfs", "priority"])
def test_scheduling_policy_is_always_passed_default_included(policy: str) -> None:
    argv = build_command(_settings(scheduling_policy=policy), FULL_PRECISION, "cpu").argv
    assert _flag_value(argv, "--scheduling-policy") == policy
    assert argv.count("--scheduling-policy") == 1


def test_the_default_scheduling_policy_is_fcfs() -> None:
    argv = build_command(_settings(), FULL_PRECISION, "cuda").argv
    assert _flag_value(argv, "--scheduling-policy") == "fcfs"


def test_optional_limits_become_flags_only_when_set() -> None:
    command = build_command(
        _settings(max_num_queued_reqs=64, max_num_seqs=8, max_model_len=2048), FULL_PRECISION, "cpu"
    )
    assert _flag_value(command.argv, "--max-num-queued-reqs") == "64"
    assert _flag_value(command.argv, "--max-num-seqs") == "8"
    assert _flag_value(command.argv, "--max-model-len") == "2048"
    bare = build_command(_settings(), FULL_PRECISION, "cpu").argv
    for flag in ("--max-num-queued-reqs", "--max-num-seqs", "--max-model-len", "--quantization"):
        assert flag not in bare


def test_prefix_caching_on_off_and_default() -> None:
    on = build_command(_settings(enable_prefix_caching=True), FULL_PRECISION, "cpu").argv
    off = build_command(_settings(enable_prefix_caching=False), FULL_PRECISION, "cpu").argv
    default = build_command(_settings(), FULL_PRECISION, "cpu").argv
    assert "--enable-prefix-caching" in on
    assert "--no-enable-prefix-caching" not in on
    assert "--no-enable-prefix-caching" in off
    assert "--enable-prefix-caching" not in off
    assert not {"--enable-prefix-caching", "--no-enable-prefix-caching"} & set(default)


def test_extra_args_are_appended_verbatim_at_the_end() -> None:
    extra = ["--swap-space", "4", "--disable-log-stats"]
    command = build_command(_settings(extra_args=extra, enforce_eager=True), FULL_PRECISION, "cpu")
    assert command.argv[-3:] == extra


def test_cpu_command_has_no_gpu_flags() -> None:
    settings = _settings(gpu_memory_utilization=0.5, tensor_parallel_size=1)
    argv = build_command(settings, FULL_PRECISION, "cpu").argv
    assert "--gpu-memory-utilization" not in argv
    assert "--tensor-parallel-size" not in argv


def test_explicit_quantization_is_passed_and_auto_or_none_is_not() -> None:
    awq = build_command(_settings(quantization="awq"), AWQ, "cpu").argv
    assert _flag_value(awq, "--quantization") == "awq"
    assert "--quantization" not in build_command(_settings(quantization="auto"), AWQ, "cpu").argv
    none = build_command(_settings(quantization="none"), FULL_PRECISION, "cpu").argv
    assert "--quantization" not in none


def test_offline_mode_reaches_vllm_through_its_environment() -> None:
    assert (
        build_command(_settings(offline=True), FULL_PRECISION, "cpu").env["HF_HUB_OFFLINE"] == "1"
    )
    assert "HF_HUB_OFFLINE" not in build_command(_settings(), FULL_PRECISION, "cpu").env


# --- build_command on CUDA --------------------------------------------------------


def test_cuda_command_passes_dtype_auto_to_vllm() -> None:
    command = build_command(_settings(), FULL_PRECISION, "cuda")
    assert _flag_value(command.argv, "--dtype") == "auto"


def test_cuda_command_has_gpu_flags() -> None:
    settings = _settings(gpu_memory_utilization=0.85, tensor_parallel_size=2)
    argv = build_command(settings, FULL_PRECISION, "cuda").argv
    assert _flag_value(argv, "--gpu-memory-utilization") == "0.85"
    assert _flag_value(argv, "--tensor-parallel-size") == "2"


def test_cuda_command_always_states_tensor_parallel_size_but_not_unset_memory_share() -> None:
    argv = build_command(_settings(), FULL_PRECISION, "cuda").argv
    assert _flag_value(argv, "--tensor-parallel-size") == "1"
    assert "--gpu-memory-utilization" not in argv


def test_cuda_command_has_no_cpu_environment() -> None:
    assert "VLLM_CPU_KVCACHE_SPACE" not in build_command(_settings(), FULL_PRECISION, "cuda").env


# --- validate -----------------------------------------------------------------------


def test_full_precision_checkpoint_with_default_settings_is_valid_on_cpu() -> None:
    validate(_settings(), FULL_PRECISION, AVX2_CPU, "cpu")


def test_awq_quantization_on_gptq_checkpoint_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="contradicts the checkpoint") as excinfo:
        validate(_settings(quantization="awq"), GPTQ, AVX512_CPU, "cpu")
    assert "gptq" in str(excinfo.value)


def test_compatible_quantization_kernel_for_the_checkpoint_is_accepted_on_gpu() -> None:
    validate(_settings(quantization="gptq_marlin"), GPTQ, GPU_BUILD, "cuda")
    validate(_settings(quantization="awq_marlin"), AWQ, GPU_BUILD, "cuda")


def test_awq_quantization_on_unquantized_checkpoint_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="has no quantization_config"):
        validate(_settings(quantization="awq"), FULL_PRECISION, AVX512_CPU, "cpu")


def test_explicit_quantization_on_a_checkpoint_with_unknown_config_is_left_to_vllm() -> None:
    validate(_settings(quantization="awq"), UNKNOWN_CONFIG, GPU_BUILD, "cuda")


def test_quantization_none_on_quantized_checkpoint_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"quantization=none but .* is quantized \(awq\)"):
        validate(_settings(quantization="none"), AWQ, GPU_BUILD, "cuda")


def test_quantization_none_on_full_precision_checkpoint_is_accepted() -> None:
    validate(_settings(quantization="none"), FULL_PRECISION, AVX2_CPU, "cpu")


def test_gptq_marlin_on_cpu_is_refused_as_a_gpu_kernel() -> None:
    with pytest.raises(ConfigurationError, match="GPU \\(Marlin\\) kernel"):
        validate(_settings(quantization="gptq_marlin"), GPTQ, AVX512_CPU, "cpu")


@pytest.mark.parametrize("checkpoint", [GPTQ, AWQ, W4A16_CT], ids=lambda c: c.served_name)
def test_w4a16_checkpoint_on_cpu_without_avx512_is_refused(checkpoint: Checkpoint) -> None:
    with pytest.raises(ConfigurationError, match="W4A16") as excinfo:
        validate(_settings(), checkpoint, AVX2_CPU, "cpu")
    message = str(excinfo.value)
    assert "AVX-512" in message
    assert "W4A8" in message


@pytest.mark.parametrize("checkpoint", [GPTQ, AWQ, W4A16_CT], ids=lambda c: c.served_name)
def test_w4a16_checkpoint_on_cpu_with_avx512_is_accepted(checkpoint: Checkpoint) -> None:
    validate(_settings(), checkpoint, AVX512_CPU, "cpu")


def test_w4a16_checkpoint_on_gpu_is_accepted_whatever_the_cpu() -> None:
    validate(_settings(), GPTQ, GPU_BUILD, "cuda")


def test_compressed_tensors_w4a8_on_cpu_without_avx512_is_accepted() -> None:
    validate(_settings(), W4A8_CT, AVX2_CPU, "cpu")
    validate(_settings(quantization="compressed-tensors"), W4A8_CT, AVX2_CPU, "cpu")


def test_tensor_parallelism_on_cpu_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="tensor_parallel_size > 1 needs GPUs"):
        validate(_settings(tensor_parallel_size=2), FULL_PRECISION, AVX512_CPU, "cpu")


def test_w4a16_checkpoint_on_cpu_gets_bfloat16_activations_by_default() -> None:
    # cpu_gemm_wna16 is "not implemented for 'Float'": float32 would die at the first request.
    argv = build_command(_settings(), W4A16_CT, "cpu").argv
    assert _flag_value(argv, "--dtype") == "bfloat16"
    assert _flag_value(build_command(_settings(), W4A8_CT, "cpu").argv, "--dtype") == "float32"


def test_w4a16_checkpoint_with_float32_on_cpu_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"takes bfloat16/float16 activations"):
        validate(_settings(dtype="float32"), W4A16_CT, AVX512_CPU, "cpu")


# --- tool calling and the chat template -------------------------------------------


def test_bundled_model_gets_the_hermes_parser_and_porticos_template_by_default() -> None:
    argv = build_command(_settings(), FULL_PRECISION, "cpu").argv
    assert "--enable-auto-tool-choice" in argv
    assert _flag_value(argv, "--tool-call-parser") == "hermes"
    template = _flag_value(argv, "--chat-template")
    assert template == str(BUNDLED_CHAT_TEMPLATE)
    assert Path(template).is_file()


@pytest.mark.parametrize("model", ["/models/plain", "org/model"])
def test_other_models_get_no_parser_and_keep_their_own_template(model: str) -> None:
    argv = build_command(_settings(model=model), FULL_PRECISION, "cpu").argv
    for flag in ("--enable-auto-tool-choice", "--tool-call-parser", "--chat-template"):
        assert flag not in argv


def test_none_turns_the_parser_and_the_template_off_for_the_bundled_model() -> None:
    settings = _settings(tool_call_parser="none", chat_template="none")
    argv = build_command(settings, FULL_PRECISION, "cpu").argv
    for flag in ("--enable-auto-tool-choice", "--tool-call-parser", "--chat-template"):
        assert flag not in argv


def test_explicit_parser_and_template_file_are_passed_for_any_model(tmp_path: Path) -> None:
    template = tmp_path / "chat.jinja"
    template.write_text("{{ messages[0].content }}")
    settings = _settings(
        model="org/model", tool_call_parser="llama3_json", chat_template=str(template)
    )
    argv = build_command(settings, UNKNOWN_CONFIG, "cpu").argv
    assert "--enable-auto-tool-choice" in argv
    assert _flag_value(argv, "--tool-call-parser") == "llama3_json"
    assert _flag_value(argv, "--chat-template") == str(template.resolve())


def test_template_text_is_passed_as_is() -> None:
    text = "{% for m in messages %}{{ m.content }}{% endfor %}"
    argv = build_command(_settings(chat_template=text), FULL_PRECISION, "cpu").argv
    assert _flag_value(argv, "--chat-template") == text


def test_template_flags_come_before_extra_args() -> None:
    argv = build_command(_settings(extra_args=["--seed", "1"]), FULL_PRECISION, "cpu").argv
    assert argv[-2:] == ["--seed", "1"]
    assert argv.index("--chat-template") < argv.index("--seed")


def test_missing_chat_template_file_is_refused_before_vllm_starts(tmp_path: Path) -> None:
    settings = _settings(chat_template=str(tmp_path / "missing.jinja"))
    with pytest.raises(ConfigurationError, match=r"missing\.jinja: no such file"):
        validate(settings, FULL_PRECISION, AVX2_CPU, "cpu")


def test_gpu_package_with_its_console_script_runs_vllm_serve() -> None:
    argv = build_command(_settings(model="org/model"), UNKNOWN_CONFIG, "cuda", "/usr/bin/vllm").argv
    assert argv[:3] == ["/usr/bin/vllm", "serve", "org/model"]
    assert VLLM_SERVER_MODULE not in argv
    assert "--model" not in argv


def test_without_a_working_console_script_the_server_module_is_the_fallback() -> None:
    argv = build_command(_settings(), FULL_PRECISION, "cpu", None).argv
    assert argv[:5] == [sys.executable, "-m", VLLM_SERVER_MODULE, "--model", "/models/plain"]


def test_drain_becomes_vllms_shutdown_timeout() -> None:
    argv = build_command(_settings(drain_s=90), FULL_PRECISION, "cuda").argv
    assert _flag_value(argv, "--shutdown-timeout") == "90"


def test_no_drain_leaves_vllms_default_abort() -> None:
    assert "--shutdown-timeout" not in build_command(_settings(), FULL_PRECISION, "cuda").argv


def test_revision_and_auto_context_length_reach_vllm() -> None:
    settings = _settings(model="org/model", revision="a" * 40, max_model_len="auto")
    argv = build_command(settings, UNKNOWN_CONFIG, "cuda").argv
    assert _flag_value(argv, "--revision") == "a" * 40
    assert _flag_value(argv, "--max-model-len") == "auto"


def test_hub_mirror_and_offline_mode_reach_vllms_environment() -> None:
    settings = _settings(hf_endpoint="https://hf-mirror.internal", offline=True)
    env = build_command(settings, FULL_PRECISION, "cuda").env
    assert env["HF_ENDPOINT"] == "https://hf-mirror.internal"
    assert env["HF_HUB_OFFLINE"] == "1"
    assert "HF_ENDPOINT" not in build_command(_settings(), FULL_PRECISION, "cuda").env


# --- the runner: embeddings ---------------------------------------------------------


def test_the_bundled_embedding_model_runs_as_a_pooling_engine_without_chat_flags() -> None:
    argv = build_command(_settings(model="bundled-embedding"), FULL_PRECISION, "cpu").argv
    assert _flag_value(argv, "--runner") == "pooling"
    for flag in ("--enable-auto-tool-choice", "--tool-call-parser", "--chat-template"):
        assert flag not in argv


@pytest.mark.parametrize("model", ["bundled", "/models/plain", "org/model"])
def test_other_models_leave_the_runner_to_vllm(model: str) -> None:
    assert "--runner" not in build_command(_settings(model=model), FULL_PRECISION, "cpu").argv


def test_an_explicit_runner_is_passed_for_any_model() -> None:
    argv = build_command(_settings(model="org/bge", runner="pooling"), UNKNOWN_CONFIG, "cpu").argv
    assert _flag_value(argv, "--runner") == "pooling"
