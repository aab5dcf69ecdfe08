"""``portico keys ...``: the admin API from a terminal.

    portico keys create --name NAME [--models M ...] [--rpm N] [--tpm N]
                        [--max-tokens N] [--budget-tokens N] [--expires-in-s S]
                        [--permissions P ...]   (keys:read keys:write model_admin admin)
    portico keys list
    portico keys show KEY_ID
    portico keys revoke KEY_ID

Talks HTTP to ``--url`` (default $PORTICO_URL or http://127.0.0.1:8080) with
``--admin-token`` (default $PORTICO_ADMIN_TOKEN, or any credential holding the
action's permission: gateway/permissions.py). Prints the JSON answer.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import httpx

from gateway.permissions import Permission
from portico.settings import CliSettings

TIMEOUT_S = 10.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags and actions of ``portico keys``; unset flags fall back to CliSettings."""
    parser.add_argument("--url", default=None, help="gateway URL (default: $PORTICO_URL)")
    parser.add_argument(
        "--admin-token", default=None, help="credential (default: $PORTICO_ADMIN_TOKEN)"
    )
    actions = parser.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create")
    create.add_argument("--name", required=True)
    create.add_argument("--models", nargs="+")
    for flag in ("--rpm", "--tpm", "--max-tokens", "--budget-tokens"):
        create.add_argument(flag, type=int)
    create.add_argument("--expires-in-s", type=float)
    create.add_argument("--permissions", nargs="+", choices=[str(p) for p in Permission])
    actions.add_parser("list")
    for name in ("show", "revoke"):
        actions.add_parser(name).add_argument("key_id")


def create_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"name": args.name}
    for field in ("models", "rpm", "tpm", "max_tokens", "budget_tokens", "permissions"):
        if getattr(args, field) is not None:
            body[field] = getattr(args, field)
    if args.expires_in_s is not None:
        body["expires_at"] = time.time() + args.expires_in_s
    return body


def run(args: argparse.Namespace, settings: CliSettings) -> int:
    """One admin call; prints the JSON answer. 0 on success, 1 if refused or unreachable."""
    url: str = args.url or settings.url
    token = args.admin_token or (settings.admin_token and settings.admin_token.get_secret_value())
    if not token:
        print("portico keys: set --admin-token or PORTICO_ADMIN_TOKEN", file=sys.stderr)
        return 2
    key_path = f"/admin/keys/{getattr(args, 'key_id', '')}"
    calls = {
        "create": ("POST", "/admin/keys"),
        "list": ("GET", "/admin/keys"),
        "show": ("GET", key_path),
        "revoke": ("DELETE", key_path),
    }
    method, path = calls[args.action]
    body = create_body(args) if args.action == "create" else None
    headers = {"Authorization": f"Bearer {token}"}
    try:
        response = httpx.request(
            method, url.rstrip("/") + path, json=body, headers=headers, timeout=TIMEOUT_S
        )
    except httpx.HTTPError as exc:
        print(f"portico keys: cannot reach {url}: {type(exc).__name__}", file=sys.stderr)
        return 1
    print(json.dumps(response.json(), indent=2))
    return 0 if response.is_success else 1
