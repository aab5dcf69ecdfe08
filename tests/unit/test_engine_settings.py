from __future__ import annotations

import pydantic
import pytest

from engine.settings import BUNDLED_MODEL, EngineSettings


def test_defaults_serve_the_bundled_model_on_localhost() -> None:
    settings = EngineSettings()
    assert settings.model == BUNDLED_MODEL
    assert settings.base_url == "http://127.0.0.1:8000"
    assert settings.extra_args == []


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_base_url_of_a_wildcard_bind_address_points_at_localhost(host: str) -> None:
    assert EngineSettings(host=host, port=9001).base_url == "http://127.0.0.1:9001"


def test_prefixed_environment_variables_configure_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTICO_ENGINE_PORT", "9123")
    monkeypatch.setenv("PORTICO_ENGINE_ENFORCE_EAGER", "true")
    monkeypatch.setenv("PORTICO_ENGINE_EXTRA_ARGS", '["--swap-space", "4"]')
    settings = EngineSettings()
    assert settings.port == 9123
    assert settings.enforce_eager is True
    assert settings.extra_args == ["--swap-space", "4"]


def test_scheduling_policy_comes_from_its_variable_and_is_a_closed_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert EngineSettings().scheduling_policy == "fcfs"
    monkeypatch.setenv("PORTICO_ENGINE_SCHEDULING_POLICY", "priority")
    assert EngineSettings().scheduling_policy == "priority"
    with pytest.raises(pydantic.ValidationError, match="scheduling_policy"):
        EngineSettings(scheduling_policy="lifo")  # type: ignore[arg-type]


def test_hf_hub_offline_environment_variable_turns_offline_mode_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert EngineSettings().offline is True


def test_explicit_values_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTICO_ENGINE_PORT", "9123")
    assert EngineSettings(port=9001).port == 9001


def test_blank_served_model_name_is_refused() -> None:
    with pytest.raises(pydantic.ValidationError, match="must not be blank"):
        EngineSettings(served_model_name="   ")


@pytest.mark.parametrize(
    ("field", "value"),
    [("port", 0), ("port", 65536), ("gpu_memory_utilization", 1.5), ("tensor_parallel_size", 0)],
)
def test_out_of_range_values_are_refused(field: str, value: object) -> None:
    with pytest.raises(pydantic.ValidationError, match=field):
        EngineSettings(**{field: value})


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(pydantic.ValidationError, match="not_a_setting"):
        EngineSettings(not_a_setting=1)  # type: ignore[call-arg]


def test_tool_parser_and_chat_template_default_to_auto() -> None:
    settings = EngineSettings()
    assert settings.tool_call_parser == "auto"
    assert settings.chat_template == "auto"


def test_tool_parser_and_chat_template_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PORTICO_ENGINE_TOOL_CALL_PARSER", "none")
    monkeypatch.setenv("PORTICO_ENGINE_CHAT_TEMPLATE", "/etc/portico/chat.jinja")
    settings = EngineSettings()
    assert settings.tool_call_parser == "none"
    assert settings.chat_template == "/etc/portico/chat.jinja"


@pytest.mark.parametrize("field", ["tool_call_parser", "chat_template"])
def test_blank_tool_parser_or_chat_template_is_refused(field: str) -> None:
    with pytest.raises(pydantic.ValidationError, match="must not be blank"):
        EngineSettings(**{field: " "})


def test_hf_endpoint_environment_variable_names_the_hub_mirror(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "https://hf-mirror.internal")
    assert EngineSettings().hf_endpoint == "https://hf-mirror.internal"


@pytest.mark.parametrize(("value", "expected"), [("auto", "auto"), ("32768", 32768)])
def test_max_model_len_is_a_token_count_or_auto(value: str, expected: object) -> None:
    assert EngineSettings(max_model_len=value).max_model_len == expected


@pytest.mark.parametrize("value", ["0", "-1", "max", "8k"])
def test_max_model_len_refuses_anything_else(value: str) -> None:
    with pytest.raises(pydantic.ValidationError):
        EngineSettings(max_model_len=value)


def test_the_kill_timer_runs_for_the_drain_then_the_shutdown() -> None:
    settings = EngineSettings(drain_s=120, shutdown_timeout_s=15)
    assert settings.kill_after_s == 135
    assert EngineSettings().drain_s == 0
