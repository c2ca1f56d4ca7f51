"""The ACI target without a Docker engine: the real SDK over HTTPS to the ARM double (whose groups only
pretend to run here), the provider's reading, rules and errors, and validate's messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests
from aci_fixtures import TARGET_FLOW, apply_env, double_running, env_for
from support import make_project, run_cli

from planner.addresses import Address
from planner.diff import decide
from planner.errors import ProviderError, Unreachable
from planner.plan import Action
from planner.resources import FAILED, HEALTHY, Live, Resource
from providers.aci import AciProvider, groups
from providers.aci.settings import MAX_TAGS
from providers.base import ProjectContext, ensure_connected

SPEC = {
    "models": ["ridge:1@5b00c99ea948"], "environment": "sklearn@2b6d32ee3de0", "source": "src@28de0fa3b7c9",
    "entry_script": "score.py", "runtime": "mlops-runtime@1", "image": "127.0.0.1:5000/p/diabetes-api:abc",
    "deploy": {"auth": "key", "cpu": 1.0, "memory_gb": 1.5, "port": 5001, "restart_policy": "Always",
               "scoring_timeout_ms": 60000, "startup_timeout_s": 300, "workers": 1, "dns_name_label": "diabetes-dev",
               "environment_variables": {"MODE": "fast"}, "tags": {"owner": "ml-team"}},
}


@pytest.fixture
def double(tmp_path, monkeypatch):
    with double_running(tmp_path / "double", engine=False, page_size=1) as d:
        apply_env(monkeypatch, {"ACR_LOGIN_SERVER": "127.0.0.1:5000", **env_for(d)})
        yield d


def provider(tmp_path: Path, double, project: str = "p", target: str = "t", **config) -> AciProvider:
    settings = {"provider": "aci", "subscription_id": double.subscription_id, "resource_group": "ml-dev",
                "location": "westeurope", "registry": "127.0.0.1:5000", "arm_endpoint": double.url, **config}
    context = ProjectContext(project=project, root=tmp_path, state_dir=tmp_path / ".mlops", cache_dir=tmp_path / "c",
                             git={"commit": "abc123", "dirty": False})
    return AciProvider(target=target, config=settings, context=context)


def put(p: AciProvider, name: str, spec: dict, *, keys: dict | None = None, tags: dict | None = None) -> None:
    from azure.mgmt.containerinstance import models

    body = groups.container_group(
        models, name=name, spec=spec, image=spec["image"].replace(":abc", "@sha256:" + "0" * 64),
        model_dir="/var/azureml-app/azureml-models/ridge/1", entry_script="score.py", location="westeurope",
        keys=keys or {}, registry="127.0.0.1:5000", registry_auth=None,
        tags=tags if tags is not None else groups.tags_for(project=p.context.project, target=p.target, name=name,
                                                           spec=spec, fingerprint="f" * 12, git=p.context.git,
                                                           keys_sha=groups.keys_digest(p.context.project, keys or {})))
    p.client.container_groups.begin_create_or_update("ml-dev", name, body).result()


def test_the_double_speaks_the_documented_contract_to_the_real_sdk(tmp_path, double):
    from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
    from azure.mgmt.containerinstance import models

    p = provider(tmp_path, double)
    cgs = p.client.container_groups
    keys = {"primary": "p" * 20, "secondary": "s" * 20}
    for name in ("a-one", "a-two", "a-three"):
        put(p, name, SPEC, keys=keys)
    assert sorted(g.name for g in cgs.list_by_resource_group("ml-dev")) == ["a-one", "a-three", "a-two"]
    assert len(double.calls("GET", "containerGroups")) >= 3, "nextLink pages must be followed"
    first_put = double.calls("PUT")[0]
    assert first_put[1].endswith("/containerGroups/a-one")

    got = cgs.get("ml-dev", "a-one")
    assert got.provisioning_state == "Succeeded" and got.containers[0].instance_view.current_state.state == "Running"
    secure = {e.name: e for e in got.containers[0].environment_variables}
    assert secure["MLOPS_PRIMARY_KEY"].secure_value is None and secure["MLOPS_PRIMARY_KEY"].value is None
    assert "p" * 20 not in json.dumps(double.public(double.groups[("ml-dev", "a-one")]))

    puts = len(double.calls("PUT"))
    patched = cgs.update("ml-dev", "a-one", models.Resource(tags={**got.tags, "owner": "x"}))
    assert patched.tags["owner"] == "x" and len(double.calls("PUT")) == puts

    bigger = {**SPEC, "deploy": {**SPEC["deploy"], "cpu": 2.0}}
    with pytest.raises(HttpResponseError) as refused:
        put(p, "a-one", bigger)
    assert refused.value.status_code == 409 and refused.value.error.code == "Conflict"

    with pytest.raises(ResourceNotFoundError) as missing:
        cgs.get("ml-dev", "nope")
    assert missing.value.error.code == "ResourceNotFound"
    cgs.begin_delete("ml-dev", "a-two").result()
    cgs.begin_delete("ml-dev", "a-two").result()          # 204: gone already, still fine
    assert [m for m, _ in double.calls("DELETE")] == ["DELETE", "DELETE"]

    unauthenticated = requests.get(f"{double.url}/subscriptions/{double.subscription_id}/resourceGroups/ml-dev/"
                                   "providers/Microsoft.ContainerInstance/containerGroups?api-version=2023-05-01",
                                   verify=str(double.ca_file), timeout=10)
    assert unauthenticated.status_code == 401
    with pytest.raises(requests.exceptions.SSLError):     # a self-signed certificate: only its CA file trusts it
        requests.get(f"{double.url}/metadata/endpoints", timeout=10, verify="/etc/ssl/certs/ca-certificates.crt")


def test_a_spec_round_trips_through_arm_so_an_unchanged_service_plans_nothing(tmp_path, double):
    p = provider(tmp_path, double)
    put(p, "diabetes-api", SPEC, keys={"primary": "p" * 20, "secondary": "s" * 20})
    [live] = p.read()
    assert live.spec == SPEC and live.status == HEALTHY and live.target == "t"
    assert live.details["endpoint"] == "http://diabetes-dev.westeurope.azurecontainer.io:5001/score"
    assert live.details["ip"] == "127.0.0.1" and live.details["git"]["commit"] == "abc123"
    tags = double.groups[("ml-dev", "diabetes-api")]["tags"]
    assert len(tags) <= MAX_TAGS and not any("/" in k for k in tags)
    assert tags["mlops-project"] == "p" and tags["mlops-keys-sha"].startswith("sha256:")
    assert "p" * 20 not in json.dumps(tags)


def test_read_keeps_only_this_projects_groups_on_this_target(tmp_path, double):
    ours, theirs, other_target = provider(tmp_path, double), provider(tmp_path, double, project="q"), \
        provider(tmp_path, double, target="u")
    put(ours, "mine", SPEC)
    put(theirs, "theirs", SPEC)
    put(other_target, "elsewhere", SPEC)
    put(ours, "untagged", SPEC, tags={"team": "other"})
    before = len(double.calls())
    assert [live.address.name for live in ours.read()] == ["mine"]
    got_calls = [p for m, p in double.calls()[before:] if p.endswith(("/theirs", "/untagged", "/elsewhere"))]
    assert not got_calls, "only our groups are read with their instance view"


def test_failed_provisioning_reports_arms_code_message_and_events(tmp_path, monkeypatch):
    from azure.core.exceptions import HttpResponseError

    with double_running(tmp_path / "d", engine=False, registry_auth={"127.0.0.1:5000": ("u", "right")}) as d:
        apply_env(monkeypatch, env_for(d))
        p = provider(tmp_path, d)
        with pytest.raises(HttpResponseError) as failed:
            put(p, "diabetes-api", SPEC)
        assert failed.value.error.code == "InaccessibleImage"
        assert "is not accessible. Please check the image and registry credential" in failed.value.error.message
        [live] = p.read()
        assert live.status == FAILED and "Failed to pull image" in live.details["message"]


def test_throttling_is_ridden_out_then_reported_in_one_line(tmp_path, double):
    p = provider(tmp_path, double)
    put(p, "diabetes-api", SPEC)
    before = len(double.calls())
    double.throttle(2, retry_after=1)
    assert len(p.read()) == 1
    assert len(double.calls()) - before >= 4, "two 429s, then the list and the get"
    before = len(double.calls())
    double.throttle(2, retry_after=1, status=503)
    assert len(p.read()) == 1 and len(double.calls()) - before >= 4, "5xx is retried too"
    double.throttle(50, retry_after=1)
    with pytest.raises(ProviderError) as storm:
        p.read()
    text = str(storm.value)
    assert "kept throttling" in text and "TooManyRequests" in text and "\n" not in text
    double.throttle(0)


def test_no_credential_and_a_wrong_one_are_one_line_each(tmp_path, double, monkeypatch):
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "wrong-secret-value")
    with pytest.raises(Unreachable) as wrong:
        ensure_connected(provider(tmp_path, double))
    assert "Azure login failed" in str(wrong.value) and "az login" in str(wrong.value)
    assert "wrong-secret-value" not in str(wrong.value) and "\n" not in str(wrong.value)
    for name in ("AZURE_CLIENT_SECRET", "AZURE_CLIENT_ID", "AZURE_TENANT_ID"):
        monkeypatch.delenv(name)
    with pytest.raises(Unreachable) as none:
        ensure_connected(provider(tmp_path, double))      # AZURE_TOKEN_CREDENTIALS pins the env credential
    text = str(none.value)
    assert "no Azure credential" in text and "AZURE_CLIENT_SECRET" in text and "az login" in text
    with pytest.raises(Unreachable) as nowhere:
        ensure_connected(provider(tmp_path, double, arm_endpoint="https://127.0.0.1:9"))
    assert "metadata" in str(nowhere.value) and "arm_endpoint" in str(nowhere.value)


def resource(spec: dict) -> Resource:
    return Resource(Address("service", "diabetes-api"), spec, target="t")


def changed(**deploy) -> dict:
    return {**SPEC, "deploy": {**SPEC["deploy"], **deploy}}


def test_rules_follow_what_aci_can_change(tmp_path, double):
    p = provider(tmp_path, double)
    live = Live(Address("service", "diabetes-api"), SPEC, HEALTHY, target="t", provider="aci")

    def plan(spec: dict):
        desired = resource(spec)
        return decide(desired, live, p.rules(desired, live))

    assert plan(SPEC).action is Action.NOOP
    tags = plan(changed(tags={"owner": "ops"}))
    assert tags.action is Action.UPDATE and tags.reason is None
    model = plan({**SPEC, "models": ["ridge:2@aaaaaaaaaaaa"], "image": "127.0.0.1:5000/p/diabetes-api:def"})
    assert model.action is Action.UPDATE and model.reason == "update_restarts_service"
    env = plan(changed(environment_variables={"MODE": "slow"}))
    assert env.reason == "update_restarts_service"
    for setting, value in (("cpu", 2.0), ("memory_gb", 3.0), ("restart_policy", "Never"), ("port", 8080)):
        replaced = plan(changed(**{setting: value}))
        assert replaced.action is Action.DELETE_THEN_CREATE and replaced.replace_paths == (f"deploy.{setting}",)


def test_updates_that_only_touch_tags_send_a_patch_and_identical_ones_send_nothing(tmp_path, double):
    p = provider(tmp_path, double)
    put(p, "diabetes-api", SPEC)
    [live] = p.read()
    puts = len(double.calls("PUT"))
    spec = changed(tags={"owner": "ops", "cost": "cc-1"})
    updated = p.update(resource(spec), live, lambda text: None)
    assert updated.spec == spec and len(double.calls("PUT")) == puts and len(double.calls("PATCH")) == 1
    again = p.update(resource(spec), updated, lambda text: None)
    assert again.spec == spec and len(double.calls("PUT")) == puts and len(double.calls("PATCH")) == 1


MANIFEST = """\
version: 1
project: proj
targets:
  aci: {target}
models:
  m: {{path: model.txt}}
environments:
  e: {{python: "3.11"}}
services:
  {name}:
    models: [m]
    environment: e
    source_dir: src
    entry_script: score.py
    deploy: {deploy}
"""


@pytest.mark.parametrize(("deploy", "expected"), [
    ("{gpu: 1}", "deploy.gpu: 1 is not valid (GPU is not offered on ACI: its GPU SKUs (K80, P100) are retired"),
    ("{dns_name_label: Bad_Label}", "deploy.dns_name_label: invalid value"),
    ("{tags: {a/b: x}}", "deploy.tags: invalid name 'a/b'"),
    ("{tags: {mlops-project: x}}", "deploy.tags: invalid name 'mlops-project'"),
    ("{cpu: 8}", "deploy.cpu: 8 must be <= 4"),
    ("{replicas: 2}", "deploy: unknown field 'replicas'"),
    ("{restart_policy: Sometimes}", "deploy.restart_policy: 'Sometimes' is not one of 'Always', 'OnFailure', 'Never'"),
])
def test_validate_refuses_what_aci_would_refuse_at_its_line(tmp_path, double, deploy, expected):
    path = make_project(tmp_path / "repo", MANIFEST.format(target=TARGET_FLOW, name="svc", deploy=deploy))
    result = run_cli("validate", "-f", str(path))
    assert result.code == 1 and expected in result.err + result.out, result.err + result.out
    assert "Traceback" not in result.err


def test_target_settings_are_checked_and_a_name_aci_refuses_is_one_line(tmp_path, double):
    path = make_project(tmp_path / "repo", MANIFEST.format(
        target="{provider: aci, resource_group: ml-dev, location: westeurope, registry: r.azurecr.io}",
        name="svc", deploy="{}"))
    result = run_cli("validate", "-f", str(path))
    assert result.code == 1 and "missing required field 'subscription_id'" in result.err + result.out
    path = make_project(tmp_path / "repo2", MANIFEST.format(target=TARGET_FLOW, name="my--svc", deploy="{}"))
    validated = run_cli("validate", "-f", str(path))   # refused at validate, at the service's name
    assert validated.code == 1 and "services.my--svc: 'my--svc' is not a valid container group name" in validated.err
    planned = run_cli("plan", "-f", str(path))
    assert planned.code == 1 and "not a valid container group name" in planned.err and "Traceback" not in planned.err


def test_plan_warns_about_a_public_service_without_keys(tmp_path, double):
    path = make_project(tmp_path / "repo", MANIFEST.format(target=TARGET_FLOW, name="svc", deploy="{auth: none}"))
    planned = run_cli("plan", "-f", str(path))
    assert planned.code == 0 and "auth: none and a public IP" in planned.out + planned.err


def test_the_double_serves_by_hand_and_writes_its_exports(tmp_path):
    import shlex
    import signal
    import subprocess
    import sys
    import time

    from aci_fixtures import ROOT

    state = tmp_path / "state"
    proc = subprocess.Popen([sys.executable, str(ROOT / "doubles" / "aci_double.py"), "--serve", "--state-dir",
                             str(state)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not (state / "env").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        env = dict(shlex.split(line)[1].split("=", 1) for line in (state / "env").read_text().splitlines())
        assert {"AZURE_SUBSCRIPTION_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET",
                "AZURE_ARM_ENDPOINT", "REQUESTS_CA_BUNDLE"} <= set(env)
        assert env["AZURE_ARM_ENDPOINT"].startswith("https://127.0.0.1:")
        meta = requests.get(f"{env['AZURE_ARM_ENDPOINT']}/metadata/endpoints?api-version=2015-01-01",
                            verify=env["REQUESTS_CA_BUNDLE"], timeout=10).json()
        assert meta["authentication"]["loginEndpoint"].startswith(env["AZURE_ARM_ENDPOINT"])
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, proc.stderr.read() if proc.stderr else ""


def test_ca_bundle_setting_trusts_the_doubles_certificate_without_the_environment(tmp_path, double, monkeypatch):
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    with pytest.raises(Unreachable) as untrusted:
        ensure_connected(provider(tmp_path, double))
    assert "cannot verify the TLS certificate" in str(untrusted.value) and "ca_bundle" in str(untrusted.value)
    p = provider(tmp_path, double, ca_bundle=str(double.ca_file))
    put(p, "diabetes-api", SPEC)
    assert [live.address.name for live in p.read()] == ["diabetes-api"]


@pytest.mark.parametrize(("cloud", "arm", "login"), [
    (None, "https://management.azure.com", "https://login.microsoftonline.com"),
    ("AzureChinaCloud", "https://management.chinacloudapi.cn", "https://login.chinacloudapi.cn"),
    ("AzureUSGovernment", "https://management.usgovcloudapi.net", "https://login.microsoftonline.us"),
])
def test_the_cloud_setting_moves_resource_manager_and_login_together(cloud, arm, login):
    from providers.aci.arm import endpoints

    assert endpoints({"cloud": cloud} if cloud else {}, True) == (arm, login, f"{arm}/.default", False)


def test_an_explicit_arm_endpoint_finds_its_login_in_the_cloud_metadata(double):
    from providers.aci.arm import endpoints

    arm, login, scope, custom = endpoints({"arm_endpoint": double.url + "/"}, str(double.ca_file))
    assert (arm, login, scope, custom) == (double.url, double.url, f"{double.url}/.default", True)
