"""The local target's ``engine: docker``: each service is a container built from its own image.

What differs from the process engine is where things run and where state lives; the rest (deploy
settings, keys, readiness, the sample-request smoke test, blue/green updates on one port) is the
same, so this class and the process engine are siblings on ``LocalEngine``. Live state is read from the
engine by our labels, so there is no record to drift: a container that exited is Failed with its
last log lines, one removed by hand is missing and gets recreated.

An update starts the new container on the service's shared listener (handed over by the port
keeper through a mounted unix socket, the same mechanism as the process engine; every container
shares the host's network) plus a private probe port, waits for it to be ready and to answer the
sample request there, and only then stops the old container. Running containers of a service
beyond the one read as current are strays of an interrupted apply: shown, and stopped by the next
apply.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

from planner.addresses import Address
from planner.core.resources import spec_fingerprint
from planner.hashing import canonical_json
from planner.resources import Live, Resource, Version

from ...base import (
    Endpoint,
    FindsOrphans,
    Progress,
    ProjectContext,
    Provider,
    ProviderError,
    as_events,
    ensure_connected,
    environment_variables,
)
from ...http import is_ready
from ...images import REGISTRY_PASSWORD_ENV, REGISTRY_USER_ENV, BuiltImage, ImageTarget, engine
from ...images.engine import label
from ...images.recipe import APP_ROOT
from .. import processes, routefile, startlog
from ..engine import HOLD_PUBLIC_S, LocalEngine
from ..leftovers import keeper_gone, keeper_only
from ..ports import SOCKET_ROOT
from . import containers

HOST = containers.HOST
PORTS_MOUNT = "/run/mlops-ports"
KEYS_MOUNT = "/run/mlops-keys.json"
"""Where a container finds its keys (MLOPS_KEYS_FILE), mounted read-only from the key store."""
"""Where the port keepers' control sockets appear inside a container."""
REGISTRY_PATTERN = r"^[A-Za-z0-9.-]+(:[0-9]+)?(/[a-z0-9._-]+)*$"


class DockerLocalProvider(ImageTarget, FindsOrphans, LocalEngine):
    """``provider: local`` with ``engine: docker``."""

    kind: ClassVar[str] = "local"
    engine_name: ClassVar[str] = "docker"
    pulls_from_registry: ClassVar[bool] = False   # runs in the engine that built it; a registry is optional

    def __init__(self, *, target: str, config: Mapping[str, Any], context: ProjectContext):
        super().__init__(target=target, config=config, context=context)
        self.init_images(context, self.registry, log_dir=self._records_dir(context) / "builds")
        self._docker: Any = None

    def connect(self) -> None:
        """One engine client for this target, pinged once; no engine is one line naming DOCKER_HOST."""
        self._docker = engine.client()

    def describe(self) -> str:
        return f"target {self.target!r} (local, engine: docker)"

    @property
    def client(self) -> Any:
        ensure_connected(self)
        return self._docker

    # -- schema -------------------------------------------------------------------------------
    @classmethod
    def _target_schema(cls) -> dict[str, Any]:
        schema = LocalEngine._target_schema()
        schema["properties"] = {
            **schema["properties"],
            "engine": {"const": "docker", "description": "docker: each service is a container in a Docker engine"},
            "registry": {"type": "string", "pattern": REGISTRY_PATTERN,
                         "description": "push every image here (host[:port][/path]); credentials come from "
                                        f"{REGISTRY_USER_ENV} / {REGISTRY_PASSWORD_ENV}"},
        }
        return schema

    @classmethod
    def _deploy_schema(cls) -> dict[str, Any]:
        schema = LocalEngine._deploy_schema()
        schema["properties"] = {
            **schema["properties"],
            "cpu": {"type": "number", "exclusiveMinimum": 0, "maximum": 256,
                    "description": "CPU cores the container may use (a limit, not a reservation)"},
            "memory_gb": {"type": "number", "exclusiveMinimum": 0, "maximum": 4096,
                          "description": "memory limit of the container in GiB"},
        }
        return schema

    def _service_spec(self, name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        """The spec plus the image it runs, so a plan shows ``image: "…:old" -> "…:new"``.

        The image name is derived from the spec alone (content address), so planning never asks
        the engine; with a registry the name carries it, so adding one shows as a change.
        """
        return self.with_image(name, spec)

    @property
    def registry(self) -> str | None:
        return self.config.get("registry") or None

    # -- where things live ----------------------------------------------------------------------
    @staticmethod
    def _records_dir(context: ProjectContext) -> Path:
        """Build and port-keeper logs, in the project's per-user data folder (shared by its
        checkouts on this machine); the containers themselves are the live state."""
        return context.data_dir / "docker"

    # -- images ---------------------------------------------------------------------------------
    def ensure_image(self, desired: Resource, progress: Progress, *, client: Any | None = None,
                     model_sources: Mapping[str, Path] | None = None) -> BuiltImage:
        """The shared build, in this target's engine client (pushed when the target has a registry)."""
        return super().ensure_image(desired, progress, client=client or self.client, model_sources=model_sources)

    # -- live state -------------------------------------------------------------------------------
    def read(self) -> list[Live]:
        cli = self.client
        found = list_containers(cli, filters={"label": [f"{label('project')}={self.context.project}",
                                                                 f"{label('target')}={self.target}"]})
        lives = self._lives(found)
        return lives + keeper_only(self.ports, engine=self.engine_name, kind=self.kind, host=HOST,
                                   known={live.address.name for live in lives}, wanted=lambda t: t == self.target)

    @classmethod
    def orphans(cls, context: ProjectContext, declared_targets: set[str]) -> list[tuple[Provider, Live]]:
        """Our containers on targets no longer declared; nothing when no engine answers."""
        if not engine.reachable():
            return []
        found = list_containers(engine.client(), filters={"label": f"{label('project')}={context.project}"})
        orphans = [c for c in found if c.labels.get(label("target")) not in declared_targets]
        out = []
        for target in sorted({c.labels.get(label("target"), "") for c in orphans}):
            provider = cls(target=target, config={"provider": "local", "engine": "docker"}, context=context)
            mine = [c for c in orphans if c.labels.get(label("target"), "") == target]
            out += [(provider, live) for live in provider._lives(mine)]
        known = {c.labels.get(label("service")) for c in found}
        for live in keeper_only(cls.port_keepers(context), engine=cls.engine_name, kind=cls.kind, host=HOST,
                                known={n for n in known if n}, wanted=lambda t: t not in declared_targets):
            provider = cls(target=live.target or "", config={"provider": "local", "engine": "docker"}, context=context)
            out.append((provider, live))
        return out

    def _lives(self, found: list[Any]) -> list[Live]:
        """One Live per service: its current container (never a rollout's candidate, which the
        route file names), with the rollout and its strays (the candidate is not one)."""
        services = {c.labels.get(label("service")) for c in found}
        candidates = {name: self.rollout_candidate(name) for name in services if name}

        def candidate(c: Any) -> bool:
            return c.labels.get(label("instance")) == candidates.get(c.labels.get(label("service")))

        others = [c for c in found if not candidate(c)]
        return [self.with_rollout(self._live(c, others)) for c in _newest_per_service(others)]

    def _live(self, container: Any, siblings: list[Any] = ()) -> Live:  # type: ignore[assignment]
        labels = container.labels
        status, message = containers.state_of(container)
        port = int(labels[label("port")])
        if container.status == "running" and (problem := keeper_gone(self.ports, labels[label("service")], port)):
            status, message = "Unhealthy", problem
        base = f"http://{HOST}:{port}"
        details = {
            "endpoint": f"{base}/score",
            "swagger": f"{base}/swagger.json",
            "port": port,
            "instance": labels.get(label("instance")),
            "container": container.id,
            "container_name": container.name,
            "image": labels.get(label("image")),
            "engine": self.engine_name,
            "git": {"commit": labels.get(label("git-commit")) or None,
                    "dirty": labels.get(label("git-dirty")) == "true"},
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(containers.started_at(container))),
            "auth": labels.get(label("auth"), "none"),
            "message": message,
        }
        if labels.get(label("probe-port")):
            details["metrics_url"] = f"http://{HOST}:{labels[label('probe-port')]}/metrics"
        strays = [{"container": c.id, "instance": c.labels.get(label("instance"))} for c in siblings
                  if c.id != container.id and c.status == "running"
                  and c.labels.get(label("service")) == labels.get(label("service"))]
        if strays:
            details["strays"] = strays
            note = (f"{len(strays)} stray container(s) ({', '.join(s['container'][:12] for s in strays)}) left by an "
                    "interrupted apply; the next apply stops them")
            details["message"] = "; ".join(m for m in (message, note) if m)
        spec = json.loads(labels[label("spec")])
        return Live(Address("service", labels[label("service")]), spec, status,
                    target=labels.get(label("target")), provider=self.kind, details=details,
                    sensitive=frozenset(json.loads(labels.get(label("sensitive"), "[]"))),
                    versions=Version.only(spec, labels.get(label("instance")) or container.id[:12]),
                    strays=tuple(str(s["instance"] or s["container"][:12]) for s in strays))

    # -- acting ---------------------------------------------------------------------------------
    def create(self, desired: Resource, progress: Progress) -> Live:
        ensure_connected(self)   # fail before anything else when there is no engine
        image = self.ensure_image(desired, progress)
        port = self._claim_port(desired)
        for c in self._service_containers(self.client, desired.address.name):   # unrecorded leftovers
            if c.status == "running":
                self._remove(c.id)
        with self._keeper_released_on_failure(desired.address.name, port):
            container = self._start(desired, image, port, self._keys(desired), progress)
        return self._live(container)

    def update(self, desired: Resource, live: Live, progress: Progress) -> Live:
        ensure_connected(self)
        self.drop_rollout(live, progress)
        strays = live.details.get("strays") or []
        if strays:
            progress(f"stopping {len(strays)} stray container(s) left by an interrupted apply")
            for stray in strays:
                self._remove(str(stray["container"]))
            if live.spec == desired.spec and live.status == "Healthy":
                return live
        image = self.ensure_image(desired, progress)
        container = self._start(desired, image, int(live.details["port"]), self._keys(desired), progress)
        progress("retiring the previous container")
        self._remove(str(live.details["container"]))
        self._prune_images(live.address.name, final=False)
        return self._live(container)

    def delete(self, live: Live, progress: Progress) -> None:
        cli = self.client
        name = live.address.name
        self.drop_rollout(live, progress)
        progress("stopping container")
        if live.details.get("container"):   # a service that is only a port keeper has none
            self._remove(str(live.details["container"]))
        # Stopped leftovers of the same service (a failed start that could not clean up) go too;
        # a running sibling is the replacement of a create-then-delete and stays.
        remaining = []
        for c in self._service_containers(cli, name):
            if c.status == "running":
                remaining.append(c)
            else:
                self._remove(c.id)
        in_use = {int(c.labels.get(label("port"), 0)) for c in remaining}
        for keeper in self.ports.of_service(name):
            if keeper.port not in in_use:
                self.ports.stop(keeper)
        if remaining:
            return
        progress("removing images")
        self._prune_images(name, final=True)

    def _recorded_port(self, name: str) -> int | None:
        newest = _newest_per_service(self._service_containers(self.client, name))
        return int(newest[0].labels[label("port")]) if newest else None

    def _listener_holders(self, name: str) -> list[tuple[int, Callable[[], None]]]:
        return [(int(c.attrs.get("State", {}).get("Pid") or 0), lambda c=c: self._remove(c.id))
                for c in self._service_containers(self.client, name) if c.status == "running"]

    def _service_containers(self, cli: Any, name: str) -> list[Any]:
        return list_containers(cli, filters={"label": [f"{label('project')}={self.context.project}",
                                                                f"{label('service')}={name}"]})

    def _remove(self, container_id: str) -> None:
        """Stop (SIGTERM, in-flight requests finish) and remove one container; missing is fine."""
        import docker.errors

        cli = self.client
        try:
            c = cli.containers.get(container_id)
            if c.status in ("running", "restarting", "paused"):
                c.stop(timeout=15)
            c.remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if exc.status_code != 404 and "is already in progress" not in str(exc):
                raise ProviderError(f"cannot remove container {container_id[:12]}: {exc.explanation or exc}") from None

    def _prune_images(self, name: str, *, final: bool) -> None:
        """Remove this service's images that no container uses; with ``final``, its package stages too."""
        import docker.errors

        cli = self.client
        in_use = {c.attrs.get("Image") for c in list_containers(cli)}
        filters = [f"{label('project')}={self.context.project}", f"{label('service')}={name}"]
        images = cli.images.list(all=True, filters={"label": filters})
        service_images = [i for i in images if i.labels.get(label("role")) == "service"]
        removable = [i for i in service_images if i.id not in in_use]
        if final and len(removable) == len(service_images):
            removable += [i for i in images if i.labels.get(label("role")) == "packages"]
        for image in removable:
            try:
                cli.images.remove(image.id, force=True)
            except docker.errors.ImageNotFound:
                pass
            except docker.errors.APIError as exc:
                if exc.status_code != 409:   # a child or a container of someone else holds it: keep it
                    raise ProviderError(f"cannot remove image {image.id[:19]}: {exc.explanation or exc}") from None

    def _start(self, desired: Resource, image: BuiltImage, port: int, keys: dict[str, str],
               progress: Progress, *, instance: str | None = None, probe_port: int | None = None,
               public: bool = True) -> Any:
        """Start one container; return it once it is ready and passed the smoke test. With ``public``
        False (a rollout's candidate) it never gets GO_LIVE: it answers on its probe port only."""
        import docker.errors

        name, spec, inputs = desired.address.name, desired.spec, desired.inputs
        recipe = self.images.recipe(desired)
        deploy = spec["deploy"]
        instance = instance or uuid.uuid4().hex[:8]
        keeper = self._hold_port(name, port, self._records_dir(self.context) / "logs" / f"{name}.ports.log")
        probe_port = probe_port or processes.free_port(HOST)
        routes = routefile.folder(self.context.data_dir, self.target)
        routes.mkdir(parents=True, exist_ok=True)
        os.chmod(routes, 0o755)   # read by whichever user the image runs as
        command = ["--entry-script", f"{APP_ROOT}/{inputs['entry_script']}", "--model-dir", recipe.model_dir,
                   "--host", HOST, "--port", str(port), "--workers", str(deploy.get("workers", 1)),
                   "--listen-socket", f"{PORTS_MOUNT}/{keeper.socket.name}", "--probe-port", str(probe_port),
                   "--hold-public", str(HOLD_PUBLIC_S), "--routes", f"{routefile.MOUNT}/{name}.json"]
        env = {
            **environment_variables(desired),
            "AZUREML_MODEL_DIR": recipe.model_dir,
            "AZUREML_ENTRY_SCRIPT": inputs["entry_script"],
            "AML_APP_ROOT": APP_ROOT,
            "SCORING_TIMEOUT_MS": str(deploy.get("scoring_timeout_ms", 60000)),
            "SERVICE_NAME": name,
            "MLOPS_REVISION": spec_fingerprint(spec),   # the version label of its metrics, as Live.versions
        }
        volumes = {str(SOCKET_ROOT): {"bind": PORTS_MOUNT, "mode": "rw"},
                   str(routes): {"bind": routefile.MOUNT, "mode": "ro"}}
        if keys:   # a read-only file, as the process engine does: the environment shows in `docker inspect`
            volumes[str(self.keys.mountable(name, keys))] = {"bind": KEYS_MOUNT, "mode": "ro"}
            env["MLOPS_KEYS_FILE"] = KEYS_MOUNT
        git = self.context.git
        labels = {
            label("project"): self.context.project, label("target"): self.target, label("service"): name,
            label("instance"): instance, label("port"): str(port), label("fingerprint"): desired.fingerprint,
            label("probe-port"): str(probe_port),   # where its per-version metrics are (rollout analysis)
            label("routes"): "1",   # its runtime reads the route file: it can be a rollout's stable version
            label("image"): image.digest_ref or image.ref, label("spec"): canonical_json(dict(spec)),
            label("sensitive"): json.dumps(sorted(desired.sensitive)), label("auth"): deploy.get("auth", "none"),
            label("git-commit"): str(git.get("commit") or ""), label("git-dirty"): str(bool(git.get("dirty"))).lower(),
        }
        progress(f"starting container on {HOST}:{port}")
        try:
            container = containers.run_service(
                self.client, image=image.digest_ref or image.image_id,
                name=f"{self.context.project}-{name}-{instance}", command=command, env=env, labels=labels,
                port=port, deploy=deploy, volumes=volumes)
        except docker.errors.APIError as exc:
            raise ProviderError(f"{desired.address}: the engine refused to start the container: "
                                f"{exc.explanation or exc}") from None
        try:
            self._wait_ready(desired, container, probe_port, progress)
            self._smoke_test(desired, probe_port, keys, progress)
            if public:
                container.kill(signal="SIGUSR1")   # GO_LIVE: only now does it take public requests
        except BaseException:
            self._keep_attempt_log(name, instance, port, spec, container)
            self._remove(container.id)
            raise
        container.reload()
        return container

    def _keep_attempt_log(self, name: str, instance: str, port: int, spec: Mapping[str, Any], container: Any) -> None:
        """A failed start's container is removed: its output is kept for `mlops logs` first."""
        try:
            output = container.logs().decode(errors="replace")
        except Exception:  # noqa: BLE001 - gone already: nothing to keep
            return
        path = self._log_file(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as log:
            log.write(startlog.header(instance, name, port, spec["runtime"],
                                      time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())) + "\n")
            log.write(output if output.endswith("\n") or not output else output + "\n")

    def _wait_ready(self, desired: Resource, container: Any, port: int, progress: Progress) -> None:
        progress("waiting for readiness (init() running)")
        timeout = desired.spec["deploy"].get("startup_timeout_s", 120)
        base = f"http://{HOST}:{port}"
        deadline = time.monotonic() + timeout
        events = as_events(progress)
        while not is_ready(base, timeout=0.5):
            events.check()
            container.reload()
            state = container.attrs.get("State", {})
            if state.get("Status") in ("exited", "dead", "restarting") or container.attrs.get("RestartCount", 0):
                cause = self._start_failure(desired, _output(container), APP_ROOT)
                raise ProviderError(f"{desired.address}: the container exited during start-up "
                                    f"(code {state.get('ExitCode')}): {cause}")
            if time.monotonic() >= deadline:
                cause = self._start_failure(desired, _output(container), APP_ROOT)
                raise ProviderError(f"{desired.address}: not ready after {timeout}s "
                                    f"(deploy.startup_timeout_s): {cause}")
            events.sleep(0.1)

    # -- rollouts: what this engine supplies (the steps are LocalEngine's) -------------------------
    def _container_of(self, name: str, entry: Mapping[str, Any]) -> Any | None:
        """The instance's container: by the id the route file kept, else by its instance label."""
        found = [c for c in self._service_containers(self.client, name)
                 if c.labels.get(label("instance")) == entry.get("instance")]
        return found[0] if found else None

    def _stable_entry(self, live: Live) -> dict[str, Any]:
        return {"version": spec_fingerprint(live.spec), "instance": live.details.get("instance"),
                "container": live.details.get("container")}

    def _reads_routes(self, live: Live) -> bool:
        container = self._container_of(live.address.name, {"instance": live.details.get("instance")})
        return container is not None and container.labels.get(label("routes")) == "1"

    def _launch_candidate(self, desired: Resource, port: int, keys: dict[str, str], instance: str, probe_port: int,
                          progress: Progress) -> dict[str, Any]:
        image = self.ensure_image(desired, progress)
        container = self._start(desired, image, port, keys, progress, instance=instance, probe_port=probe_port,
                                public=False)
        return {"container": container.id}

    def _identify(self, name: str, entry: Mapping[str, Any]) -> dict[str, Any]:
        container = self._container_of(name, entry)
        return {"container": container.id} if container is not None else {}

    def _instance_running(self, name: str, entry: Mapping[str, Any]) -> bool:
        container = self._container_of(name, entry)
        return container is not None and container.status == "running"

    def _stop_instance(self, name: str, entry: Mapping[str, Any]) -> None:
        container = self._container_of(name, entry)
        if container is not None:
            self._remove(container.id)

    def _go_live(self, name: str, entry: Mapping[str, Any]) -> None:
        container = self._container_of(name, entry)
        if container is None or container.status != "running":
            raise ProviderError(f"service.{name}: the candidate (instance {entry.get('instance')}) is not running")
        container.kill(signal="SIGUSR1")

    def _adopt(self, name: str, entry: Mapping[str, Any]) -> None:
        """Nothing to write: once the route file is gone, the newest running container is current."""

    def _remove_strays(self, live: Live, progress: Progress) -> None:
        for stray in live.details.get("strays") or []:
            self._remove(str(stray["container"]))

    # -- using ----------------------------------------------------------------------------------
    def endpoint(self, live: Live, instance: str | None = None) -> Endpoint:
        """As the process engine; when the key file is gone, the container's own environment has them."""
        found = super().endpoint(live)
        if live.details.get("auth") != "key" or found.headers:
            return found
        import docker.errors

        try:
            container = self.client.containers.get(str(live.details["container"]))
        except docker.errors.NotFound:
            return found
        env = container.attrs["Config"]["Env"] or []
        key = next((e.split("=", 1)[1] for e in env if e.startswith("MLOPS_PRIMARY_KEY=")), None)  # before 0.3
        if key is None:
            key = _mounted_key(container)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return Endpoint(scoring_url=found.scoring_url, headers=headers)

    def logs(self, live: Live, *, follow: bool = False, tail: int | None = None,
             instance: str | None = None) -> Iterator[str]:
        import docker.errors

        try:
            container = self.client.containers.get(str(live.details["container"]))
        except docker.errors.NotFound:
            raise ProviderError(f"{live.address}: its container is gone; run `mlops apply` to recreate it") from None
        yield from containers.log_lines(container, follow=follow, tail=tail)


def list_containers(cli: Any, filters: dict[str, Any] | None = None) -> list[Any]:
    """Containers (all states) matching ``filters``, ours only: those carrying our instance label.

    The SDK lists, then inspects each one; a container removed in between (another apply, the
    engine's own clean-up) makes that inspect fail, so the listing is simply taken again.
    Containers someone else started from one of our images inherit the image's labels but not
    the instance label we set on the container, and are never ours.
    """
    import docker.errors

    for attempt in range(5):
        try:
            found = cli.containers.list(all=True, filters=filters or {})
            break
        except docker.errors.NotFound:
            if attempt == 4:
                raise
    return [c for c in found if not filters or label("instance") in (c.labels or {})]


def _output(container: Any, lines: int = 400) -> list[str]:
    """The container's last output lines as written (a traceback keeps its indentation)."""
    try:
        return container.logs(tail=lines).decode(errors="replace").splitlines()
    except Exception:  # noqa: BLE001 - removed meanwhile: the state says enough
        return []


def _newest_per_service(found: list[Any]) -> list[Any]:
    """One container per service: a running one before a stopped one, then the newest."""
    best: dict[str, Any] = {}
    for c in found:
        name = c.labels.get(label("service"))
        if not name or label("spec") not in c.labels:
            continue
        key = (c.status == "running", c.attrs.get("Created", ""))
        if name not in best or key > (best[name].status == "running", best[name].attrs.get("Created", "")):
            best[name] = c
    return [best[n] for n in sorted(best)]



def _mounted_key(container: Any) -> str | None:
    """The primary key from the file mounted in ``container`` (the key store's copy may be gone)."""
    import io
    import tarfile

    import docker.errors

    try:
        stream, _ = container.get_archive(KEYS_MOUNT)
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            member = tar.getmembers()[0]
            data = json.loads(tar.extractfile(member).read())  # type: ignore[union-attr]
    except (docker.errors.APIError, tarfile.TarError, IndexError, AttributeError, ValueError):
        return None
    return str(data.get("primary") or "") or None if isinstance(data, dict) else None
