"""A rollout the target reports, as plans and PR comments show it: continued, aborted, or held.

The decision (``planner.rollout.resume.plan_rollout``) is a pure function of the change, the desired
resource and the live one; the renderings are golden files (text, markdown, JSON)."""

from __future__ import annotations

import dataclasses
import json

from support import check_golden

from planner.addresses import Address
from planner.core.diff import live_fingerprint
from planner.diff import decide
from planner.plan import Action, Plan
from planner.render_json import render_json
from planner.render_markdown import render_markdown
from planner.render_text import render_plan
from planner.resources import HEALTHY, Live, Resource, RolloutState, spec_fingerprint
from planner.rollout.resume import held_warnings, plan_rollout
from planner.rollout.spec import parse

SVC = {"models": ["ridge:1@aaaaaaaaaaaa"], "environment": "sklearn@bbbbbbbbbbbb", "source": "src@cccccccccccc",
       "entry_script": "score.py", "runtime": "mlops-runtime@dddddddddddd", "deploy": {"auth": "key", "port": 8080}}
NEW = {**SVC, "source": "src@eeeeeeeeeeee"}
THIRD = {**SVC, "source": "src@ffffffffffff"}
POLICY = parse({"strategy": "canary", "steps": [{"weight": 10, "hold": "2m"}, {"weight": 50, "hold": "5m"},
                                                 {"weight": 80, "hold": "5m"}],
                "analysis": {"interval": "30s", "min_requests": 50, "max_error_rate": "1%"}})[0].to_json()


def state(candidate: dict, **kw) -> RolloutState:
    base = {"candidate": spec_fingerprint(candidate), "stable": spec_fingerprint(SVC), "phase": "canary",
            "step": 1, "weight": 50.0, "passed": 7, "judged": 7, "policy": POLICY, "updated": 1_700_000_000.0}
    return RolloutState(**{**base, **kw})


def planned(name: str, want: dict, held: RolloutState | None, policy: dict | None = POLICY):
    address = Address("service", name)
    desired = Resource(address, want, target="dev", inputs={"rollout": policy})
    live = Live(address, SVC, HEALTHY, target="dev", rollout=held)
    change = decide(desired, live)
    if policy and change.action is Action.UPDATE:
        change = dataclasses.replace(change, rollout=policy)
    return plan_rollout(change, desired, live)


def changes():
    return (
        planned("api", NEW, state(NEW)),                                             # continue step 2/3
        planned("back", SVC, state(NEW)),                                            # manifest back at stable
        planned("third", THIRD, state(NEW, step=0, weight=10.0, passed=2, judged=2)),  # a newer version
        planned("failed", NEW, state(NEW, phase="aborted", weight=0.0, passed=0, judged=2,
                                     reason="error rate 20% > max_error_rate 1% (40 of 200 requests answered 5xx)")),
        planned("held", NEW, state(NEW, phase="paused", reason="p99 900ms > max_p99_ms 500 (120 requests)")),
    )


def plan() -> Plan:
    found = changes()
    return Plan(changes=found, manifest="ml.yaml", project="demo", manifest_fingerprint="m" * 8,
                live_fingerprint="l" * 8, tool_version="0.1.0", warnings=tuple(held_warnings(found)))


def test_what_each_reported_rollout_becomes():
    by = {c.address.name: c for c in changes()}
    assert {n: c.reason for n, c in by.items()} == {
        "api": "rollout_continue", "back": "rollout_abort", "third": "rollout_superseded",
        "failed": "rollout_aborted", "held": "rollout_paused"}
    assert all(c.action is Action.UPDATE for c in by.values())
    assert by["back"].rollout is None                      # an abort is not a rollout of a new version


def test_text_plan_golden():
    text = render_plan(plan())
    assert "  # (continue rollout step 2/3 (50%), analysis 7/7 passed)" in text
    assert "`mlops rollout retry failed`" in text
    check_golden("rollout/resume-plan.txt", text)


def test_markdown_comment_golden():
    body = render_markdown(plan(), manifest="ml.yaml")
    assert len(body) == 1
    risk = next(line for line in body[0].splitlines() if "**Risk:**" in line)
    assert "continued canary: `service.api`" in risk and "held (apply leaves it)" in risk
    check_golden("rollout/resume-comment.md", body[0])


def test_json_plan_golden_and_round_trip():
    text = render_json(plan())
    data = json.loads(text)
    first = data["resource_changes"][0]
    assert first["rollout_state"]["step"] == 1 and first["action_reason"] == "rollout_continue"
    assert render_plan(Plan.from_json(data)) == render_plan(plan())
    check_golden("rollout/resume-plan.json", text)


def test_a_service_without_a_rollout_on_its_target_plans_as_before():
    plain = planned("api", NEW, None)
    assert plain.reason is None and plain.rollout_state is None and plain.rollout == POLICY
    assert "rollout_state" not in plain.to_json()
    same = planned("api", SVC, state(NEW, phase="aborted"))      # rolled back; the manifest asks for stable
    assert same.action is Action.NOOP and same.rollout_state is None


def test_a_saved_plan_stays_fresh_while_a_rollout_moves_on_but_not_once_it_is_held():
    address = Address("service", "api")
    at = {s: Live(address, SVC, HEALTHY, target="dev", rollout=state(NEW, step=s)) for s in (0, 1)}
    assert live_fingerprint(at[0]) == live_fingerprint(at[1])
    aborted = Live(address, SVC, HEALTHY, target="dev", rollout=state(NEW, phase="aborted"))
    assert live_fingerprint(aborted) != live_fingerprint(at[0])
    assert live_fingerprint(Live(address, SVC, HEALTHY, target="dev")) != live_fingerprint(at[0])
