"""Changing a service on the hub: one new deployment per change, waited for on every targeted device.

Content and id are immutable in IoT Hub, so a change is a new deployment at a higher priority;
the previous one is deleted once the new one runs on every targeted device. Only the target
condition, labels and priority can change in place (If-Match: the etag). A crash between "create
the new" and "delete the old" leaves the old one listed as ``superseded_deployments`` in the live
spec, so the next plan shows an update that removes it.

Failure policy: when the new deployment runs on no device at all, the change is broken and an
update rolls back (deletes the new deployment, the previous one serves again); when it runs on
some devices, it stays, and the devices where it fails are named (IoT Hub has no per-device
fallback, and a recreate would restart the healthy ones too).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from planner.core.errors import CancelledError, ProviderError
from planner.core.events import Events
from planner.core.resources import HEALTHY, UNSCHEDULABLE, Live, Resource

from ..base import Progress, as_events
from ..http import is_ready, smoke_test
from . import health as healths
from . import manifest as mf
from . import rings
from .fleet import ReadsFleet

if TYPE_CHECKING:
    from providers.images import ImageBuilder
    from providers.keys import KeyStore

HUB_LIMIT = 100
"""Deployments (layered included) a paid hub holds."""
POLL_S = 1.0
SMOKE_DEVICES = 10
REMOVAL_WAIT_S = 60.0


class Deploys(ReadsFleet):
    """create / update / delete of the iotedge provider (mixed into it), and the waits they share."""

    images: ImageBuilder
    keys: KeyStore

    # provided by the provider class
    condition: str
    base_priority: int

    if TYPE_CHECKING:   # the provider class's own, declared for the type checker only
        def describe(self) -> str: ...
        def ensure_image(self, desired: Resource, progress: Progress) -> Any: ...
        def _configuration(self, desired: Resource, image: str, keys: Mapping[str, str], *,
                           priority: int) -> dict[str, Any]: ...
        def _headers(self, name: str, auth: str | None, live: Live | None = None) -> dict[str, str]: ...

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
            ring = next((c for c in group if c["id"] == body["id"] and rings.is_candidate(c)), None)
            if ring is not None:   # this very content runs in a ring (an unfinished rollout): every device now
                self._update_in_place(ring, body, ev)
                self._clear_rings(name, ev)
            created = ring is None and self._put(body, ev)
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
        self._delete_ids(ids, ev, group)
        self._clear_rings(live.address.name, ev)
        self._wait_removed(live, self._split(group)[0] or group[-1], ev)

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

    def _update_in_place(self, current: Mapping[str, Any], body: Mapping[str, Any], ev: Events) -> None:
        """Same content: only the target condition and labels change (If-Match: its etag)."""
        if current.get("targetCondition") == body["targetCondition"] and current.get("labels") == body["labels"]:
            return
        what = f"target condition {body['targetCondition']}" \
            if current.get("targetCondition") != body["targetCondition"] else "labels"
        ev(f"updating deployment {current['id']}: {what}")
        fresh = self.hub.get_configuration(current["id"]) or dict(current)
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
        """Delete this service's other deployments of ours (the previous one, a ring candidate, leftovers of
        a crash) and the ring tags a removed candidate leaves on devices."""
        group = self._ours().get(name, [])
        gone = [c for c in group if c["id"] != keep]
        self._delete_ids([c["id"] for c in gone], events, group)
        if any(rings.is_candidate(c) for c in gone):
            self._clear_rings(name, events)

    def _clear_rings(self, name: str, ev: Events) -> list[str]:
        """Remove this service's ring tag from every device that carries one (also one retagged out of the
        target's condition meanwhile); the devices untagged."""
        key = self.ring_key(name)
        tagged = [str(t["deviceId"]) for t in self._twins(f"IS_DEFINED({rings.tag_path(key)})")]
        for device in tagged:
            self.hub.update_twin_tags(device, {rings.RING_TAG: {key: None}})
        if tagged:
            ev(f"removed the ring tag {rings.tag_path(key)} from {len(tagged)} device(s)")
        return tagged

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

        deadline = time.monotonic() + REMOVAL_WAIT_S
        while devices and time.monotonic() < deadline:
            left = still()
            ev.waiting("devices to remove the module", len(devices) - len(left), len(devices))
            if not left:
                return
            ev.sleep(POLL_S)
        if devices:
            ev("some devices still report the module (offline?); their agents remove it when they next connect")
