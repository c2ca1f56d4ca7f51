"""A provider built for tests that keeps its services in memory.

It follows the same interface and the same planner rules as real providers, so planner
properties (apply then plan is a no-op, failures are contained) can be checked fast and many
times; at least one end-to-end run per property also uses the real local provider.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

from planner.resources import FAILED, HEALTHY, Live, Resource
from providers.base import Endpoint, Progress, Provider, ProviderError

STATE: dict[tuple[str, str], dict[str, Live]] = {}
_instances = 0


class MemoryProvider(Provider):
    kind: ClassVar[str] = "memory"
    replace_paths: ClassVar[frozenset[str]] = frozenset({"deploy.port"})

    @classmethod
    def target_schema(cls) -> dict[str, Any]:
        return {"type": "object", "properties": {"provider": {"const": "memory"}}, "additionalProperties": False}

    @classmethod
    def deploy_schema(cls) -> dict[str, Any]:
        return {"type": "object", "properties": {
            "port": {"type": "integer"}, "replicas": {"type": "integer"}, "fail": {"type": "boolean"},
            "primary_key": {"type": "string"}}, "additionalProperties": False}

    def normalize_deploy(self, deploy):
        return {"replicas": 1, **deploy}

    def runtime_version(self) -> str:
        return "memory-runtime@1"

    @property
    def _services(self) -> dict[str, Live]:
        return STATE.setdefault((str(self.context.state_dir), self.target), {})

    def read(self) -> list[Live]:
        return list(self._services.values())

    def _live(self, desired: Resource) -> Live:
        if desired.spec["deploy"].get("fail"):
            raise ProviderError(f"{desired.address}: start failed (deploy.fail is set)")
        global _instances
        _instances += 1
        return Live(desired.address, dict(desired.spec), HEALTHY, target=self.target, provider=self.kind,
                    details={"endpoint": f"memory://{desired.address.name}", "instance": _instances},
                    sensitive=desired.sensitive)

    def create(self, desired: Resource, progress: Progress) -> Live:
        progress("creating in memory")
        live = self._live(desired)
        self._services[desired.address.name] = live
        return live

    def update(self, desired: Resource, live: Live, progress: Progress) -> Live:
        return self.create(desired, progress)

    def delete(self, live: Live, progress: Progress) -> None:
        # Only the instance that was read: a replacement created first has the same name.
        current = self._services.get(live.address.name)
        if current is not None and current.details["instance"] == live.details["instance"]:
            del self._services[live.address.name]

    def kill(self, name: str) -> None:
        """Simulate a crash behind the tool's back."""
        live = self._services[name]
        self._services[name] = Live(live.address, live.spec, FAILED, live.target, live.provider, live.details)

    def endpoint(self, live: Live) -> Endpoint:
        return Endpoint(scoring_url=str(live.details["endpoint"]))

    def logs(self, live: Live, *, follow: bool = False, tail: int | None = None) -> Iterator[str]:
        yield from ()
