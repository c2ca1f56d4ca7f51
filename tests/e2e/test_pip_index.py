"""pip_index_url reaches pip: a real virtualenv build installs the environment's package from a
PEP 503 index on 127.0.0.1 (one hand-made wheel) and the scoring runtime from the machine's index."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import threading
import zipfile
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from providers.local.venvs import ensure_venv, pip_installs, venv_key, venv_python

pytestmark = pytest.mark.slow

PROJECT = "mlops-index-probe"
MODULE = "mlops_index_probe"


def _wheel(folder: Path) -> Path:
    """A minimal pure-Python wheel (PEP 427) whose module says where it came from."""
    name = f"{MODULE}-0.1-py3-none-any.whl"
    dist = f"{MODULE}-0.1.dist-info"
    files = {
        f"{MODULE}/__init__.py": "ORIGIN = 'the environment index'\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {PROJECT}\nVersion: 0.1\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: mlops-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        raw = text.encode()
        sha = base64.urlsafe_b64encode(hashlib.sha256(raw).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={sha},{len(raw)}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = "\n".join(record) + "\n"
    out = folder / name
    with zipfile.ZipFile(out, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    return out


class _Index(SimpleHTTPRequestHandler):
    seen: list[str] = []

    def log_message(self, *args: object) -> None:
        type(self).seen.append(self.path)


@pytest.fixture
def index(tmp_path: Path):
    project = tmp_path / "simple" / PROJECT
    project.mkdir(parents=True)
    _wheel(project)
    _Index.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Index, directory=str(tmp_path)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/simple"
    server.shutdown()
    server.server_close()


def test_pip_installs_split_only_when_an_index_is_named() -> None:
    plain = {"python": "3.11", "pip": ["numpy"]}
    assert len(pip_installs(plain)) == 1 and pip_installs(plain)[0][0] == "numpy"
    indexed = {**plain, "pip_index_url": "https://pypi.example.org/simple"}
    own, runtime = pip_installs(indexed)
    assert own == ["--index-url=https://pypi.example.org/simple", "numpy"]
    assert "numpy" not in runtime and not any(a.startswith("--") for a in runtime)
    assert venv_key(indexed) != venv_key(plain)
    assert venv_key(plain) == venv_key({"python": "3.11", "pip": ["numpy"], "pip_index_url": ""})


def test_a_virtualenv_takes_the_environments_package_from_its_index(index: str, tmp_path: Path) -> None:
    import sys

    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    spec = {"python": python, "pip": [f"{PROJECT}==0.1"], "pip_index_url": index}
    steps: list[str] = []
    venv = ensure_venv(tmp_path / "cache", spec, steps.append)
    out = subprocess.run([str(venv_python(venv)), "-c", f"import {MODULE}, uvicorn; print({MODULE}.ORIGIN)"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "the environment index"
    assert any(p.startswith(f"/simple/{PROJECT}") for p in _Index.seen), _Index.seen
    assert not any("uvicorn" in p for p in _Index.seen), "the runtime's packages come from the machine's index"
    assert any("from the environment's index" in s for s in steps)
