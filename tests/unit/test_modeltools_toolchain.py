"""The quantization toolchain's identity and layout, without building one (the e2e
quantization tests build and use the real one)."""

from __future__ import annotations

from pathlib import Path

from modeltools import toolchain


def test_the_pins_are_the_quantize_extra_of_the_installed_distribution() -> None:
    pins = toolchain.pins()
    assert any(pin.startswith("llmcompressor==") for pin in pins)
    assert any(pin.startswith("compressed-tensors==") for pin in pins)
    assert not any("vllm" in pin for pin in pins)  # the engine never enters the toolchain


def test_one_directory_per_set_of_pins_and_runtime(tmp_path: Path) -> None:
    base = toolchain.toolchain_for(tmp_path, ["a==1"], ["/venv/site-packages"])
    same = toolchain.toolchain_for(tmp_path, ["a==1"], ["/venv/site-packages"])
    other_pins = toolchain.toolchain_for(tmp_path, ["a==2"], ["/venv/site-packages"])
    other_runtime = toolchain.toolchain_for(tmp_path, ["a==1"], ["/other/site-packages"])
    assert base.directory == same.directory
    assert base.directory.parent == tmp_path
    assert base.directory.name.startswith("quantize-")
    assert len({base.directory, other_pins.directory, other_runtime.directory}) == 3


def test_a_toolchain_without_its_completion_marker_is_not_complete(tmp_path: Path) -> None:
    chain = toolchain.toolchain_for(tmp_path, ["a==1"], ["/venv/site-packages"])
    (chain.directory / "bin").mkdir(parents=True)
    chain.python.write_text("")
    assert not chain.is_complete()  # an interrupted build is rebuilt, not used
    assert chain.log.parent == tmp_path  # the log survives a rebuild of the directory


def test_the_runtime_is_added_after_the_toolchains_own_packages() -> None:
    line = toolchain.pth_line(["/venv/lib/site-packages"])
    assert line == "import site; site.addsitedir('/venv/lib/site-packages')\n"
