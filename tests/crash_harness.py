"""Kill `mlops apply` / `mlops destroy` with SIGKILL at random moments, recover, check convergence.

Shared by the slow test (tests/e2e/test_crash_safety.py, CI-sized) and benchmarks/crash_bench.py
(more trials, the real example). A trial: bring the project to the state the phase needs, start
the command, SIGKILL it after a random delay, run the same command once more to recover, then
check what must hold whatever moment the kill hit:

- the plan is empty (exit 0 with --detailed-exitcode);
- exactly one listening socket per service port;
- no process of ours runs that `status` does not show (instances by their marker, port keepers);
- no port keeper holds a port that no Healthy service serves on (found by what runs, not by records);
- no half-built virtualenv folder and no pip left running.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def mlops(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "planner.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def listeners(port: int) -> int:
    """Listening TCP sockets on ``port`` (IPv4 and IPv6), counted once each whoever holds them."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


def our_processes(state_dir: Path) -> dict[str, list[int]]:
    """Instance leaders (by marker) and port keepers (by socket folder in their command line) of a project."""
    from providers.base import ProjectContext
    from providers.local import processes
    from providers.local.provider import MARKER, owner_of

    context = ProjectContext(project="", root=state_dir.parent, state_dir=state_dir, cache_dir=state_dir)
    instances = [pid for pid, _start, _value in processes.find_marked(MARKER, owner_of(context) + "/")]
    keepers = []
    for record in (state_dir / "ports").glob("*.json") if (state_dir / "ports").is_dir() else []:
        data = json.loads(record.read_text())
        if processes.is_running(int(data["pid"]), str(data["start_id"])):
            keepers.append(int(data["pid"]))
    return {"instances": sorted(instances), "keepers": sorted(keepers)}


def keeper_processes(state_dir: Path) -> dict[int, int]:
    """Every port keeper process of a project, recorded or not: pid -> the port it holds.

    Found by what runs (their command line names the project's state folder), so a keeper whose
    record is gone still counts: the orphan count of issue 22 is over these.
    """
    folder = str(state_dir.resolve() / "ports")
    sockets = set()   # keepers started before they named their record on the command line
    for path in Path(folder).glob("*.json"):
        try:
            sockets.add(json.loads(path.read_text())["socket"])
        except (OSError, ValueError, KeyError):
            continue
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if "providers.local.portkeeper" not in args or stat[stat.rindex(")") + 2] == "Z":
            continue
        record = args[args.index("--record") + 1] if "--record" in args else ""
        socket_path = args[args.index("--socket") + 1] if "--socket" in args else ""
        if record.startswith(folder + "/") or socket_path in sockets:
            found[int(entry.name)] = int(args[args.index("--port") + 1])
    return found


def orphan_keepers(state_dir: Path, serving_ports: set[int]) -> dict[int, int]:
    """Keepers holding a port no shown service serves on (pid -> port)."""
    return {pid: port for pid, port in keeper_processes(state_dir).items() if port not in serving_ports}


def stray_pips(cache: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if str(cache) in cmd and " pip " in f" {cmd} ":
                found.append(int(entry.name))
    return found


@dataclass
class Trial:
    phase: str
    delay: float
    problems: list[str] = field(default_factory=list)

    @property
    def converged(self) -> bool:
        return not self.problems


def run_trial(root: Path, phase: str, delay: float, bump: int, cache: Path, bump_file: str = "model.txt") -> Trial:
    """One kill-and-recover trial; ``bump`` makes an update phase change ``bump_file`` (model or source)."""
    trial = Trial(phase, delay)
    if phase == "create":
        mlops("destroy", "--auto-approve", cwd=root)
    else:
        mlops("apply", "--auto-approve", cwd=root)
    if phase == "update":
        target = root / bump_file
        if target.suffix == ".py":
            target.write_text(target.read_text().split("\n# bump ")[0] + f"\n# bump {bump}\n")
        else:
            target.write_text(f"v{bump}\n")
    command = "destroy" if phase == "destroy" else "apply"
    proc = subprocess.Popen([sys.executable, "-m", "planner.cli", command, "--auto-approve"], cwd=root,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    time.sleep(delay)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    recovery = mlops(command, "--auto-approve", cwd=root)
    if recovery.returncode != 0:
        trial.problems.append(f"recovery {command} exited {recovery.returncode}: {recovery.stderr.strip()[-300:]}")
    plan = mlops("plan", "--detailed-exitcode", *(["--destroy"] if phase == "destroy" else []), cwd=root)
    if plan.returncode != 0:
        trial.problems.append(f"plan after recovery exited {plan.returncode}: {plan.stdout.strip()[-300:]}")
    status = json.loads(mlops("status", "--json", cwd=root).stdout or "{}").get("services", [])
    running = our_processes(root / ".mlops")
    serving = {int(s["endpoint"].rsplit(":", 1)[1].split("/")[0]) for s in status if s.get("endpoint")
               and s["state"] == "Healthy"} if phase != "destroy" else set()
    orphans = orphan_keepers(root / ".mlops", serving)
    if orphans:
        trial.problems.append(f"orphan port keepers (pid: port): {orphans}")
    if phase == "destroy":
        if running["instances"] or running["keepers"]:
            trial.problems.append(f"processes left after destroy: {running}")
    else:
        shown = {s["service"]: s for s in status}
        for name, row in shown.items():
            if row["state"] != "Healthy":
                trial.problems.append(f"{name} is {row['state']}: {row['message']}")
            port = int(row["endpoint"].rsplit(":", 1)[1].split("/")[0]) if row.get("endpoint") else 0
            if port and listeners(port) != 1:
                trial.problems.append(f"{name}: {listeners(port)} listeners on port {port}")
        if len(running["instances"]) != len(shown) or len(running["keepers"]) != len(shown):
            trial.problems.append(f"{len(shown)} services shown but running: {running}")
    leaked = list((cache / "venvs").glob(".build-*")) if (cache / "venvs").is_dir() else []
    if leaked:
        trial.problems.append(f"leaked build folders: {[p.name for p in leaked]}")
    pips = stray_pips(cache)
    if pips:
        trial.problems.append(f"stray pip processes: {pips}")
    return trial


def run_trials(root: Path, trials: int, cache: Path, *, seed: int = 7, max_delay: float = 2.5,
               bump_file: str = "model.txt") -> list[Trial]:
    rng = random.Random(seed)
    phases = ["create", "update", "destroy"]
    return [run_trial(root, phases[i % 3], rng.uniform(0.0, max_delay), i, cache, bump_file)
            for i in range(trials)]
