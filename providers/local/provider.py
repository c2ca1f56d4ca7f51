"""The embedded default target: each service is a detached scoring-runtime process on 127.0.0.1.

Records of what runs are kept in the project's per-user data folder (``<data>/local/<service>.json``,
shared by every checkout of the project on this machine; records an earlier version wrote in the
checkout's ``.mlops/local`` are still read, and move on the service's next apply); live state
is those records checked against reality (is the process, by pid + start time, alive; does its
readiness route answer) *and* what really runs: every instance carries a marker in its
environment, so an instance an interrupted apply never recorded is still found, shown, and
removed by the next apply or destroy.

The service's port is held by its port keeper (``ports.py``), which hands the one listening
socket to every version: an update starts the new instance on that socket, waits for it to be
ready and to answer the sample request on a private probe port, then retires the old one. All
versions share one accept queue, so nothing queued is dropped at cut-over whatever
``net.ipv4.tcp_migrate_req`` says, and the endpoint never goes dark.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

from planner.addresses import Address
from planner.core.resources import spec_fingerprint
from planner.hashing import digest
from planner.resources import FAILED, HEALTHY, TRANSITIONING, UNHEALTHY, Live, Resource, Version

from ..base import (
    FindsOrphans,
    KeepsBuildLog,
    Progress,
    ProjectContext,
    Provider,
    ProviderError,
    as_events,
    environment_variables,
    wait_until,
)
from ..http import is_ready
from ..store import _read_json, _write_json, ensure_state_dir
from . import processes, startlog
from .engine import HOLD_PUBLIC_S, HOST, LocalEngine
from .leftovers import keeper_gone, keeper_only
from .ports import PortKeepers
from .snapshots import prune, snapshot
from .venvs import ensure_venv, venv_python

PROBE_PARALLELISM = 16
GO_LIVE = signal.SIGUSR1
"""The runtime's --hold-public signal (providers/runtime/supervisor.py)."""
CANDIDATE_RECORD = "candidate.json"
"""A rollout's candidate's service record, in its instance folder until it is promoted."""
MARKER = "MLOPS_INSTANCE"
"""Environment variable every instance process carries: ``<owner>/<target>/<service>/<instance>``."""


def owner_of(context: ProjectContext) -> str:
    """Which project an instance belongs to: its data folder, so every checkout of it on this machine
    sees (and takes over) the same processes."""
    return digest({"state": str(context.data_dir.resolve())})[:16]


def legacy_owner_of(context: ProjectContext) -> str:
    """The owner earlier versions gave instances: the checkout's state folder (still found and stopped)."""
    return digest({"state": str(context.state_dir.resolve())})[:16]


class LocalProvider(KeepsBuildLog, FindsOrphans, LocalEngine):
    """``provider: local`` with ``engine: process`` (the default), and the kind's entry: ``variants()``
    answers the docker engine, a sibling built on the same shared ``LocalEngine``."""

    engine_name: ClassVar[str] = "process"

    @classmethod
    def variants(cls, config: Mapping[str, Any] | None = None) -> list[type[Provider]]:
        """``engine: docker`` runs each service as a container in a Docker engine instead."""
        from .docker import DockerLocalProvider

        if config is None:
            return [LocalProvider, DockerLocalProvider]
        return [DockerLocalProvider if config.get("engine") == "docker" else cls]

    # -- records ----------------------------------------------------------------------------------
    @staticmethod
    def _records_dir(context: ProjectContext) -> Path:
        return context.data_dir / "local"

    @staticmethod
    def _legacy_records_dir(context: ProjectContext) -> Path:
        """Where earlier versions kept the records, in the checkout: read until the service's next apply."""
        return context.state_dir / "local"

    def _record_file(self, name: str) -> Path:
        return self._records_dir(self.context) / f"{name}.json"

    def _recorded_port(self, name: str) -> int | None:
        record = _read_json(self._record_file(name))
        return int(record["port"]) if record and record.get("port") else None

    def _listener_holders(self, name: str) -> list[tuple[int, Callable[[], None]]]:
        """Running instances of ``name`` (pid, how to stop it): they may hold its port's listener."""
        return [(r["pid"], lambda r=r: processes.stop(r["pid"], r["start_id"]))
                for r in self._running(self.context).get(name, [])]

    def _instance_dir(self, name: str, instance: str) -> Path:
        return self._records_dir(self.context) / "instances" / f"{name}-{instance}"

    def _remove_instance(self, name: str, instance: str) -> None:
        for records in (self._records_dir(self.context), self._legacy_records_dir(self.context)):
            shutil.rmtree(records / "instances" / f"{name}-{instance}", ignore_errors=True)

    # -- live state -------------------------------------------------------------------------------
    def read(self) -> list[Live]:
        return self._read_all(self.context, lambda target: target == self.target)

    @classmethod
    def orphans(cls, context: ProjectContext, declared_targets: set[str]) -> list[tuple[Provider, Live]]:
        return [(cls(target=live.target or "", config={"provider": cls.kind}, context=context), live)
                for live in cls._read_all(context, lambda target: target not in declared_targets)]

    @classmethod
    def _read_all(cls, context: ProjectContext, wanted: Callable[[str | None], bool]) -> list[Live]:
        """The records of the targets ``wanted`` picks, each probed once, in parallel (bounded).

        Filtering happens before probing, so a plan probes each service once (not once for its
        target and again for the orphan search), and a hung service costs one probe timeout.
        """
        folder = cls._records_dir(context)
        running = cls._running(context)
        ports = cls.port_keepers(context)
        records: list[tuple[dict[str, Any], Path]] = []
        for where in (folder, cls._legacy_records_dir(context)):   # a service's newest record first
            records += [(r, where) for f in (sorted(where.glob("*.json")) if where.is_dir() else [])
                        if (r := _read_json(f)) is not None and wanted(r.get("target"))
                        and r.get("name") not in {seen["name"] for seen, _ in records}]
        if len(records) <= 1:
            found = [cls._live_from(r, where, ports) for r, where in records]
        else:
            with ThreadPoolExecutor(max_workers=min(PROBE_PARALLELISM, len(records))) as pool:
                found = list(pool.map(lambda item: cls._live_from(*item, ports), records))
        out = [cls._with_rollout_and_strays(context, live, running.get(live.address.name, [])) for live in found]
        recorded = {live.address.name for live in found}
        for name, instances in sorted(running.items()):
            if name not in recorded and wanted(instances[0]["target"]):
                out.append(cls._unrecorded(context, name, instances))
        out += keeper_only(ports, engine="process", kind=cls.kind, host=HOST,
                           known=recorded | set(running), wanted=wanted, log_dir=folder / "logs")
        return out

    @classmethod
    def _running(cls, context: ProjectContext) -> dict[str, list[dict[str, Any]]]:
        """Instance processes of this project that really run, by service name (from their marker)."""
        out: dict[str, list[dict[str, Any]]] = {}
        owners = dict.fromkeys((owner_of(context), legacy_owner_of(context)))
        for pid, start, value in [found for owner in owners for found in processes.find_marked(MARKER, owner + "/")]:
            parts = value.split("/")
            if len(parts) == 4:
                out.setdefault(parts[2], []).append({"pid": pid, "start_id": start, "target": parts[1],
                                                     "instance": parts[3]})
        return out

    @classmethod
    def _with_rollout_and_strays(cls, context: ProjectContext, live: Live, running: list[dict[str, Any]]) -> Live:
        """A rollout's candidate (named by the route file) is a version, not a stray."""
        engine = cls(target=live.target or "", config={"provider": cls.kind}, context=context)
        candidate = engine.rollout_candidate(live.address.name, live.details.get("instance"))
        live = engine.with_rollout(live)
        return cls._with_strays(live, [r for r in running if r["instance"] != candidate])

    @staticmethod
    def _with_strays(live: Live, running: list[dict[str, Any]]) -> Live:
        strays = [r for r in running if r["instance"] != live.details.get("instance")]
        if not strays:
            return live
        note = (f"{len(strays)} stray instance(s) (pid {', '.join(str(r['pid']) for r in strays)}) left by an "
                "interrupted apply; the next apply stops them")
        message = "; ".join(m for m in (live.details.get("message"), note) if m)
        return dataclasses.replace(live, details={**live.details, "strays": strays, "message": message},
                                   strays=tuple(str(r["instance"]) for r in strays))

    @classmethod
    def _unrecorded(cls, context: ProjectContext, name: str, instances: list[dict[str, Any]]) -> Live:
        """Instances that run but were never recorded (apply killed before it could): Unhealthy, replaced."""
        meta = {}
        for r in instances:
            for records in (cls._legacy_records_dir(context), cls._records_dir(context)):
                meta = _read_json(records / "instances" / f"{name}-{r['instance']}" / "instance.json") or meta
        pids = ", ".join(str(r["pid"]) for r in instances)
        details = {"strays": instances, "instance": None, "pid": None, "port": meta.get("port"),
                   "auth": (meta.get("spec") or {}).get("deploy", {}).get("auth", "none"),
                   "message": f"unrecorded instance(s) running (pid {pids}): an apply was interrupted before it "
                              "could record them; the next apply replaces them",
                   "log": str(cls._records_dir(context) / "logs" / f"{name}.log"), "git": meta.get("git", {})}
        if meta.get("port"):
            details["endpoint"] = f"http://{HOST}:{meta['port']}/score"
        return Live(Address("service", name), meta.get("spec") or {}, UNHEALTHY, target=instances[0]["target"],
                    provider=cls.kind, details=details, sensitive=frozenset(meta.get("sensitive", [])),
                    versions=Version.only(meta.get("spec") or {}, instances[0].get("instance")),
                    strays=tuple(str(r["instance"]) for r in instances[1:]))

    @staticmethod
    def _live_from(record: dict[str, Any], folder: Path, ports: PortKeepers) -> Live:
        alive = processes.is_running(record["pid"], record["start_id"])
        base = f"http://{HOST}:{record['port']}"
        message = ""
        if not alive:
            status = FAILED
            lines = [ln for ln in processes.tail(folder / "logs" / f"{record['name']}.log", 40) if ln.strip()]
            message = "process exited" + (f": {lines[-1].strip()}" if lines else "")
        elif is_ready(base):
            status = HEALTHY
        elif time.time() - record["started"] < record["spec"]["deploy"].get("startup_timeout_s", 120):
            status = TRANSITIONING
        else:
            status = UNHEALTHY
            message = f"{base}/ready does not answer 200"
        if alive and (problem := keeper_gone(ports, record["name"], int(record["port"]))):
            status, message = UNHEALTHY, problem   # it answers, but no new version could take its port
        details = {
            "endpoint": f"{base}/score",
            "swagger": f"{base}/swagger.json",
            "pid": record["pid"],
            "start_id": record["start_id"],
            "port": record["port"],
            "instance": record["instance"],
            "git": record.get("git", {}),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record["started"])),
            "auth": record["spec"]["deploy"].get("auth", "none"),
            "message": message,
            "log": str(folder / "logs" / f"{record['name']}.log"),
        }
        if record.get("probe_port"):
            details["metrics_url"] = f"http://{HOST}:{record['probe_port']}/metrics"
        return Live(Address("service", record["name"]), record["spec"], status, target=record["target"],
                    provider="local", details=details,
                    sensitive=frozenset(k for k in record.get("sensitive", [])),
                    versions=Version.only(record["spec"], record["instance"]))

    # -- acting ---------------------------------------------------------------------------------
    def create(self, desired: Resource, progress: Progress) -> Live:
        port = self._claim_port(desired)
        keys = self._keys(desired)
        with self._keeper_released_on_failure(desired.address.name, port):
            record = self._start(desired, port, keys, progress)
        return self._live_from(record, self._records_dir(self.context), self.ports)

    def update(self, desired: Resource, live: Live, progress: Progress) -> Live:
        name = live.address.name
        self.drop_rollout(live, progress)
        self._stop_strays(name, keep=live.details.get("instance"), progress=progress)
        record = _read_json(self._record_file(name))
        if record and record.get("fingerprint") == desired.fingerprint and live.status == HEALTHY:
            return self._live_from(record, self._records_dir(self.context), self.ports)   # only strays were wrong
        keys = self._keys(desired)
        record = self._start(desired, int(live.details["port"]), keys, progress)
        progress("retiring the previous instance")
        processes.stop(int(live.details["pid"]), str(live.details["start_id"]))
        self._remove_instance(name, str(live.details["instance"]))
        self._prune_snapshots()
        return self._live_from(record, self._records_dir(self.context), self.ports)

    def delete(self, live: Live, progress: Progress) -> None:
        name = live.address.name
        self.drop_rollout(live, progress)
        progress("stopping process")
        if live.details.get("pid"):
            processes.stop(int(live.details["pid"]), str(live.details["start_id"]))
            self._remove_instance(name, str(live.details["instance"]))
        record = _read_json(self._record_file(name))
        replaced = record is not None and record["instance"] != live.details.get("instance")
        self._stop_strays(name, keep=record["instance"] if replaced else None, progress=progress)
        if replaced:
            # A replacement already runs under this name; its record and its port stay.
            for keeper in self.ports.of_service(name):
                if keeper.port != int(record["port"]):
                    self.ports.stop(keeper)
            return
        self._record_file(name).unlink(missing_ok=True)
        (self._legacy_records_dir(self.context) / f"{name}.json").unlink(missing_ok=True)
        for keeper in self.ports.of_service(name):
            self.ports.stop(keeper)
        self._prune_snapshots()

    def _prune_snapshots(self) -> None:
        """Source snapshots that no instance of this project (any local target) runs from go."""
        in_use = set()
        metas = [meta for records in (self._records_dir(self.context), self._legacy_records_dir(self.context))
                 for meta in (records / "instances").glob("*/instance.json")]
        for meta in metas:
            try:
                spec = (_read_json(meta) or {}).get("spec") or {}
            except (ProviderError, AttributeError):
                return   # a record we cannot read may name any snapshot: remove nothing
            in_use.add(str(spec.get("source", "")).rsplit("@", 1)[-1])
        prune(self.context.state_dir, in_use)

    def _stop_strays(self, name: str, *, keep: str | None, progress: Progress) -> None:
        """Stop every running instance of ``name`` except ``keep`` (found by marker, recorded or not)."""
        strays = [r for r in self._running(self.context).get(name, []) if r["instance"] != keep]
        if strays:
            progress(f"stopping {len(strays)} stray instance(s) left by an interrupted apply")
        for r in strays:
            processes.stop(r["pid"], r["start_id"])
            self._remove_instance(name, r["instance"])

    def _start(self, desired: Resource, port: int, keys: dict[str, str], progress: Progress, *,
               instance: str | None = None, probe_port: int | None = None, public: bool = True) -> dict[str, Any]:
        """Start one instance on the service's shared listener; return its record once it is ready
        and passed the smoke test on its private probe port.

        The instance is written down (``instance.json``) before it is started and carries a marker,
        so an apply killed at any moment leaves nothing the next read cannot see. With ``public``
        False (a rollout's candidate) it never gets GO_LIVE and the service's record is not
        written: its record waits in its instance folder until it is promoted.
        """
        name, spec, inputs = desired.address.name, desired.spec, desired.inputs
        venv = ensure_venv(self.context.cache_dir, inputs["environment"], progress,
                           log_copy=self._log_file(name).with_suffix(".build.log"),
                           log_hint=f"`mlops logs --build {name}`")
        as_events(progress).check()   # cancelled while the environment was built: start nothing
        instance = instance or os.urandom(4).hex()
        instance_dir = self._instance_dir(name, instance)
        model_dir = self._model_dir(inputs["models"], instance_dir)
        source = snapshot(Path(inputs["source_dir"]), str(spec["source"]).rsplit("@", 1)[-1], self.context.state_dir)
        keeper = self._hold_port(name, port, self._log_file(name))
        probe_port = probe_port or processes.free_port(HOST)
        deploy = spec["deploy"]
        routes = self._route_path(name)
        routes.parent.mkdir(parents=True, exist_ok=True)
        cmd = [*_memory_limit(deploy.get("memory_gb")), str(venv_python(venv)), "-m", "mlops_runtime",
               "--entry-script", str(source / inputs["entry_script"]),
               "--model-dir", str(model_dir), "--host", HOST, "--port", str(port),
               "--workers", str(deploy.get("workers", 1)), "--listen-socket", str(keeper.socket),
               "--probe-port", str(probe_port), "--hold-public", str(HOLD_PUBLIC_S), "--routes", str(routes)]
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/"),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            **environment_variables(desired),
            "AZUREML_MODEL_DIR": str(model_dir),
            "AZUREML_ENTRY_SCRIPT": inputs["entry_script"],
            "AML_APP_ROOT": str(source),
            "PYTHONDONTWRITEBYTECODE": "1",
            "SCORING_TIMEOUT_MS": str(deploy.get("scoring_timeout_ms", 60000)),
            "SERVICE_NAME": name,
            "MLOPS_REVISION": spec_fingerprint(spec),   # the version label of its metrics, as Live.versions
            "PYTHONUNBUFFERED": "1",
        }
        if keys:
            # A path, not the keys: the environment of a process can be read back by its own code.
            env["MLOPS_KEYS_FILE"] = str(self.keys.path(name))
        env[MARKER] = f"{owner_of(self.context)}/{self.target}/{name}/{instance}"
        instance_dir.mkdir(parents=True, exist_ok=True)
        _write_json(instance_dir / "instance.json", {
            "name": name, "target": self.target, "instance": instance, "port": port, "spec": dict(spec),
            "git": dict(self.context.git), "sensitive": sorted(desired.sensitive), "started": time.time()})
        log_file = self._log_file(name)
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with log_file.open("a") as log:
            log.write(startlog.header(instance, name, port, spec["runtime"],
                                      time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())) + "\n")
        progress(f"starting process on {HOST}:{port}")
        pid, start_id = processes.start_detached(cmd, cwd=source, env=env, log_file=log_file)
        try:
            self._wait_ready(desired, pid, start_id, probe_port, log_file, progress, ran_from=source)
            self._smoke_test(desired, probe_port, keys, progress)
            if public:
                os.kill(pid, GO_LIVE)   # only now does it take public requests
        except BaseException:
            processes.stop(pid, start_id, timeout=5)
            shutil.rmtree(instance_dir, ignore_errors=True)
            raise
        record = {
            "name": name, "target": self.target, "instance": instance, "pid": pid, "start_id": start_id,
            "port": port, "spec": dict(spec), "fingerprint": desired.fingerprint, "git": dict(self.context.git),
            "started": time.time(), "sensitive": sorted(desired.sensitive), "venv": str(venv),
            "probe_port": probe_port,   # where its per-version metrics are (rollout analysis)
            "routes": True,   # its runtime reads the route file: it can be a rollout's stable version
        }
        if not public:
            _write_json(instance_dir / CANDIDATE_RECORD, record)
            return record
        ensure_state_dir(self.context.state_dir)
        _write_json(self._record_file(name), record)
        (self._legacy_records_dir(self.context) / f"{name}.json").unlink(missing_ok=True)   # moved here
        return record

    def _wait_ready(self, desired: Resource, pid: int, start_id: str, port: int, log_file: Path,
                    progress: Progress, *, ran_from: Path) -> None:
        progress("waiting for readiness (init() running)")
        timeout = desired.spec["deploy"].get("startup_timeout_s", 120)
        base = f"http://{HOST}:{port}"
        ready = wait_until(lambda: is_ready(base, timeout=0.5) or not processes.is_running(pid, start_id),
                           timeout=timeout, interval=0.05, events=progress)
        if ready and is_ready(base, timeout=2):
            return
        _start_line, attempt = startlog.last_attempt(processes.tail(log_file, 400))
        cause = self._start_failure(desired, attempt, str(ran_from))
        if not processes.is_running(pid, start_id):
            raise ProviderError(f"{desired.address}: the service process exited during start-up: {cause}")
        raise ProviderError(f"{desired.address}: not ready after {timeout}s (deploy.startup_timeout_s): {cause}")

    # -- rollouts: what this engine supplies (the steps are LocalEngine's) -------------------------
    def _stable_entry(self, live: Live) -> dict[str, Any]:
        return {"version": spec_fingerprint(live.spec), "instance": live.details.get("instance"),
                "pid": live.details.get("pid"), "start_id": live.details.get("start_id")}

    def _reads_routes(self, live: Live) -> bool:
        record = _read_json(self._record_file(live.address.name))
        return bool(record and record.get("routes") and record.get("instance") == live.details.get("instance"))

    def _launch_candidate(self, desired: Resource, port: int, keys: dict[str, str], instance: str, probe_port: int,
                          progress: Progress) -> dict[str, Any]:
        record = self._start(desired, port, keys, progress, instance=instance, probe_port=probe_port, public=False)
        return {"pid": record["pid"], "start_id": record["start_id"]}

    def _pid_of(self, name: str, entry: Mapping[str, Any]) -> tuple[int, str] | None:
        """The process of an instance: as the route file recorded it, else found by its marker."""
        if entry.get("pid"):
            return int(entry["pid"]), str(entry["start_id"])
        for r in self._running(self.context).get(name, []):
            if r["instance"] == entry.get("instance"):
                return int(r["pid"]), str(r["start_id"])
        return None

    def _identify(self, name: str, entry: Mapping[str, Any]) -> dict[str, Any]:
        found = self._pid_of(name, entry)
        return {"pid": found[0], "start_id": found[1]} if found else {}

    def _instance_running(self, name: str, entry: Mapping[str, Any]) -> bool:
        found = self._pid_of(name, entry)
        return found is not None and processes.is_running(*found)

    def _stop_instance(self, name: str, entry: Mapping[str, Any]) -> None:
        found = self._pid_of(name, entry)
        if found is not None:
            processes.stop(*found)
        if entry.get("instance"):
            self._remove_instance(name, str(entry["instance"]))

    def _go_live(self, name: str, entry: Mapping[str, Any]) -> None:
        found = self._pid_of(name, entry)
        if found is None or not processes.is_running(*found):
            raise ProviderError(f"service.{name}: the candidate (instance {entry.get('instance')}) is not running")
        os.kill(found[0], GO_LIVE)

    def _adopt(self, name: str, entry: Mapping[str, Any]) -> None:
        record = _read_json(self._instance_dir(name, str(entry["instance"])) / CANDIDATE_RECORD)
        if record is None:
            raise ProviderError(f"service.{name}: the candidate's record is gone; abort the rollout and retry it")
        ensure_state_dir(self.context.state_dir)
        _write_json(self._record_file(name), record)

    def _remove_strays(self, live: Live, progress: Progress) -> None:
        self._stop_strays(live.address.name, keep=live.details.get("instance"), progress=progress)

    def build_log(self, name: str) -> Iterator[str]:
        """The whole output of the last build of the service's virtualenv (pip's full story)."""
        path = self._log_file(name).with_suffix(".build.log")
        if not path.exists():
            raise ProviderError(f"no virtualenv build log for service {name!r} yet; run `mlops apply`")
        with path.open(errors="replace") as fh:
            for line in fh:
                yield line.rstrip("\n")

    def _model_dir(self, models: Mapping[str, Mapping[str, Any]], instance_dir: Path) -> Path:
        """Azure ML's layout: one model -> its version folder; several -> azureml-models/<name>/<v>."""
        for name, m in models.items():
            if not Path(m["path"]).is_dir():
                raise ProviderError(f"model {name} version {m['version']} is not registered; apply the model first")
        if len(models) == 1:
            return Path(next(iter(models.values()))["path"])
        root = instance_dir / "azureml-models"
        for name, m in models.items():
            link = root / name / str(m["version"])
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                link.symlink_to(m["path"], target_is_directory=True)
        return root

    # -- using ----------------------------------------------------------------------------------
    def logs(self, live: Live, *, follow: bool = False, tail: int | None = None,
             instance: str | None = None) -> Iterator[str]:
        path = Path(live.details["log"])
        if not path.exists():
            return
        lines = processes.tail(path, tail) if tail else path.read_text(errors="replace").splitlines()
        yield from lines
        if not follow:
            return
        with path.open(errors="replace") as fh:
            fh.seek(0, os.SEEK_END)
            while True:
                line = fh.readline()
                if line:
                    yield line.rstrip("\n")
                else:
                    time.sleep(0.2)


def _memory_limit(memory_gb: float | None) -> list[str]:
    """A prefix that caps the service's data memory (heap and anonymous maps) before the runtime starts.

    RLIMIT_DATA rather than RLIMIT_AS: numerical libraries reserve large address ranges they never
    touch. Set in the process itself before exec, so every worker it forks inherits it.
    """
    if not memory_gb:
        return []
    limit = int(float(memory_gb) * (1 << 30))
    code = (f"import os, resource, sys; resource.setrlimit(resource.RLIMIT_DATA, ({limit}, {limit})); "
            "os.execv(sys.argv[1], sys.argv[1:])")
    return [sys.executable, "-c", code]
