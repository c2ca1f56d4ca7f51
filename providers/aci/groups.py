"""One service as one container group: the body we PUT, and the group read back as a service.

Tags carry what ARM does not hold (tag keys without ``/``; values up to 256 characters, so the
spec is split over ``mlops-spec-N``); what ARM does hold (CPU, memory, port, restart policy, DNS
label, region, environment) is read from the group itself, so a change made behind our back shows
in the plan. Keys travel as secure environment variables, which ARM never returns: a salted
digest of them (``mlops-keys-sha``) tells whether the running keys are the ones we hold.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

from planner.hashing import canonical_json, secret_digest
from planner.resources import FAILED, HEALTHY, TRANSITIONING, UNHEALTHY

from ..bundle import PACKAGE_NAME
from ..images.recipe import APP_ROOT, VENV
from .settings import MAX_TAGS, OWN_TAG_PREFIX

TAG = {name: f"{OWN_TAG_PREFIX}{name}" for name in
       ("project", "target", "service", "fingerprint", "git-commit", "git-dirty", "keys-sha", "auth")}
SPEC_TAG = f"{OWN_TAG_PREFIX}spec-"
CHUNK = 250
OWN_ENV = frozenset({"SCORING_TIMEOUT_MS", "SERVICE_NAME", "MLOPS_PRIMARY_KEY", "MLOPS_SECONDARY_KEY"})
HELD_BY_ARM = ("cpu", "memory_gb", "port", "restart_policy", "dns_name_label", "location", "tags")
"""Settings read back from the group itself. Environment variables are not: they are sent as
secure values (they may be credentials; ARM never returns them), and the spec tags keep their
salted digests, as the plan compares them."""
CRASH_WINDOW_S = 300
"""A container that restarted and has run for less than this is crash-looping (Unhealthy), not Healthy."""
TRANSITIONAL = ("Pending", "Creating", "Repairing", "Updating", "Accepted")


def keys_digest(project: str, keys: Mapping[str, str]) -> str:
    return secret_digest(project, f"{keys.get('primary', '')}\0{keys.get('secondary', '')}") if keys else "none"


def tags_for(*, project: str, target: str, name: str, spec: Mapping[str, Any], fingerprint: str,
             git: Mapping[str, Any], keys_sha: str) -> dict[str, str]:
    """Our tags plus the user's (``deploy.tags``); at most Azure's 50."""
    deploy = spec["deploy"]
    stored = {**spec, "deploy": {k: v for k, v in deploy.items() if k != "tags"}}
    text = canonical_json(stored)
    chunks = [text[i:i + CHUNK] for i in range(0, len(text), CHUNK)]
    tags = {
        TAG["project"]: project, TAG["target"]: target, TAG["service"]: name, TAG["fingerprint"]: fingerprint,
        TAG["git-commit"]: str(git.get("commit") or "")[:256], TAG["git-dirty"]: str(bool(git.get("dirty"))).lower(),
        TAG["keys-sha"]: keys_sha, TAG["auth"]: str(deploy.get("auth", "none")),
        **{f"{SPEC_TAG}{i}": c for i, c in enumerate(chunks)},
        **{str(k): str(v) for k, v in (deploy.get("tags") or {}).items()},
    }
    return tags


def too_many_tags(tags: Mapping[str, str]) -> bool:
    return len(tags) > MAX_TAGS


def container_group(models: Any, *, name: str, spec: Mapping[str, Any], image: str, model_dir: str,
                    entry_script: str, location: str, keys: Mapping[str, str], tags: Mapping[str, str],
                    registry: str, registry_auth: tuple[str, str] | None,
                    env_values: Mapping[str, str] | None = None) -> Any:
    """The full PUT body (ACI reverts whatever a PUT omits, so everything is sent every time)."""
    deploy = spec["deploy"]
    port = int(deploy["port"])
    command = [f"{VENV}/bin/python", "-m", PACKAGE_NAME, "--entry-script", f"{APP_ROOT}/{entry_script}",
               "--model-dir", model_dir, "--host", "0.0.0.0", "--port", str(port),
               "--workers", str(deploy.get("workers", 1))]
    values = env_values if env_values is not None else (deploy.get("environment_variables") or {})
    env = [models.EnvironmentVariable(name=k, secure_value=str(v)) for k, v in sorted(values.items())]
    env += [models.EnvironmentVariable(name="SCORING_TIMEOUT_MS", value=str(deploy.get("scoring_timeout_ms", 60000))),
            models.EnvironmentVariable(name="SERVICE_NAME", value=name)]
    if keys:
        env += [models.EnvironmentVariable(name="MLOPS_PRIMARY_KEY", secure_value=keys["primary"]),
                models.EnvironmentVariable(name="MLOPS_SECONDARY_KEY", secure_value=keys["secondary"])]
    startup = int(deploy.get("startup_timeout_s", 300))
    container = models.Container(
        name=name, image=image, command=command, environment_variables=env,
        ports=[models.ContainerPort(port=port, protocol="TCP")],
        resources=models.ResourceRequirements(requests=models.ResourceRequests(
            cpu=float(deploy["cpu"]), memory_in_gb=float(deploy["memory_gb"]))),
        readiness_probe=models.ContainerProbe(
            http_get=models.ContainerHttpGet(path="/ready", port=port, scheme="http"),
            initial_delay_seconds=5, period_seconds=5, failure_threshold=3, timeout_seconds=3),
        liveness_probe=models.ContainerProbe(
            http_get=models.ContainerHttpGet(path="/", port=port, scheme="http"),
            initial_delay_seconds=startup, period_seconds=15, failure_threshold=3, timeout_seconds=5),
    )
    credentials = None
    if registry_auth:
        credentials = [models.ImageRegistryCredential(server=registry.split("/", 1)[0], username=registry_auth[0],
                                                      password=registry_auth[1])]
    return models.ContainerGroup(
        location=location, tags=dict(tags), containers=[container], os_type="Linux",
        restart_policy=str(deploy.get("restart_policy", "Always")),
        ip_address=models.IpAddress(type="Public", ports=[models.Port(port=port, protocol="TCP")],
                                    dns_name_label=deploy.get("dns_name_label")),
        image_registry_credentials=credentials,
    )


def tag(group: Any, name: str) -> str | None:
    """A tag's value; Azure tag keys are case-insensitive."""
    wanted = name.lower()
    return next((v for k, v in (group.tags or {}).items() if k.lower() == wanted), None)


def is_ours(group: Any, project: str, target: str | None = None) -> bool:
    return tag(group, TAG["project"]) == project and (target is None or tag(group, TAG["target"]) == target)


def spec_of(group: Any, target_location: str) -> dict[str, Any] | None:
    """The service spec the group runs: our tags for what ARM does not hold, the group for the rest."""
    tags = group.tags or {}
    chunks = sorted(((int(k[len(SPEC_TAG):]), v) for k, v in tags.items()
                     if k.lower().startswith(SPEC_TAG) and k[len(SPEC_TAG):].isdigit()))
    try:
        spec = json.loads("".join(v for _, v in chunks))
    except ValueError:
        return None
    if not isinstance(spec, dict) or not isinstance(spec.get("deploy"), dict):
        return None
    deploy = {k: v for k, v in spec["deploy"].items() if k not in HELD_BY_ARM}
    container = (group.containers or [None])[0]
    if container is not None:
        requests = container.resources.requests
        deploy["cpu"], deploy["memory_gb"] = round(float(requests.cpu), 2), round(float(requests.memory_in_gb), 2)
        if container.ports:
            deploy["port"] = int(container.ports[0].port)
    deploy["restart_policy"] = str(group.restart_policy or "Always")
    label = group.ip_address.dns_name_label if group.ip_address else None
    if label:
        deploy["dns_name_label"] = label
    if group.location and group.location.replace(" ", "").lower() != target_location.lower():
        deploy["location"] = group.location
    user = {k: v for k, v in tags.items() if not k.lower().startswith(OWN_TAG_PREFIX)}
    if user:
        deploy["tags"] = dict(sorted(user.items()))
    spec["deploy"] = dict(sorted(deploy.items()))
    return spec


def state_of(group: Any) -> tuple[str, str]:
    """The seed's state and a message, from provisioningState and the instance view (see ACI's docs)."""
    provisioning = group.provisioning_state or "Pending"
    if provisioning in TRANSITIONAL:
        return TRANSITIONING, f"provisioning: {provisioning}"
    if provisioning == "Failed":
        return FAILED, "provisioning failed" + _events_text(group)
    if provisioning == "Unhealthy":
        return UNHEALTHY, "ACI reports the group Unhealthy" + _events_text(group)
    view = group.instance_view
    if view is not None and view.state == "Stopped":
        return UNHEALTHY, "the container group is stopped (az container start, or re-apply)"
    for c in group.containers or []:
        iv = c.instance_view
        if iv is None or iv.current_state is None:
            return TRANSITIONING, f"container {c.name}: no state yet"
        current, restarts = iv.current_state.state, int(iv.restart_count or 0)
        if current == "Terminated" or (current == "Waiting" and restarts):
            exit_code = iv.current_state.exit_code if current == "Terminated" else \
                (iv.previous_state.exit_code if iv.previous_state else None)
            return UNHEALTHY, (f"container {c.name} restarted {restarts} times "
                               f"({iv.current_state.detail_status or current}, exit code {exit_code})"
                               + _events_text(group))
        if current != "Running":
            return TRANSITIONING, f"container {c.name}: {iv.current_state.detail_status or current}"
        if restarts and _recent(iv.current_state.start_time):
            return UNHEALTHY, (f"container {c.name} restarted {restarts} times, the last within "
                               f"{CRASH_WINDOW_S // 60} minutes" + _events_text(group))
    return HEALTHY, ""


def _recent(when: Any) -> bool:
    """Whether a container's current run began within CRASH_WINDOW_S: a crash loop keeps it recent."""
    if not isinstance(when, dt.datetime):
        return True
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return (dt.datetime.now(dt.UTC) - when).total_seconds() < CRASH_WINDOW_S


def _events_text(group: Any, count: int = 3) -> str:
    events = []
    for c in group.containers or []:
        iv = c.instance_view
        for e in (iv.events if iv is not None and iv.events else []):
            events.append(f"{e.name}: {e.message}" if e.message else str(e.name))
    return ("; last events: " + " | ".join(events[-count:])) if events else ""
