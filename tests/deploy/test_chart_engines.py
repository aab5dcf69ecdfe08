"""The engine pods on a GPU cluster (issue #22): rendered with Helm over the GPU value set
(two engine groups, KEDA, the download init container, a read-only shared claim, the
restricted Pod Security context) and checked item by item against the launcher that
will read the flags and the vLLM release that will run."""

from __future__ import annotations

import functools
from importlib import metadata
from typing import Any

import pytest

from engine import main as engine_main
from engine.checkpoint import Checkpoint
from engine.command import build_command
from engine.settings import EngineSettings
from tests.deploy.chart import (
    FULLNAME,
    GPU_SET,
    NAMESPACE,
    VALUE_SETS,
    Rendered,
    render,
    render_error,
)
from tests.deploy.contract import vllm_source
from tests.deploy.pod_security import restricted_violations

WORKLOAD_KINDS = ("Deployment", "StatefulSet")


@functools.cache
def rendered(value_set: str) -> Rendered:
    return render(VALUE_SETS[value_set])


@pytest.fixture
def gpu() -> Rendered:
    return rendered(GPU_SET)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No PORTICO_* or HF_* variable of this process leaks into a settings object."""
    import os

    for name in list(os.environ):
        if name.startswith(("PORTICO_", "HF_")):
            monkeypatch.delenv(name)
    return monkeypatch


def _pod(deployment: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return pod


def _container(deployment: dict[str, Any], name: str = "engine") -> dict[str, Any]:
    pod = _pod(deployment)
    [found] = [c for c in [*pod.get("initContainers", []), *pod["containers"]] if c["name"] == name]
    return found


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {v["name"]: v.get("value", v.get("valueFrom")) for v in container.get("env", [])}


def _launcher_settings(
    container: dict[str, Any], env: pytest.MonkeyPatch | None = None
) -> EngineSettings:
    """The settings the launcher builds in this container: its args, and its environment."""
    if env is not None:
        for name, value in _env(container).items():
            if isinstance(value, str):
                env.setenv(name, value)
    args = engine_main.build_parser().parse_args([*container["command"][3:], *container["args"]])
    return engine_main.settings_from(args)


def _argv(settings: EngineSettings, vllm_cli: str | None = None) -> list[str]:
    checkpoint = Checkpoint(source=settings.model, served_name=settings.model)
    return build_command(settings, checkpoint, "cuda", vllm_cli).argv


def _flag(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def _pods(r: Rendered) -> list[tuple[str, dict[str, Any]]]:
    return [(o["metadata"]["name"], _pod(o)) for kind in WORKLOAD_KINDS for o in r.of_kind(kind)]


# 1. Driver floor: the image is a build argument (test_dockerfile.py); forward compat here.


def test_cuda_forward_compatibility_is_vllms_own_switch_and_off_by_default(gpu: Rendered) -> None:
    for deployment in gpu.engines().values():
        assert _env(_container(deployment))["VLLM_ENABLE_CUDA_COMPATIBILITY"] == "1"
    for deployment in rendered("defaults").engines().values():
        assert "VLLM_ENABLE_CUDA_COMPATIBILITY" not in _env(_container(deployment))
    envs = vllm_source("envs.py")
    assert '"VLLM_ENABLE_CUDA_COMPATIBILITY"' in envs
    assert '"VLLM_CUDA_COMPATIBILITY_PATH"' in envs


# 2. Weights fetched by an init container, at a pinned revision; the engine runs offline.


def test_download_init_container_fetches_each_groups_model_at_its_revision(
    gpu: Rendered,
) -> None:
    groups = gpu.engine_groups()
    for name, deployment in gpu.engines().items():
        download = _container(deployment, "download")
        engine = _container(deployment)
        group = groups[name]
        revision = ["--revision", group["revision"]] if group["revision"] else []
        assert download["command"] + download.get("args", []) == [
            "hf", "download", group["model"], *revision
        ]  # fmt: skip
        assert download["image"] == engine["image"]
        download_env, engine_env = _env(download), _env(engine)
        for variable in ("HF_HOME", "HF_TOKEN", "HF_ENDPOINT"):
            assert download_env[variable] == engine_env[variable]
        assert download_env["HF_TOKEN"]["secretKeyRef"] == {"name": "hf-token", "key": "token"}
        mounts = {m["name"]: m for m in download["volumeMounts"]}
        assert not mounts["model-cache"].get("readOnly", False)  # it writes the weights


def test_after_the_download_the_engine_is_offline_and_pinned(
    gpu: Rendered, clean_env: pytest.MonkeyPatch
) -> None:
    chat = _launcher_settings(_container(gpu.engines()["chat"]), clean_env)
    assert chat.offline is True
    assert chat.revision == gpu.engine_groups()["chat"]["revision"]
    assert _flag(_argv(chat), "--revision") == chat.revision
    assert (
        build_command(chat, Checkpoint(source="m", served_name="m"), "cuda").env["HF_HUB_OFFLINE"]
        == "1"
    )


def test_the_hf_command_the_init_container_runs_is_installed_with_huggingface_hub() -> None:
    scripts = {e.name for e in metadata.distribution("huggingface_hub").entry_points}
    assert "hf" in scripts


def test_a_group_serving_a_local_directory_gets_no_download() -> None:
    values = {"engine": {"download": {"enabled": True}, "groups": [
        {"name": "local", "model": "/cache/models/mine"}, {"name": "hub"},
    ]}}  # fmt: skip
    engines = render(values).engines()
    assert "initContainers" not in _pod(engines["local"])
    assert _container(engines["hub"], "download")["command"][2] == "Qwen/Qwen2.5-7B-Instruct"
    assert "initContainers" not in _pod(rendered("defaults").engines()["main"])


# 3. The hub is whatever HF_ENDPOINT says, in every container.


def test_hub_mirror_reaches_the_launcher_and_vllm(
    gpu: Rendered, clean_env: pytest.MonkeyPatch
) -> None:
    mirror = gpu.values["engine"]["hfEndpoint"]
    for deployment in gpu.engines().values():
        assert _env(_container(deployment))["HF_ENDPOINT"] == mirror
    settings = _launcher_settings(_container(gpu.engines()["coder"]), clean_env)
    assert settings.hf_endpoint == mirror
    checkpoint = Checkpoint(source=settings.model, served_name=settings.model)
    assert build_command(settings, checkpoint, "cuda").env["HF_ENDPOINT"] == mirror


def test_no_hub_host_is_rendered_unless_values_name_one() -> None:
    text = str(rendered("defaults").objects)
    assert "huggingface.co" not in text
    assert "HF_ENDPOINT" not in text


# 4. A rollout drains: preStop sleep, then vLLM's --shutdown-timeout, inside the grace.


def test_engine_pods_drain_inside_their_grace_period(
    gpu: Rendered, clean_env: pytest.MonkeyPatch
) -> None:
    engine = gpu.values["engine"]
    for deployment in gpu.engines().values():
        container = _container(deployment)
        sleep = container["lifecycle"]["preStop"]["exec"]["command"]
        assert sleep == ["sleep", str(engine["preStopSleepSeconds"])]
        settings = _launcher_settings(container)
        assert settings.drain_s == engine["drainSeconds"] == 300
        assert _flag(_argv(settings), "--shutdown-timeout") == "300"
        grace = _pod(deployment)["terminationGracePeriodSeconds"]
        assert grace > engine["preStopSleepSeconds"] + settings.kill_after_s


def test_vllm_has_the_shutdown_timeout_flag_the_launcher_passes() -> None:
    assert '"--shutdown-timeout"' in vllm_source("engine/arg_utils.py")


def test_an_engine_grace_period_shorter_than_the_drain_is_refused() -> None:
    message = render_error({"engine": {"terminationGracePeriodSeconds": 120}})
    assert "must be larger than preStopSleepSeconds + drainSeconds + shutdownTimeoutSeconds" in (
        message
    )
    assert render({"engine": {"terminationGracePeriodSeconds": 161}}).engines()


def test_the_gateway_outlasts_the_engine_drain_in_the_gpu_set(gpu: Rendered) -> None:
    # A stream relayed by a gateway that stops first is cut however long the engine drains.
    assert gpu.values["gateway"]["drainSeconds"] >= gpu.values["engine"]["drainSeconds"]


# 5. Caches on a scratch volume, the model volume read-only, the restricted profile.


def test_every_cache_is_on_the_scratch_volume_and_the_model_volume_is_read_only(
    gpu: Rendered, clean_env: pytest.MonkeyPatch
) -> None:
    scratch = gpu.values["engine"]["scratch"]["mountPath"]
    for deployment in gpu.engines().values():
        container = _container(deployment)
        env = _env(container)
        for variable in ("HOME", "XDG_CACHE_HOME", "VLLM_CACHE_ROOT", "TRITON_CACHE_DIR"):
            assert env[variable].startswith(scratch), variable
        assert env["TORCHINDUCTOR_CACHE_DIR"].startswith(scratch)
        assert str(_launcher_settings(container).cache_dir).startswith(scratch)
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        assert mounts["model-cache"]["readOnly"] is True
        assert "readOnly" not in mounts["scratch"]
        volumes = {v["name"]: v for v in _pod(deployment)["volumes"]}
        assert "emptyDir" in volumes["scratch"]
        assert env["HF_HOME"].startswith(mounts["model-cache"]["mountPath"])


def test_a_read_only_model_volume_without_pre_staged_weights_is_refused() -> None:
    message = render_error({"engine": {"modelCache": {"readOnly": True}}})
    assert "needs engine.offline or engine.download.enabled" in message


@pytest.mark.parametrize(
    "value_set", [s for s in VALUE_SETS if s != "offline-hostpath-no-autoscaling"]
)
def test_every_pod_satisfies_the_restricted_pod_security_standard(value_set: str) -> None:
    for name, pod in _pods(rendered(value_set)):
        assert restricted_violations(pod) == [], name


def test_the_restricted_checks_catch_a_host_path_and_a_root_container() -> None:
    [engine] = rendered("offline-hostpath-no-autoscaling").engines().values()
    assert restricted_violations(_pod(engine)) == [
        "volume model-cache: type ['hostPath'] not allowed"
    ]
    careless = {"allowPrivilegeEscalation": True, "capabilities": {"drop": []}}
    root = render({"engine": {"podSecurityContext": {"runAsUser": 0}, "securityContext": careless}})
    problems = restricted_violations(_pod(root.engines()["main"]))
    assert "engine: runAsNonRoot must be true" not in problems
    assert "engine: runAsUser 0" in problems
    assert "engine: allowPrivilegeEscalation must be false" in problems
    assert "engine: capabilities must drop ALL" in problems


def test_engine_pods_run_as_a_non_root_user_with_group_writable_volumes(gpu: Rendered) -> None:
    for deployment in gpu.engines().values():
        context = _pod(deployment)["securityContext"]
        assert context["runAsNonRoot"] is True
        assert context["runAsUser"] != 0
        assert context["fsGroup"] == context["runAsGroup"]
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}


# 6. No service links: a Service named vllm (or portico) would inject *_PORT variables.


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_no_pod_gets_service_link_variables(value_set: str) -> None:
    for name, pod in _pods(rendered(value_set)):
        assert pod["enableServiceLinks"] is False, name


# 7. Engine groups: one Deployment, Service and PDB each, KEDA on vLLM's queue, spread.


def test_each_group_is_its_own_deployment_service_and_budget(gpu: Rendered) -> None:
    assert set(gpu.engines()) == {"chat", "coder"}
    for name in ("chat", "coder"):
        object_name = f"{FULLNAME}-engine-{name}"
        for kind in ("Deployment", "Service", "PodDisruptionBudget"):
            labels = gpu.get(kind, object_name)["metadata"]["labels"]
            assert labels["portico.io/engine-group"] == name
        budget = gpu.get("PodDisruptionBudget", object_name)["spec"]["selector"]["matchLabels"]
        pods = gpu.engines()[name]["spec"]["template"]["metadata"]["labels"]
        assert budget.items() <= pods.items()
        other = gpu.engines()["coder" if name == "chat" else "chat"]
        assert not budget.items() <= other["spec"]["template"]["metadata"]["labels"].items()


def test_each_group_serves_its_own_model_with_its_own_settings(
    gpu: Rendered, clean_env: pytest.MonkeyPatch
) -> None:
    chat = _launcher_settings(_container(gpu.engines()["chat"]))
    coder = _launcher_settings(_container(gpu.engines()["coder"]))
    assert (chat.model, chat.tensor_parallel_size, chat.max_model_len) == (
        "meta-llama/Llama-3.3-70B-Instruct", 4, 32768
    )  # fmt: skip
    assert (coder.model, coder.tensor_parallel_size, coder.quantization) == (
        "Qwen/Qwen2.5-Coder-32B-Instruct-AWQ", 2, "awq_marlin"
    )  # fmt: skip
    assert coder.served_model_name == "qwen-coder"
    # enforceEager: true for every group, false for coder: a group's false wins.
    assert (chat.enforce_eager, coder.enforce_eager) == (True, False)
    assert coder.max_model_len == "auto"  # the default: fit the context to the GPU memory
    resources = _container(gpu.engines()["chat"])["resources"]
    assert resources["requests"]["cpu"] == "16"


def test_lora_adapters_are_served_next_to_the_base_model(
    gpu: Rendered, clean_env: pytest.MonkeyPatch
) -> None:
    argv = _argv(_launcher_settings(_container(gpu.engines()["chat"])))
    assert "--enable-lora" in argv
    assert _flag(argv, "--lora-modules") == "sql=/cache/adapters/sql-lora"
    assert "--enable-lora" not in _argv(_launcher_settings(_container(gpu.engines()["coder"])))


def test_vllm_accepts_auto_as_the_context_length() -> None:
    source = vllm_source("utils/argparse_utils.py")
    assert 'value.lower() == "auto"' in source
    assert "human_readable_int_or_auto" in vllm_source("engine/arg_utils.py")


def test_keda_scales_the_autoscaled_group_on_vllms_queue(gpu: Rendered) -> None:
    [scaled] = gpu.of_kind("ScaledObject")
    chat = gpu.engine_groups()["chat"]["autoscaling"]
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["metadata"]["name"] == f"{FULLNAME}-engine-chat"
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "Deployment", "name": f"{FULLNAME}-engine-chat"
    }  # fmt: skip
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (1, 3)
    assert spec["minReplicaCount"] >= 1  # no engine, no queue metric to scale up on
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 600
    [trigger] = spec["triggers"]
    assert trigger["type"] == "prometheus"
    metadata_ = trigger["metadata"]
    assert metadata_["serverAddress"] == chat["prometheusAddress"]
    assert metadata_["threshold"] == "5"
    assert metadata_["query"] == (
        f'sum(vllm:num_requests_waiting{{namespace="{NAMESPACE}",'
        f'service="{FULLNAME}-engine-chat"}})'
    )
    assert 'name="vllm:num_requests_waiting"' in vllm_source("v1/metrics/loggers.py")
    # KEDA owns the replica count of the group it scales, and only of that one.
    assert "replicas" not in gpu.engines()["chat"]["spec"]
    assert gpu.engines()["coder"]["spec"]["replicas"] == 2


def test_keda_queries_a_label_the_service_monitor_gives_the_engine_series(gpu: Rendered) -> None:
    # The Prometheus Operator labels each target with its Service's name as `service`.
    monitor = gpu.get("ServiceMonitor", f"{FULLNAME}-engine")
    wanted = monitor["spec"]["selector"]["matchLabels"].items()
    services = {s["metadata"]["name"] for s in gpu.of_kind("Service")}
    selected = {
        s["metadata"]["name"]
        for s in gpu.of_kind("Service")
        if wanted <= s["metadata"]["labels"].items()
    }
    assert {f"{FULLNAME}-engine-chat", f"{FULLNAME}-engine-coder"} == selected & services


def test_no_scaled_object_without_autoscaling() -> None:
    assert not rendered("defaults").of_kind("ScaledObject")


def test_engines_spread_over_nodes_and_zones_by_default(gpu: Rendered) -> None:
    chat = _pod(gpu.engines()["chat"])
    labels = gpu.engines()["chat"]["spec"]["template"]["metadata"]["labels"]
    keys = [c["topologyKey"] for c in chat["topologySpreadConstraints"]]
    assert keys == ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]
    for constraint in chat["topologySpreadConstraints"]:
        assert constraint["whenUnsatisfiable"] == "ScheduleAnyway"
        assert constraint["labelSelector"]["matchLabels"] == labels
    [coder] = _pod(gpu.engines()["coder"])["topologySpreadConstraints"]
    assert coder["whenUnsatisfiable"] == "DoNotSchedule"
    assert coder["labelSelector"]["matchLabels"]["portico.io/engine-group"] == "coder"
    none = render({"engine": {"topologySpreadConstraints": []}}).engines()["main"]
    assert "topologySpreadConstraints" not in _pod(none)


def test_the_engine_down_alert_counts_every_groups_engines(gpu: Rendered) -> None:
    [rule] = gpu.of_kind("PrometheusRule")
    [down] = [
        x for g in rule["spec"]["groups"] for x in g["rules"] if x["alert"] == "PorticoEngineDown"
    ]
    assert down["expr"].strip().endswith("< 3")  # chat's KEDA minimum 1 + coder's 2


@pytest.mark.parametrize(
    ("groups", "complaint"),
    [
        ([{"name": "a"}, {"name": "a"}], 'the name "a" is used twice'),
        ([{"name": "a" * 36}], "longer than 63 characters"),  # with a 20-letter release name
    ],
)
def test_group_names_that_cannot_name_objects_are_refused(
    groups: list[dict[str, str]], complaint: str
) -> None:
    values = {"fullnameOverride": "portico-production-1", "engine": {"groups": groups}}
    assert complaint in render_error(values)


# 8. Deployments, not a StatefulSet: replaced when a node dies, no claim templates.


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_engines_are_deployments_that_roll_without_spare_gpus(value_set: str) -> None:
    r = rendered(value_set)
    engine_sets = [
        s for s in r.of_kind("StatefulSet")
        if s["metadata"]["labels"]["app.kubernetes.io/component"] == "engine"
    ]  # fmt: skip
    assert engine_sets == []
    for deployment in r.engines().values():
        strategy = deployment["spec"]["strategy"]
        assert strategy["type"] == "RollingUpdate"
        assert strategy["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}


@pytest.mark.parametrize("cache_type", ["ephemeral", "pvc"])
def test_a_per_pod_model_volume_is_an_ephemeral_claim(cache_type: str) -> None:
    r = render({"engine": {"modelCache": {"type": cache_type, "storageClassName": "fast"}}})
    volumes = {v["name"]: v for v in _pod(r.engines()["main"])["volumes"]}
    claim = volumes["model-cache"]["ephemeral"]["volumeClaimTemplate"]["spec"]
    assert claim["storageClassName"] == "fast"
    assert claim["resources"]["requests"]["storage"] == "200Gi"


def test_a_shared_claim_is_mounted_by_every_group(gpu: Rendered) -> None:
    for deployment in gpu.engines().values():
        volumes = {v["name"]: v for v in _pod(deployment)["volumes"]}
        assert volumes["model-cache"]["persistentVolumeClaim"] == {"claimName": "models-rwx"}


# 9. `vllm serve` in the GPU image, from the flags the chart renders.


def test_the_gpu_image_runs_vllm_serve_with_the_rendered_flags(
    gpu: Rendered, clean_env: pytest.MonkeyPatch
) -> None:
    settings = _launcher_settings(_container(gpu.engines()["coder"]))
    argv = _argv(settings, vllm_cli="/usr/local/bin/vllm")
    assert argv[:3] == ["/usr/local/bin/vllm", "serve", "Qwen/Qwen2.5-Coder-32B-Instruct-AWQ"]
    assert "vllm.entrypoints.openai.api_server" not in argv
    assert _flag(argv, "--tensor-parallel-size") == "2"


# Issue #16: an embeddings engine is one more group; tool calling is a per-group value.


def test_an_embedding_group_runs_a_pooling_engine_next_to_the_chat_group(
    clean_env: pytest.MonkeyPatch,
) -> None:
    embed = {"name": "embed", "model": "sentence-transformers/all-MiniLM-L6-v2"}
    values = {"engine": {"groups": [{"name": "chat"}, {**embed, "runner": "pooling"}]}}
    chart = render(values)
    engines = chart.engines()
    chat = _launcher_settings(_container(engines["chat"]))
    embedder = _launcher_settings(_container(engines["embed"]))
    assert (chat.runner, embedder.runner) == ("auto", "pooling")
    assert _flag(_argv(embedder), "--runner") == "pooling"
    assert "--runner" not in _argv(chat)  # vLLM's own choice for a generative model
    config = chart.get("ConfigMap", f"{FULLNAME}-gateway")["data"]["PORTICO_ENGINES"]
    assert sorted(config.split(",")) == sorted(
        f"dns+http://{FULLNAME}-engine-{group}:8000" for group in ("chat", "embed")
    )


def test_the_tool_call_parser_is_a_group_value_and_none_turns_tools_off(
    clean_env: pytest.MonkeyPatch,
) -> None:
    groups = [{"name": "chat", "toolCallParser": "llama3_json"}, {"name": "plain"}]
    engines = render({"engine": {"groups": groups, "toolCallParser": "none"}}).engines()
    chat_argv = _argv(_launcher_settings(_container(engines["chat"])))
    assert _flag(chat_argv, "--tool-call-parser") == "llama3_json"
    assert "--enable-auto-tool-choice" in chat_argv
    plain_argv = _argv(_launcher_settings(_container(engines["plain"])))
    assert "--tool-call-parser" not in plain_argv
    assert "--enable-auto-tool-choice" not in plain_argv


# The scheduling policy is a group value: batch work can wait behind one group's chat
# traffic (priority) while another group keeps vLLM's arrival order.


def test_the_scheduling_policy_is_a_group_value_that_reaches_vllm(
    gpu: Rendered, clean_env: pytest.MonkeyPatch
) -> None:
    chat = _launcher_settings(_container(gpu.engines()["chat"]))
    coder = _launcher_settings(_container(gpu.engines()["coder"]))
    assert (chat.scheduling_policy, coder.scheduling_policy) == ("priority", "fcfs")
    assert _flag(_argv(chat), "--scheduling-policy") == "priority"
    assert _flag(_argv(coder), "--scheduling-policy") == "fcfs"
    shared = render({"engine": {"schedulingPolicy": "priority"}}).engines()["main"]
    assert _launcher_settings(_container(shared)).scheduling_policy == "priority"


def test_vllm_offers_the_scheduling_policies_the_chart_allows() -> None:
    source = vllm_source("config/scheduler.py")
    assert 'SchedulerPolicy = Literal["fcfs", "priority"]' in source
