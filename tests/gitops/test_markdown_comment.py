"""Golden files for the pull-request comment, and the size rules GitHub imposes on it."""

from __future__ import annotations

import re

import pytest
from support import check_golden

from planner.addresses import Address
from planner.diff import decide
from planner.hashing import secret_digest
from planner.plan import Action, Plan, Rules
from planner.render_markdown import COMMENT_LIMIT, Provenance, parse_part, render_markdown, size
from planner.render_text import render_plan, summary_line
from planner.resources import FAILED, HEALTHY, REGISTERED, Live, Resource

GIT = {"commit": "0123456789abcdef0123456789abcdef01234567", "dirty": False, "branch": "feature/port"}
SVC = {"models": ["ridge:1@aaaaaaaaaaaa"], "environment": "sklearn@bbbbbbbbbbbb", "source": "src@cccccccccccc",
       "entry_script": "score.py", "runtime": "mlops-runtime@dddddddddddd",
       "deploy": {"auth": "key", "port": 8080, "workers": 1}}


PORT_RULES = Rules(replace_paths=frozenset({"deploy.port"}))
MOVE_RULES = Rules(move_order=Action.DELETE_THEN_CREATE)   # onto the port the old one holds


def svc(**deploy) -> dict:
    return {**SVC, "deploy": {**SVC["deploy"], **deploy}}


def plan_of(*changes, git=GIT) -> Plan:
    return Plan(changes=tuple(sorted(changes, key=lambda c: c.address)), manifest="ml.yaml", project="demo",
                manifest_fingerprint="m", live_fingerprint="l", git=git, tool_version="0.1.0")


def update(name: str, **deploy):
    return decide(Resource(Address("service", name), svc(**deploy), target="dev"),
                  Live(Address("service", name), svc(), HEALTHY, target="dev"))


def small_plan() -> Plan:
    return plan_of(update("api", workers=2))


def long_plan() -> Plan:
    model_old = {"path": "model.pkl", "sha256": "a" * 64, "version": 1, "tags": {}, "description": "Ridge"}
    model_new = {**model_old, "sha256": "e" * 64, "version": 2}
    return plan_of(
        decide(Resource(Address("model", "ridge"), model_new), Live(Address("model", "ridge"), model_old, REGISTERED)),
        decide(Resource(Address("service", "api"), svc(port=8081), target="dev"),
               Live(Address("service", "api"), svc(), HEALTHY, target="dev"), PORT_RULES),
        decide(Resource(Address("service", "crashed"), svc(), target="dev"),
               Live(Address("service", "crashed"), svc(), FAILED, target="dev",
                    details={"message": "process exited: ValueError: bad model"}), PORT_RULES),
        decide(Resource(Address("service", "moved"), svc(), target="prod"),
               Live(Address("service", "moved"), svc(), HEALTHY, target="dev"), MOVE_RULES),
        decide(None, Live(Address("service", "gone"), svc(), HEALTHY, target="dev")),
    )


def secret_plan() -> Plan:
    sens = frozenset({"deploy.primary_key"})
    old, new = secret_digest("demo", "old-key-0123456789"), secret_digest("demo", "new-key-0123456789")
    return plan_of(decide(Resource(Address("service", "keyed"), svc(primary_key=new), target="dev", sensitive=sens),
                          Live(Address("service", "keyed"), svc(primary_key=old), HEALTHY, target="dev",
                               sensitive=sens)),
                   decide(Resource(Address("service", "fresh"), svc(primary_key=new), target="dev", sensitive=sens),
                          None))


def huge_plan(n: int) -> Plan:
    return plan_of(*[decide(Resource(Address("service", f"svc-{i:04d}"), svc(port=9000 + i), target="dev"), None)
                     for i in range(n)])


WHY = Provenance("origin/main", {"service.api": ["`src/score.py` changed"],
                                 "model.ridge": ["`model.pkl` changed: new version"],
                                 "service.moved": ["its entry in ml.yaml changed (target)"]})


def test_small_plan_is_not_folded():
    [body] = render_markdown(small_plan(), manifest="ml.yaml")
    assert "<details>" not in body
    check_golden("markdown/small.md", body)


def test_long_plan_is_folded_with_the_summary_outside():
    [body] = render_markdown(long_plan(), manifest="ml.yaml", why=WHY)
    outside = body.split("<details>")[0]
    assert f"**{summary_line(long_plan())}**" in outside
    assert "**Risk:** 3 deletions" not in outside  # replacements are not deletions
    check_golden("markdown/long.md", body)


def test_oversized_plan_is_split_and_cut_keeping_the_summary():
    plan = huge_plan(60)
    parts = render_markdown(plan, manifest="ml.yaml", limit=4000, max_parts=3)
    assert len(parts) == 3
    assert all(size(p) <= 4000 for p in parts)
    assert f"**{summary_line(plan)}**" in parts[0]
    assert [parse_part(p, "ml.yaml") for p in parts] == [1, 2, 3]
    assert "more lines not shown here" in parts[-1] and "**On merge:**" in parts[-1]
    assert summary_line(plan) + "\n```" in parts[-1]  # the diff's own summary closes the last part
    check_golden("markdown/split-cut.md", "\n<!-- ===== next comment ===== -->\n".join(parts))


@pytest.mark.parametrize("n", [10, 400, 2000])
def test_every_part_fits_githubs_limit_and_fences_balance(n: int):
    plan = huge_plan(n)
    parts = render_markdown(plan, manifest="deploy/ml.yaml")
    assert all(size(p) <= COMMENT_LIMIT for p in parts)
    assert f"**{summary_line(plan)}**" in parts[0]
    for p in parts:
        assert p.count("<details>") == p.count("</details>")
        assert len(re.findall(r"^```", p, re.M)) % 2 == 0
    shown = sum(p.count('service "svc-') for p in parts)
    assert shown == n or "more lines not shown here" in parts[-1]


def test_split_without_cut_shows_every_line():
    plan = huge_plan(40)
    parts = render_markdown(plan, manifest="ml.yaml", limit=4000, max_parts=20)
    assert sum(p.count('service "svc-') for p in parts) == 40
    assert "not shown" not in "".join(parts)


def test_secrets_masked():
    [body] = render_markdown(secret_plan(), manifest="ml.yaml")
    assert "old-key" not in body and "new-key" not in body
    assert secret_digest("demo", "new-key-0123456789") not in body
    assert "deploy.primary_key = (sensitive) -> (sensitive)" in body
    check_golden("markdown/secrets.md", body)


def test_no_changes():
    [body] = render_markdown(plan_of(), manifest="ml.yaml")
    assert "**No changes.**" in body and "nothing to apply" in body
    check_golden("markdown/no-changes.md", body)


def test_same_plan_data_as_the_terminal():
    """One plan model, three renderings: every terminal line of a change is in the comment."""
    plan = long_plan()
    [body] = render_markdown(plan, manifest="ml.yaml")
    text = render_plan(plan).split("following actions:")[1]
    for change_line in re.findall(r"^ *[-+~]+ .*$|^ *# .*$", text, re.M):
        stripped = change_line.strip().lstrip("-+~/! ").strip()
        assert stripped in body, change_line


def test_backticks_in_values_cannot_break_the_fence():
    plan = plan_of(decide(Resource(Address("model", "m"), {"description": "```\n<b>x</b>", "path": "m"}), None))
    [body] = render_markdown(plan, manifest="ml.yaml")
    assert "\n````diff\n" in body


def test_dirty_tree_and_no_git_are_said():
    [dirty] = render_markdown(plan_of(update("api", workers=2), git={**GIT, "dirty": True}), manifest="ml.yaml")
    assert "uncommitted changes" in dirty
    [none] = render_markdown(plan_of(update("api", workers=2), git={}), manifest="ml.yaml")
    assert "Planned outside a git repository" in none


def test_marker_is_per_manifest():
    [body] = render_markdown(small_plan(), manifest="team-a/ml.yaml")
    assert parse_part(body, "team-a/ml.yaml") == 1
    assert parse_part(body, "ml.yaml") is None
    assert "--" not in body.split("\n", 1)[0][4:-3]  # no "--" inside the HTML comment
