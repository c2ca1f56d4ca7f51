"""Building and pushing images through the engine, with progress, a kept log and clear failures.

The engine streams a build as JSON messages; each ``Step i/n`` becomes a progress line, every
line goes to the service's build log (read back by ``mlops logs --build``), and a failed build
raises with the step that failed and the last error lines of its output (pip's ``ERROR:`` lines
when there are some) instead of the engine's generic "returned a non-zero code".
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..base import ProviderError
from .engine import label
from .pipconf import host_pip_settings
from .recipe import DEFAULT_BASE_IMAGE, Recipe, build_context

Progress = Callable[[str], None]
STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)\Z")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
REGISTRY_USER_ENV = "MLOPS_REGISTRY_USERNAME"
REGISTRY_PASSWORD_ENV = "MLOPS_REGISTRY_PASSWORD"


@dataclass(frozen=True)
class BuiltImage:
    """The outcome of making sure an image exists (and, with a registry, was pushed)."""

    ref: str                  # repository:tag
    image_id: str
    built: bool               # False when the tag already existed in the engine
    seconds: float
    digest_ref: str | None = None   # repository@sha256:..., set after a push
    cached_steps: int = 0
    steps: int = 0


def find_image(cli: Any, recipe: Recipe) -> Any | None:
    """The engine's image for this recipe, if one exists with our fingerprint label."""
    import docker.errors

    try:
        image = cli.images.get(recipe.ref)
    except docker.errors.ImageNotFound:
        return None
    if (image.labels or {}).get(label("fingerprint")) != recipe.tag:
        return None   # something else wears our name; rebuild over it
    return image


def ensure_base(cli: Any, base: str, progress: Progress) -> None:
    import docker.errors

    try:
        cli.images.get(base)
        return
    except docker.errors.ImageNotFound:
        pass
    if base == DEFAULT_BASE_IMAGE:
        raise ProviderError(f"the default base image {base} is not in the Docker engine; set base_image: on the "
                            "environment to a Python image of its version, e.g. base_image: python:3.11-slim "
                            "(the engine pulls it)")
    progress(f"pulling base image {base}")
    try:
        cli.images.pull(base)
    except docker.errors.APIError as exc:
        raise ProviderError(f"base image {base} is not in the Docker engine and could not be pulled: "
                            f"{exc.explanation or exc}") from None


def build(cli: Any, recipe: Recipe, *, progress: Progress, log_path: Path) -> BuiltImage:
    """Build ``recipe`` unless its tag exists already; every output line goes to ``log_path``."""
    started = time.monotonic()
    existing = find_image(cli, recipe)
    if existing is not None:
        return BuiltImage(recipe.ref, existing.id, built=False, seconds=time.monotonic() - started)
    ensure_base(cli, recipe.base_image, progress)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    context = build_context(recipe, host_pip_settings())
    step, total, instruction, cached = 0, 0, "", 0
    output: list[str] = []        # lines of the current step, for the error message
    image_id = None
    error = None
    with context, log_path.open("w") as log:
        log.write(f"--- mlops: building {recipe.ref} from {recipe.base_image} "
                  f"({time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())})\n")
        stream = cli.api.build(fileobj=context, custom_context=True, tag=recipe.ref,
                               rm=True, forcerm=True, pull=False, network_mode="host", decode=True)
        for event in stream:
            if "error" in event:
                error = (event.get("errorDetail") or {}).get("message") or event["error"]
                log.write(f"ERROR: {error}\n")
                continue
            if "aux" in event and isinstance(event["aux"], dict) and event["aux"].get("ID"):
                image_id = event["aux"]["ID"]
            text = ANSI.sub("", event.get("stream", ""))
            if not text:
                continue
            log.write(text)
            for line in text.splitlines():
                m = STEP.match(line.strip())
                if m:
                    step, total, instruction = int(m.group(1)), int(m.group(2)), m.group(3)
                    output = []
                    progress(f"building image {recipe.tag}: step {step}/{total} {_short(instruction)}")
                elif line.strip() == "---> Using cache":
                    cached += 1
                elif line.strip() and not line.lstrip().startswith("--->"):
                    output.append(line.rstrip())
        log.flush()
    if error or image_id is None:
        raise ProviderError(_failure(recipe, step, total, instruction, output, error or "no image produced"))
    return BuiltImage(recipe.ref, image_id, built=True, seconds=time.monotonic() - started,
                      cached_steps=cached, steps=total)


def _short(instruction: str, width: int = 60) -> str:
    one = " ".join(instruction.split())
    return one if len(one) <= width else one[: width - 3] + "..."


def _failure(recipe: Recipe, step: int, total: int, instruction: str, output: list[str], error: str) -> str:
    """One line: which step failed and its most telling output lines (pip's ERROR lines first)."""
    lines = [ln.strip() for ln in output if ln.strip()]
    errors = [ln[:300] for ln in lines if ln.startswith("ERROR:") and "(from line" not in ln]
    # pip's other output can quote files or the environment: a pip step shows its ERROR lines only.
    telling = (errors or ([] if "pip install" in instruction else lines))[-3:]
    if "pip install" in instruction:
        what = "pip install"
    elif "python3\", \"-c\"" in instruction or "sys.version_info" in instruction:
        what = "Python version check"
    else:
        what = _short(instruction, 40)
    where = f"step {step}/{total} ({what})" if step else "the start"
    detail = " | ".join(telling) if telling else error
    return (f"image build of {recipe.ref} failed at {where}: {detail} "
            f"(full log: mlops logs --build {recipe.labels.get(label('service'), '')})")


def registry_auth() -> dict[str, str] | None:
    """Credentials for pushes, from the environment only (never from the manifest, never printed)."""
    user, password = os.environ.get(REGISTRY_USER_ENV), os.environ.get(REGISTRY_PASSWORD_ENV)
    if user and password:
        return {"username": user, "password": password}
    return None


def push(cli: Any, recipe: Recipe, *, progress: Progress, log_path: Path) -> str:
    """Push ``recipe.ref`` to its registry; returns ``repository@sha256:...``."""
    progress(f"pushing {recipe.ref}")
    digest = None
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a") as log:
        log.write(f"--- mlops: pushing {recipe.ref}\n")
        for event in cli.api.push(recipe.repository, tag=recipe.tag, stream=True, decode=True,
                                  auth_config=registry_auth()):
            if "error" in event:
                message = (event.get("errorDetail") or {}).get("message") or event["error"]
                log.write(f"ERROR: {message}\n")
                raise ProviderError(f"push of {recipe.ref} failed: {message}"
                                    + ("" if registry_auth() else
                                       f" (credentials come from {REGISTRY_USER_ENV}/{REGISTRY_PASSWORD_ENV})"))
            aux = event.get("aux")
            if isinstance(aux, dict) and aux.get("Digest"):
                digest = aux["Digest"]
            if event.get("status") and event.get("id") is None:
                log.write(event["status"] + "\n")
    if not digest:
        raise ProviderError(f"push of {recipe.ref} ended without a digest from the registry")
    return f"{recipe.repository}@{digest}"
