"""Rollouts on the command line: ``mlops rollout status SVC``, and how apply reports one that failed.

Exit codes of a failed rollout:

    5  a rollout failed its analysis and the previous version serves again (rolled back)
    6  a rollout failed and the new version still serves: paused (``on_failure: pause``) or the
       rollback itself failed; a person must decide
"""

from __future__ import annotations

import argparse
import sys
import urllib.request
from collections.abc import Sequence
from typing import TYPE_CHECKING

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
    p = sub.add_parser("rollout", help="how a service's rollout stands (policy, live version, its metrics)")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    s = verbs.add_parser("status", parents=[common], help="the policy, the version serving, pending updates and "
                                                          "what the version's own metrics say since it started")
    s.add_argument("service", help="the service's name")
    s.set_defaults(handler=cmd_status)


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
