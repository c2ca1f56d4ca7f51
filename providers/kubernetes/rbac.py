"""The least privilege mlops needs on a cluster: a Role in the target's namespace, and a ClusterRole only
for what a namespace cannot grant (listing nodes for the extended-resource warning, creating the
namespace when it does not exist yet). ``mlops render --rbac`` prints them with their bindings.

Each rule is one thing the provider does, found in providers/kubernetes (client calls); a test
applies, plans, calls and destroys with a service-account token bound to exactly these objects.
"""

from __future__ import annotations

from typing import Any

# (apiGroup, resource, verbs, why)
NAMESPACED: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    ("", "namespaces", ("get",), "does the namespace exist (a Role in it may read it)"),
    ("apps", "deployments", ("get", "list", "create", "patch", "delete"),
     "server-side apply (create when missing), live state, destroy"),
    ("apps", "replicasets", ("list",), "rollout state: the new ReplicaSet and its pods"),
    ("", "pods", ("list",), "health: pod states"),
    ("", "pods/log", ("get",), "mlops logs, the last lines of a crashing pod"),
    ("", "pods/proxy", ("get", "create"), "mlops call --instance POD, a rollout's metrics of each version"),
    ("", "services", ("get", "list", "create", "patch", "delete"), "the Service of each model service"),
    ("", "services/proxy", ("get", "create"), "mlops call and the smoke test through the API server"),
    ("", "secrets", ("get", "list", "create", "patch", "delete"), "scoring keys, registry credentials"),
    ("", "events", ("list",), "the scheduler's FailedScheduling message"),
    ("autoscaling", "horizontalpodautoscalers", ("get", "list", "create", "patch", "delete"), "autoscale"),
    ("coordination.k8s.io", "leases", ("get", "create", "patch", "delete"), "the apply lock"),
    ("gateway.networking.k8s.io", "httproutes", ("get", "list", "create", "patch", "delete"),
     "with a gateway: each service's route, a rollout's weights and mirror"),
)
CLUSTER: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    ("", "nodes", ("list",), "plans warn when no node offers a requested device (fpga, gpu)"),
    ("", "namespaces", ("create",), "only when the namespace does not exist yet"),
)
NAME = "mlops-deployer"


def _rules(table: tuple[tuple[str, str, tuple[str, ...], str], ...]) -> list[dict[str, Any]]:
    return [{"apiGroups": [group], "resources": [resource], "verbs": list(verbs)}
            for group, resource, verbs, _why in table]


def objects(namespace: str, subject: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Role + RoleBinding in NAMESPACE, ClusterRole + ClusterRoleBinding, for SUBJECT (default: a
    ServiceAccount ``mlops`` in that namespace)."""
    subject = subject or {"kind": "ServiceAccount", "name": "mlops", "namespace": namespace}
    group = "rbac.authorization.k8s.io"
    cluster_name = f"{NAME}-{namespace}"
    return [
        {"apiVersion": f"{group}/v1", "kind": "Role", "metadata": {"name": NAME, "namespace": namespace},
         "rules": _rules(NAMESPACED)},
        {"apiVersion": f"{group}/v1", "kind": "RoleBinding", "metadata": {"name": NAME, "namespace": namespace},
         "roleRef": {"apiGroup": group, "kind": "Role", "name": NAME}, "subjects": [subject]},
        {"apiVersion": f"{group}/v1", "kind": "ClusterRole", "metadata": {"name": cluster_name},
         "rules": _rules(CLUSTER)},
        {"apiVersion": f"{group}/v1", "kind": "ClusterRoleBinding", "metadata": {"name": cluster_name},
         "roleRef": {"apiGroup": group, "kind": "ClusterRole", "name": cluster_name}, "subjects": [subject]},
    ]


def render(namespace: str) -> str:
    """The objects as YAML, each rule with a comment saying why mlops needs it."""
    import yaml

    docs = []
    for obj in objects(namespace):
        text = yaml.safe_dump(obj, sort_keys=False, default_flow_style=None, width=120)
        table = NAMESPACED if obj["kind"] == "Role" else CLUSTER if obj["kind"] == "ClusterRole" else ()
        for group, resource, _verbs, why in table:
            line = f"- apiGroups: [{group}]" if group else "- apiGroups: ['']"
            text = text.replace(f"{line}\n  resources: [{resource}]\n",
                                f"# {resource}: {why}\n{line}\n  resources: [{resource}]\n", 1)
        docs.append(text)
    return "---\n".join(docs)
