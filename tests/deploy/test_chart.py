"""The Helm chart: lint and render every value set with Helm itself, validate each object
against Kubernetes' OpenAPI schemas, and check what the objects say against the code that
will run in them (the launcher's flag parser, the gateway's settings and routes)."""

from __future__ import annotations

import base64
import functools
import ipaddress
import json
import os
import re
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate.utils as kubernetes
import pytest

from engine import main as engine_main
from engine.checkpoint import Checkpoint
from engine.command import build_command
from gateway.settings import GatewaySettings
from tests.deploy.chart import (
    CANARIES,
    EXTERNAL_REDIS_URL_CANARY,
    FULLNAME,
    NAMESPACE,
    REDIS_PASSWORD_CANARY,
    VALUE_SETS,
    Rendered,
    lint,
    render,
    render_error,
)
from tests.deploy.contract import (
    gateway_routes,
    gateway_variable_names,
    portico_metric_names,
    vllm_source,
)

# The chart's kubeVersion floor and the newest schemas kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.29.0", kubernetes.latest_version())
# Prometheus Operator and KEDA kinds: no OpenAPI schema here, checked structurally in
# their own tests (test_chart_engines.py for KEDA's ScaledObject).
CRD_KINDS = {"ServiceMonitor", "PrometheusRule", "ScaledObject"}
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
ALL_SETS = pytest.mark.parametrize("value_set", list(VALUE_SETS))


@functools.cache
def rendered(value_set: str) -> Rendered:
    return render(VALUE_SETS[value_set])


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No PORTICO_* (or alias) variable of this process leaks into a settings object."""
    for name in list(os.environ):
        if name.startswith("PORTICO_") or name in ("REDIS_URL", "HF_HUB_OFFLINE"):
            monkeypatch.delenv(name)
    return monkeypatch


def _secret_value(r: Rendered, name: str, key: str) -> str:
    """A Secret's value when the chart renders that Secret; a stand-in for a user's own."""
    if any(s["metadata"]["name"] == name for s in r.of_kind("Secret")):
        return r.secret_data(name)[key]
    return "redis://redis.example.net:6379/0" if "redis" in key else f"from-{name}-{key}"


def _gateway_environment(r: Rendered) -> dict[str, str]:
    """The gateway container's environment, built the way the kubelet builds it."""
    container = r.container("Deployment", "gateway")
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(r.get("ConfigMap", source["configMapRef"]["name"])["data"])
        elif any(s["metadata"]["name"] == source["secretRef"]["name"] for s in r.of_kind("Secret")):
            env.update(r.secret_data(source["secretRef"]["name"]))
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], var["value"])
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = _secret_value(r, ref["name"], ref["key"])
    return env


@ALL_SETS
def test_chart_lints_clean(value_set: str) -> None:
    assert lint(VALUE_SETS[value_set]) == []


@ALL_SETS
def test_every_object_validates_against_the_kubernetes_schemas(value_set: str) -> None:
    objects = rendered(value_set).objects
    assert objects
    for obj in objects:
        name = obj["metadata"]["name"]
        assert DNS_LABEL.match(name), f"bad object name {name!r}"
        assert len(name) <= 63, f"object name too long: {name!r}"
        if obj["kind"] in CRD_KINDS:
            continue
        for version in KUBERNETES_VERSIONS:
            # strict: unknown fields are errors, so a misplaced key cannot slip through.
            kubernetes.validate(obj, version, strict=True)


def test_kinds_rendered_by_default_are_the_expected_ones() -> None:
    kinds = sorted(o["kind"] for o in rendered("defaults").objects)
    shared = ["ServiceAccount", "NetworkPolicy", "NetworkPolicy", "NetworkPolicy"]
    engines = ["Deployment", "Service", "PodDisruptionBudget"]
    gateway = ["Deployment", "Service", "ConfigMap", "Secret", "HorizontalPodAutoscaler"]
    gateway.append("PodDisruptionBudget")
    redis = ["StatefulSet", "Service", "Secret"]
    assert kinds == sorted(shared + engines + gateway + redis)


def _engine_container(deployment: dict[str, Any]) -> dict[str, Any]:
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return dict(container)


@ALL_SETS
def test_gpu_request_and_limit_equal_the_tensor_parallel_size(value_set: str) -> None:
    r = rendered(value_set)
    gpu = r.values["engine"]["gpuResourceName"]
    groups = r.engine_groups()
    assert set(r.engines()) == set(groups)
    for name, deployment in r.engines().items():
        resources = _engine_container(deployment)["resources"]
        assert resources["limits"][gpu] == groups[name]["tensorParallelSize"]
        assert resources["requests"][gpu] == groups[name]["tensorParallelSize"]


@ALL_SETS
def test_engine_args_reach_vllm_through_the_launcher(
    value_set: str, clean_env: pytest.MonkeyPatch
) -> None:
    r = rendered(value_set)
    for name, deployment in r.engines().items():
        _check_engine_args(r, r.engine_groups()[name], _engine_container(deployment))


def _check_engine_args(r: Rendered, values: dict[str, Any], container: dict[str, Any]) -> None:
    command = container["command"]
    assert command == ["python3", "-m", "engine", "serve"]
    for var in container.get("env", []):
        assert not var["name"].startswith("PORTICO_ENGINE_"), "engine settings go in flags"

    # The launcher's own parser and settings: a wrong flag or value fails here.
    args = engine_main.build_parser().parse_args([*command[3:], *container["args"]])
    settings = engine_main.settings_from(args)
    assert settings.model == values["model"]
    assert settings.quantization == values["quantization"]
    assert settings.tensor_parallel_size == values["tensorParallelSize"]
    assert (settings.host, settings.device) == ("0.0.0.0", "cuda")
    assert settings.port == container["ports"][0]["containerPort"] == values["port"]
    assert str(settings.cache_dir).startswith(values["scratch"]["mountPath"])

    # ... and the vLLM command line the launcher builds from them on a GPU.
    checkpoint = Checkpoint(source=settings.model, served_name=settings.model)
    argv = build_command(settings, checkpoint, "cuda").argv
    flags = dict(zip(argv, [*argv[1:], ""], strict=True))
    assert flags["--tensor-parallel-size"] == str(values["tensorParallelSize"])
    assert flags["--served-model-name"] == (values["servedModelName"] or values["model"])
    assert flags["--scheduling-policy"] == values["schedulingPolicy"]
    if values["quantization"] not in ("auto", "none"):
        assert flags["--quantization"] == values["quantization"]
    else:
        assert "--quantization" not in argv
    extra = values["extraArgs"]
    assert argv[len(argv) - len(extra) :] == extra


def test_awq_model_gets_its_quantization_kernel_on_the_vllm_command_line() -> None:
    container = _engine_container(rendered("awq").engines()["main"])
    args = container["args"]
    assert args[args.index("--quantization") + 1] == "awq_marlin"
    assert "--extra-args=--kv-cache-dtype=fp8" in args
    hf_token = {v["name"]: v for v in container["env"]}["HF_TOKEN"]
    assert hf_token["valueFrom"]["secretKeyRef"] == {"name": "hf-token", "key": "token"}


@ALL_SETS
def test_engine_probes_use_vllms_health_route_with_room_to_load(value_set: str) -> None:
    r = rendered(value_set)
    for deployment in r.engines().values():
        container = _engine_container(deployment)
        probes = [container[p] for p in ("startupProbe", "readinessProbe", "livenessProbe")]
        assert all(p["httpGet"] == {"path": "/health", "port": "http"} for p in probes)
        startup = container["startupProbe"]
        budget = startup["periodSeconds"] * startup["failureThreshold"]
        assert budget >= r.values["engine"]["startupTimeoutSeconds"] >= 600


def test_vllm_declares_the_health_and_metrics_routes_the_chart_uses() -> None:
    assert re.search(
        r'\.get\(\s*"/health"', vllm_source("entrypoints/serve/instrumentator/health.py")
    )
    assert 'Mount("/metrics"' in vllm_source("entrypoints/serve/instrumentator/metrics.py")


@ALL_SETS
def test_engine_pods_get_shared_memory_and_a_model_cache(value_set: str) -> None:
    r = rendered(value_set)
    cache = r.values["engine"]["modelCache"]
    for deployment in r.engines().values():
        pod = deployment["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
        mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
        assert mounts["dshm"] == "/dev/shm"  # noqa: S108 - a mount path, not a temporary file
        assert mounts["model-cache"] == cache["mountPath"]
        expected = {
            "existingClaim": "persistentVolumeClaim",
            "hostPath": "hostPath",
            "emptyDir": "emptyDir",
        }
        assert expected.get(cache["type"], "ephemeral") in volumes["model-cache"]


@ALL_SETS
def test_gateway_engines_are_every_pod_of_each_groups_headless_service(value_set: str) -> None:
    r = rendered(value_set)
    engines = r.get("ConfigMap", f"{FULLNAME}-gateway")["data"]["PORTICO_ENGINES"].split(",")
    assert len(engines) == len(r.engines())
    for entry, (name, deployment) in zip(engines, r.engines().items(), strict=True):
        assert entry.startswith("dns+http://")  # one engine per resolved pod address
        url = urlsplit(entry.removeprefix("dns+"))
        assert url.hostname == f"{FULLNAME}-engine-{name}"
        service = r.get("Service", url.hostname)
        assert service["spec"]["clusterIP"] == "None"
        assert service["spec"].get("publishNotReadyAddresses", False) is False
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= pod_labels.items()
        assert service["spec"]["selector"]["portico.io/engine-group"] == name
        port = service["spec"]["ports"][0]
        assert url.port == port["port"]
        container_ports = {
            p["name"]: p["containerPort"] for p in _engine_container(deployment)["ports"]
        }
        assert container_ports[port["targetPort"]] == port["port"]


@ALL_SETS
def test_the_gateway_settings_object_accepts_the_rendered_configuration(
    value_set: str, clean_env: pytest.MonkeyPatch
) -> None:
    r = rendered(value_set)
    config = r.get("ConfigMap", f"{FULLNAME}-gateway")["data"]
    unknown = set(config) - gateway_variable_names()
    assert not unknown, f"settings the gateway does not read: {unknown}"
    for name, value in _gateway_environment(r).items():
        clean_env.setenv(name, value)
    settings = GatewaySettings()
    assert settings.engine_urls == config["PORTICO_ENGINES"].split(",")
    assert settings.drain_grace_s == r.values["gateway"]["drainSeconds"]
    assert settings.redis_url is not None
    assert settings.redis.failure_policy == r.values["gateway"]["config"]["redisFailurePolicy"]
    if r.values["redis"]["enabled"]:
        redis_url = urlsplit(settings.redis_url.get_secret_value())
        r.get("Service", redis_url.hostname or "")
        assert redis_url.port == 6379


@pytest.mark.parametrize("value_set", ["canaries", "external-redis"])
def test_no_secret_value_appears_outside_secrets(value_set: str) -> None:
    r = rendered(value_set)
    secrets = [*CANARIES.values(), REDIS_PASSWORD_CANARY, EXTERNAL_REDIS_URL_CANARY]
    if value_set == "external-redis":
        secrets.remove(REDIS_PASSWORD_CANARY)
        secrets.append("CANARY-external-redis-pw")
    else:
        secrets.remove(EXTERNAL_REDIS_URL_CANARY)
    in_secrets = " ".join(
        v for s in r.of_kind("Secret") for v in r.secret_data(s["metadata"]["name"]).values()
    )
    for secret in secrets:
        assert secret in in_secrets, "the canary never reached a Secret: the test proves nothing"
    outside = [json.dumps(o) for o in r.objects if o["kind"] != "Secret"] + [r.notes]
    for secret in secrets:
        # json-encoded too, for values with newlines (the PEM key).
        forms = {secret, json.dumps(secret)[1:-1], *secret.split(",")}
        for text in outside:
            assert not any(form in text for form in forms), (
                "a secret leaked into a non-Secret object"
            )


def test_probe_and_scrape_paths_exist_in_the_gateway_app() -> None:
    routes = gateway_routes()
    for value_set in VALUE_SETS:
        container = rendered(value_set).container("Deployment", "gateway")
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] in routes
        assert container["readinessProbe"]["httpGet"]["path"] in routes
    monitor = rendered("ingress-and-monitoring").get("ServiceMonitor", f"{FULLNAME}-gateway")
    assert all(e["path"] in routes for e in monitor["spec"]["endpoints"])


@ALL_SETS
def test_gateway_drains_before_the_kubelet_kills_it(value_set: str) -> None:
    r = rendered(value_set)
    gateway = r.values["gateway"]
    deployment = r.component("Deployment", "gateway")
    container = r.container("Deployment", "gateway")
    args = container["args"]
    config = r.get("ConfigMap", f"{FULLNAME}-gateway")["data"]
    drain = int(config["PORTICO_DRAIN_GRACE_S"])  # the gateway's drain runs first...
    shutdown = int(args[args.index("--timeout-graceful-shutdown") + 1])  # ...then uvicorn's
    assert (drain, shutdown) == (gateway["drainSeconds"], gateway["shutdownSeconds"])
    assert container["lifecycle"]["preStop"]["exec"]["command"] == [
        "sleep",
        str(gateway["preStopSleepSeconds"]),
    ]
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > gateway["preStopSleepSeconds"] + drain + shutdown
    assert container["command"][:3] == ["uvicorn", "--factory", "gateway.app:create_app"]


@ALL_SETS
def test_the_gateway_believes_x_forwarded_for_only_from_the_proxies_named_in_values(
    value_set: str, clean_env: pytest.MonkeyPatch
) -> None:
    r = rendered(value_set)
    container = r.container("Deployment", "gateway")
    assert "--no-proxy-headers" in container["command"]  # uvicorn never rewrites the client
    assert "--forwarded-allow-ips" not in container["args"]
    trusted = r.get("ConfigMap", f"{FULLNAME}-gateway")["data"]["PORTICO_TRUSTED_PROXIES"]
    assert trusted == r.values["gateway"]["trustedProxies"]
    clean_env.setenv("PORTICO_TRUSTED_PROXIES", trusted)
    expected = [ipaddress.ip_network(item.strip()) for item in trusted.split(",") if item.strip()]
    assert GatewaySettings(dev_mode=True).trusted_proxies == expected
    ingress = r.values["ingress"]["enabled"]
    assert ("gateway.trustedProxies is empty" in r.notes) == (ingress and not trusted)


def test_a_grace_period_shorter_than_the_drain_is_refused() -> None:
    message = render_error({"gateway": {"terminationGracePeriodSeconds": 30}})
    assert "must be larger than preStopSleepSeconds + drainSeconds + shutdownSeconds" in message
    # The drain alone fits in 36 s, but not with uvicorn's shutdown after it.
    message = render_error({"gateway": {"terminationGracePeriodSeconds": 36}})
    assert "(40)" in message


@ALL_SETS
def test_gateway_runs_unprivileged_with_a_read_only_root(value_set: str) -> None:
    r = rendered(value_set)
    pod = r.component("Deployment", "gateway")["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    context = pod["containers"][0]["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]


def test_autoscaler_owns_the_gateway_replica_count() -> None:
    r = rendered("ingress-and-monitoring")
    hpa = r.component("HorizontalPodAutoscaler", "gateway")
    deployment = r.component("Deployment", "gateway")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert "replicas" not in deployment["spec"]
    metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert metrics["Resource"]["resource"]["name"] == "cpu"
    assert metrics["Pods"]["pods"]["metric"]["name"] in portico_metric_names()

    fixed = rendered("offline-hostpath-no-autoscaling")
    assert not fixed.of_kind("HorizontalPodAutoscaler")
    assert fixed.component("Deployment", "gateway")["spec"]["replicas"] == 3


def test_a_release_without_any_redis_is_refused() -> None:
    assert "Redis is required" in render_error({"redis": {"enabled": False}})
    both = {"externalRedis": {"url": "redis://elsewhere:6379/0"}}
    assert "set redis.enabled=false" in render_error(both)


def _bytes(size: str) -> int:
    units = {"kb": 1024, "mb": 1024**2, "gb": 1024**3, "b": 1}
    unit = next((u for u in units if size.endswith(u)), "")
    return int(size.removesuffix(unit)) * units.get(unit, 1)


def test_the_built_in_redis_evicts_before_its_memory_limit_and_never_key_records() -> None:
    """Stored responses live 30 days: without maxmemory, Redis grows to its container's
    limit, is OOM-killed, reloads its append-only file and is killed again."""
    r = rendered("defaults")
    redis = r.container("StatefulSet", "redis")
    args = redis["args"]
    maxmemory = args[args.index("--maxmemory") + 1]
    assert args[args.index("--maxmemory-policy") + 1] == "volatile-lru"
    limit = redis["resources"]["limits"]["memory"]
    assert limit.endswith("Mi")
    assert _bytes(maxmemory) <= 0.8 * int(limit.removesuffix("Mi")) * 1024**2


def test_external_redis_replaces_the_built_in_one() -> None:
    r = rendered("external-redis")
    labels = [o["metadata"]["labels"] for o in r.objects]
    assert not [x for x in labels if x.get("app.kubernetes.io/component") == "redis"]
    env = {v["name"]: v for v in r.container("Deployment", "gateway")["env"]}
    ref = env["PORTICO_REDIS_URL"]["valueFrom"]["secretKeyRef"]
    assert r.secret_data(ref["name"])[ref["key"]] == EXTERNAL_REDIS_URL_CANARY
    existing = rendered("external-redis-existing-secret")
    env = {v["name"]: v for v in existing.container("Deployment", "gateway")["env"]}
    assert env["PORTICO_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "team-redis",
        "key": "url",
    }


def test_built_in_redis_takes_its_password_from_the_secret() -> None:
    r = rendered("canaries")
    container = r.container("StatefulSet", "redis")
    assert container["args"][-2:] == ["--requirepass", "$(REDIS_PASSWORD)"]
    env = {v["name"]: v["valueFrom"]["secretKeyRef"] for v in container["env"]}
    assert (
        r.secret_data(env["REDIS_PASSWORD"]["name"])[env["REDIS_PASSWORD"]["key"]]
        == REDIS_PASSWORD_CANARY
    )
    assert "volumeClaimTemplates" not in r.component("StatefulSet", "redis")["spec"]
    assert "volumeClaimTemplates" in rendered("defaults").component("StatefulSet", "redis")["spec"]


@pytest.mark.parametrize("value_set", ["defaults", "ingress-and-monitoring"])
def test_only_gateway_pods_reach_the_engines_and_redis(value_set: str) -> None:
    r = rendered(value_set)
    gateway_pods = r.component("Deployment", "gateway")["spec"]["template"]["metadata"]["labels"]
    extra_peers = r.values["networkPolicy"]["metricsFrom"]
    workloads = {
        "engine": next(iter(r.engines().values())),
        "redis": r.component("StatefulSet", "redis"),
    }
    for component, workload in workloads.items():
        policy = r.component("NetworkPolicy", component)
        pods = workload["spec"]["template"]["metadata"]["labels"]
        assert policy["spec"]["podSelector"]["matchLabels"].items() <= pods.items()
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        [rule] = policy["spec"]["ingress"]
        gateway_peer, *others = rule["from"]
        assert gateway_peer == {"podSelector": {"matchLabels": gateway_pods}}
        assert others == (extra_peers if component == "engine" else [])


def test_service_monitors_select_the_services_they_scrape() -> None:
    r = rendered("ingress-and-monitoring")
    monitors = r.of_kind("ServiceMonitor")
    assert {m["metadata"]["name"] for m in monitors} == {
        f"{FULLNAME}-gateway",
        f"{FULLNAME}-engine",
    }
    for monitor in monitors:
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        spec = monitor["spec"]
        assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
        wanted = spec["selector"]["matchLabels"].items()
        services = [s for s in r.of_kind("Service") if wanted <= s["metadata"]["labels"].items()]
        assert services
        for service in services:
            # Prometheus names the job after this label: the alert rules rely on it.
            assert service["metadata"]["labels"][spec["jobLabel"]] == monitor["metadata"]["name"]
            ports = {p["name"] for p in service["spec"]["ports"]}
            for endpoint in spec["endpoints"]:
                assert endpoint["port"] in ports
                assert endpoint["path"] == "/metrics"


def test_prometheus_rules_alert_on_series_that_exist() -> None:
    r = rendered("ingress-and-monitoring")
    [rule] = r.of_kind("PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    rules = [x for group in rule["spec"]["groups"] for x in group["rules"]]
    assert {x["alert"] for x in rules} == {
        "PorticoGatewayErrorRatioHigh",
        "PorticoEngineDown",
        "PorticoGatewayLatencyP99High",
    }
    known = portico_metric_names() | {"up"}
    jobs = {s["metadata"]["name"] for s in r.of_kind("ServiceMonitor")}
    for x in rules:
        assert x["for"]
        assert x["labels"]["severity"] in ("warning", "critical")
        assert x["annotations"]["summary"]
        series = re.findall(r"([a-z_:]+)\{", x["expr"])
        assert series
        assert set(series) <= known, x["expr"]
        assert set(re.findall(r'job="([^"]+)"', x["expr"])) <= jobs
        assert f'namespace="{NAMESPACE}"' in x["expr"]
        assert x["expr"].count("(") == x["expr"].count(")")


def test_grafana_dashboard_is_valid_json_over_real_metrics() -> None:
    r = rendered("ingress-and-monitoring")
    config_map = r.get("ConfigMap", f"{FULLNAME}-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(config_map["data"]["portico.json"])
    assert dashboard["title"]
    assert dashboard["uid"]
    expressions = []
    for panel in dashboard["panels"]:
        assert {"id", "type", "title", "gridPos", "targets"} <= panel.keys()
        expressions += [target["expr"] for target in panel["targets"]]
    used = {name for expr in expressions for name in re.findall(r"([a-z_:]+)\{", expr)}
    # What an operator needs on one screen (requests, errors, latency, TTFT, tokens/s,
    # overhead, cache, limits, engine health, vLLM's queue and KV cache).
    assert used >= {
        "portico_requests_total",
        "portico_request_duration_seconds_bucket",
        "portico_requests_in_flight",
        "portico_ratelimit_rejections_total",
        "portico_time_to_first_token_seconds_bucket",
        "portico_completion_tokens_total",
        "portico_gateway_overhead_seconds_bucket",
        "portico_cache_requests_total",
        "portico_engine_up",
        "portico_upstream_requests_total",
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
    }
    vllm_metrics = set(re.findall(r'name="(vllm:[a-z_]+)"', vllm_source("v1/metrics/loggers.py")))
    assert {u for u in used if u.startswith("vllm:")} <= vllm_metrics
    assert {u for u in used if u.startswith("portico_")} <= portico_metric_names()


def test_ingress_routes_to_the_gateway_service() -> None:
    r = rendered("ingress-and-monitoring")
    [ingress] = r.of_kind("Ingress")
    service = r.component("Service", "gateway")
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": service["metadata"]["name"], "port": {"name": "http"}}
    assert ingress["spec"]["tls"] == [{"secretName": "llm-tls", "hosts": ["llm.example.com"]}]


def test_notes_show_the_openai_sdk_call() -> None:
    notes = rendered("awq").notes
    assert "from openai import OpenAI" in notes
    assert 'model="qwen2.5-7b"' in notes
    assert f"svc/{FULLNAME}-gateway" in notes
    assert 'base_url="http://127.0.0.1:8080/v1"' in notes
    assert 'base_url="https://llm.example.com/v1"' in rendered("ingress-and-monitoring").notes


def test_encryption_keys_reach_the_gateway_only_through_its_secret(
    clean_env: pytest.MonkeyPatch,
) -> None:
    """gateway.secrets.encryptionKeys: in the gateway Secret, in no other object, and
    accepted by the settings object (two keys, newest first: a rotation)."""
    keys = ",".join(base64.b64encode(os.urandom(32)).decode() for _ in range(2))
    r = render({"gateway": {"secrets": {"encryptionKeys": keys}}})
    assert r.secret_data(f"{FULLNAME}-gateway")["PORTICO_ENCRYPTION_KEYS"] == keys
    outside = [json.dumps(o) for o in r.objects if o["kind"] != "Secret"] + [r.notes]
    assert not any(k in text for k in keys.split(",") for text in outside)
    for name, value in _gateway_environment(r).items():
        clean_env.setenv(name, value)
    settings = GatewaySettings()
    assert [k.get_secret_value() for k in settings.encryption_keys] == keys.split(",")


def test_encryption_is_off_unless_keys_are_given() -> None:
    assert "PORTICO_ENCRYPTION_KEYS" not in _gateway_environment(rendered("defaults"))
