from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine.errors import ConfigurationError, ModelError
from engine.settings import EngineSettings
from modeltools import quantize
from modeltools.quantize import Plan, Request

SMOLLM2 = {"architectures": ["LlamaForCausalLM"], "hidden_size": 576, "intermediate_size": 1536}


def _plan(method: str, scheme: str) -> Plan:
    return Plan(method=method, scheme=scheme, group_size=64, samples=16, max_seq_length=128)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("hidden", "intermediate", "expected"),
    [(576, 1536, 64), (4096, 11008, 128), (2048, 5632, 128), (800, 2080, 32)],
)
def test_group_size_is_the_largest_dividing_every_layer_width(
    hidden: int, intermediate: int, expected: int
) -> None:
    config = {"hidden_size": hidden, "intermediate_size": intermediate}
    assert quantize.choose_group_size(config) == expected


def test_widths_no_group_size_divides_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="no group size"):
        quantize.choose_group_size({"hidden_size": 570, "intermediate_size": 1536})


def test_a_config_without_widths_is_a_model_error() -> None:
    with pytest.raises(ModelError, match="hidden_size"):
        quantize.choose_group_size({"architectures": ["LlamaForCausalLM"]})


def test_w4a16_quantizes_weights_only_in_groups() -> None:
    group = quantize.config_groups("W4A16", 64)["group_0"]
    assert group["targets"] == ["Linear"]
    assert group["weights"]["num_bits"] == 4
    assert group["weights"]["strategy"] == "group"
    assert group["weights"]["group_size"] == 64
    assert group["weights"]["symmetric"] is True
    assert group["input_activations"] is None


def test_w4a8_adds_dynamic_int8_activations_per_token() -> None:
    group = quantize.config_groups("W4A8", 128)["group_0"]
    assert group["weights"]["group_size"] == 128
    assert group["input_activations"] == {
        "num_bits": 8, "type": "int", "symmetric": True, "strategy": "token", "dynamic": True,
    }  # fmt: skip


def test_gptq_recipe_is_one_modifier_that_keeps_lm_head() -> None:
    layout = quantize.recipe_layout(_plan("gptq", "W4A8"))
    assert [name for name, _ in layout] == ["GPTQModifier"]
    arguments = layout[0][1]
    assert arguments["ignore"] == ["lm_head"]
    assert arguments["config_groups"] == quantize.config_groups("W4A8", 64)


def test_awq_recipe_rescales_then_quantizes_and_keeps_lm_head() -> None:
    layout = quantize.recipe_layout(_plan("awq", "W4A16"))
    assert [name for name, _ in layout] == ["AWQModifier", "QuantizationModifier"]
    assert layout[1][1]["ignore"] == ["lm_head"]
    assert layout[1][1]["config_groups"]["group_0"]["input_activations"] is None


@pytest.mark.parametrize(("method", "scheme"), [("gptq", "W4A16"), ("awq", "W4A8")])
def test_supported_choices_pass(method: str, scheme: str) -> None:
    assert quantize.check_choice(method, scheme) == (method, scheme)


def test_unknown_method_is_refused_naming_the_supported_ones() -> None:
    with pytest.raises(ConfigurationError, match=r"method 'smoothquant' .* gptq, awq"):
        quantize.check_choice("smoothquant", "W4A16")


@pytest.mark.parametrize("scheme", ["W8A8", "w4a16", "FP8"])
def test_unknown_scheme_is_refused(scheme: str) -> None:
    with pytest.raises(ConfigurationError, match=f"scheme '{scheme}' is not supported"):
        quantize.check_choice("gptq", scheme)


def test_llama_family_checkpoint_is_accepted() -> None:
    quantize.check_model(SMOLLM2, "/m")


def test_other_architectures_are_refused() -> None:
    config = {**SMOLLM2, "architectures": ["GPT2LMHeadModel"]}
    with pytest.raises(ConfigurationError, match=r"is a GPT2LMHeadModel; .* supports"):
        quantize.check_model(config, "/m")


def test_an_already_quantized_checkpoint_is_refused() -> None:
    config: dict[str, Any] = {**SMOLLM2, "quantization_config": {"quant_method": "awq"}}
    with pytest.raises(ConfigurationError, match=r"already quantized \(awq\)"):
        quantize.check_model(config, "/m")


def _request(tmp_path: Path, **values: Any) -> Request:
    defaults: dict[str, Any] = {
        "model": str(tmp_path / "model"), "method": "gptq", "scheme": "W4A8",
        "output": tmp_path / "out",
    }  # fmt: skip
    return Request(**{**defaults, **values})


def test_missing_calibration_file_is_refused_before_any_model_is_read(tmp_path: Path) -> None:
    request = _request(tmp_path, calibration=tmp_path / "nope.jsonl")
    with pytest.raises(ConfigurationError, match=r"calibration file .*nope\.jsonl does not exist"):
        quantize.quantize(request, EngineSettings())


def test_non_empty_output_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "model.safetensors").write_text("x")
    with pytest.raises(ConfigurationError, match="exists and is not empty"):
        quantize.quantize(_request(tmp_path), EngineSettings())


def test_a_gpt2_directory_is_refused_without_loading_weights(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    config = {**SMOLLM2, "architectures": ["GPT2LMHeadModel"]}
    (tmp_path / "model" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigurationError, match="GPT2LMHeadModel"):
        quantize.quantize(_request(tmp_path), EngineSettings())
