"""What both engines of the local kind share: one base the process and docker engines build on.

The local kind runs services on this machine, as processes (``provider.LocalProvider``) or as
containers (``docker.DockerLocalProvider``). They are siblings: each subclasses ``LocalEngine``,
which holds what they really share (the target and deploy schemas, the rules, defaults, the port
keepers that hand a service's one listening socket from version to version, its keys, the sample
request sent to a new instance, the endpoint with its key), and neither imports the other.

Rollouts (``SplitsTraffic``) are shared here too: the candidate runs beside the stable version on
a private port only, and the stable version's runtime has it answer a share of the requests,
per request, as the service's route file says (``routefile``; the runtime's side is
``providers/runtime/routes.py``). An engine supplies how one instance starts, stops, is found
and goes live; the steps, their order and the route file are the same for both.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

from planner.core.errors import CancelledError
from planner.core.plan import Action, Rules
from planner.core.resources import (
    FAILED,
    HEALTHY,
    TRANSITIONING,
    Health,
    Live,
    Resource,
    RolloutState,
    Version,
    spec_fingerprint,
)

from ..base import (
    Endpoint,
    KindSchema,
    Preparation,
    Progress,
    ProjectContext,
    Provider,
    ProviderError,
    Reachable,
    SplitsTraffic,
    as_events,
)
from ..bundle import runtime_version
from ..exposition import with_instance_label
from ..http import is_ready, smoke_test
from . import processes, routefile, scrape, startlog
from .ports import Keeper, PortKeepers

HOST = "127.0.0.1"
HOLD_PUBLIC_S = 90
"""A new instance takes public requests only after its smoke test passed (GO_LIVE), or this long
after its init() at the latest (the smoke test's own limit is 60 s): an apply killed in between
leaves an instance that still serves, as a stray the next apply retires."""

ROUTE_PICKUP_S = 0.5
"""A runtime looks at its route file every 0.2 s: after this, every worker acts on a new one."""

DEFAULTS: dict[str, Any] = {"port": "auto", "auth": "none", "workers": 1, "scoring_timeout_ms": 60000,
                            "startup_timeout_s": 120}


class LocalEngine(Reachable, SplitsTraffic, Provider):
    """``provider: local``: the members both engines share (subclasses add where services run)."""

    kind: ClassVar[str] = "local"
    engine_name: ClassVar[str]
    REPLACE_PATHS: ClassVar[frozenset[str]] = frozenset({"deploy.port"})

    @classmethod
    def schema(cls) -> KindSchema:
        return KindSchema(target=cls._target_schema(), deploy=cls._deploy_schema(), port_scope=cls._port_scope)

    def prepare(self) -> Preparation:
        """The bundled runtime; deploy defaults filled in; the spec as the engine runs it."""
        return Preparation(runtime=runtime_version(), deploy=self._normalize_deploy, spec=self._service_spec)

    def _service_spec(self, name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        return dict(spec)

    @classmethod
    def _target_schema(cls) -> dict[str, Any]:
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
    def _deploy_schema(cls) -> dict[str, Any]:
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
    def _port_scope(cls, config: Mapping[str, Any]) -> str | None:
        """Processes and containers (host network) of every local target share this machine's ports."""
        return f"{HOST} on this machine"

    def rules(self, desired: Resource | None, live: Live | None) -> Rules:
        """A port change is a new instance beside the old one. A move, even onto the same port, and
        a broken instance are replaced new-first too: the port keeper lets two versions share a port."""
        return Rules(replace_paths=self.REPLACE_PATHS, broken_order=Action.CREATE_THEN_DELETE)


    def _normalize_deploy(self, deploy: Mapping[str, Any]) -> dict[str, Any]:
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

    # -- rollouts (SplitsTraffic) -----------------------------------------------------------------
    def _route_path(self, name: str) -> Path:
        return routefile.path_of(self.context.data_dir, self.target, name)

    def _route_doc(self, name: str, state: RolloutState, stable: Mapping[str, Any],
                   candidate: Mapping[str, Any]) -> dict[str, Any]:
        return routefile.document(name, self.target, state, dict(stable), dict(candidate))

    def start_candidate(self, desired: Resource, live: Live, state: RolloutState, events: Progress) -> Live:
        name = live.address.name
        version = spec_fingerprint(desired.spec)
        if state.candidate != version:
            raise ProviderError(f"{live.address}: the rollout's candidate {state.candidate[:12]} is not the desired "
                                f"version {version[:12]}")
        path = self._route_path(name)
        current = routefile.read(path)
        candidate = routefile.candidate_of(current)
        if candidate and candidate.get("instance") and candidate["instance"] == live.details.get("instance"):
            candidate = None   # promoted by an apply killed before it removed the file: it serves now
        stable = self._stable_entry(live)
        timeout_ms = int(desired.spec["deploy"].get("scoring_timeout_ms", DEFAULTS["scoring_timeout_ms"]))
        if candidate and candidate.get("version") == version and not candidate.get("stopped") \
                and self._instance_running(name, candidate) and self._candidate_ready(desired, candidate, events):
            events(f"the candidate {version[:12]} already runs (instance {candidate['instance']}): reused")
            found = {**candidate, "scoring_timeout_ms": timeout_ms, **self._identify(name, candidate)}
            routefile.write(path, self._route_doc(name, state, stable, found))
            return self._read_service(name)
        if candidate and not candidate.get("stopped"):
            events(f"removing the previous candidate (instance {candidate.get('instance')})")
            self._stop_instance(name, candidate)
        if not self._reads_routes(live):
            raise ProviderError(f"{live.address}: the running version was started before rollouts existed and "
                                "cannot split traffic; update it once without `rollout:`, then roll out")
        candidate = routefile.candidate_entry(version, os.urandom(4).hex(), HOST, processes.free_port(HOST), timeout_ms)
        # Named before it starts: it holds back from the public port, and a killed apply leaves
        # nothing the next read() does not account for.
        routefile.write(path, self._route_doc(name, state, stable, candidate))
        try:
            found = self._launch_candidate(desired, int(live.details["port"]), self._keys(desired),
                                           candidate["instance"], int(candidate["port"]), events)
        except BaseException:
            routefile.write(path, self._route_doc(name, state, stable, {**candidate, "stopped": True}))
            raise
        routefile.write(path, self._route_doc(name, state, stable, {**candidate, **found}))
        return self._read_service(name)

    def _candidate_ready(self, desired: Resource, candidate: Mapping[str, Any], events: Progress) -> bool:
        """A running candidate an interrupted apply started: ready (waiting for its init() as a start
        would) and answering the sample request; else it is started again."""
        base = f"http://{HOST}:{candidate['port']}"
        timeout = float(desired.spec["deploy"].get("startup_timeout_s", 120))
        name = desired.address.name
        if not as_events(events).wait_until(lambda: is_ready(base, timeout=0.5)
                                            or not self._instance_running(name, candidate), timeout=timeout):
            return False
        if not is_ready(base):
            return False
        try:
            self._smoke_test(desired, int(candidate["port"]), self._keys(desired), events)
        except ProviderError:
            return False
        return True

    def set_traffic(self, live: Live, state: RolloutState, events: Progress) -> Live:
        name = live.address.name
        path = self._route_path(name)
        current = routefile.read(path)
        candidate = self._running_candidate(live, current, state.candidate)
        routefile.write(path, self._route_doc(name, state, (current or {}).get("stable") or self._stable_entry(live),
                                              candidate))
        before = routefile.state_of(current)
        if before is None or (before.weight, before.mirror, before.phase == "aborted") != \
                (state.weight, state.mirror, state.phase == "aborted"):
            as_events(events).sleep(ROUTE_PICKUP_S)   # every worker of the stable version acts on it now
        return self._read_service(name)

    def promote(self, live: Live, desired: Resource, events: Progress) -> Live:
        name = live.address.name
        version = spec_fingerprint(desired.spec)
        path = self._route_path(name)
        current = routefile.read(path)
        candidate = routefile.candidate_of(current)
        if candidate is None or candidate.get("version") != version or candidate.get("stopped") \
                or candidate.get("instance") == live.details.get("instance"):
            if spec_fingerprint(live.spec) == version:   # promoted already (a resumed apply): tidy up
                routefile.remove(path)
                self._remove_strays(live, events)
                return self._read_service(name)
            raise ProviderError(f"{live.address}: no candidate of version {version[:12]} runs; nothing to promote")
        candidate = self._running_candidate(live, current, version)
        events("the candidate joins the public port")
        self._go_live(name, candidate)
        self._adopt(name, candidate)
        routefile.remove(path)
        as_events(events).sleep(ROUTE_PICKUP_S)
        events("retiring the previous version")
        self._stop_instance(name, (current or {}).get("stable") or self._stable_entry(live))
        return self._read_service(name)

    def abort(self, live: Live, state: RolloutState, events: Progress) -> Live:
        name = live.address.name
        if state.phase != "aborted":
            state = dataclasses.replace(state, phase="aborted", weight=0.0, mirror=0.0)
        path = self._route_path(name)
        current = routefile.read(path)
        stable = (current or {}).get("stable") or self._stable_entry(live)
        candidate = routefile.candidate_of(current) or {"version": state.candidate}
        # First the stable version stops sending it requests, then the candidate goes. The stop is
        # the point of an abort: a cancel (or Ctrl-C) cuts the wait short, never skips the stop.
        routefile.write(path, self._route_doc(name, state, stable, candidate))
        running = not candidate.get("stopped") and candidate.get("instance")
        try:
            if running:
                with contextlib.suppress(CancelledError):   # what it no longer answers, stable retries
                    as_events(events).sleep(ROUTE_PICKUP_S)
        finally:
            if running:
                events(f"stopping the candidate (instance {candidate['instance']})")
                self._stop_instance(name, candidate)
            routefile.write(path, self._route_doc(name, state, stable, {**candidate, "stopped": True}))
        return self._read_service(name)

    def clear(self, live: Live, events: Progress) -> Live:
        path = self._route_path(live.address.name)
        current = routefile.read(path)
        state = routefile.state_of(current)
        if state is not None and state.phase != "aborted":
            raise ProviderError(f"{live.address}: a rollout is in progress ({state.phase}); promote or abort it")
        routefile.remove(path)
        return self._read_service(live.address.name)

    def metrics(self, live: Live, version: str) -> str | None:
        # Each runtime's series carry its own instance label, so the analysis differences each one's
        # counters apart: a sum would drop when one scrape fails, and a drop reads as a counter reset.
        urls = [("stable", str(live.details["metrics_url"]))] if live.details.get("metrics_url") else []
        candidate = routefile.candidate_of(routefile.read(self._route_path(live.address.name)))
        if candidate and not candidate.get("stopped") and candidate.get("port"):
            urls.append(("candidate", f"http://{HOST}:{candidate['port']}/metrics"))
        texts = [with_instance_label(text, who) for who, url in urls if (text := scrape.fetch(url)) is not None]
        return scrape.merge(texts, version) if texts else None

    def drop_rollout(self, live: Live, progress: Progress) -> None:
        """A plain update or a delete ends any rollout: its candidate stops (unless it is the current
        version already) and its route file goes."""
        name = live.address.name
        path = self._route_path(name)
        candidate = routefile.candidate_of(routefile.read(path))
        if candidate and not candidate.get("stopped") and candidate.get("instance") \
                and candidate["instance"] != live.details.get("instance"):
            progress(f"stopping the rollout's candidate (instance {candidate['instance']})")
            self._stop_instance(name, candidate)
        routefile.remove(path)

    def _running_candidate(self, live: Live, current: Mapping[str, Any] | None, version: str) -> dict[str, Any]:
        candidate = routefile.candidate_of(dict(current) if current else None)
        if candidate is None or candidate.get("version") != version or candidate.get("stopped"):
            raise ProviderError(f"{live.address}: no candidate of version {version[:12]} runs (start it first)")
        if not self._instance_running(live.address.name, candidate):
            raise ProviderError(f"{live.address}: the candidate (instance {candidate.get('instance')}) is not running")
        return candidate

    def rollout_candidate(self, name: str, current: str | None = None) -> str | None:
        """The instance a rollout's route file names as running candidate (not a stray), if any;
        None when it is ``current`` already (promoted by an apply killed before it tidied up)."""
        candidate = routefile.candidate_of(routefile.read(self._route_path(name)))
        if candidate and not candidate.get("stopped") and candidate.get("instance") \
                and candidate["instance"] != current:
            return str(candidate["instance"])
        return None

    def with_rollout(self, live: Live, candidate_health: Callable[[Mapping[str, Any]], Health] | None = None) -> Live:
        """``live`` (the stable version) with the rollout its route file describes: ``rollout`` and
        both versions with their shares of the traffic."""
        current = routefile.read(self._route_path(live.address.name))
        state = routefile.state_of(current)
        candidate = routefile.candidate_of(current) or {}
        if state is None or (candidate.get("instance") and candidate["instance"] == live.details.get("instance")):
            return live   # none, or promoted already: the file is stale and the previous version a stray
        weight = state.weight / 100 if state.phase != "aborted" else 0.0
        stable = Version(str(live.details.get("instance") or ""), spec_fingerprint(live.spec), 1.0 - weight,
                         live.health if live.health is not None else Health(live.status))
        versions = [stable]
        if candidate.get("instance") and not candidate.get("stopped"):
            health = (candidate_health or (lambda c: self._candidate_health(live.address.name, c)))(candidate)
            versions.append(Version(str(candidate["instance"]), str(candidate.get("version") or state.candidate),
                                    weight, health))
        return dataclasses.replace(live, rollout=state, versions=tuple(versions))

    def _candidate_health(self, name: str, candidate: Mapping[str, Any]) -> Health:
        if not self._instance_running(name, candidate):
            return Health(FAILED, "the candidate is not running")
        if is_ready(f"http://{HOST}:{candidate['port']}"):
            return Health(HEALTHY)
        return Health(TRANSITIONING, "the candidate is starting")

    def _read_service(self, name: str) -> Live:
        for live in self.read():
            if live.address.name == name:
                return live
        raise ProviderError(f"service.{name}: not found on {self.describe()} after the change")

    # -- what each engine supplies for rollouts ------------------------------------------------
    def _stable_entry(self, live: Live) -> dict[str, Any]:
        """How the route file names the version ``live`` describes (and how to stop it)."""
        raise NotImplementedError

    def _reads_routes(self, live: Live) -> bool:
        """Whether the running version's runtime was given the route file (started by this version)."""
        raise NotImplementedError

    def _launch_candidate(self, desired: Resource, port: int, keys: dict[str, str], instance: str, probe_port: int,
                          progress: Progress) -> dict[str, Any]:
        """Start ``desired`` on the service's listener, held back from it, answering on ``probe_port``;
        return what the route file keeps to find and stop it once it is ready and passed the smoke test."""
        raise NotImplementedError

    def _instance_running(self, name: str, entry: Mapping[str, Any]) -> bool:
        raise NotImplementedError

    def _identify(self, name: str, entry: Mapping[str, Any]) -> dict[str, Any]:
        """What the route file keeps to find an instance it named before it started (pid, container)."""
        raise NotImplementedError

    def _stop_instance(self, name: str, entry: Mapping[str, Any]) -> None:
        """Stop (in-flight requests finish) and forget one instance; a missing one is fine."""
        raise NotImplementedError

    def _go_live(self, name: str, entry: Mapping[str, Any]) -> None:
        """GO_LIVE: the instance joins the public listener."""
        raise NotImplementedError

    def _adopt(self, name: str, entry: Mapping[str, Any]) -> None:
        """The engine's record of the service names this instance from now on."""
        raise NotImplementedError

    def _remove_strays(self, live: Live, progress: Progress) -> None:
        raise NotImplementedError
