"""Edge cases of the rollout driver found by review, each on a small scripted target (no engine).

The target here answers the ``SplitsTraffic`` calls and scripted metrics; what is checked is the
driver's decision: a 100 % step whose stable version has no instance left, a rollout resumed long
after ``--no-wait``, a step resumed after an interrupted ``set_traffic``, pods missing from a scrape,
a damaged policy kept on the target, and a failure reason that quotes a secret.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import pytest

from planner.core.addresses import Address
from planner.core.events import Events
from planner.core.redact import REDACTOR
from planner.core.resources import FAILED, HEALTHY, Health, Live, Resource, RolloutState, Version, spec_fingerprint
from planner.rollout.analysis import VersionStats, delta_instances, judge, parse_instances
from planner.rollout.bake import RolledBack
from planner.rollout.driver import Driver
from planner.rollout.resume import position
from planner.rollout.spec import kept, parse

STABLE, CANDIDATE = {"v": 1}, {"v": 2}
S, C = spec_fingerprint(STABLE), spec_fingerprint(CANDIDATE)
API = Address("service", "api")


def policy(block: dict):
    found, problems = parse(block)
    assert not problems, problems
    return found


class Scripted:
    """A target that splits traffic; ``scrape(version, weight)`` scripts its metrics text (None: none)."""

    def __init__(self, scrape: Callable[[str, float], str | None]):
        self.scrape, self.weight, self.calls = scrape, 0.0, []
        self.aborted: RolloutState | None = None

    def live(self, state=None) -> Live:
        return Live(API, STABLE, HEALTHY, target="t", rollout=state,
                    versions=(Version("a", S, 1 - self.weight / 100), Version("b", C, self.weight / 100)))

    def start_candidate(self, desired, live, state, events):
        self.calls.append("start")
        return self.live(state)

    def set_traffic(self, live, state, events):
        self.calls.append(f"traffic {state.step} {state.weight:g}")
        self.weight = state.weight
        return self.live(state)

    def promote(self, live, desired, events):
        self.calls.append("promote")
        return Live(API, CANDIDATE, HEALTHY, target="t", versions=(Version("b", C, 1.0),))

    def abort(self, live, state, events):
        self.calls.append("abort")
        self.aborted = state
        return self.live(state)

    def read(self):
        return [self.live()]

    def metrics(self, live, version):
        self.calls.append("scrape")
        return self.scrape(version, self.weight)


def _counter(per_scrape: int, errors: float = 0.0) -> Callable[[str, float], str | None]:
    seen: dict[str, int] = {}

    def scrape(version: str, weight: float) -> str | None:
        seen[version] = seen.get(version, 0) + per_scrape
        bad = int(seen[version] * errors)
        return (f'mlops_requests_total{{version="{version}",code="2xx"}} {seen[version] - bad}\n'
                f'mlops_requests_total{{version="{version}",code="5xx"}} {bad}\n')
    return scrape


def _run(target: Scripted, block: dict, resume: RolloutState | None = None) -> tuple[Live | None, list[str], str]:
    lines: list[str] = []
    desired = Resource(API, CANDIDATE, target="t", inputs={})
    driver = Driver(target, desired, target.live(resume), policy(block), Events(lines.append))
    try:
        return driver.run(resume), lines, ""
    except RolledBack as exc:
        return None, lines, str(exc)


ANALYSIS = {"interval": "0.05s", "min_requests": 20, "max_error_rate": "1%"}


def test_a_100_percent_step_without_any_stable_instance_is_judged_on_the_candidate_alone():
    """Kubernetes at weight 100 runs no stable pod, so its metrics answer None: the candidate was rolled back
    (sampled without a sample_request, or 'stopped reporting metrics' until the deadline)."""
    healthy = _counter(50)

    def scrape(version, weight):
        return None if version == S and weight >= 100 else healthy(version, weight)

    target = Scripted(scrape)
    live, lines, failure = _run(target, {"strategy": "blue_green", "steps": [{"weight": 100, "hold": "0.15s"}],
                                         "analysis": ANALYSIS, "progress_deadline": "2s"})
    assert not failure, "\n".join(lines)
    assert target.calls[-1] == "promote" and live is not None and live.spec == CANDIDATE


def test_a_rollout_resumed_long_after_its_step_began_gets_its_progress_deadline_again():
    """The hold counts from when the step began; the deadline did too, so a quiet service resumed an hour
    after `--no-wait` had one interval to be judged before it was rolled back."""
    quiet = {"n": 0}
    steady = _counter(50)

    def scrape(version, weight):
        quiet["n"] += 1
        return steady(version, weight) if quiet["n"] > 6 else \
            f'mlops_requests_total{{version="{version}",code="2xx"}} {quiet["n"]}\n'   # too few requests at first

    block = {"strategy": "canary", "steps": [{"weight": 10, "hold": "0.1s"}], "analysis": ANALYSIS,
             "progress_deadline": "1s"}
    hour_ago = RolloutState(C, S, "canary", step=0, weight=10.0, policy=policy(block).to_json(),
                            updated=time.time() - 3600)
    target = Scripted(scrape)
    live, lines, failure = _run(target, block, resume=hour_ago)
    assert not failure, "\n".join(lines)
    assert any("inconclusive" in line for line in lines) and target.calls[-1] == "promote"


def test_a_resumed_step_is_set_again_on_the_target():
    """An apply killed inside set_traffic can leave the target between two steps: the resumed step is set again."""
    block = {"strategy": "canary", "steps": [{"weight": 10, "hold": "0.05s"}, {"weight": 50, "hold": "0.05s"}],
             "analysis": ANALYSIS}
    at_step_2 = RolloutState(C, S, "canary", step=1, weight=50.0, policy=policy(block).to_json(), updated=time.time())
    target = Scripted(_counter(50))
    _, lines, failure = _run(target, block, resume=at_step_2)
    assert not failure, "\n".join(lines)
    assert target.calls[:3] == ["start", "traffic 1 50", "scrape"], target.calls   # set before it is measured
    assert target.calls[-1] == "promote"


def test_pods_missing_from_a_scrape_do_not_hide_a_failing_candidate():
    """Two candidate pods with 5000 good answers each; this interval pod a answered 10 good and 10 failed and
    pod b's scrape timed out. Summed, the drop read as a reset: 'error rate 0.2 % over 5020 requests', a pass."""
    before = parse_instances('mlops_requests_total{version="c",code="2xx",instance="a"} 5000\n'
                             'mlops_requests_total{version="c",code="2xx",instance="b"} 5000\n')["c"]
    after = parse_instances('mlops_requests_total{version="c",code="2xx",instance="a"} 5010\n'
                            'mlops_requests_total{version="c",code="5xx",instance="a"} 10\n')["c"]
    figures = delta_instances(before, after)
    assert figures.codes == {"2xx": 10, "5xx": 10}
    verdict = judge(policy({"strategy": "canary", "steps": [{"weight": 10, "hold": 1}],
                            "analysis": {**ANALYSIS, "min_requests": 10}}).analysis, figures, None)
    assert verdict.failed and "50%" in verdict.reason, verdict
    back = parse_instances('mlops_requests_total{version="c",code="2xx",instance="a"} 5010\n'
                           'mlops_requests_total{version="c",code="5xx",instance="a"} 20\n'
                           'mlops_requests_total{version="c",code="2xx",instance="b"} 5000\n')["c"]
    assert delta_instances(after, back).codes == {"2xx": 0, "5xx": 10}     # b back: its history is not counted
    restarted = parse_instances('mlops_requests_total{version="c",code="2xx",instance="a"} 3\n')["c"]
    assert delta_instances(after, restarted).codes == {"2xx": 3}             # a restarted: counts from zero
    assert delta_instances({}, {"": VersionStats({"2xx": 7})}).codes == {"2xx": 7}   # one unnamed instance: new


@pytest.mark.parametrize("damaged", [{}, {"steps": []}, {"strategy": "canary", "steps": [{"weight": "x"}]},
                                     {"strategy": "canary", "analysis": {"interval": 1}},
                                     {"strategy": "canary", "steps": [{"weight": float("nan"), "hold": 1}]}])
def test_a_damaged_policy_kept_on_the_target_never_crashes_a_plan(damaged):
    state = RolloutState(C, S, "canary", step=0, weight=10.0, passed=1, judged=2, policy=damaged)
    assert kept(damaged) is None
    assert position(state) == "10%"


def test_a_failure_reason_quoting_a_secret_is_masked_before_the_target_keeps_it():
    """The reason is written to an annotation, a label or a file; a crashed version's health message can
    quote its last log lines."""
    REDACTOR.add("hunter2-very-secret-value")
    try:
        target = Scripted(_counter(50))
        crashed = Health(FAILED, "KeyError: password=hunter2-very-secret-value")
        target.read = lambda: [dataclasses.replace(target.live(), versions=(Version("a", S, 0.9),   # type: ignore
                                                                            Version("b", C, 0.1, crashed)))]
        _, _, failure = _run(target, {"strategy": "canary", "steps": [{"weight": 10, "hold": "1s"}],
                                      "analysis": {**ANALYSIS, "failure_limit": 1}})
        assert failure and target.aborted is not None
        assert "KeyError: password=(sensitive)" in target.aborted.reason, target.aborted.reason
        assert "hunter2" not in target.aborted.reason and "hunter2" not in failure
    finally:
        REDACTOR.clear()


def test_a_rollout_with_no_traffic_at_all_says_so_when_it_gives_up():
    """A quiet service never gives the analysis min_requests: rolled back at the deadline (never promoted on
    no data), and the line says why in words, not only as 'inconclusive' counts."""
    target = Scripted(lambda version, weight: f'mlops_requests_total{{version="{version}",code="2xx"}} 0\n')
    _, _, failure = _run(target, {"strategy": "canary", "steps": [{"weight": 10, "hold": "0.05s"}],
                                  "analysis": ANALYSIS, "progress_deadline": "0.3s"})
    assert "no interval of step 1/1 passed within progress_deadline 0.3s" in failure, failure
    assert "no request reached the candidate in any interval: the service had no traffic" in failure, failure
    assert target.calls[-1] == "abort"
