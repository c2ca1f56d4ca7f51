"""Images and containers vs processes: where the time of a docker deployment goes.

On the example (scikit-learn Ridge, the diabetes service) this measures, against the engine at
DOCKER_HOST (start one with ``eval "$(bash .ci/docker-up.sh)"``):

- cold image build: no layer of the package stage cached (a cache-busting line in the
  requirements), the base image present; split into the package stage and the rest;
- warm rebuild after a score.py change: only the source layer and the labels are rebuilt;
- apply-to-healthy with the image already built: container start, init(), readiness, smoke test;
- the same two for the process engine: a new virtualenv (cold) and a cached one (warm).

It prints figures and asserts nothing. Everything it creates carries a project name of its own
and is destroyed at the end.

    python benchmarks/docker_bench.py [--runs 3]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import git  # noqa: E402

from planner.addresses import Address  # noqa: E402
from planner.project import Project  # noqa: E402
from providers.images import build as builds  # noqa: E402
from providers.images import engine  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = """\
version: 1
project: {project}
targets:
  box: {{provider: local, engine: docker}}
  dev: {{provider: local}}
models:
  ridge: {{path: examples/diabetes/model.pkl}}
environments:
  sklearn: {{python: "3.11", pip: [scikit-learn==1.9.1, joblib>=1.3]}}
services:
  diabetes-api:
    models: [ridge]
    environment: sklearn
    source_dir: examples/diabetes/src
    entry_script: score.py
    sample_request: examples/diabetes/sample-request.json
    target: {target}
    deploy: {{port: auto, auth: key}}
"""


class Steps:
    """A progress callback that keeps (elapsed, step) pairs, to say where the time went."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.marks: list[tuple[float, str]] = []

    def __call__(self, step: str) -> None:
        self.marks.append((time.perf_counter() - self.started, step))

    def at(self, prefix: str) -> float | None:
        return next((t for t, s in self.marks if s.startswith(prefix) or prefix in s), None)


def project_at(root: Path, project: str, target: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(ROOT / "examples", root / "examples", dirs_exist_ok=True)
    (root / "ml.yaml").write_text(MANIFEST.format(project=project, target=target))
    repo = git.Repo.init(root)
    repo.git.add(A=True)
    repo.index.commit("bench")
    return root / "ml.yaml"


def register_models(project: Project) -> None:
    for address, resource in project.desired().items():
        if address.kind == "model":
            project.store.apply_model(resource)


def service(project: Project):
    resource = project.desired()[Address("service", "diabetes-api")]
    return resource, project.providers[resource.target]


def cold_build(manifest: Path) -> tuple[float, float, float]:
    """(total, package stage, venv copy) seconds of a build with nothing of the package stage cached."""
    project = Project.load(manifest)
    register_models(project)
    resource, provider = service(project)
    recipe = provider.recipe(resource)
    bust = dataclasses.replace(recipe, packages=(*recipe.packages, f"# cold build {uuid.uuid4().hex}"),
                               tag=f"cold-{uuid.uuid4().hex[:8]}")
    steps = Steps()
    builds.build(engine.client(), bust, progress=steps, log_path=manifest.parent / "cold-build.log")
    total = time.perf_counter() - steps.started
    package_stage = (steps.at("step 7/") or total) - (steps.at("step 1/") or 0.0)
    venv_copy = (steps.at("step 9/") or total) - (steps.at("step 8/") or total)
    engine.client().images.remove(bust.ref, force=True)
    return total, package_stage, venv_copy


def warm_rebuild(manifest: Path, n: int) -> float:
    score = manifest.parent / "examples/diabetes/src/score.py"
    score.write_text(score.read_text() + f"\n# change {n}\n")
    project = Project.load(manifest)
    resource, provider = service(project)
    started = time.perf_counter()
    built = provider.ensure_image(resource, lambda _: None)
    assert built.built
    return time.perf_counter() - started


def apply_to_healthy(manifest: Path) -> tuple[float, Steps]:
    """Create the service with its image or venv already made; returns (seconds, steps)."""
    project = Project.load(manifest)
    register_models(project)
    resource, provider = service(project)
    if hasattr(provider, "ensure_image"):
        provider.ensure_image(resource, lambda _: None)
    steps = Steps()
    live = provider.create(resource, steps)
    seconds = time.perf_counter() - steps.started
    provider.delete(live, lambda _: None)
    return seconds, steps


def process_cold(manifest: Path) -> float:
    project = Project.load(manifest)
    register_models(project)
    resource, provider = service(project)
    steps = Steps()
    live = provider.create(resource, steps)
    seconds = time.perf_counter() - steps.started
    provider.delete(live, lambda _: None)
    return seconds


def destroy(manifest: Path) -> None:
    project = Project.load(manifest)
    for live in project.live().values():
        if live.address.kind == "service":
            project.provider_for(live).delete(live, lambda _: None)


def med(values: list[float]) -> str:
    return f"{statistics.median(values):6.2f} s" + (f"  (min {min(values):.2f}, max {max(values):.2f})"
                                                   if len(values) > 1 else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    engine.client()   # one clear line and exit 1 when there is no engine
    tmp = Path(tempfile.mkdtemp(prefix="mlops-docker-bench-"))
    os.environ["MLOPS_CACHE_DIR"] = str(tmp / "cache")
    project = f"bench-{uuid.uuid4().hex[:8]}"
    docker_manifest = project_at(tmp / "docker", project, "box")
    process_manifest = project_at(tmp / "process", project + "-p", "dev")
    try:
        print(f"engine: {engine.docker_host()}  runs: {args.runs}\n")
        cold = [cold_build(docker_manifest) for _ in range(args.runs)]
        print(f"cold image build (package stage uncached)   {med([c[0] for c in cold])}")
        print(f"  of which the package stage (venv + pip)    {med([c[1] for c in cold])}")
        print(f"  of which copying the venv to the final stage {med([c[2] for c in cold])}")
        warm_rebuild(docker_manifest, -1)   # the service's own image, so the next ones start warm
        warm = [warm_rebuild(docker_manifest, n) for n in range(args.runs)]
        print(f"warm rebuild after a score.py change         {med(warm)}")
        applies = [apply_to_healthy(docker_manifest) for _ in range(args.runs)]
        print(f"docker: apply-to-healthy, image built         {med([a[0] for a in applies])}")
        s = applies[-1][1]
        start, ready, smoke = s.at("starting container"), s.at("waiting for readiness"), s.at("sending the sample")
        if None not in (start, ready, smoke):
            print(f"  container create+start {ready - start:.2f} s, init()+readiness {smoke - ready:.2f} s, "
                  f"smoke test {applies[-1][0] - smoke:.2f} s")
        pcold = process_cold(process_manifest)
        print(f"process: apply-to-healthy, new virtualenv    {pcold:6.2f} s")
        pwarm = [apply_to_healthy(process_manifest) for _ in range(args.runs)]
        print(f"process: apply-to-healthy, venv cached        {med([p[0] for p in pwarm])}")
    finally:
        destroy(docker_manifest)
        destroy(process_manifest)
        cli = engine.client()
        for image in cli.images.list(all=True, filters={"label": f"mlops.project={project}"}):
            with contextlib.suppress(Exception):  # removed with a parent already
                cli.images.remove(image.id, force=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
