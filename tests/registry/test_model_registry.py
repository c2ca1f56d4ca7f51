"""Model versions as OCI artifacts, on the embedded layout and on the real registry alike."""

from __future__ import annotations

import json
from pathlib import Path

from registry_fixtures import Counting, repo  # noqa: F401  (fixture)

from planner.hashing import ContentHasher
from providers.oci.models import FILE_TYPE, MODEL_TYPE, ModelRegistry
from providers.oci.repository import MANIFEST_TYPE

GIT = {"commit": "c0ffee" * 6 + "abcd", "dirty": True}


def model_folder(root: Path, content: bytes) -> Path:
    folder = root / "ridge"
    (folder / "sub").mkdir(parents=True, exist_ok=True)
    (folder / "weights.bin").write_bytes(content)
    (folder / "sub" / "meta.json").write_text('{"k": 1}')
    return folder


def test_register_read_back_and_fetch_by_digest(repo, tmp_path):  # noqa: F811
    counting = Counting(repo)
    registry = ModelRegistry(counting)
    source = model_folder(tmp_path / "src", b"x" * 4096)
    sha = ContentHasher().tree_hash(source)
    assert registry.planned_version("ridge", sha) == 1

    assert registry.register("ridge", source, sha, "models/ridge", GIT) == 1
    first_uploads = len(counting.uploads)
    assert first_uploads == 3        # two files and the empty config, nothing else
    registry.set_current("ridge", sha, source_rel="models/ridge", tags={"area": "health"}, description="d", git=GIT)

    # The artifact: its own type, one layer per file titled with its path, provenance annotations.
    tags = repo.tags()
    entry = next(t for t in tags if t.startswith("m.ridge.r"))
    assert "m.ridge.v1" in tags and "m.ridge.current" in tags
    manifest = json.loads(repo.get_manifest(entry))
    assert manifest["mediaType"] == MANIFEST_TYPE and manifest["artifactType"] == MODEL_TYPE
    assert sorted(layer["annotations"]["org.opencontainers.image.title"] for layer in manifest["layers"]) == \
        ["ridge/sub/meta.json", "ridge/weights.bin"]
    assert {layer["mediaType"] for layer in manifest["layers"]} == {FILE_TYPE}
    ann = manifest["annotations"]
    assert ann["dev.mlops.model.name"] == "ridge" and ann["dev.mlops.model.sha256"] == sha
    assert ann["dev.mlops.model.source"] == "models/ridge"
    assert ann["org.opencontainers.image.revision"] == GIT["commit"] and ann["dev.mlops.git.dirty"] == "true"
    assert repo.get_manifest("m.ridge.v1") == repo.get_manifest(entry)

    # A second registration of the same bytes uploads nothing and keeps the number.
    assert ModelRegistry(counting).register("ridge", source, sha, "models/ridge", GIT) == 1
    assert len(counting.uploads) == first_uploads

    # Another reader (no shared memory) sees the same current version and can fetch the files.
    reader = ModelRegistry(repo)
    [current] = reader.current_models()
    assert (current["name"], current["version"], current["sha256"], current["tags"]) == ("ridge", 1, sha,
                                                                                         {"area": "health"})
    dest = reader.fetch("ridge", sha, tmp_path / "cache" / sha)
    assert (dest / "ridge" / "weights.bin").read_bytes() == b"x" * 4096
    assert ContentHasher().tree_hash(dest / "ridge") == sha

    # New bytes: version 2, only the changed file uploaded; version 1 stays readable.
    (source / "weights.bin").write_bytes(b"y" * 4096)
    sha2 = ContentHasher().tree_hash(source)
    assert reader.planned_version("ridge", sha2) == 2
    assert ModelRegistry(counting).register("ridge", source, sha2, "models/ridge", GIT) == 2
    assert len(counting.uploads) == first_uploads + 1
    assert [(i.number, i.sha256) for i in ModelRegistry(repo).versions("ridge")] == [(1, sha), (2, sha2)]


def test_content_changed_after_the_plan_is_refused(repo, tmp_path):  # noqa: F811
    source = model_folder(tmp_path / "src", b"a")
    planned = ContentHasher().tree_hash(source)
    (source / "weights.bin").write_bytes(b"b")
    registry = ModelRegistry(repo)
    try:
        registry.register("ridge", source, planned, "ridge", {})
    except Exception as exc:
        assert "changed after it was planned" in str(exc)
    else:
        raise AssertionError("registering other content than planned must fail")
    assert registry.versions("ridge") == []


def test_environment_records_and_removal(repo):  # noqa: F811
    registry = ModelRegistry(repo)
    registry.set_environment("sklearn", {"python": "3.11", "pip": ["joblib"]}, GIT)
    assert [(e["name"], e["spec"]) for e in ModelRegistry(repo).environments()] == \
        [("sklearn", {"python": "3.11", "pip": ["joblib"]})]
    registry.remove_environment("sklearn")
    assert ModelRegistry(repo).environments() == []


def test_a_removed_model_keeps_its_versions(repo, tmp_path):  # noqa: F811
    source = model_folder(tmp_path / "src", b"z")
    sha = ContentHasher().tree_hash(source)
    registry = ModelRegistry(repo)
    registry.register("ridge", source, sha, "ridge", GIT)
    registry.set_current("ridge", sha, source_rel="ridge", tags={}, description="", git=GIT)
    registry.remove_current("ridge")
    reader = ModelRegistry(repo)
    assert reader.current_models() == [] and reader.removed_models() == ["ridge"]
    assert [(i.number, i.sha256) for i in reader.versions("ridge")] == [(1, sha)]
    # Registered again later: the same content keeps its number.
    registry.set_current("ridge", sha, source_rel="ridge", tags={}, description="", git=GIT)
    assert [m["version"] for m in ModelRegistry(repo).current_models()] == [1]
    assert ModelRegistry(repo).removed_models() == []
