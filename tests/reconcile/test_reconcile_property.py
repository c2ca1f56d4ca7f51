"""Properties of reconcile on the in-memory target, over random histories of crashes, manifest
edits and cycles: heal restores exactly what was deployed and never deploys a new desired state;
sync converges; observe changes nothing. Plus the backoff's shape."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from memory_provider import STATE, MemoryProvider
from support import make_project, run_cli

from planner.project import Project
from planner.reconcile import Options, Reconciler
from planner.reconcile_state import Backoff
from providers import registry

NAMES = ("a-api", "b-api", "c-api")
MANIFEST = "version: 1\nproject: prop\ntargets:\n  mem: {provider: memory}\nmodels:\n  m: {path: model.txt}\n" \
           "environments:\n  e: {python: \"3.11\"}\nservices:\n" + "".join(
               f"  {n}: {{models: [m], environment: e, source_dir: src, entry_script: score.py, "
               f"deploy: {{port: {8000 + i}}}}}\n" for i, n in enumerate(NAMES))

steps = st.lists(st.one_of(
    st.tuples(st.just("kill"), st.sampled_from(NAMES)),
    st.tuples(st.just("edit"), st.sampled_from(NAMES)),
    st.tuples(st.just("cycle"), st.sampled_from(("observe", "heal", "sync")))), min_size=1, max_size=8)


@settings(max_examples=12, deadline=None)
@given(history=steps)
def test_heal_restores_what_was_deployed_and_never_deploys_a_new_desired_state(history):
    registry.register("memory", MemoryProvider)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            manifest = make_project(Path(tmp), MANIFEST)
            assert run_cli("apply", "--auto-approve", "-f", str(manifest)).code == 0
            provider = Project.load(manifest).providers["mem"]
            deployed = {n: 8000 + i for i, n in enumerate(NAMES)}     # the port each one runs with
            wanted = dict(deployed)
            for op, arg in history:
                if op == "kill":
                    provider.kill(arg)
                elif op == "edit":
                    wanted[arg] += 100
                    text = manifest.read_text()
                    manifest.write_text(re.sub(rf"(  {arg}: .*port: )\d+", rf"\g<1>{wanted[arg]}", text))
                else:
                    before = {n: (lv.status, lv.spec["deploy"]["port"]) for n, lv in provider._services.items()}
                    Reconciler(manifest, Options(arg, backoff=Backoff(0, 1, 0))).cycle()
                    after = {n: (lv.status, lv.spec["deploy"]["port"]) for n, lv in provider._services.items()}
                    if arg == "observe":
                        assert after == before
                    elif arg == "heal":
                        for n in NAMES:
                            assert after[n][1] == deployed[n]          # never a new desired port
                            if deployed[n] == wanted[n]:
                                assert after[n][0] == "Healthy"       # what drifted is restored
                            else:
                                assert after[n] == before[n]          # a pending change is left alone
                    else:
                        assert after == {n: ("Healthy", wanted[n]) for n in NAMES}
                        deployed = dict(wanted)
    finally:
        registry.unregister("memory")
        STATE.clear()


@given(base=st.floats(0, 100), factor=st.floats(1, 5), cap=st.floats(0, 1000), n=st.integers(0, 40))
def test_backoff_grows_never_passes_its_cap_and_is_zero_without_failures(base, factor, cap, n):
    b = Backoff(base, factor, cap)
    assert b.delay(0) == 0
    assert 0 <= b.delay(n) <= cap
    assert b.delay(n + 1) >= b.delay(n)
