"""Progressive rollouts on the local target under load: a good, a failing, a slow candidate and a shadow.

For each scenario: deploy a stable version with `mlops apply`, then drive the service with two
clients for the whole of the second `mlops apply` that rolls a candidate out — a keep-alive client
(one HTTP/1.1 connection, reused) and a new-connection client (one connection per request). A
watcher reads the service's route file (where the rollout stands on the local target) every 50 ms,
so each answer can be placed in the step that was in force when it was given.

Scenarios (issue 20's table):
- good: canary 10% -> 50%, promoted; per step, the share of answers given by the candidate vs
  its weight (within 5 points is the goal), 0 failed requests;
- failing: 20% of its answers are 5xx; rolled back within failure_limit intervals; the candidate's
  share of all answers <= the first weight + 5 points; 0 failed connections; apply exits 5;
- slow: answers 3x slower than stable; rolled back on max_relative_p99;
- shadow: mirror 20%; clients see only stable's answers, the candidate got about 20% as copies
  (its own metrics), then promoted.
--engine docker runs the same on the docker engine. All traffic goes to 127.0.0.1. Figures, not
assertions.

    python benchmarks/rollout_bench.py [--hold 4] [--engine process|docker] [--only good failing slow shadow]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from support import make_project  # noqa: E402

from providers.userdata import project_data_dir  # noqa: E402

SERVICE = "echo-api"
MANIFEST = """\
version: 1
project: {project}
targets:
  local: {target}
models:
  m: {{path: model.txt}}
environments:
  e: {{python: "3.11"}}
services:
  {service}:
    models: [m]
    environment: e
    source_dir: src
    entry_script: score.py
    sample_request: sample.json
    deploy: {{port: auto, auth: none, workers: 2}}
{rollout}"""

CANARY = """\
    rollout:
      strategy: canary
      steps: [{{weight: 10, hold: {hold}s}}, {{weight: 50, hold: {hold}s}}]
      analysis: {{interval: 1s, min_requests: 10, max_error_rate: 5%, max_relative_p99: 1.5, failure_limit: 2}}
      progress_deadline: 60s
"""
SHADOW = """\
    rollout:
      strategy: shadow
      mirror: {{percent: 20, hold: {hold}s}}
      analysis: {{interval: 1s, min_requests: 10, max_error_rate: 5%, failure_limit: 2}}
      progress_deadline: 60s
"""

SCORE = '''\
import time
count = 0

def init():
    pass

def run(raw_data):
    global count
    count += 1
    time.sleep({sleep})
    if {fail} and count % 5 == 0:
        raise RuntimeError("one in five fails")
    return {{"version": "{name}"}}
'''
STABLE_SLEEP = 0.01
"""Every answer takes at least this (the slow candidate 3x): latency measured above the noise of a
busy machine, with p99s in distinct histogram buckets."""
SCENARIOS = {   # name: (rollout block, fails 1 in 5, sleep)
    "good": (CANARY, False, STABLE_SLEEP),
    "failing": (CANARY, True, STABLE_SLEEP),
    "slow": (CANARY, False, 3 * STABLE_SLEEP),
    "shadow": (SHADOW, False, STABLE_SLEEP),
}


def mlops(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "planner.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=900, stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)})


class Client(threading.Thread):
    """Scores in a loop; ``keep_alive`` reuses one connection, else a new one per request.
    ``answers``: (time, status, version) per answer; ``failed``: connection errors."""

    def __init__(self, url: str, keep_alive: bool):
        super().__init__(daemon=True)
        parts = urlsplit(url)
        self.host, self.port, self.path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path
        self.keep_alive = keep_alive
        self.answers: list[tuple[float, int, str]] = []
        self.failed = 0
        self.stop = threading.Event()

    def run(self) -> None:
        conn = None
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
                conn.request("POST", self.path, body=b'{"x": 1}', headers={"Content-Type": "application/json"})
                reply = conn.getresponse()
                body = reply.read()
                version = json.loads(body).get("version", "") if reply.status == 200 else ""
                self.answers.append((time.monotonic(), reply.status, version))
                if not self.keep_alive or reply.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException, ValueError):
                self.failed += 1
                if conn is not None:
                    conn.close()
                conn = None


class Watcher(threading.Thread):
    """Reads the route file every 50 ms: when each (phase, weight, mirror) began; and, in the mirror
    phase, the candidate's own request count (its metrics on its private port)."""

    def __init__(self, folder: Path, service: str) -> None:
        super().__init__(daemon=True)
        self.path_glob = (folder, service)
        self.timeline: list[tuple[float, str, float, float]] = []
        self.mirrored = 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        folder, name = self.path_glob
        last_scrape = 0.0
        while not self.stop.is_set():
            found = sorted(folder.glob(f"*/{name}.json")) if folder.is_dir() else []
            doc = None
            if found:
                try:
                    doc = json.loads(found[0].read_text())
                except (OSError, ValueError):
                    doc = None
            now = time.monotonic()
            state = (doc or {}).get("rollout") or {}
            here = (str(state.get("phase", "none")), float(state.get("weight", 0.0)), float(state.get("mirror", 0.0)))
            if not self.timeline or self.timeline[-1][1:] != here:
                self.timeline.append((now, *here))
            port = ((doc or {}).get("candidate") or {}).get("port")
            if here[0] == "mirror" and port and now - last_scrape > 0.25:
                last_scrape = now
                self.mirrored = max(self.mirrored, _candidate_requests(int(port)))
            time.sleep(0.05)


def _candidate_requests(port: int) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as reply:
            text = reply.read().decode()
    except OSError:
        return 0.0
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("mlops_requests_total{"))


def by_candidate(answer: tuple[float, int, str]) -> bool:
    """Answered by the candidate: it said so, or it failed (only candidates fail here; stable never does)."""
    return answer[2] == "candidate" or answer[1] >= 500


PICKUP_S = 0.3
"""Answers this soon after a change of weight are left out of its step (the runtimes look at the
route file every 0.2 s)."""


def scenario(base: Path, name: str, hold: float, target: str) -> dict:
    project = f"rollbench-{uuid.uuid4().hex[:6]}"
    root = base / name
    block, fail, sleep = SCENARIOS[name]
    manifest = MANIFEST.format(project=project, target=target, service=SERVICE, rollout=block.format(hold=hold))
    make_project(root, manifest, score=SCORE.format(fail=False, sleep=STABLE_SLEEP, name="stable"))
    try:
        first = mlops("apply", "--auto-approve", cwd=root)
        if first.returncode != 0:
            raise SystemExit(f"{name}: the first apply failed:\n{first.stdout}\n{first.stderr}")
        url = json.loads(mlops("status", "--json", cwd=root).stdout)["services"][0]["endpoint"]
        (root / "src" / "score.py").write_text(SCORE.format(fail=fail, sleep=sleep, name="candidate"))
        subprocess.run(["git", "commit", "-qam", "candidate"], cwd=root, check=True)
        clients = [Client(url, keep_alive=True), Client(url, keep_alive=False)]
        watcher = Watcher(project_data_dir(project) / "routes", SERVICE)
        watcher.start()
        for c in clients:
            c.start()
        started = time.monotonic()
        applied = mlops("apply", "--auto-approve", cwd=root)
        took = time.monotonic() - started
        time.sleep(0.5)
        for c in clients:
            c.stop.set()
            c.join()
        watcher.stop.set()
        watcher.join()
        after = Client(url, keep_alive=False)
        after.start()
        time.sleep(0.5)
        after.stop.set()
        after.join()
    finally:
        mlops("destroy", "--auto-approve", cwd=root)
    answers = sorted(a for c in clients for a in c.answers)
    timeline = watcher.timeline
    steps = []
    for i, (t, phase, weight, _mirror) in enumerate(timeline):
        end = timeline[i + 1][0] if i + 1 < len(timeline) else started + took
        if phase == "canary" and weight > 0:
            window = [a for a in answers if t + PICKUP_S <= a[0] <= end]
            by_kind = [[a for a in c.answers if t + PICKUP_S <= a[0] <= end] for c in clients]
            share = [100.0 * sum(1 for a in w if by_candidate(a)) / len(w) if w else 0.0
                     for w in (window, *by_kind)]
            steps.append((weight, share, len(window)))
    mirror_windows = [(t + PICKUP_S, timeline[i + 1][0] if i + 1 < len(timeline) else started + took)
                      for i, (t, phase, _w, mirror) in enumerate(timeline) if phase == "mirror" and mirror > 0]
    in_mirror = sum(1 for a in answers for s, e in mirror_windows if s <= a[0] <= e)
    # The phase's end is when the watcher saw the route file go: promote's GO_LIVE came just before it.
    seen_in_mirror = sum(1 for a in answers for s, e in mirror_windows
                         if s - PICKUP_S <= a[0] <= e - PICKUP_S and by_candidate(a))
    reason = next((ln.strip() for ln in (applied.stderr + applied.stdout).splitlines()
                   if "ROLLED BACK" in ln), "")
    return {
        "scenario": name, "exit": applied.returncode, "seconds": took, "steps": steps,
        "answers": len(answers),
        "by_candidate": sum(1 for a in answers if by_candidate(a)),
        "5xx": sum(1 for a in answers if a[1] >= 500),
        "failed": sum(c.failed for c in clients),
        "mirrored": (max(0.0, watcher.mirrored - 1), in_mirror, seen_in_mirror),   # less the smoke test
        "serves_after": max({a[2] for a in after.answers} or {"-"},
                            key=lambda v: sum(1 for a in after.answers if a[2] == v)),
        "reason": reason,
        "tail": "" if applied.returncode in (0, 5) else (applied.stdout + applied.stderr)[-2000:],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hold", type=float, default=4.0, help="each step's hold in seconds (default 4)")
    parser.add_argument("--engine", choices=("process", "docker"), default="process")
    parser.add_argument("--only", nargs="*", choices=list(SCENARIOS), default=list(SCENARIOS))
    args = parser.parse_args()
    target = "{provider: local}" if args.engine == "process" else "{provider: local, engine: docker}"
    rows = []
    with tempfile.TemporaryDirectory(prefix="rollout-bench-") as tmp:
        for name in args.only:
            rows.append(scenario(Path(tmp), name, args.hold, target))
            print(f"  {name}: exit {rows[-1]['exit']} in {rows[-1]['seconds']:.1f}s", flush=True)
    print(f"\nengine {args.engine}, holds {args.hold:g}s, analysis every 1s; shares are of answers "
          f"given while a step was in force (less {PICKUP_S}s after each change)")
    steps_head = "per step: weight -> candidate share (all / keep-alive / new-conn)"
    print(f"{'scenario':<9}{'exit':>5}{'apply s':>9}  {steps_head:<66}{'cand. of all':>13}{'5xx':>6}{'failed':>8}"
          "  serves after")
    for r in rows:
        steps = "; ".join(f"{w:g}% -> {s[0]:.1f}/{s[1]:.1f}/{s[2]:.1f} (n={n})" for w, s, n in r["steps"]) or "-"
        share = 100.0 * r["by_candidate"] / r["answers"] if r["answers"] else 0.0
        print(f"{r['scenario']:<9}{r['exit']:>5}{r['seconds']:>9.1f}  {steps:<66}{share:>12.1f}%{r['5xx']:>6}"
              f"{r['failed']:>8}  {r['serves_after']}")
    for r in rows:
        copies, seen, leaked = r["mirrored"]
        if r["scenario"] == "shadow":
            print(f"shadow: during the mirror phase clients got {leaked} answers from the candidate, and it got "
                  f"{copies:.0f} copies of the {seen} requests answered ({100.0 * copies / seen if seen else 0:.1f}%, "
                  f"asked 20%); promoted after it")
        if r["reason"]:
            print(f"{r['scenario']}: {r['reason']}")
        if r["tail"]:
            print(f"{r['scenario']}: apply's output ends with:\n{r['tail']}")


if __name__ == "__main__":
    main()
