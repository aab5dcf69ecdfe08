"""The ``portico`` command's parser and its engine, model, keys and up commands, run
in-process (``loadtest`` is in test_loadtest.py; the servers are started for real by the
gateway and e2e tests)."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest

from engine.command import VLLM_SERVER_MODULE
from engine.settings import EngineSettings
from portico import up
from portico.cli import build_parser, main
from portico.settings import CliSettings


def _flag_value(argv: list[str], flag: str) -> str:
    assert flag in argv, f"{flag} missing from {argv}"
    return argv[argv.index(flag) + 1]


@pytest.mark.parametrize("command", ["engine", "up"])
def test_every_engine_setting_has_a_flag_that_defaults_to_unset(command: str) -> None:
    args = vars(build_parser().parse_args([command, "serve"] if command == "engine" else [command]))
    for name in EngineSettings.model_fields:
        assert name in args, f"no flag for EngineSettings.{name}"
        # None means "not given": the PORTICO_ENGINE_* variable or the default applies.
        assert args[name] is None


def test_flags_parse_into_engine_setting_values() -> None:
    args = build_parser().parse_args(
        [
            "engine", "serve",
            "--model", "org/model",
            "--served-model-name", "chat",
            "--port", "9001",
            "--max-num-queued-reqs", "16",
            "--enforce-eager",
            "--no-enable-prefix-caching",
            "--extra-args", "a", "b",
        ]
    )  # fmt: skip
    assert args.model == "org/model"
    assert args.served_model_name == "chat"
    assert args.max_num_queued_reqs == "16"  # converted by EngineSettings
    assert args.enforce_eager is True
    assert args.enable_prefix_caching is False
    assert args.extra_args == ["a", "b"]
    settings = EngineSettings(
        **{name: getattr(args, name) for name in EngineSettings.model_fields
           if getattr(args, name) is not None}
    )  # fmt: skip
    assert settings.port == 9001
    assert settings.max_num_queued_reqs == 16


def test_boolean_flags_can_be_negated() -> None:
    args = build_parser().parse_args(["engine", "serve", "--no-enforce-eager", "--offline"])
    assert args.enforce_eager is False
    assert args.offline is True


def test_repeated_extra_args_flags_accumulate() -> None:
    # vLLM's flags start with "--", so each occurrence can carry only one of them.
    args = build_parser().parse_args(
        ["engine", "serve", "--extra-args=--swap-space=4", "--extra-args=--disable-log-stats"]
    )
    assert args.extra_args == ["--swap-space=4", "--disable-log-stats"]


def test_engine_command_prints_the_vllm_command_line(
    checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["engine", "command", "--model", str(checkpoint), "--enforce-eager", "--port", "9001"]
    )
    out = capsys.readouterr().out
    assert code == 0
    words = shlex.split(out)
    assert words[0] == "VLLM_CPU_KVCACHE_SPACE=1"
    assert words[1:4] == [sys.executable, "-m", VLLM_SERVER_MODULE]
    assert _flag_value(words, "--model") == str(checkpoint.resolve())
    assert _flag_value(words, "--served-model-name") == "tiny-llama"
    assert _flag_value(words, "--port") == "9001"
    assert _flag_value(words, "--dtype") == "float32"
    assert words[-1] == "--enforce-eager"


def test_engine_command_applies_flags_over_environment(
    checkpoint: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PORTICO_ENGINE_PORT", "9100")
    monkeypatch.setenv("PORTICO_ENGINE_MAX_NUM_SEQS", "3")
    assert main(["engine", "command", "--model", str(checkpoint), "--port", "9001"]) == 0
    words = shlex.split(capsys.readouterr().out)
    assert _flag_value(words, "--port") == "9001"
    assert _flag_value(words, "--max-num-seqs") == "3"


def test_scheduling_policy_flag_reaches_the_vllm_command_line(
    checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    command = ["engine", "command", "--model", str(checkpoint)]
    assert main([*command, "--scheduling-policy", "priority"]) == 0
    assert _flag_value(shlex.split(capsys.readouterr().out), "--scheduling-policy") == "priority"
    assert main([*command, "--scheduling-policy", "lifo"]) == 2
    assert "scheduling_policy" in capsys.readouterr().err


def test_engine_prepare_prints_the_checkpoint_location(
    checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["engine", "prepare", "--model", str(checkpoint)]) == 0
    assert capsys.readouterr().out.strip() == str(checkpoint.resolve())


def test_bad_model_path_exits_2_with_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no-such-model"
    code = main(["engine", "command", "--model", str(missing)])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    assert captured.err.startswith("portico: error: ")
    assert f"model path {missing} does not exist or is not a directory" in captured.err
    assert "Traceback" not in captured.err


def test_invalid_setting_exits_2_naming_the_field(
    checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["engine", "command", "--model", str(checkpoint), "--port", "0"])
    captured = capsys.readouterr()
    assert code == 2
    assert "portico: invalid settings" in captured.err
    assert "port" in captured.err


def test_contradictory_quantization_exits_2_before_anything_starts(
    checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["engine", "command", "--model", str(checkpoint), "--quantization", "awq"])
    captured = capsys.readouterr()
    assert code == 2
    assert "has no quantization_config" in captured.err
    assert captured.out == ""


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--method", "gptq", "--scheme", "W8A8"], "scheme 'W8A8' is not supported"),
        (["--method", "rtn", "--scheme", "W4A8"], "quantization method 'rtn' is not supported"),
        (
            ["--method", "awq", "--scheme", "W4A8", "--calibration", "/nonexistent/c.jsonl"],
            "calibration file /nonexistent/c.jsonl does not exist",
        ),
    ],
)
def test_model_quantize_refuses_with_one_line_and_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    code = main(["model", "quantize", *extra, "--output", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("portico: error: ")
    assert message in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_model_quantize_refuses_a_non_llama_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "gpt2"
    model.mkdir()
    config = {"architectures": ["GPT2LMHeadModel"], "hidden_size": 768, "intermediate_size": 3072}
    (model / "config.json").write_text(json.dumps(config))
    argv = ["model", "quantize", "--model", str(model), "--method", "gptq", "--scheme", "W4A16"]
    assert main([*argv, "--output", str(tmp_path / "out")]) == 2
    assert "is a GPT2LMHeadModel" in capsys.readouterr().err


def test_model_compare_takes_a_base_and_several_quantized_models() -> None:
    args = build_parser().parse_args(["model", "compare", "bundled", "/q1", "/q2", "--out", "x"])
    assert (args.base, args.quantized, args.out) == ("bundled", ["/q1", "/q2"], Path("x"))


def test_keys_without_a_credential_exits_2_before_any_request(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("PORTICO_ADMIN_TOKEN", raising=False)
    # Port 9 (discard): a request would fail with exit code 1, not 2.
    assert main(["keys", "--url", "http://127.0.0.1:9", "list"]) == 2
    assert "set --admin-token or PORTICO_ADMIN_TOKEN" in capsys.readouterr().err


def test_keys_takes_its_url_and_token_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PORTICO_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("PORTICO_ADMIN_TOKEN", "admin-from-env")
    assert main(["keys", "show", "key_x"]) == 1  # got as far as the request
    assert "cannot reach http://127.0.0.1:9" in capsys.readouterr().err


def test_keys_refuses_an_unknown_permission(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["keys", "create", "--name", "x", "--permissions", "root"])
    assert exited.value.code == 2
    assert "portico keys create: error" in capsys.readouterr().err


def test_up_makes_a_random_key_only_when_none_is_configured() -> None:
    engines = [EngineSettings(port=9001), EngineSettings(port=9002)]
    fresh = up.gateway_env(engines, CliSettings(PORTICO_API_KEYS=None))
    again = up.gateway_env(engines, CliSettings(PORTICO_API_KEYS=None))
    assert fresh["PORTICO_ENGINES"] == "http://127.0.0.1:9001,http://127.0.0.1:9002"
    assert fresh["PORTICO_API_KEYS"].startswith("pk-dev-")
    assert fresh["PORTICO_API_KEYS"] != again["PORTICO_API_KEYS"]
    kept = up.gateway_env(engines, CliSettings(PORTICO_API_KEYS="pk-mine"))
    assert "PORTICO_API_KEYS" not in kept  # the gateway reads the user's own variable


def test_the_embedding_engine_shares_the_machine_settings_but_none_of_the_chat_models(
    tmp_path: Path,
) -> None:
    chat = EngineSettings(
        model="/models/chat", port=9001, max_model_len=4096, tool_call_parser="hermes",
        extra_args=["--seed", "1"], served_model_name="chat", enforce_eager=True,
        cache_dir=tmp_path, cpu_kvcache_space_gib=3, offline=True,
    )  # fmt: skip
    embedder = up.embedding_engine(chat, 9005)
    assert (embedder.model, embedder.port, embedder.runner) == ("bundled-embedding", 9005, "auto")
    assert (embedder.max_model_len, embedder.served_model_name, embedder.extra_args) == (
        None, None, []
    )  # fmt: skip
    assert embedder.tool_call_parser == "auto"  # which is none for this model
    assert (embedder.enforce_eager, embedder.cache_dir, embedder.offline) == (True, tmp_path, True)
    assert embedder.cpu_kvcache_space_gib == 3
    assert chat.extra_args == ["--seed", "1"]  # the chat model's settings are untouched


def test_up_serves_embeddings_unless_turned_off() -> None:
    args = build_parser().parse_args(["up"])
    assert (args.no_embeddings, args.embedding_port) == (False, up.EMBEDDING_PORT)
    assert build_parser().parse_args(["up", "--no-embeddings"]).no_embeddings


def test_cli_settings_read_only_their_named_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("URL", "http://not-portico")
    monkeypatch.setenv("API_KEYS", "not-portico")
    monkeypatch.delenv("PORTICO_URL", raising=False)
    monkeypatch.delenv("PORTICO_API_KEYS", raising=False)
    settings = CliSettings()
    assert settings.url == "http://127.0.0.1:8080"
    assert settings.api_keys is None
