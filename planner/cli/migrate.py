"""`mlops import`: Azure ML v1 deployment files (or `az ml model deploy` lines) -> ml.yaml."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "import",
        parents=[common],
        help="write (or add to) an ml.yaml from Azure ML v1 inference/deployment configs",
        description="Convert Azure ML v1 files into an ml.yaml: one target and one service per deployment "
        "config (stage), sharing the models, the environment and the source folder. Re-importing the "
        "same files changes nothing.",
    )
    p.set_defaults(handler=cmd_import)
    p.add_argument(
        "--inference-config",
        "--ic",
        type=Path,
        metavar="FILE",
        help="v1 inference config, JSON or YAML (inferenceconfig.json, inference_config.yml)",
    )
    p.add_argument(
        "--deploy-config",
        "--dc",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="v1 deployment config, JSON or YAML (computeType local, ACI or AKS); repeat for each stage",
    )
    p.add_argument(
        "--model", action="append", default=[], metavar="NAME=PATH", help="a model and its files; repeatable"
    )
    p.add_argument(
        "--service",
        metavar="NAME",
        help="service name (default: the --from-az -n, else derived from the inference config's file name or "
        "the entry script's folder, and said in a warning)",
    )
    p.add_argument(
        "--from-az",
        action="append",
        default=[],
        metavar="COMMAND",
        help="an `az ml model deploy ...` or `az ml model register ...` line, quoted; repeatable",
    )
    p.add_argument("-o", "--output", type=Path, metavar="FILE", help="manifest to write or add to (default: -f)")


def cmd_import(args: argparse.Namespace) -> int:
    from ..errors import MlopsError
    from ..importers.azureml_v1 import import_v1, write  # here, not at the top: `mlops --help` stays light
    from ..manifest import load_manifest
    from ..urlmask import mask_url_credentials

    output: Path = args.output or args.file
    try:
        result = import_v1(
            inference_config=args.inference_config,
            deploy_configs=args.deploy_config,
            models=args.model,
            service=args.service,
            from_az=args.from_az,
            output=output,
        )
    except MlopsError as exc:  # an index or file URL with a login may be in what the user passed
        raise MlopsError(mask_url_credentials(str(exc))) from None
    for warning in result.warnings:
        print(f"Warning: {warning}", file=sys.stderr)
    if not result.changed:
        print(f"{output}: already up to date (nothing to import).")
        return 0
    write(result, output)
    manifest = load_manifest(output)
    services = sorted(manifest.section("services"))
    print(f"Wrote {output}: {len(services)} service(s) ({', '.join(services)}); next: mlops plan -f {output}")
    return 0
