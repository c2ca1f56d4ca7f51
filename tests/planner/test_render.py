"""Golden files for the text and JSON plans: create, update, replace (both orders), delete, no-op."""

from __future__ import annotations

import json

import pytest
from support import check_golden

from planner.addresses import Address
from planner.diff import decide
from planner.hashing import secret_digest
from planner.plan import Action, Plan, Rules
from planner.render_json import render_json
from planner.render_text import render_plan
from planner.resources import FAILED, HEALTHY, REGISTERED, Live, Resource

SVC = {"models": ["ridge:1@aaaaaaaaaaaa"], "environment": "sklearn@bbbbbbbbbbbb", "source": "src@cccccccccccc",
       "entry_script": "score.py", "runtime": "mlops-runtime@dddddddddddd",
       "deploy": {"auth": "key", "port": 8080, "workers": 1}}


def svc(name: str, **deploy) -> dict:
    return {**SVC, "deploy": {**SVC["deploy"], **deploy}}


def sample_plan() -> Plan:
    model_old = {"path": "model.pkl", "sha256": "a" * 64, "version": 1, "tags": {"area": "health"},
                 "description": "Ridge"}
    model_new = {**model_old, "sha256": "e" * 64, "version": 2, "tags": {"area": "health", "owner": "ml"}}
    key_old, key_new = secret_digest("demo", "old-key-0123456789"), secret_digest("demo", "new-key-0123456789")
    sens = frozenset({"deploy.primary_key"})
    changes = [
        decide(Resource(Address("model", "ridge"), model_new), Live(Address("model", "ridge"), model_old, REGISTERED)),
        decide(Resource(Address("model", "lasso"), {**model_old, "path": "lasso.pkl"}), None),
        decide(None, Live(Address("environment", "old"), {"python": "3.11", "pip": ["numpy"]}, REGISTERED)),
        decide(Resource(Address("environment", "sklearn"), {"python": "3.11", "pip": []}),
               Live(Address("environment", "sklearn"), {"python": "3.11", "pip": []}, REGISTERED)),
        decide(Resource(Address("service", "api"), svc("api", port=8081), target="dev"),
               Live(Address("service", "api"), svc("api"), HEALTHY, target="dev"),
               Rules(replace_paths=frozenset({"deploy.port"}))),
        decide(Resource(Address("service", "crashed"), svc("crashed"), target="dev"),
               Live(Address("service", "crashed"), svc("crashed"), FAILED, target="dev",
                    details={"message": "process exited: ValueError: bad model"}),
               Rules(replace_paths=frozenset({"deploy.port"}))),
        decide(Resource(Address("service", "keyed"), svc("keyed", primary_key=key_new), target="dev",
                        sensitive=sens),
               Live(Address("service", "keyed"), svc("keyed", primary_key=key_old), HEALTHY, target="dev",
                    sensitive=sens)),
        decide(Resource(Address("service", "moved"), svc("moved"), target="prod"),
               Live(Address("service", "moved"), svc("moved"), HEALTHY, target="dev"),
               Rules(move_order=Action.DELETE_THEN_CREATE)),   # onto the port the old one holds
        decide(None, Live(Address("service", "gone"), svc("gone"), HEALTHY, target="dev")),
    ]
    return Plan(changes=tuple(sorted(changes, key=lambda c: c.address)), manifest="ml.yaml", project="demo",
                manifest_fingerprint="m" * 8, live_fingerprint="l" * 8,
                git={"commit": "0123456789abcdef0123456789abcdef01234567", "dirty": False, "branch": "main"},
                tool_version="0.1.0")


def test_actions_cover_every_kind():
    actions = {c.address.name: c.action for c in sample_plan().changes}
    assert actions == {
        "ridge": Action.UPDATE, "lasso": Action.CREATE, "old": Action.DELETE, "sklearn": Action.NOOP,
        "api": Action.CREATE_THEN_DELETE, "crashed": Action.DELETE_THEN_CREATE, "keyed": Action.UPDATE,
        "moved": Action.DELETE_THEN_CREATE, "gone": Action.DELETE,
    }


def test_text_plan_golden():
    check_golden("plans/mixed.txt", render_plan(sample_plan()))


def test_json_plan_golden():
    check_golden("plans/mixed.json", render_json(sample_plan()))


def test_no_changes_golden():
    plan = Plan(changes=(), manifest="ml.yaml", project="demo", manifest_fingerprint="", live_fingerprint="")
    check_golden("plans/no-changes.txt", render_plan(plan))


@pytest.mark.parametrize("render", [render_plan, render_json])
def test_secrets_never_rendered(render):
    text = render(sample_plan())
    assert "old-key" not in text and "new-key" not in text
    assert secret_digest("demo", "new-key-0123456789") not in text


def test_json_round_trip():
    plan = sample_plan()
    again = Plan.from_json(json.loads(render_json(plan)))
    assert [c.action for c in again.changes] == [c.action for c in plan.changes]
    assert [c.live_fingerprint for c in again.changes] == [c.live_fingerprint for c in plan.changes]
    assert render_plan(again).replace("(sensitive)", "") == render_plan(plan).replace("(sensitive)", "")


def test_summary_counts_replacements_twice():
    assert sample_plan().counts() == {"add": 4, "change": 2, "destroy": 5}
