"""User-facing errors: each one renders as a single clear line (or several, one per problem)."""

from __future__ import annotations

from dataclasses import dataclass


class MlopsError(Exception):
    """An error the user can act on; the CLI prints it as ``Error: <message>`` and exits 1."""


@dataclass(frozen=True, order=True)
class Problem:
    """One located problem in a manifest: ``file:line:col: message``."""

    file: str
    line: int
    col: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.message}"


class ManifestError(MlopsError):
    """The manifest is invalid; carries every problem found, sorted by position."""

    def __init__(self, problems: list[Problem]):
        self.problems = sorted(set(problems))
        super().__init__("\n".join(str(p) for p in self.problems))


class StalePlanError(MlopsError):
    """A saved plan no longer matches the live state or the manifest of what it touches."""


class LockedError(MlopsError):
    """Another apply holds the lock for this manifest."""


class CancelledError(MlopsError):
    """The user cancelled (Ctrl-C, SIGTERM) while this was waiting; what was left shows in the next plan."""


class TargetsUnreachable(MlopsError):
    """One or more targets could not be reached; one line per target, nothing was changed."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class ProviderError(MlopsError):
    """A provider could not do what was asked; the message says why and, if it can, what to do."""


class Unreachable(ProviderError):
    """A target cannot be reached (no engine, no credentials, wrong context); says what to do."""


EXTRAS = {"kubernetes": "kubernetes", "azure.mgmt": "aci", "azure.identity": "aci", "azure.core": "iotedge"}
"""Modules of the cloud SDKs -> the pip extra that installs them (pyproject's optional-dependencies)."""


def missing_extra(exc: BaseException | None) -> str | None:
    """For an import of a cloud SDK that is not installed: what to run, in one sentence; else None."""
    while exc is not None and not isinstance(exc, ImportError):
        exc = exc.__cause__ or exc.__context__
    if exc is None:
        return None
    name = getattr(exc, "name", None) or ""
    for module, extra in EXTRAS.items():
        if name == module or name.startswith(module + "."):
            return (f"the Python package {name} is not installed; install the target's extra: "
                    f"pip install 'mlops[{extra}]'")
    return None
