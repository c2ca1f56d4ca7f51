"""Scoring runtime vs Azure ML's ``azureml-inference-server-http``: same script, workers, load.

For each scenario (an echo score.py, a real scikit-learn Ridge model) and each worker count,
this starts one server at a time on 127.0.0.1, each from its own virtualenv (cached under
``~/.cache/mlops/bench``, or ``MLOPS_BENCH_CACHE``), drives it with ``wrk`` posting a small JSON
body with ``Content-Type: application/json`` over keep-alive connections, and prints requests/s,
p50 and p99 latency for both servers and their ratios. It prints figures; it asserts nothing.

This runtime is installed the way the local target installs it: the ``providers/runtime``
directory copied into the virtualenv's site-packages as ``mlops_runtime``, run with
``python -m mlops_runtime``; its venv holds only ``REQUIREMENTS`` (plus scikit-learn).

With ``--metrics-cost`` it instead measures what the per-version metrics and the rollout route
watch cost: two instances of this runtime side by side, both with a probe port (metrics are kept
only with one); "on" counts requests and watches a route file that names a candidate at weight 0
and mirror 0 (so every request takes the split decision, and none is sent anywhere), "off" has
``--no-metrics`` and no route file; loaded in alternation (ABBA rounds, so drift from other work
on the machine hits both alike); it prints the median req/s of each and their ratio.

Usage: python benchmarks/runtime_bench.py [--duration 10] [--repeat 3] [--workers 1 2] [--scenarios echo sklearn]
       python benchmarks/runtime_bench.py --metrics-cost [--duration 5] [--repeat 8] [--workers 1 2]
Needs: wrk (Debian: apt-get install wrk), pip access to install the two virtualenvs once.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
import venv
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from providers.runtime import REQUIREMENTS  # noqa: E402 - after the path set-up above

HERE = Path(__file__).resolve().parent / "runtime"
CACHE = Path(os.environ.get("MLOPS_BENCH_CACHE", Path.home() / ".cache" / "mlops" / "bench"))
AZUREML = "azureml"
MLOPS = "mlops"
VENV_PACKAGES = {
    AZUREML: ["azureml-inference-server-http", "scikit-learn"],
    MLOPS: [*REQUIREMENTS, "scikit-learn"],
}
SCENARIOS = {
    "echo": (HERE / "echo_score.py", '{"data": [[1, 2, 3, 4]]}'),
    "sklearn": (
        HERE / "sklearn_score.py",
        json.dumps({"data": [[0.038, 0.051, 0.062, 0.022, -0.044, -0.035, -0.043, -0.003, 0.020, -0.018]]}),
    ),
}


@dataclass
class Result:
    scenario: str
    server: str
    workers: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int


def venv_python(name: str) -> Path:
    """The virtualenv ``name`` with its packages, created (and pip-installed) on first use."""
    root = CACHE / name
    python = root / "bin" / "python"
    marker = root / ".packages.json"
    wanted = json.dumps(VENV_PACKAGES[name])
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    print(f"creating virtualenv {root} with {', '.join(VENV_PACKAGES[name])} ...", flush=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(root)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *VENV_PACKAGES[name]],
        check=True,
    )
    marker.write_text(wanted)
    return python


def install_runtime(python: Path) -> None:
    """Copy the current providers/runtime into the venv as ``mlops_runtime`` (as the local target does)."""
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    target = Path(purelib) / "mlops_runtime"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(ROOT / "providers" / "runtime", target, ignore=shutil.ignore_patterns("__pycache__"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(port: int, path: str, body: str | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request("POST" if body is not None else "GET", path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_ready(port: int, path: str, process: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}; log:\n{log.read_text()[-3000:]}")
        try:
            if get(port, path)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server not ready after {timeout}s; log:\n{log.read_text()[-3000:]}")


def start_server(
    kind: str, python: Path, script: Path, model_dir: Path, workers: int, port: int, log: Path,
    extra: tuple[str, ...] = (),
) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "AZUREML_", "AML_"))}
    if kind == AZUREML:
        env["AZUREML_MODEL_DIR"] = str(model_dir)
        argv = [
            str(python.parent / "azmlinfsrv"),
            "--entry_script",
            str(script),
            "--port",
            str(port),
            "--worker_count",
            str(workers),
        ]
    else:
        argv = [
            str(python),
            "-m",
            "mlops_runtime",
            "--entry-script",
            str(script),
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--model-dir",
            str(model_dir),
            *extra,
        ]
    with log.open("wb") as out:  # both servers log to a file, never to a pipe that could fill
        process = subprocess.Popen(argv, cwd=str(script.parent), env=env, stdout=out, stderr=subprocess.STDOUT)
    wait_ready(port, "/" if kind == AZUREML else "/ready", process, log)
    if workers > 1:
        time.sleep(1.0)  # let every worker finish init(), not just the first to answer
    return process


def stop_server(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def parse_wrk(output: str) -> tuple[float, float, float, int, int]:
    """req/s, p50 ms, p99 ms, non-2xx responses, socket errors from ``wrk --latency`` output."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", output).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", output).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return (
        rps,
        p50,
        p99,
        int(non_2xx.group(1)) if non_2xx else 0,
        sum(int(g) for g in errors.groups()) if errors else 0,
    )


def run_wrk(port: int, lua: Path, args: argparse.Namespace, seconds: float) -> str:
    command = [
        "wrk",
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{seconds:g}s",
        "--latency",
        "-s",
        str(lua),
        f"http://127.0.0.1:{port}/score",
    ]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


def measure(
    kind: str, python: Path, scenario: str, workers: int, model_dir: Path, work: Path, args: argparse.Namespace
) -> Result:
    script, body = SCENARIOS[scenario]
    lua = work / f"{scenario}.lua"
    lua.write_text(
        f'wrk.method = "POST"\nwrk.body = {json.dumps(body)}\nwrk.headers["Content-Type"] = "application/json"\n'
    )
    port = free_port()
    process = start_server(kind, python, script, model_dir, workers, port, work / f"{kind}-{scenario}-{workers}.log")
    try:
        status, sample = get(port, "/score", body)
        if status != 200:
            raise RuntimeError(f"{kind} answered {status} to the benchmark body: {sample[:200]!r}")
        run_wrk(port, lua, args, args.warmup)
        runs = [parse_wrk(run_wrk(port, lua, args, args.duration)) for _ in range(args.repeat)]
    finally:
        stop_server(process)
    # Each figure is the median over the runs: one noisy run (another busy process on the
    # machine) does not decide it. Errors are summed.
    rps, p50, p99 = (statistics.median(run[i] for run in runs) for i in range(3))
    non_2xx, errors = sum(run[3] for run in runs), sum(run[4] for run in runs)
    return Result(scenario, kind, workers, rps, p50, p99, non_2xx, errors)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a server: the supervisor and its workers (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    pids = [pid, *map(int, Path(f"/proc/{pid}/task/{pid}/children").read_text().split())]
    total = 0
    for one in pids:
        fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / tick


def record_cost_us(rounds: int = 200_000) -> float:
    """What recording one request costs, in microseconds (in this process; the same code)."""
    from providers.runtime.metrics import SharedMetrics

    recorder = SharedMetrics(1, "bench").recorder(0)
    started = time.perf_counter()
    for i in range(rounds):
        recorder.record(200, 0.0004 + (i & 7) * 0.001)
    return (time.perf_counter() - started) / rounds * 1e6


def decide_cost_us(rounds: int = 200_000) -> float:
    """What the split decision costs per request (in this process), taken at weight 1 %: an upper
    bound of a route at weight 0 and mirror 0, where a request pays one attribute check."""
    from providers.runtime.routes import Route, Router

    router = Router("/nonexistent", "bench")
    router._apply(Route("candidate", "127.0.0.1", 1, 1.0, 0.0, True))
    started = time.perf_counter()
    for _ in range(rounds):
        if router.splitting:
            router.decide()
    return (time.perf_counter() - started) / rounds * 1e6


def metrics_cost(python: Path, scenario: str, workers: int, model_dir: Path, work: Path,
                 args: argparse.Namespace) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """req/s and server CPU microseconds per request of each measured run, with metrics on and off
    (both instances up, loaded in turn). CPU per request hardly moves when other work on the
    machine takes cores away; req/s does."""
    script, body = SCENARIOS[scenario]
    lua = work / f"{scenario}.lua"
    lua.write_text(
        f'wrk.method = "POST"\nwrk.body = {json.dumps(body)}\nwrk.headers["Content-Type"] = "application/json"\n'
    )
    ports, processes = {}, {}
    try:
        routes = work / f"routes-{scenario}-{workers}.json"
        routes.write_text(json.dumps({"rollout": {"candidate": "candidate", "stable": "bench", "phase": "canary",
                                                  "weight": 0.0, "mirror": 0.0},
                                      "candidate": {"version": "candidate", "host": "127.0.0.1",
                                                    "port": free_port()}}))
        for name, flags in (("on", ("--routes", str(routes))), ("off", ("--no-metrics",))):
            ports[name] = free_port()
            extra = ("--probe-port", str(free_port()), "--revision", "bench", *flags)
            processes[name] = start_server(MLOPS, python, script, model_dir, workers, ports[name],
                                           work / f"metrics-{name}-{scenario}-{workers}.log", extra)
        for name in ("on", "off"):
            run_wrk(ports[name], lua, args, args.warmup)
        rps: dict[str, list[float]] = {"on": [], "off": []}
        cpu_us: dict[str, list[float]] = {"on": [], "off": []}
        for round_ in range(args.repeat):
            for name in (("on", "off") if round_ % 2 == 0 else ("off", "on")):
                before = cpu_seconds(processes[name].pid)
                output = run_wrk(ports[name], lua, args, args.duration)
                used = cpu_seconds(processes[name].pid) - before
                requests = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
                rps[name].append(parse_wrk(output)[0])
                cpu_us[name].append(used / max(requests, 1) * 1e6)
    finally:
        for process in processes.values():
            stop_server(process)
    return rps, cpu_us


def report_metrics_cost(rows: list[tuple[str, int, dict[str, list[float]], dict[str, list[float]]]]) -> None:
    print()
    print(f"{'scenario':<9} {'workers':>7} {'req/s on':>9} {'req/s off':>10} {'on/off':>7} "
          f"{'CPU us/req on':>14} {'off':>6} {'on/off':>7}")
    for scenario, workers, rps, cpu in rows:
        on, off = statistics.median(rps["on"]), statistics.median(rps["off"])
        cpu_on, cpu_off = statistics.median(cpu["on"]), statistics.median(cpu["off"])
        print(f"{scenario:<9} {workers:>7} {on:>9.0f} {off:>10.0f} {on / off:>7.3f} "
              f"{cpu_on:>14.1f} {cpu_off:>6.1f} {cpu_on / cpu_off:>7.3f}")
        print(f"{'':<17} req/s runs  on: {' '.join(f'{x:.0f}' for x in rps['on'])}")
        print(f"{'':<17} req/s runs off: {' '.join(f'{x:.0f}' for x in rps['off'])}")
    cost = record_cost_us()
    print(f"\nrecording one request: {cost:.2f} us in-process (the only work metrics add per request)")
    split = decide_cost_us()
    print(f"the split decision (taken at weight 1%; skipped at 0): {split:.2f} us in-process per request")
    cost += split
    for scenario, workers, _rps, cpu in rows:
        print(f"  {scenario}, {workers} worker(s): {cost / statistics.median(cpu['off']) * 100:.2f}% of the "
              f"server CPU per request without metrics")


def report(results: list[Result]) -> None:
    print()
    print(f"{'scenario':<9} {'workers':>7} {'server':<8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for r in results:
        print(
            f"{r.scenario:<9} {r.workers:>7} {r.server:<8} {r.requests_per_s:>9.0f} {r.p50_ms:>8.2f} "
            f"{r.p99_ms:>8.2f} {r.non_2xx + r.socket_errors:>7}"
        )
    print()
    by_key = {(r.scenario, r.workers, r.server): r for r in results}
    for (scenario, workers, server), ours in by_key.items():
        theirs = by_key.get((scenario, workers, AZUREML))
        if server != MLOPS or theirs is None:
            continue
        print(
            f"{scenario}, {workers} worker(s): {ours.requests_per_s / theirs.requests_per_s:.1f}x the req/s, "
            f"p50 {ours.p50_ms / theirs.p50_ms:.2f}x, p99 {ours.p99_ms / theirs.p99_ms:.2f}x of Azure's server"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds of measured load per run")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of unmeasured load first")
    parser.add_argument("--repeat", type=int, default=3, help="measured runs per server; the median is kept")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--connections", type=int, default=8, help="wrk keep-alive connections")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--scenarios", nargs="+", choices=sorted(SCENARIOS), default=["echo", "sklearn"])
    parser.add_argument("--servers", nargs="+", choices=[AZUREML, MLOPS], default=[AZUREML, MLOPS])
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--metrics-cost", action="store_true",
                        help="compare this runtime with metrics on and off instead of with Azure's server")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed (Debian: apt-get install wrk)", file=sys.stderr)
        return 2
    if args.metrics_cost:
        return main_metrics_cost(args)

    pythons = {kind: venv_python(kind) for kind in args.servers}
    if MLOPS in pythons:
        install_runtime(pythons[MLOPS])
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="mlops-bench-") as tmp:
        work = Path(tmp)
        model_dirs = {}
        for kind, python in pythons.items():
            model_dirs[kind] = work / f"model-{kind}"
            subprocess.run([str(python), str(HERE / "train_ridge.py"), str(model_dirs[kind])], check=True)
        print(
            f"load average before: {os.getloadavg()[0]:.2f}; cpus: {os.cpu_count()}, "
            f"python {sysconfig.get_python_version()}, "
            f"wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s, median of {args.repeat} runs",
            flush=True,
        )
        for scenario in args.scenarios:
            for workers in args.workers:
                for kind in args.servers:
                    result = measure(kind, pythons[kind], scenario, workers, model_dirs[kind], work, args)
                    print(
                        f"  {scenario:<8} workers={workers} {kind:<8} {result.requests_per_s:>9.0f} req/s  "
                        f"p50 {result.p50_ms:.2f} ms  p99 {result.p99_ms:.2f} ms",
                        flush=True,
                    )
                    results.append(result)
    report(results)
    print(f"load average after: {os.getloadavg()[0]:.2f} (other work on the machine skews the figures)")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    return 0


def main_metrics_cost(args: argparse.Namespace) -> int:
    python = venv_python(MLOPS)
    install_runtime(python)
    rows = []
    with tempfile.TemporaryDirectory(prefix="mlops-bench-") as tmp:
        work = Path(tmp)
        model_dir = work / "model"
        subprocess.run([str(python), str(HERE / "train_ridge.py"), str(model_dir)], check=True)
        print(f"load average before: {os.getloadavg()[0]:.2f}; cpus: {os.cpu_count()}, "
              f"wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s, {args.repeat} ABBA rounds",
              flush=True)
        for scenario in args.scenarios:
            for workers in args.workers:
                rps, cpu = metrics_cost(python, scenario, workers, model_dir, work, args)
                print(f"  {scenario:<8} workers={workers} metrics on {statistics.median(rps['on']):.0f} req/s, "
                      f"off {statistics.median(rps['off']):.0f} req/s", flush=True)
                rows.append((scenario, workers, rps, cpu))
    report_metrics_cost(rows)
    print(f"load average after: {os.getloadavg()[0]:.2f} (other work on the machine skews the figures)")
    if args.json:
        args.json.write_text(json.dumps([{"scenario": s, "workers": w, "req_per_s": rps, "cpu_us_per_request": cpu}
                                         for s, w, rps, cpu in rows], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
