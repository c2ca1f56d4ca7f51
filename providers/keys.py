"""The one key store: the scoring keys of every service, whatever its target.

A service's keys must survive updates and replacements (clients keep them), so they belong to the
service, not to an instance: ``<state>/keys/<service>.json``, mode 0600 from its first byte,
written atomically. Explicit keys from the manifest win; otherwise the stored ones are kept;
otherwise new ones are generated. Keys are forgotten only when the service leaves the project
(apply does that after a successful delete), never when one instance of it goes.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from collections.abc import Mapping
from pathlib import Path

from planner.errors import ProviderError

MOUNTED = ".mounted"
"""Under the keys folder: the copies containers mount (providers.local.docker)."""
LEGACY = ("local/keys/{name}.json", "docker/{name}.keys.json")
"""Where earlier versions kept keys; read so that running services keep theirs after an upgrade."""


class KeyStore:
    def __init__(self, state_dir: Path):
        self.state_dir = state_dir
        self.folder = state_dir / "keys"

    def _file(self, name: str) -> Path:
        return self.folder / f"{name}.json"

    def path(self, name: str) -> Path:
        """Where ``name``'s keys are stored (what a local service reads them from)."""
        return self._file(name)

    def load(self, name: str) -> dict[str, str]:
        """The stored keys of ``name`` ({} when it has none)."""
        for path in (self._file(name), *(self.state_dir / p.format(name=name) for p in LEGACY)):
            try:
                data = json.loads(path.read_text())
            except FileNotFoundError:
                continue
            except ValueError:
                raise ProviderError(f"{path}: corrupt key file; remove it and re-apply (new keys are made)") from None
            if isinstance(data, dict) and data.get("primary"):
                return {"primary": str(data["primary"]), "secondary": str(data.get("secondary") or "")}
        return {}

    def keys_for(self, name: str, auth: str | None, explicit: Mapping[str, str]) -> dict[str, str]:
        """The keys a service with ``auth`` should run with, stored before they are used."""
        if auth != "key":
            return {}
        old = self.load(name)
        keys = {
            "primary": explicit.get("primary_key") or old.get("primary") or secrets.token_urlsafe(32),
            "secondary": explicit.get("secondary_key") or old.get("secondary") or secrets.token_urlsafe(32),
        }
        if keys != old or not self._file(name).exists():
            self.save(name, keys)
        return keys

    def save(self, name: str, keys: Mapping[str, str]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        ignore = self.state_dir / ".gitignore"
        if not ignore.exists():
            ignore.write_text("*\n")
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-")   # mkstemp creates it 0600
        with os.fdopen(fd, "w") as fh:
            json.dump(dict(keys), fh)
        os.replace(tmp, self._file(name))

    def mountable(self, name: str, keys: Mapping[str, str]) -> Path:
        """A copy of ``keys`` for a container to mount read-only (never its environment, which
        `docker inspect` shows). The file is world-readable, so any user the image runs as can
        read it inside the container; on this machine the 0700 folder keeps everyone else out."""
        folder = self.folder / MOUNTED
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
        with os.fdopen(fd, "w") as fh:
            json.dump(dict(keys), fh)
        os.chmod(tmp, 0o644)
        os.replace(tmp, folder / f"{name}.json")
        return folder / f"{name}.json"

    def forget(self, name: str) -> None:
        """The service left the project: its keys go (and the legacy copies with them)."""
        for path in (self._file(name), self.folder / MOUNTED / f"{name}.json",
                     *(self.state_dir / p.format(name=name) for p in LEGACY)):
            path.unlink(missing_ok=True)
