"""Image identity, Dockerfile layer order, build context and pip settings: no engine needed."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from providers.base import ProjectContext, ProviderError
from providers.images.build import _failure
from providers.images.pipconf import PipSettings, host_pip_settings
from providers.images.recipe import ModelFiles, Recipe, build_context, dockerfile, image_tag, recipe_for
from providers.local.docker import DockerLocalProvider

SPEC = {
    "models": ["m:1@aaaaaaaaaaaa"], "environment": "e@bbbbbbbbbbbb", "source": "src@cccccccccccc",
    "entry_script": "score.py", "runtime": "mlops-runtime@dddddddddddd",
    "deploy": {"port": "auto", "auth": "key", "workers": 1},
}


@pytest.mark.parametrize("key, value", [
    ("models", ["m:2@eeeeeeeeeeee"]), ("environment", "e@ffffffffffff"), ("source", "src@000000000000"),
    ("entry_script", "other.py"), ("runtime", "mlops-runtime@111111111111"),
])
def test_the_tag_changes_with_what_the_image_is_made_of(key, value):
    assert image_tag({**SPEC, key: value}) != image_tag(SPEC)


def test_the_tag_ignores_deploy_settings_and_is_stable():
    assert image_tag({**SPEC, "deploy": {"port": 8080, "cpu": 2}}) == image_tag(SPEC)
    assert image_tag(dict(reversed(list(SPEC.items())))) == image_tag(SPEC)


def _provider(config: dict, tmp_path: Path) -> DockerLocalProvider:
    context = ProjectContext(project="shop", root=tmp_path, state_dir=tmp_path / ".mlops", cache_dir=tmp_path)
    return DockerLocalProvider(target="box", config=config, context=context)


def test_the_spec_names_the_image_and_a_registry_shows_in_it(tmp_path):
    local = _provider({"provider": "local", "engine": "docker"}, tmp_path).prepare().spec("api", SPEC)
    pushed = _provider({"provider": "local", "engine": "docker", "registry": "127.0.0.1:5000/ml"},
                       tmp_path).prepare().spec("api", SPEC)
    assert local["image"] == f"shop/api:{image_tag(SPEC)}"
    assert pushed["image"] == f"127.0.0.1:5000/ml/shop/api:{image_tag(SPEC)}"
    assert {k: v for k, v in local.items() if k != "image"} == SPEC


def test_schemas_add_registry_and_limits():
    target = DockerLocalProvider.schema().target["properties"]
    deploy = DockerLocalProvider.schema().deploy["properties"]
    assert "registry" in target and target["engine"]["const"] == "docker"
    assert {"cpu", "memory_gb", "port", "auth"} <= set(deploy)


def _recipe(tmp_path: Path) -> Recipe:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "score.py").write_text("def init(): pass\ndef run(d): return d\n")
    (tmp_path / "src" / "__pycache__").mkdir()
    (tmp_path / "src" / "__pycache__" / "x.pyc").write_bytes(b"junk")
    version = tmp_path / "models" / "m" / "1"
    version.mkdir(parents=True)
    (version / "model.txt").write_text("v1\n")
    inputs = {"environment": {"python": "3.11", "pip": ["six"]}, "source_dir": str(tmp_path / "src"),
              "entry_script": "score.py", "models": {"m": {"version": 1, "path": str(version)}}}
    return recipe_for(project="shop", service="api", spec=SPEC, inputs=inputs, registry=None, git={"commit": "abc"})


def test_layers_go_from_packages_to_source(tmp_path):
    text = dockerfile(_recipe(tmp_path))
    order = [text.index(s) for s in ("pip install", "COPY --from=packages", "COPY runtime/", "COPY models/",
                                     "COPY app/", 'mlops.fingerprint="')]
    assert order == sorted(order)
    final_stage = text[text.index("COPY --from=packages"):]
    assert "pip.conf" not in final_stage, "the host's pip settings stay in the package stage"


def test_the_build_context_is_deterministic_and_skips_caches(tmp_path):
    recipe = _recipe(tmp_path)
    pip = PipSettings(conf="[global]\n", ca_bundle=b"PEM")
    first = build_context(recipe, pip).read()
    second = build_context(recipe, pip).read()
    assert first == second
    with tarfile.open(fileobj=io.BytesIO(first)) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert "app/score.py" in members and "models/m/1/model.txt" in members
    assert not any("__pycache__" in n for n in members)
    assert {m.mtime for m in members.values()} == {0}
    assert members["models/m"].isdir() and members["runtime"].isdir()


def test_an_unregistered_model_without_source_is_an_error(tmp_path):
    recipe = _recipe(tmp_path)
    missing = Recipe(**{**recipe.__dict__, "models": (ModelFiles("m", 9, tmp_path / "nope"),)})
    with pytest.raises(ProviderError, match="model m version 9 is not registered"):
        build_context(missing, PipSettings("", b""))


def test_pip_settings_keep_only_what_works_in_a_container(monkeypatch):
    monkeypatch.setenv("PIP_INDEX_URL", "https://index.example/simple")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "file:///opt/pypi/simple https://extra.example/simple")
    settings = host_pip_settings()
    assert "index-url = https://index.example/simple" in settings.conf
    assert "extra-index-url = https://extra.example/simple" in settings.conf
    assert "file://" not in settings.conf and "find-links" not in settings.conf
    if settings.ca_bundle:
        assert "cert = /etc/mlops-pip/ca.pem" in settings.conf


def test_a_build_failure_names_the_step_and_the_pip_error(tmp_path):
    recipe = _recipe(tmp_path)
    output = ["Collecting nope==1", "ERROR: Could not find a version that satisfies the requirement nope==1",
              "ERROR: No matching distribution found for nope==1", "", "[notice] something"]
    message = _failure(recipe, 5, 16, "RUN python3 -m venv /opt/venv && pip install -r r.txt", output,
                       "The command returned a non-zero code: 1")
    assert "step 5/16 (pip install)" in message
    assert message.count("ERROR:") == 2 and "No matching distribution found for nope==1" in message
    assert "mlops logs --build api" in message and "\n" not in message


def test_an_environment_index_serves_its_own_packages_and_not_the_runtime(tmp_path):
    """pip_index_url: the environment's packages come from its index, the runtime's from the machine's."""
    plain = _recipe(tmp_path)
    indexed = Recipe(**{**plain.__dict__, "index_url": "https://pypi.example.org/simple"})
    assert plain.index_url is None and plain.own_packages == 1
    text = dockerfile(indexed)
    own = 'install --no-cache-dir --index-url "https://pypi.example.org/simple" -r /tmp/mlops-requirements.txt'
    assert own in text
    assert text.index(own) < text.index("-r /tmp/mlops-runtime-requirements.txt")
    assert "--index-url" not in dockerfile(plain)
    with tarfile.open(fileobj=build_context(indexed, PipSettings("[global]\n", b"")), mode="r") as tar:
        files = {m.name: tar.extractfile(m).read().decode() for m in tar.getmembers() if m.name.endswith(".txt")
                 and "/" not in m.name}
    assert files["requirements.txt"] == "six\n"
    assert "six" not in files["runtime-requirements.txt"] and "uvicorn" in files["runtime-requirements.txt"]
