"""The iotedge provider without an engine: manifests, live state from labels, health, plan rules, bad input.

Deployments are created with the provider's own body builder and read back through the double
(devices acknowledge without running anything), so no image is built here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from iotedge_fixtures import iotedge_double, manifest, set_env
from support import check_golden, make_project, run_cli

from planner.addresses import Address
from planner.core.diff import decide
from planner.errors import ProviderError
from planner.plan import Action
from planner.resources import FAILED, HEALTHY, UNHEALTHY, UNSCHEDULABLE, Resource
from providers.base import ProjectContext
from providers.iotedge import IotEdgeProvider
from providers.iotedge import health as healths
from providers.iotedge import manifest as mf

DIGEST = "myacr.azurecr.io/plant/defect-detector:0123456789abcdef@sha256:" + "ab" * 32
KEYS = {"primary": "p" * 43, "secondary": "s" * 43}


def _spec(**deploy) -> dict:
    return {"deploy": {"auth": "key", "port": 5001, "restart_policy": "always", "rollout_timeout_s": 600,
                       "scoring_timeout_ms": 60000, **deploy},
            "entry_script": "score.py", "environment": "torch@2b6d32ee3de0", "image": DIGEST.split("@")[0],
            "models": ["detector:3@5b00c99ea948"], "runtime": "mlops-runtime@b2e64fec30e3",
            "source": "src@28de0fa3b7c9", "target_condition": "tags.site='plant-3'"}


def _provider(tmp: Path, hub: str = "HostName=h.azure-devices.net;SharedAccessKeyName=p;SharedAccessKey=a2V5",
              **config) -> IotEdgeProvider:
    context = ProjectContext(project="plant", root=tmp, state_dir=tmp / ".mlops", cache_dir=tmp / "cache",
                             git={"commit": "0" * 40})
    settings = {"provider": "iotedge", "hub": hub, "target_condition": "tags.site='plant-3'",
                "registry": "myacr.azurecr.io", **config}
    return IotEdgeProvider(target="plant3", config=settings, context=context)


def _desired(spec: dict, name: str = "defect-detector") -> Resource:
    return Resource(Address("service", name), spec, target="plant3")


CAMERA = {"HostConfig": {"Binds": [f"/var/lib/plant3/line-{n}:/data/line-{n}:ro" for n in range(8)],
                         "Devices": [{"PathOnHost": f"/dev/video{n}", "PathInContainer": f"/dev/video{n}",
                                      "CgroupPermissions": "rwm"} for n in range(10)]}}


def test_the_deployment_manifest(tmp_path, monkeypatch):
    monkeypatch.setenv("MLOPS_REGISTRY_USERNAME", "puller")
    monkeypatch.setenv("MLOPS_REGISTRY_PASSWORD", "registry-secret-value")
    provider = _provider(tmp_path)
    desired = _desired(_spec(cpu=1.5, memory_gb=2, create_options=CAMERA, environment_variables={"LINE": "3"}))
    body = provider._configuration(desired, DIGEST, KEYS, priority=10)
    shown = json.dumps(mf.redacted(body, "defect-detector"), indent=2, sort_keys=True) + "\n"
    check_golden("iotedge/deployment.json", shown)
    assert "registry-secret-value" not in shown and KEYS["primary"] not in shown

    settings = body["content"]["modulesContent"]["$edgeAgent"]["properties.desired.modules.defect-detector"]["settings"]
    chunks = sorted(k for k in settings if k.startswith("createOptions"))
    assert chunks == ["createOptions", "createOptions01", "createOptions02"]   # contiguous, the first unnumbered
    assert all(len(settings[k]) <= mf.CHUNK for k in chunks)
    options = mf.join_create_options(settings)
    assert options["HostConfig"]["PortBindings"] == {"5001/tcp": [{"HostPort": "5001"}]}
    assert options["HostConfig"]["Memory"] == 2 << 30 and options["HostConfig"]["NanoCpus"] == 1_500_000_000
    assert options["HostConfig"]["Devices"] == CAMERA["HostConfig"]["Devices"]
    # Content-addressed: another model is another id; the condition is not content.
    other = provider._configuration(_desired({**_spec(), "models": ["detector:4@00"]}), DIGEST, KEYS, priority=10)
    moved = provider._configuration(_desired({**_spec(), "target_condition": "x"}), DIGEST, KEYS, priority=10)
    same = provider._configuration(_desired(_spec()), DIGEST, KEYS, priority=11)
    assert other["id"] != same["id"] and moved["id"] == same["id"]
    assert len(same["id"]) <= 128 and same["id"].startswith("mlops-plant-defect-detector-")


def test_chunking_round_trips():
    for size in (0, 10, 511, 512, 513, 5000):
        options = {"Labels": {"x": "y" * size}}
        chunks = mf.chunk_create_options(options)
        assert list(chunks) == ["createOptions"] + [f"createOptions{i:02d}" for i in range(1, len(chunks))]
        assert mf.join_create_options(chunks) == options


def test_the_32kb_limit_is_checked_at_plan_time(tmp_path):
    provider = _provider(tmp_path)
    huge = _desired(_spec(environment_variables={"LABELS": "x" * 40000}))
    with pytest.raises(ProviderError) as err:
        provider.validate(huge)
    assert "32 KB" in str(err.value) and "deploy.environment_variables" in str(err.value)
    provider.validate(_desired(_spec()))


def test_settings_errors_are_one_line(tmp_path):
    with pytest.raises(ProviderError, match="target_condition or device_id, not both"):
        _ = _provider(tmp_path, device_id="plant3-a").condition
    assert _provider(tmp_path, target_condition=None, device_id="plant3-a").condition == "deviceId='plant3-a'"
    with pytest.raises(ProviderError, match="target_condition is missing"):
        _ = _provider(tmp_path, target_condition=None).condition
    bad = _provider(tmp_path, hub="HostName=h;SharedAccessKeyName=p;SharedAccessKey=not base64!")
    with pytest.raises(ProviderError) as err:
        bad.connect()
    assert "hub: SharedAccessKey is not base64" in str(err.value) and "not base64!" not in str(err.value)


def test_secrets_are_known_to_the_redactor(tmp_path, monkeypatch):
    monkeypatch.setenv("MLOPS_REGISTRY_PASSWORD", "registry-secret-value")
    values = _provider(tmp_path).secret_values()
    assert "a2V5" in values and "registry-secret-value" in values
    assert any(v.startswith("HostName=") for v in values)


def _device(name: str, ok: bool, failing: str | None = None) -> healths.Device:
    return healths.Device(name, True, ok, failing, "running" if ok else "backoff", 5001)


def test_health_names_the_first_failing_devices():
    config = {"systemMetrics": {"results": {"targetedCount": 6, "appliedCount": 6, "reportedSuccessfulCount": 6,
                                            "reportedFailedCount": 0}}}
    devices = [_device("d0", True)] + [_device(f"d{n}", False, f"module m backoff (exit code 1): boom {n}")
                                       for n in range(1, 6)]
    h = healths.health(config, devices, "c")
    assert h.state == UNHEALTHY and (h.ready, h.desired, h.failed, h.unit) == (1, 6, 5, "devices")
    assert "d1: module m backoff (exit code 1): boom 1; d2:" in h.message and "and 2 more" in h.message
    assert "d4" not in h.message
    assert healths.health(config, devices[1:], "c").state == UNHEALTHY   # one targeted device has not reported
    all_failing = [_device(f"d{n}", False, "x") for n in range(6)]
    assert healths.health(config, all_failing, "c").state == FAILED
    empty = {"systemMetrics": {"results": {"targetedCount": 0}}}
    assert healths.health(empty, [], "tags.site='nowhere'").state == UNSCHEDULABLE


def test_crash_looping_modules_are_not_healthy():
    twin = {"deviceId": "d", "configurations": {"c1": {"status": "Applied"}}}
    agent = {"properties": {"desired": {"$version": 4}, "reported": {
        "lastDesiredVersion": 4, "lastDesiredStatus": {"code": 200},
        "modules": {"m": {"runtimeStatus": "running", "restartCount": 3, "statusDescription": "exited with code 1",
                          "lastExitTimeUtc": healths.datetime.now(healths.UTC).isoformat()}}}}}
    state = healths.device_state("c1", "m", twin, agent)
    assert not state.ok and "crash-looping (restarted 3 times)" in state.failing
    agent["properties"]["reported"]["modules"]["m"]["restartCount"] = 0
    assert healths.device_state("c1", "m", twin, agent).ok
    agent["properties"]["reported"]["lastDesiredStatus"] = {"code": 400, "description": "invalid configuration"}
    assert "refused the deployment (400: invalid configuration)" in healths.device_state("c1", "m", twin, agent).failing


def test_reports_of_a_previous_desired_version_are_waited_for_not_judged():
    """A ring device switching back to the stable version after an abort still reports the candidate's
    module in backoff until its agent takes the new desired version: pending, neither failing nor ok."""
    twin = {"deviceId": "d", "configurations": {"c1": {"status": "Applied"}}}
    agent = {"properties": {"desired": {"$version": 5}, "reported": {
        "lastDesiredVersion": 4, "lastDesiredStatus": {"code": 200},
        "modules": {"m": {"runtimeStatus": "backoff", "exitCode": 1, "statusDescription": "camera not found"}}}}}
    state = healths.device_state("c1", "m", twin, agent)
    assert (state.ok, state.failing) == (False, None)
    agent["properties"]["reported"]["lastDesiredVersion"] = 5
    assert "module m backoff (exit code 1): camera not found" in healths.device_state("c1", "m", twin, agent).failing
    agent["properties"]["reported"]["modules"]["m"] = {"runtimeStatus": "running"}
    assert healths.device_state("c1", "m", twin, agent).ok


@pytest.fixture
def double(tmp_path, monkeypatch):
    with iotedge_double.running(tmp_path / "double", run_modules=False) as d:
        set_env(monkeypatch, d)
        yield d


def _connected(tmp_path: Path, double, condition: str = "tags.site='plant-3'") -> IotEdgeProvider:
    provider = _provider(tmp_path, hub=double.connection_string, registry="127.0.0.1:5999",
                         target_condition=condition, device_host="{tags.host}")
    provider.ensure_connected()
    return provider


def _put(provider: IotEdgeProvider, desired: Resource, priority: int, image: str = DIGEST) -> dict:
    body = provider._configuration(desired, image, KEYS, priority=priority)
    return provider.hub.create_configuration(body)


def _settle(provider: IotEdgeProvider, state: str) -> list:
    """Read until the service is in ``state`` and the hub's metrics caught up with the agents."""
    import time

    for _ in range(100):
        found = provider.read()
        if found and found[0].status == state and found[0].details["counts"]["succeeded"] == found[0].health.ready:
            return found
        time.sleep(0.1)
    return provider.read()


def test_live_state_is_found_by_our_labels_and_plans_to_nothing(tmp_path, double):
    provider = _connected(tmp_path, double)
    desired = _desired(_spec())
    _put(provider, desired, 10)
    foreign = {**provider._configuration(desired, DIGEST, KEYS, priority=5), "id": "someone-else"}
    foreign["labels"] = {**foreign["labels"], "mlops-project": "other"}
    provider.hub.create_configuration(foreign)
    [live] = _settle(provider, HEALTHY)
    assert live.address == desired.address and live.status == HEALTHY
    assert (live.health.ready, live.health.desired, live.health.unit) == (2, 2, "devices")
    assert dict(live.spec) == dict(desired.spec)
    assert decide(desired, live, provider.rules(desired, live)).action is Action.NOOP
    assert live.details["counts"] == {"targeted": 2, "applied": 2, "succeeded": 2, "failed": 0}


def test_a_crash_between_create_and_delete_leaves_an_update_that_cleans_up(tmp_path, double):
    provider = _connected(tmp_path, double)
    desired = _desired(_spec())
    old = _put(provider, _desired({**_spec(), "models": ["detector:2@00"]}), 10)
    _put(provider, desired, 11)                       # the new one, then "the crash": the old is still there
    [live] = provider.read()
    assert live.spec["superseded_deployments"] == [old["id"]]
    change = decide(desired, live, provider.rules(desired, live))
    assert change.action is Action.UPDATE and change.changed_paths() == ["superseded_deployments"]
    provider._retire("defect-detector", keep=live.details["deployment"], events=_Steps())
    assert "superseded_deployments" not in provider.read()[0].spec


def test_a_condition_matching_nothing_is_unschedulable_and_not_replaced(tmp_path, double):
    condition = "tags.site='plant-9'"
    provider = _connected(tmp_path, double, condition)
    desired = _desired({**_spec(), "target_condition": condition})
    _put(provider, desired, 10)
    [live] = provider.read()
    assert live.status == UNSCHEDULABLE and "no device matches the target condition" in live.health.message
    assert decide(desired, live, provider.rules(desired, live)).action is Action.NOOP
    assert provider.rules(desired, live).replace_on == frozenset({FAILED})


def test_plan_warns_when_devices_are_unreachable_and_renders_no_secret(tmp_path, double, monkeypatch):
    monkeypatch.setenv("MLOPS_REGISTRY_PASSWORD", "registry-secret-value")
    monkeypatch.setenv("MLOPS_REGISTRY_USERNAME", "puller")
    target = ("{provider: iotedge, hub: '${IOTHUB_CONNECTION_STRING}', target_condition: \"tags.site='plant-3'\", "
              "registry: '${IOTEDGE_REGISTRY}'}")
    root = tmp_path / "repo"
    make_project(root, manifest("warned", target=target))
    result = run_cli("plan", cwd=root)
    assert result.code == 0, result.err
    assert "status is health-only" in result.out
    result = run_cli("render", cwd=root)
    assert result.code == 0, result.err
    assert "properties.desired.modules.echo-api" in result.out and "createOptions" in result.out
    for secret in ("registry-secret-value", double.hub.key):
        assert secret not in result.out + result.err


def test_bad_input_is_one_line_without_secrets(tmp_path, double, monkeypatch):
    root = tmp_path / "repo"
    path = make_project(root, manifest("bad", deploy="{auth: key, environment_variables: {BIG: '%s'}}" % ("x" * 40000)))
    result = run_cli("plan", cwd=root)
    assert result.code == 1 and "32 KB" in result.err and "Traceback" not in result.err
    assert len(result.err.strip().splitlines()) == 1, result.err
    path.write_text(manifest("bad"))
    monkeypatch.setenv("IOTHUB_CONNECTION_STRING",
                       "HostName=127.0.0.1:1;SharedAccessKeyName=p;SharedAccessKey=c2VjcmV0")
    result = run_cli("plan", cwd=root)
    assert result.code == 1 and "unreachable" in result.err and "c2VjcmV0" not in result.out + result.err


class _Steps:
    """Events enough for the provider's helpers in a unit test."""

    def __init__(self):
        import threading

        self.cancel = threading.Event()
        self.seen: list[str] = []

    def __call__(self, text: str) -> None:
        self.seen.append(text)



def _two_services(deploy_a: str, deploy_b: str) -> str:
    text = manifest("ports", deploy=deploy_a)
    second = text[text.index("  echo-api:"):].replace("echo-api:", "echo-two:").replace(f"deploy: {deploy_a}",
                                                                                        f"deploy: {deploy_b}")
    return text + second


def test_services_of_one_target_share_the_devices_ports(tmp_path, double):
    root = tmp_path / "repo"
    path = make_project(root, _two_services("{port: 5002}", "{port: 5002}"))
    result = run_cli("validate", cwd=root)
    assert result.code == 1 and "port 5002 is already taken by services.echo-api" in result.err, result.err
    assert "tags.site='plant-3'" in result.err and double.hub.key not in result.err
    path.write_text(_two_services("{auth: key}", "{auth: none}"))    # both default to 5001
    result = run_cli("plan", cwd=root)
    assert result.code == 0, result.err
    assert "services echo-api, echo-two all publish port 5001 on the same devices" in result.out


def test_transitioning_while_devices_have_not_applied_it():
    config = {"systemMetrics": {"results": {"targetedCount": 2, "appliedCount": 1, "reportedSuccessfulCount": 1,
                                            "reportedFailedCount": 0}}}
    waiting = healths.Device("plant3-b", False, False, None, None, None)
    h = healths.health(config, [_device("plant3-a", True), waiting], "c")
    assert h.state == "Transitioning" and (h.ready, h.desired, h.failed) == (1, 2, 0)
    assert "waiting for devices: 1/2" in h.message and "not yet: plant3-b" in h.message
    assert "2 targeted, 1 applied, 1 succeeded, 0 failed" in h.message


def test_the_hub_limit_is_respected_before_creating(tmp_path, monkeypatch):
    with iotedge_double.running(tmp_path / "full", run_modules=False, limit=2) as full:
        set_env(monkeypatch, full)
        provider = _connected(tmp_path, full)
        _put(provider, _desired(_spec()), 10)                  # with factory-base: the hub is full
        body = provider._configuration(_desired({**_spec(), "models": ["other:1@00"]}), DIGEST, KEYS, priority=11)
        monkeypatch.setattr("providers.iotedge.deploying.HUB_LIMIT", 2)   # a free hub's 10, a paid one's 100
        with pytest.raises(ProviderError, match="holds 2 deployments, IoT Hub's limit"):
            provider._put(body, _Steps())
        assert provider.hub.get_configuration(body["id"]) is None
        assert any("the hub holds 2 of its 2 deployments" in w for w in provider.plan_warnings([_desired(_spec())]))


def test_validate_says_which_devices_setting_is_wrong(tmp_path):
    both = ("{provider: iotedge, hub: 'HostName=h;SharedAccessKeyName=p;SharedAccessKey=c2VjcmV0', registry: r.io, "
            "target_condition: \"tags.a='1'\", device_id: d1}")
    root = tmp_path / "repo"
    path = make_project(root, manifest("checked", target=both))
    result = run_cli("validate", cwd=root)
    assert result.code == 1 and "targets.plant3" in result.err
    assert "set exactly one of target_condition" in result.err and "c2VjcmV0" not in result.err
    path.write_text(manifest("checked", target="{provider: iotedge, registry: r.io, device_id: d1}"))
    result = run_cli("validate", cwd=root)
    assert result.code == 1 and "missing required field 'hub'" in result.err
