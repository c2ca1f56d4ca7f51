"""SplitsTraffic on Kubernetes against the API double with its kubelet (pods run for real in the Docker
engine, requests really go through the double's service and pod proxies).

One echo service at 3 replicas: v1 is applied through the CLI, v2 (another model file) is the
candidate driven through the provider's capability the way the rollout driver drives it: start,
steps, an interrupted step resumed, a fresh runner reading where the rollout stands, abort,
clear, and a second rollout promoted. The real control plane's version is test_kubernetes_rollout_real.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from k8s_fixtures import engine_and_registry_or_skip, running_double
from kubernetes import client, config
from support import ECHO_SCORE, echo_manifest, make_project, run_cli

from planner.core.events import Events
from planner.core.resources import RolloutState, spec_fingerprint
from planner.errors import CancelledError, ProviderError
from planner.project import Project
from providers.base import ensure_connected
from providers.kubernetes import KubernetesProvider, canary, manifests

pytestmark = [pytest.mark.slow, pytest.mark.docker]

NS = "ro"


def manifest_text(project: str, *, replicas: int = 3, extra_target: str = "", rollout: str = "") -> str:
    target = f'{{provider: kubernetes, namespace: {NS}, registry: "${{MLOPS_TEST_REGISTRY}}"{extra_target}}}'
    return echo_manifest(project, public_vars=["MLOPS_TEST_REGISTRY"], targets={"k8s": target}, target="k8s",
                         environment='{python: "3.11", pip: []}', rollout=rollout,
                         deploy=f"{{replicas: {replicas}, auth: key, cpu: 0.1, memory_gb: 0.25}}")


@contextlib.contextmanager
def applied(root: Path, text: str) -> Iterator[tuple[Path, list[str]]]:
    """The project of manifest ``text`` made at ``root`` and applied (v1) through the CLI, destroyed afterwards
    whatever happened: (its manifest, the ``-f`` arguments). Every test here starts from one."""
    manifest = make_project(root, text)
    f = ["-f", str(manifest)]
    try:
        first = run_cli("apply", "--auto-approve", *f)
        assert first.code == 0, first.out + first.err
        yield manifest, f
    finally:
        run_cli("destroy", "--auto-approve", *f)


@pytest.fixture(scope="module")
def double(tmp_path_factory):
    engine_and_registry_or_skip()
    with running_double(tmp_path_factory.mktemp("k8s-rollout"), kubelet=True) as running:
        yield running


@pytest.fixture
def apps(double, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(double.kubeconfig))
    cfg = client.Configuration()
    config.load_kube_config(str(double.kubeconfig), client_configuration=cfg)
    return client.AppsV1Api(client.ApiClient(cfg))


def _commit(root: Path, message: str) -> None:
    import git

    repo = git.Repo(root)
    repo.git.add(A=True)
    repo.index.commit(message)


def _provider_and_desired(manifest: Path) -> tuple[KubernetesProvider, object]:
    """What a fresh runner has: the manifest's desired service and a provider that knows nothing yet."""
    project = Project.load(manifest)
    [desired] = [r for a, r in project.desired().items() if a.kind == "service"]
    provider = project.provider_for("k8s")
    ensure_connected(provider)
    assert isinstance(provider, KubernetesProvider)
    return provider, desired


def _stable_then_second_model(manifest: Path) -> tuple[object, KubernetesProvider, object]:
    """The applied service as a fresh runner reads it, then a second model committed (``v2``): (the stable
    live service, a fresh runner's provider, and the candidate it desires): where every rollout starts."""
    provider, _ = _provider_and_desired(manifest)
    stable_live = _live(provider)
    (manifest.parent / "model.txt").write_text("v2\n")
    _commit(manifest.parent, "a second model")
    provider, desired = _provider_and_desired(manifest)
    return stable_live, provider, desired


def _live(provider: KubernetesProvider):
    [live] = provider.read()
    return live


def _answers(provider: KubernetesProvider, live, count: int) -> list[str]:
    out = []
    for _ in range(count):
        status, body, _where = provider.call(live, b'{"x": 1}')
        assert status == 200, body
        out.append(json.loads(body)["model"])
    return out


def _settle_pods(apps, count: int, timeout: float = 30) -> None:
    """Wait until the service has exactly ``count`` pods (a scaled-down one leaves the API a tick later)."""
    import time

    core = client.CoreV1Api(apps.api_client)
    deadline = time.monotonic() + timeout
    while len(core.list_namespaced_pod(NS, label_selector="mlops.dev/service=echo-api").items) != count:
        assert time.monotonic() < deadline, f"the service does not settle at {count} pods"
        time.sleep(0.2)


def _replicas(apps, name: str) -> int:
    return apps.read_namespaced_deployment(name, NS).spec.replicas


def test_canary_lifecycle_start_steps_resume_abort_clear_and_promote(double, apps, tmp_path: Path):
    with applied(tmp_path / "repo", manifest_text(f"ro-{uuid.uuid4().hex[:6]}")) as (manifest, f):
        stable_live, provider, desired = _stable_then_second_model(manifest)
        assert stable_live.rollout is None and len(stable_live.versions) == 1
        v1, v2 = spec_fingerprint(stable_live.spec), spec_fingerprint(desired.spec)
        state = RolloutState(candidate=v2, stable=v1, phase="canary", step=-1, weight=0.0,
                             policy={"strategy": "canary"})

        # Start: the candidate's Deployment beside the stable one; no pod yet without a router.
        live = provider.start_candidate(desired, stable_live, state, Events())
        assert live.rollout == state
        assert [v.spec_fingerprint for v in live.versions] == [v1, v2]
        assert [v.traffic for v in live.versions] == [1.0, 0.0]
        assert _replicas(apps, "echo-api") == 3 and _replicas(apps, "echo-api-canary") == 0
        generation = apps.read_namespaced_deployment("echo-api-canary", NS).metadata.generation
        again = provider.start_candidate(desired, live, state, Events())   # an idempotent repeat
        assert again.rollout == state
        assert apps.read_namespaced_deployment("echo-api-canary", NS).metadata.generation == generation

        # Step 1, 10 %: one candidate pod of 3 (the coarsest the ratio allows), the stable loses one.
        step1 = dataclasses.replace(state, step=0, weight=10.0)
        live = provider.set_traffic(again, step1, Events())
        assert (_replicas(apps, "echo-api"), _replicas(apps, "echo-api-canary")) == (2, 1)
        assert live.rollout == step1 and live.versions[1].health.ready == 1
        _settle_pods(apps, 3)   # the third stable pod leaves a moment later; until then it still serves
        live = _live(provider)
        assert [v.traffic for v in live.versions] == pytest.approx([2 / 3, 1 / 3])
        answers = _answers(provider, live, 12)
        assert answers.count("v2") == 4 and answers.count("v1") == 8, answers   # the double's round robin
        text = provider.metrics(live, v2)
        assert text and f'version="{v2}"' in text and f'version="{v1}"' not in text
        instances = {re.search(r'instance="([^"]*)"', line).group(1) for line in text.splitlines()
                     if line.startswith("mlops_")}
        assert instances and instances <= set(live.details["serving"][v2]), "each series names its pod"
        served = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                     if line.startswith("mlops_requests_total{") and 'code="2xx"' in line)
        assert served >= 4
        assert f'version="{v1}"' in (provider.metrics(live, v1) or "")
        assert provider.metrics(live, "0" * 64) is None

        # Step 2, 50 %, interrupted while the new candidate pod starts: the stable has not shrunk.
        step2 = dataclasses.replace(step1, step=1, weight=50.0)
        cancelled = Events(cancel=threading.Event())
        cancelled.cancel.set()
        with pytest.raises(CancelledError):
            provider.set_traffic(live, step2, cancelled)
        assert (_replicas(apps, "echo-api"), _replicas(apps, "echo-api-canary")) == (2, 2)
        assert _live(provider).rollout == step1, "the state moves only when the step is done"
        # The next apply (a fresh runner) reads where it stands and repeats the step to its end.
        provider, desired = _provider_and_desired(manifest)
        resumed = _live(provider)
        assert resumed.rollout == step1 and resumed.details["canary"]["deployment"] == "echo-api-canary"
        live = provider.set_traffic(resumed, step2, Events())
        assert (_replicas(apps, "echo-api"), _replicas(apps, "echo-api-canary")) == (1, 2)
        assert live.rollout == step2
        assert provider.set_traffic(live, step2, Events()).rollout == step2   # idempotent
        assert (_replicas(apps, "echo-api"), _replicas(apps, "echo-api-canary")) == (1, 2)

        # Abort: the stable is back at 3 before the candidate goes; the state says why.
        aborted = provider.abort(live, dataclasses.replace(step2, phase="aborted", reason="p99 900 ms > 500 ms"),
                                 Events())
        assert aborted.rollout is not None and aborted.rollout.phase == "aborted"
        assert aborted.rollout.reason == "p99 900 ms > 500 ms" and aborted.rollout.weight == 0
        assert [v.spec_fingerprint for v in aborted.versions] == [v1]
        assert _replicas(apps, "echo-api") == 3
        assert "echo-api-canary" not in {d.metadata.name for d in apps.list_namespaced_deployment(NS).items}
        assert set(_answers(provider, aborted, 6)) == {"v1"}
        assert provider.abort(aborted, aborted.rollout, Events()).rollout.phase == "aborted"   # idempotent

        # Clear (mlops rollout retry): the state goes, nothing else changes.
        cleared = provider.clear(aborted, Events())
        assert cleared.rollout is None and _replicas(apps, "echo-api") == 3
        assert canary.ROLLOUT not in (apps.read_namespaced_deployment("echo-api", NS).metadata.annotations or {})

        # A second rollout, promoted: the stable Deployment runs v2 at full size, the canary is gone.
        live = provider.start_candidate(desired, cleared, state, Events())
        live = provider.set_traffic(live, dataclasses.replace(state, step=0, weight=50.0), Events())
        promoted = provider.promote(live, desired, Events())
        assert promoted.rollout is None and [v.spec_fingerprint for v in promoted.versions] == [v2]
        assert promoted.status == "Healthy" and promoted.health.ready == 3
        assert "echo-api-canary" not in {d.metadata.name for d in apps.list_namespaced_deployment(NS).items}
        assert set(_answers(provider, promoted, 6)) == {"v2"}
        planned = run_cli("plan", *f)   # (the model's version 2 itself is registered by an apply, not here)
        assert planned.code == 0 and "service.echo-api" not in planned.out, planned.out
        with pytest.raises(ProviderError, match="no candidate runs"):
            provider.set_traffic(promoted, state, Events())

        # A plain update (the rollout block gone) takes away a candidate an interrupted rollout left behind.
        provider.start_candidate(desired, promoted, state, Events())
        assert len(_live(provider).versions) == 2
        updated = provider.update(desired, _live(provider), Events())
        assert len(updated.versions) == 1 and updated.rollout is None
        assert "echo-api-canary" not in {d.metadata.name for d in apps.list_namespaced_deployment(NS).items}


def test_behind_a_gateway_the_route_weighs_and_mirrors_and_the_service_selects_the_stable_track(
        double, apps, tmp_path: Path):
    text = manifest_text(f"rg-{uuid.uuid4().hex[:6]}", replicas=2,
                         extra_target=", gateway: {name: edge, namespace: infra}")
    with applied(tmp_path / "repo", text) as (manifest, f):
        custom = client.CustomObjectsApi(apps.api_client)
        core = client.CoreV1Api(apps.api_client)

        def route() -> dict:
            return custom.get_namespaced_custom_object("gateway.networking.k8s.io", "v1", NS, "httproutes",
                                                       "echo-api")

        assert [b["name"] for b in route()["spec"]["rules"][0]["backendRefs"]] == ["echo-api"]
        assert core.read_namespaced_service("echo-api", NS).spec.selector[manifests.label("track")] == "stable"
        stable_live, provider, desired = _stable_then_second_model(manifest)
        state = RolloutState(candidate=spec_fingerprint(desired.spec), stable=spec_fingerprint(stable_live.spec),
                             phase="mirror", weight=0.0, mirror=20.0)
        live = provider.start_candidate(desired, stable_live, state, Events())
        assert _replicas(apps, "echo-api-canary") == 1, "behind a router the candidate is ready at 0 %"
        rule = route()["spec"]["rules"][0]
        assert [(b["name"], b["weight"]) for b in rule["backendRefs"]] == [("echo-api", 100)]
        [mirror] = [x for x in rule["filters"] if x["type"] == "RequestMirror"]
        assert mirror["requestMirror"] == {"backendRef": {"name": "echo-api-canary", "port": 80}, "percent": 20}
        selector = core.read_namespaced_service("echo-api-canary", NS).spec.selector
        assert selector[manifests.label("track")] == "canary"
        assert set(_answers(provider, live, 4)) == {"v1"}, "the Service itself selects the stable track only"

        live = provider.set_traffic(live, dataclasses.replace(state, phase="canary", step=0, weight=25.0,
                                                              mirror=0.0), Events())
        rule = route()["spec"]["rules"][0]
        assert [(b["name"], b["weight"]) for b in rule["backendRefs"]] == [("echo-api", 75), ("echo-api-canary", 25)]
        assert not [x for x in rule["filters"] if x["type"] == "RequestMirror"]
        assert live.versions[1].traffic == pytest.approx(0.25)
        promoted = provider.promote(live, desired, Events())
        assert [b["name"] for b in route()["spec"]["rules"][0]["backendRefs"]] == ["echo-api"]
        assert promoted.rollout is None and set(_answers(provider, promoted, 4)) == {"v2"}


def test_with_autoscale_the_hpa_is_set_aside_for_the_rollout_and_comes_back(double, apps, tmp_path: Path):
    text = manifest_text(f"ra-{uuid.uuid4().hex[:6]}").replace(
        "deploy: {replicas: 3,", "deploy: {autoscale: {min_replicas: 2, max_replicas: 4},")
    autoscaling = client.AutoscalingV2Api(apps.api_client)

    def hpas() -> list[str]:
        return [h.metadata.name for h in autoscaling.list_namespaced_horizontal_pod_autoscaler(NS).items]

    with applied(tmp_path / "repo", text) as (manifest, f):
        # What the HPA decided (the double runs no HPA controller: scaled here as it would).
        apps.patch_namespaced_deployment("echo-api", NS, {"spec": {"replicas": 3}},
                                         field_manager="horizontal-pod-autoscaler")
        stable_live, provider, desired = _stable_then_second_model(manifest)
        state = RolloutState(candidate=spec_fingerprint(desired.spec), stable=spec_fingerprint(stable_live.spec),
                             phase="canary")
        live = provider.start_candidate(desired, stable_live, state, Events())
        assert hpas() == [], "the HPA would fight the ratio: set aside"
        live = provider.set_traffic(live, dataclasses.replace(state, step=0, weight=50), Events())
        assert (_replicas(apps, "echo-api"), _replicas(apps, "echo-api-canary")) == (1, 2), "3, the HPA's count"
        aborted = provider.abort(live, dataclasses.replace(state, phase="aborted", reason="test"), Events())
        assert hpas() == ["echo-api"] and _replicas(apps, "echo-api") == 3
        live = provider.start_candidate(desired, provider.clear(aborted, Events()), state, Events())
        live = provider.set_traffic(live, dataclasses.replace(state, step=0, weight=50), Events())
        promoted = provider.promote(live, desired, Events())
        assert hpas() == ["echo-api"] and _replicas(apps, "echo-api") == 3 and promoted.health.ready == 3
        assert promoted.rollout is None


CANNOT_ANSWER = ECHO_SCORE.replace('    return {"model": prefix, "echo": json.loads(raw_data)}',
                                  '    raise RuntimeError(prefix + " cannot answer")')


def _stable_version(apps) -> str:
    """Which version the stable Deployment itself is (its spec annotation), whatever the rollout state says."""
    annotations = apps.read_namespaced_deployment("echo-api", NS).metadata.annotations or {}
    return spec_fingerprint(json.loads(annotations[manifests.label("spec")]))


def test_a_failed_promote_puts_the_stable_version_back_and_abort_restores_one_a_killed_promote_left(
        double, apps, tmp_path: Path):
    """The candidate's pods are Ready (a canary at 50 %) but it answers no request, so promote's sample
    request fails once the stable Deployment was rewritten: promote puts the stable version back before
    it fails, and abort (what the driver calls next) finds the stable version there. A promote killed
    after its rewrite (simulated: the candidate's Deployment applied to the stable name) is undone by
    abort from the record the rollout's start kept, though the caller's reading says the candidate."""
    with applied(tmp_path / "repo", manifest_text(f"rp-{uuid.uuid4().hex[:6]}", replicas=2)) as (manifest, _f):
        (manifest.parent / "src" / "score.py").write_text(CANNOT_ANSWER)
        stable_live, provider, desired = _stable_then_second_model(manifest)
        v1, v2 = spec_fingerprint(stable_live.spec), spec_fingerprint(desired.spec)
        state = RolloutState(candidate=v2, stable=v1, phase="canary", step=0, weight=50.0,
                             policy={"strategy": "canary"})
        live = provider.start_candidate(desired, stable_live, state, Events())
        live = provider.set_traffic(live, state, Events())
        assert (_replicas(apps, "echo-api"), _replicas(apps, "echo-api-canary")) == (1, 1)

        with pytest.raises(ProviderError, match=r"promoting failed \(Unhealthy: sample request answered 5\d\d") \
                as failed:
            provider.promote(live, desired, Events())
        assert _stable_version(apps) == v1, "the stable Deployment must not be left rolling to the candidate"
        assert "the stable version is back" in str(failed.value)
        assert (_replicas(apps, "echo-api"), _replicas(apps, "echo-api-canary")) == (1, 1)
        after = _live(provider)
        assert after.rollout == state and [v.spec_fingerprint for v in after.versions] == [v1, v2]
        aborted = provider.abort(after, dataclasses.replace(state, phase="aborted", reason="promote failed"),
                                 Events())
        assert [v.spec_fingerprint for v in aborted.versions] == [v1] and _replicas(apps, "echo-api") == 2
        _settle_pods(apps, 2)
        assert set(_answers(provider, _live(provider), 4)) == {"v1"}

        # Killed midway through a promote: the stable Deployment already says the candidate.
        live = provider.start_candidate(desired, provider.clear(aborted, Events()), state, Events())
        live = provider.set_traffic(live, state, Events())
        svc = provider._desired_service(desired, provider._pushed_image(desired, Events()), provider._keys(desired))
        provider._apply_objects([o for o in manifests.objects(svc) if o["kind"] == "Deployment"], None)
        killed = _live(provider)
        assert _stable_version(apps) == v2 and spec_fingerprint(killed.spec) == v2 and killed.rollout == state
        aborted = provider.abort(killed, dataclasses.replace(state, phase="aborted", reason="test"), Events())
        assert _stable_version(apps) == v1 and [v.spec_fingerprint for v in aborted.versions] == [v1]
        assert aborted.status == "Healthy" and aborted.health.ready == 2
        _settle_pods(apps, 2)
        assert set(_answers(provider, aborted, 4)) == {"v1"}


def test_validate_refuses_shadow_without_a_gateway_in_one_line(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("MLOPS_TEST_REGISTRY", "registry.example:5000")   # loaded, never pushed to
    manifest = make_project(tmp_path / "repo", manifest_text("ro-shadow"))
    assert KubernetesProvider.rollout_strategies({}) == frozenset({"canary", "blue_green"})
    assert "shadow" in KubernetesProvider.rollout_strategies({"gateway": {"name": "edge"}})
    project = Project.load(manifest)
    [desired] = [r for a, r in project.desired().items() if a.kind == "service"]
    shadow = dataclasses.replace(desired, inputs={**desired.inputs, "rollout": {
        "strategy": "shadow", "mirror": {"percent": 20, "hold": 5}, "steps": []}})
    canary_first = dataclasses.replace(desired, inputs={**desired.inputs, "rollout": {
        "strategy": "canary", "steps": [{"weight": 10, "hold": 5}]}})
    provider = project.providers["k8s"]
    with pytest.raises(ProviderError) as refused:
        provider.validate([shadow])
    assert "\n" not in str(refused.value)
    assert "service.echo-api: rollout strategy shadow needs a Gateway API router" in str(refused.value)
    [coarse] = provider.validate([canary_first])          # 3 replicas: 10% can only run as 1 of 3 pods
    assert coarse == ("service.echo-api: target 'k8s' has no gateway, so a canary's share is its replica ratio "
                      "with replicas: 3: 10% runs as 33% (1 of 3 pods); add replicas or a gateway for exact weights")
    routed = KubernetesProvider(target="k8s", config={**provider.config, "gateway": {"name": "edge"}},
                                context=provider.context)
    routed.validate([shadow])
    assert routed.validate([canary_first]) == []            # the HTTPRoute's weights are exact


@pytest.mark.parametrize(("total", "steps", "expected"), [
    (1, [10, 50], [(10, 50.0, (1, 1))]),                   # the coarsest canary: one pod of each
    (3, [10, 50, 100], [(10, 100 / 3, (2, 1)), (50, 200 / 3, (1, 2))]),
    (10, [10, 50], []), (20, [10, 25, 50], []),             # within 5 points: nothing to say
])
def test_coarse_steps_name_what_a_replica_ratio_cannot_honour(total, steps, expected):
    policy = {"strategy": "canary", "steps": [{"weight": w, "hold": 1} for w in steps]}
    found = [(w, share, (parts.stable, parts.canary)) for w, share, parts in canary.coarse_steps(policy, total)]
    assert found == [(w, pytest.approx(share), parts) for w, share, parts in expected]


@pytest.mark.parametrize(("total", "weight", "mirror", "routed", "expected"), [
    (3, 0, 0, False, (3, 0)), (3, 10, 0, False, (2, 1)), (3, 50, 0, False, (1, 2)), (3, 100, 0, False, (0, 3)),
    (1, 10, 0, False, (1, 1)), (10, 10, 0, False, (9, 1)), (10, 25, 0, False, (7, 3)), (4, 99, 0, False, (1, 4)),
    (3, 0, 20, True, (3, 1)), (4, 25, 0, True, (3, 1)), (4, 50, 0, True, (2, 2)), (2, 100, 0, True, (0, 2)),
])
def test_replica_split(total, weight, mirror, routed, expected):
    split = canary.split(total, weight, mirror, routed=routed)
    assert (split.stable, split.canary) == expected


def test_render_shows_the_candidate_objects_when_a_rollout_is_planned(tmp_path: Path, monkeypatch):
    import yaml

    monkeypatch.setenv("MLOPS_TEST_REGISTRY", "registry.example:5000")
    manifest = make_project(tmp_path / "repo", manifest_text("ro-render"))
    project = Project.load(manifest)
    [desired] = [r for a, r in project.desired().items() if a.kind == "service"]
    provider = project.providers["k8s"]
    plain = [d["kind"] for d in yaml.safe_load_all(provider.render(desired)) if d]
    assert plain == ["Secret", "Deployment", "Service"]
    planned = dataclasses.replace(desired, inputs={**desired.inputs, "rollout": {
        "strategy": "canary", "steps": [{"weight": 10, "hold": 5}, {"weight": 50, "hold": 5}]}})
    text = provider.render(planned)
    assert "# an update rolls out as a canary (10% of requests): the candidate runs beside the stable version " \
           "as echo-api-canary, shown at its first step" in text
    docs = [d for d in yaml.safe_load_all(text) if d]
    assert [(d["kind"], d["metadata"]["name"]) for d in docs] == [
        ("Secret", "echo-api-keys"), ("Deployment", "echo-api"), ("Service", "echo-api"),
        ("Deployment", "echo-api-canary")]
    assert docs[3]["spec"]["replicas"] == 1 and docs[3]["metadata"]["labels"]["mlops.dev/track"] == "canary"


RENDER_MANIFEST = """\
version: 1
project: ro-render
public_vars: [MLOPS_TEST_REGISTRY]
targets:
  k8s: {provider: kubernetes, namespace: ml, registry: "${MLOPS_TEST_REGISTRY}"}
  routed: {provider: kubernetes, namespace: ml, registry: "${MLOPS_TEST_REGISTRY}", gateway: {name: edge}}
models:
  m: {path: model.txt}
environments:
  e: {python: "3.11", pip: []}
services:
  ratio-api:
    models: [m]
    environment: e
    source_dir: src
    entry_script: score.py
    target: k8s
    deploy: {replicas: 4, auth: none}
    rollout:
      strategy: canary
      steps: [{weight: 25, hold: 1m}, {weight: 50, hold: 1m}]
  routed-api:
    models: [m]
    environment: e
    source_dir: src
    entry_script: score.py
    target: routed
    deploy: {replicas: 2, auth: none}
    rollout:
      strategy: canary
      mirror: {percent: 20, hold: 1m}
      steps: [{weight: 10, hold: 1m}]
"""


def test_mlops_render_shows_the_canary_objects_of_a_planned_rollout(tmp_path: Path, monkeypatch):
    """Golden, with what changes with the runtime and the commit masked (the objects' shape is the point)."""
    import re

    from support import check_golden

    monkeypatch.setenv("MLOPS_TEST_REGISTRY", "registry.example:5000")
    manifest = make_project(tmp_path / "repo", RENDER_MANIFEST)
    result = run_cli("render", "-f", str(manifest))
    assert result.code == 0, result.err
    text = re.sub(r"(mlops\.dev/(?:spec|fingerprint|version|git-commit)): .*", r"\1: (masked)", result.out)
    text = re.sub(r"(registry\.example:5000/ro-render/[a-z-]+:)[0-9a-f]{16}", r"\1(tag)", text)
    check_golden("kubernetes/render-canary.yaml", text)
