"""A provider built for tests that keeps its services in memory.

It follows the same protocol and the same planner rules as real providers, so planner
properties (apply then plan is a no-op, failures are contained) can be checked fast and many
times; at least one end-to-end run per property also uses the real local provider.

Test knobs: target ``read_latency_ms`` (a slow API), ``unreachable`` (connect fails), ``region`` (a
plain setting echoed in status messages, plan warnings and errors, as cloud SDKs do);
deploy ``fail`` (create fails), ``slow_s`` (create waits, cancellable), ``state`` (the service
reports that state, e.g. Unschedulable, with replica counts).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, ClassVar

from planner.plan import Rules
from planner.resources import FAILED, HEALTHY, Health, Live, Resource, Version
from providers.base import Endpoint, Events, Progress, Provider, ProviderError, Reachable, Unreachable, as_events

STATE: dict[tuple[str, str], dict[str, Live]] = {}
KEYS_SEEN: dict[str, dict[str, str]] = {}
_instances = 0


class MemoryProvider(Reachable, Provider):
    kind: ClassVar[str] = "memory"

    @classmethod
    def target_schema(cls) -> dict[str, Any]:
        return {"type": "object", "additionalProperties": False, "properties": {
            "provider": {"const": "memory"}, "read_latency_ms": {"type": "integer", "minimum": 0},
            "unreachable": {"type": "boolean"}, "token": {"type": "string", "writeOnly": True},
            "region": {"type": "string"}}}

    @classmethod
    def deploy_schema(cls) -> dict[str, Any]:
        return {"type": "object", "properties": {
            "port": {"type": "integer"}, "replicas": {"type": "integer"}, "fail": {"type": "boolean"},
            "slow_s": {"type": "number"}, "state": {"type": "string"}, "auth": {"enum": ["key", "none"]},
            "primary_key": {"type": "string"}}, "additionalProperties": False}

    def connect(self) -> None:
        if self.config.get("unreachable"):
            # Like an SDK that echoes the connection string it was given: the redactor must catch it.
            region = f" in region {self.config['region']}" if self.config.get("region") else ""
            raise Unreachable(f"the memory API does not answer to token {self.config.get('token')}{region}; "
                              "unset `unreachable` on this target")

    def normalize_deploy(self, deploy):
        return {"replicas": 1, **deploy}

    def runtime_version(self) -> str:
        return "memory-runtime@1"

    def rules(self, desired: Resource | None, live: Live | None) -> Rules:
        return Rules(replace_paths=frozenset({"deploy.port"}))

    @property
    def _services(self) -> dict[str, Live]:
        return STATE.setdefault((str(self.context.state_dir), self.target), {})

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

    def plan_warnings(self, services: list[Resource]) -> list[str]:
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
