"""`mlops graph`: the manifest's resources and what uses what, as DOT or Mermaid."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("graph", parents=[common],
                       help="draw models, environments, services and targets (DOT or Mermaid)")
    p.add_argument("--format", choices=("dot", "mermaid"), default="dot", help="dot (default) or mermaid")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--plan", type=Path, metavar="PLANFILE",
                       help="mark each node with its action in this saved plan (`mlops plan -o FILE`)")
    which.add_argument("--planned", action="store_true",
                       help="plan now (reads live state) and mark each node with its action")
    p.add_argument("--changes-only", action="store_true",
                   help="only what the plan changes and its direct neighbours")
    p.set_defaults(handler=cmd_graph)


def cmd_graph(args: argparse.Namespace) -> int:
    from ..graph_manifest import graph_of
    from ..graph_render import changed_part, to_dot, to_mermaid, with_plan
    from ..manifest import load_manifest

    if args.plan or args.planned:
        from ..project import Project

        project = Project.load(args.file)
        manifest = project.manifest
        if args.plan:
            from .planfiles import load_plan

            plan = load_plan(args.plan, project)
        else:
            from ..planning import make_plan

            plan = make_plan(project)
        graph = with_plan(graph_of(manifest), plan)
    else:
        manifest = load_manifest(args.file)
        graph = graph_of(manifest)
    if args.changes_only:
        graph = changed_part(graph)
    if args.format == "mermaid":
        sys.stdout.write(to_mermaid(graph))
    else:
        sys.stdout.write(to_dot(graph, manifest.project))
    return 0
