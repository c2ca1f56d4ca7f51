"""Reading a service back from the hub: our deployments by their labels, each targeted device's view,
the device's URL, and the ``Live`` they make (with both versions while a ring rollout runs)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from planner.core.addresses import Address
from planner.core.errors import ProviderError
from planner.core.resources import TRANSITIONING, Health, Live, Version, spec_fingerprint

from . import health as healths
from . import manifest as mf
from . import rings

if TYPE_CHECKING:
    from providers.base import ProjectContext

    from .hub import HubClient

_PLACEHOLDER = re.compile(r"\{(device_id|tags\.[A-Za-z0-9_.-]+)\}")
TWIN_PARALLELISM = 8


class ReadsFleet:
    """The reading half of the iotedge provider (mixed into it): nothing here changes the hub."""

    context: ProjectContext
    target: str
    kind: str
    config: Mapping[str, Any]
    hub: HubClient

    def ring_key(self, name: str) -> str:
        return rings.ring_key(self.context.project, self.target, name)

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

    @staticmethod
    def _split(group: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, dict[str, Any] | None,
                                                     list[dict[str, Any]]]:
        """(the service's deployment, its ring candidate, leftovers to remove) of one service's group."""
        candidates = [c for c in group if rings.is_candidate(c)]
        regular = [c for c in group if not rings.is_candidate(c)]
        if not regular:
            return (candidates[-1] if candidates else None), None, candidates[:-1]
        return regular[-1], (candidates[-1] if candidates else None), regular[:-1] + candidates[:-1]

    def read(self) -> list[Live]:
        return [self._live(name, group) for name, group in sorted(self._ours().items())]

    def _twins(self, condition: str) -> list[dict[str, Any]]:
        return sorted(self.hub.query_devices(condition), key=lambda t: str(t.get("deviceId")))

    def _agents(self, ids: list[str]) -> list[dict[str, Any] | None]:
        """``$edgeAgent`` twins by one query per 100 devices (a hub that refuses the module query: one GET
        per device, in parallel)."""
        try:
            found = self.hub.agent_twins(ids)
            return [found.get(i) for i in ids]
        except ProviderError:
            with ThreadPoolExecutor(max_workers=TWIN_PARALLELISM, thread_name_prefix="twins") as pool:
                return list(pool.map(lambda i: self.hub.module_twin(i, "$edgeAgent"), ids))

    def _devices(self, config: Mapping[str, Any], name: str) -> list[healths.Device]:
        """Every device ``config`` targets, judged against it."""
        twins = self._twins(str(config.get("targetCondition") or ""))
        agents = self._agents([str(t["deviceId"]) for t in twins])
        return [healths.device_state(config["id"], name, t, a) for t, a in zip(twins, agents, strict=True)]

    def _split_devices(self, stable: Mapping[str, Any], candidate: Mapping[str, Any] | None,
                       name: str) -> tuple[list[healths.Device], list[healths.Device]]:
        """The stable deployment's devices, judged against the deployment each should run: (stable, ring)."""
        twins = self._twins(str(stable.get("targetCondition") or ""))
        agents = self._agents([str(t["deviceId"]) for t in twins])
        value = rings.ring_value(str(candidate["id"])) if candidate else None
        key = self.ring_key(name)
        widened = candidate is not None and candidate.get("targetCondition") == stable.get("targetCondition")
        plain: list[healths.Device] = []
        ring: list[healths.Device] = []
        for twin, agent in zip(twins, agents, strict=True):
            in_ring = candidate is not None and (widened or rings.ring_of(twin, key) == value)   # widened: promoting
            config = candidate if in_ring and candidate is not None else stable
            (ring if in_ring else plain).append(healths.device_state(config["id"], name, twin, agent))
        return plain, ring

    def _live(self, name: str, group: list[dict[str, Any]]) -> Live:
        current, candidate, leftovers = self._split(group)
        assert current is not None, "a group holds at least one deployment"
        spec = self._spec(current)
        stable_fp = spec_fingerprint(spec)
        if leftovers:
            spec["superseded_deployments"] = [c["id"] for c in leftovers]
        plain, ring = self._split_devices(current, candidate, name)
        devices = plain + ring
        health = healths.health(current, devices, str(current.get("targetCondition")))
        default = healths.first(devices)
        lab = current.get("labels") or {}
        versions = Version.only({k: v for k, v in spec.items() if k != "superseded_deployments"}, current["id"],
                                health)
        ring_ids = {d.device_id for d in ring}
        version_of = {d.device_id: stable_fp for d in plain}
        if candidate is not None:
            candidate_fp = spec_fingerprint(self._spec(candidate, condition=spec["target_condition"]))
            version_of.update(dict.fromkeys(ring_ids, candidate_fp))
            share = len(ring) / len(devices) if devices else 0.0
            ring_health = (healths.health(candidate, ring, "", scoped=True) if ring else
                           Health(TRANSITIONING, "in no ring yet: 0 devices", 0, 0, 0, unit="devices"))
            versions = (Version(current["id"], stable_fp, 1.0 - share, healths.health(current, plain, "", scoped=True)),
                        Version(candidate["id"], candidate_fp, share, ring_health))
        details = {
            "deployment": current["id"],
            "etag": current.get("etag"),
            "priority": current.get("priority"),
            "superseded": [c["id"] for c in leftovers],
            "devices": [{"device": d.device_id, "ok": d.ok, "runtime_status": d.runtime_status,
                         "url": self._url(d), "failing": d.failing, "version": version_of.get(d.device_id),
                         "ring": d.device_id in ring_ids} for d in sorted(devices, key=lambda d: d.device_id)],
            "counts": healths.counts(current),
            "endpoint": self._url(default) if default else None,
            "device": default.device_id if default else None,
            "auth": (spec.get("deploy") or {}).get("auth", "none"),
            "git": {"commit": None if lab.get("mlops-git-commit") in (None, "none") else lab["mlops-git-commit"],
                    "dirty": lab.get("mlops-git-dirty") == "true"},
            "message": health.message,
        }
        if candidate is not None:
            details["candidate"] = candidate["id"]
        stored = mf.stored_spec(current)
        return Live(Address("service", name), spec, health.state, target=self.target, provider=self.kind,
                    details=details, sensitive=frozenset(stored[1] if stored else []), health=health,
                    versions=versions, rollout=rings.state_of(current))

    @staticmethod
    def _spec(config: Mapping[str, Any], condition: str | None = None) -> dict[str, Any]:
        """The spec a deployment of ours was made from, with the condition its devices are chosen by."""
        stored = mf.stored_spec(config)
        spec = dict(stored[0]) if stored else {}
        return {**spec, "target_condition": condition if condition is not None else config.get("targetCondition")}

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
