"""Manifest -> desired resources: normalised specs, content digests, dependencies, secrets.

What is secret: deploy settings with secret names (their values leave the spec for a salted
digest) and every ``deploy.environment_variables`` value (kept in the spec, because the targets
pass them on, but listed in ``sensitive`` so every rendering of a plan masks them).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .addresses import Address
from .errors import ManifestError, Problem
from .hashing import ContentHasher, UnsafeFile, digest, secret_digest
from .manifest import (
    ENVIRONMENT_VARIABLES,
    MAX_SAMPLE_BYTES,
    SENSITIVE_NAME,
    Manifest,
    read_regular,
    sample_problem,
    show,
)
from .resources import Resource
from .rollout.support import rollout_json

if TYPE_CHECKING:
    from providers.base import Preparation

SHORT = 12


def build_desired(
    manifest: Manifest, providers: Mapping[str, Any], store: Any, hasher: ContentHasher
) -> dict[Address, Resource]:
    """Every resource the manifest asks for, keyed by address.

    Work on inputs that services share (a source folder, a sample request, an environment's
    digest, the runtime version) is done once per input, not once per service: a manifest of
    10,000 services over one source folder hashes that folder once.
    """
    out: dict[Address, Resource] = {}
    models: dict[str, Resource] = {}
    hashed: dict[Path, str] = {}
    samples: dict[str, str] = {}
    resolved: dict[str, Path] = {}
    model_paths: dict[tuple[str, str], str] = {}

    def model_path(model: str, sha256: str) -> str:
        key = (model, sha256)
        if key not in model_paths:
            model_paths[key] = str(store.model_path(model, sha256))
        return model_paths[key]

    preparations: dict[int, Preparation] = {}   # one per target: its runtime version is asked once
    for name, m in manifest.section("models").items():
        source = (manifest.root / m["path"]).resolve()
        sha = _tree_hash(manifest, hasher, source, ("models", name, "path"))
        spec = {
            "path": m["path"],
            "sha256": sha,
            "version": store.planned_version(name, sha),
            "tags": {k: str(v) for k, v in sorted((m.get("tags") or {}).items())},
            "description": m.get("description", ""),
        }
        res = Resource(Address("model", name), spec, inputs={"source_path": str(source)})
        models[name] = out[res.address] = res

    environments: dict[str, Resource] = {}
    for name, e in manifest.section("environments").items():
        spec = {"python": e.get("python", "3.11"), "pip": list(e.get("pip") or [])}
        if e.get("pip_index_url"):
            spec["pip_index_url"] = e["pip_index_url"]
        if e.get("base_image"):
            spec["base_image"] = e["base_image"]
        res = Resource(Address("environment", name), spec)
        environments[name] = out[res.address] = res
    env_digests = {name: digest(env.spec)[:SHORT] for name, env in environments.items()}

    for name, s in manifest.section("services").items():
        target = manifest.service_target(s)
        provider = providers[target]
        prepared = preparations.get(id(provider))
        if prepared is None:
            prepared = preparations[id(provider)] = provider.prepare()
        deploy, secrets, sensitive = _split_secrets(prepared.deploy(s.get("deploy") or {}), manifest.project)
        env = environments[s["environment"]]
        source_dir = resolved.get(s["source_dir"])
        if source_dir is None:
            source_dir = resolved[s["source_dir"]] = (manifest.root / s["source_dir"]).resolve()
        source_sha = hashed.get(source_dir)
        if source_sha is None:
            source_sha = hashed[source_dir] = _tree_hash(manifest, hasher, source_dir,
                                                         ("services", name, "source_dir"))
        model_refs = {m: models[m] for m in s["models"]}
        spec = {
            "models": [f"{m}:{r.spec['version']}@{r.spec['sha256'][:SHORT]}" for m, r in model_refs.items()],
            "environment": f"{env.address.name}@{env_digests[env.address.name]}",
            "source": f"{s['source_dir']}@{source_sha[:SHORT]}",
            "entry_script": s["entry_script"],
            "runtime": prepared.runtime,
            "deploy": deploy,
        }
        spec = prepared.spec(name, spec)
        sample = s.get("sample_request")
        inputs = {
            "source_dir": str(source_dir),
            "entry_script": s["entry_script"],
            "models": {m: {"version": r.spec["version"], "sha256": r.spec["sha256"],
                           "path": model_path(m, r.spec["sha256"])}
                       for m, r in model_refs.items()},
            "environment": dict(env.spec),
            "environment_name": env.address.name,
            "sample_request": _sample(manifest, sample, name, samples) if sample else None,
            "rollout": rollout_json(s),   # how an update goes live; not part of what runs
        }
        res = Resource(
            Address("service", name), spec,
            depends_on=tuple(sorted([*(r.address for r in model_refs.values()), env.address])),
            target=target, sensitive=frozenset(sensitive), secrets=secrets, inputs=inputs,
        )
        out[res.address] = res
    return out


def _split_secrets(deploy: Mapping[str, Any], salt: str) -> tuple[dict[str, Any], dict[str, str], set[str]]:
    """Secret values leave the spec (replaced by a salted digest) and go to ``secrets``."""
    clean: dict[str, Any] = {}
    secrets: dict[str, str] = {}
    sensitive: set[str] = set()
    for key, value in deploy.items():
        if SENSITIVE_NAME.search(key) and isinstance(value, str):
            secrets[key] = value
            clean[key] = secret_digest(salt, value)
            sensitive.add(f"deploy.{key}")
        elif key == ENVIRONMENT_VARIABLES and isinstance(value, Mapping):
            # Values may be credentials: the spec (and so every record, label and plan) holds salted
            # digests; providers take the values from ``secrets`` (providers.base.environment_variables).
            clean[key] = {name: secret_digest(salt, str(v)) for name, v in value.items()}
            secrets.update({f"{key}.{name}": str(v) for name, v in value.items()})
            sensitive.update(f"deploy.{key}.{name}" for name in value)
        else:
            clean[key] = value
    return clean, secrets, sensitive


def _problem(manifest: Manifest, where: tuple, message: str) -> ManifestError:
    line, col = manifest.positions.of(where)
    return ManifestError([Problem(manifest.display, line, col, message)])


def _tree_hash(manifest: Manifest, hasher: ContentHasher, path: Path, where: tuple) -> str:
    """The content hash, or a located error if a link or a FIFO appeared since validation."""
    try:
        return hasher.tree_hash(path)
    except UnsafeFile as exc:
        try:
            rel = exc.path.relative_to(manifest.root.resolve()).as_posix()
        except ValueError:
            rel = str(exc.path)
        raise _problem(manifest, where, f"{'.'.join(map(str, where))}: {show(rel, 120)} {exc.reason}") from None


def _sample(manifest: Manifest, rel: str, service: str, seen: dict[str, str]) -> str:
    """One read per sample file, however many services share it."""
    if rel not in seen:
        seen[rel] = _read_sample(manifest, manifest.root / rel, service)
    return seen[rel]


def _read_sample(manifest: Manifest, path: Path, service: str) -> str:
    """The sample request, checked again (bounded, regular file, JSON): it may have changed since."""
    where = ("services", service, "sample_request")
    problem = sample_problem(path)
    if problem:
        raise _problem(manifest, where, f"services.{service}.sample_request: {problem}")
    text = (read_regular(path, MAX_SAMPLE_BYTES) or b"").decode("utf-8")
    json.loads(text)
    return text
