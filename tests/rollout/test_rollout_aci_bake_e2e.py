"""The bake window (``planner/rollout/bake.py``) through `mlops apply` on ACI, a target without
``SplitsTraffic``: a good new version is watched and kept, ``--no-wait`` skips the window and says
so, and Ctrl-C during the window re-applies the previous version (exit 5, not 130). A failing
version's rollback is tests/rollout/test_rollout_aci_e2e.py. The local targets split traffic and run
the rollout driver instead (tests/rollout/test_rollout_bake_e2e.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import apply_interrupted, run_cli
from test_rollout_aci_e2e import ROLLOUT, aci, commit  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.docker]


def status(f: tuple[str, str]) -> dict:
    return {r["service"]: r for r in json.loads(run_cli("status", "--json", *f).out)["services"]}["diabetes-api"]


def change_score(manifest: Path, marker: str) -> None:
    """A new version: the scoring script changes (a comment), its answers do not."""
    score = manifest.parent / "src" / "score.py"
    score.write_text(score.read_text() + f"\n# {marker}\n")
    commit(manifest.parent, marker)


def test_the_bake_window_keeps_a_good_version_skips_on_no_wait_and_rolls_back_on_ctrl_c(aci):  # noqa: F811
    _double, manifest = aci
    f = ("-f", str(manifest))
    base = manifest.read_text()
    manifest.write_text(base + ROLLOUT.format(strategy="blue_green"))
    commit(manifest.parent, "a bake window")
    try:
        first = run_cli("apply", "--auto-approve", *f)
        assert first.code == 0, first.out + first.err
        assert "bake window" not in first.out          # a new service has nothing to go back to

        change_score(manifest, "a good version")
        good = run_cli("apply", "--auto-approve", *f)
        assert good.code == 0, good.out + good.err
        assert "bake window 4s: watching the new version through the sample request" in good.out
        assert "promoted: " in good.out and "rollout blue_green: starting" not in good.out   # not the driver
        kept = status(f)
        assert kept["state"] == "Healthy" and kept["git_commit"] == commit_of(manifest)

        change_score(manifest, "a version without a window")
        skipped = run_cli("apply", "--auto-approve", "--no-wait", *f)
        assert skipped.code == 0, skipped.out + skipped.err
        assert "--no-wait: service.diabetes-api go live without a bake window (no analysis, no automatic " \
               "rollback)" in skipped.out, skipped.out
        assert "bake window 4s: watching" not in skipped.out
        before = status(f)
        assert before["fingerprint"] != kept["fingerprint"] and before["git_commit"] == commit_of(manifest)

        manifest.write_text(manifest.read_text().replace("hold: 4s", "hold: 60s").replace("60s\n", "120s\n"))
        change_score(manifest, "a long window")
        code, out, err = apply_interrupted(*f, cwd=manifest.parent, once="bake window 60s")
        assert code == 5, out + err
        assert "ROLLED BACK to the previous version: the apply was cancelled during the bake window" in err, err
        after = status(f)
        assert after["state"] == "Healthy" and after["fingerprint"] == before["fingerprint"]
        assert after["git_commit"] == before["git_commit"]
        assert json.loads(run_cli("call", "diabetes-api", *f).out)["predictions"]
    finally:
        run_cli("destroy", "--auto-approve", *f)


def commit_of(manifest: Path) -> str:
    import git

    return git.Repo(manifest.parent).head.commit.hexsha
