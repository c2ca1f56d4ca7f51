"""The `mlops` command: the only package that prints or exits.

Each command group lives in its own module with ``register(sub, common)``; this module builds
the parser, runs the chosen handler and turns known errors into one line and an exit code a CI
script can act on (documented in the README):

    0 success / no changes      2 changes present (plan --detailed-exitcode), a service
                                  Failed/Unhealthy/Unschedulable/not deployed (status --detailed-exitcode)
    1 error                     3 a saved plan is stale (plan again)
    4 another apply holds the lock (retry later)      130 interrupted or cancelled
    5 a rollout failed and was rolled back             6 a rollout failed; the new version still serves

Everything printed passes through the redactor, so a secret value never reaches the terminal.
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

from .. import __version__
from ..errors import LockedError, ManifestError, MlopsError, StalePlanError, TargetsUnreachable, missing_extra
from ..redact import RedactingStream
from . import deploy, gitops, graph, migrate, reconcile, rollout, services, ui

EXIT_OK, EXIT_ERROR, EXIT_CHANGES, EXIT_STALE, EXIT_LOCKED, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130

COMMANDS = (deploy, services, gitops, migrate, graph, reconcile, ui, rollout)
"""Command-group modules, each with ``register(sub, common)``; handlers set as ``handler``."""


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-f", "--file", default="ml.yaml", type=Path, help="manifest (default: ml.yaml)")
    common.add_argument("--debug", action="store_true", help="show tracebacks")

    parser = argparse.ArgumentParser(prog="mlops", description="Declarative GitOps for ML model deployments.")
    parser.add_argument("--version", action="version", version=f"mlops {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.register(sub, common)
    p = sub.add_parser("serve", help="run the scoring runtime on an entry script (like azmlinfsrv)",
                       add_help=False)
    p.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["serve"]:
        # Everything after `serve` belongs to the runtime's own parser (argparse.REMAINDER
        # would not pass options such as --entry-script through a subcommand).
        from providers.runtime.cli import main as serve_main

        return serve_main(argv[1:])
    args = build_parser().parse_args(argv)
    # A command builds many small objects that live until it exits; the default thresholds run
    # several full collections on a 10,000-service plan for nothing (nothing of ours is cyclic).
    gc.set_threshold(100_000, 50, 100)
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = RedactingStream(out), RedactingStream(err)  # type: ignore[assignment]
    try:
        return _run(args)
    finally:
        sys.stdout, sys.stderr = out, err


def _run(args: argparse.Namespace) -> int:
    try:
        return args.handler(args)
    except ManifestError as exc:
        if args.debug:
            raise
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"Error: the manifest has {len(exc.problems)} problem(s).", file=sys.stderr)
        return EXIT_ERROR
    except TargetsUnreachable as exc:
        if args.debug:
            raise
        for problem in exc.problems:   # one line per target; nothing was read further or changed
            print(f"Error: {problem}", file=sys.stderr)
        return EXIT_ERROR
    except ImportError as exc:
        hint = missing_extra(exc)
        if args.debug or hint is None:
            raise
        print(f"Error: {hint}", file=sys.stderr)
        return EXIT_ERROR
    except MlopsError as exc:
        if args.debug:
            raise
        print(f"Error: {exc}", file=sys.stderr)
        if isinstance(exc, StalePlanError):
            return EXIT_STALE
        if isinstance(exc, LockedError):
            return EXIT_LOCKED
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
