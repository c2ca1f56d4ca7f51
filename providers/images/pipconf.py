"""The host's pip settings, translated for a build inside a container.

Package downloads on these machines may go through an intercepting TLS proxy whose CA only the
host trusts, and the host's pip may name local ``file://`` indexes or find-links folders that do
not exist in a container. So a build gets: the host's CA bundle, and a pip.conf that keeps only
http(s) index URLs, the timeout and trusted hosts. It is used in the package stage of the build
only and never lands in the final image (it may hold index credentials).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

DEFAULT_CA_FILES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem")
CA_PATH_IN_BUILD = "/etc/mlops-pip/ca.pem"


@dataclass(frozen=True)
class PipSettings:
    conf: str          # pip.conf text for the build
    ca_bundle: bytes   # PEM bundle the build's pip trusts (empty: pip's own)


def _host_config() -> dict[str, str]:
    """``pip config list`` as {"global.index-url": "...", ...}; environment variables win."""
    found: dict[str, str] = {}
    try:
        out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True,
                             text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    for line in out.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        name = key.split(".", 1)[-1]
        found[name] = value.strip().strip("'\"")
    for env, name in (("PIP_INDEX_URL", "index-url"), ("PIP_EXTRA_INDEX_URL", "extra-index-url"),
                      ("PIP_CERT", "cert"), ("PIP_TRUSTED_HOST", "trusted-host"),
                      ("PIP_DEFAULT_TIMEOUT", "default-timeout"), ("PIP_TIMEOUT", "timeout")):
        if os.environ.get(env):
            found[name] = os.environ[env]
    return found


def _http_only(urls: str) -> list[str]:
    return [u for u in urls.split() if u.startswith(("http://", "https://"))]


def host_pip_settings() -> PipSettings:
    cfg = _host_config()
    lines = ["[global]", "disable-pip-version-check = true", "no-input = true"]
    index = _http_only(cfg.get("index-url", ""))
    if index:
        lines.append(f"index-url = {index[0]}")
    extra = _http_only(cfg.get("extra-index-url", ""))
    if extra:
        lines.append("extra-index-url = " + " ".join(extra))
    if cfg.get("trusted-host"):
        lines.append("trusted-host = " + " ".join(cfg["trusted-host"].split()))
    timeout = cfg.get("default-timeout") or cfg.get("timeout")
    if timeout:
        lines.append(f"timeout = {timeout}")
    ca = b""
    for candidate in (cfg.get("cert"), os.environ.get("REQUESTS_CA_BUNDLE"), os.environ.get("SSL_CERT_FILE"),
                      *DEFAULT_CA_FILES):
        if candidate and Path(candidate).is_file():
            ca = Path(candidate).read_bytes()
            break
    if ca:
        lines.append(f"cert = {CA_PATH_IN_BUILD}")
    return PipSettings(conf="\n".join(lines) + "\n", ca_bundle=ca)
