"""`mlops validate | plan | apply | destroy`: the manifest, its plan, and carrying it out."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from ..addresses import Address
from ..errors import CancelledError, MlopsError
from .rollout import rollout_report
from .signals import cancel_on_signals as _cancel_on_signals

if TYPE_CHECKING:   # the handlers import what they use: `mlops --help` must not pay for it
    from ..apply import Outcome
    from ..gitops import Choice
    from ..plan import Plan
    from ..project import Project
    from ..provenance import ChangeReport


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("validate", parents=[common], help="check the manifest (schema and references)")
    p.set_defaults(handler=cmd_validate)

    p = sub.add_parser("plan", parents=[common], help="show what apply would change")
    p.add_argument("-o", "--out", type=Path, help="save the plan as JSON for `mlops apply FILE`")
    p.add_argument("--format", choices=("text", "json", "markdown"), default="text",
                   help="text (default), json, or markdown (a pull-request comment)")
    p.add_argument("--json", action="store_const", const="json", dest="format", help="same as --format json")
    p.add_argument("--changed-since", metavar="REF",
                   help="say which files and manifest entries changed since REF (e.g. origin/main)")
    p.add_argument("--detailed-exitcode", action="store_true", help="exit 0 no changes, 1 error, 2 changes")
    p.add_argument("--target", action="append", default=[], metavar="ADDRESS", help="limit to a resource")
    p.add_argument("--destroy", action="store_true", help="plan the removal of everything")
    p.set_defaults(handler=cmd_plan)

    for name, text in (("apply", "make the deployment match the manifest"),
                       ("destroy", "remove everything this project owns")):
        p = sub.add_parser(name, parents=[common], help=text)
        p.set_defaults(handler=cmd_apply if name == "apply" else cmd_destroy)
        if name == "apply":
            p.add_argument("planfile", nargs="?", type=Path, help="a plan saved with `mlops plan -o`")
        p.add_argument("--auto-approve", action="store_true", help="do not ask for confirmation")
        p.add_argument("--parallelism", type=int, default=4, metavar="N", help="changes at once (default 4)")
        p.add_argument("--target", action="append", default=[], metavar="ADDRESS", help="limit to a resource")
        p.add_argument("--require-clean", action="store_true",
                       help="refuse a dirty work tree or a commit that is not on --branch")
        p.add_argument("--branch", default="main", help="the branch --require-clean expects (default main)")
        if name == "apply":
            p.add_argument("--no-wait", action="store_true",
                           help="updates with a rollout go live without their bake window (no analysis, no "
                                "automatic rollback)")
            p.add_argument("--reviewed", type=Path, metavar="PLANFILE",
                           help="apply this reviewed plan if it is still exactly right, else plan again and "
                                "say why (a missing file also plans again)")



def cmd_validate(args: argparse.Namespace) -> int:
    from ..manifest import load_manifest

    m = load_manifest(args.file)
    for warning in registry_warnings(m):
        print(f"Warning: {warning}", file=sys.stderr)
    counts = {k: len(m.section(k)) for k in ("models", "environments", "services")}
    print(f"The manifest is valid: {counts['models']} models, {counts['environments']} environments, "
          f"{counts['services']} services, {len(m.targets)} targets.")
    return 0


def registry_warnings(manifest) -> list[str]:
    """Image targets with the embedded registry: their plans differ on every other machine."""
    from providers.base import BuildsImages
    from providers.registry import provider_class

    if (manifest.data.get("registry") or {}).get("url"):
        return []
    image_targets = sorted(name for name, config in manifest.targets.items()
                           if issubclass(provider_class(config["provider"], config), BuildsImages))
    if not image_targets:
        return []
    return [f"{manifest.display}: target(s) {', '.join(image_targets)} run images but models and environments are "
            "recorded in the embedded registry of this user on this machine; a CI runner or a colleague cannot read "
            "it, so their plans show every model and environment as new and number versions from 1 again. "
            "Declare a shared one: registry: {url: oci://HOST/REPOSITORY} (e.g. the targets' image registry)"]


def _targets(args: argparse.Namespace) -> list[Address]:
    return [Address.parse(t) for t in args.target]


def cmd_plan(args: argparse.Namespace) -> int:
    from ..planning import make_plan
    from ..project import Project
    from ..render_text import render_plan

    project = Project.load(args.file)
    plan = make_plan(project, targets=_targets(args), destroy=args.destroy)
    report = None
    if args.changed_since:
        from ..provenance import changed_since

        report = changed_since(project.manifest, args.changed_since)
    if args.format == "json":
        sys.stdout.write(_plan_json(plan, report))
    elif args.format == "markdown":
        from ..gitops import manifest_key
        from ..render_markdown import Provenance, render_markdown

        why = Provenance(report.ref, report.reasons) if report else None
        sys.stdout.write("\n".join(render_markdown(plan, manifest=manifest_key(args.file), why=why)))
    else:
        if report:
            sys.stdout.write(_render_changes(report))
        sys.stdout.write(render_plan(plan))
    if args.out:
        args.out.write_text(_plan_json(plan, report))
        if args.format == "text":
            print(f"\nSaved the plan to: {args.out}\nTo perform exactly these actions, run:\n"
                  f"    mlops apply -f {args.file} {args.out}")
    return 2 if (args.detailed_exitcode and plan.has_changes) else 0


def _plan_json(plan: Plan, report: ChangeReport | None) -> str:
    from ..render_json import render_json

    """The JSON plan; with --changed-since it also carries why, for `mlops comment` to show."""
    if report is None:
        return render_json(plan)
    data = plan.to_json()
    data["changed_since"] = report.to_json()
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _render_changes(report: ChangeReport) -> str:
    lines = [f"Changes since {report.ref} (merge base {report.base[:12]}): {len(report.files)} files."]
    for address, reasons in report.reasons.items():
        lines.append(f"  {address}: {'; '.join(reasons)}".replace("`", ""))
    return "\n".join(lines) + "\n\n"


def cmd_apply(args: argparse.Namespace, *, destroy: bool = False) -> int:
    from ..apply import apply_plan, check_fresh
    from ..gitops import choose_plan, require_clean
    from ..lock import apply_lock
    from ..planning import make_plan, targets_needed
    from ..progress import ProgressPrinter
    from ..project import Project
    from ..render_text import render_plan
    from .planfiles import load_plan

    project = Project.load(args.file)
    if args.require_clean:
        require_clean(project.manifest.root, args.branch)
    choice: Choice | None = None
    cancel = threading.Event()
    with apply_lock(project.manifest.state_dir, "destroy" if destroy else "apply", project.context.data_dir), \
            contextlib.ExitStack() as target_locks:
        desired = project.desired()
        only = targets_needed(_targets(args), desired, destroy)   # --target: reach only the targets it needs
        # Targets that lock themselves are locked before the one read of live state, which the plan,
        # a saved plan's freshness check and the job summary then share.
        locked = _lock_targets(project, [n for n in _lockable(project, destroy) if only is None or n in only],
                               target_locks, destroy, cancel)
        if locked is None:
            return 130
        live = project.live(only=only)
        planfile = getattr(args, "planfile", None)
        reviewed = getattr(args, "reviewed", None)
        if planfile and reviewed:
            raise MlopsError("pass either a plan file or --reviewed PLANFILE, not both")
        if planfile:
            plan = load_plan(planfile, project)
            check_fresh(plan, desired, live, project.rules_for)
            print(f"Applying the saved plan {planfile} (what it touches is unchanged since it was made).")
        elif reviewed:
            saved = load_plan(reviewed, project) if reviewed.exists() else None
            choice = choose_plan(project, saved, desired, live, source=f"the reviewed plan {reviewed}")
            plan = choice.plan
            print(choice.note)
            if not choice.reviewed:
                sys.stdout.write(render_plan(plan))
                if plan.has_changes and not args.auto_approve and not _confirm(destroy):
                    print("Apply cancelled.")
                    return 1
        else:
            plan = make_plan(project, targets=_targets(args), destroy=destroy, desired=desired, live=live)
            sys.stdout.write(render_plan(plan))
            if plan.has_changes and not args.auto_approve and not _confirm(destroy):
                print("Apply cancelled.")
                return 1
        outcomes: list[Outcome] = []
        if getattr(args, "no_wait", False):
            plan = without_bake(plan, project)
        if not plan.has_changes:
            if planfile or reviewed:
                print("No changes. Nothing to apply.")
            code, result = 0, "No changes. Nothing to apply."
            project.remember_targets(live)
        else:
            # A plan may touch a lockable target no manifest service uses (its services are being
            # removed): lock it too, and read again what another runner may have changed meanwhile.
            more = sorted(_touched(plan) & set(project.providers) - locked)
            if more and _lockable(project, destroy, more):
                if _lock_targets(project, _lockable(project, destroy, more), target_locks, destroy, cancel) is None:
                    return 130
                fresh = project.live(only=only)
                check_fresh(plan, desired, fresh, project.rules_for)
                live = fresh
            print()
            with ProgressPrinter(sys.stdout) as printer, _cancel_on_signals(cancel):
                outcomes = apply_plan(project, plan, desired, live, parallelism=args.parallelism, notify=printer,
                                      cancel=cancel, wait_rollouts=not getattr(args, "no_wait", False))
            code, result = _report(outcomes, destroy)
    _job_summary(project, plan, choice, outcomes, result, live)
    return code


def _confirm(destroy: bool) -> bool:
    if not sys.stdin.isatty():
        raise MlopsError("refusing to apply without confirmation: stdin is not a terminal "
                         "(pass --auto-approve to apply non-interactively)")
    what = "destroy all resources" if destroy else "perform these actions"
    print(f"\nDo you really want to {what}?\n  Only 'yes' will be accepted to approve.\n")
    try:
        return input("  Enter a value: ").strip() == "yes"
    except EOFError:
        return False


def _touched(plan: Plan) -> set[str]:
    return {c.after_target for c in plan.actionable if c.after_target} | \
        {c.before_target for c in plan.actionable if c.before_target}


def _lockable(project: Project, destroy: bool, names: list[str] | None = None) -> list[str]:
    """Declared targets that lock themselves (a Kubernetes Lease) among ``names``; by default those the
    manifest's services use (a destroy: every declared one). The manifest's own lock covers the rest."""
    from providers.base import LocksItself

    if names is None:
        services = project.manifest.section("services").values()
        names = sorted(project.providers) if destroy else \
            sorted({t for s in services if isinstance(t := project.manifest.service_target(s), str)})
    return [n for n in names if isinstance(project.providers.get(n), LocksItself)]


def _lock_targets(project: Project, names: list[str], stack: contextlib.ExitStack, destroy: bool,
                  cancel: threading.Event) -> set[str] | None:
    """Take these targets' locks (in manifest order, so two runners cannot deadlock); None: Ctrl-C
    stopped the wait (said on stderr, nothing was changed)."""
    with _cancel_on_signals(cancel):
        try:
            for name in names:
                provider = project.providers[name]
                provider.ensure_connected()
                stack.enter_context(provider.apply_lock(  # type: ignore[attr-defined]   # LocksItself
                    f"mlops {'destroy' if destroy else 'apply'}", cancel))
        except CancelledError as exc:
            print(f"Apply cancelled: {exc}", file=sys.stderr)
            return None
    return set(names)


def _report(outcomes: list[Outcome], destroy: bool) -> tuple[int, str]:
    cancelled = [o for o in outcomes if o.cancelled]
    failed = [o for o in outcomes if not o.ok]
    ok = [o for o in outcomes if o.ok]
    added = sum(1 for o in ok if o.change.action.value in ("create",) or o.change.action.is_replace)
    changed = sum(1 for o in ok if o.change.action.value == "update")
    destroyed = sum(1 for o in ok if o.change.action.value == "delete" or o.change.action.is_replace)
    print()
    for o in failed:
        error = o.error or "failed"
        prefix = f"{o.change.address}: "
        print(f"Error: {prefix}{error.removeprefix(prefix)}", file=sys.stderr)
    rollouts = [o for o in failed if o.rollout]
    if rollouts:
        return rollout_report(rollouts, len(outcomes))
    if cancelled:
        result = (f"Apply cancelled: {len(ok)} of {len(outcomes)} changes completed, {len(cancelled)} stopped or not "
                  f"started ({added} added, {changed} changed, {destroyed} destroyed). Run `mlops plan` to see what "
                  "is left.")
        print(result, file=sys.stderr)
        return 130, result
    if failed:
        result = (f"Apply failed: {len(failed)} of {len(outcomes)} changes did not complete "
                  f"({added} added, {changed} changed, {destroyed} destroyed). Run `mlops plan` to see what is left.")
        print(result, file=sys.stderr)
        return 1, result
    verb = "Destroy" if destroy else "Apply"
    result = f"{verb} complete! Resources: {added} added, {changed} changed, {destroyed} destroyed."
    print(result)
    return 0, result


def without_bake(plan: Plan, project: Project) -> Plan:
    """``--no-wait``: a rollout on a target that splits traffic starts (or moves on) and is left to later
    applies; elsewhere the same changes go live without a bake window. Each said once, loudly."""
    import dataclasses

    from ..rollout.driver import splits

    def stepped(change) -> bool:
        return bool(change.after_target) and splits(project.providers.get(change.after_target))

    started = [c for c in plan.changes if c.rollout and stepped(c)]
    baked = [c for c in plan.changes if c.rollout and not stepped(c)]
    if started:
        print(f"--no-wait: {', '.join(str(c.address) for c in started)} start (or continue) their rollout and "
              "leave it at its current step; the next `mlops apply` continues it.")
    if not baked:
        return plan
    print(f"--no-wait: {', '.join(str(c.address) for c in baked)} go live without a bake window "
          "(no analysis, no automatic rollback).")
    return dataclasses.replace(plan, changes=tuple(dataclasses.replace(c, rollout=None) if c in baked else c
                                                   for c in plan.changes))


def _job_summary(project: Project, plan: Plan, choice: Choice | None, outcomes: list[Outcome], result: str,
                 live: dict) -> None:
    """In GitHub Actions, append the apply's result and every service's health to the job summary.

    The services are the live state read before the apply, moved on by what each change answered (its
    checked Live, or gone); only when a change failed is live state read again (what it left is unknown).
    """
    from ..apply import live_after
    from ..gitops import render_summary
    from ..redact import REDACTOR
    from .services import service_rows

    path = os.environ.get("GITHUB_STEP_SUMMARY")
    if not path:
        return
    after = None if any(not o.ok for o in outcomes) else live_after(live, outcomes)
    services = [r.to_json() for r in service_rows(project, after)]
    text = REDACTOR.scrub(render_summary(manifest=project.manifest.display, choice=choice, plan=plan,
                                         outcomes=outcomes, services=services, result=result))
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        print(f"Warning: cannot write the job summary to {path}: {exc.strerror}", file=sys.stderr)


def cmd_destroy(args: argparse.Namespace) -> int:
    return cmd_apply(args, destroy=True)


