from __future__ import annotations

import pydantic
import pytest

from gateway.settings import GatewaySettings


def test_no_api_keys_outside_dev_mode_is_refused() -> None:
    with pytest.raises(pydantic.ValidationError, match="no API keys configured") as excinfo:
        GatewaySettings()
    assert "PORTICO_API_KEYS" in str(excinfo.value)


def test_dev_mode_allows_running_without_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTICO_DEV_MODE", "true")
    settings = GatewaySettings()
    assert settings.dev_mode is True
    assert settings.api_keys == []


def test_api_keys_env_is_split_on_commas_into_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTICO_API_KEYS", "pk-one, pk-two,,pk-three ")
    settings = GatewaySettings()
    assert all(isinstance(key, pydantic.SecretStr) for key in settings.api_keys)
    assert [key.get_secret_value() for key in settings.api_keys] == ["pk-one", "pk-two", "pk-three"]


def test_single_api_key_env_is_one_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTICO_API_KEYS", "pk-only")
    assert [key.get_secret_value() for key in GatewaySettings().api_keys] == ["pk-only"]


def test_api_keys_env_of_only_separators_counts_as_no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTICO_API_KEYS", " , ,")
    with pytest.raises(pydantic.ValidationError, match="no API keys configured"):
        GatewaySettings()


def test_api_keys_given_as_a_string_argument_are_split_too() -> None:
    settings = GatewaySettings(api_keys="pk-a,pk-b")  # type: ignore[arg-type]
    assert [key.get_secret_value() for key in settings.api_keys] == ["pk-a", "pk-b"]


def test_nested_limits_come_from_double_underscore_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTICO_API_KEYS", "pk-one")
    monkeypatch.setenv("PORTICO_LIMITS__MAX_TOKENS", "128")
    monkeypatch.setenv("PORTICO_UPSTREAM__CONNECT_S", "1.5")
    settings = GatewaySettings()
    assert settings.limits.max_tokens == 128
    assert settings.limits.max_n == 8  # siblings keep their defaults
    assert settings.upstream.connect_s == 1.5
    assert settings.upstream.first_byte_s == 60.0


def test_invalid_nested_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTICO_API_KEYS", "pk-one")
    monkeypatch.setenv("PORTICO_LIMITS__MAX_TOKENS", "0")
    with pytest.raises(pydantic.ValidationError, match="max_tokens"):
        GatewaySettings()


def test_engine_url_comes_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTICO_API_KEYS", "pk-one")
    monkeypatch.setenv("PORTICO_ENGINE_URL", "http://engine:8000")
    settings = GatewaySettings()
    assert settings.engine_url == "http://engine:8000"


def test_secrets_do_not_appear_in_repr_or_str(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "pk-super-secret-9d2a71"
    monkeypatch.setenv("PORTICO_API_KEYS", f"{secret},pk-other-secret-51c0")
    settings = GatewaySettings()
    for text in (repr(settings), str(settings), settings.model_dump_json()):
        assert secret not in text
        assert "pk-other-secret-51c0" not in text


@pytest.mark.parametrize(
    "env",
    [
        {"PORTICO_API_KEYS": "pk-key-secret-7f3a", "PORTICO_ENCRYPTION_KEYS": "secret-7f3a"},
        # No key, no Redis, no dev mode: refused by a model check, which pydantic would
        # print with every value it was given (the pepper and the admin token too).
        {"PORTICO_KEY_PEPPER": "pepper-secret-7f3a", "PORTICO_ADMIN_TOKEN": "secret-7f3a"},
    ],
)
def test_a_refused_setting_does_not_print_the_secrets_it_was_given(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    # The start-up error goes to the log.
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(pydantic.ValidationError) as info:
        GatewaySettings()
    assert "secret-7f3a" not in str(info.value)
