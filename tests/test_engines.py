"""The engine starter behind `python3 -m pytest` (tests/engines.py): what it reads and when it starts."""

from __future__ import annotations

import engines


def test_export_lines_are_read_as_the_shell_would():
    text = ("export DOCKER_HOST=unix:///var/tmp/x/docker.sock\n"
            "export MLOPS_DOCKER_UNAVAILABLE=no\\ engine:\\ dockerd\\ failed\n"
            "noise that is not an export\n")
    assert engines.parse_exports(text) == {"DOCKER_HOST": "unix:///var/tmp/x/docker.sock",
                                           "MLOPS_DOCKER_UNAVAILABLE": "no engine: dockerd failed"}


def test_nothing_starts_when_the_run_has_the_engine_or_opts_out(monkeypatch):
    calls = []
    monkeypatch.setattr(engines.subprocess, "run", lambda *a, **k: calls.append(a))
    monkeypatch.setenv("MLOPS_TEST_REGISTRY", "127.0.0.1:5000")
    assert engines.start_missing() == [] and calls == []
    monkeypatch.delenv("MLOPS_TEST_REGISTRY")
    monkeypatch.delenv("MLOPS_DOCKER_UNAVAILABLE", raising=False)
    monkeypatch.setenv("MLOPS_TEST_ENGINES", "none")
    assert engines.start_missing() == [] and calls == []


def test_a_failing_script_becomes_the_skip_reason(monkeypatch, tmp_path):
    script = tmp_path / "up.sh"
    script.write_text("echo 'broken: no dockerd here' >&2; exit 0\n")
    engine = engines.Engine("fake", str(script), "/bin/true", ("FAKE_READY", "FAKE_UNAVAILABLE"),
                            "FAKE_STATE", str(tmp_path), "none.pid", 30)
    monkeypatch.setattr(engines, "ENGINES", (engine,))
    monkeypatch.delenv("FAKE_READY", raising=False)
    monkeypatch.delenv("FAKE_UNAVAILABLE", raising=False)
    monkeypatch.delenv("MLOPS_TEST_ENGINES", raising=False)
    assert engines.start_missing() == []
    assert engines.os.environ.pop("FAKE_UNAVAILABLE") == f"{script} failed: broken: no dockerd here"
