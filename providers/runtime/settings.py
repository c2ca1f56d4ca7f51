"""Runtime settings: command-line flags over environment variables over defaults.

The environment variable names are Azure ML's where Azure has one (``AZUREML_ENTRY_SCRIPT``,
``AZUREML_MODEL_DIR``, ``AML_APP_ROOT``, ``SCORING_TIMEOUT_MS``, ``WORKER_COUNT``), so a container
or script configured for Azure's server works unchanged; our own additions are ``MLOPS_*``.
Keys are read from the environment only (never flags, which show in ``ps``) and are removed
from it, so the user's script cannot read or log them by accident.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path

from . import limits as _limits
from .cors import parse_origins

DEFAULT_PORT = 5001
DEFAULT_HOST = "127.0.0.1"
DEFAULT_SCORING_TIMEOUT_MS = 60_000
DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_CONCURRENT = 1
DEFAULT_MAX_QUEUED = 64
DEFAULT_STALL_MS = 2_000
KEY_VARIABLES = ("MLOPS_PRIMARY_KEY", "MLOPS_SECONDARY_KEY")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class SettingsError(ValueError):
    """A flag or environment variable has a value the runtime cannot use; the message says which."""


@dataclass(frozen=True)
class Settings:
    """Everything a worker needs to serve; built once in the parent, inherited by workers."""

    entry_script: Path
    """Absolute path of the user's score script."""
    app_root: Path
    """Azure's ``AML_APP_ROOT``: added to ``sys.path``; user swagger files are read from it."""
    model_dir: str | None
    """``AZUREML_MODEL_DIR`` as the script will see it (absolute), or None when unset."""
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    workers: int = 1
    scoring_timeout_ms: int = DEFAULT_SCORING_TIMEOUT_MS
    """Per request, from admission to the end of ``run()``; 504 past it."""
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_concurrent: int = DEFAULT_MAX_CONCURRENT
    """``run()`` calls executing at once in one worker (threads); 1 = Azure's behaviour."""
    max_queued: int = DEFAULT_MAX_QUEUED
    """Requests allowed to wait for a free slot in one worker; 503 past it."""
    stall_ms: int = DEFAULT_STALL_MS
    """A ``run()`` call running this long while requests wait behind it gives its slot to the next
    one (on an extra thread, at most ``max_concurrent`` extra); 0 = never (see ``scorer``)."""
    log_level: str = "INFO"
    service_name: str = "ML service"
    service_version: str = "1.0"
    service_path_prefix: str = ""
    source_dir: Path | None = None
    reuse_port: bool = False
    """SO_REUSEPORT on the listener, so a new version can bind the same port before the old one
    stops (blue/green on one endpoint; the kernel spreads connections across both)."""
    listen_socket: str | None = None
    """A unix socket from which to receive the main port's listening socket (SCM_RIGHTS) instead of
    binding it: the port keeper holds one listener per service that outlives every version."""
    probe_port: int | None = None
    """A second, private listener on the same host, so a deployer can probe readiness and send
    its smoke test to this very instance while another one shares the main port."""
    hold_public_s: float | None = None
    """With a probe port: join the main port only on SIGUSR1 (the deployer's smoke test passed), or
    this many seconds after init() at the latest (a restarted container has no deployer)."""
    routes_file: str | None = None
    """A rollout's route file the deployer keeps (``--routes`` / ``MLOPS_ROUTES_FILE``): as the stable
    version, answer a share of the requests from the candidate it names; as the candidate, stay off
    the public port while it names this version (see ``routes``)."""
    revision: str = "unknown"
    """The version label of this instance's metrics: the service's spec fingerprint, given by the
    deployer (``--revision`` / ``MLOPS_REVISION``), so a rollout can compare two versions."""
    metrics: bool = True
    """Count scoring requests and serve ``GET /metrics`` on the probe port (``--no-metrics``)."""
    limits: _limits.Limits = field(default_factory=_limits.Limits)
    """Header deadline, header size/count limits and the connection cap (``MLOPS_*`` variables)."""
    cors_origins: tuple[str, ...] = ()
    """Azure's ``AML_CORS_ORIGINS``: origins answered with CORS headers; empty means no CORS."""
    keys: tuple[str, ...] = field(default=(), repr=False)
    """Accepted API keys; empty means auth is off. Never printed (``repr=False``)."""

    @property
    def auth_enabled(self) -> bool:
        return bool(self.keys)

    @property
    def graceful_timeout_s(self) -> float:
        """How long SIGTERM waits for in-flight requests: one scoring timeout plus a margin."""
        return self.scoring_timeout_ms / 1000 + 5


def _int(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    return value


def _pick(flag: object, env_value: object, default: object) -> object:
    """CLI > environment > default, the same precedence as Azure's server."""
    if flag is not None:
        return flag
    if env_value is not None:
        return env_value
    return default


KEYS_FILE_VARIABLE = "MLOPS_KEYS_FILE"
"""A JSON file {"primary": ..., "secondary": ...} holding the keys, so they are never in the
process's environment (which any code in it can read back from /proc/self/environ)."""


def take_keys(env: MutableMapping[str, str]) -> tuple[str, ...]:
    """Read the API keys (from the keys file, else the variables) and remove them from ``env``."""
    keys = []
    path = env.pop(KEYS_FILE_VARIABLE, "")
    if path:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise SettingsError(f"{KEYS_FILE_VARIABLE}: cannot read the keys file: {exc}") from None
        keys += [str(data[k]) for k in ("primary", "secondary") if isinstance(data, dict) and data.get(k)]
    for name in KEY_VARIABLES:
        value = env.pop(name, "")
        if value:
            keys.append(value)
    return tuple(keys)


def resolve_entry_script(flag: str | None, env: Mapping[str, str], app_root: Path) -> Path:
    """Find the score script the way Azure's server does, failing with a line saying where we looked.

    ``--entry-script`` is relative to the working directory; ``AZUREML_ENTRY_SCRIPT`` is
    relative to ``AML_APP_ROOT``; with neither, Azure imports ``main`` from the app root.
    """
    if flag:
        path = Path(flag).expanduser().resolve()
        source = "--entry-script"
    elif env.get("AZUREML_ENTRY_SCRIPT"):
        path = (app_root / env["AZUREML_ENTRY_SCRIPT"]).resolve()
        source = "AZUREML_ENTRY_SCRIPT"
    else:
        path = (app_root / "main.py").resolve()
        if not path.is_file():
            raise SettingsError(
                f"no entry script: pass --entry-script PATH or set AZUREML_ENTRY_SCRIPT (looked for {path})"
            )
        return path
    if not path.is_file():
        raise SettingsError(f"entry script {path} (from {source}) does not exist or is not a file")
    return path


def load(
    env: MutableMapping[str, str],
    *,
    entry_script: str | None = None,
    model_dir: str | None = None,
    host: str | None = None,
    port: int | None = None,
    workers: int | None = None,
    log_level: str | None = None,
    reuse_port: bool = False,
    probe_port: int | None = None,
    listen_socket: str | None = None,
    cors_origins: str | None = None,
    hold_public_s: float | None = None,
    revision: str | None = None,
    metrics: bool | None = None,
    routes_file: str | None = None,
) -> Settings:
    """Build the settings from flags (None = not given) and ``env``; raises SettingsError."""
    app_root = Path(env.get("AML_APP_ROOT") or os.getcwd()).expanduser().resolve()
    script = resolve_entry_script(entry_script, env, app_root)

    chosen_model_dir = model_dir if model_dir is not None else env.get("AZUREML_MODEL_DIR")
    if chosen_model_dir:
        chosen_model_dir = str(Path(chosen_model_dir).expanduser().resolve())

    level = str(_pick(log_level, env.get("MLOPS_LOG_LEVEL") or env.get("AZUREML_LOG_LEVEL"), "INFO")).upper()
    if level not in LOG_LEVELS:
        raise SettingsError(f"log level must be one of {', '.join(LOG_LEVELS)}, got {level!r}")

    env_workers = _int(env, "WORKER_COUNT", 1, 1)
    chosen_workers = int(_pick(workers, env_workers, 1))  # type: ignore[arg-type]
    if chosen_workers < 1:
        raise SettingsError(f"--workers must be at least 1, got {chosen_workers}")
    chosen_port = int(_pick(port, _int(env, "SERVER_PORT", DEFAULT_PORT, 0), DEFAULT_PORT))  # type: ignore[arg-type]
    if not 0 <= chosen_port <= 65535:
        raise SettingsError(f"--port must be between 0 and 65535, got {chosen_port}")

    if probe_port is not None and not 0 <= probe_port <= 65535:
        raise SettingsError(f"--probe-port must be between 0 and 65535, got {probe_port}")

    if hold_public_s is not None and (probe_port is None or not 0 < hold_public_s <= 86400):
        raise SettingsError("--hold-public needs --probe-port and between 0 and 86400 seconds, "
                            f"got {hold_public_s}")
    source_dir = env.get("AZUREML_SOURCE_DIRECTORY")
    chosen_revision = str(_pick(revision, env.get("MLOPS_REVISION") or None, "unknown"))
    metrics_value = (env.get("MLOPS_METRICS") or "on").strip().lower()
    if metrics_value not in ("on", "off", "1", "0", "true", "false"):
        raise SettingsError(f"MLOPS_METRICS must be on or off, got {metrics_value!r}")
    chosen_metrics = metrics if metrics is not None else metrics_value in ("on", "1", "true")
    timeout_ms = _int(env, "SCORING_TIMEOUT_MS", DEFAULT_SCORING_TIMEOUT_MS, 1)
    return Settings(
        entry_script=script,
        app_root=app_root,
        model_dir=chosen_model_dir or None,
        host=str(_pick(host, None, DEFAULT_HOST)),
        port=chosen_port,
        workers=chosen_workers,
        scoring_timeout_ms=timeout_ms,
        max_body_bytes=_int(env, "MLOPS_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, 1),
        max_concurrent=_int(env, "MLOPS_MAX_CONCURRENT_REQUESTS", DEFAULT_MAX_CONCURRENT, 1),
        max_queued=_int(env, "MLOPS_MAX_QUEUED_REQUESTS", DEFAULT_MAX_QUEUED, 0),
        stall_ms=_int(env, "MLOPS_STALL_MS", min(DEFAULT_STALL_MS, timeout_ms // 4), 0),
        log_level=level,
        service_name=env.get("SERVICE_NAME", "ML service"),
        service_version=env.get("SERVICE_VERSION", "1.0"),
        service_path_prefix=env.get("SERVICE_PATH_PREFIX", ""),
        source_dir=(app_root / source_dir) if source_dir else None,
        reuse_port=reuse_port,
        probe_port=probe_port,
        listen_socket=listen_socket,
        hold_public_s=hold_public_s,
        revision=chosen_revision,
        metrics=chosen_metrics,
        routes_file=str(_pick(routes_file, env.get("MLOPS_ROUTES_FILE") or None, "")) or None,
        limits=_limits.Limits(
            header_timeout_s=_int(env, "MLOPS_HEADER_TIMEOUT_MS", _limits.DEFAULT_HEADER_TIMEOUT_MS, 1) / 1000,
            max_header_bytes=_int(env, "MLOPS_MAX_HEADER_BYTES", _limits.DEFAULT_MAX_HEADER_BYTES, 1024),
            max_headers=_int(env, "MLOPS_MAX_HEADERS", _limits.DEFAULT_MAX_HEADERS, 1),
            max_connections=_int(env, "MLOPS_MAX_CONNECTIONS", _limits.DEFAULT_MAX_CONNECTIONS, 1),
            max_connections_per_client=_int(env, "MLOPS_MAX_CONNECTIONS_PER_CLIENT",
                                            _limits.DEFAULT_MAX_CONNECTIONS_PER_CLIENT, 1),
            body_timeout_s=_int(env, "MLOPS_BODY_TIMEOUT_MS", _limits.DEFAULT_BODY_TIMEOUT_MS, 1) / 1000,
        ),
        cors_origins=parse_origins(_pick(cors_origins, env.get("AML_CORS_ORIGINS"), "")),  # type: ignore[arg-type]
        keys=take_keys(env),
    )
