"""What both engines of the local kind share: one base the process and docker engines build on.

The local kind runs services on this machine, as processes (``provider.LocalProvider``) or as
containers (``docker.DockerLocalProvider``). They are siblings: each subclasses ``LocalEngine``,
which holds what they really share (the target and deploy schemas, the rules, defaults, the port
keepers that hand a service's one listening socket from version to version, its keys, the sample
request sent to a new instance, the endpoint with its key), and neither imports the other.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

from planner.core.plan import Action, Rules
from planner.core.resources import Live, Resource

from ..base import Endpoint, Progress, ProjectContext, Provider, ProviderError, Reachable
from ..http import smoke_test
from . import processes, startlog
from .ports import Keeper, PortKeepers

HOST = "127.0.0.1"
HOLD_PUBLIC_S = 90
"""A new instance takes public requests only after its smoke test passed (GO_LIVE), or this long
after its init() at the latest (the smoke test's own limit is 60 s): an apply killed in between
leaves an instance that still serves, as a stray the next apply retires."""

DEFAULTS: dict[str, Any] = {"port": "auto", "auth": "none", "workers": 1, "scoring_timeout_ms": 60000,
                            "startup_timeout_s": 120}


class LocalEngine(Reachable, Provider):
    """``provider: local``: the members both engines share (subclasses add where services run)."""

    kind: ClassVar[str] = "local"
    traffic_split: ClassVar[bool] = True   # a canary or mirror share per version (planner.rollout)
    engine_name: ClassVar[str]
    REPLACE_PATHS: ClassVar[frozenset[str]] = frozenset({"deploy.port"})

    @classmethod
    def target_schema(cls) -> dict[str, Any]:
        return {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "provider": {"const": "local"},
                "engine": {"enum": ["process", "docker"],
                           "description": "process (default): a local process per service; docker: a container"},
            },
        }

    @classmethod
    def deploy_schema(cls) -> dict[str, Any]:
        return {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "port": {"anyOf": [{"type": "integer", "minimum": 1024, "maximum": 65535}, {"const": "auto"}],
                         "description": "a port from 1024 to 65535, or auto"},
                "auth": {"enum": ["key", "none"]},
                "primary_key": {"type": "string", "minLength": 16},
                "secondary_key": {"type": "string", "minLength": 16},
                "workers": {"type": "integer", "minimum": 1, "maximum": 64},
                "memory_gb": {"type": "number", "exclusiveMinimum": 0, "maximum": 4096,
                              "description": "memory limit of the service's processes in GiB (RLIMIT_DATA); "
                                             "cpu limits need engine: docker"},
                "scoring_timeout_ms": {"type": "integer", "minimum": 1},
                "startup_timeout_s": {"type": "integer", "minimum": 1},
                "environment_variables": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        }

    @classmethod
    def port_scope(cls, config: Mapping[str, Any]) -> str | None:
        """Processes and containers (host network) of every local target share this machine's ports."""
        return f"{HOST} on this machine"

    def rules(self, desired: Resource | None, live: Live | None) -> Rules:
        """A port change is a new instance beside the old one. A move, even onto the same port, and
        a broken instance are replaced new-first too: the port keeper lets two versions share a port."""
        return Rules(replace_paths=self.REPLACE_PATHS, broken_order=Action.CREATE_THEN_DELETE)


    def normalize_deploy(self, deploy: Mapping[str, Any]) -> dict[str, Any]:
        out = {**DEFAULTS, **deploy}
        if out.get("environment_variables") == {}:
            del out["environment_variables"]
        return dict(sorted(out.items()))

    @property
    def ports(self) -> PortKeepers:
        return self.port_keepers(self.context)

    @staticmethod
    def port_keepers(context: ProjectContext) -> PortKeepers:
        """The project's keepers: in its per-user data folder, shared by its checkouts on this machine
        (and those an earlier version started from this checkout's ``.mlops``)."""
        return PortKeepers(context.data_dir, HOST, legacy=context.state_dir)

    # -- shared steps of create and update -----------------------------------------------------
    def _claim_port(self, desired: Resource) -> int:
        """The port a new service listens on: for ``auto`` the port the service already holds (its
        keeper's, or its instance's), else a free one; else the asked one if free or held by this
        service itself (a replacement of a broken instance, or of one whose keeper was killed)."""
        name, port = desired.address.name, desired.spec["deploy"]["port"]
        if port == "auto":
            return self._held_port(name) or processes.free_port(HOST)
        if self.ports.find(name, int(port)) is None and processes.port_in_use(int(port), HOST) \
                and not self._listener_holders(name):
            raise ProviderError(f"{desired.address}: port {port} on {HOST} is in use by another process "
                                "(stop it or choose another deploy.port)")
        return int(port)

    def _held_port(self, name: str) -> int | None:
        """The port ``name`` already has: clients know it, so a replacement keeps it."""
        held = [k.port for k in self.ports.of_service(name)]
        recorded = self._recorded_port(name)
        if recorded and (recorded in held or self._listener_holders(name)
                         or not processes.port_in_use(recorded, HOST)):
            return recorded
        return held[0] if held else None

    def _hold_port(self, name: str, port: int, log_file: Path) -> Keeper:
        """The service's port keeper, started if needed; a killed keeper's listener is taken over from
        the instance that still holds it (or, without the rights to, that instance is stopped first)."""
        found = self.ports.find(name, port)
        if found is not None:
            return found
        holders = self._listener_holders(name)

        def release() -> None:
            for _pid, stop in holders:
                stop()

        return self.ports.ensure(name, port, log_file, target=self.target,
                                 engine=getattr(self, "engine_name", "process"),
                                 adopt_from=[pid for pid, _stop in holders], on_conflict=release)

    @contextlib.contextmanager
    def _keeper_released_on_failure(self, name: str, port: int) -> Iterator[None]:
        """A create that fails stops the keeper it started: no port stays held by nothing."""
        had_keeper = self.ports.find(name, port) is not None
        try:
            yield
        except BaseException:
            keeper = None if had_keeper else self.ports.find(name, port)
            if keeper is not None:
                self.ports.stop(keeper)
            raise

    def _keys(self, desired: Resource) -> dict[str, str]:
        """Explicit keys from the manifest win; else keep the ones clients already have (one key store)."""
        return self.keys.keys_for(desired.address.name, desired.spec["deploy"].get("auth"), desired.secrets)

    def _recorded_port(self, name: str) -> int | None:
        """The port the engine's own record gives the service (its instances' record or container)."""
        raise NotImplementedError

    def _listener_holders(self, name: str) -> list[tuple[int, Callable[[], None]]]:
        """Running instances of ``name`` (pid, how to stop it): they may hold its port's listener."""
        raise NotImplementedError

    def _log_file(self, name: str) -> Path:
        return self._records_dir(self.context) / "logs" / f"{name}.log"

    def _start_failure(self, desired: Resource, attempt: list[str], ran_from: str) -> str:
        """The one line an apply shows for a failed start: the exception in the user's file, and the
        command that shows the whole attempt."""
        user = startlog.user_source(desired.inputs["source_dir"], self.context.root)
        return (f"{startlog.cause(attempt, ran_from, user)}; the whole log of this attempt: "
                f"`mlops logs {desired.address.name}`")

    def last_attempt_log(self, name: str) -> tuple[str, list[str]] | None:
        """(which attempt, its lines) of the service's last start, for `mlops logs` when nothing runs."""
        path = self._log_file(name)
        if not path.exists():
            return None
        start_line, lines = startlog.last_attempt(path.read_text(errors="replace").splitlines())
        return startlog.attempt_label(start_line), lines

    def _smoke_test(self, desired: Resource, port: int, keys: Mapping[str, str], progress: Progress) -> None:
        """Send the sample request to this very instance (its probe port); 200 + JSON or it fails."""
        sample = desired.inputs.get("sample_request")
        if sample is None:
            return
        progress("sending the sample request")
        headers = {"Authorization": f"Bearer {keys['primary']}"} if keys else {}
        problem = smoke_test(f"http://{HOST}:{port}/score", sample, headers)
        if problem:
            raise ProviderError(f"{desired.address}: smoke test failed: {problem}")

    # -- using ----------------------------------------------------------------------------------
    def endpoint(self, live: Live, instance: str | None = None) -> Endpoint:
        headers = {}
        if live.details.get("auth") == "key":
            keys = self.keys.load(live.address.name)
            if keys.get("primary"):
                headers["Authorization"] = f"Bearer {keys['primary']}"
        return Endpoint(scoring_url=live.details["endpoint"], headers=headers)
