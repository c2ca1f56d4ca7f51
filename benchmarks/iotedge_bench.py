"""IoT Edge: what reading a fleet costs, and how long a rollout takes on the simulated devices.

- read(): the provider lists the hub's deployments, queries the targeted device twins and reads
  each device's ``$edgeAgent`` twin (one request per device), against the IoT Hub double with
  fleets of 3, 30 and 300 devices (no engine: the agents acknowledge without running anything);
- with ``--rollout`` (needs ``eval "$(bash .ci/docker-up.sh)"``): apply-to-healthy of the echo
  service on two devices whose modules really run, image already built, then a change (a new
  deployment) to healthy;
- with ``--rings``: a ring rollout (``SplitsTraffic``) on fleets of 30 and 300 devices, no engine:
  requests and seconds of each step (10%, 50%, 100%) and of promote, and read() during the rollout
  against read() of the same fleet without one (the baseline, measured in the same run).

It prints figures and asserts nothing; everything it starts is stopped at the end.

    python benchmarks/iotedge_bench.py [--runs 5] [--rollout] [--rings]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from providers.base import ensure_connected

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "doubles")]

import iotedge_double  # noqa: E402

from planner.addresses import Address  # noqa: E402
from planner.resources import Resource  # noqa: E402
from providers.base import ProjectContext  # noqa: E402
from providers.iotedge import IotEdgeProvider  # noqa: E402

SPEC = {"deploy": {"auth": "none", "port": 5001, "restart_policy": "always", "rollout_timeout_s": 600,
                   "scoring_timeout_ms": 60000},
        "entry_script": "score.py", "image": "127.0.0.1:5999/bench/echo:0", "models": ["m:1@00"],
        "target_condition": "tags.site='plant-3'"}


def connected_provider(double: iotedge_double.Double, tmp: Path) -> IotEdgeProvider:
    """The provider of target plant3 (every device tagged site=plant-3) on ``double``'s hub, connected."""
    os.environ.update(double.env("127.0.0.1:5999"))
    context = ProjectContext(project="bench", root=tmp, state_dir=tmp / ".mlops", cache_dir=tmp)
    provider = IotEdgeProvider(target="plant3", context=context, config={
        "provider": "iotedge", "hub": double.connection_string, "target_condition": "tags.site='plant-3'",
        "registry": "127.0.0.1:5999"})
    ensure_connected(provider)
    return provider


def bench_read(devices: int, runs: int, tmp: Path) -> tuple[float, int]:
    fleet = {f"dev-{n:04d}": {"site": "plant-3", "host": "127.0.0.1"} for n in range(devices)}
    with iotedge_double.running(tmp / f"d{devices}", run_modules=False, devices=fleet) as double:
        provider = connected_provider(double, tmp)
        desired = Resource(Address("service", "echo"), SPEC, target="plant3")
        provider.hub.create_configuration(provider._configuration(desired, "127.0.0.1:5999/bench/echo@sha256:"
                                                                   + "0" * 64, {}, priority=10))
        times = []
        before = len(double.hub.requests)
        for _ in range(runs):
            started = time.perf_counter()
            provider.read()
            times.append(time.perf_counter() - started)
        per_read = (len(double.hub.requests) - before) // runs
    return statistics.median(times), per_read


def bench_rings(devices: int, runs: int, tmp: Path) -> None:
    """Each ring step's cost on the hub; read() with two versions against read() with one."""
    import dataclasses

    from planner.core.events import Events
    from planner.core.resources import RolloutState, spec_fingerprint

    fleet = {f"dev-{n:04d}": {"site": "plant-3"} for n in range(devices)}
    image = "127.0.0.1:5999/bench/echo@sha256:"
    with iotedge_double.running(tmp / f"r{devices}", run_modules=False, devices=fleet) as double:
        provider = connected_provider(double, tmp)
        stable = Resource(Address("service", "echo"), SPEC, target="plant3")
        candidate = Resource(Address("service", "echo"), {**SPEC, "models": ["m:2@00"]}, target="plant3")
        provider.hub.create_configuration(provider._configuration(stable, image + "0" * 64, {}, priority=10))

        def timed(call, what: str) -> object:
            before, started = len(double.hub.requests), time.perf_counter()
            answer = call()
            print(f"  {what:<28} {time.perf_counter() - started:6.2f} s {len(double.hub.requests) - before:5d} "
                  "requests")
            return answer

        def median_read() -> tuple[float, int]:
            times, before = [], len(double.hub.requests)
            for _ in range(runs):
                started = time.perf_counter()
                provider.read()
                times.append(time.perf_counter() - started)
            return statistics.median(times), (len(double.hub.requests) - before) // runs

        alone = median_read()
        print(f"ring rollout on {devices} devices:")
        state = RolloutState(candidate=spec_fingerprint(candidate.spec), stable=spec_fingerprint(stable.spec),
                             phase="canary")
        body = provider._configuration(candidate, image + "1" * 64, {}, priority=11)
        live = timed(lambda: provider._start_ring(candidate, body, state, Events()), "start (ring empty)")
        for step, weight in enumerate((10, 50, 100)):
            state = dataclasses.replace(state, step=step, weight=weight)
            live = timed(lambda s=state, lv=live: provider.set_traffic(lv, s, Events()), f"step {weight}%")
            if weight == 50:
                during = median_read()
        timed(lambda: provider.promote(live, candidate, Events()), "promote")
        print(f"  read(): {alone[0] * 1000:.1f} ms, {alone[1]} requests with one version; "
              f"{during[0] * 1000:.1f} ms, {during[1]} requests during the rollout (ratio "
              f"{during[0] / alone[0]:.2f})")


def bench_rollout(tmp: Path) -> None:
    from support import make_project, run_cli

    registry = os.environ.get("MLOPS_TEST_REGISTRY")
    if not registry:
        print("rollout: skipped (MLOPS_TEST_REGISTRY not set; eval \"$(bash .ci/docker-up.sh)\")")
        return
    sys.path.insert(0, str(ROOT / "tests" / "iotedge"))
    from iotedge_fixtures import manifest

    with iotedge_double.running(tmp / "fleet") as double:
        os.environ.update(double.env(registry))
        root = tmp / "repo"
        make_project(root, manifest("edge-bench"))
        run_cli("build", "echo-api", cwd=root)
        started = time.perf_counter()
        first = run_cli("apply", "--auto-approve", cwd=root)
        created = time.perf_counter() - started
        (root / "model.txt").write_text("v2\n")
        run_cli("build", "echo-api", cwd=root)
        started = time.perf_counter()
        second = run_cli("apply", "--auto-approve", cwd=root)
        changed = time.perf_counter() - started
        run_cli("destroy", "--auto-approve", cwd=root)
    print(f"rollout on 2 devices, image built: create {created:.1f}s (exit {first.code}), "
          f"change to a new deployment {changed:.1f}s (exit {second.code})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rollout", action="store_true")
    parser.add_argument("--rings", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        for devices in (3, 30, 300):
            seconds, requests = bench_read(devices, args.runs, tmp)
            print(f"read() of one service on {devices:4d} devices: {seconds * 1000:7.1f} ms median of {args.runs} "
                  f"({requests} requests per read)")
        if args.rollout:
            bench_rollout(tmp)
        if args.rings:
            for devices in (30, 300):
                bench_rings(devices, args.runs, tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
