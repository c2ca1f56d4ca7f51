"""Loading ml.yaml: YAML with positions, ${VAR} interpolation, JSON Schema, references.

Every problem is collected (not just the first) and reported as ``file:line:col: message``.

A manifest may come from a pull request, so it is treated as hostile: its size and shape are
bounded (see yamlpos), paths must stay inside the manifest's folder and hold only regular files
(no symbolic links, FIFOs or devices), pip entries must be PEP 508 requirements (never pip
options), environment variable names that steer the loader or the interpreter are refused, and
no message ever echoes a value that is secret or came from the environment.

One job per module: ``reading`` (the file's bytes), ``interpolation`` (``${VAR}`` and the problem
sink), ``wording`` (values in messages), ``schema_errors`` (JSON Schema, worded), ``targets``
(provider schemas, naming rules, shared ports), ``packages`` (pip entries), ``variables``
(environment variable names), ``references`` (names a service uses), ``files`` (paths),
``document`` (the validated ``Manifest``) and ``loading`` (``load_manifest``, which runs them all).
"""

from __future__ import annotations

from .document import DEFAULT_KIND, DEFAULT_TARGET, Manifest
from .files import MAX_PATH_CHARS, MAX_SAMPLE_BYTES, sample_problem
from .interpolation import PUBLIC_VARS, Report
from .loading import load_manifest
from .packages import index_url_problem, pip_problem
from .reading import MAX_MANIFEST_BYTES, max_manifest_bytes, read_regular
from .schema_errors import schema
from .variables import env_name_problem
from .wording import ENVIRONMENT_VARIABLES, SENSITIVE_NAME, is_sensitive_path, show

__all__ = [
    "DEFAULT_KIND", "DEFAULT_TARGET", "ENVIRONMENT_VARIABLES", "MAX_MANIFEST_BYTES", "MAX_PATH_CHARS",
    "MAX_SAMPLE_BYTES", "PUBLIC_VARS", "SENSITIVE_NAME", "Manifest", "Report", "env_name_problem",
    "index_url_problem", "is_sensitive_path", "load_manifest", "max_manifest_bytes", "pip_problem",
    "read_regular", "sample_problem", "schema", "show",
]
