"""Start the servers the suite needs when the run was not handed them, so the README's
`python3 -m pytest` runs the whole suite as CI does instead of skipping every engine test.

Each engine is one of our `.ci/*-up.sh` scripts (idempotent, export lines on stdout). A run that
already has the engine's variables (CI evals the script first; a developer may have too) starts
nothing. Whatever this module starts it stops at the end of the run; an engine that was already
running (its PID file names a live process) is reused and left running.
`MLOPS_TEST_ENGINES=none` turns this off (the engine tests then skip with the reason).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Engine:
    name: str
    up: str                      # script under ROOT printing `export NAME=VALUE` lines
    down: str
    given: tuple[str, ...]       # any of these set: the run already has this engine (or its absence)
    state_var: str               # the script's state-folder variable and its default
    state_default: str
    pidfile: str                 # inside the state folder: alive before we start = not ours to stop
    timeout_s: int


ENGINES = (
    Engine("docker", ".ci/docker-up.sh", ".ci/docker-down.sh",
           ("MLOPS_TEST_REGISTRY", "MLOPS_DOCKER_UNAVAILABLE"),
           "MLOPS_DOCKER_STATE", "/var/tmp/mlops-docker", "dockerd.pid", 1200),
)


def _alive(pidfile: Path) -> bool:
    try:
        os.kill(int(pidfile.read_text().strip()), 0)
    except (OSError, ValueError):
        return False
    return True


def parse_exports(text: str) -> dict[str, str]:
    """`export A=B` lines (values shell-quoted, as printf %q writes them) -> {A: B}."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            key, _, value = words[1].partition("=")
            found[key] = value
    return found


def start_missing() -> list[Engine]:
    """Start every engine the environment lacks; return those this run must stop at its end."""
    if os.environ.get("MLOPS_TEST_ENGINES", "").lower() == "none":
        return []
    started: list[Engine] = []
    for engine in ENGINES:
        script = ROOT / engine.up
        if any(os.environ.get(v) for v in engine.given) or not script.exists():
            continue
        state = Path(os.environ.get(engine.state_var) or engine.state_default)
        ours = not _alive(state / engine.pidfile)
        print(f"\nstarting the {engine.name} engine for this run ({engine.up}; "
              "MLOPS_TEST_ENGINES=none to skip)", file=sys.stderr, flush=True)
        try:
            done = subprocess.run(["bash", str(script)], cwd=ROOT, capture_output=True, text=True,
                                  timeout=engine.timeout_s, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            os.environ[engine.given[-1]] = f"{engine.up} did not finish in {engine.timeout_s} s"
            continue
        exports = parse_exports(done.stdout)
        if not exports:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            exports = {engine.given[-1]: f"{engine.up} failed: {last}"}
        os.environ.update(exports)
        if ours and not any(k == engine.given[-1] for k in exports):
            started.append(engine)
    return started


def stop(engines: list[Engine]) -> None:
    for engine in reversed(engines):
        subprocess.run(["bash", str(ROOT / engine.down)], cwd=ROOT, capture_output=True,
                       timeout=300, stdin=subprocess.DEVNULL, check=False)
