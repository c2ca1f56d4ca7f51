"""Rollouts on the command line: ``mlops rollout status|promote|abort|retry SVC``, and how apply reports
one that failed.

Exit codes of a failed rollout:

    5  a rollout failed its analysis and the previous version serves again (rolled back); also an
       apply that leaves alone a version rolled back earlier (``mlops rollout retry`` runs it again)
    6  a rollout failed and the new version still serves: paused (``on_failure: pause``) or the
       rollback itself failed; also an apply that leaves a paused rollout alone; a person must decide
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import urllib.request
from collections.abc import Sequence
from typing import TYPE_CHECKING

from providers.base import ensure_connected

from ..addresses import Address
from ..errors import MlopsError

if TYPE_CHECKING:
    from ..apply import Outcome

EXIT_ROLLED_BACK = 5
EXIT_ROLLOUT_STOPPED = 6


def rollout_report(rollouts: Sequence[Outcome], total: int) -> tuple[int, str]:
    """The apply's last line and exit code when a rollout failed: loud, naming each service."""
    rolled = [o for o in rollouts if o.rollout == "rolled_back"]
    stopped = [o for o in rollouts if o.rollout != "rolled_back"]
    parts = []
    if rolled:
        parts.append(f"{len(rolled)} rolled back ({', '.join(str(o.change.address) for o in rolled)})")
    if stopped:
        parts.append(f"{len(stopped)} stopped with the new version still serving "
                     f"({', '.join(str(o.change.address) for o in stopped)})")
    result = (f"Apply ROLLED BACK: {'; '.join(parts)}, of {total} changes; the failed metric is on each "
              "`Error:` line above.")
    print(result, file=sys.stderr)
    return (EXIT_ROLLOUT_STOPPED if stopped else EXIT_ROLLED_BACK), result


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("rollout", help="how a service's rollout stands, and promote, abort or retry it")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    s = verbs.add_parser("status", parents=[common], help="the policy, the version serving, pending updates and "
                                                          "what the version's own metrics say since it started")
    s.add_argument("service", help="the service's name")
    s.set_defaults(handler=cmd_status)
    for verb, text, handler in (
            ("promote", "the candidate takes every request now and becomes the only version", cmd_promote),
            ("abort", "the stable version takes every request again; the candidate is removed and not retried "
                      "by apply", cmd_abort),
            ("retry", "run an aborted or paused rollout again from its first step", cmd_retry)):
        v = verbs.add_parser(verb, parents=[common], help=text)
        v.add_argument("service", help="the service's name")
        v.set_defaults(handler=handler)


def cmd_status(args: argparse.Namespace) -> int:
    """What the manifest asks, what the target reports, and the serving version's own figures."""
    from ..planning import make_plan
    from ..project import Project
    from ..render_text import rollout_line
    from ..rollout.analysis import error_rate, parse_metrics, quantile
    from ..rollout.spec import Rollout, describe

    project = Project.load(args.file)
    address = Address("service", args.service)
    desired, live = project.desired(), project.live()
    if address not in desired and address not in live:
        known = ", ".join(sorted(a.name for a in desired if a.kind == "service")) or "none"
        raise MlopsError(f"no service {args.service!r} in the manifest or on any target (services: {known})")
    want, now = desired.get(address), live.get(address)
    policy = want.inputs.get("rollout") if want else None
    shown = describe(Rollout.from_json(policy)) if policy else "no rollout policy (replace after the smoke test)"
    print(f"{address}: {shown}")
    if now is None:
        print("  live: not deployed")
        return 0
    state = now.rollout
    if state is not None:
        from ..rollout.resume import position

        shares = ", ".join(f"{v.spec_fingerprint[:12]} {v.traffic * 100:g}%" for v in now.versions)
        print(f"  rollout: {state.phase} at {position(state)}; candidate {state.candidate[:12]}, stable "
              f"{state.stable[:12]}; weight {state.weight:g}%, mirror {state.mirror:g}%; versions: {shares or '-'}"
              + (f"; reason: {state.reason}" if state.reason else ""))
    git = now.details.get("git") or {}
    print(f"  live: {now.status} on target {now.target!r}, commit {str(git.get('commit') or '-')[:12]}"
          f"{' (dirty)' if git.get('dirty') else ''}, models {', '.join(now.spec.get('models') or []) or '-'}")
    change = next((c for c in make_plan(project, targets=[address], desired=desired, live=live).actionable
                   if c.address == address), None)
    if change is None:
        print("  pending: nothing; the live version is the manifest's")
    else:
        how = f" ({rollout_line(change)})" if change.rollout else ""
        print(f"  pending: {change.action.value}{how}: `mlops apply` runs it")
    url = now.details.get("metrics_url")
    if not isinstance(url, str) or not url:
        print("  metrics: this target reports no metrics address; a bake window there samples the sample request")
        return 0
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:   # noqa: S310 (the target's own address)
            scraped = parse_metrics(reply.read(4 * 1024 * 1024).decode("utf-8", "replace"))
    except OSError as exc:
        print(f"  metrics: cannot read {url}: {exc}")
        return 0
    for version, stats in scraped.items():
        rate = error_rate(stats)
        p99 = quantile(0.99, stats.buckets)
        print(f"  metrics since start, version {version[:12]}: {int(stats.requests)} requests, error rate "
              f"{'-' if rate is None else f'{rate * 100:.2f}%'}, p99 {'-' if p99 is None else f'{p99 * 1000:.0f}ms'}")
    return 0


# -- promote / abort / retry: a person decides about a rollout held on the target ------------------------------

def _rollout_target(args: argparse.Namespace, project):
    """(desired resource or None, live, provider) of a service with a rollout on a splitting target,
    or one clear line saying why not."""
    address = Address("service", args.service)
    desired = project.desired()
    want = desired.get(address)
    target = want.target if want is not None else None
    if target is not None:   # said before anything is read: the target's kind decides
        _refuse_unless_splits(project.provider_for(target), address, target, args.verb)
    live = project.live(only={target} if target else None).get(address)
    if live is None:
        raise MlopsError(f"{address}: not deployed on any target; nothing to {args.verb}")
    provider = project.provider_for(live)
    _refuse_unless_splits(provider, address, str(live.target), args.verb)
    if live.rollout is None:
        raise MlopsError(f"{address}: no rollout on target {live.target!r} (nothing to {args.verb}); "
                         "`mlops rollout status` shows what runs")
    ensure_connected(provider)
    return want, live, provider


def _refuse_unless_splits(provider, address: Address, target: str, verb: str) -> None:
    from ..rollout.driver import splits

    if not splits(provider):
        raise MlopsError(f"{address}: target {target!r} ({provider.describe()}) cannot split traffic, so it keeps "
                         f"no rollout to {verb}; its updates run as a bake window during `mlops apply`")


def _lock_target(project, args: argparse.Namespace, cancel, stack: contextlib.ExitStack) -> None:
    """The service's declared target's own lock (a Kubernetes Lease), as apply takes it: one writer at a time."""
    from providers.base import LocksItself

    service = project.manifest.section("services").get(args.service) or {}
    target = project.manifest.service_target(service) if service else None
    provider = project.providers.get(target) if isinstance(target, str) else None
    if isinstance(provider, LocksItself):
        ensure_connected(provider)   # type: ignore[arg-type]
        stack.enter_context(provider.apply_lock(f"mlops rollout {args.verb}", cancel))


def _run_verb(args: argparse.Namespace, act) -> int:
    """Under the apply lock, with Ctrl-C/SIGTERM as a cancel and progress on stdout; a failed rollout exits 5/6."""
    import threading

    from ..core.events import Events
    from ..lock import apply_lock
    from ..project import Project
    from ..rollout.bake import RolloutFailed, rollout_result
    from .signals import cancel_on_signals

    project = Project.load(args.file)
    cancel = threading.Event()
    events = Events(lambda text: print(f"service.{args.service}: {text}", flush=True), cancel)
    with apply_lock(project.manifest.state_dir, f"rollout {args.verb}", project.context.data_dir), \
            cancel_on_signals(cancel), contextlib.ExitStack() as target_lock:
        _lock_target(project, args, cancel, target_lock)
        want, live, provider = _rollout_target(args, project)   # read under the lock: no apply moves it meanwhile
        try:
            message = act(project, want, live, provider, events)
        except RolloutFailed as exc:
            print(f"Error: {exc}", file=sys.stderr)
            return EXIT_ROLLED_BACK if rollout_result(exc) == "rolled_back" else EXIT_ROLLOUT_STOPPED
    print(message)
    return 0


def _candidate_resource(project, want, live, verb: str):
    from ..core.resources import spec_fingerprint

    state = live.rollout
    if want is None or spec_fingerprint(want.spec) != state.candidate:
        raise MlopsError(f"{live.address}: the manifest no longer asks for the candidate {state.candidate[:12]}; "
                         f"`mlops rollout abort {live.address.name}` then `mlops apply` instead of {verb}")
    project.store.fetch_models(want.inputs.get("models") or {})   # model files come from the registry
    return want


def cmd_promote(args: argparse.Namespace) -> int:
    def act(project, want, live, provider, events) -> str:
        from ..checks import check_returned

        if live.rollout.phase == "aborted":
            raise MlopsError(f"{live.address}: the rollout of {live.rollout.candidate[:12]} was rolled back "
                             f"({live.rollout.reason}); `mlops rollout retry {args.service}` runs it again")
        desired = _candidate_resource(project, want, live, "promote")
        check_returned(provider, "promote", desired, provider.promote(live, desired, events))
        return f"{live.address}: promoted version {live.rollout.candidate[:12]}; it answers every request."

    return _run_verb(args, act)


def cmd_abort(args: argparse.Namespace) -> int:
    def act(project, want, live, provider, events) -> str:
        import dataclasses
        import time

        state = live.rollout
        if state.phase == "aborted":
            return f"{live.address}: the rollout of {state.candidate[:12]} was aborted already ({state.reason})."
        from ..rollout.driver import finishing

        provider.abort(live, dataclasses.replace(state, phase="aborted", weight=0.0, mirror=0.0,
                                                 reason="aborted with `mlops rollout abort`", updated=time.time()),
                       finishing(events))
        return (f"{live.address}: aborted the rollout of {state.candidate[:12]}; version {state.stable[:12]} answers "
                f"every request. `mlops apply` leaves it so until `mlops rollout retry {args.service}`.")

    return _run_verb(args, act)


def cmd_retry(args: argparse.Namespace) -> int:
    def act(project, want, live, provider, events) -> str:
        from ..rollout.driver import retry

        if live.rollout.phase not in ("aborted", "paused"):
            raise MlopsError(f"{live.address}: the rollout is under way ({live.rollout.phase}); `mlops apply` "
                             "continues it, `mlops rollout abort` stops it")
        desired = _candidate_resource(project, want, live, "retry")
        retry(desired, live, provider, events)
        return f"{live.address}: the rollout of {live.rollout.candidate[:12]} was retried and promoted."

    return _run_verb(args, act)
