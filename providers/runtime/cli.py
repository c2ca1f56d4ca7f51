"""Command line: ``python -m mlops_runtime --entry-script score.py [--model-dir DIR] [--port N] …``.

``mlops serve`` calls ``main(argv)`` with its remaining arguments, and the local target runs the
same module in the environment's virtualenv, so both behave identically. Flags win over the
environment variables Azure's server reads (``AZUREML_ENTRY_SCRIPT``, ``AZUREML_MODEL_DIR``,
``WORKER_COUNT``, …); keys are only ever taken from the environment.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from pathlib import Path

from . import __version__, exitcodes, logs, models, settings
from .supervisor import serve

ENVIRONMENT_HELP = """\
environment variables (flags win over them):
  AZUREML_ENTRY_SCRIPT    entry script, relative to AML_APP_ROOT
  AZUREML_MODEL_DIR       model directory, passed on to the script
  AML_APP_ROOT            application root, added to sys.path (default: working directory)
  SCORING_TIMEOUT_MS      per-request timeout, 504 past it (default 60000)
  WORKER_COUNT            worker processes (default 1)
  SERVER_PORT             port (default 5001)
  MLOPS_PRIMARY_KEY, MLOPS_SECONDARY_KEY
                          turn on key auth for /score and /swagger.json (Authorization: Bearer KEY)
  MLOPS_MAX_BODY_BYTES    largest request body, 413 past it (default 10485760)
  MLOPS_MAX_CONCURRENT_REQUESTS
                          run() calls at once per worker, in threads (default 1)
  MLOPS_MAX_QUEUED_REQUESTS
                          requests waiting per worker before 503 (default 64)
  MLOPS_STALL_MS          a run() running this long while requests wait behind
                          it lets the next one start on an extra thread (at most
                          MLOPS_MAX_CONCURRENT_REQUESTS extra); 0 = never
                          (default 2000, or a quarter of SCORING_TIMEOUT_MS)
  AML_CORS_ORIGINS        comma-separated origins answered with CORS headers
  MLOPS_HEADER_TIMEOUT_MS time for a request's line and headers, then the
                          connection is closed (default 10000)
  MLOPS_MAX_HEADER_BYTES, MLOPS_MAX_HEADERS
                          request header size and count, 431 past them
                          (default 65536 and 100)
  MLOPS_MAX_CONNECTIONS   open connections per worker (default 1024)
  MLOPS_MAX_CONNECTIONS_PER_CLIENT
                          open connections per worker from one client address
                          (default 256); past either limit a new connection
                          replaces the oldest one that has sent nothing, or
                          gets 503 when there is none
  MLOPS_BODY_TIMEOUT_MS   time for a request's body after its headers (default 60000)
  MLOPS_REVISION          the version label of the metrics (as --revision)
  MLOPS_ROUTES_FILE       a rollout's route file (as --routes)
  MLOPS_METRICS           on (default) or off: with --probe-port, GET /metrics
                          there answers Prometheus text (requests by status
                          class and a latency histogram, all workers summed)
  MLOPS_LOG_LEVEL         DEBUG, INFO, WARNING, ERROR (default INFO)

exit codes: 0 stopped by SIGTERM/SIGINT, 1 runtime error, 2 usage or configuration error,
3 the entry script failed to load or its init() raised
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlops serve",
        description="Serve an Azure ML style entry script (init()/run()) over HTTP.",
        epilog=ENVIRONMENT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # Azure's azmlinfsrv spellings (--entry_script, --model_dir, --worker_count, ...) are accepted too.
    parser.add_argument(
        "--entry-script", "--entry_script", metavar="PATH", help="the score script defining init() and run()"
    )
    parser.add_argument("--model-dir", "--model_dir", metavar="DIR", help="sets AZUREML_MODEL_DIR for the script")
    parser.add_argument(
        "--model",
        action="append",
        metavar="NAME[:VERSION]=PATH",
        help="a model file or folder, laid out exactly as a deployment lays it out (repeatable; "
        "one model: $AZUREML_MODEL_DIR/<file or folder name>; several: "
        "$AZUREML_MODEL_DIR/NAME/VERSION/<file or folder name>; VERSION defaults to 1)",
    )
    parser.add_argument("--port", type=int, metavar="N", help="port to listen on (default 5001)")
    parser.add_argument("--host", metavar="HOST", help="address to listen on (default 127.0.0.1)")
    parser.add_argument(
        "--workers", "--worker-count", "--worker_count", type=int, metavar="N", help="worker processes (default 1)"
    )
    parser.add_argument(
        "--access-control-allow-origins",
        "--access_control_allow_origins",
        metavar="ORIGINS",
        help="answer these comma-separated origins with CORS headers (as AML_CORS_ORIGINS)",
    )
    parser.add_argument(
        "--reuse-port",
        action="store_true",
        help="set SO_REUSEPORT so a new version can take over the port without a gap",
    )
    parser.add_argument(
        "--probe-port",
        type=int,
        metavar="N",
        help="also listen on this private port at once, and join the main port only after init() "
        "finished (readiness and smoke tests of this very instance)",
    )
    parser.add_argument(
        "--listen-socket",
        metavar="PATH",
        help="take the main port's listening socket from the port keeper at this unix socket instead of "
        "binding it: every version of a service shares one accept queue, so an update drops nothing",
    )
    parser.add_argument(
        "--hold-public",
        type=float,
        metavar="SECONDS",
        help="with --probe-port: join the main port only on SIGUSR1 (sent once the deployer's smoke test "
        "passed), or SECONDS after init() at the latest",
    )
    parser.add_argument(
        "--revision",
        metavar="REV",
        help="the version label of this instance's metrics (the deployer passes the service's spec "
        "fingerprint; default: MLOPS_REVISION, else 'unknown')",
    )
    parser.add_argument(
        "--routes",
        metavar="FILE",
        help="a rollout's route file kept by the deployer: the stable version has the candidate it names "
        "answer a share of /score requests (and mirrors copies to it); the candidate stays off the public "
        "port while named (default: MLOPS_ROUTES_FILE)",
    )
    parser.add_argument(
        "--no-metrics",
        dest="metrics",
        action="store_false",
        default=None,
        help="do not count requests nor serve GET /metrics on the probe port (as MLOPS_METRICS=off)",
    )
    parser.add_argument("--log-level", type=str.upper, choices=settings.LOG_LEVELS, help="log level (default INFO)")
    parser.add_argument("--version", action="version", version=f"mlops-runtime {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, serve until stopped, and return the exit code (see ``exitcodes``)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # --help, --version, or a usage error already printed
        return exit_.code if isinstance(exit_.code, int) else exitcodes.USAGE
    laid_out: Path | None = None
    model_dir = args.model_dir
    if args.model:
        if args.model_dir is not None:
            print("mlops serve: error: give --model or --model-dir, not both", file=sys.stderr)
            return exitcodes.USAGE
        try:
            laid_out, model_dir = models.lay_out([models.parse(value) for value in args.model])
        except models.ModelSpecError as exc:
            print(f"mlops serve: error: {exc}", file=sys.stderr)
            return exitcodes.USAGE
    try:
        return _serve(args, str(model_dir) if model_dir is not None else None)
    finally:
        if laid_out is not None:
            shutil.rmtree(laid_out, ignore_errors=True)


def _serve(args: argparse.Namespace, model_dir: str | None) -> int:
    try:
        chosen = settings.load(
            os.environ,
            entry_script=args.entry_script,
            model_dir=model_dir,
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_level=args.log_level,
            reuse_port=args.reuse_port,
            probe_port=args.probe_port,
            listen_socket=args.listen_socket,
            hold_public_s=args.hold_public,
            revision=args.revision,
            metrics=args.metrics,
            routes_file=args.routes,
            cors_origins=args.access_control_allow_origins,
        )
    except settings.SettingsError as exc:
        print(f"mlops serve: error: {exc}", file=sys.stderr)
        return exitcodes.USAGE
    logs.configure(chosen.log_level)
    # What the script sees, as under Azure's server.
    os.environ["AZUREML_ENTRY_SCRIPT"] = str(chosen.entry_script)
    os.environ.setdefault("AML_APP_ROOT", str(chosen.app_root))
    if chosen.model_dir:
        os.environ["AZUREML_MODEL_DIR"] = chosen.model_dir
    try:
        return serve(chosen)
    except Exception:  # noqa: BLE001 - last resort: one line, traceback only at DEBUG
        logging.getLogger("mlops.runtime").exception("the runtime failed")
        return exitcodes.ERROR
