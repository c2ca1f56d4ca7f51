"""A progressive rollout on IoT Edge, by rings of devices (``SplitsTraffic``; rings.py says how).

start_candidate creates the candidate deployment (its ring still empty); set_traffic tags the ring
for the step's weight and waits until those devices settle; promote makes the candidate the
service's deployment for every device (its target condition and labels change in place, content
never does), deletes the stable one and the ring tags; abort deletes the candidate and the tags.
The state is written to the stable deployment's label before a call returns (start, abort: first,
so a crash never leaves a candidate the state does not explain). Every call works out what is
already done from the hub, so a retried or resumed call finishes the work of an interrupted one.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any

from planner.core.errors import ProviderError
from planner.core.events import Events
from planner.core.resources import Live, Resource, RolloutState, spec_fingerprint

from ..base import Progress
from ..http import is_ready
from . import rings
from .deploying import POLL_S, Deploys

STRATEGIES = frozenset({"canary", "blue_green"})
"""No request mirroring on devices: a device runs one version of a module, so shadow cannot be done."""
STATE_WRITE_ATTEMPTS = 3


class RingRollout(Deploys):
    """The ``SplitsTraffic`` methods of the iotedge provider (mixed into it)."""

    @classmethod
    def rollout_strategies(cls, config: Mapping[str, Any]) -> frozenset[str]:
        return STRATEGIES

    def start_candidate(self, desired: Resource, live: Live, state: RolloutState, events: Progress) -> Live:
        ev = self._begin(events)
        self._check_condition()
        body = self._build(desired, ev, self._ours().get(desired.address.name, []))
        return self._start_ring(desired, body, state, ev)

    def _start_ring(self, desired: Resource, body: dict[str, Any], state: RolloutState, ev: Events) -> Live:
        """The candidate deployment ``body`` (image built, priority above ours), its ring empty; the state kept."""
        name = desired.address.name
        group = self._ours().get(name, [])
        stable, candidate, _ = self._split(group)
        if stable is None:
            raise ProviderError(f"{desired.address}: nothing runs on {self.describe()} to roll out beside")
        if body["id"] == stable["id"]:
            raise ProviderError(f"{desired.address}: the candidate is the version that runs already "
                                f"({stable['id']})")
        body["targetCondition"] = rings.ring_condition(self.condition, self.ring_key(name), body["id"])
        body["labels"] = {**body["labels"], rings.ROLE_LABEL: rings.CANDIDATE}
        self._keep(stable, state, ev)
        if candidate is not None and candidate["id"] != body["id"]:
            ev(f"removing the candidate {candidate['id']} of an earlier rollout")
            self._delete_ids([candidate["id"]], ev, group)
            self._clear_rings(name, ev)
        self._put(body, ev)
        return self._read_one(name)

    def set_traffic(self, live: Live, state: RolloutState, events: Progress) -> Live:
        ev = self._begin(events)
        name = live.address.name
        stable, candidate, _ = self._split(self._ours().get(name, []))
        if stable is None or candidate is None:
            raise ProviderError(f"{live.address}: no candidate deployment on the hub to give a ring of "
                                f"{state.weight:g}% (`mlops apply` starts the rollout again)")
        key, value = self.ring_key(name), rings.ring_value(candidate["id"])
        twins = self._twins(self.condition)
        members = set(rings.ring_members([str(t["deviceId"]) for t in twins], state.weight))
        moved = []
        for twin in twins:
            device = str(twin["deviceId"])
            want = value if device in members else None
            if rings.ring_of(twin, key) != want:
                self.hub.update_twin_tags(device, {rings.RING_TAG: {key: want}})
                moved.append(device)
        if moved:
            ev(f"ring of {state.weight:g}%: {len(members)} of {len(twins)} device(s) run the candidate "
               f"({', '.join(sorted(members)) or 'none'})")
            self._settle(name, set(moved), self._timeout(live), ev)
        self._keep(stable, state, ev)
        return self._read_one(name)

    def promote(self, live: Live, desired: Resource, events: Progress) -> Live:
        ev = self._begin(events)
        name = desired.address.name
        group = self._ours().get(name, [])
        stable, candidate, _ = self._split(group)
        if candidate is None:
            if stable is None or spec_fingerprint(self._spec(stable)) != spec_fingerprint(desired.spec):
                raise ProviderError(f"{desired.address}: no candidate deployment on the hub to promote")
            candidate = stable   # promoted already (an interrupted promote): finish the clean-up
        ev(f"promoting {candidate['id']}: every device of {self.condition} runs it")
        # Widened first, still labelled a candidate: if it fails on the other devices, abort finds and deletes it.
        self._update_in_place(candidate, {"targetCondition": self.condition, "labels": candidate.get("labels")}, ev)
        self._wait(desired, candidate["id"], ev)
        widened = self.hub.get_configuration(candidate["id"]) or candidate
        labels = {k: v for k, v in (widened.get("labels") or {}).items()
                  if k not in (rings.ROLE_LABEL, rings.STATE_LABEL)}
        self._update_in_place(widened, {"targetCondition": self.condition, "labels": labels}, ev)
        self._retire(name, keep=candidate["id"], events=ev)
        self._clear_rings(name, ev)
        return self._read_one(name)

    def abort(self, live: Live, state: RolloutState, events: Progress) -> Live:
        ev = self._begin(events)
        name = live.address.name
        group = self._ours().get(name, [])
        stable, candidate, _ = self._split(group)
        if stable is None:
            raise ProviderError(f"{live.address}: no stable deployment on the hub to go back to")
        if state.phase != "aborted":
            state = dataclasses.replace(state, phase="aborted")
        self._keep(stable, state, ev)
        if candidate is not None:
            ev(f"aborting: deleting the candidate {candidate['id']}, the stable version serves every device again")
            self._delete_ids([candidate["id"]], ev, group)
        self._settle(name, set(self._clear_rings(name, ev)), self._timeout(live), ev)
        return self._read_one(name)

    def clear(self, live: Live, events: Progress) -> Live:
        ev = self._begin(events)
        stable, _, _ = self._split(self._ours().get(live.address.name, []))
        if stable is not None:
            self._keep(stable, None, ev)
        return self._read_one(live.address.name)

    # -- helpers ------------------------------------------------------------------------------------
    def _read_one(self, name: str) -> Live:
        group = self._ours().get(name)
        if not group:
            raise ProviderError(f"service.{name}: no deployment of it is left on the hub")
        return self._live(name, group)

    @staticmethod
    def _timeout(live: Live) -> float:
        return float((live.spec.get("deploy") or {}).get("rollout_timeout_s", 600))

    def _keep(self, config: Mapping[str, Any], state: RolloutState | None, ev: Events) -> None:
        """Write ``state`` into the deployment's label (None removes it); If-Match, re-read on a race."""
        value = rings.state_label(state)
        for _ in range(STATE_WRITE_ATTEMPTS):
            fresh = self.hub.get_configuration(config["id"])
            if fresh is None:
                raise ProviderError(f"deployment {config['id']} disappeared from the hub")
            labels = dict(fresh.get("labels") or {})
            if labels.get(rings.STATE_LABEL) == value:
                return
            if value is None:
                labels.pop(rings.STATE_LABEL, None)
            else:
                labels[rings.STATE_LABEL] = value
            update = {k: v for k, v in fresh.items() if k != "systemMetrics"}
            if self.hub.try_update_configuration({**update, "labels": labels}, str(fresh.get("etag") or "*")):
                return
            ev.check()
        raise ProviderError(f"deployment {config['id']} kept changing while its rollout state was written")

    def _settle(self, name: str, moved: set[str], timeout: float, ev: Events) -> None:
        """Until every device that just moved in or out of the ring runs (and answers /ready where reachable)
        or has settled failing the version it should run now; the others are not waited for (an offline
        device would hold every step). One still switching after ``timeout`` is left to the analysis."""
        deadline = time.monotonic() + timeout
        while moved:
            ev.check()
            devices = [d for d in self._read_one(name).details.get("devices") or [] if d["device"] in moved]
            ready = [d for d in devices if d["ok"] and (not d.get("url") or is_ready(d["url"].rsplit("/", 1)[0],
                                                                                      timeout=1.0))]
            pending = [d for d in devices if d not in ready and not d.get("failing")]
            ev.waiting("devices", len(ready), len(devices))
            if not pending:
                return
            if time.monotonic() >= deadline:
                ev(f"after {timeout:.0f}s still switching: {', '.join(d['device'] for d in pending)}")
                return
            ev.sleep(POLL_S)
