"""A provider built for tests that keeps its services in memory.

It follows the same protocol and the same planner rules as real providers, so planner
properties (apply then plan is a no-op, failures are contained) can be checked fast and many
times; at least one end-to-end run per property also uses the real local provider.

Test knobs: target ``read_latency_ms`` (a slow API), ``unreachable`` (connect fails), ``region`` (a
plain setting echoed in status messages, plan warnings and errors, as cloud SDKs do);
deploy ``fail`` (create fails), ``slow_s`` (create waits, cancellable), ``state`` (the service
reports that state, e.g. Unschedulable, with replica counts).

It splits traffic (``SplitsTraffic``): a candidate runs beside the stable version and the rollout
state is kept in the service's record, as a real target keeps it on itself (one record per service,
read back by every later read in this process). Its metrics are a simulated load: target
``load_rps`` requests a second (default 5000) since the last scrape, shared by the versions' weights
(a mirror copies its share to the candidate as well); each version answers 5xx for its deploy
``error_rate`` (a fraction) and takes its deploy ``latency_ms`` (default 5). Target ``metrics: false``
reports none (the rollout then calls the service: ``call`` answers from a version chosen by weight);
``metrics_fail_every: N`` makes every Nth metrics read fail (HTTP 503). Target ``persist: true`` writes
the records to a file in the state folder on every change, so another process (an apply killed with
-9, then another) reads them back.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pickle
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

from planner.plan import Rules
from planner.resources import FAILED, HEALTHY, Health, Live, Resource, RolloutState, Version, spec_fingerprint
from providers.base import (
    Endpoint,
    Events,
    KindSchema,
    Preparation,
    Progress,
    Provider,
    ProviderError,
    Reachable,
    SplitsTraffic,
    Unreachable,
    as_events,
)

STATE: dict[tuple[str, str], dict[str, Live]] = {}
COUNTERS: dict[tuple[str, str, str], dict[str, Any]] = {}
"""(target key, service, version) -> simulated cumulative counters: {"codes": {...}, "latency": [...], "n": int}."""
CALLS: list[tuple[str, str, str]] = []
"""(service, version, kind) of every rollout call, in order: what the driver asked of the target."""
BOUNDS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, math.inf)
_lock = threading.Lock()
KEYS_SEEN: dict[str, dict[str, str]] = {}
_instances = 0


class _Records(dict):
    """Service records written to a file on every change (atomically: a process killed with -9 mid-write
    leaves the previous file), so another process reads them back: target ``persist: true``."""

    def __init__(self, path: Path, data: dict[str, Live]):
        super().__init__(data)
        self.path = path

    @classmethod
    def load(cls, path: Path) -> _Records:
        try:
            return cls(path, pickle.loads(path.read_bytes()))
        except FileNotFoundError:
            return cls(path, {})

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        staging = self.path.with_suffix(f".{os.getpid()}.tmp")
        staging.write_bytes(pickle.dumps(dict(self)))
        os.replace(staging, self.path)

    def __setitem__(self, key: str, value: Live) -> None:
        super().__setitem__(key, value)
        self._save()

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self._save()


class MemoryProvider(Reachable, SplitsTraffic, Provider):
    kind: ClassVar[str] = "memory"

    @classmethod
    def schema(cls) -> KindSchema:
        return KindSchema(target={"type": "object", "additionalProperties": False, "properties": {
            "provider": {"const": "memory"}, "read_latency_ms": {"type": "integer", "minimum": 0},
            "unreachable": {"type": "boolean"}, "token": {"type": "string", "writeOnly": True},
            "region": {"type": "string"}, "load_rps": {"type": "number", "minimum": 0},
            "metrics": {"type": "boolean"}, "persist": {"type": "boolean"},
            "metrics_fail_every": {"type": "integer", "minimum": 1}}},
            deploy={"type": "object", "properties": {
            "port": {"type": "integer"}, "replicas": {"type": "integer"}, "fail": {"type": "boolean"},
            "slow_s": {"type": "number"}, "state": {"type": "string"}, "auth": {"enum": ["key", "none"]},
            "primary_key": {"type": "string"}, "error_rate": {"type": "number", "minimum": 0, "maximum": 1},
            "latency_ms": {"type": "number", "minimum": 0}}, "additionalProperties": False})

    def connect(self) -> None:
        if self.config.get("unreachable"):
            # Like an SDK that echoes the connection string it was given: the redactor must catch it.
            region = f" in region {self.config['region']}" if self.config.get("region") else ""
            raise Unreachable(f"the memory API does not answer to token {self.config.get('token')}{region}; "
                              "unset `unreachable` on this target")

    def prepare(self) -> Preparation:
        return Preparation(runtime="memory-runtime@1", deploy=lambda deploy: {"replicas": 1, **deploy})

    def rules(self, desired: Resource | None, live: Live | None) -> Rules:
        return Rules(replace_paths=frozenset({"deploy.port"}))

    @property
    def _services(self) -> dict[str, Live]:
        key = (str(self.context.state_dir), self.target)
        if self.config.get("persist"):   # read back what any process wrote last
            STATE[key] = _Records.load(Path(self.context.state_dir) / f"memory-{self.target}.pickle")
        return STATE.setdefault(key, {})

    def read(self) -> list[Live]:
        latency = self.config.get("read_latency_ms", 0)
        if latency:
            time.sleep(latency / 1000)
        return list(self._services.values())

    def _live(self, desired: Resource, events: Events) -> Live:
        deploy = desired.spec["deploy"]
        if deploy.get("slow_s"):
            events.waiting("replicas", 0, deploy["replicas"])
            events.sleep(deploy["slow_s"])
        if deploy.get("fail"):
            raise ProviderError(f"{desired.address}: start failed (deploy.fail is set)")
        global _instances
        _instances += 1
        keys = self.keys.keys_for(desired.address.name, deploy.get("auth"), desired.secrets)
        KEYS_SEEN[desired.address.name] = keys
        state = deploy.get("state", HEALTHY)
        replicas = deploy["replicas"]
        health = Health(state, "", ready=replicas if state == HEALTHY else 0, desired=replicas)
        region = self.config.get("region")
        return Live(desired.address, dict(desired.spec), state, target=self.target, provider=self.kind,
                    details={"endpoint": f"memory://{desired.address.name}", "instance": _instances,
                             **({"message": f"running in region {region}"} if region else {})},
                    sensitive=desired.sensitive, health=health,
                    versions=Version.only(desired.spec, _instances, health))

    def validate(self, services: Sequence[Resource]) -> list[str]:
        region = self.config.get("region")
        return [f"{len(services)} service(s) run in region {region}"] if region else []

    def create(self, desired: Resource, events: Progress) -> Live:
        events = as_events(events)
        events.step("creating in memory")
        live = self._live(desired, events)
        self._services[desired.address.name] = live
        return live

    def update(self, desired: Resource, live: Live, events: Progress) -> Live:
        return self.create(desired, events)

    def delete(self, live: Live, events: Progress) -> None:
        # Only the instance that was read: a replacement created first has the same name.
        current = self._services.get(live.address.name)
        if current is not None and current.details["instance"] == live.details["instance"]:
            del self._services[live.address.name]

    def kill(self, name: str) -> None:
        """Simulate a crash behind the tool's back."""
        live = self._services[name]
        self._services[name] = Live(live.address, live.spec, FAILED, live.target, live.provider, live.details)

    def endpoint(self, live: Live, instance: str | None = None) -> Endpoint:
        return Endpoint(scoring_url=str(live.details["endpoint"]))

    def logs(self, live: Live, *, follow: bool = False, tail: int | None = None,
             instance: str | None = None) -> Iterator[str]:
        yield from ()

    # -- SplitsTraffic: a candidate beside the stable version, the state kept in the service's record ----------

    def _current(self, name: str) -> Live:
        current = self._services.get(name)
        if current is None:
            raise ProviderError(f"service.{name}: not running on memory target {self.target!r}")
        return current

    def _record(self, current: Live, state: RolloutState, candidate: Version | None, spec: dict | None) -> Live:
        """The service's record with ``state`` kept on it and each version's traffic share."""
        stable_fp = spec_fingerprint(current.spec)
        stable = next(v for v in current.versions if v.spec_fingerprint == stable_fp)
        share = (state.weight / 100) if candidate is not None else 0.0
        versions = (dataclasses.replace(stable, traffic=1.0 - share),)
        details = {k: v for k, v in current.details.items() if k != "candidate"}
        if candidate is not None:
            versions += (dataclasses.replace(candidate, traffic=share),)
            details["candidate"] = spec
        live = dataclasses.replace(current, versions=versions, rollout=state, details=details)
        self._services[current.address.name] = live
        return live

    def start_candidate(self, desired: Resource, live: Live, state: RolloutState, events: Progress) -> Live:
        events = as_events(events)
        current = self._current(desired.address.name)
        if current.rollout is not None and current.rollout.candidate == state.candidate \
                and "candidate" in current.details:
            CALLS.append((desired.address.name, state.candidate, "start reused"))
            candidate = next(v for v in current.versions if v.spec_fingerprint == state.candidate)
            return self._record(current, state, candidate, dict(desired.spec))
        CALLS.append((desired.address.name, state.candidate, "start"))
        made = self._live(desired, events)          # the knobs (fail, slow_s, state) apply to the candidate
        return self._record(current, state, made.versions[0], dict(desired.spec))

    def set_traffic(self, live: Live, state: RolloutState, events: Progress) -> Live:
        CALLS.append((live.address.name, state.candidate, f"traffic {state.phase} {state.step} {state.weight:g}"))
        current = self._current(live.address.name)
        running = current.rollout is not None and current.rollout.candidate == state.candidate
        if not running or "candidate" not in current.details:
            raise ProviderError(f"{live.address}: no candidate {state.candidate[:12]} runs to send traffic to")
        candidate = next(v for v in current.versions if v.spec_fingerprint == state.candidate)
        return self._record(current, state, candidate, current.details["candidate"])

    def promote(self, live: Live, desired: Resource, events: Progress) -> Live:
        CALLS.append((live.address.name, spec_fingerprint(desired.spec), "promote"))
        current = self._current(live.address.name)
        want = spec_fingerprint(desired.spec)
        if spec_fingerprint(current.spec) == want and current.rollout is None:
            return current                       # promoted already
        if current.rollout is None or current.rollout.candidate != want or "candidate" not in current.details:
            raise ProviderError(f"{live.address}: no candidate {want[:12]} runs to promote")
        candidate = next(v for v in current.versions if v.spec_fingerprint == want)
        state = candidate.health.state if candidate.health else HEALTHY
        details = {k: v for k, v in current.details.items() if k != "candidate"}
        details["instance"] = int(candidate.revision)
        promoted = Live(current.address, dict(desired.spec), state, target=self.target, provider=self.kind,
                        details=details, sensitive=desired.sensitive, health=candidate.health,
                        versions=(dataclasses.replace(candidate, traffic=1.0),))
        self._services[current.address.name] = promoted
        return promoted

    def abort(self, live: Live, state: RolloutState, events: Progress) -> Live:
        CALLS.append((live.address.name, state.candidate, "abort"))
        current = self._current(live.address.name)
        return self._record(current, state, None, None)

    def clear(self, live: Live, events: Progress) -> Live:
        current = self._current(live.address.name)
        if current.rollout is not None and current.rollout.phase != "aborted":
            raise ProviderError(f"{live.address}: a rollout is {current.rollout.phase}; abort it before clearing")
        cleared = dataclasses.replace(current, rollout=None)
        self._services[current.address.name] = cleared
        return cleared

    def metrics(self, live: Live, version: str) -> str | None:
        if self.config.get("metrics") is False:
            return None
        every = self.config.get("metrics_fail_every")
        if every:
            with _lock:
                seen = COUNTERS.setdefault((self._key, live.address.name, "@scrapes"), {"n": 0})
                seen["n"] += 1
                if seen["n"] % every == 0:
                    raise ProviderError(f"{live.address}: metrics: HTTP 503 (metrics_fail_every {every})")
        with _lock:
            self._simulate(live.address.name)
            lines = []
            counters = COUNTERS.get((self._key, live.address.name, version))
            if counters is None and any(v.spec_fingerprint == version for v in live.versions):
                counters = {"codes": {}, "buckets": [0.0] * len(BOUNDS)}   # running, no request yet: zero series
            for instance in ("a", "b"):         # two instances: the driver differences each, then sums
                if counters is None:
                    continue
                for code, count in sorted(counters["codes"].items()):
                    lines.append(f'mlops_requests_total{{version="{version}",code="{code}",instance="{instance}"}} '
                                 f"{count / 2:g}")
                for bound, count in zip(BOUNDS, counters["buckets"], strict=True):
                    le = "+Inf" if bound == math.inf else f"{bound:g}"
                    lines.append(f'mlops_request_duration_seconds_bucket{{version="{version}",le="{le}",'
                                 f'instance="{instance}"}} {count / 2:g}')
            return "# TYPE mlops_requests_total counter\n" + "\n".join(lines) + "\n"

    @property
    def _key(self) -> str:
        return f"{self.context.state_dir}|{self.target}"

    def _simulate(self, name: str) -> None:
        """The load since the last scrape, shared by the versions as the service's record says."""
        current = self._services.get(name)
        if current is None:
            return
        clock = COUNTERS.setdefault((self._key, name, "@clock"), {"at": time.monotonic()})
        now = time.monotonic()
        total = int(float(self.config.get("load_rps", 5000)) * (now - clock["at"]))
        if total <= 0:
            return
        clock["at"] = now
        specs = {spec_fingerprint(current.spec): current.spec}
        if "candidate" in current.details:
            specs[spec_fingerprint(current.details["candidate"])] = current.details["candidate"]
        mirror = current.rollout.mirror / 100 if current.rollout and current.rollout.phase in ("mirror", "canary") \
            else 0.0
        for version in current.versions:
            spec = specs.get(version.spec_fingerprint)
            if spec is None:
                continue
            n = int(total * version.traffic)
            if version.spec_fingerprint != spec_fingerprint(current.spec):
                n += int(total * mirror)
            self._count(name, version.spec_fingerprint, spec, n)

    def _count(self, name: str, version: str, spec: Any, n: int) -> None:
        deploy = spec.get("deploy") or {}
        counters = COUNTERS.setdefault((self._key, name, version),
                                       {"codes": {"2xx": 0, "5xx": 0}, "buckets": [0] * len(BOUNDS)})
        errors = round(n * float(deploy.get("error_rate", 0)))
        counters["codes"]["5xx"] += errors
        counters["codes"]["2xx"] += n - errors
        took = float(deploy.get("latency_ms", 5)) / 1000
        for i, bound in enumerate(BOUNDS):
            if took <= bound:
                counters["buckets"][i] += n

    def call(self, live: Live, body: bytes, *, instance: str | None = None,
             timeout: float = 120) -> tuple[int, bytes, str]:
        """One request, answered by a version chosen by the weights (every 100 requests, ``weight`` of them
        go to the candidate); 500 from a version for its deploy ``error_rate``."""
        current = self._current(live.address.name)
        with _lock:
            seen = COUNTERS.setdefault((self._key, live.address.name, "@calls"), {"n": 0})
            seen["n"] += 1
            k = seen["n"]
        weight = current.rollout.weight if current.rollout and "candidate" in current.details else 0.0
        spec = current.details["candidate"] if (k % 100) < weight else current.spec
        version = spec_fingerprint(spec)
        with _lock:
            mine = COUNTERS.setdefault((self._key, live.address.name, "@calls:" + version), {"n": 0})
            mine["n"] += 1
            j = mine["n"]
        rate = float((spec.get("deploy") or {}).get("error_rate", 0))
        failed = math.floor(j * rate) > math.floor((j - 1) * rate)
        return (500 if failed else 200), b"{}", f"memory version {version[:12]}"
