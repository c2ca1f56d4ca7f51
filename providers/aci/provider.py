"""``provider: aci``: each service is one Azure Container Instances container group, through the real SDK.

The group is named after the service and runs the service's content-addressed image, pushed to the
target's registry and pulled by digest. What ACI can change decides the plan: tags alone go by
PATCH (no restart); CPU, memory, restart policy, port, DNS label or region need a new group
(delete, then create: names are unique in a resource group); anything else is a PUT, which
restarts every container, so the plan says the service briefly loses traffic. An identical PUT
would restart it too, so none is ever sent when nothing differs.

Live state is ARM itself: the resource group's groups carrying our project and target tags, each
read with its instance view. There is no orphan search: without a target's settings (subscription,
resource group) there is nowhere to look, so a target removed from the manifest keeps its groups
until the target is declared again and the services are removed.
"""

from __future__ import annotations

import re
import socket
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

from planner.addresses import Address
from planner.plan import Action, Rules, changed_paths
from planner.resources import FAILED, HEALTHY, UNHEALTHY, Live, Resource, Version

from ..base import (
    CancelledError,
    Endpoint,
    KindSchema,
    Preparation,
    Progress,
    ProjectContext,
    Provider,
    ProviderError,
    Reachable,
    Renders,
    as_events,
    ensure_connected,
    environment_variables,
    score_at,
)
from ..bundle import runtime_version
from ..http import is_ready, smoke_test
from ..images import BuiltImage, ImageTarget
from . import groups, settings
from .arm import Connection, arm_call, connect, error_code, error_line

REPLACE_PATHS = frozenset({"deploy.cpu", "deploy.memory_gb", "deploy.restart_policy", "deploy.port",
                           "deploy.dns_name_label", "deploy.location", "deploy.os_type"})
"""What ACI cannot update in place (OS, CPU/memory, restart policy; network: ports, DNS label) or cannot move."""
RESTART_FREE = frozenset({"deploy.tags"})
POLL = 1.0
READ_PARALLELISM = 8


def name_problem(name: str) -> str | None:
    """Why ACI would refuse a container group of that name, or None."""
    if re.match(settings.NAME_PATTERN, name):
        return None
    return (f"{name!r} is not a valid container group name (ACI allows 1-63 lowercase letters, digits and "
            "single hyphens); rename the service")


class AciProvider(ImageTarget, Reachable, Renders, Provider):
    kind: ClassVar[str] = "aci"

    def __init__(self, *, target: str, config: Mapping[str, Any], context: ProjectContext):
        super().__init__(target=target, config=config, context=context)
        self.init_images(context, self.config.get("registry"), log_dir=context.state_dir / "aci" / "builds")
        self._conn: Connection | None = None

    # -- schema and spec ------------------------------------------------------------------------
    @classmethod
    def schema(cls) -> KindSchema:
        return KindSchema(target=settings.target_schema(), deploy=settings.deploy_schema(),
                          service_name_problem=name_problem)

    def prepare(self) -> Preparation:
        """The bundled runtime; deploy defaults filled in (the target's own region is no override); the spec
        plus the image it runs."""
        return Preparation(runtime=runtime_version(), deploy=self._normalize_deploy, spec=self._service_spec)

    def _normalize_deploy(self, deploy: Mapping[str, Any]) -> dict[str, Any]:
        out = settings.normalize(dict(deploy))
        if out.get("location") == self.location:
            del out["location"]          # the target's own region is no override
        return out

    def _service_spec(self, name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        """Refuses a name ACI would refuse (before anything is built)."""
        if name_problem(name):
            raise ProviderError(f"services.{name}: {name!r} is not a valid container group name on {self.describe()} "
                                "(ACI allows 1-63 lowercase letters, digits and single hyphens); rename the service")
        return self.with_image(name, spec)

    @property
    def location(self) -> str:
        return str(self.config.get("location") or "")

    @property
    def resource_group(self) -> str:
        return str(self.config["resource_group"])

    # -- connecting -----------------------------------------------------------------------------
    def connect(self) -> None:
        self._conn = connect(self.config, self.describe())

    @property
    def client(self) -> Any:
        ensure_connected(self)
        assert self._conn is not None
        return self._conn.client

    def _call(self, what: str, fn: Any) -> Any:
        return arm_call(self.describe(), what, fn)

    # -- live state -------------------------------------------------------------------------------
    def read(self) -> list[Live]:
        """List the resource group, keep our project's groups on this target, get each with its instance view."""
        cgs = self.client.container_groups
        listed = arm_call("", f"listing container groups in resource group {self.resource_group!r}",
                          lambda: list(cgs.list_by_resource_group(self.resource_group)))
        ours = [g for g in listed if groups.is_ours(g, self.context.project, self.target)]
        if not ours:
            return []
        with ThreadPoolExecutor(max_workers=min(READ_PARALLELISM, len(ours))) as pool:
            full = list(pool.map(lambda g: self._get(g.name), ours))
        return [self._live(g) for g in full if g is not None]

    def _get(self, name: str) -> Any | None:
        """The group with its instance view, or None when it does not exist."""
        from azure.core.exceptions import ResourceNotFoundError

        def get() -> Any | None:
            try:
                return self.client.container_groups.get(self.resource_group, name)
            except ResourceNotFoundError:
                return None

        return self._call(f"reading container group {name!r}", get)

    def _live(self, group: Any) -> Live:
        name = groups.tag(group, groups.TAG["service"]) or group.name
        spec = groups.spec_of(group, self.location) or {}
        status, message = groups.state_of(group)
        ip = group.ip_address
        port = int(spec.get("deploy", {}).get("port") or (ip.ports[0].port if ip and ip.ports else 0))
        host = (ip.fqdn or ip.ip) if ip else None
        logs: list[str] = []
        if status in (FAILED, UNHEALTHY):
            logs = self._log_lines(group.name, tail=100)
            if logs:
                message += " | last log lines: " + " | ".join(ln.strip() for ln in logs[-3:] if ln.strip())
        container = (group.containers or [None])[0]
        details = {
            "endpoint": f"http://{host}:{port}/score" if host else None,
            "swagger": f"http://{host}:{port}/swagger.json" if host else None,
            "ip": ip.ip if ip else None,
            "fqdn": ip.fqdn if ip else None,
            "port": port,
            "container_group": group.name,
            "resource_group": self.resource_group,
            "location": group.location,
            "provisioning_state": group.provisioning_state,
            "image": container.image if container else None,
            "restart_count": int(container.instance_view.restart_count or 0)
            if container is not None and container.instance_view else 0,
            "git": {"commit": groups.tag(group, groups.TAG["git-commit"]) or None,
                    "dirty": groups.tag(group, groups.TAG["git-dirty"]) == "true"},
            "auth": groups.tag(group, groups.TAG["auth"]) or "none",
            "keys_sha": groups.tag(group, groups.TAG["keys-sha"]),
            "fingerprint": groups.tag(group, groups.TAG["fingerprint"]),
            "message": message,
            "last_logs": logs,
        }
        sensitive = {f"deploy.{k}" for k in ("primary_key", "secondary_key") if k in spec.get("deploy", {})}
        env = spec.get("deploy", {}).get("environment_variables", {})
        sensitive |= {f"deploy.environment_variables.{k}" for k in env}
        return Live(Address("service", name), spec, status, target=groups.tag(group, groups.TAG["target"]),
                    provider=self.kind, details=details, sensitive=frozenset(sensitive),
                    versions=Version.only(spec, details["fingerprint"] or group.id))

    # -- planning -------------------------------------------------------------------------------
    def rules(self, desired: Resource | None, live: Live | None) -> Rules:
        """PATCH for tags, a restarting PUT for the rest, a new group for what ACI cannot change in place.

        A replacement deletes first: a resource group holds one group of a name. A move from
        another kind of target creates first, so the service keeps serving meanwhile.
        """
        move = Action.DELETE_THEN_CREATE if live is not None and live.provider == self.kind else \
            Action.CREATE_THEN_DELETE
        return Rules(replace_paths=REPLACE_PATHS, replace_order=Action.DELETE_THEN_CREATE, move_order=move,
                     updates_restart=True, restart_free_paths=RESTART_FREE)

    def validate(self, desired: Sequence[Resource]) -> list[str]:
        """Warns of services anyone on the internet can score."""
        out = []
        for d in desired:
            if d.spec.get("deploy", {}).get("auth", "none") == "none":
                out.append(f"{d.address} on {self.describe()} has auth: none and a public IP address: anyone who "
                           "finds it can score it (set deploy.auth: key)")
        return out

    def render(self, desired: Resource) -> str | None:
        """The container group body apply would PUT, as YAML; keys and registry password redacted."""
        import yaml
        from azure.mgmt.containerinstance import models

        keys = {"primary": "(sensitive)", "secondary": "(sensitive)"} if desired.spec["deploy"].get("auth") == "key" \
            else {}
        auth = self.pull_credentials()
        body = self._body(models, desired, image=str(desired.spec["image"]), keys=keys,
                          registry_auth=(auth[0], "(sensitive)") if auth else None)
        data = body.serialize()
        if keys:
            data["tags"][groups.TAG["keys-sha"]] = "(a salted digest of the keys, made at apply)"
        for env in data["properties"]["containers"][0]["properties"].get("environmentVariables", []):
            for field in ("value", "secureValue"):
                if field in env and f"deploy.environment_variables.{env['name']}" in desired.sensitive:
                    env[field] = "(sensitive)"
        return yaml.safe_dump(data, sort_keys=False)

    # -- acting ---------------------------------------------------------------------------------
    def create(self, desired: Resource, progress: Progress) -> Live:
        events = as_events(progress)
        ensure_connected(self)
        name = desired.address.name
        existing = self._get(name)
        if existing is not None and not groups.is_ours(existing, self.context.project):
            raise ProviderError(f"{desired.address}: a container group named {name!r} already exists in resource "
                                f"group {self.resource_group!r} and is not this project's; rename the service or "
                                "remove that group")
        image = self._image(desired, events)
        keys = self._keys(desired)
        try:
            group = self._put(desired, image, keys, events)
            self._wait_serving(desired, group, keys, events)
        except CancelledError:
            events.step("cancelled: removing the container group")
            self._delete_group(name, as_events(lambda text: None), wait_s=120)
            raise
        return self._live(self._get(name) or group)

    def update(self, desired: Resource, live: Live, progress: Progress) -> Live:
        events = as_events(progress)
        ensure_connected(self)
        name = desired.address.name
        changed = changed_paths(live.spec, desired.spec)
        if all(any(p == f or p.startswith(f + ".") for f in RESTART_FREE) for p in changed):
            # Tags alone: a PATCH, which restarts nothing; the running keys stay (their digest is kept).
            events.step("updating tags (PATCH: no restart)" if changed else "nothing differs: no request sent")
            if changed:
                self._patch_tags(desired, str(live.details.get("keys_sha") or "none"))
            return self._live(self._get(name) or _raise(ProviderError(f"{desired.address}: its group vanished")))
        had_keys = bool(self.keys.load(name)) or bool(desired.secrets)
        keys = self._keys(desired)
        if keys and not had_keys and live.details.get("keys_sha") not in (None, "none"):
            events.step("note: no stored keys for this service (a fresh checkout?): new keys are sent and the old "
                        "ones stop working; set deploy.primary_key/secondary_key from secrets to keep keys stable")
        image = self._image(desired, events)
        events.step("updating in place: ACI restarts the containers, the service is briefly unavailable")
        group = self._put(desired, image, keys, events)
        self._wait_serving(desired, group, keys, events)
        return self._live(self._get(name) or group)

    def delete(self, live: Live, progress: Progress) -> None:
        events = as_events(progress)
        name = str(live.details.get("container_group") or live.address.name)
        group = self._get(name)
        if group is None:
            return
        if not groups.is_ours(group, self.context.project, live.target):
            return   # the name now belongs to another target or project: not this instance
        self._delete_group(name, events, wait_s=600)

    # -- the steps ------------------------------------------------------------------------------
    def _keys(self, desired: Resource) -> dict[str, str]:
        return self.keys.keys_for(desired.address.name, desired.spec["deploy"].get("auth"), desired.secrets)

    def _image(self, desired: Resource, events: Any) -> BuiltImage:
        return self.ensure_image(desired, events)

    def _body(self, models: Any, desired: Resource, *, image: str, keys: Mapping[str, str],
              registry_auth: tuple[str, str] | None) -> Any:
        name, spec = desired.address.name, desired.spec
        recipe = self.images.recipe(desired) if desired.inputs else None
        model_dir = recipe.model_dir if recipe else "/var/azureml-app/azureml-models"
        tags = groups.tags_for(project=self.context.project, target=self.target, name=name, spec=spec,
                               fingerprint=desired.fingerprint, git=self.context.git,
                               keys_sha=groups.keys_digest(self.context.project, keys))
        if groups.too_many_tags(tags):
            raise ProviderError(f"{desired.address}: {len(tags)} tags exceed Azure's {settings.MAX_TAGS} per "
                                "resource; use fewer deploy.tags")
        return groups.container_group(
            models, name=name, spec=spec, image=image, model_dir=model_dir,
            entry_script=str(desired.inputs.get("entry_script") or spec.get("entry_script")),
            location=str(spec["deploy"].get("location") or self.location), keys=keys, tags=tags,
            registry=str(self.image_registry()), registry_auth=registry_auth,
            env_values=environment_variables(desired))

    def _put(self, desired: Resource, image: BuiltImage, keys: Mapping[str, str], events: Any) -> Any:
        """PUT the whole group and wait for provisioning, reporting each state; Failed -> ARM's code and message."""
        from azure.core.exceptions import AzureError, HttpResponseError
        from azure.mgmt.containerinstance import models

        name = desired.address.name
        body = self._body(models, desired, image=str(image.digest_ref), keys=keys,
                          registry_auth=self.pull_credentials())
        events.step(f"creating or updating container group {name!r} in {self.resource_group!r}")
        poller = self._call(f"sending container group {name!r}",
                            lambda: self.client.container_groups.begin_create_or_update(self.resource_group, name,
                                                                                        body))
        last = None
        while not poller.done():
            current = self._get(name)
            state = current.provisioning_state if current is not None else "Pending"
            if state != last:
                events.step(f"waiting for provisioning: {state}")
                last = state
            events.sleep(POLL)
        try:
            poller.result()
        except HttpResponseError as exc:
            raise ProviderError(self._failure(desired, exc)) from None
        except AzureError as exc:
            raise ProviderError(f"{desired.address}: waiting for container group {name!r}: cannot reach Azure "
                                f"Resource Manager ({' '.join(str(exc).split())[:200]})") from None
        group = self._get(name)
        if group is None:
            raise ProviderError(f"{desired.address}: container group {name!r} vanished after provisioning")
        if group.provisioning_state == "Failed":
            raise ProviderError(f"{desired.address}: provisioning failed{groups._events_text(group)}")
        return group

    def _failure(self, desired: Resource, exc: Any) -> str:
        """ARM's code and message, the group's last events and log lines: why a provisioning failed."""
        name = desired.address.name
        text = f"{desired.address}: provisioning failed: {error_line(exc)}"
        group = self._get(name)
        if group is not None:
            text += groups._events_text(group)
            lines = [ln.strip() for ln in self._log_lines(name, tail=100) if ln.strip()]
            if lines:
                text += " | last log lines: " + " | ".join(lines[-3:])
        if error_code(exc) == "InaccessibleImage":
            text += (f" (check MLOPS_REGISTRY_USERNAME / MLOPS_REGISTRY_PASSWORD: they are the pull credentials for "
                     f"{self.image_registry()})")
        return text

    def _wait_serving(self, desired: Resource, group: Any, keys: Mapping[str, str], events: Any) -> None:
        """Every container Running, then the readiness route, then the sample request; else why not."""
        name, deploy = desired.address.name, desired.spec["deploy"]
        timeout = float(deploy.get("startup_timeout_s", 300))
        ip = group.ip_address.ip if group.ip_address else None
        base = f"http://{ip}:{deploy['port']}" if ip else None
        deadline = time.monotonic() + timeout
        events.step("waiting for readiness (init() running)")
        while True:
            current = self._get(name) or group
            status, message = groups.state_of(current)
            if status in (FAILED, UNHEALTHY):
                lines = [ln.strip() for ln in self._log_lines(name, tail=100) if ln.strip()]
                raise ProviderError(f"{desired.address}: {message}" + (
                    f" | last log lines: {' | '.join(lines[-3:])}" if lines else ""))
            if status == HEALTHY and (base is None or is_ready(base, timeout=2)):
                break
            if time.monotonic() >= deadline:
                raise ProviderError(f"{desired.address}: not ready after {timeout:.0f}s (deploy.startup_timeout_s): "
                                    f"{message or 'the readiness route does not answer 200'}")
            events.sleep(POLL)
        sample = desired.inputs.get("sample_request")
        if base is None or sample is None:
            return
        events.step("sending the sample request")
        headers = {"Authorization": f"Bearer {keys['primary']}"} if keys else {}
        problem = smoke_test(f"{base}/score", sample, headers)
        if problem:
            raise ProviderError(f"{desired.address}: smoke test failed: {problem}")

    def _patch_tags(self, desired: Resource, keys_sha: str) -> None:
        from azure.mgmt.containerinstance import models

        name = desired.address.name
        tags = groups.tags_for(project=self.context.project, target=self.target, name=name, spec=desired.spec,
                               fingerprint=desired.fingerprint, git=self.context.git, keys_sha=keys_sha)
        self._call(f"updating the tags of container group {name!r}",
                   lambda: self.client.container_groups.update(self.resource_group, name, models.Resource(tags=tags)))

    def _delete_group(self, name: str, events: Any, *, wait_s: float) -> None:
        events.step(f"deleting container group {name!r}")
        poller = self._call(f"deleting container group {name!r}",
                            lambda: self.client.container_groups.begin_delete(self.resource_group, name))
        deadline = time.monotonic() + wait_s
        events.step("waiting for deletion")
        while not poller.done():       # not cancellable: a half-deleted group is worse than a short wait
            if time.monotonic() >= deadline:
                raise ProviderError(f"container group {name!r} is still being deleted after {wait_s:.0f}s; "
                                    "re-run to check")
            time.sleep(POLL / 2)
        self._call(f"deleting container group {name!r}", poller.result)

    def _log_lines(self, name: str, *, tail: int | None = None) -> list[str]:
        from azure.core.exceptions import AzureError

        try:
            logs = self.client.containers.list_logs(self.resource_group, name, name, tail=tail)
        except AzureError:
            return []
        return (logs.content or "").splitlines()

    # -- using ----------------------------------------------------------------------------------
    def endpoint(self, live: Live, instance: str | None = None) -> Endpoint | None:
        url = live.details.get("endpoint")
        if not url:
            return None
        headers = {}
        if live.details.get("auth") == "key":
            keys = self.keys.load(live.address.name)
            if keys.get("primary"):
                headers["Authorization"] = f"Bearer {keys['primary']}"
        return Endpoint(scoring_url=str(url), headers=headers)

    def call(self, live: Live, body: bytes, *, instance: str | None = None,
             timeout: float = 120) -> tuple[int, bytes, str]:
        """As the default, but by IP while the DNS label does not resolve yet (new labels take a while)."""
        endpoint = self.endpoint(live, instance)
        if endpoint is None:
            raise ProviderError(f"{live.address}: no endpoint yet on {self.describe()} (see `mlops status`)")
        url = endpoint.scoring_url
        host = urllib.parse.urlsplit(url).hostname or ""
        if live.details.get("fqdn") and live.details.get("ip") and not _resolves(host):
            url = f"http://{live.details['ip']}:{live.details['port']}/score"
        return score_at(url, body, endpoint.headers, timeout)

    def logs(self, live: Live, *, follow: bool = False, tail: int | None = None,
             instance: str | None = None) -> Iterator[str]:
        """The container's logs (ACI returns up to 4 MB); ``follow`` polls and prints what is new."""
        name = str(live.details.get("container_group") or live.address.name)
        # One read of the whole log (ACI returns up to 4 MB): the tail to show, and where following starts.
        full = self._call(f"reading the logs of {name!r}",
                          lambda: self.client.containers.list_logs(self.resource_group, name, name))
        lines = (full.content or "").splitlines()
        count = len(lines)
        yield from (lines[-tail:] if tail else lines)
        while follow:
            time.sleep(2)
            now = self._log_lines(name)
            if len(now) < count:      # the container restarted: its log starts again
                count = 0
            yield from now[count:]
            count = len(now)


def _resolves(host: str) -> bool:
    try:
        socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError):
        return False
    return True


def _raise(exc: BaseException) -> Any:
    raise exc

