"""What goes into a service's image, and under which name: the recipe, the Dockerfile, the context.

An image is content-addressed: its tag is a digest of exactly what the image is made of (the
environment, the runtime version, the source files, the model versions, the entry script and
this recipe's own version), all of which a service spec already carries as digests. The same
inputs give the same tag, so an unchanged service never rebuilds, and a tag that changes in the
plan means something inside the image changed.

Layers go from what changes least to what changes most: base, packages (one virtualenv), the
scoring runtime, the settings (environment, entry point), the models, the source folder, and the
labels that name this very build. A change of score.py or of a model therefore
reuses the package layer. The packages are installed in a separate build stage that alone sees
the host's pip settings (they may hold index credentials); the final image copies only the venv.
"""

from __future__ import annotations

import io
import json
import tarfile
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from planner.core.hashing import digest, iter_files

from ..base import ProviderError
from ..bundle import PACKAGE_NAME, requirements, runtime_dir
from .engine import label
from .pipconf import PipSettings

DEFAULT_BASE_IMAGE = "mlops/python-base:bookworm"
"""Debian bookworm (minbase) with python3 3.11, venv, pip and CA certificates, built from Debian's
packages by ``.ci/docker-up.sh`` (no registry needed). Override per environment with ``base_image:``."""

RECIPE_VERSION = 2
"""Bump when the Dockerfile below changes, so every image tag changes with it."""

APP_ROOT = "/var/azureml-app"
MODELS_ROOT = f"{APP_ROOT}/azureml-models"
VENV = "/opt/venv"
RUNTIME_PATH = "/opt/mlops"
TAG_LENGTH = 16
IDENTITY_KEYS = ("models", "environment", "source", "entry_script", "runtime")


def image_tag(spec: Mapping[str, Any]) -> str:
    """The content address of a service's image: a digest of what the image is made of."""
    return digest({"recipe": RECIPE_VERSION, **{k: spec.get(k) for k in IDENTITY_KEYS}})[:TAG_LENGTH]


def image_repository(project: str, service: str, registry: str | None = None) -> str:
    """``<project>/<service>``, prefixed with the registry when the target pushes to one."""
    repo = f"{project}/{service}"
    return f"{registry.rstrip('/')}/{repo}" if registry else repo


@dataclass(frozen=True)
class ModelFiles:
    name: str
    version: int
    path: Path                   # the registered version's folder (holds the file or folder by its name)
    source: Path | None = None   # the manifest's file or folder, used when not registered yet (`mlops build`)


@dataclass(frozen=True)
class Recipe:
    """Everything a build needs, resolved to local files."""

    repository: str
    tag: str
    base_image: str
    python: str
    packages: tuple[str, ...]
    models: tuple[ModelFiles, ...]
    source_dir: Path
    entry_script: str
    labels: Mapping[str, str] = field(default_factory=dict)
    deps_labels: Mapping[str, str] = field(default_factory=dict)
    index_url: str | None = None
    """The environment's pip_index_url: its own packages come from there, the runtime's from the
    machine's index. None: one install of everything, as before."""
    own_packages: int = 0
    """How many of ``packages`` (the first ones) are the environment's own."""

    @property
    def ref(self) -> str:
        return f"{self.repository}:{self.tag}"

    @property
    def model_dir(self) -> str:
        """Azure ML's layout: one model -> its version folder; several -> the models root."""
        if len(self.models) == 1:
            m = self.models[0]
            return f"{MODELS_ROOT}/{m.name}/{m.version}"
        return MODELS_ROOT


def recipe_for(*, project: str, service: str, spec: Mapping[str, Any], inputs: Mapping[str, Any],
               registry: str | None, git: Mapping[str, Any],
               model_sources: Mapping[str, Path] | None = None) -> Recipe:
    env = inputs["environment"]
    tag = image_tag(spec)
    common = {label("project"): project, label("service"): service}
    return Recipe(
        repository=image_repository(project, service, registry),
        tag=tag,
        base_image=env.get("base_image") or DEFAULT_BASE_IMAGE,
        python=str(env.get("python", "3.11")),
        packages=(*env.get("pip", []), *requirements()),
        index_url=env.get("pip_index_url") or None,
        own_packages=len(env.get("pip", [])),
        models=tuple(ModelFiles(n, int(m["version"]), Path(m["path"]), (model_sources or {}).get(n))
                     for n, m in sorted(inputs["models"].items())),
        source_dir=Path(inputs["source_dir"]),
        entry_script=inputs["entry_script"],
        labels={**common, label("fingerprint"): tag, label("runtime"): str(spec.get("runtime", "")),
                label("git-commit"): str(git.get("commit") or ""), label("role"): "service"},
        deps_labels={**common, label("role"): "packages", label("environment"): str(spec.get("environment", ""))},
    )


def _q(value: str) -> str:
    return json.dumps(value)


def dockerfile(recipe: Recipe) -> str:
    entry = f"{APP_ROOT}/{recipe.entry_script}"
    check = (f"import sys; v = '%d.%d' % sys.version_info[:2]; "
             f"sys.exit(0 if v == '{recipe.python}' else "
             f"'the base image {recipe.base_image} has Python ' + v + ', the environment asks for {recipe.python}')")
    deps_labels = " ".join(f"{k}={_q(v)}" for k, v in sorted(recipe.deps_labels.items()))
    labels = " ".join(f"{k}={_q(v)}" for k, v in sorted(recipe.labels.items()))
    cmd = ["--entry-script", entry, "--model-dir", recipe.model_dir, "--host", "0.0.0.0", "--port", "5001"]
    return "\n".join([
        "# Generated by mlops; the tag of the image it builds is a digest of these inputs.",
        f"FROM {recipe.base_image} AS packages",
        f"RUN [\"python3\", \"-c\", {_q(check)}]",
        "COPY pip/ /etc/mlops-pip/",
        "COPY requirements.txt /tmp/mlops-requirements.txt",
        *(["COPY runtime-requirements.txt /tmp/mlops-runtime-requirements.txt"] if recipe.index_url else []),
        f"RUN PIP_CONFIG_FILE=/etc/mlops-pip/pip.conf python3 -m venv {VENV} && "
        + _pip_installs(recipe),
        f"LABEL {deps_labels}",
        "",
        f"FROM {recipe.base_image}",
        f"COPY --from=packages {VENV} {VENV}",
        f"COPY runtime/ {RUNTIME_PATH}/{PACKAGE_NAME}/",
        f"ENV PATH={VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "
        f"PYTHONPATH={RUNTIME_PATH} PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 "
        f"AML_APP_ROOT={APP_ROOT} AZUREML_ENTRY_SCRIPT={_q(recipe.entry_script)} "
        f"AZUREML_MODEL_DIR={_q(recipe.model_dir)}",
        f"WORKDIR {APP_ROOT}",
        f"ENTRYPOINT [\"{VENV}/bin/python\", \"-m\", \"{PACKAGE_NAME}\"]",
        f"CMD {json.dumps(cmd)}",
        f"COPY models/ {MODELS_ROOT}/",
        f"COPY app/ {APP_ROOT}/",
        f"LABEL {labels}",
        "",
    ])


def _pip_installs(recipe: Recipe) -> str:
    pip = f"PIP_CONFIG_FILE=/etc/mlops-pip/pip.conf {VENV}/bin/pip install --no-cache-dir"
    if recipe.index_url is None:
        return f"{pip} -r /tmp/mlops-requirements.txt"
    steps = [f"{pip} -r /tmp/mlops-runtime-requirements.txt"]
    if recipe.own_packages:
        steps.insert(0, f"{pip} --index-url {_q(recipe.index_url)} -r /tmp/mlops-requirements.txt")
    return " && ".join(steps)


def _requirement_files(recipe: Recipe) -> dict[str, tuple[str, ...]]:
    """requirements.txt (all, or with an index: the environment's own) and the runtime's apart."""
    if recipe.index_url is None:
        return {"requirements.txt": recipe.packages}
    return {"requirements.txt": recipe.packages[:recipe.own_packages],
            "runtime-requirements.txt": recipe.packages[recipe.own_packages:]}


def _normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """Same bytes -> same context entry: no owners or times, so layer caching sees content only."""
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    if info.isfile():
        info.mode = 0o755 if info.mode & 0o111 else 0o644
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = _normalise(tarfile.TarInfo(name))
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _add_tree(tar: tarfile.TarFile, root: Path, prefix: str) -> None:
    """The files the content hash covers (same skip rules), so the image holds what was hashed."""
    base = root if root.is_dir() else root.parent
    files = iter_files(root)
    # Explicit folder entries: an implicit one would get the extraction time, and the builder's
    # cache key for COPY covers folder headers too, so the layer would never be reused.
    folders = {prefix}
    for f in files:
        parts = f.relative_to(base).parts[:-1]
        folders.update(f"{prefix}/{'/'.join(parts[:i])}" for i in range(1, len(parts) + 1))
    for folder in sorted(folders):
        _add_folder(tar, folder)
    for f in files:
        tar.add(str(f), arcname=f"{prefix}/{f.relative_to(base).as_posix()}", recursive=False, filter=_normalise)


def _add_folder(tar: tarfile.TarFile, name: str) -> None:
    info = _normalise(tarfile.TarInfo(name))
    info.type, info.mode = tarfile.DIRTYPE, 0o755
    tar.addfile(info)


def build_context(recipe: Recipe, pip: PipSettings) -> IO[bytes]:
    """The build context as an uncompressed tar, spooled to disk past 64 MB."""
    spool = tempfile.SpooledTemporaryFile(max_size=64 << 20)  # noqa: SIM115 - the caller closes it
    with tarfile.open(fileobj=spool, mode="w") as tar:
        _add_bytes(tar, "Dockerfile", dockerfile(recipe).encode())
        for name, packages in _requirement_files(recipe).items():
            _add_bytes(tar, name, ("\n".join(packages) + "\n").encode())
        _add_bytes(tar, "pip/pip.conf", pip.conf.encode())
        _add_bytes(tar, "pip/ca.pem", pip.ca_bundle)
        for folder in ("models", "app"):   # COPY needs them even when empty
            _add_folder(tar, folder)
        _add_tree(tar, runtime_dir(), "runtime")
        for m in recipe.models:
            _add_folder(tar, f"models/{m.name}")
            prefix = f"models/{m.name}/{m.version}"
            if m.path.is_dir():
                _add_tree(tar, m.path, prefix)
            elif m.source is not None and m.source.exists():
                # Same bytes as the version to be registered (the plan hashed them): same layout.
                _add_folder(tar, prefix)
                _add_tree(tar, m.source, f"{prefix}/{m.source.name}" if m.source.is_dir() else prefix)
            else:
                raise ProviderError(f"model {m.name} version {m.version} is not registered; apply the model first")
        _add_tree(tar, recipe.source_dir, "app")
    spool.seek(0)
    return spool
