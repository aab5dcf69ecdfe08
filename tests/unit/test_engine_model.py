from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine import model as model_module
from engine.errors import ModelError
from engine.model import (
    BUNDLED_DISTRIBUTION,
    bundled_embedding_model,
    bundled_gguf,
    hub_endpoint,
    prepare,
)
from engine.settings import EngineSettings

AWQ_CONFIG = {
    "model_type": "llama",
    "quantization_config": {"quant_method": "awq", "bits": 4, "group_size": 128},
}


def _checkpoint_dir(parent: Path, name: str, config: object) -> Path:
    directory = parent / name
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def test_local_directory_is_served_under_its_own_name(tmp_path: Path) -> None:
    directory = _checkpoint_dir(tmp_path, "tiny-llama", {"model_type": "llama"})
    checkpoint = prepare(EngineSettings(model=str(directory)))
    assert checkpoint.source == str(directory.resolve())
    assert checkpoint.served_name == "tiny-llama"
    assert checkpoint.config_known is True
    assert checkpoint.quant_method is None


def test_local_directory_source_is_an_absolute_resolved_path(tmp_path: Path) -> None:
    directory = _checkpoint_dir(tmp_path, "m", {"model_type": "llama"})
    dotted = tmp_path / "m" / ".." / "m"
    checkpoint = prepare(EngineSettings(model=str(dotted)))
    assert checkpoint.source == str(directory.resolve())
    assert ".." not in checkpoint.source


def test_local_quantized_directory_reports_its_quantization(tmp_path: Path) -> None:
    directory = _checkpoint_dir(tmp_path, "awq-model", AWQ_CONFIG)
    checkpoint = prepare(EngineSettings(model=str(directory)))
    assert checkpoint.quant_method == "awq"
    assert checkpoint.weight_only is True


def test_missing_absolute_path_is_refused_not_treated_as_a_hub_id(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelError, match="does not exist or is not a directory") as excinfo:
        prepare(EngineSettings(model=str(missing)))
    assert str(missing) in str(excinfo.value)


def test_relative_looking_missing_path_is_refused() -> None:
    with pytest.raises(ModelError, match="does not exist or is not a directory"):
        prepare(EngineSettings(model="./portico-no-such-model-dir"))


def test_path_to_a_file_is_refused(tmp_path: Path) -> None:
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"\0")
    with pytest.raises(ModelError, match="not a directory"):
        prepare(EngineSettings(model=str(weights)))


def test_directory_without_config_json_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"has no config\.json"):
        prepare(EngineSettings(model=str(tmp_path)))


@pytest.mark.parametrize("model", ["not a model id!", "org/name/extra", "-leading-dash"])
def test_value_that_is_neither_path_nor_hub_id_is_refused(model: str) -> None:
    with pytest.raises(ModelError, match="neither 'bundled', an existing directory"):
        prepare(EngineSettings(model=model))


def test_offline_hub_id_missing_from_the_cache_is_refused_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    model_id = "portico-tests/never-downloaded-model"
    with pytest.raises(ModelError) as excinfo:
        prepare(EngineSettings(model=model_id, offline=True))
    message = str(excinfo.value)
    assert model_id in message
    assert "not in the local Hugging Face cache" in message
    assert "offline mode is on" in message


def test_offline_hub_id_in_the_cache_is_read_from_its_cached_config(tmp_path: Path) -> None:
    # huggingface_hub reads HF_HOME once, at import: a fresh interpreter sees this cache.
    hf_home = tmp_path / "hf"
    repo = hf_home / "hub" / "models--portico-tests--cached-awq"
    revision = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps(AWQ_CONFIG))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    script = (
        "from engine.model import prepare\n"
        "from engine.settings import EngineSettings\n"
        "c = prepare(EngineSettings(model='portico-tests/cached-awq', offline=True))\n"
        "print(c.source, c.served_name, c.config_known, c.quant_method, c.weight_only)\n"
    )
    env = {**os.environ, "HF_HOME": str(hf_home)}
    env.pop("HF_HUB_CACHE", None)
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "portico-tests/cached-awq", "portico-tests/cached-awq", "True", "awq", "True"
    ]  # fmt: skip


def test_bundled_gguf_is_found_inside_the_installed_wheel() -> None:
    gguf = bundled_gguf()
    assert gguf.suffix == ".gguf"
    assert gguf.is_file()
    assert gguf.stat().st_size > 10_000_000  # a real model, not a placeholder
    with gguf.open("rb") as file:
        assert file.read(4) == b"GGUF"  # the GGUF magic number
    assert BUNDLED_DISTRIBUTION.replace("-", "_") in gguf.parts


def test_the_bundled_embedding_model_is_the_wheels_hugging_face_directory(
    tmp_path: Path,
) -> None:
    checkpoint = prepare(EngineSettings(model="bundled-embedding", cache_dir=tmp_path))
    directory = Path(checkpoint.source)
    assert directory == bundled_embedding_model()
    assert checkpoint.served_name == "all-MiniLM-L6-v2"
    assert json.loads((directory / "config.json").read_text())["architectures"] == ["BertModel"]
    assert (directory / "model.safetensors").stat().st_size > 80_000_000  # real weights
    assert (directory / "1_Pooling" / "config.json").is_file()  # mean pooling, as trained
    assert not any(tmp_path.iterdir())  # served where it is: nothing converted or copied


@pytest.fixture
def mirror() -> Iterator[str]:
    """A stand-in hub mirror: a real HTTP server on localhost that answers every HEAD."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_an_uncached_hub_id_is_passed_on_when_the_mirror_answers(mirror: str) -> None:
    settings = EngineSettings(model="portico-tests/never-downloaded-model", hf_endpoint=mirror)
    checkpoint = prepare(settings)
    assert checkpoint.source == "portico-tests/never-downloaded-model"
    assert checkpoint.config_known is False


def test_an_unreachable_mirror_is_named_in_the_refusal_and_the_hub_is_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    endpoint = _closed_port_url()
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    with pytest.raises(ModelError) as excinfo:
        prepare(EngineSettings(model="portico-tests/never-downloaded-model", revision="v2"))
    message = str(excinfo.value)
    assert f"the hub at {endpoint} cannot be reached" in message
    assert "at revision v2" in message
    assert "huggingface.co" not in message


def test_offline_mode_contacts_no_hub_and_names_the_download_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A mirror that would fail the test if contacted: offline, only the cache is read.
    monkeypatch.setenv("HF_ENDPOINT", _closed_port_url())
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError) as excinfo:
        prepare(EngineSettings(model="portico-tests/never-downloaded-model", revision="abc123"))
    message = str(excinfo.value)
    assert "offline mode is on" in message
    assert "hf download portico-tests/never-downloaded-model --revision abc123" in message


def test_the_default_hub_is_huggingface_hubs_own_constant() -> None:
    from huggingface_hub import constants

    assert hub_endpoint(EngineSettings()) == constants.ENDPOINT
    assert hub_endpoint(EngineSettings(hf_endpoint="https://m.internal")) == "https://m.internal"


def test_model_module_never_names_the_hubs_host() -> None:
    assert "huggingface.co" not in Path(model_module.__file__).read_text()
