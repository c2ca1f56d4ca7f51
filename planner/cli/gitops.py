"""`mlops comment | fetch-plan`: the GitHub side of the GitOps loop."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..errors import MlopsError


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("comment", help="post or update the plan as a sticky pull-request comment")
    p.add_argument("planfile", type=Path, help="a plan saved with `mlops plan -o FILE`")
    p.add_argument("--repo", help="OWNER/REPO (default: $GITHUB_REPOSITORY)")
    p.add_argument("--pr", type=int, help="pull request number (default: from $GITHUB_EVENT_PATH)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(handler=cmd_comment)

    p = sub.add_parser("fetch-plan", help="download the plan reviewed on the pull request merged as $GITHUB_SHA")
    p.add_argument("--artifact", required=True, metavar="PREFIX",
                   help="artifact name prefix; the pull request's head SHA is appended")
    p.add_argument("-o", "--out", type=Path, required=True, help="where to write the plan")
    p.add_argument("--debug", action="store_true", help="show tracebacks")

    p.set_defaults(handler=cmd_fetch_plan)


def cmd_comment(args: argparse.Namespace) -> int:
    from ..github import ActionsContext, GitHub, upsert_comments
    from ..gitops import manifest_key
    from ..plan import Plan
    from ..render_markdown import Provenance, render_markdown
    from .planfiles import read_plan_json

    data = read_plan_json(args.planfile)
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
    from ..github import ActionsContext, GitHub, fetch_reviewed_plan

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
