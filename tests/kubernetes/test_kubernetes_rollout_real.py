"""SplitsTraffic on the real control plane of .ci/kube-up.sh (its node agent runs the pods in Docker).

- Without a router: the canary Deployment becomes Ready, the replica ratio is what the real
  controllers run, the service proxy answers from both versions, each version's metrics come
  through the real pod proxy from the probe port, and abort brings the stable version back.
- With a router: the vendored Gateway API HTTPRoute CRD (.ci/kube/crds) is installed, so the real
  API server validates every route a rollout writes (weights, RequestMirror percent) against the
  real schema and its CEL rules; then promote. No Gateway controller runs: routes are stored, not served.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
import uuid
from pathlib import Path

import pytest
import yaml
from k8s_fixtures import engine_and_registry_or_skip
from kubernetes import client, config
from real_cluster import shared_cluster
from support import ROOT
from test_kubernetes_rollout import CANNOT_ANSWER, _live, _stable_then_second_model, applied, manifest_text

from planner.core.events import Events
from planner.core.resources import RolloutState, spec_fingerprint
from planner.errors import ProviderError
from providers.kubernetes import manifests

pytestmark = [pytest.mark.slow, pytest.mark.docker]

CRD = ROOT / ".ci" / "kube" / "crds" / "gateway.networking.k8s.io_httproutes.yaml"
GROUP = "gateway.networking.k8s.io"


@pytest.fixture(scope="module")
def cluster():
    engine_and_registry_or_skip()
    return shared_cluster()


@pytest.fixture
def kube(cluster, monkeypatch):
    """The cluster's APIs; this test's own namespace (the machine's cluster: others may use it too)."""
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    namespace = f"ror-{uuid.uuid4().hex[:6]}"
    api = config.new_client_from_config(str(cluster.kubeconfig))
    yield namespace, client.AppsV1Api(api), client.CoreV1Api(api), client.CustomObjectsApi(api), api
    with contextlib.suppress(Exception):
        client.CoreV1Api(api).delete_namespace(namespace)


@pytest.fixture(scope="module")
def httproute_crd(cluster):
    """The Gateway API's HTTPRoute CRD in the real API server, Established (removed after if installed here)."""
    ext = client.ApiextensionsV1Api(config.new_client_from_config(str(cluster.kubeconfig)))
    body = yaml.safe_load(CRD.read_text())
    name = body["metadata"]["name"]
    created = False
    try:
        ext.read_custom_resource_definition(name)
    except client.ApiException as exc:
        assert exc.status == 404, exc
        ext.create_custom_resource_definition(body)
        created = True
    deadline = time.monotonic() + 60
    while not any(c.type == "Established" and c.status == "True"
                  for c in (ext.read_custom_resource_definition(name).status.conditions or [])):
        assert time.monotonic() < deadline, "the HTTPRoute CRD is not Established after 60 s"
        time.sleep(0.5)
    yield name
    if created:
        with contextlib.suppress(Exception):
            ext.delete_custom_resource_definition(name)


def _manifest(namespace: str, **kw) -> str:
    return manifest_text(f"ror-{uuid.uuid4().hex[:6]}", **kw).replace("namespace: ro,", f"namespace: {namespace},")


def _replicas(apps, namespace: str, name: str) -> int:
    return apps.read_namespaced_deployment(name, namespace).spec.replicas


def test_replica_ratio_canary_metrics_and_abort_on_the_real_control_plane(kube, tmp_path: Path):
    namespace, apps, _core, _custom, _api = kube
    with applied(tmp_path / "repo", _manifest(namespace)) as (manifest, f):
        stable_live, provider, desired = _stable_then_second_model(manifest)
        v1, v2 = spec_fingerprint(stable_live.spec), spec_fingerprint(desired.spec)
        state = RolloutState(candidate=v2, stable=v1, phase="canary", step=-1)
        live = provider.start_candidate(desired, stable_live, state, Events())
        assert live.rollout == state and _replicas(apps, namespace, "echo-api-canary") == 0

        step = dataclasses.replace(state, step=0, weight=50.0)
        live = provider.set_traffic(live, step, Events())
        assert (_replicas(apps, namespace, "echo-api"), _replicas(apps, namespace, "echo-api-canary")) == (1, 2)
        candidate = live.versions[1]
        assert candidate.spec_fingerprint == v2 and candidate.health.state == "Healthy" and candidate.health.ready == 2
        answers = set()
        for _ in range(30):
            status, body, _where = provider.call(live, b'{"x": 1}')
            assert status == 200, body
            answers.add(json.loads(body)["model"])
        assert answers == {"v1", "v2"}, "the one Service's endpoints are both versions' pods"
        live = _live(provider)
        for version in (v1, v2):
            text = provider.metrics(live, version)
            assert text and f'version="{version}"' in text and "mlops_request_duration_seconds_bucket" in text
            named = {line.split('instance="', 1)[1].split('"', 1)[0] for line in text.splitlines()
                     if line.startswith("mlops_")}
            assert named and named <= set(live.details["serving"][version]), "each series names its pod"

        aborted = provider.abort(live, dataclasses.replace(step, phase="aborted", reason="error rate 20% > 1%"),
                                 Events())
        assert aborted.rollout.phase == "aborted" and aborted.rollout.reason == "error rate 20% > 1%"
        assert _replicas(apps, namespace, "echo-api") == 3 and aborted.status == "Healthy"
        assert [v.spec_fingerprint for v in aborted.versions] == [v1]
        assert "echo-api-canary" not in {d.metadata.name for d in apps.list_namespaced_deployment(namespace).items}


def test_a_failed_promote_leaves_the_stable_deployment_the_stable_version_on_the_real_control_plane(
        kube, tmp_path: Path):
    """Promote rewrites the stable Deployment to a candidate that is Ready but answers nothing: the real
    Deployment controller must take it back to the stable version's ReplicaSet before promote fails, and
    abort then leaves the stable version alone serving."""
    namespace, apps, _core, _custom, _api = kube

    def stable_version() -> str:
        annotations = apps.read_namespaced_deployment("echo-api", namespace).metadata.annotations
        return spec_fingerprint(json.loads(annotations[manifests.label("spec")]))

    with applied(tmp_path / "repo", _manifest(namespace, replicas=2)) as (manifest, _f):
        (manifest.parent / "src" / "score.py").write_text(CANNOT_ANSWER)
        stable_live, provider, desired = _stable_then_second_model(manifest)
        v1, v2 = spec_fingerprint(stable_live.spec), spec_fingerprint(desired.spec)
        state = RolloutState(candidate=v2, stable=v1, phase="canary", step=0, weight=50.0)
        live = provider.start_candidate(desired, stable_live, state, Events())
        live = provider.set_traffic(live, state, Events())
        with pytest.raises(ProviderError, match=r"promoting failed \(Unhealthy: sample request answered 5\d\d"):
            provider.promote(live, desired, Events())
        assert stable_version() == v1
        after = _live(provider)
        assert after.rollout == state and [v.spec_fingerprint for v in after.versions] == [v1, v2]
        assert after.versions[0].health.state == "Healthy" and _replicas(apps, namespace, "echo-api") == 1
        aborted = provider.abort(after, dataclasses.replace(state, phase="aborted", reason="promote failed"),
                                 Events())
        assert stable_version() == v1 and [v.spec_fingerprint for v in aborted.versions] == [v1]
        assert aborted.status == "Healthy" and aborted.health.ready == 2
        for _ in range(6):
            status, body, _where = provider.call(aborted, b'{"x": 1}')
            assert status == 200 and json.loads(body)["model"] == "v1", body


def test_httproute_weights_and_mirror_pass_the_real_crd_then_promote(kube, httproute_crd, tmp_path: Path):
    namespace, apps, core, custom, _api = kube
    text = _manifest(namespace, replicas=2, extra_target=", gateway: {name: edge}")

    def route() -> dict:
        return custom.get_namespaced_custom_object(GROUP, "v1", namespace, "httproutes", "echo-api")

    with applied(tmp_path / "repo", text) as (manifest, f):
        assert route()["spec"]["parentRefs"][0] == {"group": GROUP, "kind": "Gateway", "name": "edge",
                                                    "namespace": namespace}
        stable_live, provider, desired = _stable_then_second_model(manifest)
        state = RolloutState(candidate=spec_fingerprint(desired.spec), stable=spec_fingerprint(stable_live.spec),
                             phase="mirror", mirror=20.0)
        live = provider.start_candidate(desired, stable_live, state, Events())
        assert live.versions[1].health.ready == 1, "behind a router the candidate is Ready before any share"
        mirror = [x for x in route()["spec"]["rules"][0]["filters"] if x["type"] == "RequestMirror"]
        assert mirror[0]["requestMirror"]["percent"] == 20

        live = provider.set_traffic(live, dataclasses.replace(state, phase="canary", step=0, weight=30.0, mirror=0.0),
                                    Events())
        assert [(b["name"], b["weight"]) for b in route()["spec"]["rules"][0]["backendRefs"]] == \
            [("echo-api", 70), ("echo-api-canary", 30)]
        # The schema is really enforced: the same route with a mirror of 150 % is refused.
        bad = route()
        bad["spec"]["rules"][0]["filters"].append({"type": "RequestMirror", "requestMirror": {
            "backendRef": {"name": "echo-api-canary", "port": 80}, "percent": 150}})
        with pytest.raises(client.ApiException) as refused:
            custom.replace_namespaced_custom_object(GROUP, "v1", namespace, "httproutes", "echo-api", bad)
        assert refused.value.status == 422

        promoted = provider.promote(live, desired, Events())
        assert promoted.rollout is None and promoted.health.ready == 2
        assert [b["name"] for b in route()["spec"]["rules"][0]["backendRefs"]] == ["echo-api"]
        assert "echo-api-canary" not in {s.metadata.name for s in core.list_namespaced_service(namespace).items}
        status, body, _where = provider.call(promoted, b'{"x": 1}')
        assert status == 200 and json.loads(body)["model"] == "v2"
