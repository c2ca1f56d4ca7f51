"""Ring rollouts on IoT Edge (``SplitsTraffic``): the real SDK against the hub double, without an engine.

Ten plant-3 devices and one plant-4 device; the devices acknowledge deployments without running
anything (``run_modules=False``), so the candidate's body is the provider's own builder over a
fixed image digest (``_start_ring``: what ``start_candidate`` does after building the image; the
e2e test builds and runs real modules). Each version has its own image, so what every device's
agent is asked to run shows which version it runs.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest
from iotedge_fixtures import iotedge_double, manifest, set_env
from support import make_project, run_cli

from planner.core.addresses import Address
from planner.core.errors import ProviderError
from planner.core.events import Events
from planner.core.resources import HEALTHY, UNHEALTHY, Live, Resource, RolloutState, spec_fingerprint
from planner.rollout.support import splitting_kinds
from providers.base import ProjectContext, SplitsTraffic
from providers.iotedge import IotEdgeProvider, rings

NAME = "defect-detector"
STABLE_IMAGE = "127.0.0.1:5999/plant/defect-detector:1@sha256:" + "ab" * 32
CANDIDATE_IMAGE = "127.0.0.1:5999/plant/defect-detector:2@sha256:" + "cd" * 32
KEYS = {"primary": "p" * 43, "secondary": "s" * 43}
PLANT3 = [f"plant3-{n:02d}" for n in range(10)]
DEVICES = {**{d: {"site": "plant-3"} for d in PLANT3}, "plant4-a": {"site": "plant-4"}}
POLICY = {"strategy": "canary", "steps": [{"weight": 10, "hold": 1}, {"weight": 50, "hold": 1}]}


def _spec(models: str) -> dict:
    return {"deploy": {"auth": "key", "port": 5001, "restart_policy": "always", "rollout_timeout_s": 30,
                       "scoring_timeout_ms": 60000},
            "entry_script": "score.py", "environment": "torch@2b6d32ee3de0", "image": STABLE_IMAGE.split("@")[0],
            "models": [models], "runtime": "mlops-runtime@b2e64fec30e3", "source": "src@28de0fa3b7c9",
            "target_condition": "tags.site='plant-3'"}


STABLE = Resource(Address("service", NAME), _spec("detector:3@5b00c99ea948"), target="plant3")
CANDIDATE = Resource(Address("service", NAME), _spec("detector:4@77aa00c99e11"), target="plant3")


@pytest.fixture
def double(tmp_path, monkeypatch):
    with iotedge_double.running(tmp_path / "double", run_modules=False, devices=DEVICES) as d:
        set_env(monkeypatch, d)
        yield d


def _provider(tmp: Path, double) -> IotEdgeProvider:
    """A fresh provider, as a new process (a resumed apply) would make it; no device_host: health only."""
    context = ProjectContext(project="plant", root=tmp, state_dir=tmp / ".mlops", cache_dir=tmp / "cache",
                             git={"commit": "0" * 40})
    settings = {"provider": "iotedge", "hub": double.connection_string, "target_condition": "tags.site='plant-3'",
                "registry": "127.0.0.1:5999"}
    provider = IotEdgeProvider(target="plant3", config=settings, context=context)
    provider.ensure_connected()
    return provider


def _until(provider: IotEdgeProvider, done, what: str) -> Live:
    for _ in range(200):
        [live] = provider.read()
        if done(live):
            return live
        time.sleep(0.05)
    raise AssertionError(f"never {what}: {live.details['message']}, versions {live.versions}")


def _stable(tmp: Path, double) -> tuple[IotEdgeProvider, Live]:
    provider = _provider(tmp, double)
    provider.hub.create_configuration(provider._configuration(STABLE, STABLE_IMAGE, KEYS, priority=10))
    live = _until(provider, lambda lv: lv.status == HEALTHY, "healthy")
    return provider, live


def _state(**changes) -> RolloutState:
    base = RolloutState(candidate=spec_fingerprint(CANDIDATE.spec), stable=spec_fingerprint(STABLE.spec),
                        phase="canary", policy=POLICY, updated=time.time())
    return dataclasses.replace(base, **changes)


def _start(provider: IotEdgeProvider, state: RolloutState | None = None) -> Live:
    body = provider._configuration(CANDIDATE, CANDIDATE_IMAGE, KEYS, priority=11)
    return provider._start_ring(CANDIDATE, body, state or _state(), Events())


def _images(double) -> dict[str, str]:
    """Device -> the image the hub asks its agent to run for our module."""
    out = {}
    for device in DEVICES:
        desired = double.hub.module_twin(device, "$edgeAgent")["properties"]["desired"]
        module = (desired.get("modules") or {}).get(NAME)
        out[device] = module["settings"]["image"] if module else None
    return out


def _tagged(double, provider) -> set[str]:
    key = provider.ring_key(NAME)
    return {d for d, dev in double.hub.devices.items() if rings.ring_of(dev["twin"], key)}


def test_ring_sizes_and_order():
    assert [rings.ring_size(10, w) for w in (0, 1, 10, 25, 50, 99, 100)] == [0, 1, 1, 3, 5, 10, 10]
    assert [rings.ring_size(3, w) for w in (10, 34, 50, 100)] == [1, 2, 2, 3]
    assert rings.ring_size(0, 50) == 0
    ten, half = rings.ring_members(PLANT3, 10), rings.ring_members(PLANT3, 50)
    assert set(ten) < set(half) and half == rings.ring_members(reversed(PLANT3), 50)   # nested, order-free
    assert half != sorted(PLANT3)[:5]   # by a hash of the id, not by name
    assert rings.ring_key("plant", "plant3", "defect-detector").startswith("defect_detector_")
    assert rings.ring_key("plant", "plant3", "a-b") != rings.ring_key("plant", "plant3", "a_b")


def test_each_step_tags_its_ring_and_the_hub_runs_the_candidate_there(tmp_path, double):
    provider, live = _stable(tmp_path, double)
    assert isinstance(provider, SplitsTraffic)
    assert provider.rollout_strategies({}) == frozenset({"canary", "blue_green"})
    live = _start(provider)
    assert live.rollout == _state(updated=live.rollout.updated) and live.spec == STABLE.spec
    assert [v.traffic for v in live.versions] == [1.0, 0.0]
    assert live.versions[1].spec_fingerprint == spec_fingerprint(CANDIDATE.spec)
    assert _tagged(double, provider) == set()
    candidate = provider.hub.get_configuration(live.details["candidate"])
    assert candidate["priority"] == 11 and rings.tag_path(provider.ring_key(NAME)) in candidate["targetCondition"]

    for step, weight in enumerate((10, 25, 50, 100)):
        state = _state(step=step, weight=weight)
        live = provider.set_traffic(live, state, Events())
        members = set(rings.ring_members(PLANT3, weight))
        assert len(members) == rings.ring_size(10, weight)
        assert _tagged(double, provider) == members
        images = _images(double)
        assert {d for d, image in images.items() if image == CANDIDATE_IMAGE} == members
        assert {d for d, image in images.items() if image == STABLE_IMAGE} == set(PLANT3) - members
        assert images["plant4-a"] is None   # outside the service's condition: never in a ring
        live = _until(_provider(tmp_path, double), lambda lv, s=state: lv.rollout == s and lv.status == HEALTHY,
                      "settled")
        stable, cand = live.versions
        assert (stable.traffic, cand.traffic) == pytest.approx((1 - len(members) / 10, len(members) / 10))
        assert (cand.health.ready, cand.health.desired) == (len(members), len(members))
        assert {d["device"] for d in live.details["devices"] if d["ring"]} == members
        called = {provider._device(live, None)["device"] for _ in range(10)}
        assert called == set(PLANT3)   # calls without --device go round the devices: both versions answer


def test_an_interrupted_call_is_finished_by_the_next(tmp_path, double):
    provider, live = _stable(tmp_path, double)
    double.hub.fail_next(400, method="PUT", after=1)   # the state is kept, then creating the candidate fails
    with pytest.raises(ProviderError):
        _start(provider)
    [live] = _provider(tmp_path, double).read()
    assert live.rollout is not None and live.rollout.phase == "canary" and len(live.versions) == 1
    live = _start(_provider(tmp_path, double))   # a resumed apply starts it again
    assert len(live.versions) == 2

    double.hub.fail_next(400, method="PATCH", after=2)   # the process dies after tagging two devices of five
    with pytest.raises(ProviderError):
        provider.set_traffic(live, _state(step=1, weight=50), Events())
    [live] = _provider(tmp_path, double).read()
    assert live.rollout.weight == 0 and len(_tagged(double, provider)) == 2
    assert live.versions[1].traffic == pytest.approx(0.2)   # the hub's truth, not the kept state
    live = _provider(tmp_path, double).set_traffic(live, _state(step=1, weight=50), Events())
    assert _tagged(double, provider) == set(rings.ring_members(PLANT3, 50)) and live.rollout.weight == 50


def test_abort_and_clear_are_idempotent(tmp_path, double):
    provider, live = _stable(tmp_path, double)
    live = provider.set_traffic(_start(provider), _state(step=1, weight=50), Events())
    moved = rings.ring_members(PLANT3, 50)[0]
    double.hub.set_tags(moved, {"site": "plant-9"})   # someone moves a ring device out of the target meanwhile
    staying = [d for d in PLANT3 if d != moved]
    aborted = _state(step=1, weight=50, phase="aborted", reason="max_error_rate 5%: 20% (candidate)")
    for _ in range(2):
        live = _provider(tmp_path, double).abort(live, aborted, Events())
        assert live.rollout == aborted and len(live.versions) == 1 and "candidate" not in live.details
        assert _tagged(double, provider) == set()   # the moved device's tag too
        assert {d: i for d, i in _images(double).items() if d in staying} == dict.fromkeys(staying, STABLE_IMAGE)
        assert [c["id"] for c in provider._ours()[NAME]] == [live.details["deployment"]]
    for _ in range(2):
        live = provider.clear(live, Events())
        assert live.rollout is None and live.spec == STABLE.spec


def test_promote_is_idempotent_and_finishes_an_interrupted_promote(tmp_path, double):
    provider, live = _stable(tmp_path, double)
    stable_id = live.details["deployment"]
    live = provider.set_traffic(_start(provider), _state(step=0, weight=10), Events())
    candidate_id = live.details["candidate"]
    double.hub.fail_next(400, method="DELETE")   # the candidate took over; deleting the stable one fails
    with pytest.raises(ProviderError):
        provider.promote(live, CANDIDATE, Events())
    [live] = _provider(tmp_path, double).read()
    assert live.details["deployment"] == candidate_id and live.spec["superseded_deployments"] == [stable_id]
    assert live.rollout is None
    for _ in range(2):
        live = _provider(tmp_path, double).promote(live, CANDIDATE, Events())
        assert live.spec == CANDIDATE.spec and live.rollout is None and len(live.versions) == 1
        assert [c["id"] for c in provider._ours()[NAME]] == [candidate_id]
        promoted = provider.hub.get_configuration(candidate_id)
        assert promoted["targetCondition"] == "tags.site='plant-3'"
        assert rings.ROLE_LABEL not in promoted["labels"] and rings.STATE_LABEL not in promoted["labels"]
        assert _tagged(double, provider) == set()
        assert {d: i for d, i in _images(double).items() if d != "plant4-a"} == dict.fromkeys(PLANT3, CANDIDATE_IMAGE)


def test_a_device_whose_candidate_module_fails_makes_the_candidate_unhealthy(tmp_path, double):
    provider, live = _stable(tmp_path, double)
    live = provider.set_traffic(_start(provider), _state(step=1, weight=50), Events())
    broken = rings.ring_members(PLANT3, 50)[0]
    double.hub.agents[broken].crash(NAME, "camera /dev/video0 is gone")
    live = _until(provider, lambda lv: lv.versions[1].health.state == UNHEALTHY, "unhealthy")
    stable, cand = live.versions
    assert stable.health.state == HEALTHY and (stable.health.ready, stable.health.desired) == (5, 5)
    assert (cand.health.ready, cand.health.desired, cand.health.failed) == (4, 5, 1)
    assert f"{broken}: module {NAME} failed (exit code 1)" in cand.health.message
    assert "camera /dev/video0 is gone" in cand.health.message
    assert live.status == UNHEALTHY and live.rollout.weight == 50


def test_validate_takes_canary_and_blue_green_and_refuses_shadow_naming_who_can(tmp_path, double):
    canary = ("    rollout: {strategy: canary, steps: [{weight: 10, hold: 1m}, {weight: 50, hold: 1m}], "
              "analysis: {interval: 10s, min_requests: 5, max_error_rate: 1%}}\n")
    path = make_project(tmp_path / "repo", manifest("rings") + canary)
    assert run_cli("validate", cwd=path.parent).code == 0
    path.write_text(manifest("rings") + "    rollout: {strategy: blue_green, steps: [{weight: 100, hold: 1m}]}\n")
    assert run_cli("validate", cwd=path.parent).code == 0
    path.write_text(manifest("rings") + "    rollout: {strategy: shadow, mirror: {percent: 20, hold: 1m}}\n")
    refused = run_cli("validate", cwd=path.parent)
    assert refused.code == 1 and len([ln for ln in refused.err.splitlines() if ln.startswith("ml.yaml:")]) == 1
    assert "services.echo-api.rollout.strategy: strategy shadow needs a target that mirrors requests; target " \
           f"'plant3' (iotedge) cannot (targets that can: {', '.join(splitting_kinds('shadow'))})" in refused.err
    assert "iotedge" in splitting_kinds("canary") and "iotedge" not in splitting_kinds("shadow")


def test_a_step_waits_for_the_devices_it_moves_not_for_an_offline_one(tmp_path, double):
    offline = rings.ring_order(PLANT3)[-1]   # in no ring below 100%
    double.hub.agents[offline].stop()        # it never takes another desired version
    provider = _provider(tmp_path, double)
    provider.hub.create_configuration(provider._configuration(STABLE, STABLE_IMAGE, KEYS, priority=10))
    live = _until(provider, lambda lv: lv.health.ready == 9, "running on the nine online devices")
    assert live.status != HEALTHY
    seen: list[str] = []
    live = provider.set_traffic(_start(provider), _state(step=0, weight=10), Events(seen.append))
    assert not [line for line in seen if "still switching" in line], seen
    [member] = rings.ring_members(PLANT3, 10)
    ring_device = next(d for d in live.details["devices"] if d["device"] == member)
    assert ring_device["ok"] and ring_device["ring"] and live.versions[1].health.state == HEALTHY
    seen.clear()
    provider.set_traffic(live, _state(step=0, weight=10, passed=1, judged=1), Events(seen.append))
    assert seen == [] and provider.read()[0].rollout.judged == 1   # the state kept; nothing moved, nothing waited


def test_a_promote_failing_on_the_other_devices_leaves_a_candidate_abort_removes(tmp_path, double):
    provider, live = _stable(tmp_path, double)
    live = provider.set_traffic(_start(provider), _state(step=0, weight=10), Events())
    outsider = rings.ring_order(PLANT3)[-1]
    double.hub.agents[outsider].crash(NAME, "this version needs a GPU", image=CANDIDATE_IMAGE)
    with pytest.raises(ProviderError, match=f"{outsider}: module {NAME} failed"):
        provider.promote(live, CANDIDATE, Events())
    [live] = provider.read()
    assert "candidate" in live.details and live.rollout is not None   # still a candidate, still a rollout
    assert live.versions[1].traffic == 1.0 and outsider in live.versions[1].health.message   # on every device
    live = provider.abort(live, _state(step=0, weight=10, phase="aborted", reason="promote failed"), Events())
    assert [c["id"] for c in provider._ours()[NAME]] == [live.details["deployment"]]
    assert {d: i for d, i in _images(double).items() if d != "plant4-a"} == dict.fromkeys(PLANT3, STABLE_IMAGE)
    live = _until(provider, lambda lv: lv.status == HEALTHY, "healthy on the stable version again")
    assert live.versions[0].health.ready == 10
