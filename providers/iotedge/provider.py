"""``provider: iotedge``: each service is a module on a fleet of IoT Edge devices, via IoT Hub deployments.

A service is one layered deployment (see manifest.py for why) whose id is a hash of its content.
Content and id are immutable in IoT Hub, so a change is a new deployment at a higher priority;
the previous one is deleted once the new one runs on every targeted device. Only the target
condition, labels and priority can change in place (If-Match: the etag). Our deployments carry
labels (project, target, service, fingerprint, git commit) and are found by them; anything else
on the hub is never touched. A crash between "create the new" and "delete the old" leaves the old
one listed as ``superseded_deployments`` in the live spec, so the next plan shows an update that
removes it.

Rollout policy: when the new deployment runs on no device at all, the change is broken and an
update rolls back (deletes the new deployment, the previous one serves again); when it runs on
some devices, it stays, and the devices where it fails are named (IoT Hub has no per-device
fallback, and a recreate would restart the healthy ones too).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

from planner.addresses import Address
from planner.errors import CancelledError
from planner.plan import Rules
from planner.resources import FAILED, HEALTHY, UNSCHEDULABLE, Live, Resource, Version

from ..base import (
    Endpoint,
    Events,
    Progress,
    ProjectContext,
    Provider,
    ProviderError,
    Reachable,
    Renders,
    Unreachable,
    as_events,
    environment_variables,
)
from ..http import is_ready, request, smoke_test
from ..images import REGISTRY_PASSWORD_ENV, REGISTRY_USER_ENV, ImageTarget
from . import health as healths
from . import manifest as mf
from .hub import ConnectionString, HubClient

REGISTRY_PATTERN = r"^[A-Za-z0-9.-]+(:[0-9]+)?(/[a-z0-9._-]+)*$"
HUB_LIMIT = 100
"""Deployments (layered included) a paid hub holds."""
DEFAULTS: dict[str, Any] = {"port": mf.CONTAINER_PORT, "auth": "none", "restart_policy": "always",
                            "scoring_timeout_ms": 60000, "rollout_timeout_s": 600}
POLL_S = 1.0
_PLACEHOLDER = re.compile(r"\{(device_id|tags\.[A-Za-z0-9_.-]+)\}")
PLACEHOLDER_DIGEST = "sha256:" + "0" * 64
SMOKE_DEVICES = 10
TWIN_PARALLELISM = 8


class IotEdgeProvider(ImageTarget, Reachable, Renders, Provider):
    """Services as modules on IoT Edge devices chosen by a target condition over their twins."""

    kind: ClassVar[str] = "iotedge"

    def __init__(self, *, target: str, config: Mapping[str, Any], context: ProjectContext):
        super().__init__(target=target, config=config, context=context)
        self.init_images(context, self.config.get("registry"), log_dir=context.state_dir / "iotedge" / "builds")
        self._hub: HubClient | None = None

    # -- schema -------------------------------------------------------------------------------
    @classmethod
    def target_schema(cls) -> dict[str, Any]:
        return {
            "type": "object",
            "additionalProperties": False,
            "required": ["hub", "registry"],
            "allOf": [{"description": "set exactly one of target_condition (which devices, over their twins) "
                                      "and device_id (one device)",
                       "oneOf": [{"required": ["target_condition"], "not": {"required": ["device_id"]}},
                                 {"required": ["device_id"], "not": {"required": ["target_condition"]}}]}],
            "properties": {
                "provider": {"const": "iotedge"},
                "hub": {"type": "string", "writeOnly": True, "minLength": 1,
                        "description": "IoT Hub connection string of a shared access policy with registry "
                                       "read/write and service connect rights (e.g. ${IOTHUB_CONNECTION_STRING})"},
                "target_condition": {"type": "string", "minLength": 1,
                                     "description": "which devices run this target's services, in IoT Hub query "
                                                    "syntax over device twins, e.g. tags.site='plant-3'"},
                "device_id": {"type": "string", "pattern": r"^[A-Za-z0-9\-:.+%_#*?!(),=@$]{1,128}$",
                              "description": "shorthand for one device: target_condition deviceId='ID'"},
                "registry": {"type": "string", "pattern": REGISTRY_PATTERN,
                             "description": "where images are pushed and devices pull them (host[:port][/path]); "
                                            f"credentials from {REGISTRY_USER_ENV} / {REGISTRY_PASSWORD_ENV}"},
                "device_host": {"type": "string", "minLength": 1,
                                "description": "how this machine reaches a device, e.g. '{device_id}.plant3.lan' "
                                               "or '{tags.ip}'; unset: devices are unreachable from here and "
                                               "status is health-only"},
                "priority": {"type": "integer", "minimum": 1, "maximum": 1000000,
                             "description": "priority of the first deployment of each service (default 10); each "
                                            "change goes one higher; must be above the devices' base deployment"},
            },
        }

    @classmethod
    def deploy_schema(cls) -> dict[str, Any]:
        return {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "port": {"type": "integer", "minimum": 1, "maximum": 65535,
                         "description": "the port published on each device (default 5001)"},
                "auth": {"enum": ["key", "none"]},
                "primary_key": {"type": "string", "minLength": 16},
                "secondary_key": {"type": "string", "minLength": 16},
                "cpu": {"type": "number", "exclusiveMinimum": 0, "maximum": 64,
                        "description": "CPU cores the module may use (NanoCpus)"},
                "memory_gb": {"type": "number", "exclusiveMinimum": 0, "maximum": 512,
                              "description": "memory limit of the module in GiB"},
                "restart_policy": {"enum": sorted(mf.RESTART_POLICIES)},
                "environment_variables": {"type": "object", "additionalProperties": {"type": "string"}},
                "scoring_timeout_ms": {"type": "integer", "minimum": 1},
                "rollout_timeout_s": {"type": "integer", "minimum": 1,
                                      "description": "how long apply waits for every targeted device (default 600)"},
                "create_options": {"type": "object",
                                   "description": "extra Docker create options (Binds, Devices, …), merged"},
            },
        }

    @classmethod
    def port_scope(cls, config: Mapping[str, Any]) -> str | None:
        """Modules of one target share each device's ports (never the hub's secret in the scope)."""
        cond = config.get("target_condition") or (f"deviceId='{config['device_id']}'" if config.get("device_id")
                                                  else None)
        return f"the IoT Edge devices where {cond}" if cond else None

    def secret_values(self) -> list[str]:
        """The connection string, its key alone, and the registry password: masked in every output."""
        values = super().secret_values()
        hub = str(self.config.get("hub") or "")
        key = re.search(r"SharedAccessKey=([^;]+)", hub)
        if key:
            values.append(key.group(1))
        if os.environ.get(REGISTRY_PASSWORD_ENV):
            values.append(os.environ[REGISTRY_PASSWORD_ENV])
        return values

    # -- settings -------------------------------------------------------------------------------
    @property
    def registry(self) -> str:
        return str(self.config.get("registry") or "")

    @property
    def condition(self) -> str:
        """The target condition, with ``device_id`` as the shorthand it is; one line when neither or both."""
        cond, device = self.config.get("target_condition"), self.config.get("device_id")
        if cond and device:
            raise ProviderError(f"{self.describe()}: set target_condition or device_id, not both")
        if device:
            return f"deviceId='{device}'"
        if not cond:
            raise ProviderError(f"{self.describe()}: target_condition is missing (e.g. tags.site='plant-3', or "
                                "device_id: ID for one device)")
        return str(cond).strip()

    @property
    def base_priority(self) -> int:
        return int(self.config.get("priority") or 10)

    def normalize_deploy(self, deploy: Mapping[str, Any]) -> dict[str, Any]:
        out = {**DEFAULTS, **deploy}
        for key in ("environment_variables", "create_options"):
            if out.get(key) == {}:
                del out[key]
        return dict(sorted(out.items()))

    def service_spec(self, name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        """The spec, the image it runs (content address) and the condition choosing its devices."""
        return {**self.with_image(name, spec), "target_condition": self.condition}

    # -- connection -------------------------------------------------------------------------------
    def connect(self) -> None:
        conn = ConnectionString.parse(str(self.config.get("hub") or ""), f"{self.describe()}: hub")
        self.condition  # noqa: B018 - one line now, not in the middle of an apply
        hub = HubClient(conn, what=f"IoT Hub {conn.host}")
        try:
            hub.request("GET", "/configurations", params={"top": "1"}, attempts=2)   # fail fast when it is down
        except ProviderError as exc:
            hub.close()
            raise Unreachable(f"{exc} (check the hub connection string and the network)") from None
        self._hub = hub

    @property
    def hub(self) -> HubClient:
        self.ensure_connected()
        assert self._hub is not None
        return self._hub

    # -- live state -------------------------------------------------------------------------------
    def _ours(self, configs: list[dict[str, Any]] | None = None) -> dict[str, list[dict[str, Any]]]:
        """Our deployments on this target by service, oldest (lowest priority) first."""
        out: dict[str, list[dict[str, Any]]] = {}
        for c in configs if configs is not None else self.hub.list_configurations():
            lab = c.get("labels") or {}
            if (lab.get(mf.LABEL_MANAGED) == "mlops" and lab.get("mlops-project") == self.context.project
                    and lab.get("mlops-target") == self.target and lab.get("mlops-service")):
                out.setdefault(lab["mlops-service"], []).append(c)
        for group in out.values():
            group.sort(key=lambda c: (int(c.get("priority") or 0), str(c.get("createdTimeUtc") or ""), c["id"]))
        return out

    def read(self) -> list[Live]:
        return [self._live(name, group) for name, group in sorted(self._ours().items())]

    def _devices(self, config: Mapping[str, Any], name: str) -> list[healths.Device]:
        """Every targeted device's view: device twins by the condition, ``$edgeAgent`` twins by one query per
        100 devices (a hub that refuses the module query: one GET per device, in parallel)."""
        twins = sorted(self.hub.query_devices(str(config.get("targetCondition") or "")),
                       key=lambda t: str(t.get("deviceId")))
        ids = [str(t["deviceId"]) for t in twins]
        try:
            found = self.hub.agent_twins(ids)
            agents = [found.get(i) for i in ids]
        except ProviderError:
            with ThreadPoolExecutor(max_workers=TWIN_PARALLELISM, thread_name_prefix="twins") as pool:
                agents = list(pool.map(lambda i: self.hub.module_twin(i, "$edgeAgent"), ids))
        return [healths.device_state(config["id"], name, t, a) for t, a in zip(twins, agents, strict=True)]

    def _live(self, name: str, group: list[dict[str, Any]]) -> Live:
        current = group[-1]
        stored = mf.stored_spec(current)
        spec, sensitive = stored if stored else ({}, [])
        spec = {**spec, "target_condition": current.get("targetCondition")}
        superseded = [c["id"] for c in group[:-1]]
        if superseded:
            spec["superseded_deployments"] = superseded
        devices = self._devices(current, name)
        health = healths.health(current, devices, str(current.get("targetCondition")))
        default = healths.first(devices)
        lab = current.get("labels") or {}
        details = {
            "deployment": current["id"],
            "etag": current.get("etag"),
            "priority": current.get("priority"),
            "superseded": superseded,
            "devices": [{"device": d.device_id, "ok": d.ok, "runtime_status": d.runtime_status,
                         "url": self._url(d), "failing": d.failing} for d in devices],
            "counts": healths.counts(current),
            "endpoint": self._url(default) if default else None,
            "device": default.device_id if default else None,
            "auth": (spec.get("deploy") or {}).get("auth", "none"),
            "git": {"commit": None if lab.get("mlops-git-commit") in (None, "none") else lab["mlops-git-commit"],
                    "dirty": lab.get("mlops-git-dirty") == "true"},
            "message": health.message,
        }
        return Live(Address("service", name), spec, health.state, target=self.target, provider=self.kind,
                    details=details, sensitive=frozenset(sensitive), health=health,
                    versions=Version.only(spec, current["id"], health))

    def _url(self, device: healths.Device | None) -> str | None:
        """The device's scoring URL, when device_host says how to reach it and the device reports a port."""
        template = self.config.get("device_host")
        if not template or device is None or device.host_port is None:
            return None

        def fill(match: re.Match[str]) -> str:
            key = match.group(1)
            if key == "device_id":
                return device.device_id
            value: Any = device.tags
            for part in key.split(".")[1:]:
                value = value.get(part) if isinstance(value, Mapping) else None
            return "" if value is None else str(value)

        host = _PLACEHOLDER.sub(fill, str(template))
        return f"http://{host}:{device.host_port}/score" if host else None

    # -- planning -------------------------------------------------------------------------------
    def rules(self, desired: Resource | None, live: Live | None) -> Rules:
        """Every change is a new deployment (the module restarts on the devices), except a new target
        condition or a clean-up of superseded deployments. Only a deployment failing on every device
        is recreated: a fleet with some failing devices is not helped by restarting the healthy ones, and
        an Unschedulable one (no device matches) would be recreated into the same state on every plan."""
        return Rules(replace_on=frozenset({FAILED}), updates_restart=True,
                     restart_free_paths=frozenset({"target_condition", "superseded_deployments"}))

    def validate(self, desired: Resource) -> None:
        """The 32 KB desired-properties limit is checked here, before anything is built or sent."""
        body = self._content(desired, f"{self.images.ref(desired.address.name, desired.spec)}@{PLACEHOLDER_DIGEST}",
                             {"primary": "k" * 43, "secondary": "k" * 43})
        mf.check_size(body, desired.address.name, f"{desired.address} on {self.describe()}")

    def plan_warnings(self, desired: Sequence[Resource]) -> list[str]:
        out = []
        ports: dict[int, list[str]] = {}
        for r in desired:
            ports.setdefault(int(r.spec["deploy"].get("port", mf.CONTAINER_PORT)), []).append(r.address.name)
        for port, names in sorted(ports.items()):
            if len(names) > 1:
                out.append(f"services {', '.join(sorted(names))} all publish port {port} on the same devices; give "
                           "each its own deploy.port")
        if not self.config.get("device_host"):
            out.append("devices' endpoints are not reachable from here (no device_host): status is health-only "
                       "and apply sends no sample request")
        try:
            count = len(self.hub.list_configurations())
        except ProviderError:
            return out
        if count + len(desired) > HUB_LIMIT - 5:
            out.append(f"the hub holds {count} of its {HUB_LIMIT} deployments; a change needs one more while it "
                       "rolls out")
        return out

    def render(self, desired: Resource) -> str | None:
        import yaml

        keys = {"primary": mf.SENSITIVE, "secondary": mf.SENSITIVE} \
            if desired.spec["deploy"].get("auth") == "key" else {}
        image = f"{self.images.ref(desired.address.name, desired.spec)}@<digest after the push>"
        body = self._configuration(desired, image, keys, priority=self.base_priority)
        body["id"] = f"{body['id'].rsplit('-', 1)[0]}-<content hash at apply>"
        return yaml.safe_dump(mf.redacted(body, desired.address.name), sort_keys=False)

    # -- building the deployment -----------------------------------------------------------------
    def _content(self, desired: Resource, image: str, keys: Mapping[str, str]) -> dict[str, Any]:
        spec = {k: v for k, v in desired.spec.items() if k != "target_condition"}
        return mf.content(name=desired.address.name, spec=spec, image=image, keys=keys,
                          sensitive=sorted(desired.sensitive), registry=self.registry,
                          credentials=self.pull_credentials(), env=environment_variables(desired))

    def _configuration(self, desired: Resource, image: str, keys: Mapping[str, str], *,
                       priority: int) -> dict[str, Any]:
        content = self._content(desired, image, keys)
        name = desired.address.name
        labels = mf.labels(project=self.context.project, target=self.target, name=name,
                           fingerprint=desired.fingerprint, commit=self.context.git.get("commit"),
                           dirty=bool(self.context.git.get("dirty")))
        return mf.configuration(config_id=mf.configuration_id(self.context.project, name, content),
                                body_content=content, condition=self.condition, priority=priority, labels=labels)

    # -- acting ---------------------------------------------------------------------------------
    def create(self, desired: Resource, events: Progress) -> Live:
        ev = self._begin(events)
        self._check_condition()
        body = self._build(desired, ev, self._ours().get(desired.address.name, []))
        created = self._put(body, ev)
        try:
            self._wait(desired, body["id"], ev)
        except CancelledError:
            if created:
                self._delete_ids([body["id"]], ev)
            raise
        self._retire(desired.address.name, keep=body["id"], events=ev)
        return self._live(desired.address.name, self._ours()[desired.address.name])

    def update(self, desired: Resource, live: Live, events: Progress) -> Live:
        ev = self._begin(events)
        name = desired.address.name
        group = self._ours().get(name, [])
        current = next((c for c in group if c["id"] == live.details.get("deployment")), group[-1] if group else None)
        body = self._build(desired, ev, group)
        if current is not None and body["id"] == current["id"]:
            self._update_in_place(current, body, ev)
            if current.get("targetCondition") != body["targetCondition"]:
                self._retire(name, keep=body["id"], events=ev)   # they target by a condition no longer wanted
            self._wait(desired, body["id"], ev)
        else:
            self._check_condition()
            created = self._put(body, ev)
            try:
                self._wait(desired, body["id"], ev)
            except BaseException as exc:
                if created and (isinstance(exc, CancelledError) or self._runs_nowhere(body["id"], name)):
                    ev("rolling back: deleting the new deployment, the previous one serves again")
                    self._delete_ids([body["id"]], ev)
                    if isinstance(exc, ProviderError):
                        raise ProviderError(f"{exc}; rolled back to {current['id'] if current else 'nothing'}") \
                            from None
                raise
        self._retire(name, keep=body["id"], events=ev)
        return self._live(name, self._ours()[name])

    def delete(self, live: Live, events: Progress) -> None:
        ev = self._begin(events)
        group = self._ours().get(live.address.name, [])
        ids = [c["id"] for c in group]
        if not ids:
            return
        self._delete_ids(ids, ev)
        self._wait_removed(live, group[-1], ev)

    def _begin(self, events: Progress) -> Events:
        ev = as_events(events)
        self.hub.cancel = ev.cancel
        return ev

    def _check_condition(self) -> None:
        problem = self.hub.test_condition(self.condition)
        if problem:
            raise ProviderError(f"{self.describe()}: target_condition: the hub rejects {self.condition!r}: {problem}")

    def _build(self, desired: Resource, ev: Events, group: list[dict[str, Any]]) -> dict[str, Any]:
        """Build and push the image, then the deployment body (priority above every earlier one of ours)."""
        image = self.ensure_image(desired, ev)
        keys = self.keys.keys_for(desired.address.name, desired.spec["deploy"].get("auth"), desired.secrets)
        priority = max([self.base_priority - 1, *(int(c.get("priority") or 0) for c in group)]) + 1
        body = self._configuration(desired, str(image.digest_ref), keys, priority=priority)
        existing = next((c for c in group if c["id"] == body["id"]), None)
        if existing is not None:
            body["priority"] = existing.get("priority")   # the same content: keep its place
        return body

    def _put(self, body: dict[str, Any], ev: Events) -> bool:
        """Create the deployment unless it exists (a re-run after a crash); True when created now."""
        if self.hub.get_configuration(body["id"]) is not None:
            ev(f"deployment {body['id']} exists already")
            return False
        count = len(self.hub.list_configurations())
        if count >= HUB_LIMIT:
            raise ProviderError(f"{self.describe()}: the hub holds {count} deployments, IoT Hub's limit; remove "
                                "unused ones (`az iot edge deployment list`) and apply again")
        ev(f"creating deployment {body['id']} (priority {body['priority']}, target condition "
           f"{body['targetCondition']})")
        self.hub.create_configuration(body)
        return True

    def _update_in_place(self, current: Mapping[str, Any], body: dict[str, Any], ev: Events) -> None:
        """Same content: only the target condition and labels change (If-Match: its etag)."""
        if current.get("targetCondition") == body["targetCondition"] and current.get("labels") == body["labels"]:
            return
        ev(f"updating deployment {current['id']}: target condition {body['targetCondition']}")
        fresh = self.hub.get_configuration(current["id"]) or current
        update = {**fresh, "targetCondition": body["targetCondition"], "labels": body["labels"]}
        update.pop("systemMetrics", None)
        self.hub.update_configuration(update, str(fresh.get("etag") or "*"))

    def _wait(self, desired: Resource, config_id: str, ev: Events) -> None:
        """Until every targeted device runs the module; fails at once when a device has settled failing."""
        name = desired.address.name
        timeout = float(desired.spec["deploy"].get("rollout_timeout_s", 600))
        deadline = time.monotonic() + timeout
        while True:
            ev.check()
            config = self.hub.get_configuration(config_id)
            if config is None:
                raise ProviderError(f"{desired.address}: deployment {config_id} disappeared from the hub")
            devices = [d if not d.ok or self._ready(d) else healths.not_ready(d) for d in self._devices(config, name)]
            h = healths.health(config, devices, str(config.get("targetCondition")))
            ev.waiting("devices", h.ready or 0, h.desired or 0)
            if h.state == HEALTHY:
                break
            if h.state == UNSCHEDULABLE:
                raise ProviderError(f"{desired.address}: {h.message} (Unschedulable): nothing runs it; tag devices "
                                    "or change the target's target_condition")
            pending = [d for d in devices if not d.ok and not d.failing]
            if h.failed and not pending:
                raise ProviderError(f"{desired.address}: deployment {config_id} is {h.state}: {h.message}")
            if time.monotonic() >= deadline:
                raise ProviderError(f"{desired.address}: not running on every device after {timeout:.0f}s "
                                    f"(deploy.rollout_timeout_s): {h.message}; a device needs a base deployment "
                                    "of lower priority, and to be online")
            ev.sleep(POLL_S)
        self._smoke(desired, devices, ev)

    def _ready(self, device: healths.Device) -> bool:
        """Whether a reachable device's module answers /ready (an unreachable one: the agent's word)."""
        url = self._url(device)
        return url is None or is_ready(url.rsplit("/", 1)[0], timeout=1.0)

    def _smoke(self, desired: Resource, devices: list[healths.Device], ev: Events) -> None:
        sample = desired.inputs.get("sample_request")
        reachable = [d for d in devices if d.ok and self._url(d)]
        if not sample:
            return
        if not reachable:
            ev("no device endpoint is reachable from here: sample request not sent (status is health-only)")
            return
        headers = self._headers(desired.address.name, desired.spec["deploy"].get("auth"))
        for device in reachable[:SMOKE_DEVICES]:
            ev(f"sample request to device {device.device_id}")
            problem = smoke_test(str(self._url(device)), sample, headers)
            if problem:
                raise ProviderError(f"{desired.address}: on device {device.device_id}: {problem}")

    def _runs_nowhere(self, config_id: str, name: str) -> bool:
        config = self.hub.get_configuration(config_id)
        return config is None or not any(d.ok for d in self._devices(config, name))

    def _retire(self, name: str, *, keep: str, events: Events) -> None:
        """Delete this service's other deployments of ours (the previous one, leftovers of a crash)."""
        group = self._ours().get(name, [])
        self._delete_ids([c["id"] for c in group if c["id"] != keep], events, group)

    def _delete_ids(self, ids: list[str], ev: Events, group: list[dict[str, Any]] | None = None) -> None:
        etags = {c["id"]: c.get("etag") for c in group or []}
        for config_id in ids:
            ev(f"deleting deployment {config_id}")
            self.hub.delete_configuration(config_id, etags.get(config_id))

    def _wait_removed(self, live: Live, config: Mapping[str, Any], ev: Events) -> None:
        """Until the devices that ran this deployment's module no longer do (the hub recomputes the merge)."""
        name = live.address.name
        image = mf.module_of(config, name).get("settings", {}).get("image")
        devices = [d["device"] for d in live.details.get("devices") or []]

        def still() -> list[str]:
            out = []
            for device in devices:
                twin = self.hub.module_twin(device, "$edgeAgent") or {}
                props = twin.get("properties") or {}
                desired = ((props.get("desired") or {}).get("modules") or {}).get(name) or {}
                reported = ((props.get("reported") or {}).get("modules") or {}).get(name) or {}
                if desired.get("settings", {}).get("image") == image:
                    continue   # another deployment of ours (a move) gives it the same module
                if reported.get("settings", {}).get("image") == image:
                    out.append(device)
            return out

        deadline = time.monotonic() + 60
        while devices and time.monotonic() < deadline:
            left = still()
            ev.waiting("devices to remove the module", len(devices) - len(left), len(devices))
            if not left:
                return
            ev.sleep(POLL_S)
        if devices:
            ev("some devices still report the module (offline?); their agents remove it when they next connect")

    # -- using ----------------------------------------------------------------------------------
    def _device(self, live: Live, instance: str | None) -> dict[str, Any]:
        devices = list(live.details.get("devices") or [])
        if instance:
            found = next((d for d in devices if d["device"] == instance), None)
            if found is None:
                names = ", ".join(d["device"] for d in devices) or "none"
                raise ProviderError(f"{live.address}: device {instance!r} is not targeted by it (targeted: {names})")
            return found
        healthy = [d for d in devices if d.get("ok")]
        if healthy:
            return healthy[0]
        if devices:
            return devices[0]
        raise ProviderError(f"{live.address}: no device runs it ({live.details.get('message') or live.status})")

    def _headers(self, name: str, auth: str | None, live: Live | None = None) -> dict[str, str]:
        if auth != "key":
            return {}
        key = self.keys.load(name).get("primary")
        if not key and live is not None:   # another machine applied it: the deployment has them
            config = self.hub.get_configuration(str(live.details.get("deployment")))
            env = mf.module_of(config or {}, name).get("env") or {}
            key = (env.get("MLOPS_PRIMARY_KEY") or {}).get("value")
        return {"Authorization": f"Bearer {key}"} if key else {}

    def endpoint(self, live: Live, instance: str | None = None) -> Endpoint | None:
        """A device's module (a healthy one unless ``instance`` names one); None without device_host."""
        device = self._device(live, instance)
        if not device.get("url"):
            return None
        return Endpoint(scoring_url=device["url"], headers=self._headers(live.address.name, live.details.get("auth"),
                                                                         live))

    def call(self, live: Live, body: bytes, *, instance: str | None = None,
             timeout: float = 120) -> tuple[int, bytes, str]:
        device = self._device(live, instance)
        found = self.endpoint(live, device["device"])
        if found is None:
            raise ProviderError(f"{live.address}: device {device['device']}'s endpoint is not reachable from here "
                                "(set device_host on the target); `mlops status` shows its health")
        try:
            reply = request(found.scoring_url, data=body, timeout=timeout,
                            headers={**found.headers, "Content-Type": "application/json"})
        except OSError as exc:
            raise ProviderError(f"device {device['device']}: cannot reach {found.scoring_url}: {exc}") from None
        return reply.status, reply.body, f"device {device['device']} ({found.scoring_url})"

    def logs(self, live: Live, *, follow: bool = False, tail: int | None = None,
             instance: str | None = None) -> Iterator[str]:
        """The module's log through the agent's GetModuleLogs direct method (the device must be online)."""
        device = self._device(live, instance)["device"]
        if not instance:
            yield f"# device {device} (choose another with --device)"
        since: int | None = None
        while True:
            filt: dict[str, Any] = {}
            if since is not None:
                filt["since"] = str(since)
            elif tail is not None:
                filt["tail"] = tail
            payload = {"schemaVersion": "1.0", "items": [{"id": live.address.name, "filter": filt}],
                       "encoding": "none", "contentType": "text"}
            now = int(time.time())
            status, answer = self.hub.invoke_module_method(device, "$edgeAgent", "GetModuleLogs", payload)
            if status != 200:
                raise ProviderError(f"{live.address}: GetModuleLogs on device {device} answered {status}: "
                                    f"{str(answer)[:200]}")
            for item in answer or []:
                text = item.get("payload")
                if text is None and item.get("payloadBytes"):
                    import base64
                    import gzip

                    text = gzip.decompress(base64.b64decode(item["payloadBytes"])).decode(errors="replace")
                yield from str(text or "").splitlines()
            if not follow:
                return
            since = now
            time.sleep(2)

