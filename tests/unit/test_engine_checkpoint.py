from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine.checkpoint import Checkpoint, from_config, read_config
from engine.errors import ModelError

W4A16_GROUP = {"weights": {"num_bits": 4, "type": "int"}, "input_activations": None}
W4A8_GROUP = {
    "weights": {"num_bits": 4, "type": "int"},
    "input_activations": {"num_bits": 8, "type": "int", "dynamic": True},
}


def _quantized(quant: dict[str, Any]) -> Checkpoint:
    return from_config("/models/m", "m", {"model_type": "llama", "quantization_config": quant})


def test_unknown_config_describes_an_unvalidated_checkpoint() -> None:
    checkpoint = from_config("org/model", "org/model", None)
    assert checkpoint == Checkpoint(source="org/model", served_name="org/model")
    assert checkpoint.config_known is False
    assert checkpoint.quant_method is None


def test_config_without_quantization_is_known_full_precision() -> None:
    checkpoint = from_config("/models/m", "m", {"model_type": "llama"})
    assert checkpoint.config_known is True
    assert checkpoint.quant_method is None
    assert checkpoint.weight_only is False


@pytest.mark.parametrize("method", ["gptq", "awq", "GPTQ"])
def test_gptq_and_awq_checkpoints_are_weight_only(method: str) -> None:
    checkpoint = _quantized({"quant_method": method, "bits": 4, "group_size": 128})
    assert checkpoint.quant_method == method.lower()
    assert checkpoint.weight_only is True


def test_compressed_tensors_without_input_activations_is_weight_only() -> None:
    checkpoint = _quantized(
        {"quant_method": "compressed-tensors", "config_groups": {"group_0": W4A16_GROUP}}
    )
    assert checkpoint.quant_method == "compressed-tensors"
    assert checkpoint.weight_only is True


def test_compressed_tensors_with_quantized_activations_is_not_weight_only() -> None:
    checkpoint = _quantized(
        {"quant_method": "compressed-tensors", "config_groups": {"group_0": W4A8_GROUP}}
    )
    assert checkpoint.quant_method == "compressed-tensors"
    assert checkpoint.weight_only is False


def test_compressed_tensors_with_any_weight_only_group_is_weight_only() -> None:
    checkpoint = _quantized(
        {
            "quant_method": "compressed-tensors",
            "config_groups": {"attention": W4A8_GROUP, "mlp": W4A16_GROUP},
        }
    )
    assert checkpoint.weight_only is True


def test_other_quantization_methods_are_not_weight_only() -> None:
    checkpoint = _quantized({"quant_method": "fp8"})
    assert checkpoint.quant_method == "fp8"
    assert checkpoint.weight_only is False


def test_quantization_config_without_method_is_reported_as_unknown() -> None:
    assert _quantized({"bits": 4}).quant_method == "unknown"


def test_read_config_returns_the_json_object(tmp_path: Path) -> None:
    config = {"model_type": "llama", "quantization_config": {"quant_method": "awq"}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert read_config(tmp_path) == config


def test_read_config_of_a_directory_without_config_json_names_the_problem(
    tmp_path: Path,
) -> None:
    with pytest.raises(ModelError, match=r"is not a model checkpoint: it has no config\.json"):
        read_config(tmp_path)


def test_read_config_of_invalid_json_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelError, match="cannot read") as excinfo:
        read_config(tmp_path)
    assert str(tmp_path / "config.json") in str(excinfo.value)


def test_read_config_holding_a_json_array_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ModelError, match="does not hold a JSON object"):
        read_config(tmp_path)
