"""The rollout driver: an update on a target that splits traffic (``SplitsTraffic``), step by step.

``start_candidate`` (no traffic) -> the mirror phase if any (requests copied, answers thrown away) ->
each step's weight, held ``hold`` seconds while every ``analysis.interval`` judges candidate vs
stable -> ``promote``. blue_green is one step, 0 -> 100, with the same analysis; shadow is the
mirror phase alone. After every step and interval the state is written to the target (through
``set_traffic``), so an apply killed at any moment leaves the position there and the next apply
continues from it (the step's hold counts from ``RolloutState.updated``).

Figures come from ``provider.metrics(live, version)`` (Prometheus text of the runtimes serving that
version, ``version`` label = spec fingerprint), two scrapes making an interval. Where a target
cannot read them, the interval sends the service's sample request through ``provider.call``
(``min_requests`` times) and judges what callers saw from both versions together. Either way a
candidate version that its target reports Failed or Unhealthy fails the interval.

A failure (``failure_limit`` failed intervals, ``progress_deadline``, the candidate not starting,
Ctrl-C/SIGTERM) applies ``on_failure``: ``rollback`` -> ``provider.abort`` (phase aborted with the
reason, kept so no apply retries it) and ``RolledBack``; ``pause`` -> phase paused and
``RolloutPaused``. Both finish even when the apply was cancelled.

Targets without the capability keep ``bake.py``'s blue-green bake window.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from planner.core.errors import CancelledError, MlopsError
from planner.core.events import Events
from planner.core.plan import Change
from planner.core.redact import REDACTOR
from planner.core.resources import FAILED, UNHEALTHY, Live, Resource, RolloutState, spec_fingerprint

from .analysis import Instances, Tally, Verdict, VersionStats, delta_instances, judge, parse_instances
from .bake import RollbackFailed, RolledBack, RolloutFailed, RolloutPaused, Unreadable
from .resume import RUNNING, position
from .sampling import sample_calls
from .spec import Rollout, kept

Clock = Callable[[], float]


def splits(provider: object) -> bool:
    """Whether ``provider``'s target runs two versions side by side (the capability, not a flag)."""
    from providers.base import SplitsTraffic

    return isinstance(provider, SplitsTraffic)


def drives(change: Change, live: Live | None, provider: object) -> bool:
    """Whether this update is the driver's: a rollout policy or a rollout under way, on a splitting target."""
    if live is None or not splits(provider):
        return False
    return bool(change.rollout) or live.rollout is not None


@dataclass(frozen=True)
class Phase:
    """One position the rollout holds: the mirror phase (index -1) or a step."""

    index: int
    weight: float
    mirror: float
    hold: float
    label: str


def phases(policy: Rollout) -> list[Phase]:
    out = []
    if policy.mirror:
        out.append(Phase(-1, 0.0, policy.mirror.percent, policy.mirror.hold,
                         f"mirror phase: {policy.mirror.percent:g}% of requests copied to the candidate"))
    steps = policy.steps
    for i, step in enumerate(steps):
        out.append(Phase(i, step.weight, 0.0, step.hold,
                         f"step {i + 1}/{len(steps)}: the candidate answers {step.weight:g}% of requests"))
    return out


def finishing(events: Events) -> Events:
    """Events whose waits a Ctrl-C does not cut short: an abort, once started, stops the candidate (a cut
    abort left a rejected version running while the target said it was aborted)."""
    return Events(events.step, threading.Event())


def update(change: Change, desired: Resource, live: Live, provider: Any, events: Events, *,
           wait: bool = True, clock: Clock = time.time) -> Live:
    """Carry out an update the driver owns (see ``drives``): continue, abort or start a rollout, or
    refuse a held one (``RolledBack``/``RolloutPaused``, apply's exit 5/6). ``wait`` False stops after
    the first position is set (``--no-wait``)."""
    from planner.checks import check_returned

    want = spec_fingerprint(desired.spec)
    state = live.rollout
    name = desired.address
    if state is not None and state.candidate == want and state.phase == "aborted":
        raise RolledBack(f"{name}: version {want[:12]} was ROLLED BACK earlier ({state.reason or 'no reason kept'}); "
                         f"apply does not retry it: `mlops rollout retry {name.name}` runs it again")
    if state is not None and state.candidate == want and state.phase == "paused":
        raise RolloutPaused(f"{name}: rollout PAUSED at {position(state)} ({state.reason or 'no reason kept'}); "
                            f"`mlops rollout promote|abort|retry {name.name}` decides")
    if state is not None and state.phase != "aborted" and state.candidate != want:
        back = want == state.stable
        why = "the manifest asks for the stable version again" if back else f"superseded by version {want[:12]}"
        events.step(f"aborting the rollout of {state.candidate[:12]} at {position(state)}: {why}")
        live = provider.abort(live, dataclasses.replace(state, phase="aborted", weight=0.0, mirror=0.0, reason=why,
                                                        updated=clock()), finishing(events))
        if back:
            return live
        state = None
    resuming = state if state is not None and state.candidate == want and state.phase in RUNNING else None
    if not change.rollout:   # the manifest asks for no rollout now
        if resuming is not None:   # ...and for the candidate running: it is promoted as it stands
            return Driver(provider, desired, live, Rollout("canary"), events, clock=clock).promote_now(resuming)
        return check_returned(provider, "update", desired, provider.update(desired, live, events))
    policy = (kept(resuming.policy) if resuming else None) or Rollout.from_json(change.rollout)
    return Driver(provider, desired, live, policy, events, clock=clock).run(resuming, wait=wait)


def retry(desired: Resource, live: Live, provider: Any, events: Events, *, clock: Clock = time.time) -> Live:
    """``mlops rollout retry``: forget a held (aborted or paused) rollout and run it again from its start."""
    state = live.rollout
    if state is not None and state.phase != "aborted":
        events.step(f"aborting the rollout at {position(state)} to run it again")
        live = provider.abort(live, dataclasses.replace(state, phase="aborted", weight=0.0, mirror=0.0,
                                                        reason="retried", updated=clock()), finishing(events))
    live = provider.clear(live, events)
    block = desired.inputs.get("rollout")
    policy = Rollout.from_json(block) if block else kept(state.policy if state else None)
    if policy is None:
        raise MlopsError(f"{desired.address}: the manifest gives no rollout policy to retry")
    return Driver(provider, desired, live, policy, events, clock=clock).run(None)


class Driver:
    """One rollout of ``desired`` beside the version ``live`` runs; ``run`` promotes it or raises."""

    def __init__(self, provider: Any, desired: Resource, live: Live, policy: Rollout, events: Events, *,
                 clock: Clock = time.time):
        self.provider, self.desired, self.live, self.policy, self.events = provider, desired, live, policy, events
        self.clock = clock
        self.candidate = spec_fingerprint(desired.spec)
        self.state = RolloutState(candidate=self.candidate, stable=spec_fingerprint(live.spec),
                                  phase="mirror" if policy.mirror else "canary", policy=policy.to_json(),
                                  updated=clock())
        analysis = policy.analysis
        self.tally = Tally(analysis.failure_limit if analysis else 1)

    # -- the walk ------------------------------------------------------------------------------------------

    def run(self, resume: RolloutState | None, *, wait: bool = True) -> Live:
        try:
            return self._walk(resume, wait)
        except CancelledError:
            reason = f"the apply was cancelled (Ctrl-C or SIGTERM) at {position(self.state)}"
        except RolloutFailed as exc:
            reason = str(exc)
        except MlopsError as exc:
            reason = f"the target failed: {exc}"
        return self._fail(reason)

    def _walk(self, resume: RolloutState | None, wait: bool) -> Live:
        events, plan = self.events, phases(self.policy)
        start = 0
        if resume is None:
            events.step(f"rollout {self.policy.strategy}: starting version {self.candidate[:12]} beside "
                        f"{self.state.stable[:12]}, answering no request yet")
            self.live = self._check("start_candidate", self._start())
        else:
            self.state = resume
            self.tally.failures = resume.failed   # an interrupted apply's failed intervals still count
            start = next((k for k, p in enumerate(plan) if p.index == resume.step), 0)
            events.step(f"continuing the rollout of {self.candidate[:12]} from {position(resume)}")
            # An apply killed inside start_candidate left a state whose candidate may not be ready:
            # starting it again is idempotent (a running candidate is reused) and waits for readiness.
            self.live = self._check("start_candidate", self._start())
        for k, phase in enumerate(plan[start:]):
            here = self.state
            if resume is not None and k == 0 and here.step == phase.index and here.weight == phase.weight \
                    and here.mirror == phase.mirror:
                began = here.updated   # the hold counts from when the step began, before the interruption
                # ...and the step is set again (idempotent): an apply killed inside set_traffic may have
                # left the target between two steps (IoT Edge tags devices before it writes the state).
                self._keep()
            else:
                began = self.clock()
                self.state = dataclasses.replace(here, phase="mirror" if phase.index < 0 else "canary",
                                                 step=phase.index, weight=phase.weight, mirror=phase.mirror,
                                                 updated=began)
                events.step(phase.label)
                self._keep()
            if not wait:
                events.step(f"--no-wait: the rollout stays at {position(self.state)}; the next apply continues it")
                return self.live
            self._hold(phase, began)
        return self._promote()

    def promote_now(self, state: RolloutState) -> Live:
        """Promote the candidate of ``state`` without further steps (its policy is gone)."""
        self.state = state
        return self._promote()

    def _start(self) -> Live:
        """``start_candidate`` within ``progress_deadline``: a candidate that never becomes ready fails, loudly."""
        limit = self.policy.progress_deadline
        bounded = Events(self.events.step, threading.Event())
        done = threading.Event()

        def watch() -> None:   # the user's cancel, or the deadline, cancels the start
            deadline = time.monotonic() + limit
            while not done.is_set() and not bounded.cancel.is_set():
                if self.events.cancel.wait(min(0.1, max(0.0, deadline - time.monotonic()))) or \
                        time.monotonic() >= deadline:
                    bounded.cancel.set()

        watcher = threading.Thread(target=watch, name="rollout-deadline", daemon=True)
        watcher.start()
        try:
            return self.provider.start_candidate(self.desired, self.live, self.state, bounded)
        except CancelledError:
            if self.events.cancel.is_set():
                raise
            raise RolloutFailed(f"version {self.candidate[:12]} was not ready within progress_deadline "
                                f"{limit:g}s") from None
        finally:
            done.set()
            watcher.join()

    def _promote(self) -> Live:
        from planner.checks import check_returned

        summary = f"analysis {self.state.passed}/{self.state.judged} intervals passed" if self.policy.analysis \
            else "every hold passed"
        self.events.step(f"promoting version {self.candidate[:12]}: {summary}")
        quiet = finishing(self.events)   # a cancel after the last hold still promotes
        return check_returned(self.provider, "promote", self.desired,
                              self.provider.promote(self.live, self.desired, quiet))

    def _keep(self) -> None:
        """Write where the rollout stands to the target (the step, its weights, the analysis so far)."""
        self.live = self._check("set_traffic", self.provider.set_traffic(self.live, self.state, self.events))

    def _check(self, verb: str, live: object) -> Live:
        """What a rollout call answered must be this service on this target, running the candidate."""
        from planner.checks import ProviderBug

        ok = isinstance(live, Live) and live.address == self.desired.address and live.target == self.desired.target \
            and any(v.spec_fingerprint == self.candidate for v in live.versions)
        if not ok:
            cls = type(self.provider)
            raise ProviderBug(f"{self.desired.address}: provider bug in {cls.__module__}.{cls.__qualname__}: {verb} "
                              f"answered a live state without the candidate version {self.candidate[:12]}")
        return live  # type: ignore[return-value]

    # -- holding a step ------------------------------------------------------------------------------------

    def _hold(self, phase: Phase, began: float) -> None:
        analysis, events = self.policy.analysis, self.events
        if analysis is None:
            left = max(0.0, phase.hold - (self.clock() - began))
            events.step(f"holding {left:.1f}s (no analysis configured)")
            events.sleep(left)
            try:
                verdict = self._health() or Verdict("pass", "candidate healthy")
            except Unreadable:
                verdict = Verdict("pass", "health unreadable; no analysis configured")
            if verdict.failed:
                raise RolloutFailed(verdict.reason)
            return
        figures = Figures(self.provider, lambda: self.live, self.candidate, self.state.stable, self.desired,
                          analysis.min_requests)
        figures.start()
        passed_here = silent = judged_here = 0   # this step's intervals: passed, with no request at all, judged
        # The hold counts from when the step began (an interrupted apply's time served counts); the deadline
        # from now: a rollout resumed an hour after `--no-wait` still gets its progress_deadline to measure.
        deadline_at = self.clock() + max(phase.hold, self.policy.progress_deadline)
        while True:
            try:
                stats = figures.interval(events, analysis.interval)
                silent += 1 if stats[0].requests == 0 else 0
                verdict = self._health() or judge(analysis, stats[0], stats[1] if phase.weight < 100 else None)
            except Unreadable as exc:
                verdict = Verdict("inconclusive", f"{exc}: holding")
            limit_reached = self.tally.add(verdict)
            self.state = dataclasses.replace(self.state, judged=self.state.judged + 1,
                                             passed=self.state.passed + (1 if verdict.passed else 0),
                                             failed=self.tally.failures)
            passed_here += 1 if verdict.passed else 0
            judged_here += 1
            events.step(f"analysis {self.state.judged}: {verdict.result}: {verdict.reason}")
            self._keep()
            if limit_reached:
                raise RolloutFailed(f"analysis failed {self.tally.failures} of {self.state.judged} intervals "
                                    f"(failure_limit {analysis.failure_limit}): {self.tally.last_failure}")
            elapsed = self.clock() - began
            if elapsed >= phase.hold and passed_here > 0:
                return
            if self.clock() >= deadline_at:
                quiet = "; no request reached the candidate in any interval: the service had no traffic to " \
                    "judge it by" if silent and silent == judged_here else ""
                raise RolloutFailed(f"no interval of {phase.label.split(':')[0]} passed within progress_deadline "
                                    f"{self.policy.progress_deadline:g}s (min_requests {analysis.min_requests}; "
                                    f"{self.state.judged - self.state.passed} intervals failed or inconclusive{quiet})")

    def _health(self) -> Verdict | None:
        """A failed verdict if the target reports the candidate version Failed or Unhealthy; else None."""
        try:
            listed = self.provider.read()
        except MlopsError as exc:
            raise Unreadable(f"cannot read the target: {exc}") from None
        found = next((lv for lv in listed if lv.address == self.desired.address), None)
        if found is None:
            return Verdict("fail", f"the target no longer reports {self.desired.address}")
        self.live = found if any(v.spec_fingerprint == self.candidate for v in found.versions) else self.live
        version = next((v for v in found.versions if v.spec_fingerprint == self.candidate), None)
        if version is None:
            return Verdict("fail", f"the candidate version {self.candidate[:12]} no longer runs")
        if version.health is not None and version.health.state in (FAILED, UNHEALTHY):
            detail = f": {version.health.message}" if version.health.message else ""
            return Verdict("fail", f"the candidate version {self.candidate[:12]} is {version.health.state}{detail}")
        return None

    # -- failure -------------------------------------------------------------------------------------------

    def _fail(self, reason: str) -> Live:
        name, state = self.desired.address, self.state
        quiet = finishing(self.events)   # a cancelled apply still finishes this
        # The reason is kept on the target (an annotation, a label, a file) and may quote a crashing
        # version's last log lines: what looks like a secret is masked before it is written anywhere.
        reason = REDACTOR.scrub(reason)
        if self.policy.on_failure == "pause":
            try:
                self.provider.set_traffic(self.live, dataclasses.replace(state, phase="paused", reason=reason,
                                                                         updated=self.clock()), quiet)
            except MlopsError as exc:
                raise RollbackFailed(f"{name}: PAUSING FAILED after {reason}: {exc}") from None
            raise RolloutPaused(f"{name}: rollout PAUSED at {position(state)}: {reason}; the candidate keeps "
                                f"{state.weight:g}%: `mlops rollout promote|abort|retry {name.name}` decides")
        self.events.step(f"rolling back: {reason}")
        try:
            self.provider.abort(self.live, dataclasses.replace(state, phase="aborted", weight=0.0, mirror=0.0,
                                                               reason=reason, updated=self.clock()), quiet)
        except MlopsError as exc:
            raise RollbackFailed(f"{name}: ROLLBACK FAILED after {reason}: {exc}; the candidate may still answer "
                                 f"{state.weight:g}%") from None
        raise RolledBack(f"{name}: ROLLED BACK to version {state.stable[:12]}: {reason}")


class Figures:
    """Each interval's figures for (candidate, stable): deltas of two metric scrapes, or sampled answers.

    Which of the two is decided at ``start``: a target whose ``metrics()`` answers None is sampled. A
    scrape or a call that fails later is an inconclusive interval (``Unreadable``), never a verdict:
    the next scrape's difference covers the gap, and ``progress_deadline`` ends a target that stays
    unreadable.
    """

    def __init__(self, provider: Any, live: Callable[[], Live], candidate: str, stable: str, desired: Resource,
                 samples: int):
        self.provider, self.live, self.candidate, self.stable = provider, live, candidate, stable
        self.desired, self.samples = desired, max(1, samples)
        self._last: tuple[Instances, Instances] | None = None
        self.sampled = False

    def _scrape(self) -> tuple[Instances, Instances] | None:
        """Both versions' figures per instance; None when the target reports no metrics for the candidate.
        The stable version reporting none (no pod left at a 100 % step) is an empty scrape, not "no
        metrics": at 100 % it is not compared."""
        text = self.provider.metrics(self.live(), self.candidate)
        if text is None:
            return None
        candidate = parse_instances(text).get(self.candidate, {})
        text = self.provider.metrics(self.live(), self.stable)
        return candidate, (parse_instances(text).get(self.stable, {}) if text is not None else {})

    def start(self) -> None:
        try:
            self._last = self._scrape()
        except MlopsError:
            self._last = None   # no baseline yet: the first interval takes one (inconclusive)
            return
        self.sampled = self._last is None
        if self.sampled and (self.desired.inputs.get("sample_request") is None or not hasattr(self.provider, "call")):
            raise RolloutFailed(f"{self.desired.address}: the target reports no per-version metrics and the service "
                                "has no sample_request to measure it with; add sample_request")

    def interval(self, events: Events, seconds: float) -> tuple[VersionStats, VersionStats | None]:
        """Wait one interval; its figures. Raises ``Unreadable`` when the target could not say."""
        if self.sampled:
            return self._sampled(events, seconds), None
        events.sleep(seconds)
        try:
            now = self._scrape()
        except MlopsError as exc:
            raise Unreadable(f"cannot read the metrics: {exc}") from None
        if now is None:
            raise Unreadable("the target stopped reporting metrics")
        if self._last is None:
            self._last = now
            raise Unreadable("no earlier scrape to compare with; measuring from now")
        figures = (delta_instances(self._last[0], now[0]), delta_instances(self._last[1], now[1]))
        self._last = now
        return figures

    def _sampled(self, events: Events, seconds: float) -> VersionStats:
        """The sample request ``samples`` times over the interval, as callers see the service (both versions)."""
        body = str(self.desired.inputs.get("sample_request")).encode()

        def send() -> tuple[int, float]:
            sent = time.monotonic()
            try:
                status, _, _ = self.provider.call(self.live(), body, timeout=30)
            except MlopsError:
                status = 599   # unreachable counts as a server error
            return status, time.monotonic() - sent

        return sample_calls(send, self.samples, seconds, events)


