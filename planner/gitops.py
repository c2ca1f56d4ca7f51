"""Apply on merge: which plan to carry out, whether the checkout may be applied, and the job summary.

Apply-on-merge prefers exactly what was reviewed: the pull request's saved plan is applied when
every resource it touches is as it was when planned (``check_fresh``) *and* the merged tree asks
for nothing more. Otherwise the tool plans again, applies that, and says why, so the end state
always matches the default branch and nobody is misled about what ran.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import git

from .addresses import Address
from .apply import Outcome, check_fresh
from .errors import MlopsError, StalePlanError
from .plan import Plan
from .planning import make_plan
from .project import Project
from .render_text import summary_line
from .resources import Live, Resource

SHOWN_DIRTY = 5


@dataclass(frozen=True)
class Choice:
    """The plan to apply and, for the log and the job summary, why that one."""

    plan: Plan
    reviewed: bool
    note: str


def choose_plan(project: Project, reviewed: Plan | None, desired: Mapping[Address, Resource],
                live: Mapping[Address, Live], *, source: str = "the reviewed plan") -> Choice:
    """The reviewed plan if it is still exactly right; else a fresh plan, with the reason."""
    fresh = make_plan(project, desired=dict(desired), live=dict(live))
    if reviewed is None:
        return Choice(fresh, False, f"No reviewed plan was found ({source}); planned again at this commit.")
    try:
        check_fresh(reviewed, desired, live, project.rules_for)
    except StalePlanError as exc:
        return Choice(fresh, False, f"{_capital(source)} could not be applied as reviewed. {exc} "
                      "Planned again at this commit and applied that instead.")
    wanted = {c.address: c.action for c in fresh.actionable}
    shown = {c.address: c.action for c in reviewed.actionable}
    extra = sorted(str(a) for a, action in wanted.items() if shown.get(a) is not action)
    if extra:
        return Choice(fresh, False, f"The merged commit needs changes {source} did not show "
                      f"({', '.join(extra)}); planned again at this commit and applied that instead.")
    return Choice(reviewed, True, f"Applying {source}: everything it touches is unchanged since it was made.")


def require_clean(root: Path, branch: str) -> str:
    """Refuse a dirty work tree or a commit that is not on ``branch``; returns the commit SHA."""
    try:
        repo = git.Repo(root, search_parent_directories=True)
        head = repo.head.commit
    except (git.InvalidGitRepositoryError, git.NoSuchPathError, ValueError):
        raise MlopsError(f"--require-clean: {root} is not in a git repository with a commit") from None
    dirty = sorted({*(d.a_path for d in repo.index.diff(None)), *(d.a_path for d in repo.index.diff("HEAD")),
                    *repo.untracked_files})
    if dirty:
        shown = ", ".join(dirty[:SHOWN_DIRTY]) + (f" and {len(dirty) - SHOWN_DIRTY} more" if len(dirty) > SHOWN_DIRTY
                                                 else "")
        raise MlopsError(f"--require-clean: the work tree has uncommitted changes ({shown}); commit them, or write "
                         "CI files outside the checkout (e.g. $RUNNER_TEMP)")
    refs = [r for r in (branch, f"origin/{branch}") if _exists(repo, r)]
    if not refs:
        raise MlopsError(f"--require-clean: branch {branch!r} is not in this checkout (fetch it, or pass "
                         "--branch NAME)")
    if not any(repo.is_ancestor(head, r) for r in refs):
        raise MlopsError(f"--require-clean: commit {head.hexsha[:12]} is not on branch {branch!r}; apply only "
                         f"what was merged into {branch}")
    return head.hexsha


def manifest_key(path: Path) -> str:
    """The manifest's path from the repository root: one sticky comment per manifest, whatever the cwd."""
    resolved = Path(path).resolve()
    try:
        top = git.Repo(resolved.parent, search_parent_directories=True).working_tree_dir
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        top = None
    if top is None:
        return Path(path).as_posix()
    return resolved.relative_to(Path(top).resolve()).as_posix()


def _exists(repo: git.Repo, ref: str) -> bool:
    try:
        repo.commit(ref)
    except (git.BadName, ValueError, git.GitCommandError):
        return False
    return True


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


# -- the job summary --------------------------------------------------------------------------------

def render_summary(*, manifest: str, choice: Choice | None, plan: Plan, outcomes: Sequence[Outcome],
                   services: Sequence[Mapping[str, Any]], result: str) -> str:
    """Markdown for ``$GITHUB_STEP_SUMMARY``: what ran and why, each change's result, every service."""
    failed = [o for o in outcomes if not o.ok]
    icon = ":x:" if failed else ":white_check_mark:"
    out = [f"### {icon} mlops apply for `{manifest}`", ""]
    commit = (plan.git or {}).get("commit")
    if commit:
        out += [f"Commit `{commit[:12]}`" + (f" on `{plan.git['branch']}`" if plan.git.get("branch") else "") + ".",
                ""]
    if choice is not None:
        out += [("> [!NOTE]\n> " if choice.reviewed else "> [!WARNING]\n> ") + choice.note, ""]
    out += [f"**{result}**", ""]
    if outcomes:
        out += ["| Resource | Action | Result |", "| --- | --- | --- |"]
        for o in outcomes:
            if o.ok:
                status = f"done in {o.elapsed:.1f}s"
            elif o.skipped:
                status = f"skipped: {o.error}"
            else:
                status = f"failed: {o.error}"
            out.append(f"| `{o.change.address}` | {o.change.action.value} | {_cell(status)} |")
        out.append("")
    elif not plan.has_changes:
        out += [summary_line(plan), ""]
    out += ["#### Services", ""]
    if not services:
        out.append("No services declared or running.")
    else:
        out += ["| Service | Target | State | Endpoint | Commit |", "| --- | --- | --- | --- | --- |"]
        for row in services:
            commit = (row.get("git_commit") or "-")[:12] + (" (dirty)" if row.get("dirty") else "")
            state = row.get("state") or "-"
            if row.get("message") and state != "Healthy":
                state += f": {row['message']}"
            out.append(f"| `{row['service']}` | {row.get('target') or '-'} | {_cell(state)} | "
                       f"{_cell(row.get('endpoint') or '-')} | {commit} |")
    return "\n".join(out) + "\n"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")
