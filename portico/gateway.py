"""``portico gateway serve``: the gateway under uvicorn, and the command line that runs it.

The gateway is started as ``python -m uvicorn --factory gateway.app:create_app``: a child
(``portico up``) or a replacement of this process (``portico gateway serve``), never an
import, so uvicorn owns the signals and the graceful shutdown.
"""

from __future__ import annotations

import os
import sys
import tempfile
from typing import NoReturn

from portico.settings import CliSettings

GATEWAY_FACTORY = "gateway.app:create_app"


def gateway_argv(host: str, port: int, workers: int) -> list[str]:
    """The uvicorn command line of every gateway this command starts."""
    return [
        sys.executable, "-m", "uvicorn", "--factory", GATEWAY_FACTORY,
        "--host", host, "--port", str(port), "--workers", str(workers),
        "--no-access-log",  # the gateway logs requests itself, without secrets
        # uvicorn would believe X-Forwarded-For from 127.0.0.1; the gateway reads it
        # only from PORTICO_TRUSTED_PROXIES (gateway/proxies.py).
        "--no-proxy-headers",
    ]  # fmt: skip


def serve(host: str, port: int, workers: int, settings: CliSettings) -> NoReturn:
    """Replace this process with uvicorn running the gateway."""
    added: dict[str, str] = {}
    if workers > 1 and not settings.prometheus_multiproc_dir:
        # Workers share metrics through files in this directory (prometheus-client
        # reads the variable at import, so it must be set before uvicorn starts).
        added["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="portico-metrics-")
    # Not configuration read here: the whole environment passes on to uvicorn, where
    # GatewaySettings reads it.
    env = {**os.environ, **added}
    argv = gateway_argv(host, port, workers)
    os.execve(sys.executable, argv, env)  # noqa: S606 - argv is built above, no shell involved
