"""The `restricted` Pod Security Standard (Kubernetes 1.29+, baseline rules included),
written out as checks on a pod spec, so a render can be judged without a cluster.

https://kubernetes.io/docs/concepts/security/pod-security-standards/ lists the rules;
each check below names the control it implements.
"""

from __future__ import annotations

from typing import Any

ALLOWED_VOLUME_TYPES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)
SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)
SELINUX_TYPES = frozenset(
    {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
)


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        *pod.get("initContainers", []),
        *pod["containers"],
        *pod.get("ephemeralContainers", []),
    ]


def _host_namespaces_and_volumes(pod: dict[str, Any]) -> list[str]:
    problems = [f"{key}: true" for key in ("hostNetwork", "hostPID", "hostIPC") if pod.get(key)]
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= ALLOWED_VOLUME_TYPES:
            problems.append(f"volume {volume['name']}: type {sorted(kinds)} not allowed")
    pod_context = pod.get("securityContext", {})
    for sysctl in pod_context.get("sysctls", []):
        if sysctl["name"] not in SAFE_SYSCTLS:
            problems.append(f"sysctl {sysctl['name']} not allowed")
    return problems


def _effective(pod: dict[str, Any], container: dict[str, Any], key: str) -> Any:
    """A setting of the container's securityContext, else the pod's."""
    own = container.get("securityContext", {})
    return own[key] if key in own else pod.get("securityContext", {}).get(key)


def _container_problems(pod: dict[str, Any], container: dict[str, Any]) -> list[str]:
    name = container["name"]
    context = container.get("securityContext", {})
    problems = []
    if context.get("privileged"):
        problems.append(f"{name}: privileged")
    if context.get("allowPrivilegeEscalation") is not False:
        problems.append(f"{name}: allowPrivilegeEscalation must be false")
    capabilities = context.get("capabilities", {})
    if "ALL" not in capabilities.get("drop", []):
        problems.append(f"{name}: capabilities must drop ALL")
    if set(capabilities.get("add", [])) - {"NET_BIND_SERVICE"}:
        problems.append(f"{name}: adds capabilities {capabilities['add']}")
    if _effective(pod, container, "runAsNonRoot") is not True:
        problems.append(f"{name}: runAsNonRoot must be true")
    if _effective(pod, container, "runAsUser") == 0:
        problems.append(f"{name}: runAsUser 0")
    seccomp = _effective(pod, container, "seccompProfile") or {}
    if seccomp.get("type") not in ("RuntimeDefault", "Localhost"):
        problems.append(f"{name}: seccompProfile must be RuntimeDefault or Localhost")
    if context.get("procMount", "Default") != "Default":
        problems.append(f"{name}: procMount")
    se_linux = _effective(pod, container, "seLinuxOptions") or {}
    if se_linux.get("type", "") not in SELINUX_TYPES or {"user", "role"} & set(se_linux):
        problems.append(f"{name}: seLinuxOptions")
    if (context.get("windowsOptions") or {}).get("hostProcess"):
        problems.append(f"{name}: hostProcess")
    if any(port.get("hostPort") for port in container.get("ports", [])):
        problems.append(f"{name}: hostPort")
    return problems


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """Every rule of the restricted profile this pod spec breaks (empty: admitted)."""
    problems = _host_namespaces_and_volumes(pod)
    for container in _containers(pod):
        problems += _container_problems(pod, container)
    return problems
