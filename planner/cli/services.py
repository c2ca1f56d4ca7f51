"""`mlops status | models | logs | build | call`: what runs, and using it."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..addresses import Address
from ..errors import MlopsError
from ..hashing import digest
from ..resources import Health

if TYPE_CHECKING:   # handlers import the project layer themselves: `mlops --help` stays light
    from ..project import Project


def _load(path: Path) -> Project:
    from ..project import Project

    return Project.load(path)


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("status", parents=[common], help="show services: state, endpoint, models, commit")
    p.set_defaults(handler=cmd_status)
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("models", parents=[common], help="list registered models and versions")
    p.set_defaults(handler=cmd_models)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("logs", parents=[common], help="print a service's logs")
    p.set_defaults(handler=cmd_logs)
    p.add_argument("service")
    p.add_argument("--follow", action="store_true")
    p.add_argument("--tail", type=int, metavar="N")
    p.add_argument("--build", action="store_true", help="the output of the service's last image build")
    p.add_argument("--instance", "--device", "--pod", dest="instance", metavar="ID",
                   help="one instance of the service: a pod, an edge device")

    p = sub.add_parser("build", parents=[common], help="build (and push) services' images without deploying")
    p.set_defaults(handler=cmd_build)
    p.add_argument("services", nargs="*", metavar="SERVICE", help="default: every service that runs an image")

    p = sub.add_parser("call", parents=[common], help="score a service (default: its sample request)")
    p.set_defaults(handler=cmd_call)
    p.add_argument("service")
    p.add_argument("--data", help="JSON body, or @FILE")
    p.add_argument("--instance", "--device", "--pod", dest="instance", metavar="ID",
                   help="score one instance of the service (an edge device); default: any healthy one")

    p = sub.add_parser("render", parents=[common],
                       help="print the exact objects apply would send (e.g. Kubernetes YAML), secrets redacted")
    p.set_defaults(handler=cmd_render)
    p.add_argument("services", nargs="*", metavar="SERVICE", help="default: every service whose target renders")



def service_rows(project: Project) -> list[dict[str, Any]]:
    live = project.live(allow_duplicates=True)
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
        rows.append({
            "service": name, "target": lv.target, "state": lv.status, "endpoint": lv.details.get("endpoint"),
            "models": list(lv.spec.get("models", [])), "fingerprint": digest(dict(lv.spec))[:12],
            "git_commit": git.get("commit"), "dirty": git.get("dirty"), "message": lv.details.get("message") or "",
            "in_manifest": name in declared,
            "health": lv.health.to_json() if lv.health is not None and lv.health.has_counts else None,
        })
    return rows


def cmd_status(args: argparse.Namespace) -> int:
    rows = service_rows(_load(args.file))
    if args.json:
        print(json.dumps({"format_version": "1.0", "services": rows}, indent=2, sort_keys=True))
        return 0
    if not rows:
        print("No services declared or running.")
        return 0
    table = [["SERVICE", "TARGET", "STATE", "ENDPOINT", "MODELS", "FINGERPRINT", "COMMIT"]]
    for r in rows:
        commit = (r["git_commit"] or "-")[:10] + ("+dirty" if r["dirty"] else "")
        counts = Health.from_json(r["health"]).counts() if r.get("health") else ""
        state = f"{r['state']} ({counts})" if counts else r["state"]
        table.append([r["service"], r["target"] or "-", state, r["endpoint"] or "-",
                      ",".join(m.split("@")[0] for m in r["models"]) or "-", r["fingerprint"] or "-", commit])
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    for r in rows:
        if r["message"]:
            print(f"{r['service']}: {r['message']}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    """What the registry holds (versions registered on other machines included), not just this checkout."""
    project = _load(args.file)
    models = []
    for lv in project.store.read_models():
        models.append({
            "name": lv.address.name, "current_version": lv.spec["version"], "current_sha256": lv.spec["sha256"],
            "tags": lv.spec["tags"], "description": lv.spec["description"],
            "versions": project.store.version_list(lv.address.name),
        })
    for name in project.store.removed_models():   # destroyed: no current version, history kept
        models.append({"name": name, "current_version": None, "current_sha256": None, "tags": {},
                       "description": "", "versions": project.store.version_list(name)})
    if args.json:
        print(json.dumps({"format_version": "1.1", "registry": project.store.describe(), "models": models},
                         indent=2, sort_keys=True))
        return 0
    print(f"Registry: {project.store.describe()}")
    if not models:
        print("No models registered. Run `mlops apply` to register the manifest's models.")
    for m in models:
        tags = ", ".join(f"{k}={v}" for k, v in m["tags"].items())
        current = m["current_version"] if m["current_version"] is not None else "none, removed from the project"
        print(f"{m['name']}  (current: {current}){'  tags: ' + tags if tags else ''}")
        for v in m["versions"]:
            mark = "*" if v["sha256"] == m["current_sha256"] else " "
            number = "pending" if v["version"] is None else str(v["version"])
            commit = (v["git_commit"] or "-")[:10] + ("+dirty" if v["git_dirty"] else "")
            print(f"  {mark} {number:>7}  sha256:{v['sha256'][:12]}  {v['created']}  {commit}  {v['source'] or ''}")
    return 0


def _live_service(project: Project, name: str):
    live = project.live(allow_duplicates=True).get(Address("service", name))
    if live is None:
        declared = ", ".join(sorted(project.manifest.section("services"))) or "none"
        raise MlopsError(f"service {name!r} is not running (services in the manifest: {declared}; "
                         "run `mlops apply` first)")
    return live


def cmd_build(args: argparse.Namespace) -> int:
    from ..build import build_services

    project = _load(args.file)
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
    project = _load(args.file)
    if args.build:
        from ..build import build_log

        for line in build_log(project, args.service):
            print(line)
        return 0
    live = _live_service(project, args.service)
    try:
        for line in project.provider_for(live).logs(live, follow=args.follow, tail=args.tail,
                                                    instance=args.instance):
            print(line, flush=args.follow)
    except KeyboardInterrupt:
        pass
    return 0


def cmd_call(args: argparse.Namespace) -> int:
    project = _load(args.file)
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
    status, answer, where = project.provider_for(live).call(live, body.encode(), instance=args.instance)
    if not where.startswith(("http://", "https://")):
        print(f"(answered by {where})", file=sys.stderr)
    text = answer.decode(errors="replace")
    with contextlib.suppress(ValueError):
        text = json.dumps(json.loads(text), indent=2)
    if status != 200:
        print(text, file=sys.stderr)
        raise MlopsError(f"{args.service} answered HTTP {status}")
    print(text)
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    project = _load(args.file)
    declared = project.manifest.section("services")
    unknown = [n for n in args.services if n not in declared]
    if unknown:
        known = ", ".join(sorted(declared)) or "none"
        raise MlopsError(f"no service {unknown[0]!r} in the manifest (services: {known})")
    desired = project.desired()
    shown = 0
    for name in args.services or sorted(declared):
        resource = desired[Address("service", name)]
        text = project.provider_for(resource.target or "").render(resource)
        if text is None:
            if args.services:
                raise MlopsError(f"service {name!r}: its target {resource.target!r} has nothing to render")
            continue
        print(f"# service.{name} on target {resource.target}")
        print(text.rstrip())
        shown += 1
    if not shown:
        raise MlopsError("no service of this manifest runs on a target that renders objects")
    return 0
