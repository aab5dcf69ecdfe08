"""/openapi.json describes what the gateway really serves, the generation routes
included (they are plain Starlette routes, described by gateway/openapi.py)."""

from __future__ import annotations

import httpx
import jsonschema

from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.gateway.servers import serving


def _schema() -> dict[str, object]:
    settings = GatewaySettings(api_keys=["k"], engine_url="http://127.0.0.1:9")
    with serving(create_app(settings)) as url:
        response = httpx.get(url + "/openapi.json", timeout=5)
    assert response.status_code == 200
    schema: dict[str, object] = response.json()
    return schema


def test_generation_routes_are_documented_with_their_bodies_errors_and_auth() -> None:
    schema = _schema()
    paths = schema["paths"]
    components = schema["components"]
    assert isinstance(paths, dict)
    assert isinstance(components, dict)
    for path, model in (
        ("/v1/completions", "CompletionRequest"),
        ("/v1/chat/completions", "ChatCompletionRequest"),
    ):
        post = paths[path]["post"]
        body = post["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": f"#/components/schemas/{model}"}
        assert model in components["schemas"]
        assert {"bearer", "apiKey"} <= {k for s in post["security"] for k in s}
        refusal = post["responses"]["429"]["content"]["application/json"]["schema"]
        assert refusal == {"$ref": "#/components/schemas/Error"}
    assert "/v1/models" in paths
    assert "/readyz" in paths


def test_documented_request_schemas_accept_valid_bodies_and_refuse_invalid_ones() -> None:
    schema = _schema()
    components = schema["components"]
    assert isinstance(components, dict)
    # Resolve "#/components/schemas/..." references against the document itself.
    registry_root = {"components": components}
    chat = {**components["schemas"]["ChatCompletionRequest"], **registry_root}
    ok = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    jsonschema.validate(ok, chat)
    for bad in (
        {"model": "m", "messages": []},
        {"model": "m", "messages": [{"role": "robot", "content": "hi"}]},
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0},
    ):
        try:
            jsonschema.validate(bad, chat)
        except jsonschema.ValidationError:
            continue
        raise AssertionError(f"schema accepted {bad}")


def test_admin_routes_document_the_bodies_they_read_by_hand_and_their_refusals() -> None:
    """The admin routes read their body themselves, after the caller check (FastAPI does
    not see it); the document still describes each body, from the model that checks it."""
    schema = _schema()
    paths = schema["paths"]
    components = schema["components"]
    assert isinstance(paths, dict)
    assert isinstance(components, dict)
    for path, method, model in (
        ("/admin/keys", "post", "KeySpec"),
        ("/admin/keys/{key_id}", "patch", "KeyUpdate"),
    ):
        operation = paths[path][method]
        body = operation["requestBody"]
        assert body["required"] is True
        assert body["content"]["application/json"]["schema"] == {
            "$ref": f"#/components/schemas/{model}"
        }
        assert {"400", "401", "403", "408", "413", "503"} <= set(operation["responses"])
    registry_root = {"components": components}
    create = {**components["schemas"]["KeySpec"], **registry_root}
    update = {**components["schemas"]["KeyUpdate"], **registry_root}
    jsonschema.validate({"name": "team-a", "rpm": 60}, create)
    jsonschema.validate({"rpm": 60}, update)
    for bad, against in (({"rpm": 60}, create), ({"rpm": 0}, update), ({"name": ""}, update)):
        try:
            jsonschema.validate(bad, against)
        except jsonschema.ValidationError:
            continue
        raise AssertionError(f"schema accepted {bad}")


# POST routes that are actions with nothing to send (the engine operations).
_BODYLESS = {
    "/admin/engines/{name}/drain",
    "/admin/engines/{name}/undrain",
    "/admin/models/refresh",
}


def test_every_operation_that_takes_a_body_documents_it() -> None:
    paths = _schema()["paths"]
    assert isinstance(paths, dict)
    for path, item in paths.items():
        for method, operation in item.items():
            bodyless = path in _BODYLESS or path.endswith("/cancel")  # a response's cancel
            if method in ("post", "put", "patch") and not bodyless:
                assert "requestBody" in operation, (method, path)


def test_every_admin_route_documents_its_credential_and_the_403_of_a_missing_permission() -> None:
    schema = _schema()
    paths = schema["paths"]
    components = schema["components"]
    assert isinstance(paths, dict)
    assert isinstance(components, dict)
    admin = {p: item for p, item in paths.items() if p.startswith("/admin/")}
    assert {"/admin/engines", *_BODYLESS} <= set(admin)
    for path, item in admin.items():
        for operation in item.values():
            assert operation["security"] == [{"bearer": []}], path
            refusal = operation["responses"]["403"]
            assert "model_admin" in refusal["description"]
            assert refusal["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/Error"
            }
    for path in ("/admin/engines/{name}/drain", "/admin/engines/{name}/undrain"):
        assert "404" in paths[path]["post"]["responses"]
    permissions = components["schemas"]["Permission"]["enum"]
    assert sorted(permissions) == ["admin", "keys:read", "keys:write", "model_admin"]


def test_version_is_documented_with_engine_names_and_versions_only() -> None:
    schema = _schema()
    paths = schema["paths"]
    components = schema["components"]
    assert isinstance(paths, dict)
    assert isinstance(components, dict)
    answer = paths["/version"]["get"]["responses"]["200"]["content"]["application/json"]
    assert answer["schema"] == {"$ref": "#/components/schemas/VersionInfo"}
    engine = components["schemas"]["EngineVersion"]
    assert set(engine["properties"]) == {"name", "vllm_version"}


def test_readyz_is_documented_as_a_status_alone() -> None:
    paths = _schema()["paths"]
    assert isinstance(paths, dict)
    for status in ("200", "503"):
        answer = paths["/readyz"]["get"]["responses"][status]["content"]["application/json"]
        assert set(answer["schema"]["properties"]) == {"status"}
