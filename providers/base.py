"""The provider protocol (version 3): what every target kind implements, and what it is given.

Providers answer narrow requests; the core decides and checks. Lifecycle, in this order and no other:

1. **construct** ``Provider(target=..., config=..., context=...)`` — no I/O, no credentials, no
   network: constructing every declared target must be free (``mlops validate`` does it).
2. **connect** — ``ensure_connected()`` calls ``connect()`` once, lazily, the first time the target
   is really needed (reading live state, acting). Log in and build clients there; an unreachable
   target raises ``Unreachable`` with one line naming what to do (``az login``, the kubeconfig
   context, ``DOCKER_HOST``).
3. **schema / prepare / read / act** — ``schema()`` says what ``mlops validate`` checks a target's and a
   service's settings against, ``prepare()`` how the target shapes the desired spec,
   ``validate`` refuses what the target could never run, ``read()`` what runs (found by our labels,
   each ``Live`` with its running ``versions``), ``rules()`` for how one instance may change (the core
   calls ``planner.core.diff.decide`` itself), ``create``/``update``/``delete`` with ``Events``
   (progress with counts and cooperative cancellation). The core checks that the ``Live`` create and
   update return is the service, the target and the spec it asked for.

Optional capabilities sit beside ``Provider`` and the CLI asks ``isinstance``: ``Reachable``
(endpoint, call, logs), ``KeepsBuildLog`` (``mlops logs --build``), ``BuildsImages`` (``mlops build``;
shared code in ``providers.images``), ``Renders`` (``mlops render``), ``LocksItself`` (a lock on the
target, e.g. a Kubernetes Lease), ``SplitsTraffic`` (two versions share a service's requests: canary,
shadow; driven by ``planner.rollout``).

A provider declares ``protocol = 3``; the registry refuses other versions with a clear error.
"""

from __future__ import annotations

import contextlib
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from planner.core.errors import CancelledError, ProviderError, Unreachable
from planner.core.events import Events
from planner.core.plan import Rules
from planner.core.resources import Health, Live, Resource, RolloutState

from .keys import KeyStore
from .userdata import project_data_dir

__all__ = [
    "LEGACY_HOOKS", "PROTOCOL", "BuildResult", "BuildsImages", "CancelledError", "Endpoint", "Events", "Health",
    "KeepsBuildLog", "KindSchema", "LocksItself", "Preparation", "ProjectContext", "Progress", "Provider",
    "ProviderError", "Reachable", "Renders", "RolloutState", "Rules", "SplitsTraffic",
    "Unreachable", "environment_variables", "secret_settings", "wait_until",
]

PROTOCOL = 3
"""The provider protocol this mlops speaks; third-party providers set ``protocol`` to it."""

Progress = Events | Callable[[str], None]
"""What act methods are given: an ``Events`` (a plain step callable is accepted where a test passes one)."""


@dataclass(frozen=True)
class ProjectContext:
    """What every provider of one manifest shares: names, folders, provenance."""

    project: str
    root: Path                # the folder holding the manifest; manifest paths are relative to it
    state_dir: Path           # the embedded registry and local records (default <root>/.mlops)
    cache_dir: Path           # machine-wide caches shared by projects (virtualenvs)
    git: Mapping[str, Any] = field(default_factory=dict)   # commit, dirty, branch

    @property
    def data_dir(self) -> Path:
        """The per-user folder every checkout of this project on this machine shares (userdata.py):
        local engines' records, port keepers, logs and service keys live there."""
        return project_data_dir(self.project)


@dataclass(frozen=True)
class Endpoint:
    """How to reach a service: its scoring URL and the headers a client must send (never printed)."""

    scoring_url: str
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class BuildResult:
    """One service's image after a build (targets that run images)."""

    service: str
    image: str                 # repository:tag (the content address)
    image_id: str
    built: bool                # False: the tag existed, nothing was rebuilt
    seconds: float
    pushed: str | None         # repository@sha256:… when the target has a registry
    cached_steps: int
    steps: int


def secret_settings(schema: Mapping[str, Any]) -> frozenset[str]:
    """Names of the settings a schema declares secret (JSON Schema's ``writeOnly: true``)."""
    props = schema.get("properties") or {}
    return frozenset(k for k, v in props.items() if isinstance(v, Mapping) and v.get("writeOnly"))


def score_at(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> tuple[int, bytes, str]:
    """POST a scoring request: (status, body, url); an unreachable service is one line."""
    from .http import request

    try:
        reply = request(url, data=body, headers={**headers, "Content-Type": "application/json"}, timeout=timeout)
    except OSError as exc:
        raise ProviderError(f"cannot reach {url}: {exc} (see `mlops status`)") from None
    return reply.status, reply.body, url


def environment_variables(desired: Resource) -> dict[str, str]:
    """A service's environment variables with their real values (its spec holds only digests)."""
    names = (desired.spec.get("deploy") or {}).get("environment_variables") or {}
    return {name: desired.secrets.get(f"environment_variables.{name}", str(v)) for name, v in names.items()}


def as_events(progress: Progress) -> Events:
    return progress if isinstance(progress, Events) else Events(progress)


@dataclass(frozen=True)
class KindSchema:
    """A kind's answer to ``Provider.schema()``: everything ``mlops validate`` checks its settings against."""

    target: Mapping[str, Any]
    """JSON Schema of the target's settings; secret ones carry ``writeOnly: true``."""
    deploy: Mapping[str, Any]
    """JSON Schema of a service's ``deploy`` settings on this kind of target."""
    port_scope: Callable[[Mapping[str, Any]], str | None]
    """Given a target's settings, where a fixed ``deploy.port`` must be unique (one shared host's
    address, e.g. ``127.0.0.1``); None: no such rule. Two services asking for one port in one scope
    are refused."""
    service_name_problem: Callable[[str], str | None]
    """Why this kind cannot run a service of that name (its own naming rules), or None; reported at the
    service's name (a deploy schema cannot see the name)."""

    @property
    def secret(self) -> frozenset[str]:
        """The target settings that are never written down or shown."""
        return secret_settings(self.target)


@dataclass(frozen=True)
class Preparation:
    """A target's answer to ``Provider.prepare()``: how it shapes each service's desired spec."""

    runtime: str
    """Version of what serves the model on this target; part of every service's spec."""
    deploy: Callable[[Mapping[str, Any]], dict[str, Any]]
    """Deploy settings with defaults filled in, so that omitting a default is not a diff."""
    spec: Callable[[str, Mapping[str, Any]], dict[str, Any]]
    """(service name, spec) -> the spec as this target runs it; a target may add what it derives (an image)."""


LEGACY_HOOKS = {"target_schema": "schema().target", "deploy_schema": "schema().deploy",
                "port_scope": "schema().port_scope", "service_name_problem": "schema().service_name_problem",
                "runtime_version": "prepare().runtime", "normalize_deploy": "prepare().deploy",
                "service_spec": "prepare().spec"}
"""Protocol-3 hooks that ``schema()`` and ``prepare()`` still read where a kind defines them (old name ->
where the answer now lives). A kind moves to the new members by overriding ``schema``/``prepare`` instead."""


def _legacy(owner: Any, name: str, default: Callable[..., Any]) -> Callable[..., Any]:
    """A kind's own protocol-3 hook (bound to ``owner``) where it defines one, else the default."""
    hook = getattr(owner, name, None)
    return hook if callable(hook) else default


def _default_target_schema() -> dict[str, Any]:
    return {"type": "object", "properties": {"provider": {"type": "string"}}}


def _default_deploy_schema() -> dict[str, Any]:
    return {"type": "object"}


def _no_port_scope(config: Mapping[str, Any]) -> str | None:
    return None


def _no_name_rule(name: str) -> str | None:
    return None


def _bundle_runtime_version() -> str:
    from .bundle import runtime_version

    return runtime_version()


def _copy_deploy(deploy: Mapping[str, Any]) -> dict[str, Any]:
    return dict(deploy)


def _copy_spec(name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    return dict(spec)


class LeaderLease(Protocol):
    """One replica leads (writes) while it holds the lease; the others observe."""

    @property
    def leading(self) -> bool: ...
    def try_lead(self) -> str | None: ...   # None: this replica leads; else who does
    def check(self) -> str | None: ...      # before a write: None if still the leader, else why not
    def release(self) -> None: ...


class Provider(ABC):
    """One target kind. Subclasses set ``kind`` and implement the abstract methods."""

    protocol: ClassVar[int] = PROTOCOL
    kind: ClassVar[str]

    def __init__(self, *, target: str, config: Mapping[str, Any], context: ProjectContext):
        self.target = target
        self.config = dict(config)
        self.context = context
        self.keys = KeyStore(context.data_dir, legacy=context.state_dir)
        self._connected = False
        self._connect_lock = threading.Lock()

    # -- lifecycle ------------------------------------------------------------------------------
    def connect(self) -> None:
        """Log in and build clients; raise ``Unreachable`` (one line: what to do) if the target cannot answer.

        The default has nothing to connect to (a target on this machine without a daemon).
        """
        return None

    def ensure_connected(self) -> None:
        """``connect()`` once per provider, however many threads ask."""
        if self._connected:
            return
        with self._connect_lock:
            if not self._connected:
                self.connect()
                self._connected = True

    def describe(self) -> str:
        """How errors name this target: ``target 'box' (local)``."""
        return f"target {self.target!r} ({self.kind})"

    # -- kinds and variants ---------------------------------------------------------------------
    @classmethod
    def variant(cls, config: Mapping[str, Any]) -> type[Provider]:
        """The class that serves this target's settings (e.g. the local kind's ``engine: docker``).

        One kind may have variants that share its name and target schema but act differently;
        everything that instantiates or validates a target goes through here.
        """
        return cls

    @classmethod
    def variants(cls) -> list[type[Provider]]:
        """Every class ``variant()`` can answer, so live state on undeclared targets is found too."""
        return [cls]

    # -- what the core asks before anything runs ------------------------------------------------
    @classmethod
    def schema(cls) -> KindSchema:
        """This kind's settings as ``mlops validate`` checks them: the target's and deploy's JSON
        Schemas, and the rules a schema cannot say (shared ports, service names). Asked per kind.

        The default assembles the answer from protocol-3 hooks a kind may still define
        (``target_schema``, ``deploy_schema``, ``port_scope``, ``service_name_problem``; see
        ``LEGACY_HOOKS``), so kinds written against them keep working unchanged.
        """
        return KindSchema(
            target=_legacy(cls, "target_schema", _default_target_schema)(),
            deploy=_legacy(cls, "deploy_schema", _default_deploy_schema)(),
            port_scope=_legacy(cls, "port_scope", _no_port_scope),
            service_name_problem=_legacy(cls, "service_name_problem", _no_name_rule),
        )

    def secret_values(self) -> list[str]:
        """Values of this target's secret settings, so every output can mask them."""
        names = type(self).schema().secret
        return [str(v) for k, v in self.config.items() if k in names and v]

    def prepare(self) -> Preparation:
        """How this target shapes every service's desired spec (the runtime that serves it, deploy
        defaults, what the target derives): asked once per target and plan, used for each service.

        The default assembles the answer from protocol-3 hooks a kind may still define
        (``runtime_version``, ``normalize_deploy``, ``service_spec``; see ``LEGACY_HOOKS``).
        """
        runtime = _legacy(self, "runtime_version", _bundle_runtime_version)
        return Preparation(runtime=runtime(), deploy=_legacy(self, "normalize_deploy", _copy_deploy),
                           spec=_legacy(self, "service_spec", _copy_spec))

    # -- live state -----------------------------------------------------------------------------
    @abstractmethod
    def read(self) -> list[Live]:
        """Every service of this project on this target, as it really is (after ``connect``)."""

    @classmethod
    def orphans(cls, context: ProjectContext, declared_targets: set[str]) -> list[tuple[Provider, Live]]:
        """Services of this kind on targets no longer declared, each with a provider that can delete it.

        Only kinds whose live state can be found without target settings can answer; others
        return nothing and their undeclared targets stay untouched. Must not fail when the
        kind's backend is absent (answer nothing).
        """
        return []

    # -- planning -------------------------------------------------------------------------------
    def rules(self, desired: Resource | None, live: Live | None) -> Rules:
        """How this instance may change: what forces replacement, in which order, on which states."""
        return Rules()

    def validate(self, desired: Resource) -> None:
        """Refuse, with a ``ProviderError`` of one line, a service this target could never run as asked
        (e.g. IoT Edge's 32 KB of desired properties), before anything is planned, built or sent.

        The plan itself is the core's: it calls ``planner.core.diff.decide`` with ``rules()``.
        """
        return None

    def plan_warnings(self, desired: Sequence[Resource]) -> list[str]:
        """What the reviewer should know about this target's services (after ``connect``), one line each.

        E.g. no node offers the FPGA resource a service asks for; devices whose endpoints this
        machine cannot reach. Shown in the plan; they do not change it.
        """
        return []

    # -- acting (after ensure_connected) ----------------------------------------------------------
    @abstractmethod
    def create(self, desired: Resource, events: Progress) -> Live:
        """Start a new service and wait until it is ready. Idempotent for the same fingerprint."""

    @abstractmethod
    def update(self, desired: Resource, live: Live, events: Progress) -> Live:
        """Move a running service to ``desired``; on failure the previous version keeps serving."""

    @abstractmethod
    def delete(self, live: Live, events: Progress) -> None:
        """Remove the instance ``live`` describes and what it owns. Missing is not an error.

        Only that instance: in a create-then-delete replacement the new one, with the same name,
        already runs when this is called. Keys are not this method's to remove (see KeyStore).
        """


# -- capabilities beside the interface: the CLI asks isinstance(provider, <capability>) ------------

class Reachable(ABC):
    """Capability: this machine can use the target's services (``mlops call``, ``mlops logs``)."""

    def endpoint(self, live: Live, instance: str | None = None) -> Endpoint | None:
        """Where and how this machine can call the service (or one ``instance`` of it: a device);
        None where it cannot."""
        return None

    def call(self, live: Live, body: bytes, *, instance: str | None = None,
             timeout: float = 120) -> tuple[int, bytes, str]:
        """Score the service once: (HTTP status, body, where it answered from).

        The default posts to ``endpoint()``; a target that reaches its services another way (the
        Kubernetes API server's service proxy, a device's module) overrides it.
        """
        endpoint = self.endpoint(live, instance)
        if endpoint is None:
            raise ProviderError(f"{live.address}: no endpoint this machine can reach on target {live.target!r} "
                                "(see `mlops status` for its state)")
        return score_at(endpoint.scoring_url, body, endpoint.headers, timeout)

    @abstractmethod
    def logs(self, live: Live, *, follow: bool = False, tail: int | None = None,
             instance: str | None = None) -> Iterator[str]:
        """The service's log lines, oldest first; ``instance`` names one pod or device."""


class Renders(ABC):
    """Capability: the target can show the exact objects apply would send (``mlops render``)."""

    @abstractmethod
    def render(self, desired: Resource) -> str:
        """The objects apply would send for this service, as text (YAML), secrets redacted."""


class LocksItself(ABC):
    """Capability: a lock on the target itself, held while apply works there (e.g. a Kubernetes Lease).

    The manifest's own lock (a file beside the state) cannot stop a second CI runner on another
    machine; a shared target can.
    """

    @abstractmethod
    def apply_lock(self, holder: str, cancel: threading.Event | None = None
                   ) -> contextlib.AbstractContextManager[None]:
        """Entered after ``connect``, before live state is read; waiting for another holder raises
        ``CancelledError`` as soon as ``cancel`` is set (Ctrl-C, SIGTERM)."""

    def leader_lease(self, name: str, holder: str) -> LeaderLease | None:
        """A named lease on the target that replicas of a reconciler elect one leader with; None if
        this kind offers none (entered after ``connect``)."""
        return None


class KeepsBuildLog(ABC):
    """Capability: the target keeps the full output of what it built for a service (an image, a
    virtualenv), shown by ``mlops logs --build``."""

    @abstractmethod
    def build_log(self, name: str) -> Iterator[str]:
        """The full output of the service's last build, line by line."""


class BuildsImages(KeepsBuildLog):
    """Capability beside ``Provider``: the target runs an image built from the service.

    ``mlops build`` asks ``isinstance(provider, BuildsImages)``; the shared implementation is
    ``providers.images.ImageTarget``, which every container-running kind mixes in.
    """

    @abstractmethod
    def build_image(self, desired: Resource, progress: Progress, *,
                    model_sources: Mapping[str, Path] | None = None) -> BuildResult:
        """Build (and push) the service's image without deploying it."""

    @abstractmethod
    def build_log(self, name: str) -> Iterator[str]:
        """The full output of the service's last image build."""


class SplitsTraffic(ABC):
    """Capability: two versions of one service run side by side and share its requests.

    ``planner.rollout`` drives it: ``start_candidate`` (0 %), then ``set_traffic`` once per step
    of the policy with analysis between steps, then ``promote`` or ``abort``. Every call keeps
    ``state`` on the target itself (see ``RolloutState``) before it returns, so an apply killed at
    any moment leaves a rollout the next ``read()`` reports in ``Live.rollout`` and the next apply
    continues. Every method is idempotent (a retried or resumed call finds its work done).
    """

    @classmethod
    def rollout_strategies(cls, config: Mapping[str, Any]) -> frozenset[str]:
        """The ``rollout.strategy`` values a target with these settings can run (``mlops validate``
        refuses the others, naming the targets that can); e.g. shadow needs a mirror."""
        return frozenset({"canary", "blue_green", "shadow"})

    @abstractmethod
    def start_candidate(self, desired: Resource, live: Live, state: RolloutState, events: Progress) -> Live:
        """Run ``desired`` beside the version ``live`` describes, ready, answering no request yet
        (``state.weight`` and ``state.mirror`` as given, normally 0); keep ``state``. A candidate of
        the same fingerprint already running is reused; one of another fingerprint is removed first."""

    @abstractmethod
    def set_traffic(self, live: Live, state: RolloutState, events: Progress) -> Live:
        """Send ``state.weight`` percent of requests to the candidate and copy ``state.mirror`` percent
        to it (its answers thrown away, the client's never delayed); keep ``state``. The stable
        version never loses capacity before the candidate's share is ready to serve."""

    @abstractmethod
    def promote(self, live: Live, desired: Resource, events: Progress) -> Live:
        """The candidate takes every request and becomes the only version (the stable one removed);
        the rollout state is cleared. Answers the service as ``update`` would have."""

    @abstractmethod
    def abort(self, live: Live, state: RolloutState, events: Progress) -> Live:
        """The stable version takes every request again and the candidate is removed; ``state`` (phase
        ``aborted``, with its reason) is kept so the next apply does not retry the same candidate."""

    def clear(self, live: Live, events: Progress) -> Live:
        """Forget a kept ``aborted`` state (``mlops rollout retry``); nothing else changes."""
        raise ProviderError(f"{live.address}: this target cannot clear its rollout state")

    def metrics(self, live: Live, version: str) -> str | None:
        """The Prometheus text of the runtime(s) serving ``version`` (a spec fingerprint), every
        instance's series concatenated; None where this machine cannot read them (the rollout
        then judges sample requests and each version's health in ``read()``)."""
        return None


def wait_until(check: Callable[[], bool], *, timeout: float, interval: float = 0.1,
               events: Progress | None = None) -> bool:
    """Poll ``check`` until it returns true or ``timeout`` seconds pass; raises on cancellation."""
    return as_events(events or (lambda text: None)).wait_until(check, timeout=timeout, interval=interval)
