"""API-level tests of the Kubernetes provider, on the real control plane and on the double alike.

``api_cluster`` runs a test on both: the real one of .ci/kube-up.sh and the double (kubelet off).
``api_double`` is for what only the double can show here (its request log, its certificates).
The real ``kubernetes`` client talks HTTPS to 127.0.0.1; nothing is monkeypatched.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import re
import threading
import time
from pathlib import Path

import k8s_fixtures
import kubernetes_validate
import pytest
import yaml
from k8s_fixtures import FPGA, make_provider
from kubernetes import client, config
from support import check_golden

from planner.errors import LockedError, Unreachable
from planner.resources import FAILED, HEALTHY, TRANSITIONING, UNHEALTHY, UNSCHEDULABLE
from providers.kubernetes import FpgaProvider, KubernetesProvider, manifests, schema
from providers.kubernetes.client import Conflict
from providers.kubernetes.health import assess, rollout
from providers.kubernetes.lease import LeaseLock

api_double = k8s_fixtures.api_double
api_cluster = k8s_fixtures.api_cluster
OLDEST, NEWEST = "1.26.0", "1.37.0"
"""The Kubernetes minors the generated objects are validated against (HPA autoscaling/v2 only from 1.26)."""


def _service(**deploy) -> manifests.Service:
    spec = {"deploy": schema.normalize({"replicas": 2, "cpu": 0.5, "memory_gb": 1, "auth": "key", **deploy}),
            "image": "reg.example/p/diabetes-api:0123456789abcdef", "models": ["ridge:1@abc"]}
    return manifests.Service(
        name="diabetes-api", namespace="ml", project="diabetes", target="prod", spec=spec,
        image="reg.example/p/diabetes-api@sha256:" + "a" * 64, model_dir="/var/azureml-app/azureml-models/ridge/1",
        entry_script="score.py", fingerprint="f" * 64, git_commit="c" * 40,
        keys={"primary": "primary-key-value-123", "secondary": "secondary-key-value-456"},
        pull_secret=manifests.dockerconfig("reg.example", "user", "pass-word"))


def _fpga_service() -> manifests.Service:
    svc = _service(gpu=0)
    return manifests.Service(**{**svc.__dict__, "placement": manifests.Placement(
        resource=FPGA, count=1, node_selector={"accelerator": "u250"},
        tolerations=({"key": FPGA, "operator": "Exists", "effect": "NoSchedule"},))})


CASES = {
    "replicas": lambda: _service(),
    "autoscale": lambda: _service(autoscale={"min_replicas": 2, "max_replicas": 10, "target_utilization": 70},
                                  gpu=1, environment_variables={"MODE": "fast"}),
    "fpga": _fpga_service,
}


def _canary_objects(gateway: bool) -> list[dict]:
    """A canary's objects at its first step: 10 % by replica ratio, or behind a router 30 % and 20 % mirrored."""
    from providers.kubernetes import canary

    svc = _service()
    if gateway:
        svc = manifests.Service(**{**svc.__dict__, "gateway": manifests.Gateway("edge", "infra")})
        return canary.objects(svc, 1, weight=30, mirror=20)
    return canary.objects(svc, canary.split(3, 10).canary, weight=10)


CANARY_CASES = {"canary": lambda: _canary_objects(False), "canary-gateway": lambda: _canary_objects(True)}


@pytest.mark.parametrize("case", sorted(CANARY_CASES))
def test_canary_objects_match_their_golden_file(case: str):
    objects = [manifests.redacted(o) for o in CANARY_CASES[case]()]
    check_golden(f"kubernetes/{case}.yaml", yaml.safe_dump_all(objects, sort_keys=False))
    for obj in objects:
        if obj["kind"] != "HTTPRoute":   # the HTTPRoute's schema is a CRD's: the real-cluster test checks it
            kubernetes_validate.validate(CANARY_CASES[case]()[objects.index(obj)], NEWEST, strict=True)


@pytest.mark.parametrize("case", sorted(CASES))
def test_generated_objects_match_their_golden_file(case: str):
    objects = [manifests.redacted(o) for o in manifests.objects(CASES[case]())]
    check_golden(f"kubernetes/{case}.yaml", yaml.safe_dump_all(objects, sort_keys=False))


@pytest.mark.parametrize("version", [OLDEST, NEWEST])
@pytest.mark.parametrize("case", sorted(CASES))
def test_generated_objects_pass_kubernetes_validate_strict(case: str, version: str):
    for obj in [*manifests.objects(CASES[case]()), manifests.namespace("ml", "diabetes")]:
        kubernetes_validate.validate(obj, version, strict=True)


def test_autoscale_leaves_replicas_to_the_hpa_and_limits_equal_device_requests():
    objs = {o["kind"]: o for o in manifests.objects(CASES["autoscale"]())}
    assert "replicas" not in objs["Deployment"]["spec"]
    assert objs["HorizontalPodAutoscaler"]["spec"]["maxReplicas"] == 10
    fpga = {o["kind"]: o for o in manifests.objects(_fpga_service())}["Deployment"]
    res = fpga["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert res["requests"][FPGA] == res["limits"][FPGA] == "1"
    strategy = fpga["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0


def test_secrets_never_show_in_what_is_printed():
    text = yaml.safe_dump_all([manifests.redacted(o) for o in manifests.objects(_service())])
    for secret in ("primary-key-value-123", "secondary-key-value-456", "pass-word",
                   base64.b64encode(b"primary-key-value-123").decode()):
        assert secret not in text
    assert "(sensitive)" in text


# -- the double's API semantics ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def apis(api_cluster):
    cfg = client.Configuration()
    config.load_kube_config(str(api_cluster.kubeconfig), client_configuration=cfg)
    api = client.ApiClient(cfg)
    core = client.CoreV1Api(api)
    core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "sem"}})
    return client.AppsV1Api(api), core


def _deployment(name: str, labels: dict, replicas: int | None = 1) -> dict:
    spec = {"selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                         "spec": {"containers": [{"name": "c", "image": "example/none:1"}]}}}
    if replicas is not None:
        spec["replicas"] = replicas
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
            "spec": spec}


def _apply(apps, body: dict, manager: str = "mlops", force: bool = True, **kw):
    return apps.patch_namespaced_deployment(body["metadata"]["name"], "sem", body, field_manager=manager,
                                            force=force, _content_type="application/apply-patch+yaml", **kw)


def test_label_selectors_equality_and_set_based(apis):
    apps, _ = apis
    _apply(apps, _deployment("sel-a", {"tier": "web", "env": "prod"}, replicas=0))
    _apply(apps, _deployment("sel-b", {"tier": "db", "env": "dev"}, replicas=0))
    _apply(apps, _deployment("sel-c", {"tier": "web"}, replicas=0))

    def names(selector: str) -> list[str]:
        return sorted(d.metadata.name for d in apps.list_namespaced_deployment("sem", label_selector=selector).items
                      if d.metadata.name.startswith("sel-"))

    assert names("tier=web") == ["sel-a", "sel-c"]
    assert names("tier==web,env=prod") == ["sel-a"]
    assert names("tier!=web") == ["sel-b"]
    assert names("env in (prod, dev)") == ["sel-a", "sel-b"]
    assert names("tier notin (web)") == ["sel-b"]
    assert names("env") == ["sel-a", "sel-b"]
    assert names("!env") == ["sel-c"]


def test_server_side_apply_creates_merges_by_manager_and_conflicts_without_force(apis):
    apps, _ = apis
    created = _apply(apps, _deployment("ssa", {"a": "1"}, replicas=2))
    assert created.metadata.uid and created.metadata.generation == 1 and created.metadata.resource_version
    # Another manager owns a label of its own; our re-apply keeps it and drops what we stopped sending.
    other = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "ssa", "labels": {"theirs": "x"}}}
    _apply(apps, other, manager="someone-else", force=False)
    again = _apply(apps, _deployment("ssa", {"b": "2"}, replicas=2))
    assert again.metadata.labels == {"b": "2", "theirs": "x"}
    assert again.metadata.generation == 1, "labels are not spec: generation stays"
    # (The real Deployment controller also owns what it wrote through /status by then, or not yet.)
    assert {m.manager for m in again.metadata.managed_fields if m.subresource != "status"} == {"mlops", "someone-else"}
    # A field we own, changed by another manager: 409 without force, ownership moves with force.
    with pytest.raises(client.exceptions.ApiException) as err:
        _apply(apps, _deployment("ssa", {}, replicas=5), manager="someone-else", force=False)
    assert err.value.status == 409 and "conflict" in json.loads(err.value.body)["message"].lower()
    forced = _apply(apps, _deployment("ssa", {}, replicas=5), manager="someone-else", force=True)
    assert forced.spec.replicas == 5 and forced.metadata.generation == 2


def test_dry_run_persists_nothing(apis):
    apps, _ = apis
    answer = _apply(apps, _deployment("dry", {}), dry_run="All")
    assert answer.metadata.name == "dry"
    with pytest.raises(client.exceptions.ApiException) as err:
        apps.read_namespaced_deployment("dry", "sem")
    assert err.value.status == 404
    body = json.loads(err.value.body)
    assert body["kind"] == "Status" and body["reason"] == "NotFound" and body["message"] == \
        'deployments.apps "dry" not found'


def test_create_twice_is_409_already_exists(apis):
    _, core = apis
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "twice"}, "stringData": {"k": "v"}}
    made = core.create_namespaced_secret("sem", secret)
    assert made.data == {"k": base64.b64encode(b"v").decode()}
    with pytest.raises(client.exceptions.ApiException) as err:
        core.create_namespaced_secret("sem", secret)
    assert err.value.status == 409 and json.loads(err.value.body)["reason"] == "AlreadyExists"


def test_deletion_propagates_to_what_an_object_owns_and_status_is_a_subresource(api_cluster, apis):
    apps, core = apis
    _apply(apps, _deployment("owned", {}, replicas=2))
    deadline = time.monotonic() + 60
    while len(core.list_namespaced_pod("sem", label_selector="app=owned").items) < 2:
        assert time.monotonic() < deadline, "the controllers made no pods"
        time.sleep(0.1)
    while (d := apps.read_namespaced_deployment("owned", "sem")).status.observed_generation != d.metadata.generation:
        assert time.monotonic() < deadline, "the Deployment controller never observed the generation"
        time.sleep(0.1)   # the real controller writes its status after the pods exist
    # Writing status through the main resource is ignored; through /status it lands.
    apps.patch_namespaced_deployment("owned", "sem", {"status": {"replicas": 99}})
    assert apps.read_namespaced_deployment("owned", "sem").status.replicas != 99
    apps.delete_namespaced_deployment("owned", "sem", propagation_policy="Background")
    # The real garbage collector works from its informers, a moment later (the double: at once).
    deadline = time.monotonic() + 60
    while apps.list_namespaced_replica_set("sem", label_selector="app=owned").items or \
            core.list_namespaced_pod("sem", label_selector="app=owned").items:
        assert time.monotonic() < deadline, "what the Deployment owned is still there"
        time.sleep(0.2)


# -- the provider on the double -------------------------------------------------------------------------
def test_connect_failures_are_one_line_naming_the_kubeconfig_and_context(api_double, tmp_path: Path):
    with pytest.raises(Unreachable) as err:
        make_provider(api_double, tmp_path, kubeconfig=str(tmp_path / "missing"))
    assert "missing" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(Unreachable) as err:
        make_provider(api_double, tmp_path, context="nope")
    assert "context 'nope'" in str(err.value) and "\n" not in str(err.value)


def _seed(provider: KubernetesProvider, count: int, offset: int = 0) -> None:
    """Services applied the way apply writes them (replicas 0: nothing to run)."""
    provider._ensure_namespace()
    for i in range(offset, offset + count):
        name = f"svc-{i:03d}"
        spec = {"deploy": schema.normalize({"replicas": 0}), "image": f"r/p/{name}:1"}
        keys = {"primary": "k" * 20, "secondary": "s" * 20}
        svc = provider._service(name, spec, image=f"r/p/{name}@sha256:" + "b" * 64, model_dir="/m",
                                entry_script="score.py", fingerprint="f" * 64, sensitive=(), keys=keys)
        for obj in manifests.objects(svc):
            provider.cluster.apply(obj)


def test_live_read_costs_the_same_requests_for_20_and_200_services(api_double, tmp_path: Path):
    provider = make_provider(api_double, tmp_path, project="many")
    _seed(provider, 20)
    before = len(api_double.requests)
    assert len(provider.read()) == 20
    small = len(api_double.requests) - before
    _seed(provider, 180, offset=20)
    time.sleep(0.5)   # the controllers settle the new Deployments
    before = len(api_double.requests)
    found = provider.read()
    large = len(api_double.requests) - before
    assert len(found) == 200 and all(lv.status == HEALTHY for lv in found)
    assert large == small <= 4, (small, large)


def test_unschedulable_is_never_replaced_and_fpga_plans_warn_until_a_node_offers_it(api_cluster, tmp_path: Path):
    provider = make_provider(api_cluster, tmp_path, kind=FpgaProvider, project="fp", target="fpga",
                             resource="example.com/fpga-test")
    rules = provider.rules(None, None)
    assert UNSCHEDULABLE not in rules.replace_on and {FAILED, UNHEALTHY} <= rules.replace_on

    class Desired:   # what validate reads of a desired service
        address = type("A", (), {"name": "accel"})()
        inputs: dict = {}
        spec = {"deploy": schema.normalize({})}

    warnings = provider.validate([Desired()])   # type: ignore[list-item]
    assert len(warnings) == 1 and "example.com/fpga-test" in warnings[0] and "accel" in warnings[0]
    api_cluster.add_node("fpga-test-node", allocatable={"example.com/fpga-test": "2"})
    assert provider.validate([Desired()]) == []   # type: ignore[list-item]


def _dep(generation=2, observed=2, replicas=2, updated=2, total=2, available=2, deadline=False):
    conditions = [{"type": "Progressing", "status": "False" if deadline else "True",
                   "reason": "ProgressDeadlineExceeded" if deadline else "ReplicaSetUpdated", "message": "m"}]
    return {"metadata": {"generation": generation, "uid": "d", "annotations": {}}, "spec": {"replicas": replicas},
            "status": {"observedGeneration": observed, "updatedReplicas": updated, "replicas": total,
                       "availableReplicas": available, "conditions": conditions}}


def test_rollout_follows_kubectl_rules():
    assert not rollout(_dep(generation=3)).done
    assert rollout(_dep(deadline=True)).failed
    assert not rollout(_dep(updated=1)).done
    assert not rollout(_dep(total=3)).done
    assert not rollout(_dep(available=1)).done
    assert rollout(_dep()).done


def test_pod_states_map_to_the_seed_states():
    rs = {"metadata": {"uid": "rs", "ownerReferences": [{"uid": "d"}], "annotations": {}}}

    def pod(**status):
        return {"metadata": {"name": "p", "ownerReferences": [{"uid": "rs"}]}, "status": status}

    waiting = _dep(available=0)
    crash = pod(containerStatuses=[{"ready": False, "restartCount": 3, "state": {"waiting": {
        "reason": "CrashLoopBackOff"}}, "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}])
    pull = pod(containerStatuses=[{"state": {"waiting": {"reason": "ImagePullBackOff", "message": "no such"}}}])
    pending = pod(conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "x"}])
    assert assess(waiting, [rs], [crash], {}).health.state == UNHEALTHY
    assert "OOMKilled" in assess(waiting, [rs], [crash], {}).health.message
    assert assess(waiting, [rs], [pull], {}).health.state == FAILED
    found = assess(waiting, [rs], [pending], {"p": "0/3 nodes are available: 3 Insufficient amd.com/x."})
    assert found.health.state == UNSCHEDULABLE and "3 Insufficient amd.com/x" in found.health.message
    assert assess(waiting, [rs], [pod()], {}).health.state == TRANSITIONING
    assert assess(_dep(deadline=True), [rs], [], {}).health.state == FAILED


def test_the_lease_admits_one_holder_names_it_and_expires(api_cluster, tmp_path: Path):
    provider = make_provider(api_cluster, tmp_path, project="locked")
    provider._ensure_namespace()
    first = LeaseLock(provider.cluster, "ml", "locked", "mlops apply (runner 1)", timeout_s=1)
    second = LeaseLock(provider.cluster, "ml", "locked", "mlops apply (runner 2)", timeout_s=1)
    with first.held():
        with pytest.raises(LockedError) as err, second.held():
            pass
        assert "runner 1" in str(err.value)
    with second.held():   # released: the next one gets it at once
        pass
    # A holder that died: its renewTime is old, so the Lease is taken over.
    stale = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    dead = LeaseLock(provider.cluster, "ml", "locked", "mlops apply (dead runner)")
    body = dead._body(dt.datetime.now(dt.UTC))
    body["spec"]["renewTime"] = body["spec"]["acquireTime"] = stale
    provider.cluster.apply(body, force=False, manager=dead.manager)
    with second.held():
        lease = provider.cluster.get("Lease", "mlops-lock-locked", "ml")
        assert "runner 2" in lease["spec"]["holderIdentity"]


def test_two_lease_writers_racing_for_a_free_lease_cannot_both_win(api_cluster, tmp_path: Path):
    provider = make_provider(api_cluster, tmp_path, project="race")
    provider._ensure_namespace()
    locks = [LeaseLock(provider.cluster, "ml", "race", f"runner {i}", timeout_s=0) for i in range(4)]
    holding, most, won = [0], [0], []
    guard = threading.Lock()
    start = threading.Barrier(len(locks))

    def take(lock: LeaseLock) -> None:
        start.wait()
        try:
            with lock.held():
                with guard:
                    holding[0] += 1
                    most[0] = max(most[0], holding[0])
                    won.append(lock.identity)
                time.sleep(0.3)
                with guard:
                    holding[0] -= 1
        except LockedError:
            pass

    threads = [threading.Thread(target=take, args=(lock,)) for lock in locks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert won and most[0] == 1, f"{len(won)} won, {most[0]} held the Lease at once"


def test_foreign_deployment_with_the_same_name_is_not_taken_over(api_cluster, apis, tmp_path: Path):
    apps, _ = apis
    provider = make_provider(api_cluster, tmp_path, project="careful")
    provider._ensure_namespace()
    apps.patch_namespaced_deployment("theirs", "ml", {**_deployment("theirs", {"owner": "someone"}, replicas=0),
                                                      "metadata": {"name": "theirs", "namespace": "ml"}},
                                     field_manager="kubectl", force=True, _content_type="application/apply-patch+yaml")
    with pytest.raises(Exception) as err:
        provider._check_not_foreign("theirs")
    assert "not managed by mlops" in str(err.value)
    with pytest.raises(Conflict):
        provider.cluster.apply({**_deployment("theirs", {}, replicas=3),
                                "metadata": {"name": "theirs", "namespace": "ml"}}, force=False)


def test_render_prints_the_objects_apply_sends_with_secrets_redacted(tmp_path: Path, monkeypatch):
    import shutil

    import git
    from support import ROOT, run_cli

    root = tmp_path / "repo"
    shutil.copytree(ROOT / "examples" / "kubernetes", root)
    manifest = root / "ml.yaml"
    manifest.write_text(manifest.read_text().replace("auth: key", "auth: key\n      primary_key: ${K8S_TEST_KEY}"))
    # Offline: no shared model registry (its host is made up here), the embedded one numbers the model.
    manifest.write_text(re.sub(r"^registry:.*\n(?:  .*\n)*", "", manifest.read_text(), flags=re.M))
    repo = git.Repo.init(root)
    repo.git.add(A=True)
    repo.index.commit("initial")
    monkeypatch.setenv("MLOPS_TEST_REGISTRY", "registry.example:5000")
    monkeypatch.setenv("K8S_TEST_KEY", "a-very-secret-primary-key")
    result = run_cli("render", "-f", str(manifest))
    assert result.code == 0, result.err
    docs = [d for d in yaml.safe_load_all(result.out) if d]
    assert [d["kind"] for d in docs] == ["Secret", "Deployment", "Service"]
    assert docs[0]["data"] == {"primary_key": "(sensitive)", "secondary_key": "(sensitive)"}
    assert "a-very-secret-primary-key" not in result.out
    container = docs[1]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"].startswith("registry.example:5000/diabetes/diabetes-api:")
    for obj in docs:
        kubernetes_validate.validate(obj, NEWEST, strict=True)


def test_an_unreachable_aks_target_says_how_to_get_its_credentials(api_double, tmp_path: Path):
    from providers.kubernetes import AksProvider

    with pytest.raises(Unreachable) as err:
        make_provider(api_double, tmp_path, kind=AksProvider, kubeconfig=str(tmp_path / "none"),
                      resource_group="ml-rg", cluster="prod-aks")
    assert "az aks get-credentials --resource-group ml-rg --name prod-aks" in str(err.value)


def test_autoscale_hands_replicas_to_the_hpa_and_dropping_it_removes_the_hpa(api_cluster, tmp_path: Path):
    provider = make_provider(api_cluster, tmp_path, project="auto")
    provider._ensure_namespace()
    keys = {"primary": "k" * 20, "secondary": "s" * 20}

    def applied(deploy: dict) -> None:
        spec = {"deploy": schema.normalize(deploy), "image": "r/p/auto:1"}
        svc = provider._service("auto", spec, image="r/p/auto@sha256:" + "c" * 64, model_dir="/m",
                                entry_script="score.py", fingerprint="f" * 64, sensitive=(), keys=keys)
        provider._write_service(svc, None)   # as create and update write a service

    applied({"autoscale": {"min_replicas": 2, "max_replicas": 4}})
    hpa = provider.cluster.get("HorizontalPodAutoscaler", "auto", "ml")
    assert hpa["spec"]["minReplicas"] == 2 and hpa["spec"]["scaleTargetRef"]["name"] == "auto"
    deployment = provider.cluster.get("Deployment", "auto", "ml")
    mine = next(m for m in deployment["metadata"]["managedFields"] if m["manager"] == "mlops")
    assert "f:replicas" not in mine["fieldsV1"]["f:spec"], "the HPA must own replicas, not us"
    applied({"replicas": 3})
    assert provider.cluster.get("Deployment", "auto", "ml")["spec"]["replicas"] == 3
    assert not provider.cluster.list("HorizontalPodAutoscaler", "ml", labels="mlops.dev/project=auto")


def test_new_keys_roll_the_pods_and_the_template_never_carries_them():
    old, new = _service(), manifests.Service(**{**_service().__dict__, "keys": {"primary": "p" * 20,
                                                                                   "secondary": "s" * 20}})
    template = [manifests.deployment(s)["spec"]["template"] for s in (old, new)]
    assert template[0] != template[1], "pods read the keys at start: new keys must change the pod template"
    assert "primary-key-value-123" not in json.dumps(template[0])


def test_a_deployment_scaled_behind_our_back_shows_in_the_live_spec_and_apply_takes_it_back(api_cluster, apis,
                                                                                               tmp_path: Path):
    apps, _ = apis
    provider = make_provider(api_cluster, tmp_path, project="drifty")
    spec = {"deploy": schema.normalize({"replicas": 0}), "image": "r/p/drifty:1"}
    keys = {"primary": "k" * 20, "secondary": "s" * 20}
    svc = provider._service("drifty", spec, image="r/p/drifty@sha256:" + "d" * 64, model_dir="/m",
                            entry_script="score.py", fingerprint="f" * 64, sensitive=(), keys=keys)
    provider._ensure_namespace()
    for obj in manifests.objects(svc):
        provider.cluster.apply(obj)
    assert "drift" not in provider.read()[0].spec
    apps.patch_namespaced_deployment("drifty", "ml", {"spec": {"replicas": 4}}, field_manager="kubectl-scale")
    live = provider.read()[0]
    assert live.spec["drift"] == "changed in the cluster: spec.replicas is 4, not 0"
    for obj in manifests.objects(svc):   # what apply sends: SSA with force takes the field back
        provider.cluster.apply(obj)
    assert "drift" not in provider.read()[0].spec


def test_two_targets_sharing_a_namespace_take_their_own_leases(api_cluster, tmp_path: Path):
    one = make_provider(api_cluster, tmp_path, project="shared", target="k8s", lock_timeout_s=0)
    two = make_provider(api_cluster, tmp_path, kind=FpgaProvider, project="shared", target="fpga", lock_timeout_s=0)
    with one.apply_lock("mlops apply"), two.apply_lock("mlops apply"):
        leases = {lease["metadata"]["name"] for lease in one.cluster.list("Lease", "ml")}
        assert {"mlops-lock-shared-k8s", "mlops-lock-shared-fpga"} <= leases
        with pytest.raises(LockedError), make_provider(api_cluster, tmp_path, project="shared",
                                                       lock_timeout_s=0).apply_lock("mlops apply (runner 2)"):
            pass


def test_a_device_on_a_node_the_selector_excludes_still_warns(api_cluster, tmp_path: Path):
    provider = make_provider(api_cluster, tmp_path, kind=FpgaProvider, project="sel", target="fpga",
                             resource="example.com/selected-fpga", node_selector={"accelerator": "u250"})

    class Desired:
        address = type("A", (), {"name": "accel"})()
        inputs: dict = {}
        spec = {"deploy": schema.normalize({})}

    api_cluster.add_node("fpga-wrong-labels", allocatable={"example.com/selected-fpga": "1"})
    warnings = provider.validate([Desired()])   # type: ignore[list-item]
    assert warnings and "0 matching the node_selector" in warnings[0]
    api_cluster.add_node("fpga-right-labels", labels={"accelerator": "u250"},
                        allocatable={"example.com/selected-fpga": "1"})
    assert provider.validate([Desired()]) == []   # type: ignore[list-item]


def test_an_untrusted_server_certificate_is_one_line(api_double, tmp_path: Path):
    other = yaml.safe_load(api_double.kubeconfig.read_text())
    other["clusters"][0]["cluster"]["certificate-authority-data"] = base64.b64encode(
        (api_double.state_dir / "pki" / "client.crt").read_bytes()).decode()   # not the CA that signed it
    wrong = tmp_path / "wrong-ca"
    wrong.write_text(yaml.safe_dump(other))
    with pytest.raises(Unreachable) as err:
        make_provider(api_double, tmp_path, kubeconfig=str(wrong))
    assert "not trusted" in str(err.value) and "\n" not in str(err.value)


def test_a_machine_without_the_keys_takes_them_from_the_cluster_never_new_ones(api_cluster, apis, tmp_path: Path,
                                                                               monkeypatch):
    """A fresh CI runner (or a reconciler replica) applying a key-auth service must keep the keys clients
    hold: they are in the service's key Secret, not in that machine's key store."""
    from planner.addresses import Address
    from planner.resources import Resource

    _, core = apis
    with contextlib.suppress(client.ApiException):
        core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ml"}})
    with contextlib.suppress(client.ApiException):
        core.delete_namespaced_secret(manifests.key_secret_name("keyed"), "ml")
    held = {"primary": "clients-hold-this-primary-0123", "secondary": "clients-hold-this-secondary-0123"}
    core.create_namespaced_secret("ml", {"metadata": {"name": manifests.key_secret_name("keyed")},
                                         "data": {f"{k}_key": base64.b64encode(v.encode()).decode()
                                                  for k, v in held.items()}})
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "fresh-runner-data"))   # an empty key store
    provider = make_provider(api_cluster, tmp_path / "fresh-checkout", project="keys")
    desired = Resource(Address("service", "keyed"), {"deploy": {"auth": "key"}}, target="k8s")
    assert provider._keys(desired) == held
    assert provider.keys.load("keyed") == held, "kept in this machine's store for the next commands"
    fresh = Resource(Address("service", "never-deployed"), {"deploy": {"auth": "key"}}, target="k8s")
    made = provider._keys(fresh)
    assert made["primary"] and made["primary"] not in held.values(), "a new service still gets new keys"
