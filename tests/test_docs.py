"""The configuration reference names every setting each process reads."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, BaseModel

from engine.settings import EngineSettings
from gateway.settings import GatewaySettings
from portico.settings import CliSettings

REFERENCE = (Path(__file__).parents[1] / "docs" / "configuration.md").read_text()


def _names(model: type[BaseModel], prefix: str) -> list[str]:
    names = []
    for name, field in model.model_fields.items():
        nested = field.annotation
        alias = field.validation_alias
        if isinstance(nested, type) and issubclass(nested, BaseModel):
            names += _names(nested, f"{prefix}{name.upper()}__")
        elif isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
            names.append(alias.choices[0])  # the variable's own name comes first
        elif isinstance(alias, str):
            names.append(alias)
        else:
            names.append(prefix + name.upper())
    return names


def test_every_setting_is_documented() -> None:
    names = _names(GatewaySettings, "PORTICO_") + _names(EngineSettings, "PORTICO_ENGINE_")
    names += _names(CliSettings, "")
    missing = [name for name in names if f"`{name}`" not in REFERENCE]
    assert not missing, f"add these to docs/configuration.md: {missing}"
