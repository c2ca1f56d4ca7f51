"""Least privilege on the real control plane: apply, plan, call and destroy as a ServiceAccount bound to
exactly what ``mlops render --rbac`` prints; and a real cluster's refusals, one clear line each
(an expired/revoked token, a forbidden verb, an admission policy, a namespace that does not exist).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import git
import pytest
import yaml
from k8s_fixtures import _engine_or_skip
from kubernetes import client, config
from real_cluster import RealCluster, shared_cluster
from support import ROOT, run_cli

from planner.errors import ProviderError
from providers.kubernetes import rbac
from providers.kubernetes.client import Cluster, Forbidden

pytestmark = [pytest.mark.slow, pytest.mark.docker]


@pytest.fixture(scope="module")
def cluster() -> Iterator[RealCluster]:
    yield shared_cluster()


@pytest.fixture(scope="module")
def admin(cluster: RealCluster) -> client.ApiClient:
    return config.new_client_from_config(str(cluster.kubeconfig))


@pytest.fixture
def namespace(admin: client.ApiClient) -> Iterator[str]:
    name = f"rbac-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(admin)
    core.create_namespace({"metadata": {"name": name}})
    try:
        yield name
    finally:
        core.delete_namespace(name)
        for obj in rbac.objects(name):
            if obj["kind"].startswith("Cluster"):
                delete = getattr(client.RbacAuthorizationV1Api(admin), "delete_" + _snake(obj["kind"]))
                with contextlib.suppress(client.ApiException):
                    delete(obj["metadata"]["name"])


def _snake(kind: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in kind).lstrip("_")


def _grant(admin: client.ApiClient, namespace: str, *, without: tuple[str, str] | None = None) -> None:
    """The objects ``render --rbac`` prints, for ServiceAccount NAMESPACE/mlops (WITHOUT: drop one verb)."""
    api = client.RbacAuthorizationV1Api(admin)
    client.CoreV1Api(admin).create_namespaced_service_account(namespace, {"metadata": {"name": "mlops"}})
    for obj in rbac.objects(namespace):
        if without and obj["kind"] == "Role":
            resource, verb = without
            for rule in obj["rules"]:
                if rule["resources"] == [resource]:
                    rule["verbs"] = [v for v in rule["verbs"] if v != verb]
        scope = "namespaced_" if "namespace" in obj["metadata"] else ""
        create = getattr(api, f"create_{scope}{_snake(obj['kind'])}")
        if "namespace" in obj["metadata"]:
            create(namespace, obj)
        else:
            create(obj)


def _token_kubeconfig(cluster: RealCluster, admin: client.ApiClient, namespace: str, folder: Path) -> Path:
    """A kubeconfig that authenticates as ServiceAccount NAMESPACE/mlops with a bound token (no certificate)."""
    token = client.CoreV1Api(admin).create_namespaced_service_account_token(
        "mlops", namespace, {"spec": {"expirationSeconds": 3600}}).status.token
    server = yaml.safe_load(cluster.kubeconfig.read_text())["clusters"][0]["cluster"]
    path = folder / "sa.kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "c", "cluster": server}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": "sa", "namespace": namespace}}]}))
    return path


def _example(tmp: Path, namespace: str, kubeconfig: Path) -> list[str]:
    """examples/kubernetes on NAMESPACE with auth: none (a token kubeconfig's Authorization header is the
    API server's, so a scoring key cannot ride along: README) and one replica."""
    root = tmp / "repo"
    shutil.copytree(ROOT / "examples" / "kubernetes", root)
    manifest = root / "ml.yaml"
    text = manifest.read_text()
    text = text.replace("project: diabetes", f"project: {namespace}")
    text = text.replace("namespace: ml", f"namespace: {namespace}")
    text = text.replace("    namespace:", f"    kubeconfig: {kubeconfig}\n    namespace:", 1)
    text = text.replace("replicas: 2", "replicas: 1").replace("auth: key", "auth: none")
    manifest.write_text(text)
    repo = git.Repo.init(root)
    repo.git.add(A=True)
    repo.index.commit("initial")
    return ["-f", str(manifest)]


def _engine() -> None:
    _engine_or_skip()
    if not os.environ.get("MLOPS_TEST_REGISTRY"):
        pytest.skip("no local registry: MLOPS_TEST_REGISTRY is not set (run .ci/docker-up.sh)")


def test_render_rbac_prints_a_role_and_a_cluster_role_with_why(tmp_path: Path):
    f = _example(tmp_path, "rbac-render", tmp_path / "none")
    out = run_cli("render", "--rbac", *f)
    assert out.code == 0, out.err
    docs = [d for d in yaml.safe_load_all(out.out) if d]
    assert [d["kind"] for d in docs] == ["Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"]
    assert {"apiGroups": ["apps"], "resources": ["deployments"],
            "verbs": ["get", "list", "create", "patch", "delete"]} in docs[0]["rules"]
    assert "# services/proxy: mlops call" in out.out


def test_apply_plan_call_destroy_with_exactly_the_printed_role(cluster, admin, namespace: str, tmp_path: Path):
    _engine()
    _grant(admin, namespace)
    f = _example(tmp_path, namespace, _token_kubeconfig(cluster, admin, namespace, tmp_path))
    applied = run_cli("apply", "--auto-approve", *f)
    assert applied.code == 0, applied.out + applied.err
    assert run_cli("plan", "--detailed-exitcode", *f).code == 0
    called = run_cli("call", "diabetes-api", *f)
    assert called.code == 0 and len(json.loads(called.out)["predictions"]) == 2, called.err
    assert run_cli("logs", "diabetes-api", *f).code == 0
    assert run_cli("destroy", "--auto-approve", *f).code == 0
    apps = client.AppsV1Api(admin)
    assert not apps.list_namespaced_deployment(namespace).items


def test_a_forbidden_verb_is_one_line_naming_the_verb_and_resource(cluster, admin, namespace: str, tmp_path: Path):
    _grant(admin, namespace, without=("deployments", "patch"))
    kube = Cluster(str(_token_kubeconfig(cluster, admin, namespace, tmp_path)), None)
    body = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x", "namespace": namespace},
            "spec": {"selector": {"matchLabels": {"a": "x"}}, "template": {
                "metadata": {"labels": {"a": "x"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}
    with pytest.raises(Forbidden) as err:
        kube.apply(body)
    text = str(err.value)
    assert "\n" not in text and 'cannot patch resource "deployments"' in text and "apps" in text, text


def test_a_revoked_token_is_one_line_saying_so(cluster, admin, namespace: str, tmp_path: Path):
    _grant(admin, namespace)
    f = _example(tmp_path, namespace, _token_kubeconfig(cluster, admin, namespace, tmp_path))
    # Deleting the ServiceAccount invalidates its tokens at once: the API server answers 401 as for an expired one.
    client.CoreV1Api(admin).delete_namespaced_service_account("mlops", namespace)
    result = run_cli("plan", *f)
    assert result.code != 0
    lines = [ln for ln in result.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "HTTP 401" in lines[0] and "expired" in lines[0], result.err


def test_a_namespace_that_does_not_exist_is_one_line(cluster, admin, namespace: str, tmp_path: Path):
    _grant(admin, namespace)
    kubeconfig = _token_kubeconfig(cluster, admin, namespace, tmp_path)
    f = _example(tmp_path, "nowhere-" + namespace, kubeconfig)
    result = run_cli("plan", *f)
    lines = [ln for ln in result.err.splitlines() if ln.strip()]
    assert result.code != 0 and len(lines) == 1, result.out + result.err
    assert f"namespace 'nowhere-{namespace}' exists" in lines[0], lines[0]


def test_an_admission_policy_refusal_is_one_line_with_its_message(cluster, admin, tmp_path: Path):
    api = client.AdmissionregistrationV1Api(admin)
    name = f"no-big-{uuid.uuid4().hex[:6]}"
    namespace = f"adm-{uuid.uuid4().hex[:6]}"
    client.CoreV1Api(admin).create_namespace({"metadata": {"name": namespace, "labels": {"policy": name}}})
    api.create_validating_admission_policy({
        "metadata": {"name": name},
        "spec": {"failurePolicy": "Fail", "matchConstraints": {"resourceRules": [{
            "apiGroups": ["apps"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
            "resources": ["deployments"]}]},
            "validations": [{"expression": "object.spec.replicas <= 1",
                             "message": "at most one replica in this namespace"}]}})
    api.create_validating_admission_policy_binding({
        "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"],
                 "matchResources": {"namespaceSelector": {"matchLabels": {"policy": name}}}}})
    kube = Cluster(str(cluster.kubeconfig), None)
    body = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x", "namespace": namespace},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"a": "x"}}, "template": {
                "metadata": {"labels": {"a": "x"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}
    try:
        deadline = time.monotonic() + 30
        while True:   # the policy takes effect once the API server has loaded it
            try:
                kube.apply(body, dry_run=True)
            except ProviderError as exc:
                text = str(exc)
                break
            assert time.monotonic() < deadline, "the admission policy never refused"
            time.sleep(0.5)
        assert "\n" not in text and "at most one replica in this namespace" in text and "denied" in text, text
    finally:
        api.delete_validating_admission_policy_binding(name)
        api.delete_validating_admission_policy(name)
        client.CoreV1Api(admin).delete_namespace(namespace)
