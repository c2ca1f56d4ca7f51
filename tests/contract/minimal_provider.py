"""A new target kind written from scratch against the provider interface: the measure of how easy one is.

Each service is the scoring runtime in a child process of this machine (this interpreter, no virtualenv),
its state one JSON file per service; kind_minimal.py runs the whole contract suite over it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

from planner.addresses import Address
from planner.resources import FAILED, HEALTHY, Live, Resource, Version
from providers.base import (
    Endpoint,
    KindSchema,
    Preparation,
    Progress,
    Provider,
    ProviderError,
    Reachable,
    as_events,
    environment_variables,
)
from providers.http import is_ready, smoke_test

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parents[2]


class MinimalProvider(Reachable, Provider):
    kind: ClassVar[str] = "minimal"

    @classmethod
    def schema(cls) -> KindSchema:
        return replace(super().schema(), target={
            "type": "object", "additionalProperties": False, "properties": {"provider": {"const": "minimal"}}},
            deploy={"type": "object", "additionalProperties": False, "properties": {
                "port": {"type": "integer", "minimum": 1024, "maximum": 65535}, "auth": {"enum": ["key", "none"]},
                "startup_timeout_s": {"type": "integer", "minimum": 1}}})

    def prepare(self) -> Preparation:
        return replace(super().prepare(), deploy=lambda deploy: {"auth": "none", "startup_timeout_s": 60, **deploy})

    def _file(self, name: str) -> Path:
        return self.context.state_dir / "minimal" / self.target / f"{name}.json"

    def read(self) -> list[Live]:
        return [self._live(json.loads(f.read_text())) for f in sorted(self._file("x").parent.glob("*.json"))]

    def _live(self, record: dict[str, Any]) -> Live:
        alive = _alive(record["pid"]) and is_ready(f"http://{HOST}:{record['port']}")
        return Live(Address("service", record["name"]), record["spec"], HEALTHY if alive else FAILED,
                    target=self.target, provider=self.kind, details={"message": "" if alive else "process exited",
                    "endpoint": f"http://{HOST}:{record['port']}/score", **record},
                    versions=Version.only(record["spec"], record["pid"]))

    def create(self, desired: Resource, events: Progress) -> Live:
        ev = as_events(events)
        port = int(desired.spec["deploy"]["port"])
        models = desired.inputs["models"]
        keys = self.keys.keys_for(desired.address.name, desired.spec["deploy"].get("auth"), desired.secrets)
        env = {**os.environ, **environment_variables(desired), "PYTHONPATH": str(ROOT)}
        if keys:
            env["MLOPS_KEYS_FILE"] = str(self.keys.path(desired.address.name))
        log = self._file(desired.address.name).with_suffix(".log")
        log.parent.mkdir(parents=True, exist_ok=True)
        ev.step(f"starting the runtime on {HOST}:{port}")
        with log.open("a") as out:
            proc = subprocess.Popen([sys.executable, "-m", "providers.runtime", "--host", HOST, "--port", str(port),
                                     "--entry-script", str(Path(desired.inputs["source_dir"]) /
                                                           desired.inputs["entry_script"]),
                                     "--model-dir", str(next(iter(models.values()))["path"])],
                                    cwd=desired.inputs["source_dir"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        try:
            ev.waiting("readiness", 0, 1)
            ready = ev.wait_until(lambda: is_ready(f"http://{HOST}:{port}") or proc.poll() is not None,
                                  timeout=desired.spec["deploy"]["startup_timeout_s"])
            if not ready or proc.poll() is not None:
                raise ProviderError(f"{desired.address}: the runtime did not become ready (see {log})")
            headers = {"Authorization": f"Bearer {keys['primary']}"} if keys else {}
            sample = desired.inputs.get("sample_request")
            problem = smoke_test(f"http://{HOST}:{port}/score", sample, headers) if sample is not None else None
            if problem:
                raise ProviderError(f"{desired.address}: smoke test failed: {problem}")
        except BaseException:
            _stop(proc.pid)
            raise
        record = {"name": desired.address.name, "pid": proc.pid, "port": port, "spec": dict(desired.spec),
                  "git": dict(self.context.git)}
        self._file(desired.address.name).write_text(json.dumps(record))
        return self._live(record)

    def update(self, desired: Resource, live: Live, events: Progress) -> Live:
        self.delete(live, events)          # the simplest rollout there is: stop, then start again
        return self.create(desired, events)

    def delete(self, live: Live, events: Progress) -> None:
        file = self._file(live.address.name)
        if file.exists() and json.loads(file.read_text())["pid"] == live.details.get("pid"):
            _stop(int(live.details["pid"]))
            file.unlink()

    def endpoint(self, live: Live, instance: str | None = None) -> Endpoint:
        keys = self.keys.load(live.address.name)
        return Endpoint(str(live.details["endpoint"]),
                        {"Authorization": f"Bearer {keys['primary']}"} if keys.get("primary") else {})

    def logs(self, live: Live, *, follow: bool = False, tail: int | None = None,
             instance: str | None = None) -> Iterator[str]:
        yield from self._file(live.address.name).with_suffix(".log").read_text().splitlines()[-(tail or 0):]


def _alive(pid: int) -> bool:
    try:
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return False


def _stop(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass
