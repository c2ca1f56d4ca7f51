"""Do an environment's pinned pip packages have a wheel for its Python? Asked of the package
index pip is configured with, when ``mlops import`` raises a v1 environment's Python (3.7 ->
3.11): old pins (scikit-learn 0.22, numpy 1.17) have no wheel for it, and pip would try to build
them from source minutes into the first ``apply``.

The index is the machine's own: ``PIP_INDEX_URL``/``PIP_EXTRA_INDEX_URL``/``PIP_FIND_LINKS`` and
pip's configuration files, read through ``pip config list``, else pip's built-in default (read
from pip). Pages are PEP 503 "simple" HTML, wheels are judged by their file name tags for the
chosen CPython on this machine's platform and by ``data-requires-python``. An index that cannot
be reached is one warning, never a failure; URLs in messages have their credentials masked.
"""

from __future__ import annotations

import ast
import base64
import os
import ssl
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from packaging import tags
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from ..urlmask import mask_url_credentials

TIMEOUT_S = 10.0
MAX_PAGE_BYTES = 32 * 1024 * 1024
"""numpy's simple page is about 1 MB; a larger answer is not an index page."""
WORKERS = 8
PATCH = 99
"""``Requires-Python`` is checked for the newest patch release of the chosen minor version (what
a ``python:3.11`` image runs)."""


@dataclass(frozen=True)
class IndexConfig:
    """Where pip would look: index URLs (``index-url`` first) and ``find-links`` pages or folders."""

    index_urls: tuple[str, ...]
    find_links: tuple[str, ...] = ()
    cert: str | None = None

    def shown(self) -> str:
        return ", ".join(mask_url_credentials(u) for u in (*self.index_urls, *self.find_links))


@dataclass(frozen=True)
class _File:
    name: str
    requires_python: str | None
    yanked: bool


class _Unreachable(Exception):
    pass


# -- pip's configuration -----------------------------------------------------------------------------


def _pip_config_values(run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run) -> dict[str, str]:
    """``pip config list`` as {key: value}; later lines (higher precedence) win; {} when pip fails."""
    try:
        listed = run(
            [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return {}
    values: dict[str, str] = {}
    for line in listed.stdout.splitlines() if listed.returncode == 0 else []:
        key, eq, raw = line.partition("=")
        if not eq:
            continue
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            continue
        if isinstance(value, str):
            values[key.strip()] = value
    return values


def _option(values: dict[str, str], name: str) -> str | None:
    """An option as ``pip install`` sees it: the environment over ``[install]`` over ``[global]``."""
    env = os.environ.get(f"PIP_{name.upper().replace('-', '_')}")
    if env is not None:
        return env
    for section in (":env:", "install", "global"):
        if f"{section}.{name}" in values:
            return values[f"{section}.{name}"]
    return None


def _pip_default_index() -> str | None:
    try:
        from pip._internal.models.index import PyPI  # pip's own default, not ours to spell out
    except Exception:  # noqa: BLE001 - any failure means "no default known"
        return None
    return str(PyPI.simple_url)


def pip_index_config(
    run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run,
) -> IndexConfig | None:
    """The index pip would use on this machine, or None when none is known (no pip, nothing set)."""
    values = _pip_config_values(run)
    index = _option(values, "index-url") or _pip_default_index()
    if _option(values, "no-index") in ("1", "true", "yes", "on"):
        index = None
    extra = (_option(values, "extra-index-url") or "").split()
    links = (_option(values, "find-links") or "").split()
    urls = tuple(u for u in (index, *extra) if u)
    if not urls and not links:
        return None
    return IndexConfig(urls, tuple(links), _option(values, "cert"))


# -- reading an index --------------------------------------------------------------------------------


class _Anchors(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.files: list[_File] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag != "a":
            return
        found = dict(attrs)
        href = found.get("href") or ""
        name = urllib.parse.unquote(urllib.parse.urlsplit(href).path.rsplit("/", 1)[-1])
        if name:
            self.files.append(_File(name, found.get("data-requires-python"), "data-yanked" in found))


def _request(url: str, cert: str | None) -> bytes | None:
    """The body at ``url`` (None for 404); credentials in the URL go in an Authorization header."""
    parts = urllib.parse.urlsplit(url)
    headers = {"Accept": "text/html", "User-Agent": "mlops-import"}
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        parts = parts._replace(netloc=parts.netloc.rsplit("@", 1)[1])
    context = ssl.create_default_context(cafile=cert) if cert and parts.scheme == "https" else None
    request = urllib.request.Request(urllib.parse.urlunsplit(parts), headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S, context=context) as response:  # noqa: S310
            body = response.read(MAX_PAGE_BYTES + 1)
    except urllib.error.HTTPError as exc:
        if exc.code in (404, 410):
            return None
        raise _Unreachable(f"HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise _Unreachable(mask_url_credentials(str(getattr(reason, "strerror", None) or reason))) from None
    if len(body) > MAX_PAGE_BYTES:
        raise _Unreachable(f"a page over {MAX_PAGE_BYTES // (1024 * 1024)} MiB")
    return body


def _anchors(body: bytes) -> list[_File]:
    parser = _Anchors()
    parser.feed(body.decode("utf-8", "replace"))
    return parser.files


class _Catalogue:
    """The files of each project on the configured index(es) and find-links, fetched once each."""

    def __init__(self, config: IndexConfig) -> None:
        self.config = config
        self._links: list[_File] | None = None

    def _find_links(self) -> list[_File]:
        if self._links is None:
            files: list[_File] = []
            for link in self.config.find_links:
                folder = Path(link[len("file://") :] if link.startswith("file://") else link)
                if "://" not in link or link.startswith("file://"):
                    files += [_File(p.name, None, False) for p in sorted(folder.glob("*"))] if folder.is_dir() else []
                else:
                    files += _anchors(_request(link, self.config.cert) or b"")
            self._links = files
        return self._links

    def files(self, project: str) -> list[_File] | None:
        """All files of ``project`` (None when no index knows it); raises _Unreachable."""
        name = canonicalize_name(project)
        found: list[_File] | None = None
        for index in self.config.index_urls:
            body = _request(f"{index.rstrip('/')}/{name}/", self.config.cert)
            if body is not None:
                found = (found or []) + _anchors(body)
        local = [f for f in self._find_links() if _project_of(f.name) == name]
        if local:
            found = (found or []) + local
        return found


def _project_of(filename: str) -> str | None:
    try:
        return str(parse_wheel_filename(filename)[0]) if filename.endswith(".whl") else str(
            parse_sdist_filename(filename)[0]
        )
    except (InvalidWheelFilename, InvalidSdistFilename, InvalidVersion):
        return None


# -- judging -----------------------------------------------------------------------------------------


def _supported(python: tuple[int, int]) -> frozenset[tags.Tag]:
    platforms = list(tags.platform_tags())
    interpreter = f"cp{python[0]}{python[1]}"
    return frozenset(
        [
            *tags.cpython_tags(python_version=python, platforms=platforms),
            *tags.compatible_tags(python_version=python, interpreter=interpreter, platforms=platforms),
        ]
    )


def _allows(requires_python: str | None, python: tuple[int, int]) -> bool:
    if not requires_python:
        return True
    try:
        return SpecifierSet(requires_python).contains(f"{python[0]}.{python[1]}.{PATCH}", prereleases=True)
    except InvalidSpecifier:
        return True


@dataclass
class _Releases:
    all: set[Version]
    with_wheel: set[Version]
    with_yanked_wheel: set[Version]
    """pip takes a yanked file only for an exact ``==`` pin (PEP 592)."""


def _releases(project: str, files: list[_File], python: tuple[int, int], supported: frozenset[tags.Tag]) -> _Releases:
    out = _Releases(set(), set(), set())
    name = canonicalize_name(project)
    for file in files:
        try:
            if file.name.endswith(".whl"):
                wheel_name, version, _, wheel_tags = parse_wheel_filename(file.name)
                if wheel_name != name:
                    continue
                out.all.add(version)
                if _allows(file.requires_python, python) and wheel_tags & supported:
                    (out.with_yanked_wheel if file.yanked else out.with_wheel).add(version)
            else:
                sdist_name, version = parse_sdist_filename(file.name)
                if sdist_name == name:
                    out.all.add(version)
        except (InvalidWheelFilename, InvalidSdistFilename, InvalidVersion):
            continue
    return out


def _nearest(wanted: list[Version], candidates: set[Version]) -> Version | None:
    """The release with a wheel nearest to what was pinned: the oldest one above it, else the newest."""
    finals = sorted(v for v in candidates if not v.is_prerelease) or sorted(candidates)
    if not finals:
        return None
    top = max(wanted) if wanted else finals[-1]
    above = [v for v in finals if v >= top]
    return above[0] if above else finals[-1]


def _judge(entry: str, requirement: Requirement, releases: _Releases, python_text: str) -> str | None:
    if not requirement.specifier:
        return None
    matching = sorted(requirement.specifier.filter(releases.all, prereleases=True))
    specs = list(requirement.specifier)
    exact = len(specs) == 1 and specs[0].operator in ("==", "===") and not specs[0].version.endswith(".*")
    usable = releases.with_wheel | (releases.with_yanked_wheel if exact else set())
    if any(v in usable for v in matching):
        return None
    nearest = _nearest(matching or sorted(releases.all), releases.with_wheel)
    hint = (
        f"nearest release with one: {nearest} (pin {requirement.name}=={nearest})"
        if nearest
        else "no release of it has one"
    )
    if not matching:
        return f"pip entry {entry!r}: no release on the index matches it; {hint}"
    shown = ", ".join(str(v) for v in matching[-3:])
    return (
        f"pip entry {entry!r} has no wheel for Python {python_text} on this platform ({shown} only as "
        f"sources or for other Pythons; pip would try to build it); {hint}"
    )


def check_pins(requirements: Sequence[str], python: str, config: IndexConfig | None) -> list[str]:
    """Warnings for ``requirements`` (pip lines) on CPython ``python`` ("3.11"): pins with no wheel
    (and the nearest release with one), packages the index does not know, an unreachable index."""
    if config is None:
        return ["pip pins not checked: pip has no package index configured (pip config list)"]
    major, minor = (int(p) for p in python.split(".")[:2])
    target = (major, minor)
    supported = _supported(target)
    parsed: list[tuple[str, Requirement]] = []
    for entry in requirements:
        try:
            requirement = Requirement(entry)
        except InvalidRequirement:
            continue
        if requirement.url:
            continue
        marker_env = {"python_version": f"{major}.{minor}", "python_full_version": f"{major}.{minor}.{PATCH}"}
        if requirement.marker is not None and not requirement.marker.evaluate(marker_env):
            continue
        parsed.append((entry, requirement))
    if not parsed:
        return []
    catalogue = _Catalogue(config)
    try:  # one request first: an unreachable index costs one timeout, not one per package
        first = catalogue.files(parsed[0][1].name)
        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            rest = list(pool.map(lambda pair: catalogue.files(pair[1].name), parsed[1:]))
    except _Unreachable as exc:
        return [
            f"pip pins not checked: the package index {config.shown()} cannot be reached ({exc}); "
            "check them before `mlops apply`"
        ]
    warnings: list[str] = []
    for (entry, requirement), files in zip(parsed, [first, *rest], strict=True):
        if files is None:
            warnings.append(f"pip entry {entry!r}: {requirement.name} is not on the package index ({config.shown()})")
            continue
        problem = _judge(entry, requirement, _releases(requirement.name, files, target, supported), python)
        if problem:
            warnings.append(problem)
    return warnings
