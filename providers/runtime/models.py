"""``--model NAME[:VERSION]=PATH``: lay models out for ``mlops serve`` exactly as a deployment does.

Every target gives the script Azure ML's layout (the local target's ``_model_dir``, the docker
image's ``MODELS_ROOT``), where a registered file or folder keeps its own name inside its version
folder:

* one model: ``AZUREML_MODEL_DIR`` is its version folder, so a file model is
  ``$AZUREML_MODEL_DIR/model.pkl`` and a folder model ``$AZUREML_MODEL_DIR/<folder name>/…``;
* several: ``AZUREML_MODEL_DIR`` is the models root, and each is
  ``$AZUREML_MODEL_DIR/<name>/<version>/<file or folder name>``.

So a script debugged with ``mlops serve --model …`` finds its files where a deployment puts them.
The layout is made of symbolic links in a temporary folder: nothing is copied, edits show at once.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

_SPEC = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?::(?P<version>[0-9]+))?=(?P<path>.+)\Z", re.DOTALL)


class ModelSpecError(ValueError):
    """A ``--model`` value the runtime cannot use; the message says which and why."""


@dataclass(frozen=True)
class ModelArg:
    name: str
    version: int
    path: Path


def parse(value: str) -> ModelArg:
    """``NAME[:VERSION]=PATH`` (version 1 when left out) -> ModelArg; raises ModelSpecError."""
    found = _SPEC.match(value)
    if found is None:
        raise ModelSpecError(f"--model {value!r}: expected NAME=PATH or NAME:VERSION=PATH")
    path = Path(found["path"]).expanduser().resolve()
    if not path.exists():
        raise ModelSpecError(f"--model {found['name']}: {found['path']} does not exist")
    return ModelArg(found["name"], int(found["version"] or 1), path)


def lay_out(models: list[ModelArg]) -> tuple[Path, Path]:
    """A temporary folder laid out as a deployment's models: returns (the folder, which the caller
    removes when done; the directory to give the script as ``AZUREML_MODEL_DIR``)."""
    names = [m.name for m in models]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ModelSpecError(f"--model {duplicated[0]} is given more than once")
    root = Path(tempfile.mkdtemp(prefix="mlops-serve-models-"))
    for model in models:
        _link(root / model.name / str(model.version), model.path)
    if len(models) == 1:
        return root, root / models[0].name / str(models[0].version)
    return root, root


def _link(version_dir: Path, target: Path) -> None:
    version_dir.mkdir(parents=True, exist_ok=True)
    (version_dir / target.name).symlink_to(target, target_is_directory=target.is_dir())
