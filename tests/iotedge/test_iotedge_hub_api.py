"""IoT Hub wire behaviour, through our azure-core client against the double (no engine needed).

These pin what the provider relies on: SAS tokens, configuration CRUD with etags, immutable
content, the 100-deployment limit, per-device priority resolution of base and layered
deployments, target conditions, system metrics, twins and retries on throttling.
"""

from __future__ import annotations

import time

import pytest
from iotedge_fixtures import iotedge_double

from planner.errors import ProviderError
from providers.iotedge.hub import ConnectionString, HubClient, sas_token

Condition = iotedge_double.Condition


@pytest.fixture
def double(tmp_path, monkeypatch):
    with iotedge_double.running(tmp_path / "double", run_modules=False, limit=6) as d:
        monkeypatch.setenv("IOTHUB_CA_BUNDLE", str(d.cert))
        yield d


@pytest.fixture
def hub(double) -> HubClient:
    return HubClient(ConnectionString.parse(double.connection_string, "hub"), what="hub")


def layer(cid: str, image: str, priority: int, condition: str = "tags.site='plant-3'") -> dict:
    return {"id": cid, "schemaVersion": "1.0", "labels": {}, "targetCondition": condition, "priority": priority,
            "content": {"modulesContent": {"$edgeAgent": {"properties.desired.modules.m": {
                "type": "docker", "status": "running", "restartPolicy": "always", "version": "1.0",
                "settings": {"image": image, "createOptions": "{}"}}}, "$edgeHub": {}}},
            "metrics": {"queries": {}}}


def desired_image(hub: HubClient, device: str) -> str | None:
    twin = hub.module_twin(device, "$edgeAgent") or {}
    return (((twin["properties"]["desired"].get("modules") or {}).get("m") or {}).get("settings") or {}).get("image")


def test_sas_tokens_are_checked(double):
    host = double.hub.host
    good = sas_token(host, "iothubowner", double.hub.key, int(time.time()) + 60)
    assert iotedge_double.check_sas(good, host, double.hub.key)
    assert not iotedge_double.check_sas(sas_token(host, "iothubowner", double.hub.key, int(time.time()) - 1),
                                        host, double.hub.key)
    assert not iotedge_double.check_sas(sas_token(host, "other", double.hub.key, int(time.time()) + 60),
                                        host, double.hub.key)
    wrong = ConnectionString(host, "iothubowner", "AAAA" + double.hub.key[4:])
    with pytest.raises(ProviderError) as err:
        HubClient(wrong, what="hub").list_configurations()
    assert "refused the credentials (401" in str(err.value) and double.hub.key not in str(err.value)


def test_connection_strings_are_checked():
    with pytest.raises(ProviderError, match="missing SharedAccessKey"):
        ConnectionString.parse("HostName=h;SharedAccessKeyName=p", "target 'x': hub")
    with pytest.raises(ProviderError, match="device connection string"):
        ConnectionString.parse("HostName=h;DeviceId=d;SharedAccessKeyName=p;SharedAccessKey=a2V5", "hub")


def test_configuration_crud_with_etags_and_immutable_content(hub):
    created = hub.create_configuration(layer("one", "r/a@sha256:1", 10))
    with pytest.raises(ProviderError, match="409"):
        hub.create_configuration(layer("one", "r/a@sha256:1", 10))
    changed = {**created, "targetCondition": "tags.site='plant-4'"}
    updated = hub.update_configuration(changed, created["etag"])
    assert updated["etag"] != created["etag"] and updated["targetCondition"] == "tags.site='plant-4'"
    with pytest.raises(ProviderError, match="412"):
        hub.update_configuration(changed, created["etag"])          # a stale etag
    other_content = {**updated, "content": layer("one", "r/b@sha256:2", 10)["content"]}
    with pytest.raises(ProviderError, match="400.*immutable"):
        hub.update_configuration(other_content, updated["etag"])
    with pytest.raises(ProviderError, match="412"):
        hub.delete_configuration("one", created["etag"])
    assert hub.delete_configuration("one", updated["etag"]) is True
    assert hub.delete_configuration("one") is False               # gone already: not an error
    with pytest.raises(ProviderError, match="400.*invalid configuration id"):
        hub.create_configuration(layer("Upper/Case", "r/a@sha256:1", 10))


def test_the_deployment_limit_is_enforced(hub, double):
    for n in range(double.hub.limit - 1):                       # factory-base is one of them
        hub.create_configuration(layer(f"c{n}", "r/a@sha256:1", 10 + n))
    with pytest.raises(ProviderError, match="409.*limit"):
        hub.create_configuration(layer("one-too-many", "r/a@sha256:1", 99))


def test_priority_resolution_per_device(hub, double):
    hub.create_configuration(layer("low", "r/a@sha256:low", 10))
    hub.create_configuration(layer("high", "r/a@sha256:high", 20))
    assert desired_image(hub, "plant3-a") == "r/a@sha256:high"
    assert desired_image(hub, "plant4-a") is None                # not targeted
    twin = next(t for t in hub.query_devices("deviceId='plant3-a'"))
    assert twin["configurations"] == {"factory-base": {"status": "Applied"}, "low": {"status": "Applied"},
                                      "high": {"status": "Applied"}}
    hub.delete_configuration("high")                             # the hub recomputes the merge
    assert desired_image(hub, "plant3-a") == "r/a@sha256:low"
    # A base of a higher priority than a layer: the layer is targeted, not applied.
    base = {**iotedge_double.BASE_DEPLOYMENT, "id": "strict-base", "priority": 50, "labels": {}}
    hub.create_configuration(base)
    twin = next(t for t in hub.query_devices("deviceId='plant3-a'"))
    assert twin["configurations"]["low"] == {"status": "Targeted"}
    assert twin["configurations"]["strict-base"] == {"status": "Applied"}
    assert desired_image(hub, "plant3-a") is None
    hub.delete_configuration("strict-base")
    assert desired_image(hub, "plant3-a") == "r/a@sha256:low"
    # With no base deployment left, the device keeps its last desired properties (its modules keep running).
    for cid in ("factory-base", "low"):
        hub.delete_configuration(cid)
    assert desired_image(hub, "plant3-a") == "r/a@sha256:low"


def test_target_conditions():
    twin = {"deviceId": "d1", "tags": {"site": "plant-3", "line": 2, "env": {"tier": "prod"}},
            "capabilities": {"iotEdge": True}}
    for text, want in [("*", True), ("tags.site='plant-3'", True), ("tags.site = 'plant-4'", False),
                       ("tags.site='plant-3' AND tags.line=2", True), ("tags.site='plant-4' OR deviceId='d1'", True),
                       ("tags.site IN ['plant-1', 'plant-3']", True), ("tags.env.tier='prod'", True),
                       ("NOT (tags.site='plant-3')", False), ("tags.missing != 'x'", False),
                       ("(tags.line=1 OR tags.line=2) AND capabilities.iotEdge=true", True)]:
        assert Condition(text).matches(twin) is want, text
    for bad in ("tags.site =", "tags.site='x' AND", "tags.site IN 'x'", "tags.site == 'x'"):
        with pytest.raises(iotedge_double.ConditionError):
            Condition(bad)


def test_queries_test_queries_and_retagging(hub):
    assert [t["deviceId"] for t in hub.query_devices("tags.site IN ['plant-3', 'plant-4']")] == \
        ["plant3-a", "plant3-b", "plant4-a"]
    agents = hub.agent_twins(["plant3-a", "plant4-a", "no-such-device"])
    assert sorted(agents) == ["plant3-a", "plant4-a"] and agents["plant3-a"]["moduleId"] == "$edgeAgent"
    assert "$version" in agents["plant4-a"]["properties"]["desired"]
    assert hub.test_condition("tags.site='plant-3'") is None
    assert "expected" in (hub.test_condition("tags.site=") or "")
    hub.create_configuration(layer("only-3", "r/a@sha256:1", 10))
    assert hub.get_configuration("only-3")["systemMetrics"]["results"]["targetedCount"] == 2
    hub.request("PATCH", "/twins/plant4-a", body={"tags": {"site": "plant-3"}})
    assert hub.get_configuration("only-3")["systemMetrics"]["results"]["targetedCount"] == 3


def test_system_metrics_follow_the_agents(hub):
    hub.create_configuration(layer("m1", "r/a@sha256:1", 10))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        results = hub.get_configuration("m1")["systemMetrics"]["results"]
        if results["reportedSuccessfulCount"] == 2:
            break
        time.sleep(0.1)
    assert results == {"targetedCount": 2, "appliedCount": 2, "reportedSuccessfulCount": 2, "reportedFailedCount": 0}
    reported = hub.module_twin("plant3-a", "$edgeAgent")["properties"]["reported"]
    assert reported["modules"]["m"]["runtimeStatus"] == "running"


def test_throttling_and_outages_are_retried(hub, double):
    double.hub.fail_next(429, 503, 500)
    assert [c["id"] for c in hub.list_configurations()] == ["factory-base"]
    double.hub.fail_next(*[503] * 5)
    with pytest.raises(ProviderError, match="failed after 5 attempts"):
        hub.list_configurations()


def test_get_module_logs_direct_method(hub):
    status, payload = hub.invoke_module_method("plant3-a", "$edgeAgent", "GetModuleLogs",
                                               {"schemaVersion": "1.0", "items": [{"id": "nope", "filter": {}}]})
    assert status == 400 and "not found" in payload["message"]
    with pytest.raises(ProviderError, match="offline or has no module"):
        hub.invoke_module_method("plant3-a", "$edgeAgent", "Restart", {})
