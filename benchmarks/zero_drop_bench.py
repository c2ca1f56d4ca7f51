"""Requests lost during updates on the local target, with net.ipv4.tcp_migrate_req 0 and 1.

For each sysctl value (set for the run and restored; needs root, else only the current value is
measured): deploy an echo service, then drive it with bounded load — `wrk -c8` (keep-alive,
new connections only when one breaks) and a Python keep-alive client on its own thread — while
`mlops apply` rolls out 10 updates (the model changes each time). Prints requests sent, failed
(non-2xx, resets, refusals, timeouts) and updates done. Baseline in the same run: the same load
with the service stopped and started again (`destroy` + `apply`), which is what an update costs
without blue/green on one listener. All traffic goes to 127.0.0.1.

    python benchmarks/zero_drop_bench.py [--updates 10] [--seconds 20]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

from runtime_bench import parse_wrk  # noqa: E402
from support import Hammer, echo_manifest, make_project  # noqa: E402

MIGRATE = Path("/proc/sys/net/ipv4/tcp_migrate_req")


def mlops(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "planner.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, stdin=subprocess.DEVNULL)


def endpoint(root: Path) -> str:
    rows = json.loads(mlops("status", "--json", cwd=root).stdout)["services"]
    return rows[0]["endpoint"]


def run(root: Path, updates: int, seconds: float, *, restart: bool) -> dict[str, int]:
    url = endpoint(root)
    lua = root / "post.lua"
    lua.write_text('wrk.method = "POST"\nwrk.body = \'{"x": 1}\'\nwrk.headers["Content-Type"] = "application/json"\n')
    wrk = None
    if shutil.which("wrk"):
        wrk = subprocess.Popen(["wrk", "-t2", "-c8", f"-d{seconds:g}s", "--latency", "-s", str(lua), url],
                               stdout=subprocess.PIPE, text=True)
    done = 0
    started = time.monotonic()
    with Hammer(url) as load:
        for _ in range(updates):
            if time.monotonic() - started > seconds - 1:
                break
            if restart:
                mlops("destroy", "--auto-approve", cwd=root)
            (root / "model.txt").write_text(f"v{time.time_ns()}\n")
            if mlops("apply", "--auto-approve", cwd=root).returncode == 0:
                done += 1
        while time.monotonic() - started < seconds and wrk is not None and wrk.poll() is None:
            time.sleep(0.2)
    result = {"updates": done, "python_sent": len(load.answers) + len(load.failures),
              "python_failed": len(load.failures)}
    if wrk is not None:
        out = wrk.communicate()[0]
        rps, _p50, _p99, non_2xx, errors = parse_wrk(out)
        total = int(__import__("re").search(r"(\d+) requests in", out).group(1))
        result.update(wrk_sent=total, wrk_failed=non_2xx + errors)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--updates", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    try:
        before = MIGRATE.read_text().strip()
        values = ["0", "1"] if os.access(MIGRATE, os.W_OK) else [before]
    except OSError:
        before, values = None, ["(no tcp_migrate_req)"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "repo"
        from providers.local.processes import free_port

        make_project(root, echo_manifest("zerodrop", deploy=f"{{port: {free_port()}, auth: none}}"))
        os.environ.setdefault("MLOPS_CACHE_DIR", str(Path.home() / ".cache" / "mlops"))
        try:
            for value in values:
                if before is not None and value in ("0", "1"):
                    MIGRATE.write_text(value)
                assert mlops("apply", "--auto-approve", cwd=root).returncode == 0
                ours = run(root, args.updates, args.seconds, restart=False)
                base = run(root, max(1, args.updates // 2), args.seconds, restart=True)
                print(f"tcp_migrate_req={value}")
                print(f"  mlops (one listener, blue/green): {ours['updates']} updates; "
                      f"python client {ours['python_failed']} failed of {ours['python_sent']}; "
                      f"wrk -c8 {ours.get('wrk_failed', '-')} failed of {ours.get('wrk_sent', '-')}")
                print(f"  baseline (stop + start):          {base['updates']} restarts; "
                      f"python client {base['python_failed']} failed of {base['python_sent']}; "
                      f"wrk -c8 {base.get('wrk_failed', '-')} failed of {base.get('wrk_sent', '-')}")
        finally:
            mlops("destroy", "--auto-approve", cwd=root)
            if before is not None and before in ("0", "1"):
                MIGRATE.write_text(before)


if __name__ == "__main__":
    main()
