"""values.schema.json: Helm refuses wrong types, unknown keys and unknown methods before
rendering anything, and the schema's closed sets are the launcher's own."""

from __future__ import annotations

import json
import typing
from typing import Any

import jsonschema
import pytest
import yaml

from engine.settings import Dtype, Quantization, SchedulingPolicy
from tests.deploy.chart import CHART, VALUE_SETS, render_error

SCHEMA = json.loads((CHART / "values.schema.json").read_text())
DEFAULTS = yaml.safe_load((CHART / "values.yaml").read_text())


def test_schema_is_valid_draft_7_and_accepts_the_defaults() -> None:
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    # A second implementation agrees with Helm's on the defaults.
    jsonschema.Draft7Validator(SCHEMA).validate(DEFAULTS)


def test_schema_closed_sets_are_the_launchers() -> None:
    engine = SCHEMA["properties"]["engine"]["properties"]
    assert engine["quantization"]["enum"] == list(typing.get_args(Quantization))
    assert engine["dtype"]["enum"] == list(typing.get_args(Dtype))
    assert engine["schedulingPolicy"]["enum"] == list(typing.get_args(SchedulingPolicy))


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_schema_accepts_every_value_set_the_tests_render(value_set: str) -> None:
    jsonschema.Draft7Validator(SCHEMA).validate(_merged(DEFAULTS, VALUE_SETS[value_set]))


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"engine": {"quantization": "int3"}}, "/engine/quantization"),
        ({"engine": {"quantization": "AWQ"}}, "/engine/quantization"),
        ({"engine": {"tensorParallelSize": "2"}}, "/engine/tensorParallelSize"),
        ({"engine": {"tensorParallelSize": 0}}, "/engine/tensorParallelSize"),
        ({"engine": {"gpuMemoryUtilization": 1.5}}, "/engine/gpuMemoryUtilization"),
        ({"engine": {"maxModelLen": "8k"}}, "/engine/maxModelLen"),
        ({"engine": {"enablePrefixCaching": "yes"}}, "/engine/enablePrefixCaching"),
        ({"engine": {"schedulingPolicy": "lifo"}}, "/engine/schedulingPolicy"),
        ({"engine": {"groups": [{"name": "a", "schedulingPolicy": "FIFO"}]}}, "schedulingPolicy"),
        ({"engine": {"extraArgs": ["kv-cache-dtype fp8"]}}, "/engine/extraArgs"),
        ({"engine": {"modelCache": {"type": "nfs"}}}, "/engine/modelCache/type"),
        ({"engine": {"replcas": 2}}, "replcas"),
        ({"engine": {"maxModelLen": "max"}}, "/engine/maxModelLen"),
        ({"engine": {"groups": []}}, "/engine/groups"),
        ({"engine": {"groups": [{"name": "Chat_1"}]}}, "/engine/groups/0/name"),
        ({"engine": {"groups": [{"model": "org/m"}]}}, "name"),
        ({"engine": {"groups": [{"name": "a", "port": 9000}]}}, "port"),
        ({"engine": {"groups": [{"name": "a", "quantization": "int3"}]}}, "quantization"),
        ({"engine": {"autoscaling": {"minReplicas": 0}}}, "/engine/autoscaling/minReplicas"),
        ({"engine": {"loraAdapters": [{"name": "sql"}]}}, "/engine/loraAdapters/0"),
        ({"engine": {"hfEndpoint": "hf-mirror.internal"}}, "/engine/hfEndpoint"),
        ({"engine": {"drainSeconds": -1}}, "/engine/drainSeconds"),
        ({"gateway": {"replicas": "two"}}, "/gateway/replicas"),
        ({"gateway": {"config": {"redisFailurePolicy": "maybe"}}}, "redisFailurePolicy"),
        ({"gateway": {"config": {"maxTokens": 1.5}}}, "/gateway/config/maxTokens"),
        ({"gateway": {"extraConfig": {"LOG_LEVEL": "debug"}}}, "LOG_LEVEL"),
        ({"redis": {"auth": {"password": "p@ss/word"}}}, "/redis/auth/password"),
        ({"externalRedis": {"url": "http://redis:6379"}}, "/externalRedis/url"),
        ({"ingress": {"enabled": "true"}}, "/ingress/enabled"),
        ({"gateway": {"trustedProxies": "*"}}, "/gateway/trustedProxies"),
        ({"gateway": {"trustedProxies": "ingress-nginx.internal"}}, "/gateway/trustedProxies"),
        ({"gateway": {"forwardedAllowIps": "127.0.0.1"}}, "forwardedAllowIps"),
        ({"gateway": {"secrets": {"encryptionKeys": "not-a-key"}}}, "encryptionKeys"),
        ({"gateway": {"secrets": {"encryptionKeys": "c2hvcnQ="}}}, "encryptionKeys"),
    ],
)
def test_helm_refuses_values_the_schema_rejects(values: dict[str, Any], complaint: str) -> None:
    message = render_error(values)
    assert "schema" in message
    assert complaint in message


def _merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merged[key] = _merged(base[key], value)
        else:
            merged[key] = value
    return merged
