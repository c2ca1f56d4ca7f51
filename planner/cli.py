"""The `mlops` command: the only module that prints or exits.

Known errors (MlopsError) print as one line ``Error: ...`` and exit 1; tracebacks only with
--debug. Plan exit codes follow Terraform's -detailed-exitcode: 0 no changes, 1 error, 2 changes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from . import __version__
from .addresses import Address
from .apply import Outcome, apply_plan, check_fresh
from .errors import ManifestError, MlopsError
from .github import ActionsContext, GitHub, fetch_reviewed_plan, upsert_comments
from .gitops import Choice, choose_plan, manifest_key, render_summary, require_clean
from .lock import apply_lock
from .manifest import load_manifest
from .plan import Plan
from .planning import make_plan
from .progress import ProgressPrinter
from .project import Project
from .provenance import ChangeReport, changed_since
from .render_json import render_json
from .render_markdown import Provenance, render_markdown
from .render_text import render_plan


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-f", "--file", default="ml.yaml", type=Path, help="manifest (default: ml.yaml)")
    common.add_argument("--debug", action="store_true", help="show tracebacks")

    parser = argparse.ArgumentParser(prog="mlops", description="Declarative GitOps for ML model deployments.")
    parser.add_argument("--version", action="version", version=f"mlops {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("validate", parents=[common], help="check the manifest (schema and references)")

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

    for name, text in (("apply", "make the deployment match the manifest"),
                       ("destroy", "remove everything this project owns")):
        p = sub.add_parser(name, parents=[common], help=text)
        if name == "apply":
            p.add_argument("planfile", nargs="?", type=Path, help="a plan saved with `mlops plan -o`")
        p.add_argument("--auto-approve", action="store_true", help="do not ask for confirmation")
        p.add_argument("--parallelism", type=int, default=4, metavar="N", help="changes at once (default 4)")
        p.add_argument("--target", action="append", default=[], metavar="ADDRESS", help="limit to a resource")
        p.add_argument("--require-clean", action="store_true",
                       help="refuse a dirty work tree or a commit that is not on --branch")
        p.add_argument("--branch", default="main", help="the branch --require-clean expects (default main)")
        if name == "apply":
            p.add_argument("--reviewed", type=Path, metavar="PLANFILE",
                           help="apply this reviewed plan if it is still exactly right, else plan again and "
                                "say why (a missing file also plans again)")

    p = sub.add_parser("comment", help="post or update the plan as a sticky pull-request comment")
    p.add_argument("planfile", type=Path, help="a plan saved with `mlops plan -o FILE`")
    p.add_argument("--repo", help="OWNER/REPO (default: $GITHUB_REPOSITORY)")
    p.add_argument("--pr", type=int, help="pull request number (default: from $GITHUB_EVENT_PATH)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")

    p = sub.add_parser("fetch-plan", help="download the plan reviewed on the pull request merged as $GITHUB_SHA")
    p.add_argument("--artifact", required=True, metavar="PREFIX",
                   help="artifact name prefix; the pull request's head SHA is appended")
    p.add_argument("-o", "--out", type=Path, required=True, help="where to write the plan")
    p.add_argument("--debug", action="store_true", help="show tracebacks")

    p = sub.add_parser("status", parents=[common], help="show services: state, endpoint, models, commit")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("models", parents=[common], help="list registered models and versions")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("logs", parents=[common], help="print a service's logs")
    p.add_argument("service")
    p.add_argument("--follow", action="store_true")
    p.add_argument("--tail", type=int, metavar="N")
    p.add_argument("--build", action="store_true", help="the output of the service's last image build")

    p = sub.add_parser("build", parents=[common], help="build (and push) services' images without deploying")
    p.add_argument("services", nargs="*", metavar="SERVICE", help="default: every service that runs an image")

    p = sub.add_parser("call", parents=[common], help="score a service (default: its sample request)")
    p.add_argument("service")
    p.add_argument("--data", help="JSON body, or @FILE")

    p = sub.add_parser("serve", help="run the scoring runtime on an entry script (like azmlinfsrv)",
                       add_help=False)
    p.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["serve"]:
        # Everything after `serve` belongs to the runtime's own parser (argparse.REMAINDER
        # would not pass options such as --entry-script through a subcommand).
        from providers.runtime.cli import main as serve_main

        return serve_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ManifestError as exc:
        if args.debug:
            raise
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"Error: the manifest has {len(exc.problems)} problem(s).", file=sys.stderr)
        return 1
    except MlopsError as exc:
        if args.debug:
            raise
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130


def cmd_validate(args: argparse.Namespace) -> int:
    m = load_manifest(args.file)
    counts = {k: len(m.section(k)) for k in ("models", "environments", "services")}
    print(f"The manifest is valid: {counts['models']} models, {counts['environments']} environments, "
          f"{counts['services']} services, {len(m.targets)} targets.")
    return 0


def _targets(args: argparse.Namespace) -> list[Address]:
    return [Address.parse(t) for t in args.target]


def cmd_plan(args: argparse.Namespace) -> int:
    project = Project.load(args.file)
    plan = make_plan(project, targets=_targets(args), destroy=args.destroy)
    report = changed_since(project.manifest, args.changed_since) if args.changed_since else None
    if args.format == "json":
        sys.stdout.write(_plan_json(plan, report))
    elif args.format == "markdown":
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
    project = Project.load(args.file)
    if args.require_clean:
        require_clean(project.manifest.root, args.branch)
    choice: Choice | None = None
    with apply_lock(project.manifest.state_dir, "destroy" if destroy else "apply"):
        desired, live = project.desired(), project.live()
        planfile = getattr(args, "planfile", None)
        reviewed = getattr(args, "reviewed", None)
        if planfile and reviewed:
            raise MlopsError("pass either a plan file or --reviewed PLANFILE, not both")
        if planfile:
            plan = _load_plan(planfile, project)
            check_fresh(plan, desired, live)
            print(f"Applying the saved plan {planfile} (what it touches is unchanged since it was made).")
        elif reviewed:
            saved = _load_plan(reviewed, project) if reviewed.exists() else None
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
        if not plan.has_changes:
            if planfile or reviewed:
                print("No changes. Nothing to apply.")
            code, result = 0, "No changes. Nothing to apply."
        else:
            print()
            with ProgressPrinter(sys.stdout) as printer:
                outcomes = apply_plan(project, plan, desired, live, parallelism=args.parallelism, notify=printer)
            code, result = _report(outcomes, destroy)
    _job_summary(project, plan, choice, outcomes, result)
    return code
def _read_plan_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise MlopsError(f"{path}: cannot read plan file: {exc.strerror}") from None
    except ValueError as exc:
        raise MlopsError(f"{path}: not a plan file (invalid JSON: {exc})") from None
    if not isinstance(data, dict) or "resource_changes" not in data:
        raise MlopsError(f"{path}: not a plan file (make one with `mlops plan -o FILE`)")
    return data


def _load_plan(path: Path, project: Project) -> Plan:
    plan = Plan.from_json(_read_plan_json(path))
    if plan.project != project.manifest.project:
        raise MlopsError(f"{path}: this plan is for project {plan.project!r}, the manifest declares "
                         f"{project.manifest.project!r}")
    return plan


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


def _report(outcomes: list[Outcome], destroy: bool) -> tuple[int, str]:
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
    if failed:
        result = (f"Apply failed: {len(failed)} of {len(outcomes)} changes did not complete "
                  f"({added} added, {changed} changed, {destroyed} destroyed). Run `mlops plan` to see what is left.")
        print(result, file=sys.stderr)
        return 1, result
    verb = "Destroy" if destroy else "Apply"
    result = f"{verb} complete! Resources: {added} added, {changed} changed, {destroyed} destroyed."
    print(result)
    return 0, result


def _job_summary(project: Project, plan: Plan, choice: Choice | None, outcomes: list[Outcome], result: str) -> None:
    """In GitHub Actions, append the apply's result and every service's health to the job summary."""
    path = os.environ.get("GITHUB_STEP_SUMMARY")
    if not path:
        return
    text = render_summary(manifest=project.manifest.display, choice=choice, plan=plan, outcomes=outcomes,
                          services=_service_rows(project), result=result)
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        print(f"Warning: cannot write the job summary to {path}: {exc.strerror}", file=sys.stderr)


def cmd_comment(args: argparse.Namespace) -> int:
    data = _read_plan_json(args.planfile)
    plan = Plan.from_json(data)
    since = data.get("changed_since")
    why = Provenance(since["ref"], since.get("resources", {})) if isinstance(since, dict) else None
    key = manifest_key(Path(plan.manifest))
    parts = render_markdown(plan, manifest=key, why=why)
    env = dict(os.environ)
    if args.repo:
        env["GITHUB_REPOSITORY"] = args.repo
    ctx = ActionsContext.from_env(env)
    number = args.pr or ctx.pr_number
    if not number:
        raise MlopsError("no pull request number: run on a pull_request event, or pass --pr N")
    for posted in upsert_comments(GitHub.from_context(ctx), number, key, parts):
        where = f": {posted.url}" if posted.url else ""
        print(f"Plan comment part {posted.part} {posted.action} (comment {posted.comment_id}){where}")
    return 0


def cmd_fetch_plan(args: argparse.Namespace) -> int:
    ctx = ActionsContext.from_env(os.environ)
    if not ctx.sha:
        raise MlopsError("GITHUB_SHA is not set: fetch-plan runs on the push that merged a pull request")
    found = fetch_reviewed_plan(GitHub.from_context(ctx), ctx.sha, args.artifact)
    if isinstance(found, str):
        print(f"No reviewed plan: {found}. `mlops apply --reviewed` will plan again.", file=sys.stderr)
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(found.plan)
    print(f"Fetched the plan reviewed on pull request #{found.number} (head {found.head_sha[:12]}) to {args.out}.")
    return 0


def cmd_destroy(args: argparse.Namespace) -> int:
    return cmd_apply(args, destroy=True)


def _service_rows(project: Project) -> list[dict[str, Any]]:
    live = project.live()
    rows = []
    declared = project.manifest.section("services")
    for name in sorted(set(declared) | {a.name for a in live if a.kind == "service"}):
        lv = live.get(Address("service", name))
        if lv is None:
            rows.append({"service": name, "target": declared[name].get("target", "local"), "state": "NotDeployed",
                         "endpoint": None, "models": [], "fingerprint": None, "git_commit": None,
                         "dirty": None, "message": "not deployed; run `mlops apply`"})
            continue
        git = lv.details.get("git") or {}
        from .hashing import digest

        rows.append({
            "service": name, "target": lv.target, "state": lv.status, "endpoint": lv.details.get("endpoint"),
            "models": list(lv.spec.get("models", [])), "fingerprint": digest(dict(lv.spec))[:12],
            "git_commit": git.get("commit"), "dirty": git.get("dirty"), "message": lv.details.get("message") or "",
            "in_manifest": name in declared,
        })
    return rows


def cmd_status(args: argparse.Namespace) -> int:
    rows = _service_rows(Project.load(args.file))
    if args.json:
        print(json.dumps({"format_version": "1.0", "services": rows}, indent=2, sort_keys=True))
        return 0
    if not rows:
        print("No services declared or running.")
        return 0
    table = [["SERVICE", "TARGET", "STATE", "ENDPOINT", "MODELS", "FINGERPRINT", "COMMIT"]]
    for r in rows:
        commit = (r["git_commit"] or "-")[:10] + ("+dirty" if r["dirty"] else "")
        table.append([r["service"], r["target"] or "-", r["state"], r["endpoint"] or "-",
                      ",".join(m.split("@")[0] for m in r["models"]) or "-", r["fingerprint"] or "-", commit])
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    for r in rows:
        if r["message"] and r["state"] != "Healthy":
            print(f"{r['service']}: {r['message']}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    project = Project.load(args.file)
    models = []
    for lv in project.store.read_models():
        versions = project.store.versions(lv.address.name)
        models.append({
            "name": lv.address.name, "current_version": lv.spec["version"], "tags": lv.spec["tags"],
            "description": lv.spec["description"],
            "versions": [{"version": v, "sha256": meta.get("sha256"), "created": meta.get("created"),
                          "source": meta.get("source"), "git_commit": (meta.get("git") or {}).get("commit")}
                         for v, meta in versions.items()],
        })
    if args.json:
        print(json.dumps({"format_version": "1.0", "models": models}, indent=2, sort_keys=True))
        return 0
    if not models:
        print("No models registered. Run `mlops apply` to register the manifest's models.")
    for m in models:
        tags = ", ".join(f"{k}={v}" for k, v in m["tags"].items())
        print(f"{m['name']}  (current: {m['current_version']}){'  tags: ' + tags if tags else ''}")
        for v in m["versions"]:
            mark = "*" if v["version"] == m["current_version"] else " "
            print(f"  {mark} {v['version']:>3}  sha256:{(v['sha256'] or '')[:12]}  {v['created'] or ''}  "
                  f"{v['source'] or ''}")
    return 0


def _live_service(project: Project, name: str):
    live = project.live().get(Address("service", name))
    if live is None:
        declared = ", ".join(sorted(project.manifest.section("services"))) or "none"
        raise MlopsError(f"service {name!r} is not running (services in the manifest: {declared}; "
                         "run `mlops apply` first)")
    return live


def cmd_build(args: argparse.Namespace) -> int:
    from .build import build_services

    project = Project.load(args.file)
    started: dict[str, float] = {}

    def progress(service: str, step: str) -> None:
        started.setdefault(service, time.monotonic())
        print(f"service.{service}: {step} [{time.monotonic() - started[service]:.0f}s elapsed]", flush=True)

    for r in build_services(project, args.services, progress):
        what = f"built in {r.seconds:.1f}s ({r.cached_steps} of {r.steps} steps from cache)" if r.built \
            else "up to date (not rebuilt)"
        pushed = f", pushed as {r.pushed}" if r.pushed else ""
        print(f"{r.service}: {r.image} {what}{pushed}")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    project = Project.load(args.file)
    if args.build:
        from .build import build_log

        for line in build_log(project, args.service):
            print(line)
        return 0
    live = _live_service(project, args.service)
    try:
        for line in project.provider_for(live).logs(live, follow=args.follow, tail=args.tail):
            print(line, flush=args.follow)
    except KeyboardInterrupt:
        pass
    return 0


def cmd_call(args: argparse.Namespace) -> int:
    from providers.http import request

    project = Project.load(args.file)
    live = _live_service(project, args.service)
    if args.data is None:
        sample = project.manifest.section("services").get(args.service, {}).get("sample_request")
        if not sample:
            raise MlopsError(f"service {args.service!r} has no sample_request; pass --data JSON or --data @FILE")
        body = (project.manifest.root / sample).read_text()
    elif args.data.startswith("@"):
        try:
            body = Path(args.data[1:]).read_text()
        except OSError as exc:
            raise MlopsError(f"--data {args.data}: cannot read file: {exc.strerror}") from None
    else:
        body = args.data
    endpoint = project.provider_for(live).endpoint(live)
    try:
        reply = request(endpoint.scoring_url, data=body.encode(),
                        headers={**endpoint.headers, "Content-Type": "application/json"}, timeout=120)
    except OSError as exc:
        raise MlopsError(f"cannot reach {endpoint.scoring_url}: {exc} (see `mlops status`)") from None
    text = reply.body.decode(errors="replace")
    with contextlib.suppress(ValueError):
        text = json.dumps(json.loads(text), indent=2)
    if reply.status != 200:
        print(text, file=sys.stderr)
        raise MlopsError(f"{args.service} answered HTTP {reply.status}")
    print(text)
    return 0


COMMANDS = {
    "validate": cmd_validate, "plan": cmd_plan, "apply": cmd_apply, "destroy": cmd_destroy,
    "status": cmd_status, "models": cmd_models, "logs": cmd_logs, "call": cmd_call, "build": cmd_build,
    "comment": cmd_comment, "fetch-plan": cmd_fetch_plan,
}


if __name__ == "__main__":
    sys.exit(main())
