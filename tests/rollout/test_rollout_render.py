"""Plans and PR comments show how an update goes live; the risk line names the strategy."""

from __future__ import annotations

import dataclasses
import json

from support import check_golden

from planner.addresses import Address
from planner.diff import decide
from planner.plan import Plan
from planner.render_json import render_json
from planner.render_markdown import render_markdown
from planner.render_text import render_plan
from planner.resources import HEALTHY, Live, Resource
from planner.rollout.spec import parse

SVC = {"models": ["ridge:1@aaaaaaaaaaaa"], "environment": "sklearn@bbbbbbbbbbbb", "source": "src@cccccccccccc",
       "entry_script": "score.py", "runtime": "mlops-runtime@dddddddddddd", "deploy": {"auth": "key", "port": 8080}}
CANARY = {"strategy": "canary", "steps": [{"weight": 10, "hold": "2m"}, {"weight": 50, "hold": "5m"}],
          "analysis": {"interval": "30s", "min_requests": 50, "max_error_rate": "1%", "failure_limit": 2}}
BLUE = {"strategy": "blue_green", "steps": [{"weight": 100, "hold": "90s"}],
        "analysis": {"interval": "15s", "max_p99_ms": 300}}


def update(name: str, block: dict | None, source: str = "src@eeeeeeeeeeee") -> object:
    change = decide(Resource(Address("service", name), {**SVC, "source": source}, target="dev"),
                    Live(Address("service", name), SVC, HEALTHY, target="dev"))
    policy = parse(block)[0] if block else None
    return dataclasses.replace(change, rollout=policy.to_json() if policy else None)


def plan(*changes) -> Plan:
    return Plan(changes=tuple(changes), manifest="ml.yaml", project="demo", manifest_fingerprint="m" * 8,
                live_fingerprint="l" * 8, tool_version="0.1.0")


def test_text_plan_golden():
    text = render_plan(plan(update("api", CANARY), update("batch", BLUE), update("plain", None)))
    assert "# (rollout canary 10% (2m) -> 50% (5m) -> 100%, analysis every 30s)" in text
    check_golden("rollout/plan.txt", text)


def test_markdown_risk_line_says_canary():
    body = render_markdown(plan(update("api", CANARY), update("batch", BLUE)), manifest="ml.yaml")
    assert len(body) == 1
    risk = next(line for line in body[0].splitlines() if "**Risk:**" in line)
    assert "canary: `service.api`" in risk and "blue_green: `service.batch`" in risk
    check_golden("rollout/comment.md", body[0])


def test_the_plan_file_carries_the_policy():
    p = plan(update("api", CANARY), update("plain", None))
    data = json.loads(render_json(p))
    assert data["resource_changes"][0]["rollout"]["steps"] == [{"weight": 10.0, "hold": 120.0},
                                                              {"weight": 50.0, "hold": 300.0}]
    assert "rollout" not in data["resource_changes"][1]       # plans without rollouts are unchanged
    again = Plan.from_json(data)
    assert render_plan(again) == render_plan(p)


def test_a_canary_on_a_target_that_cannot_split_says_it_runs_as_a_bake_window():
    from planner.rollout.support import weight_warnings

    changes = [update("api", CANARY), update("batch", BLUE), update("plain", None)]
    assert weight_warnings(changes, cannot_split={"other"}) == []      # target dev splits: nothing to say
    warned = weight_warnings(changes, cannot_split={"dev"})
    assert len(warned) == 1
    assert warned[0].startswith("service.api: target 'dev' does not set rollout weights")
    assert "runs as a blue-green bake" in warned[0]
