"""`mlops reconcile`: keep the deployment converging on the manifest, or just watch it drift.

stdout carries one JSON object per line (one per change, one per cycle) for log collectors;
stderr carries the same news for a person. With ``--once`` the exit code is the cycle's: 0 in
sync, 2 differences remain (drift, pending changes, held back), 1 an error or a failed change.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sys
import threading
from collections.abc import Iterator
from typing import Any

from providers.base import ensure_connected

from ..errors import MlopsError
from .signals import cancel_on_signals

FINISHING = "Received {signal}: finishing the current change, then exiting."


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("reconcile", parents=[common],
                       help="watch live state for drift and health; heal it or sync it (--mode)")
    p.add_argument("--mode", choices=("observe", "heal", "sync"), default="observe",
                   help="observe (default): report only; heal: restore what drifted or failed; "
                        "sync: apply the checked-out manifest")
    p.add_argument("--prune", action="store_true", help="with --mode sync: delete services no longer in the manifest")
    p.add_argument("--once", action="store_true", help="one cycle, then exit with its code (cron, CI)")
    p.add_argument("--interval", type=float, default=300.0, metavar="SECONDS", help="between cycles (default 300)")
    p.add_argument("--jitter", type=float, default=0.2, metavar="FRACTION",
                   help="each wait is the interval times 1 +- up to this (default 0.2)")
    p.add_argument("--max-heals", type=int, default=3, metavar="N",
                   help="failed heals of one desired state before giving up on it (default 3)")
    p.add_argument("--backoff", type=float, default=10.0, metavar="SECONDS",
                   help="wait after a resource's first failed heal (default 10), times --backoff-factor each time")
    p.add_argument("--backoff-factor", type=float, default=3.0, metavar="F", help="default 3")
    p.add_argument("--backoff-cap", type=float, default=600.0, metavar="SECONDS", help="longest wait (default 600)")
    p.add_argument("--metrics-port", type=int, metavar="PORT",
                   help="serve Prometheus text on http://127.0.0.1:PORT/metrics (0: any free port)")
    p.add_argument("--notify-url", metavar="URL", help="POST JSON here on transitions (drift, heal failed, ...)")
    p.add_argument("--no-commit-status", action="store_true",
                   help="inside GitHub Actions, do not set the mlops/reconcile commit status on transitions")
    p.add_argument("--leader-elect", metavar="LEASE",
                   help="replicas elect one leader on this Lease (Kubernetes): only the leader writes, "
                        "the others observe and take over when it stops")
    p.add_argument("--leader-target", metavar="TARGET",
                   help="the target whose namespace holds the Lease (default: the first that offers one)")
    p.set_defaults(handler=cmd_reconcile)


def cmd_reconcile(args: argparse.Namespace) -> int:
    from ..manifest import load_manifest
    from ..reconcile import Options, Reconciler
    from ..reconcile_signals import STATUS_CONTEXT, CommitStatus, Metrics, Webhook, fan_out
    from ..reconcile_state import Backoff

    if args.prune and args.mode != "sync":
        raise MlopsError("--prune deletes only with --mode sync")
    if args.interval <= 0 or not 0 <= args.jitter < 1:
        raise MlopsError("--interval must be positive and --jitter between 0 and 1")
    if args.backoff < 0 or args.backoff_factor < 1 or args.backoff_cap < 0:
        raise MlopsError("--backoff and --backoff-cap must be >= 0 and --backoff-factor >= 1")
    project = load_manifest(args.file).project   # a bad manifest fails here, before any server starts
    options = Options(mode=args.mode, prune=args.prune, max_heals=args.max_heals,
                      backoff=Backoff(args.backoff, args.backoff_factor, args.backoff_cap))
    def notify_failed(message: str) -> None:
        _log({"event": "notify_failed", "message": message})

    webhook = None
    if args.notify_url:
        try:
            webhook = Webhook(args.notify_url, project, on_error=notify_failed)
        except ValueError as exc:
            raise MlopsError(str(exc)) from None
    status = None
    if not args.no_commit_status:
        try:
            status = CommitStatus.from_env(dict(os.environ), on_error=notify_failed)
        except MlopsError as exc:   # e.g. no GITHUB_TOKEN on the step: reconcile anyway, say why once
            print(f"Not setting the {STATUS_CONTEXT} commit status: {exc}", file=sys.stderr, flush=True)
    if args.leader_target and not args.leader_elect:
        raise MlopsError("--leader-target needs --leader-elect LEASE")
    election = _election(args) if args.leader_elect else None
    stop = threading.Event()
    reconciler = Reconciler(args.file, options, log=_log, stop=stop, notify=fan_out(webhook, status),
                            may_write=election.check if election else lambda: None)
    follower = Reconciler(args.file, Options(mode="observe"), log=_log, stop=stop)   # no notifications
    metrics = Metrics()
    with cancel_on_signals(stop, FINISHING), _serving(metrics, args.metrics_port), _releasing(election):
        while True:
            was_leading = bool(election and election.leading)
            other_leader = _lead(election) if election else None
            if was_leading and other_leader:
                _log({"event": "leader_lost", "message": election.lost or f"the Lease is held by {other_leader}"})
            report = (follower if other_leader else reconciler).cycle()
            metrics.record(report)
            roles = {} if election is None else {"role": "follower" if other_leader else "leader",
                                                 "leader": other_leader or election.identity}
            _log({**report.to_json(), **roles})
            if other_leader:
                print(f"Following (observe only): the leader Lease {args.leader_elect} is held by {other_leader}.",
                      file=sys.stderr)
            _tell(report)
            if args.once or stop.is_set():
                break
            stop.wait(args.interval * (1 + random.uniform(-args.jitter, args.jitter)))
            if stop.is_set():
                break
    if args.once:
        return report.exit_code()
    return 0


def _election(args: argparse.Namespace) -> Any:
    """The leader Lease on the chosen (or first capable) target of the manifest."""
    from providers.base import LocksItself

    from ..project import Project

    providers = Project.load(args.file).providers
    if args.leader_target and args.leader_target not in providers:
        raise MlopsError(f"--leader-target {args.leader_target!r} is not a target of {args.file}")
    for name in [args.leader_target] if args.leader_target else list(providers):
        provider = providers[name]
        if not isinstance(provider, LocksItself):
            continue
        ensure_connected(provider)
        lease = provider.leader_lease(args.leader_elect, "mlops reconcile")
        if lease is not None:
            return lease
    raise MlopsError(f"--leader-elect: {'target ' + repr(args.leader_target) if args.leader_target else 'no target'}"
                     f" of {args.file} offers a leader Lease (kubernetes, aks and fpga targets do)")


def _lead(election: Any) -> str | None:
    """None when this replica leads this cycle; else who does (an unreadable Lease: nobody we know)."""
    try:
        return election.try_lead()
    except MlopsError as exc:
        return f"unknown (cannot read the Lease: {exc})"


@contextlib.contextmanager
def _releasing(election: Any) -> Iterator[None]:
    try:
        yield
    finally:
        if election is not None:
            election.release()


def _log(event: dict[str, Any]) -> None:
    print(json.dumps(event, sort_keys=True), flush=True)


def _tell(report: Any) -> None:
    """The cycle for a person, on stderr: what is out of sync and why, what was done."""
    err = sys.stderr
    if report.error:
        print(f"Error: {report.error}", file=err)
    for s in report.out_of_sync:
        why = f" ({s.health}{': ' + s.message if s.message else ''})" if s.health != "Healthy" else ""
        extra = " [suspended]" if s.suspended else ""
        print(f"service.{s.name}: {s.sync}{why}{extra}", file=err)
    for c in report.changes:
        text = {"ok": "done", "failed": f"failed: {c.error}"}.get(c.result, f"{c.result}: {c.error}")
        print(f"{c.address}: {c.action} {text}", file=err)
    if report.locked:
        print(f"Skipped writing this cycle: {report.locked}", file=err)
    in_sync = len(report.services) - len(report.out_of_sync)
    print(f"Reconcile ({report.mode}): {in_sync} of {len(report.services)} services in sync.", file=err, flush=True)


@contextlib.contextmanager
def _serving(metrics: Any, port: int | None) -> Iterator[None]:
    if port is None:
        yield
        return
    from ..reconcile_signals import MetricsServer

    try:
        server = MetricsServer(metrics, port)
    except OSError as exc:
        raise MlopsError(f"--metrics-port {port}: cannot listen on 127.0.0.1:{port}: {exc.strerror}") from None
    with server:
        _log({"event": "metrics", "url": f"http://127.0.0.1:{server.port}/metrics"})
        yield
