"""`mlops status | models | logs | build | call`: what runs, and using it."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.addresses import Address
from ..core.errors import MlopsError
from ..core.hashing import digest
from ..core.resources import FAILED, UNHEALTHY, UNSCHEDULABLE, Health, Live

if TYPE_CHECKING:   # handlers import the project layer themselves: `mlops --help` stays light
    from ..project import Project


def _load(path: Path) -> Project:
    from ..project import Project

    return Project.load(path)


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("status", parents=[common], help="show services: state, endpoint, models, commit")
    p.set_defaults(handler=cmd_status)
    p.add_argument("--json", action="store_true")
    p.add_argument("--detailed-exitcode", action="store_true",
                   help="exit 2 when a service is Failed, Unhealthy, Unschedulable or not deployed (0: all fine)")
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

    p = sub.add_parser("endpoint", parents=[common],
                       help="a service's scoring URL; --curl: a ready curl line; --show-key: its key")
    p.set_defaults(handler=cmd_endpoint)
    p.add_argument("service")
    p.add_argument("--curl", action="store_true", help="print a curl command line that scores the service")
    p.add_argument("--show-key", action="store_true",
                   help="print the service's key (alone, or inside the --curl line); never shown otherwise")
    p.add_argument("--instance", "--device", "--pod", dest="instance", metavar="ID",
                   help="one instance of the service: a pod, an edge device")

    p = sub.add_parser("render", parents=[common],
                       help="print the exact objects apply would send (e.g. Kubernetes YAML), secrets redacted")
    p.set_defaults(handler=cmd_render)
    p.add_argument("services", nargs="*", metavar="SERVICE", help="default: every service whose target renders")
    p.add_argument("--rbac", action="store_true",
                   help="print the least privilege mlops needs per target (Kubernetes: Role, ClusterRole)")



@dataclass(frozen=True)
class ServiceRow:
    """One line of `mlops status`: the same keys in every state (``status --json`` is a contract).

    ``target`` is where the service runs, or for one not deployed yet where the manifest puts it.
    """

    service: str
    target: str | None
    state: str
    endpoint: str | None = None
    models: tuple[str, ...] = ()
    fingerprint: str | None = None
    git_commit: str | None = None
    dirty: bool | None = None
    message: str = ""
    in_manifest: bool = True
    health: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}


def service_rows(project: Project, live: Mapping[Address, Live] | None = None) -> list[ServiceRow]:
    """One row per service declared or running; ``live``: state already read (else it is read now)."""
    live = project.live(allow_duplicates=True) if live is None else live
    rows = []
    declared = project.manifest.section("services")
    for name in sorted(set(declared) | {a.name for a in live if a.kind == "service"}):
        lv = live.get(Address("service", name))
        if lv is None:
            target = project.manifest.service_target(declared[name])
            rows.append(ServiceRow(service=name, target=target if isinstance(target, str) else None,
                                   state="NotDeployed", message="not deployed; run `mlops apply`"))
            continue
        git = lv.details.get("git") or {}
        message = str(lv.details.get("message") or "")
        if lv.rollout is not None:   # where a rollout the target keeps stands (`mlops rollout status` has more)
            from ..rollout.resume import position

            held = f": {lv.rollout.reason}" if lv.rollout.reason else ""
            message = "; ".join(filter(None, [message, f"rollout {lv.rollout.phase} at {position(lv.rollout)}, "
                                                       f"candidate {lv.rollout.candidate[:12]}{held}"]))
        rows.append(ServiceRow(
            service=name, target=lv.target, state=lv.status, endpoint=lv.details.get("endpoint"),
            models=tuple(lv.spec.get("models", [])), fingerprint=digest(dict(lv.spec))[:12],
            git_commit=git.get("commit"), dirty=git.get("dirty"), message=message,
            in_manifest=name in declared,
            health=lv.health.to_json() if lv.health is not None and lv.health.has_counts else None,
        ))
    return rows


NEEDS_ATTENTION = frozenset({FAILED, UNHEALTHY, UNSCHEDULABLE, "NotDeployed"})
"""States for which ``status --detailed-exitcode`` exits 2 (Transitioning is a rollout under way: 0)."""


def cmd_status(args: argparse.Namespace) -> int:
    rows = service_rows(_load(args.file))
    code = 2 if args.detailed_exitcode and any(r.state in NEEDS_ATTENTION for r in rows) else 0
    if args.json:
        print(json.dumps({"format_version": "1.0", "services": [r.to_json() for r in rows]}, indent=2,
                         sort_keys=True))
        return code
    if not rows:
        print("No services declared or running.")
        return 0
    table = [["SERVICE", "TARGET", "STATE", "ENDPOINT", "MODELS", "FINGERPRINT", "COMMIT"]]
    for r in rows:
        commit = (r.git_commit or "-")[:10] + ("+dirty" if r.dirty else "")
        counts = Health.from_json(r.health).counts() if r.health else ""
        state = f"{r.state} ({counts})" if counts else r.state
        table.append([r.service, r.target or "-", state, r.endpoint or "-",
                      ",".join(m.split("@")[0] for m in r.models) or "-", r.fingerprint or "-", commit])
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    for r in rows:
        if r.message:
            print(f"{r.service}: {r.message}")
    return code


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


def _reachable(project: Project, live: Live):
    """The provider of a live service, if this machine can use its services (the Reachable capability)."""
    from providers.base import Reachable

    provider = project.provider_for(live)
    if not isinstance(provider, Reachable):
        raise MlopsError(f"{live.address}: {provider.describe()} offers no way to call or read its services "
                         "from this machine")
    return provider


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
    live = project.live(allow_duplicates=True).get(Address("service", args.service))
    if live is None:
        return _last_attempt_log(project, args.service, tail=args.tail)
    try:
        for line in _reachable(project, live).logs(live, follow=args.follow, tail=args.tail,
                                                   instance=args.instance):
            print(line, flush=args.follow)
    except KeyboardInterrupt:
        pass
    return 0


def _last_attempt_log(project: Project, name: str, *, tail: int | None) -> int:
    """No instance runs: show the log of the service's last start attempt, if its target keeps one."""
    declared = project.manifest.section("services")
    attempt = None
    if name in declared:
        provider = project.providers[project.manifest.service_target(declared[name])]
        if callable(getattr(provider, "last_attempt_log", None)):
            attempt = provider.last_attempt_log(name)
    if attempt is None:
        _live_service(project, name)   # raises the usual "not running" error
        return 0
    which, lines = attempt
    print(f"service {name!r} is not running; the log of its last start attempt ({which}):", file=sys.stderr)
    for line in lines[-tail:] if tail else lines:
        print(line)
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
    status, answer, where = _reachable(project, live).call(live, body.encode(), instance=args.instance)
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


def _render_rbac(project: Any) -> int:
    shown = 0
    for target in sorted(project.manifest.section("targets")):
        text = getattr(project.provider_for(target), "rbac", lambda: None)()
        if text:
            print(f"# target {target}: bind these to the identity mlops runs as")
            print(text.rstrip())
            shown += 1
    if not shown:
        raise MlopsError("no target of this manifest needs RBAC objects")
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from providers.base import Renders

    project = _load(args.file)
    if args.rbac:
        return _render_rbac(project)
    declared = project.manifest.section("services")
    unknown = [n for n in args.services if n not in declared]
    if unknown:
        known = ", ".join(sorted(declared)) or "none"
        raise MlopsError(f"no service {unknown[0]!r} in the manifest (services: {known})")
    desired = project.desired()
    shown = 0
    for name in args.services or sorted(declared):
        resource = desired[Address("service", name)]
        provider = project.provider_for(resource.target or "")
        text = provider.render(resource) if isinstance(provider, Renders) else None
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


def cmd_endpoint(args: argparse.Namespace) -> int:
    """Where to send requests; the key only when asked for (``--show-key``), written past the redactor."""
    import os
    import shlex

    project = _load(args.file)
    live = _live_service(project, args.service)
    endpoint = _reachable(project, live).endpoint(live, args.instance)
    if endpoint is None:
        raise MlopsError(f"service {args.service!r} has no endpoint this machine can reach on target "
                         f"{live.target!r} (`mlops call {args.service}` scores it through the target)")
    bearer = endpoint.headers.get("Authorization", "")
    key = bearer.removeprefix("Bearer ") if bearer.startswith("Bearer ") else ""
    raw = getattr(sys.stdout, "unredacted", sys.stdout)
    if args.show_key and not args.curl:
        if not key:
            raise MlopsError(f"service {args.service!r} takes no key (deploy.auth is not `key`)")
        raw.write(key + "\n")
        return 0
    if not args.curl:
        print(endpoint.scoring_url)
        if key:
            print(f"It takes a key: `mlops endpoint {args.service} --show-key` prints it, `--curl` a ready "
                  "command line.", file=sys.stderr)
        return 0
    sample = project.manifest.section("services").get(args.service, {}).get("sample_request")
    data = "@" + os.path.relpath(project.manifest.root / sample) if sample else '{"data": []}'
    parts = ["curl", "-sS", "-X", "POST", endpoint.scoring_url, "-H", "Content-Type: application/json"]
    line = shlex.join([*parts, "--data-binary", data])
    if not key:
        print(line)
        return 0
    if args.show_key:
        raw.write(shlex.join([*parts, "-H", f"Authorization: Bearer {key}", "--data-binary", data]) + "\n")
        return 0
    # The key stays out of the terminal and the shell history: the line reads it from a variable.
    manifest = f" -f {shlex.quote(str(args.file))}" if str(args.file) != "ml.yaml" else ""
    print(f"MLOPS_KEY=$(mlops endpoint {shlex.quote(args.service)}{manifest} --show-key) && "
          f"{shlex.join(parts)} -H \"Authorization: Bearer $MLOPS_KEY\" --data-binary {shlex.quote(data)}")
    return 0
