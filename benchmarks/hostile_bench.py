"""How long `mlops validate` takes on the largest manifests it accepts, and how fast it refuses
hostile ones (issue 9: validate of the largest accepted manifest must stay under 2 s).

The largest accepted manifests are built up to the limits the loader enforces: one just under
MAX_MANIFEST_BYTES of real services (each with its own model, environment, source folder and
sample request), and one whose aliases expand to just under MAX_VALUES values. The hostile ones
are a billion-laughs document, a 20 MB file and 5,000 levels of nesting. Each figure is the
median of several in-process runs of the `validate` command (the CLI's own entry point).

    python benchmarks/hostile_bench.py [--runs 5]

Figures for the chosen defaults (issue 22, item 23) are in the README; each line also prints the
median CPU time, which a busy shared machine distorts far less than wall time.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from planner.cli import main as cli  # noqa: E402
from planner.manifest import max_manifest_bytes  # noqa: E402
from planner.yamlpos import max_values  # noqa: E402

HEAD = "version: 1\nproject: bench\ntargets:\n  dev: {provider: local}\n"
SERVICE = """\
  svc-{i:05d}:
    models: [m{i:05d}]
    environment: e{i:05d}
    source_dir: examples/diabetes/src
    entry_script: score.py
    sample_request: examples/diabetes/sample-request.json
    target: dev
    deploy: {{port: auto, auth: key, workers: 1, environment_variables: {{FEATURE: "on"}}}}
"""
MODEL = "  m{i:05d}: {{path: examples/diabetes/model.pkl, description: model {i}, tags: {{area: health}}}}\n"
ENVIRONMENT = '  e{i:05d}: {{python: "3.11", pip: [scikit-learn==1.9.1, joblib>=1.3]}}\n'


def by_bytes(limit: int) -> str:
    """As many services (each with its own model and environment) as fit in ``limit`` bytes."""
    n = 1
    while True:
        text = _services(n * 2)
        if len(text.encode()) > limit:
            break
        n *= 2
    lo, hi = n, n * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if len(_services(mid).encode()) <= limit else (lo, mid)
    return _services(lo)


def _services(n: int) -> str:
    return (HEAD + "models:\n" + "".join(MODEL.format(i=i) for i in range(n))
            + "environments:\n" + "".join(ENVIRONMENT.format(i=i) for i in range(n))
            + "services:\n" + "".join(SERVICE.format(i=i) for i in range(n)))


def by_values(limit: int) -> str:
    """Services sharing one anchored mapping of environment variables, expanding to ~``limit`` values."""
    variables = 200
    services = (limit - 1000) // (variables + 12)
    anchor = "{" + ", ".join(f"VAR_{j}: value-{j}" for j in range(variables)) + "}"
    text = [HEAD, "models:\n  m: {path: examples/diabetes/model.pkl}\n",
            'environments:\n  e: {python: "3.11", pip: [joblib]}\nservices:\n']
    for i in range(services):
        variables_yaml = f"&vars {anchor}" if i == 0 else "*vars"
        text.append(f"  svc-{i:05d}:\n    models: [m]\n    environment: e\n    source_dir: examples/diabetes/src\n"
                    f"    entry_script: score.py\n    target: dev\n"
                    f"    deploy: {{port: auto, environment_variables: {variables_yaml}}}\n")
    return "".join(text)


def platform(services: int) -> str:
    """A platform team's manifest as scale_bench writes it: many one-line services over a few models and
    environments (issue 22: 10,000 services are about 1.3 MB)."""
    text = [HEAD, "models:\n"] + [f"  m{i}: {{path: examples/diabetes/model.pkl}}\n" for i in range(10)]
    text += ["environments:\n"] + [f'  e{i}: {{python: "3.11", pip: [numpy]}}\n' for i in range(5)]
    text += ["services:\n"] + [f"  s{i:05d}: {{models: [m{i % 10}], environment: e{i % 5}, "
                                f"source_dir: examples/diabetes/src, entry_script: score.py, "
                                f"sample_request: examples/diabetes/sample-request.json, target: dev}}\n"
                                for i in range(services)]
    return "".join(text)


def billion_laughs() -> str:
    rows = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    rows += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]
    return HEAD + "x:\n" + "".join(f"  {r}\n" for r in rows)


def validate(manifest: Path) -> tuple[int, float, float, str]:
    """Exit code, wall seconds, CPU seconds (what a busy shared machine distorts least), first line."""
    out, err = io.StringIO(), io.StringIO()
    started, cpu = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli(["validate", "-f", str(manifest)])
    first = (out.getvalue() + err.getvalue()).strip().splitlines()[0][:110]
    return code, time.perf_counter() - started, time.process_time() - cpu, first


def measure(root: Path, name: str, text: str | bytes, runs: int, *, expect: int) -> None:
    path = root / f"{name}.yaml"
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    times, cpus, first = [], [], ""
    for _ in range(runs):
        code, seconds, cpu, first = validate(path)
        if code != expect:
            raise SystemExit(f"{name}: exit {code}, expected {expect}: {first}")
        times.append(seconds)
        cpus.append(cpu)
    size = path.stat().st_size
    print(f"{name:<28} {size / 1024:>9.1f} KiB  median {statistics.median(times):6.3f} s  "
          f"(cpu {statistics.median(cpus):6.3f} s)  max {max(times):6.3f} s  exit {expect}  | {first}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shutil.copytree(ROOT / "examples", root / "examples")
        os.chdir(root)
        limit, values = max_manifest_bytes(), max_values()
        print(f"limits: {limit // 1024} KiB per manifest, {values} values after alias expansion "
              "(MLOPS_MAX_MANIFEST_KIB changes both)")
        print("accepted (the largest the limits allow):")
        measure(root, "largest-by-bytes", by_bytes(limit), args.runs, expect=0)
        measure(root, "largest-by-values", by_values(values), args.runs, expect=0)
        big = platform(10_000)
        measure(root, "platform-10000-services", big, args.runs, expect=0 if len(big.encode()) <= limit else 1)
        measure(root, "example", (ROOT / "ml.yaml.example").read_text(), args.runs, expect=0)
        print("refused (fail fast):")
        measure(root, "billion-laughs", billion_laughs(), args.runs, expect=1)
        measure(root, "20-mb", HEAD + "#" + "x" * (20 << 20) + "\n", args.runs, expect=1)
        measure(root, "nesting-5000", HEAD + "x: " + "[" * 5000 + "]" * 5000 + "\n", args.runs, expect=1)
        measure(root, "just-over-the-byte-limit", by_bytes(limit) + "#" * 1024 + "\n", args.runs, expect=1)


if __name__ == "__main__":
    main()
