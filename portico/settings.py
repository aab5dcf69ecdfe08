"""The ``portico`` command's one settings object: the defaults its client commands take
from the environment.

Every variable here has a flag that wins over it; none of them configures the gateway
or the engine (those read :class:`gateway.settings.GatewaySettings` and
:class:`engine.settings.EngineSettings` in their own processes). The names are the ones
users already export: ``PORTICO_URL`` and ``PORTICO_ADMIN_TOKEN`` for ``portico keys``,
the OpenAI SDK's ``OPENAI_API_KEY`` for ``portico loadtest``, and the gateway's own
``PORTICO_API_KEYS`` and ``PROMETHEUS_MULTIPROC_DIR``, which ``portico up`` and
``portico gateway serve`` only look at to decide what to add for their child, and
``PORTICO_TOOLCHAIN_DIR`` for ``portico model quantize``'s toolchain venv.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class CliSettings(BaseSettings):
    """The environment as the ``portico`` command reads it, once, in :func:`portico.cli.main`."""

    # Each field reads exactly the variable its alias names, never its bare field name (a
    # shell's URL or API_KEYS is not Portico's; populate_by_name would read those too), so
    # values passed in code use the variable's name: CliSettings(PORTICO_URL=...).
    # extra="ignore": the command runs in shells full of other variables.
    model_config = SettingsConfigDict(extra="ignore", hide_input_in_errors=True)

    url: str = Field(
        "http://127.0.0.1:8080",
        validation_alias="PORTICO_URL",
        description="The gateway `portico keys` talks to (its `--url` wins).",
    )
    admin_token: SecretStr | None = Field(
        None,
        validation_alias="PORTICO_ADMIN_TOKEN",
        description="Credential `portico keys` sends (its `--admin-token` wins); any "
        "credential holding the action's permission works.",
    )
    openai_api_key: SecretStr | None = Field(
        None,
        validation_alias="OPENAI_API_KEY",
        description="Bearer key of `portico loadtest` when `--api-key` is not given (the "
        "OpenAI SDK's variable, so a shell set up for the SDK works as is). Unset: no header.",
    )
    api_keys: SecretStr | None = Field(
        None,
        validation_alias="PORTICO_API_KEYS",
        description="The gateway's keys. `portico up` passes them on unchanged; unset, it "
        "makes one random key for the run and prints it.",
    )
    prometheus_multiproc_dir: str | None = Field(
        None,
        validation_alias="PROMETHEUS_MULTIPROC_DIR",
        description="The gateway's metrics directory. `portico gateway serve --workers N` "
        "(N > 1) creates a fresh one when this is unset.",
    )
    toolchain_dir: Path | None = Field(
        None,
        validation_alias="PORTICO_TOOLCHAIN_DIR",
        description="Where `portico model quantize` builds its toolchain venv (llm-compressor) "
        "on first use, one directory per set of pins. Unset: ~/.cache/portico/toolchains.",
    )

    def toolchain_root(self) -> Path:
        """:attr:`toolchain_dir`, or its default under the user's cache directory."""
        if self.toolchain_dir is not None:
            return self.toolchain_dir
        return Path.home() / ".cache" / "portico" / "toolchains"
