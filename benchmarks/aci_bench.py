"""Reading live state from Azure Container Instances, the real SDK against the ARM double (no engine):
how long one `read()` of N container groups takes (list with nextLink paging + one get per group of
ours, in parallel), and how many ARM requests it costs. Also a plan of an unchanged service (the
no-op every CI push pays). Prints figures; asserts nothing.

    python benchmarks/aci_bench.py [--groups 50] [--page-size 20] [--foreign 50] [--repeat 5]
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
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "doubles")]

from aci_double import AciDouble  # noqa: E402

from providers.aci import AciProvider, groups  # noqa: E402
from providers.base import ProjectContext  # noqa: E402

SPEC = {
    "models": ["ridge:1@5b00c99ea948"], "environment": "sklearn@2b6d32ee3de0", "source": "src@28de0fa3b7c9",
    "entry_script": "score.py", "runtime": "mlops-runtime@1", "image": "127.0.0.1:5000/bench/svc:abc",
    "deploy": {"auth": "key", "cpu": 1.0, "memory_gb": 1.5, "port": 5001, "restart_policy": "Always",
               "scoring_timeout_ms": 60000, "startup_timeout_s": 300, "workers": 1},
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--groups", type=int, default=50, help="container groups of this project")
    parser.add_argument("--foreign", type=int, default=50, help="other groups in the same resource group")
    parser.add_argument("--page-size", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, \
            AciDouble(Path(tmp) / "double", engine=False, page_size=args.page_size) as double:
        os.environ.update(double.env())
        context = ProjectContext(project="bench", root=Path(tmp), state_dir=Path(tmp) / ".mlops",
                                 cache_dir=Path(tmp) / "cache")
        provider = AciProvider(target="aci", context=context, config={
            "provider": "aci", "subscription_id": double.subscription_id, "resource_group": "ml-dev",
            "location": "westeurope", "registry": "127.0.0.1:5000", "arm_endpoint": double.url})
        started = time.perf_counter()
        ensure_connected(provider)
        connect_s = time.perf_counter() - started
        for i in range(args.groups + args.foreign):
            ours = i < args.groups
            name = f"svc-{i:03d}" if ours else f"other-{i:03d}"
            tags = groups.tags_for(project="bench", target="aci", name=name, spec=SPEC, fingerprint="f" * 12,
                                   git={}, keys_sha="none") if ours else {"team": "other"}
            group = {"location": "westeurope", "tags": tags, "properties": {"osType": "Linux", "containers": [
                {"name": name, "properties": {"image": "127.0.0.1:5000/x@sha256:" + "0" * 64,
                                              "ports": [{"port": 5001}],
                                              "resources": {"requests": {"cpu": 1.0, "memoryInGB": 1.5}}}}],
                "ipAddress": {"type": "Public", "ports": [{"port": 5001}]}}}
            double.put_group(double.subscription_id, "ml-dev", name, group)
        time.sleep(0.5)                      # let the double finish "provisioning" every group
        times, calls = [], []
        for _ in range(args.repeat):
            before = len(double.calls())
            t0 = time.perf_counter()
            found = provider.read()
            times.append(time.perf_counter() - t0)
            calls.append(len(double.calls()) - before)
        assert len(found) == args.groups
        print(f"connect (metadata + token): {connect_s * 1000:.0f} ms")
        print(f"read() of {args.groups} groups among {args.groups + args.foreign} (page size {args.page_size}): "
              f"median {statistics.median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms, "
              f"{calls[0]} ARM requests")


if __name__ == "__main__":
    main()
