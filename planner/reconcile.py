"""One reconcile cycle: observe live state, classify every difference, and (heal/sync) act on some.

The plan is the planner's own (``make_plan``): reconcile adds no second diff. What it adds is
*which* planned changes it may carry out:

- ``observe`` carries out none; it reports, per service, sync (in sync / drifted / changes
  pending) and health.
- ``heal`` only changes whose desired fingerprint equals the one last seen deployed: a killed
  process, a scaled-down Deployment, a deleted container group — never a new desired change from
  git (that is a *pending* change: `apply` or `sync` carry it out). Never a service that is
  Transitioning (its own rollout is in progress).
- ``sync`` every planned change of the checked-out manifest; deletions only with ``prune``, and
  never every live service at once.

Writes take the same locks as `apply` (the manifest's apply lock, then the targets' own locks),
then read live state again and re-decide, so two reconcilers, or a reconciler and `apply`, never
write at once. Each resource has an exponential backoff after a failed heal, reset on success;
after ``max_heals`` failures of one desired fingerprint it stops healing it until the manifest
changes it. A stop request finishes the change in progress and starts no other.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .addresses import Address
from .errors import LockedError, MlopsError
from .graph import edges
from .plan import Action, Change, Plan
from .reconcile_state import Backoff, ReconcileMemory, ResourceMemory, remembered
from .redact import REDACTOR
from .resources import HEALTHY, TRANSITIONING, Live, Resource
from .rollout.resume import rollout_line

HELD_ROLLOUTS = ("rollout_aborted", "rollout_paused")
"""Plan reasons of a rollout the target holds for a person: a reconcile never moves it."""

MODES = ("observe", "heal", "sync")
IN_SYNC, DRIFTED, PENDING, ORPHAN = "in sync", "drifted", "changes pending", "not in manifest"
MISSING = "Missing"

Log = Callable[[dict[str, Any]], None]
Notify = Callable[[list[dict[str, Any]], "CycleReport"], None]
"""Called with a cycle's transitions (never empty) and the cycle they came from."""


@dataclass(frozen=True)
class Options:
    mode: str = "observe"
    prune: bool = False
    max_heals: int = 3
    backoff: Backoff = Backoff()

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise MlopsError(f"--mode {self.mode!r} is not one of {', '.join(MODES)}")
        if self.max_heals < 1:
            raise MlopsError("--max-heals must be at least 1")


@dataclass
class ServiceReport:
    """One service as the cycle saw it: the two orthogonal statuses plus why."""

    name: str
    target: str | None
    sync: str
    health: str
    message: str = ""
    counts: str = ""
    action: str = "no-op"
    suspended: bool = False
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class ChangeResult:
    address: str
    action: str
    result: str
    """ok | failed | skipped | stopped | backoff | suspended | rollout | not-started."""
    error: str = ""
    elapsed: float = 0.0
    failures: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"event": "change", **dataclasses.asdict(self), "elapsed": round(self.elapsed, 3)}


@dataclass
class CycleReport:
    mode: str
    started: float
    duration: float = 0.0
    services: list[ServiceReport] = field(default_factory=list)
    changes: list[ChangeResult] = field(default_factory=list)
    locked: str = ""
    error: str = ""
    last_success: float = 0.0

    @property
    def out_of_sync(self) -> list[ServiceReport]:
        return [s for s in self.services if s.sync != IN_SYNC]

    def exit_code(self) -> int:
        """0 all in sync, 1 an error or a failed change, 2 differences remain (drift, pending, held back)."""
        if self.error or any(c.result == "failed" for c in self.changes):
            return 1
        healed = {c.address for c in self.changes if c.result == "ok"}
        left = [s for s in self.out_of_sync if f"service.{s.name}" not in healed]
        return 2 if left or self.locked else 0

    def to_json(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for s in self.services:
            counts[s.sync] = counts.get(s.sync, 0) + 1
        results: dict[str, int] = {}
        for c in self.changes:
            results[c.result] = results.get(c.result, 0) + 1
        return {"event": "cycle", "mode": self.mode, "duration_s": round(self.duration, 3),
                "services": len(self.services), "sync": counts, "changes": results,
                "unhealthy": sorted(s.name for s in self.services if s.health not in (HEALTHY, MISSING)),
                "drifted": sorted(s.name for s in self.services if s.sync == DRIFTED),
                "pending": sorted(s.name for s in self.services if s.sync in (PENDING, ORPHAN)),
                "locked": self.locked, "error": self.error, "exit_code": self.exit_code()}


@dataclass
class Observation:
    project: Any
    desired: dict[Address, Resource]
    live: dict[Address, Live]
    plan: Plan


def suspended_services(manifest: Any) -> set[str]:
    return {name for name, s in manifest.section("services").items() if (s.get("reconcile") or {}).get("suspend")}


FINGERPRINT_DETAILS = ("fingerprint", "fingerprint_label")
"""Where targets that label what they run report the desired fingerprint it was deployed from."""


def learn(memory: ReconcileMemory, plan: Plan, live: Mapping[Address, Live]) -> None:
    """Remember, per resource, the desired fingerprint seen deployed (the base line of a heal).

    Seen deployed: its spec matches the manifest's now (the plan holds both), or the target labels
    the live object with that fingerprint. A difference that appeared before any reconciler saw
    the resource in sync, on a target without such labels, cannot be told from a new desired
    change: it stays pending.
    """
    for change in plan.changes:
        want = change.desired_fingerprint
        if want is None or change.before is None:
            continue
        same = change.before_target == change.after_target and change.before == change.after
        if not same:
            have = live.get(change.address)
            details = have.details if have is not None else {}
            same = any(_labels_fingerprint(str(details.get(k) or ""), want) for k in FINGERPRINT_DETAILS)
        if same:
            entry = memory.of(str(change.address))
            entry.deployed = want


def _labels_fingerprint(label: str, fingerprint: str) -> bool:
    """The label names this fingerprint: all of it, or its first 63 characters (a Kubernetes label
    value's limit), never a short prefix."""
    return label == fingerprint or (len(label) == 63 and fingerprint.startswith(label))


def is_heal(change: Change, remembered_entry: ResourceMemory | None) -> bool:
    """A change back to what was deployed, not a new desired state (and never a deletion)."""
    return (change.action is not Action.DELETE and change.desired_fingerprint is not None
            and remembered_entry is not None and remembered_entry.deployed == change.desired_fingerprint)


def sync_state(change: Change, heal: bool) -> str:
    if change.action is Action.NOOP:
        return IN_SYNC
    if change.action is Action.DELETE:
        return ORPHAN
    return DRIFTED if heal else PENDING


class Reconciler:
    """Runs cycles for one manifest; keeps nothing between cycles but the memory file."""

    def __init__(self, manifest: Path, options: Options, *, log: Log = lambda event: None,
                 notify: Notify = lambda events, report: None,
                 stop: threading.Event | None = None, clock: Callable[[], float] = time.time,
                 may_write: Callable[[], str | None] = lambda: None):
        self.manifest = manifest
        self.may_write = may_write
        """Asked under the locks right before writing: None to go ahead, else why not (e.g. the
        leader Lease was lost); the cycle then writes nothing and reports it like a held lock."""
        self.notify = notify
        self.options = options
        self.log = log
        self.stop = stop or threading.Event()
        self.clock = clock
        self.last_success = 0.0

    # -- observing ----------------------------------------------------------------------------
    def observe(self, project: Any | None = None) -> Observation:
        from .planning import make_plan
        from .project import Project

        project = project or Project.load(self.manifest)
        desired, live = project.desired(), project.live()
        return Observation(project, desired, live, make_plan(project, desired=desired, live=live))

    def cycle(self) -> CycleReport:
        report = CycleReport(self.options.mode, self.clock())
        started = time.monotonic()
        try:
            self._cycle(report)
        except MlopsError as exc:
            report.error = REDACTOR.scrub(str(exc))
        report.duration = time.monotonic() - started
        return report

    def _cycle(self, report: CycleReport) -> None:
        """Observe and report in one pass over the memory (one write at most); act only if needed."""
        seen = self.observe()
        state_dir = seen.project.manifest.state_dir
        suspended = suspended_services(seen.project.manifest)
        with remembered(state_dir) as memory:
            learn(memory, seen.plan, seen.live)
            report.services = self.service_reports(seen, memory, suspended)
            todo = self._select(seen, memory, suspended, report, final=False)
            acting = bool(todo) and not self.stop.is_set()
            if not acting:
                self._select(seen, memory, suspended, report, final=True)   # report what is held back
                events = self._conclude(memory, report)
        if acting:
            self._act(seen.project, report)
            with remembered(state_dir) as memory:
                if any(c.result == "ok" for c in report.changes):
                    after = self.observe()   # report what runs now, not what ran before the changes
                    learn(memory, after.plan, after.live)
                    report.services = self.service_reports(after, memory, suspended_services(after.project.manifest))
                events = self._conclude(memory, report)
        if events:
            self.notify(events, report)

    def _conclude(self, memory: ReconcileMemory, report: CycleReport) -> list[dict[str, Any]]:
        if not report.error and not any(c.result == "failed" for c in report.changes):
            self.last_success = self.clock()
        report.last_success = self.last_success
        return transitions(memory, report)

    def service_reports(self, seen: Observation, memory: ReconcileMemory,
                        suspended: set[str]) -> list[ServiceReport]:
        out = []
        for change in seen.plan.changes:
            if change.address.kind != "service":
                continue
            live = seen.live.get(change.address)
            heal = is_heal(change, memory.resources.get(str(change.address)))
            health = live.condition if live is not None else None
            out.append(ServiceReport(
                name=change.address.name, target=change.after_target or change.before_target,
                sync=sync_state(change, heal), health=health.state if health else MISSING,
                message=REDACTOR.scrub(health.message if health else "not running"),
                counts=health.counts() if health else "", action=change.action.value,
                suspended=change.address.name in suspended))
        return out

    # -- choosing -------------------------------------------------------------------------------
    def _select(self, seen: Observation, memory: ReconcileMemory, suspended: set[str], report: CycleReport,
                *, final: bool) -> list[Change]:
        """The changes this mode may carry out now; held-back ones are reported (once, when ``final``)."""
        mode = self.options.mode
        if mode == "observe":
            return []
        now = self.clock()
        chosen: list[Change] = []
        held: list[ChangeResult] = []
        deletes = [c for c in seen.plan.actionable if c.action is Action.DELETE and c.address.kind == "service"]
        live_services = [a for a in seen.live if a.kind == "service"]
        guard = bool(deletes) and len(deletes) >= len(live_services)
        for change in seen.plan.actionable:
            address = str(change.address)
            entry = memory.resources.get(address)
            if change.address.kind == "service" and change.address.name in suspended:
                held.append(ChangeResult(address, change.action.value, "suspended",
                                         "suspended in the manifest (reconcile.suspend)"))
                continue
            if change.action is Action.DELETE:
                if mode != "sync" or not self.options.prune:
                    continue   # reported as "not in manifest"; only sync --prune deletes
                if guard:
                    held.append(ChangeResult(address, change.action.value, "skipped",
                                             "refusing to delete every live service at once (--prune guard); "
                                             "use `mlops destroy` for that"))
                    continue
            elif mode == "heal" and not is_heal(change, entry):
                continue       # a new desired state: `apply` or `--mode sync` carry it out
            if change.live_status == TRANSITIONING:
                held.append(ChangeResult(address, change.action.value, "rollout",
                                         "its target reports a rollout in progress (Transitioning); not touched"))
                continue
            if change.reason in HELD_ROLLOUTS:   # rolled back or paused: a person decides (`mlops rollout ...`)
                held.append(ChangeResult(address, change.action.value, "rollout", rollout_line(change)))
                continue
            if entry is not None:
                failed = entry.failed_for(change.desired_fingerprint)
                if failed >= self.options.max_heals:
                    held.append(ChangeResult(
                        address, change.action.value, "stopped",
                        f"{failed} heals of this desired state failed; not trying again until the manifest "
                        f"changes it (last error: {entry.last_error})", failures=failed))
                    continue
                if failed and entry.next_attempt > now:
                    held.append(ChangeResult(address, change.action.value, "backoff",
                                             f"next attempt in {entry.next_attempt - now:.0f}s after {failed} "
                                             "failed heal(s)", failures=failed))
                    continue
            chosen.append(change)
        if final:
            for result in held:
                report.changes.append(result)
                self._log_change(result)
        return chosen

    # -- acting -----------------------------------------------------------------------------------
    def _act(self, project: Any, report: CycleReport) -> None:
        from .lock import apply_lock

        state_dir = project.manifest.state_dir
        try:
            with apply_lock(state_dir, f"reconcile {self.options.mode}", project.context.data_dir), \
                    contextlib.ExitStack() as locks:
                seen = self.observe(project)   # again, under the lock: what another writer did counts
                self._lock_targets(seen, locks)
                refused = self.may_write()
                if refused:
                    raise LockedError(refused)
                suspended = suspended_services(seen.project.manifest)
                with remembered(state_dir) as memory:
                    learn(memory, seen.plan, seen.live)
                    report.services = self.service_reports(seen, memory, suspended)
                    chosen = self._select(seen, memory, suspended, report, final=True)
                self._carry_out(seen, chosen, report)
        except LockedError as exc:
            report.locked = REDACTOR.scrub(str(exc))
            self.log({"event": "locked", "message": report.locked})

    def _lock_targets(self, seen: Observation, stack: contextlib.ExitStack) -> None:
        from providers.base import LocksItself

        project = seen.project
        names = {c.after_target for c in seen.plan.actionable if c.after_target} | \
                {c.before_target for c in seen.plan.actionable if c.before_target}
        lockable = [project.providers[n] for n in sorted(names) if isinstance(project.providers.get(n), LocksItself)]
        for provider in lockable:
            provider.ensure_connected()
            stack.enter_context(provider.apply_lock(f"mlops reconcile {self.options.mode}"))
        if lockable:
            seen.live = project.live()
            from .planning import make_plan

            seen.plan = make_plan(project, desired=seen.desired, live=seen.live)

    def _carry_out(self, seen: Observation, chosen: list[Change], report: CycleReport) -> None:
        """One change at a time in dependency order; a stop request lets the running one finish."""
        from .apply import apply_plan

        waits = edges(chosen)
        done: dict[Address, bool] = {}
        for change in _ordered(chosen, waits):
            address = str(change.address)
            if self.stop.is_set():
                result = ChangeResult(address, change.action.value, "not-started", "the reconciler is stopping")
            elif any(done.get(d) is False for d in waits.get(change.address, ())):
                result = ChangeResult(address, change.action.value, "skipped", "a change it depends on failed")
            else:
                single = dataclasses.replace(seen.plan, changes=(change,))
                [outcome] = apply_plan(seen.project, single, seen.desired, seen.live, parallelism=1)
                result = ChangeResult(address, change.action.value, "ok" if outcome.ok else "failed",
                                      REDACTOR.scrub(outcome.error or ""), outcome.elapsed)
            done[change.address] = result.result == "ok"
            with remembered(seen.project.manifest.state_dir) as memory:
                self._record(memory.of(address), change, result)
            report.changes.append(result)
            self._log_change(result)

    def _record(self, entry: ResourceMemory, change: Change, result: ChangeResult) -> None:
        if result.result == "ok":
            entry.deployed = change.desired_fingerprint
            entry.failures, entry.failed_fingerprint, entry.next_attempt, entry.last_error = 0, None, 0.0, ""
            entry.stopped_reported = ""
        elif result.result == "failed":
            entry.failures = entry.failed_for(change.desired_fingerprint) + 1
            entry.failed_fingerprint = change.desired_fingerprint
            entry.next_attempt = self.clock() + self.options.backoff.delay(entry.failures)
            entry.last_error = result.error[:500]
            result.failures = entry.failures
            if entry.failures >= self.options.max_heals:
                result.error += (f" ({entry.failures} failed heals of this desired state: not trying again "
                                 "until the manifest changes it)")

    def _log_change(self, result: ChangeResult) -> None:
        self.log({**result.to_json(), "mode": self.options.mode})


def transitions(memory: ReconcileMemory, report: CycleReport) -> list[dict[str, Any]]:
    """What changed since the last cycle worth telling someone: drift appeared or cleared, health
    changed, a heal failed or gave up, a heal worked. Steady states say nothing."""
    events: list[dict[str, Any]] = []
    for s in report.services:
        entry = memory.of(f"service.{s.name}")
        base = {"service": s.name, "target": s.target, "sync": s.sync, "health": s.health, "message": s.message}
        if s.sync != IN_SYNC and entry.sync in ("", IN_SYNC):
            events.append({"event": "drift_appeared", **base})
        elif s.sync == IN_SYNC and entry.sync not in ("", IN_SYNC):
            events.append({"event": "drift_cleared", **base})
        if entry.health and s.health != entry.health:
            events.append({"event": "health_changed", "previous_health": entry.health, **base})
        entry.sync, entry.health = s.sync, s.health
    for c in report.changes:
        entry = memory.of(c.address)
        if c.result == "failed":
            events.append({"event": "heal_failed", "address": c.address, "error": c.error, "failures": c.failures})
        elif c.result == "ok":
            events.append({"event": "healed" if report.mode == "heal" else "synced", "address": c.address,
                           "action": c.action})
        elif c.result == "stopped" and entry.stopped_reported != (entry.failed_fingerprint or ""):
            entry.stopped_reported = entry.failed_fingerprint or ""
            events.append({"event": "heal_stopped", "address": c.address, "error": c.error, "failures": c.failures})
    return [{**e, "mode": report.mode} for e in events]


def _ordered(changes: list[Change], waits: Mapping[Address, set[Address]]) -> list[Change]:
    """Dependencies first; otherwise address order (stable, so logs compare run to run)."""
    by_address = {c.address: c for c in changes}
    out: list[Change] = []
    placed: set[Address] = set()

    def visit(address: Address, trail: frozenset[Address]) -> None:
        if address in placed or address in trail:
            return
        for dep in sorted(waits.get(address, ())):
            visit(dep, trail | {address})
        placed.add(address)
        out.append(by_address[address])

    for address in sorted(by_address):
        visit(address, frozenset())
    return out
