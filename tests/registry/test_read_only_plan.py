"""A plan writes nothing into the repository; what apply keeps there is git-ignored from its first byte.

In a new git repository without any .gitignore entry, `validate`, `plan`, `plan -o`, `status`,
`models` and `render` leave `git status --porcelain` empty, and `apply --require-clean` succeeds
after them (and leaves the work tree clean too).
"""

from __future__ import annotations

import git
import pytest
from support import make_project, run_cli

MANIFEST = """\
version: 1
project: readonly
targets:
  mem: {provider: PROVIDER}
models:
  m: {path: model.txt}
environments:
  e: {python: "3.11"}
services:
  echo-api: {models: [m], environment: e, source_dir: src, entry_script: score.py, target: mem}
"""


def porcelain(root) -> str:
    return git.Repo(root).git.status("--porcelain", "--untracked-files=all", "--ignored")


@pytest.mark.parametrize("provider", ["memory", "local"])
def test_read_only_commands_leave_the_work_tree_clean(provider, tmp_path, memory_target):
    root = tmp_path / "repo"
    manifest = make_project(root, MANIFEST.replace("PROVIDER", provider))
    git.Repo(root).git.branch("-M", "main")
    assert porcelain(root) == ""
    plan_file = tmp_path / "plan.json"      # -o writes where it is told, outside the repository here
    for args in (["validate"], ["plan"], ["plan", "-o", str(plan_file)], ["status"], ["status", "--json"],
                 ["models"], ["models", "--json"], ["render"]):
        result = run_cli(*args, "-f", str(manifest))
        assert "Traceback" not in result.err
        assert porcelain(root) == "", f"`mlops {' '.join(args)}` wrote into the repository: {porcelain(root)}"
    result = run_cli("apply", "--require-clean", "--auto-approve", "-f", str(manifest))
    assert result.code == 0, result.err
    # What apply keeps in the checkout (lock, keys, local records) is ignored from its first byte.
    assert git.Repo(root).git.status("--porcelain", "--untracked-files=all") == ""
    assert run_cli("plan", "--detailed-exitcode", "-f", str(manifest)).code == 0
    models = run_cli("models", "--json", "-f", str(manifest))
    assert '"current_version": 1' in models.out
    assert run_cli("destroy", "--auto-approve", "-f", str(manifest)).code == 0
