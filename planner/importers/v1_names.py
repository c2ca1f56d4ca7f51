"""Names for what the import generates: the rules for model and service names, a service name
derived from the files when none is given, and the environment variable prefix for its keys.

Azure ML's service-name rule (3-32 lowercase letters, digits and dashes) is stricter than most
file and folder names, so names are checked or normalised here, in one place.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import MlopsError
from ..yamlpos import one_line

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}\Z")
_DNS = re.compile(r"^[a-z][a-z0-9-]{1,30}[a-z0-9]\Z")


def _dns(name: str, what: str) -> str:
    if not _DNS.match(name):
        raise MlopsError(
            f"{what} {one_line(name, 60)!r} is not a valid service name: 3-32 lowercase letters, digits "
            "and dashes, starting with a letter (pass --service NAME)"
        )
    return name


_GENERIC_FOLDERS = frozenset(
    {"scoring", "score", "src", "source", "sources", "source_dir", "app", "code", "deploy", "deployment",
     "inference", "service", "scripts", "model", "models"}
)
"""Folder names that say nothing about the service; the search goes up past them."""
_CONFIG_WORDS = re.compile(r"inference|configuration|config|deployment|deploy")
_MEANINGLESS_STEMS = frozenset({"ic", "dc", "cfg", "conf", "my", "default", "file"})


def service_name_from(text: str) -> str | None:
    """``text`` normalised to Azure ML's service-name rule (3-32 lowercase letters, digits and
    dashes, starting with a letter, not ending with a dash), or None when nothing is left."""
    name = re.sub(r"[^a-z0-9]+", "-", text.lower())
    name = re.sub(r"^[^a-z]+", "", name)[:32].rstrip("-")
    if not name:
        return None
    if len(name) < 3:
        name = f"{name}-svc"
    return name


def derive_service_name(inference_config: Path, entry_script: Path, project: Path) -> tuple[str, str]:
    """A service name when none is given, and what it was taken from, the first that gives one:

    1. the inference config's file name without the words inference/config/deployment
       (``diabetes_inference_config.json`` -> ``diabetes``; ``ic.json`` and the like say nothing);
    2. the entry script's folder, then its parents up to the project folder (the folder of
       ``ml.yaml``), skipping generic names such as ``scoring``, ``src`` or ``source_dir``
       (MLOpsPython's ``diabetes_regression/scoring/score.py`` -> ``diabetes-regression``);
    3. the entry script's file name, unless it is ``score``/``main``/``entry``;
    4. ``ml-service``.

    Each is normalised by :func:`service_name_from`.
    """
    stem = re.sub(r"[^a-z0-9]+", " ", _CONFIG_WORDS.sub("", inference_config.stem.lower())).strip()
    name = service_name_from(stem) if stem not in _MEANINGLESS_STEMS else None
    if name:
        return name, f"the inference config's file name {inference_config.name!r}"
    folder = entry_script.parent.resolve()
    root = project.resolve()
    while folder.is_relative_to(root):
        if folder.name.lower() not in _GENERIC_FOLDERS and (name := service_name_from(folder.name)):
            return name, f"the folder {folder.name}"
        if folder == root:
            break
        folder = folder.parent
    if entry_script.stem.lower() not in ("score", "main", "entry", "entry_script", "scoring") and (
        name := service_name_from(entry_script.stem)
    ):
        return name, f"the entry script {entry_script.name}"
    return "ml-service", "nothing more specific (no telling folder or file name)"


def _env_key(service: str) -> str:
    return re.sub(r"[^A-Z0-9]", "_", service.upper())
