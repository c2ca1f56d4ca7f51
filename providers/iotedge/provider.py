"""``provider: iotedge``: each service is a module on a fleet of IoT Edge devices, via IoT Hub deployments.

A service is one layered deployment (manifest.py says why) whose id is a hash of its content. Our
deployments carry labels (project, target, service, fingerprint, git commit) and are found by
them; anything else on the hub is never touched. This class holds the settings, the connection and
the plan-time checks; the work is in modules with one job each, mixed in: fleet.py reads a service
back, deploying.py changes it (one deployment per change), rollout.py rolls a change out by rings
of devices (rings.py), access.py reaches a device's module; schema.py declares the settings.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from planner.core.errors import ProviderError, Unreachable
from planner.core.plan import Rules
from planner.core.resources import FAILED, Live, Resource

from ..base import (
    KindSchema,
    Preparation,
    ProjectContext,
    Provider,
    Reachable,
    Renders,
    SplitsTraffic,
    environment_variables,
)
from ..bundle import runtime_version
from ..images import REGISTRY_PASSWORD_ENV, ImageTarget
from . import deploying
from . import manifest as mf
from . import schema as kind_schema
from .access import ReachesDevices
from .hub import ConnectionString, HubClient
from .rollout import RingRollout

PLACEHOLDER_DIGEST = "sha256:" + "0" * 64


def port_scope(config: Mapping[str, Any]) -> str | None:
    """Modules of one target share each device's ports (never the hub's secret in the scope)."""
    cond = config.get("target_condition") or (f"deviceId='{config['device_id']}'" if config.get("device_id") else None)
    return f"the IoT Edge devices where {cond}" if cond else None


def normalize_deploy(deploy: Mapping[str, Any]) -> dict[str, Any]:
    """Deploy settings with the defaults filled in (omitting a default is no diff); empty maps dropped."""
    out = {**kind_schema.DEFAULTS, **deploy}
    for key in ("environment_variables", "create_options"):
        if out.get(key) == {}:
            del out[key]
    return dict(sorted(out.items()))


class IotEdgeProvider(RingRollout, ReachesDevices, ImageTarget, Reachable, Renders, SplitsTraffic, Provider):
    """Services as modules on IoT Edge devices chosen by a target condition over their twins."""

    kind: ClassVar[str] = "iotedge"

    def __init__(self, *, target: str, config: Mapping[str, Any], context: ProjectContext):
        super().__init__(target=target, config=config, context=context)
        self.init_images(context, self.config.get("registry"), log_dir=context.state_dir / "iotedge" / "builds")
        self._hub: HubClient | None = None

    # -- what the core asks before anything runs ---------------------------------------------------
    @classmethod
    def schema(cls) -> KindSchema:
        return KindSchema(target=kind_schema.target_schema(), deploy=kind_schema.deploy_schema(),
                          port_scope=port_scope, service_name_problem=lambda name: None)

    def prepare(self) -> Preparation:
        """The bundled runtime; deploy defaults filled in; the spec plus its image (content address) and the
        condition choosing its devices."""
        return Preparation(runtime=runtime_version(), deploy=normalize_deploy,
                           spec=lambda name, spec: {**self.with_image(name, spec), "target_condition": self.condition})

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
        limit = deploying.HUB_LIMIT
        if count + len(desired) > limit - 5:
            out.append(f"the hub holds {count} of its {limit} deployments; a change needs one more while it rolls out")
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
