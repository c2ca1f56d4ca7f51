"""An environment's packages: pip entries are PEP 508 requirements, the index its own https setting."""

from __future__ import annotations

import re

from ..yamlpos import one_line
from .document import Manifest
from .interpolation import Checks
from .wording import show

_LOOPBACK = ("127.0.0.1", "localhost", "[::1]")


def check_environments(manifest: Manifest, checks: Checks) -> None:
    """pip entries are PEP 508 requirements; the index is its own https setting (finding: `-r/proc/...`)."""
    report = checks.report
    for name, environment in manifest.section("environments").items():
        base = ("environments", name)
        pip = environment.get("pip")
        for i, entry in enumerate(pip if isinstance(pip, list) else []):
            if not isinstance(entry, str) or not entry.strip():
                continue  # reported by the schema
            problem = pip_problem(entry)
            if problem:
                shown = "the value" if checks.secret((*base, "pip", i)) else show(entry)
                report((*base, "pip", i), f"environments.{name}.pip[{i}]: {shown} {problem}")
        url = environment.get("pip_index_url")
        if isinstance(url, str):
            problem = index_url_problem(url)
            if problem:
                report((*base, "pip_index_url"), f"environments.{name}.pip_index_url: {problem}")



_VERSION = r"[0-9]+(?:\.[0-9]+)*"
_SIMPLE_REQUIREMENT = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"            # a project name (PEP 508)
    rf"(?:(?:==|!=){_VERSION}(?:\.\*)?|(?:<=|>=|<|>){_VERSION}|~={_VERSION}\.[0-9]+)"
    rf"(?:,(?:(?:==|!=){_VERSION}(?:\.\*)?|(?:<=|>=|<|>){_VERSION}|~={_VERSION}\.[0-9]+))*"
    r"|[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?", re.ASCII)
"""`name` or `name` with plain release specifiers (numpy, scikit-learn==1.5.*, a>=1,<2): a strict
subset of PEP 508 that needs no further checks. Anything else goes to packaging, which words the error."""


def pip_problem(entry: str) -> str | None:
    """Why a pip entry is refused, or None: only PEP 508 requirements reach pip, never options."""
    text = entry.strip()
    if text.startswith("-"):
        return ("is a pip option, not a requirement; list packages only (e.g. numpy==2.1.*) and set "
                "pip_index_url for another index")
    if _SIMPLE_REQUIREMENT.fullmatch(text):
        return None  # the common case, valid PEP 508 by construction: no need to load packaging
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        req = Requirement(text)
    except InvalidRequirement as exc:
        detail = str(exc).splitlines()[0] if str(exc) else "invalid"
        return f"is not a PEP 508 requirement ({one_line(detail, 120)}); write it like scikit-learn==1.5.*"
    if re.search(r"(^|\s)-|\s#|\$\{|\\", text):
        # A requirements file (container builds) reads " -x" as an option, " #" as a comment and
        # expands ${VAR}; a marker's quoted text could smuggle them in.
        return "holds ' -', ' #', '${' or a backslash, which pip would read as options; remove them"
    if req.url is not None:
        # A URL (git+https://, a .whl, file:) installs whatever is there when pip runs: not pinned by the
        # manifest, not reviewable in the plan, and a place for credentials to leak. Indexes only.
        return ("is a URL requirement (name @ URL); mlops installs packages from an index only: publish it "
                "to one and set pip_index_url, then list it as name==version")
    return None


def index_url_problem(url: str) -> str | None:
    """Why an index URL is refused, or None: https (http only to this machine), no credentials."""
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        return "the URL holds spaces or control characters"
    scheme, _, rest = url.partition("://")
    host = rest.split("/", 1)[0]
    if "@" in host:
        return ("the URL holds credentials (they would show in plans); set them in pip's configuration "
                "or PIP_INDEX_URL on the machine instead")
    hostname = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    if scheme == "https" and host:
        return None
    if scheme == "http" and hostname in _LOOPBACK:
        return None
    return "use an https:// URL (http:// only for 127.0.0.1 or localhost)"
