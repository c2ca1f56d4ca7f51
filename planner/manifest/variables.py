"""A service's environment variables: names that are safe to set, values a process can hold."""

from __future__ import annotations

import re
from functools import cache

from .document import Manifest
from .interpolation import Checks
from .wording import ENVIRONMENT_VARIABLES, show

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}\Z")
# Variables the dynamic loader or an interpreter acts on: setting them runs other code.
_LOADER_PREFIXES = ("LD_", "DYLD_", "PYTHON")
_LOADER_NAMES = frozenset({"PATH", "GCONV_PATH", "LOCPATH", "NLSPATH", "HOSTALIASES", "RESOLV_HOST_CONF",
                           "BASH_ENV", "ENV", "IFS", "PERL5LIB", "PERL5OPT", "NODE_OPTIONS", "RUBYOPT"})
# Set by mlops for the scoring runtime (Azure ML's contract); a manifest value would be overridden.
_RUNTIME_NAMES = {"AZUREML_MODEL_DIR": "the registered model folder", "AZUREML_ENTRY_SCRIPT": "entry_script",
                  "AML_APP_ROOT": "source_dir", "SCORING_TIMEOUT_MS": "deploy.scoring_timeout_ms",
                  "SERVICE_NAME": "the service's name"}


def check_variables(manifest: Manifest, checks: Checks) -> None:
    """Provider-independent deploy rules: environment variable names that are safe to set."""
    for name, service in manifest.section("services").items():
        deploy = service.get("deploy")
        variables = deploy.get(ENVIRONMENT_VARIABLES) if isinstance(deploy, dict) else None
        if not isinstance(variables, dict):
            continue
        base = ("services", name, "deploy", ENVIRONMENT_VARIABLES)
        for var, value in variables.items():
            field_name = f"services.{name}.deploy.{ENVIRONMENT_VARIABLES}"
            problem = env_name_problem(var)
            if problem:
                checks.report((*base, var), f"{field_name}: {show(var)} {problem}", key=True)
            elif isinstance(value, str) and "\0" in value:
                checks.report((*base, var), f"{field_name}.{var}: the value holds a NUL character, which no "
                                            "environment variable can hold; remove it")


@cache   # a platform manifest repeats a few names thousands of times
def env_name_problem(name: str) -> str | None:
    """Why a variable name is refused, or None."""
    if not _ENV_NAME.match(name):
        return "is not a valid name (use letters, digits and _, not starting with a digit)"
    upper = name.upper()
    if upper.startswith("MLOPS_"):
        return "is reserved: names starting with MLOPS_ belong to mlops (service keys travel in them); rename it"
    if upper in _RUNTIME_NAMES:
        return f"is set by mlops from {_RUNTIME_NAMES[upper]}; remove it"
    if upper in _LOADER_NAMES or upper.startswith(_LOADER_PREFIXES):
        return ("steers the loader or the interpreter (like PATH, LD_PRELOAD, PYTHONPATH) and cannot be set; "
                "put code in source_dir and packages in the environment instead")
    return None
