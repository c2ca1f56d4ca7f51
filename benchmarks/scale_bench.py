"""Cost at every size: start-up, validate, no-op plan, destroy graph and apply scheduling.

Generates manifests of 10 … 10,000 services (sharing 10 models, 5 environments and one source
folder) on the in-memory test target, and measures whole processes (a fresh interpreter per run,
as a user or CI pays it) for start-up, validate and plan, and in-process timings for the graph and
the scheduler. The baseline is the code at BASE (default: the commit before this work), extracted
with `git archive` and run the same way in the same run, so ratios compare like with like.

    python benchmarks/scale_bench.py [--sizes 10,100,1000,10000] [--runs 3] [--base cf90e3f]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

RUNNER = r'''
import os, pickle, sys, time
code_root = sys.argv[1]
sys.path[:0] = [os.path.join(code_root, "tests"), code_root]
if os.environ.get("BENCH_ONLY_LOCAL"):
    # The baseline as it shipped: only its own `local` kind (the installed entry points name
    # kinds the baseline's code does not have, and it loaded every entry point eagerly).
    import importlib.metadata as md
    _ep = md.EntryPoint(name="local", value="providers.local:LocalProvider", group="mlops.providers")
    _real = md.entry_points
    md.entry_points = lambda **kw: md.EntryPoints([_ep]) if kw.get("group") == "mlops.providers" else _real(**kw)
started = time.perf_counter()
import memory_provider
from providers import registry
registry.register("memory", memory_provider.MemoryProvider)
state = os.environ.get("BENCH_STATE")
if state and os.path.exists(state):
    with open(state, "rb") as fh:
        memory_provider.STATE.update(pickle.load(fh))
from planner.cli import main
import contextlib, io
with contextlib.redirect_stdout(io.StringIO()):
    code = main(sys.argv[2:])
if os.environ.get("BENCH_SAVE"):
    with open(state, "wb") as fh:
        pickle.dump(dict(memory_provider.STATE), fh)
sys.exit(code if code in (0, 2) else code)
'''

INPROC = r'''
import os, sys, time, json
code_root = sys.argv[1]
sys.path[:0] = [os.path.join(code_root, "tests"), code_root]
from planner.addresses import Address
from planner.plan import Action, Change
from planner.graph import edges
n = int(sys.argv[2])
models = [f"m{i}" for i in range(10)]
changes = [Change(Address("model", m), Action.DELETE, {"path": "x"}, None) for m in models]
changes += [Change(Address("environment", f"e{i}"), Action.DELETE, {"python": "3.11"}, None) for i in range(5)]
for i in range(n):
    spec = {"models": [f"{models[i % 10]}:1@abc"], "environment": f"e{i % 5}@abc"}
    changes.append(Change(Address("service", f"s{i:05d}"), Action.DELETE, spec, None))
started = time.perf_counter(); waits = edges(changes); graph = time.perf_counter() - started
# Scheduling 10k creates with no real work: the apply loop itself.
import threading
from planner import apply as applymod
creates = [Change(Address("service", f"s{i:05d}"), Action.CREATE, None, {"models": [], "environment": ""})
           for i in range(n)]
class P: actionable = creates
applymod._run = lambda project, change, desired, live, notify, *rest: applymod.Outcome(change, True, 0.0)
started = time.perf_counter()
applymod.apply_plan(None, P(), {}, {}, parallelism=8)
sched = time.perf_counter() - started
print(json.dumps({"graph": graph, "schedule": sched}))
'''


def manifest(n: int) -> str:
    lines = ["version: 1", "project: scale", "targets:", "  mem: {provider: memory}", "models:"]
    lines += [f"  m{i}: {{path: models/m{i}.txt}}" for i in range(10)]
    lines += ["environments:"] + [f'  e{i}: {{python: "3.11", pip: [numpy]}}' for i in range(5)]
    lines += ["services:"]
    lines += [f"  s{i:05d}: {{models: [m{i % 10}], environment: e{i % 5}, source_dir: src, entry_script: score.py, "
              f"sample_request: sample.json, deploy: {{replicas: 1}}}}" for i in range(n)]
    return "\n".join(lines) + "\n"


def project(root: Path, n: int) -> Path:
    (root / "src").mkdir(parents=True, exist_ok=True)
    (root / "models").mkdir(exist_ok=True)
    for i in range(20):
        (root / "src" / f"mod{i}.py").write_text(f"X = {i}\n")
    (root / "src" / "score.py").write_text("def init(): pass\ndef run(d): return d\n")
    (root / "sample.json").write_text('{"data": [1]}\n')
    for i in range(10):
        (root / "models" / f"m{i}.txt").write_text(f"model {i}\n")
    path = root / "ml.yaml"
    path.write_text(manifest(n))
    return path


def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> float:
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if proc.returncode not in (0, 2):
        raise SystemExit(f"{' '.join(cmd[3:])} failed ({proc.returncode}): {proc.stderr[-500:]}")
    return elapsed


def extract(base: str, into: Path) -> Path:
    data = subprocess.run(["git", "-C", str(ROOT), "archive", base], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    return into


def measure(code_root: Path, sizes: list[int], runs: int, work: Path,
            env_extra: dict[str, str], graph_max: int = 10 ** 9) -> dict[str, dict[int, float]]:
    runner = work / "runner.py"
    runner.write_text(RUNNER)
    inproc = work / "inproc.py"
    inproc.write_text(INPROC)
    compiled(code_root)
    out: dict[str, dict[int, float]] = {k: {} for k in ("validate", "plan", "plan_json", "graph", "schedule")}
    # 10,000 services are 1.3 MB: over the default 512 KiB a hostile pull request is held to.
    env = {**os.environ, "PYTHONPATH": str(code_root), "MLOPS_CACHE_DIR": str(work / "cache"),
           "MLOPS_MAX_MANIFEST_KIB": "4096", **env_extra}
    for n in sizes:
        root = work / f"p{n}-{code_root.name}"
        path = project(root, n)
        state = root / "state.pickle"
        run = [sys.executable, str(runner), str(code_root)]
        subprocess.run([*run, "apply", "--auto-approve", "-f", str(path)], cwd=root, capture_output=True,
                       env={**env, "BENCH_STATE": str(state), "BENCH_SAVE": "1"}, check=True)
        benv = {**env, "BENCH_STATE": str(state)}
        out["validate"][n] = statistics.median(timed([*run, "validate", "-f", str(path)], benv, root)
                                               for _ in range(runs))
        out["plan"][n] = statistics.median(timed([*run, "plan", "--detailed-exitcode", "-f", str(path)], benv, root)
                                           for _ in range(runs))
        out["plan_json"][n] = statistics.median(timed([*run, "plan", "--json", "-f", str(path)], benv, root)
                                                for _ in range(runs))
        if n > graph_max:
            continue   # the baseline's quadratic graph: about 8 minutes a run at 10,000
        figures = [json.loads(subprocess.run([sys.executable, str(inproc), str(code_root), str(n)], env=env,
                                             capture_output=True, text=True, check=True).stdout)
                   for _ in range(runs)]
        out["graph"][n] = statistics.median(f["graph"] for f in figures)
        out["schedule"][n] = statistics.median(f["schedule"] for f in figures)
        print(f"  measured {n} services ({code_root.name})", file=sys.stderr, flush=True)
    return out


def compiled(code_root: Path) -> None:
    """Byte-compile a tree as `pip install` does, so that neither side pays compiling in every run
    (with PYTHONDONTWRITEBYTECODE set, as on these machines, Python would never keep its .pyc)."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", "planner", "providers", "tests"], cwd=code_root,
                   capture_output=True, check=False)


def startup(code_root: Path, runs: int, work: Path, env_extra: dict[str, str]) -> dict[str, float]:
    compiled(code_root)
    env = {**os.environ, "PYTHONPATH": str(code_root), "MLOPS_CACHE_DIR": str(work / "cache"), **env_extra}
    bare = statistics.median(timed([sys.executable, "-c", "pass"], env, work) for _ in range(runs * 3))
    cli = [sys.executable, "-c", "import sys; from planner.cli import main; sys.exit(main(sys.argv[1:]))"]
    if env_extra:   # the baseline: through the runner, which gives it its own entry points
        runner = work / "runner.py"
        runner.write_text(RUNNER)
        cli = [sys.executable, str(runner), str(code_root)]
    helps = statistics.median(timed([*cli, "--help"], env, code_root) for _ in range(runs * 3))
    example = statistics.median(timed([*cli, "validate", "-f", str(code_root / "ml.yaml.example")], env, code_root)
                                for _ in range(runs * 3))
    return {"bare": bare, "help": helps, "validate_example": example}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10,100,1000,10000")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--base", default="cf90e3f", help="the baseline commit (today's code before this work)")
    parser.add_argument("--no-base", action="store_true", help="measure only the current code")
    parser.add_argument("--base-graph-max", type=int, default=4000,
                        help="largest size for the baseline's graph and scheduler (quadratic: 8 min at 10,000)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        results = {"mlops": (startup(ROOT, args.runs, work, {}), measure(ROOT, sizes, args.runs, work, {}))}
        if not args.no_base:
            base = extract(args.base, work / "base")
            only_local = {"BENCH_ONLY_LOCAL": "1"}
            results["baseline"] = (startup(base, args.runs, work, only_local),
                                   measure(base, sizes, args.runs, work, only_local, args.base_graph_max))
    print(f"median of {args.runs} (start-up: of {args.runs * 3}); whole processes except graph/schedule")
    for name, (start, _) in results.items():
        print(f"{name:>9}: python -c pass {start['bare'] * 1000:6.0f} ms | mlops --help {start['help'] * 1000:6.0f} ms "
              f"({start['help'] / start['bare']:.1f}x) | validate example {start['validate_example'] * 1000:6.0f} ms "
              f"({start['validate_example'] / start['bare']:.1f}x)")
    print("ms/svc: the whole time over the services; added ms/svc: what each service added since the size before")
    print(f"{'figure':>10} {'services':>9} "
          + " ".join(f"{n + ' s':>12} {n + ' ms/svc':>12} {'added ms/svc':>12}" for n in results)
          + ("   ratio" if len(results) > 1 else ""))
    for figure in ("validate", "plan", "plan_json", "graph", "schedule"):
        for i, n in enumerate(sizes):
            cells = []
            for name in results:
                if n not in results[name][1][figure]:
                    cells.append(f"{'skipped':>12} {'':>12} {'':>12}")
                    continue
                t = results[name][1][figure][n]
                added = ""
                if i and sizes[i - 1] in results[name][1][figure]:
                    before = sizes[i - 1]
                    added = f"{(t - results[name][1][figure][before]) / (n - before) * 1000:.3f}"
                cells.append(f"{t:>12.3f} {t / n * 1000:>12.3f} {added:>12}")
            ratio = ""
            if len(results) > 1 and all(n in results[k][1][figure] for k in results):
                ratio = f"  {results['baseline'][1][figure][n] / results['mlops'][1][figure][n]:6.1f}x"
            print(f"{figure:>10} {n:>9} " + " ".join(cells) + ratio)


if __name__ == "__main__":
    main()
