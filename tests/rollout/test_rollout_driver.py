"""The rollout driver end to end through the CLI, on the memory target (which splits traffic).

Every run goes through ``mlops apply`` / ``mlops rollout ...`` in this process; the memory target
keeps each service's record, rollout state included, where later commands read it back. Its
metrics are a simulated load shared by the live weights (tests/memory_provider.py), so a candidate
with ``error_rate: 0.2`` fails its analysis and one without passes.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import threading
import time
from pathlib import Path

import memory_provider
import pytest
from memory_provider import CALLS, STATE
from support import make_project, run_cli

from planner.resources import RolloutState, spec_fingerprint

MANIFEST = """\
version: 1
project: roll
targets:
  mem: {{provider: memory{target}}}
models:
  m: {{path: model.txt}}
environments:
  e: {{python: "3.11"}}
services:
  api:
    models: [m]
    environment: e
    source_dir: src
    entry_script: score.py
    sample_request: sample.json
    target: mem
    deploy: {{{deploy}}}
    rollout:
{rollout}
      analysis: {{interval: 0.1s, min_requests: 20, max_error_rate: 1%, failure_limit: 2}}
      on_failure: {on_failure}
      progress_deadline: {deadline}
"""
CANARY = """\
      strategy: canary
      steps: [{{weight: 10, hold: {hold}}}, {{weight: 50, hold: {hold}}}]"""


def manifest(*, deploy: str = "", hold: str = "0.2s", on_failure: str = "rollback", target: str = "",
             rollout: str = CANARY, deadline: str = "5s") -> str:
    return MANIFEST.format(deploy=deploy, on_failure=on_failure, target=target, deadline=deadline,
                           rollout=rollout.format(hold=hold))


@pytest.fixture
def mem(memory_target):
    CALLS.clear()
    memory_provider.COUNTERS.clear()
    yield memory_target
    CALLS.clear()
    memory_provider.COUNTERS.clear()


def record():
    """The memory target's record of service api (the one service these tests deploy)."""
    (services,) = STATE.values()
    return services["api"]


def deployed(tmp_path: Path, **kwargs) -> Path:
    """A project whose version 1 runs (created: no rollout for a first version)."""
    path = make_project(tmp_path, manifest(**kwargs))
    first = run_cli("apply", "--auto-approve", "-f", str(path))
    assert first.code == 0, first.err
    assert record().rollout is None
    return path


def change(path: Path, **kwargs) -> str:
    """A new version: the model changes (and the deploy knobs given); answers its fingerprint-to-be."""
    (path.parent / "model.txt").write_text(f"v{time.monotonic_ns()}\n")
    path.write_text(manifest(**kwargs))
    return ""


def kinds(name: str = "api") -> list[str]:
    return [kind for service, _, kind in CALLS if service == name]


def test_a_good_candidate_is_promoted_through_every_step(tmp_path: Path, mem):
    path = deployed(tmp_path)
    stable = spec_fingerprint(record().spec)
    change(path)
    plan = run_cli("plan", "-f", str(path))
    assert "# (rollout canary 10% (0.2s) -> 50% (0.2s) -> 100%, analysis every 0.1s)" in plan.out
    assert "does not set rollout weights" not in plan.out       # this target splits: no bake-window warning

    applied = run_cli("apply", "--auto-approve", "-f", str(path))
    assert applied.code == 0, applied.err + applied.out
    out = applied.out
    for line in ("starting version", "step 1/2: the candidate answers 10% of requests",
                 "step 2/2: the candidate answers 50% of requests", "analysis 1: pass: error rate 0%", "promoting"):
        assert line in out, out
    assert out.index("step 1/2") < out.index("step 2/2") < out.index("promoting")
    now = record()
    assert now.rollout is None and spec_fingerprint(now.spec) != stable
    assert [v.spec_fingerprint for v in now.versions] == [spec_fingerprint(now.spec)]
    steps = [k for k in kinds() if k.startswith("traffic")]
    assert steps[0] == "traffic canary 0 10" and steps[-1] == "traffic canary 1 50"
    assert kinds()[0] == "start" and kinds()[-1] == "promote"
    assert run_cli("plan", "--detailed-exitcode", "-f", str(path)).code == 0


def test_a_failing_candidate_is_rolled_back_within_failure_limit_and_not_retried(tmp_path: Path, mem):
    path = deployed(tmp_path)
    stable = spec_fingerprint(record().spec)
    change(path, deploy="error_rate: 0.2")
    applied = run_cli("apply", "--auto-approve", "-f", str(path))
    assert applied.code == 5, applied.err + applied.out
    errors = [line for line in applied.err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, applied.err
    assert "ROLLED BACK to version" in errors[0], errors
    assert re.search(r"error rate (19|20)[.0-9]*% > max_error_rate 1% \([0-9]+ of [0-9]+ requests answered 5xx\)",
                     errors[0]), errors
    assert "Apply ROLLED BACK" in applied.err
    now = record()
    assert now.rollout is not None and now.rollout.phase == "aborted"
    assert now.rollout.judged <= 2 and now.rollout.passed == 0           # failure_limit 2
    assert "> max_error_rate 1%" in now.rollout.reason
    assert [v.spec_fingerprint for v in now.versions] == [stable]      # the candidate is gone
    assert "traffic canary 1 50" not in kinds()                         # never reached the second step

    # The same candidate is not retried by the next plan or apply: said, with the command that does.
    plan = run_cli("plan", "-f", str(path))
    assert "rolled back earlier" in plan.out and "`mlops rollout retry api`" in plan.out, plan.out
    assert "Warning: service.api: rolled back earlier (analysis failed" in plan.out
    before = list(CALLS)
    again = run_cli("apply", "--auto-approve", "-f", str(path))
    assert again.code == 5 and "apply does not retry it" in again.err, again.err
    assert list(CALLS) == before                                             # nothing was asked of the target

    status = run_cli("rollout", "status", "api", "-f", str(path))
    assert status.code == 0 and "rollout: aborted" in status.out and "reason: analysis failed" in status.out

    # retry runs it again from the first step (and, as it still fails, rolls it back again)
    retried = run_cli("rollout", "retry", "api", "-f", str(path))
    assert retried.code == 5, retried.err + retried.out
    assert kinds()[len(before):][:2] == ["start", "traffic canary 0 10"]


def test_retry_after_a_fix_in_the_target_promotes(tmp_path: Path, mem):
    """A rolled-back candidate whose failure was the target's (not the version's) is promoted on retry."""
    path = deployed(tmp_path, target=", load_rps: 0")     # no load: every interval inconclusive
    change(path, target=", load_rps: 0")
    failed = run_cli("apply", "--auto-approve", "-f", str(path))
    assert failed.code == 5 and "progress_deadline" in failed.err, failed.err
    path.write_text(manifest())                        # load again (a target setting: not part of the version)
    retried = run_cli("rollout", "retry", "api", "-f", str(path))
    assert retried.code == 0, retried.err + retried.out
    assert "retried and promoted" in retried.out
    assert record().rollout is None


def test_pause_keeps_the_candidate_and_promote_or_abort_decide(tmp_path: Path, mem):
    path = deployed(tmp_path, on_failure="pause")
    change(path, deploy="error_rate: 0.2", on_failure="pause")
    applied = run_cli("apply", "--auto-approve", "-f", str(path))
    assert applied.code == 6, applied.err + applied.out
    assert "rollout PAUSED at step 1/2 (10%)" in applied.err and "> max_error_rate 1%" in applied.err
    paused = record().rollout
    assert paused is not None and paused.phase == "paused" and paused.weight == 10
    assert len(record().versions) == 2

    plan = run_cli("plan", "-f", str(path))
    assert "rollout paused at step 1/2 (10%)" in plan.out and "mlops rollout promote|abort|retry api" in plan.out
    before = list(CALLS)
    assert run_cli("apply", "--auto-approve", "-f", str(path)).code == 6
    assert list(CALLS) == before

    promoted = run_cli("rollout", "promote", "api", "-f", str(path))
    assert promoted.code == 0, promoted.err
    assert record().rollout is None and spec_fingerprint(record().spec) == paused.candidate
    assert run_cli("plan", "--detailed-exitcode", "-f", str(path)).code == 0

    # Pause again with a newer bad version, then abort: the stable (just promoted) version serves alone.
    change(path, deploy="error_rate: 0.3", on_failure="pause")
    assert run_cli("apply", "--auto-approve", "-f", str(path)).code == 6
    aborted = run_cli("rollout", "abort", "api", "-f", str(path))
    assert aborted.code == 0, aborted.err
    now = record()
    assert now.rollout.phase == "aborted" and [v.spec_fingerprint for v in now.versions] == [paused.candidate]
    assert run_cli("rollout", "promote", "api", "-f", str(path)).code == 1     # rolled back: retry, not promote


def test_ctrl_c_during_a_hold_rolls_back_with_exit_5(tmp_path: Path, mem):
    path = deployed(tmp_path)
    stable = spec_fingerprint(record().spec)
    change(path, hold="60s")

    def interrupt_once_holding() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            state = next(iter(STATE.values()), {}).get("api")
            if state is not None and state.rollout is not None and state.rollout.judged >= 1:
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.02)

    threading.Thread(target=interrupt_once_holding, daemon=True).start()
    applied = run_cli("apply", "--auto-approve", "-f", str(path))
    assert applied.code == 5, applied.err + applied.out
    assert "cancelled (Ctrl-C or SIGTERM) at step 1/2 (10%)" in applied.err
    now = record()
    assert now.rollout.phase == "aborted" and [v.spec_fingerprint for v in now.versions] == [stable]


def test_an_interrupted_apply_is_continued_from_the_recorded_step(tmp_path: Path, mem):
    path = deployed(tmp_path)
    change(path)
    started = run_cli("apply", "--auto-approve", "--no-wait", "-f", str(path))
    assert started.code == 0, started.err
    assert "leave it at its current step" in started.out
    state = record().rollout
    assert state is not None and state.phase == "canary" and state.step == 0 and state.weight == 10

    # As an apply killed at the second step leaves it: step 2/2 at 50%, three intervals passed.
    (services,) = STATE.values()
    moved = dataclasses.replace(state, step=1, weight=50.0, passed=3, judged=3, updated=time.time())
    services["api"] = dataclasses.replace(services["api"], rollout=moved)
    plan = run_cli("plan", "-f", str(path))
    assert "# (continue rollout step 2/2 (50%), analysis 3/3 passed)" in plan.out, plan.out
    before = len(CALLS)
    applied = run_cli("apply", "--auto-approve", "-f", str(path))
    assert applied.code == 0, applied.err + applied.out
    assert "continuing the rollout" in applied.out and "from step 2/2 (50%), analysis 3/3 passed" in applied.out
    after = kinds()[before:]
    assert after[0] == "start reused" and "start" not in after and "traffic canary 0 10" not in after, after
    assert after[-1] == "promote" and record().rollout is None
    assert "analysis 4: pass" in applied.out                           # the count goes on from the target's


def test_failed_intervals_of_an_interrupted_apply_still_count_toward_failure_limit(tmp_path: Path, mem):
    """The target keeps the failures with the position: a bad candidate cannot escape its failure_limit by
    being interrupted between failed intervals (they were counted from zero again)."""
    path = deployed(tmp_path)
    change(path, deploy="error_rate: 0.2")
    started = run_cli("apply", "--auto-approve", "--no-wait", "-f", str(path))
    assert started.code == 0, started.err
    (services,) = STATE.values()
    state = services["api"].rollout
    failed_once = dataclasses.replace(state, judged=1, failed=1, updated=time.time())   # as a killed apply left it
    services["api"] = dataclasses.replace(services["api"], rollout=failed_once)
    plan = run_cli("plan", "-f", str(path))
    assert "analysis 0/1 passed, 1/2 failed" in plan.out, plan.out
    applied = run_cli("apply", "--auto-approve", "-f", str(path))
    assert applied.code == 5, applied.err + applied.out
    failures = re.findall(r"analysis \d+: fail", applied.out)
    assert len(failures) == 1, applied.out                          # one more failed interval reached the limit
    assert "analysis failed 2 of" in applied.err, applied.err
    assert record().rollout is not None and record().rollout.phase == "aborted" and record().rollout.failed == 2


def test_the_manifest_back_at_the_stable_version_aborts_the_candidate(tmp_path: Path, mem):
    path = deployed(tmp_path)
    stable = spec_fingerprint(record().spec)
    model = (path.parent / "model.txt").read_text()
    change(path)
    assert run_cli("apply", "--auto-approve", "--no-wait", "-f", str(path)).code == 0
    (path.parent / "model.txt").write_text(model)
    plan = run_cli("plan", "-f", str(path))
    assert "abort the rollout of" in plan.out and "the manifest asks for the stable version" in plan.out, plan.out
    applied = run_cli("apply", "--auto-approve", "-f", str(path))
    assert applied.code == 0, applied.err + applied.out
    assert [v.spec_fingerprint for v in record().versions] == [stable] and record().rollout.phase == "aborted"
    assert run_cli("plan", "--detailed-exitcode", "-f", str(path)).code == 0


def test_a_third_version_replaces_a_running_candidate(tmp_path: Path, mem):
    path = deployed(tmp_path)
    change(path)
    assert run_cli("apply", "--auto-approve", "--no-wait", "-f", str(path)).code == 0
    first = record().rollout.candidate
    change(path)
    plan = run_cli("plan", "-f", str(path))
    assert f"abort the rollout of {first[:12]} at step 1/2 (10%)" in plan.out, plan.out
    applied = run_cli("apply", "--auto-approve", "-f", str(path))
    assert applied.code == 0, applied.err + applied.out
    assert record().rollout is None and spec_fingerprint(record().spec) != first


def test_without_metrics_the_rollout_samples_the_service(tmp_path: Path, mem):
    path = deployed(tmp_path, target=", metrics: false")
    change(path, target=", metrics: false", deploy="error_rate: 0.5")
    applied = run_cli("apply", "--auto-approve", "-f", str(path))
    assert applied.code == 5, applied.err + applied.out     # 10% of answers from a version failing half of them
    assert "max_error_rate 1%" in applied.err
    change(path, target=", metrics: false")
    good = run_cli("apply", "--auto-approve", "-f", str(path))
    assert good.code == 0, good.err + good.out
    assert record().rollout is None


def test_a_failed_candidate_version_fails_the_interval(tmp_path: Path, mem):
    path = deployed(tmp_path)
    change(path, deploy="state: Failed")
    applied = run_cli("apply", "--auto-approve", "-f", str(path))
    assert applied.code == 5, applied.err + applied.out
    assert "is Failed" in applied.err


def test_rollout_verbs_say_in_one_line_when_there_is_nothing_to_do(tmp_path: Path, mem):
    path = deployed(tmp_path)
    for verb in ("promote", "abort", "retry"):
        result = run_cli("rollout", verb, "api", "-f", str(path))
        assert result.code == 1 and result.err.count("\n") == 1 and "no rollout on target 'mem'" in result.err
    missing = run_cli("rollout", "abort", "nope", "-f", str(path))
    assert missing.code == 1 and "not deployed" in missing.err


def test_status_shows_where_the_rollout_stands(tmp_path: Path, mem):
    path = deployed(tmp_path)
    change(path)
    assert run_cli("apply", "--auto-approve", "--no-wait", "-f", str(path)).code == 0
    status = run_cli("rollout", "status", "api", "-f", str(path))
    assert status.code == 0, status.err
    assert "rollout: canary at step 1/2 (10%), analysis 0/0 passed" in status.out, status.out
    assert "weight 10%, mirror 0%" in status.out and " 90%, " in status.out
    assert isinstance(record().rollout, RolloutState)
    listed = run_cli("status", "-f", str(path))
    assert "api: rollout canary at step 1/2 (10%), analysis 0/0 passed, candidate " in listed.out, listed.out


def test_blue_green_on_a_splitting_target_is_one_step_to_100_then_promote(tmp_path: Path, mem):
    blue = "      strategy: blue_green\n      steps: [{{weight: 100, hold: {hold}}}]"
    path = deployed(tmp_path, rollout=blue)
    change(path, rollout=blue)
    plan = run_cli("plan", "-f", str(path))
    assert "does not set rollout weights" not in plan.out and "rollout blue_green 100% (bake 0.2s)" in plan.out
    applied = run_cli("apply", "--auto-approve", "-f", str(path))
    assert applied.code == 0, applied.err + applied.out
    assert "step 1/1: the candidate answers 100% of requests" in applied.out
    assert "bake window" not in applied.out                  # the driver, not the bake window
    assert [k for k in kinds() if k.startswith("traffic")][0] == "traffic canary 0 100"
    assert kinds()[-1] == "promote" and record().rollout is None


def test_shadow_mirrors_then_promotes_and_a_bad_candidate_is_caught_while_mirrored(tmp_path: Path, mem):
    shadow = "      strategy: shadow\n      mirror: {{percent: 20, hold: {hold}}}"
    path = deployed(tmp_path, rollout=shadow)
    change(path, rollout=shadow)
    applied = run_cli("apply", "--auto-approve", "-f", str(path))
    assert applied.code == 0, applied.err + applied.out
    assert "mirror phase: 20% of requests copied to the candidate" in applied.out
    traffic = [k for k in kinds() if k.startswith("traffic")]
    assert traffic[0] == "traffic mirror -1 0" and all(" mirror " in k for k in traffic)   # never a weight
    assert record().rollout is None
    change(path, rollout=shadow, deploy="error_rate: 0.2")
    failed = run_cli("apply", "--auto-approve", "-f", str(path))
    assert failed.code == 5 and "max_error_rate 1%" in failed.err, failed.err


def test_a_candidate_that_is_not_ready_within_the_deadline_is_rolled_back(tmp_path: Path, mem):
    path = deployed(tmp_path, deadline="0.5s")
    stable = spec_fingerprint(record().spec)
    change(path, deploy="slow_s: 30", deadline="0.5s")
    started = time.monotonic()
    applied = run_cli("apply", "--auto-approve", "-f", str(path))
    assert applied.code == 5, applied.err + applied.out
    assert "was not ready within progress_deadline 0.5s" in applied.err
    assert time.monotonic() - started < 25                     # did not wait for the slow start
    assert [v.spec_fingerprint for v in record().versions] == [stable]


def test_reconcile_never_moves_a_rolled_back_candidate(tmp_path: Path, mem):
    path = deployed(tmp_path)
    change(path, deploy="error_rate: 0.2")
    assert run_cli("apply", "--auto-approve", "-f", str(path)).code == 5
    before = list(CALLS)
    result = run_cli("reconcile", "--once", "--mode", "sync", "-f", str(path))
    assert "rolled back earlier" in result.out + result.err, result.out + result.err
    assert list(CALLS) == before and record().rollout.phase == "aborted"


def test_unreadable_metrics_make_an_interval_inconclusive_not_a_failure(tmp_path: Path, mem):
    path = deployed(tmp_path, target=", metrics_fail_every: 3")
    change(path, target=", metrics_fail_every: 3")
    applied = run_cli("apply", "--auto-approve", "-f", str(path))
    assert applied.code == 0, applied.err + applied.out
    assert "inconclusive: cannot read the metrics: service.api: metrics: HTTP 503" in applied.out, applied.out
    assert record().rollout is None


def test_rollout_verbs_on_a_target_that_cannot_split_say_so_before_reading_it(tmp_path: Path, mem):
    text = manifest().replace("  mem: {provider: memory}", "  mem: {provider: memory}\n  cloud: {provider: aci, "
                              "subscription_id: 00000000-0000-0000-0000-000000000000, resource_group: rg, "
                              "location: westeurope, registry: 127.0.0.1:9}").replace("target: mem", "target: cloud")
    text = text.replace("strategy: canary\n      steps: [{weight: 10, hold: 0.2s}, {weight: 50, hold: 0.2s}]",
                        "strategy: blue_green\n      steps: [{weight: 100, hold: 0.2s}]")
    path = make_project(tmp_path, text)
    result = run_cli("rollout", "promote", "api", "-f", str(path))
    assert result.code == 1 and result.err.count("\n") == 1, result.err
    assert "target 'cloud'" in result.err and "cannot split traffic" in result.err, result.err


RUNNER = """\
import sys
sys.path.insert(0, {tests!r})
from memory_provider import MemoryProvider
from providers import registry
registry.register("memory", MemoryProvider)
from planner.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_an_apply_killed_with_sigkill_mid_step_is_continued_by_the_next(tmp_path: Path, mem):
    """A real kill -9 of a real `mlops apply` process; the records live in a file the next apply reads."""
    import subprocess
    import sys

    from memory_provider import _Records

    slow = "      strategy: canary\n      steps: [{{weight: 10, hold: 0.3s}}, {{weight: 50, hold: {hold}}}]"
    path = deployed(tmp_path, target=", persist: true", rollout=slow, hold="3s")
    stable = spec_fingerprint(record().spec)
    change(path, target=", persist: true", rollout=slow, hold="3s")
    records = next(tmp_path.rglob("memory-mem.pickle"))
    runner = tmp_path / "runner.py"
    runner.write_text(RUNNER.format(tests=str(Path(__file__).resolve().parent.parent)))
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    child = subprocess.Popen([sys.executable, str(runner), "apply", "--auto-approve", "-f", str(path)],
                             cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = _Records.load(records)["api"].rollout
            if state is not None and state.step == 1 and state.judged >= 5:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the apply never reached the second step")
        child.kill()                                          # SIGKILL: no clean-up of any kind
    finally:
        child.wait(30)
    left = _Records.load(records)["api"]
    assert left.rollout.phase == "canary" and left.rollout.step == 1 and len(left.versions) == 2

    plan = run_cli("plan", "-f", str(path))
    assert "# (continue rollout step 2/2 (50%), analysis " in plan.out, plan.out
    CALLS.clear()
    applied = run_cli("apply", "--auto-approve", "-f", str(path))
    assert applied.code == 0, applied.err + applied.out
    assert kinds()[0] == "start reused" and "traffic canary 0 10" not in kinds() and kinds()[-1] == "promote"
    now = _Records.load(records)["api"]
    assert now.rollout is None and [v.spec_fingerprint for v in now.versions] == [spec_fingerprint(now.spec)]
    assert spec_fingerprint(now.spec) != stable                # one version left: the candidate, promoted


def test_a_running_candidate_without_any_policy_left_is_promoted_as_it_stands(tmp_path: Path, mem):
    path = deployed(tmp_path)
    change(path)
    assert run_cli("apply", "--auto-approve", "--no-wait", "-f", str(path)).code == 0
    (services,) = STATE.values()
    services["api"] = dataclasses.replace(services["api"], rollout=dataclasses.replace(record().rollout, policy={}))
    path.write_text(manifest().split("    rollout:\n")[0])        # the manifest drops its rollout block
    applied = run_cli("apply", "--auto-approve", "-f", str(path))
    assert applied.code == 0, applied.err + applied.out
    assert kinds()[-1] == "promote" and record().rollout is None and len(record().versions) == 1


def test_the_status_page_detail_shows_the_rollout_position(tmp_path: Path, mem):
    from planner.reconcile import Options, Reconciler
    from planner.ui.data import service_detail

    path = deployed(tmp_path)
    change(path)
    assert run_cli("apply", "--auto-approve", "--no-wait", "-f", str(path)).code == 0
    detail = service_detail(Reconciler(path, Options()).observe(), "api")
    assert detail["live"]["rollout"]["position"] == "step 1/2 (10%), analysis 0/0 passed"
    assert detail["live"]["rollout"]["phase"] == "canary"
    assert any("continue rollout step 1/2 (10%)" in line for line in detail["plan"])
