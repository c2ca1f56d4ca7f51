"""Azure ML v1 deployment files -> an ``ml.yaml``: what ``mlops import`` does, as pure functions.

Reads ``inferenceconfig.json`` (entry script, source folder, environment), one or more
``deploymentconfig.json`` files (``computeType`` local / ACI / AKS), each JSON or YAML (as
``az ml model deploy --ic/--dc`` took them; MLOpsPython ships ``inference_config.yml`` and
``deployment_config_aci.yml``), and ``az ml model deploy`` /
``az ml model register`` lines, and returns the manifest text, its data and warnings. Nothing
here prints; bad input raises ``MlopsError`` with one line (``file:line:col: message`` for a
bad file, ``V1ConfigError``).

Decisions (the README's "Coming from Azure ML v1" says the same):

* **One service per stage.** A service in ``ml.yaml`` runs on one target with one ``deploy``
  block, and v1 stages (local, ACI, AKS) each had their own deployment settings, so each
  deployment config becomes its own target and its own service, all sharing the models, the
  environment and the source folder; one ``mlops plan`` shows every stage. With one deployment
  config the service keeps its name; with several, each is ``<name>-<stage>``.
* **Targets that exist.** Each stage's target uses the provider of its ``computeType`` when one
  is installed; otherwise the nearest installed one (a local Docker container for ACI/AKS, a
  local process for ``local``), so the manifest validates and runs today. Settings the chosen
  target cannot take are listed as comments in the service and as warnings.
* **Secrets stay out.** Keys in ``keys.primaryKey`` become ``${VAR}`` references; registry
  passwords are not imported; no value of either is ever in a message.
* **Idempotent.** Importing the same files again gives the same text; importing into an
  existing ``ml.yaml`` adds or replaces only the entries the import generates, keeping the rest
  of the file (and its comments) as it was.

The work is split by job: ``v1_config`` reads one v1 file (JSON or YAML, with limits),
``v1_az`` parses ``az ml model`` lines, ``v1_inference`` the inference config and its
environment, ``v1_deploy`` turns a deployment config into a stage, ``v1_names`` checks and
derives names, and ``v1_writer`` writes or merges the ``ml.yaml`` text; this module puts them
together (``import_v1``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import MlopsError
from ..urlmask import mask_url_credentials
from ..yamlpos import one_line
from .pincheck import IndexConfig, check_pins, pip_index_config
from .v1_az import _Az, parse_az
from .v1_config import V1ConfigError, _shown, read_config
from .v1_deploy import DeployFields, _installed_deploy_fields, _stage
from .v1_inference import _inference
from .v1_names import _NAME, _dns, _env_key, derive_service_name, service_name_from
from .v1_writer import Imported, _merge, write

__all__ = [
    "DeployFields",
    "Imported",
    "V1ConfigError",
    "derive_service_name",
    "import_v1",
    "parse_az",
    "read_config",
    "service_name_from",
    "write",
]


def import_v1(
    *,
    inference_config: Path | None,
    deploy_configs: Sequence[Path] = (),
    models: Sequence[str] = (),
    service: str | None = None,
    from_az: Sequence[str] = (),
    output: Path,
    deploy_fields: DeployFields | None = None,
    pin_index: Callable[[], IndexConfig | None] | None = None,
) -> Imported:
    """The manifest for these v1 files, merged into ``output`` when it exists (see the module doc).

    ``models`` are ``NAME=PATH`` (relative to the working directory); ``from_az`` are ``az ml model
    deploy/register`` lines whose ``--ic``/``--dc`` files, service name and models are used when
    not given directly. ``deploy_fields`` tells which deploy settings a target takes (default:
    ask the installed providers); ``pin_index`` where the environment's pins are checked (default:
    the index pip is configured with).
    """
    fields = deploy_fields or _installed_deploy_fields
    warnings: list[str] = []
    az = _Az()
    lines: list[_Az] = []
    for line in from_az:
        parsed = parse_az(line)
        az.registered.update(parsed.registered)
        if parsed.registered:
            continue
        lines.append(parsed)
        az.models += [m for m in parsed.models if m not in az.models]
    ic_paths = list(dict.fromkeys(Path(x.inference_config) for x in lines if x.inference_config))
    if inference_config is None and len({p.resolve() for p in ic_paths}) > 1:
        raise MlopsError(
            f"--from-az: the deploy lines name {len(ic_paths)} inference configs "
            f"({', '.join(map(str, ic_paths))}): import one at a time, or pass --inference-config FILE"
        )
    ic_path = inference_config or (ic_paths[0] if ic_paths else None)
    if ic_path is None:
        raise MlopsError(
            "no inference configuration: pass --inference-config FILE (or an `az ml model deploy "
            "--ic FILE` line with --from-az)"
        )
    # One stage per deploy line (in order) and per --deploy-config; a --deploy-config repeating a
    # line's file is that line's stage.
    stage_names: dict[tuple[Path, str | None], None] = {}
    for x in lines:
        if x.deploy_config:
            stage_names[(Path(x.deploy_config), x.service)] = None
    for dc in deploy_configs:
        if not any(p.resolve() == dc.resolve() for p, _ in stage_names):
            stage_names[(dc, None)] = None
    wanted_stages = list(stage_names)
    if not wanted_stages:
        raise MlopsError("no deployment configuration: pass --deploy-config FILE (one per stage)")
    if service:
        _dns(service, "service name")
    else:  # --service overrides the lines' names: only the names that will be used are checked
        for x in lines:
            if x.service:
                _dns(x.service, "`az ml model deploy -n`")
    # Deploy lines naming different services keep their names (MLOpsPython's mlops-aci and
    # mlops-aks); otherwise the stages are NAME-<computeType>.
    own = [n for _, n in wanted_stages]
    own_names = not service and len(own) > 1 and None not in own and len(set(own)) == len(own)
    line_names = list(dict.fromkeys(x.service for x in lines if x.service))
    given = service or (line_names[0] if len(line_names) == 1 else None)

    out_dir = output.absolute().parent
    model_entries: dict[str, dict[str, Any]] = {}
    model_sources: dict[str, str] = {}
    for spec in models:
        model, eq, model_path = spec.partition("=")
        if not eq or not model or not model_path:
            raise MlopsError(f"--model {one_line(spec, 80)!r}: write it as NAME=PATH (e.g. ridge=models/ridge.pkl)")
        model_entries[model] = {"path": model_path}
        model_sources[model] = f"from --model {model}={model_path}"
    for model, entry in az.registered.items():
        if model not in model_entries:
            model_entries[model] = dict(entry)
            model_sources[model] = f"from `az ml model register -n {model}`"
    wanted = list(dict.fromkeys([*az.models, *model_entries]))
    if not wanted:
        raise MlopsError("no model: pass --model NAME=PATH (or `az ml model register -n NAME -p PATH` with --from-az)")
    for model in wanted:
        if not _NAME.match(model):
            raise MlopsError(f"model name {one_line(model, 60)!r} is invalid: letters, digits, '.', '_' and '-'")
        if model not in model_entries:
            raise MlopsError(
                f"model {model!r} (from `az ml model deploy -m {model}:…`) has no files: pass --model "
                f"{model}=PATH or its `az ml model register` line"
            )
        path = Path(model_entries[model]["path"]).absolute()
        if not path.exists():
            raise MlopsError(f"--model {model}: {path} does not exist")
        model_entries[model]["path"] = _relative(path, out_dir)

    inference = _inference(ic_path, out_dir, warnings)
    name = given
    if name is None:
        name, reason = derive_service_name(ic_path, inference.source_dir / inference.entry_script, out_dir)
        if not own_names:
            why = (
                f"the deploy lines name {', '.join(map(repr, line_names))}, not one for every stage"
                if line_names
                else "no service name given"
            )
            warnings.append(f"{why}: named the service {name!r} after {reason} (pass --service NAME to choose another)")
    env_name = inference.env_name if inference.env_name and _NAME.match(inference.env_name) else name
    if inference.pip:
        index = (pin_index or pip_index_config)()
        where = f"{_shown(ic_path)}: environment"
        warnings += [f"{where}: {w}" for w in check_pins(inference.pip, inference.python, index)]
    environment: dict[str, Any] = {"python": inference.python}
    if inference.pip:
        environment["pip"] = inference.pip
    if inference.base_image:
        environment["base_image"] = inference.base_image

    stages = [_stage(p, fields, _env_key(own_name if own_names else name), warnings) for p, own_name in wanted_stages]
    counts: dict[str, int] = {}
    for stage in stages:
        counts[stage.compute] = counts.get(stage.compute, 0) + 1
    seen: dict[str, int] = {}
    entries: list[tuple[str, str, dict[str, Any], list[str]]] = []
    sources = [_shown(ic_path), *(s.file for s in stages)]
    for model in wanted:
        entries.append(("models", model, model_entries[model], [model_sources[model]]))
    entries.append(("environments", env_name, environment, [f"from {_shown(ic_path)} (environment)"]))
    for stage, (_, own_name) in zip(stages, wanted_stages, strict=True):
        seen[stage.compute] = seen.get(stage.compute, 0) + 1
        suffix = stage.compute if counts[stage.compute] == 1 else f"{stage.compute}{seen[stage.compute]}"
        target = suffix
        if own_names and own_name:
            svc = own_name
        else:
            # The stage's suffix is what tells services apart: cut the name, never the suffix.
            svc = name if len(stages) == 1 else \
                _dns(f"{name[:max(0, 31 - len(suffix))].rstrip('-')}-{suffix}", "service name")
        comments = [f"from {stage.file} (computeType {stage.compute})", *stage.target_notes]
        entries.append(("targets", target, stage.target_config, comments))
        service_entry: dict[str, Any] = {
            "models": wanted,
            "environment": env_name,
            "source_dir": _relative(inference.source_dir, out_dir),
            "entry_script": inference.entry_script,
            "target": target,
        }
        deploy = dict(stage.deploy)
        if inference.variables:
            deploy["environment_variables"] = dict(sorted(inference.variables.items()))
        if deploy:
            service_entry["deploy"] = deploy
        comments = [f"from {_shown(ic_path)} + {stage.file}"]
        comments += [f"not carried over: {note}" for note in stage.notes]
        entries.append(("services", svc, service_entry, comments))
    result = _merge(output, name, entries, sources, warnings)
    return dataclasses.replace(result, warnings=[mask_url_credentials(w) for w in result.warnings])


def _relative(path: Path, base: Path) -> str:
    try:
        return Path(path).resolve().relative_to(base.resolve()).as_posix() or "."
    except ValueError:
        return Path(os.path.relpath(Path(path).resolve(), base.resolve())).as_posix()
