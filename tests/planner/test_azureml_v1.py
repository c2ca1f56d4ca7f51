"""`mlops import` logic: Azure ML v1 files -> ml.yaml, checked with golden files.

Inputs are the published v1 examples (tests/golden/import/v1, verbatim from Azure's docs and
examples); the expected manifests and warnings are in tests/golden/import/expected. Regenerate
them after a deliberate change with ``MLOPS_UPDATE_GOLDEN=1``. Every written manifest must pass
validation and re-importing must change nothing.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import providers.registry  # noqa: F401 - imported before the tests change directory
from planner.errors import MlopsError
from planner.importers.azureml_v1 import import_v1, parse_az, write
from planner.importers.pincheck import IndexConfig
from planner.manifest import load_manifest
from providers.base import variant_of
from providers.local import LocalProvider
from tests.doubles import pypi_simple

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "import"
UPDATE = os.environ.get("MLOPS_UPDATE_GOLDEN") == "1"
MACHINE_ENV = dict(os.environ)
"""The environment before the tests point pip at their index (what `mlops apply` builds with)."""

CASES = {
    "local": dict(inference_config="inferenceconfig.json", deploy_configs=["deploymentconfig.json"]),
    "aci": dict(inference_config="dummyinferenceconfig.json", deploy_configs=["re-deploymentconfig.json"]),
    "aks": dict(inference_config="inferenceconfig.json", deploy_configs=["aks-deploymentconfig.json"]),
    "stages": dict(
        inference_config="inferenceconfig.json",
        deploy_configs=["deploymentconfig.json", "re-deploymentconfig.json", "aks-deploymentconfig.json"],
    ),
}


MLOPSPYTHON = {
    "inference_config": "diabetes_regression/scoring/inference_config.yml",
    "deploy_configs": [
        "diabetes_regression/scoring/deployment_config_aci.yml",
        "diabetes_regression/scoring/deployment_config_aks.yml",
    ],
    "models": ["diabetes_regression_model.pkl=models/diabetes_regression_model.pkl"],
    "service": "mlops",
}


@pytest.fixture(scope="module")
def index_double():
    with pypi_simple.serve() as index:
        yield index


@pytest.fixture(autouse=True)
def package_index(monkeypatch, index_double):
    """pip's configuration names only a PEP 503 double on 127.0.0.1 (never a real index)."""
    for name in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_NO_INDEX"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", index_double.url)
    return index_double


@pytest.fixture
def mlopspython(tmp_path, monkeypatch):
    """A copy of MLOpsPython's scoring files (YAML, tests/golden/import/mlopspython) as the project."""
    folder = tmp_path / "MLOpsPython"
    shutil.copytree(GOLDEN / "mlopspython", folder)
    monkeypatch.chdir(folder)
    return folder


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A copy of the v1 example folder as the working directory (the import resolves paths there)."""
    folder = tmp_path / "project"
    shutil.copytree(GOLDEN / "v1", folder)
    monkeypatch.chdir(folder)
    return folder


def local_only(config):
    """Deploy settings as the real local provider takes them, with no other provider installed:
    goldens must not change when someone installs an aci or aks provider."""
    if config.get("provider") != "local":
        return "is not installed"
    return frozenset(variant_of(LocalProvider, config).schema().deploy["properties"])


def run_import(case: dict, output: Path, **extra):
    extra.setdefault("deploy_fields", local_only)
    extra.setdefault("pin_index", lambda: IndexConfig((os.environ["PIP_INDEX_URL"],)))
    return import_v1(
        inference_config=Path(case["inference_config"]) if case.get("inference_config") else None,
        deploy_configs=[Path(p) for p in case.get("deploy_configs", [])],
        models=case.get("models", ["bidaf-onnx=model.onnx"]),
        service=case.get("service", "myservice"),
        from_az=case.get("from_az", []),
        output=output,
        **extra,
    )


def check_golden(name: str, text: str, warnings: list[str]) -> None:
    expected, expected_warnings = GOLDEN / "expected" / f"{name}.yaml", GOLDEN / "expected" / f"{name}.warnings"
    shown = "\n".join(warnings) + "\n"
    if UPDATE:
        expected.parent.mkdir(exist_ok=True)
        expected.write_text(text)
        expected_warnings.write_text(shown)
    assert text == expected.read_text()
    assert shown == expected_warnings.read_text()


@pytest.mark.parametrize("name", sorted(CASES))
def test_published_examples_import_validate_and_reimport_unchanged(work, name):
    output = work / "ml.yaml"
    result = run_import(CASES[name], output)
    check_golden(name, result.text, result.warnings)
    write(result, output)
    manifest = load_manifest(output, env={"MYSERVICE_PRIMARY_KEY": "k" * 32})
    assert set(manifest.section("services")) == set(result.data["services"])
    again = run_import(CASES[name], output)
    assert (again.changed, again.text) == (False, output.read_text())


def test_mlopspython_yaml_configs_import_validate_and_reimport_unchanged(mlopspython):
    """MLOpsPython ships YAML inference and deployment configs (az ml model deploy --ic/--dc took
    YAML as well as JSON); they import like the JSON ones."""
    output = mlopspython / "ml.yaml"
    result = run_import(MLOPSPYTHON, output)
    check_golden("mlopspython", result.text, result.warnings)
    write(result, output)
    load_manifest(output, env={"MLOPS_PRIMARY_KEY": "k" * 32})
    services = result.data["services"]
    assert set(services) == {"mlops-aci", "mlops-aks"}
    assert services["mlops-aci"]["source_dir"] == "diabetes_regression/scoring"
    assert services["mlops-aks"]["deploy"]["scoring_timeout_ms"] == 5000
    assert services["mlops-aci"]["deploy"] == {"auth": "none", "cpu": 1, "memory_gb": 4, "port": "auto"}
    again = run_import(MLOPSPYTHON, output)
    assert (again.changed, again.text) == (False, output.read_text())


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("dc.yml", "computeType: ACI\nport: [1\n", "dc.yml:3:1: "),
        ("dc.yml", "- computeType: ACI\n", "dc.yml:1:1: must be a YAML mapping"),
        ("dc.yml", "computeType: iot\n", "dc.yml:1:1: unknown computeType 'iot'"),
        ("dc.yml", "containerResourceRequirements:\n  cpu: 1\ncomputeType:\n", "dc.yml:1:1: computeType is missing"),
        ("dc.yml", "computeType: ACI\nport: " + "7" * 5000 + "\n", "dc.yml:2:7: "),
        ("deployment_config", "computeType: iot\n", "deployment_config:1:1: unknown computeType 'iot'"),
    ],
)
def test_bad_yaml_configs_are_one_located_line(mlopspython, name, text, expected):
    (mlopspython / name).write_text(text)
    case = {**MLOPSPYTHON, "deploy_configs": [name]}
    with pytest.raises(MlopsError) as caught:
        run_import(case, mlopspython / "ml.yaml")
    message = str(caught.value)
    assert "\n" not in message and message.startswith(expected), message


def test_a_yaml_inference_config_error_names_its_line(mlopspython):
    (mlopspython / "ic.yaml").write_text("runtime: python\nentryScript: nothere.py\nsourceDirectory: models\n")
    with pytest.raises(MlopsError) as caught:
        run_import({**MLOPSPYTHON, "inference_config": "ic.yaml"}, mlopspython / "ml.yaml")
    assert str(caught.value).startswith("ic.yaml:2:1: entryScript 'nothere.py' is not a file"), str(caught.value)


def test_az_command_lines(work):
    lines = [
        "az ml model register -n bidaf_onnx -p ./model.onnx --tag area=qna",
        "az ml model deploy -n myservice -m bidaf_onnx:1 --overwrite --ic inferenceconfig.json "
        "--dc deploymentconfig.json",
    ]
    output = work / "ml.yaml"
    result = import_v1(inference_config=None, from_az=lines, output=output, deploy_fields=local_only)
    check_golden("from-az", result.text, result.warnings)
    write(result, output)
    load_manifest(output)
    assert result.data["models"] == {"bidaf_onnx": {"path": "model.onnx", "tags": {"area": "qna"}}}


def test_installed_providers_by_default(work):
    """Without a deploy_fields argument the installed providers decide; the result validates."""
    output = work / "ml.yaml"
    result = import_v1(
        inference_config=Path("inferenceconfig.json"),
        deploy_configs=[Path("deploymentconfig.json")],
        models=["bidaf-onnx=model.onnx"],
        service="myservice",
        output=output,
    )
    write(result, output)
    load_manifest(output)


def test_parse_az_deploy_line():
    az = parse_az("az ml model deploy -n svc -m m:1 -m other:3 --ic ic.json --dc dc.json --ct aks1")
    assert (az.service, az.models, az.inference_config, az.deploy_config) == (
        "svc",
        ["m", "other"],
        "ic.json",
        "dc.json",
    )


def test_import_adds_to_an_existing_manifest_keeping_it(work):
    output = work / "ml.yaml"
    existing = (
        "# my project, with my comments\n"
        "version: 1\n"
        "project: demo\n"
        "targets:\n"
        "  dev:\n"
        "    provider: local   # keep me\n"
        "models:\n"
        "  other:\n"
        "    path: model.onnx\n"
        "environments:\n"
        "  base:\n"
        '    python: "3.11"\n'
        "services:\n"
        "  other-api:\n"
        "    models: [other]\n"
        "    environment: base\n"
        "    source_dir: source_dir\n"
        "    entry_script: echo_score.py\n"
        "    target: dev\n"
    )
    output.write_text(existing)
    result = run_import(CASES["aci"], output)
    assert result.changed
    assert result.text.startswith(existing.split("models:")[0])  # untouched head, comments kept
    assert "provider: local   # keep me" in result.text
    assert set(result.data["services"]) == {"other-api", "myservice"}
    assert result.data["project"] == "demo"
    write(result, output)
    load_manifest(output)
    again = run_import(CASES["aci"], output)
    assert (again.changed, again.text) == (False, result.text)


def test_reimport_after_a_v1_change_replaces_only_its_entries(work):
    output = work / "ml.yaml"
    write(run_import(CASES["aci"], output), output)
    text = output.read_text().replace("  myservice:\n", "  myservice:\n    # my note\n")
    output.write_text(text)
    config = json.loads((work / "re-deploymentconfig.json").read_text())
    config["containerResourceRequirements"]["cpu"] = 2
    (work / "re-deploymentconfig.json").write_text(json.dumps(config))
    result = run_import(CASES["aci"], output)
    assert result.data["services"]["myservice"]["deploy"]["cpu"] == 2
    assert any("services.myservice replaced" in w for w in result.warnings)
    write(result, output)
    load_manifest(output)
    assert output.read_text().count("myservice:") == 1


def test_keys_are_referenced_never_copied(work):
    secret = "S3cret-primary-VALUE-0123456789"
    (work / "keys.json").write_text(
        json.dumps(
            {"computeType": "ACI", "authEnabled": True, "keys": {"primaryKey": secret, "secondaryKey": secret + "2"}}
        )
    )
    result = run_import({"inference_config": "inferenceconfig.json", "deploy_configs": ["keys.json"]}, work / "ml.yaml")
    assert secret not in result.text and all(secret not in w for w in result.warnings)
    assert result.data["services"]["myservice"]["deploy"]["primary_key"] == "${MYSERVICE_PRIMARY_KEY}"


def test_compute_type_is_case_insensitive(work):
    (work / "upper.json").write_text('{"computeType": "AKS", "numReplicas": 2}')
    result = run_import({"inference_config": "inferenceconfig.json", "deploy_configs": ["upper.json"]}, work / "o.yaml")
    assert result.data["targets"]["aks"]["provider"] == "local"
    assert any("replicas: 2" in w for w in result.warnings)


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (
            {"dc.json": '{\n  "computeType": "fpga"\n}'},
            "dc.json:2:3: unknown computeType 'fpga': use local, ACI or AKS",
        ),
        ({"dc.json": '{"port": 1}'}, "dc.json:1:1: computeType is missing"),
        ({"dc.json": '{"computeType": "local",\n "port": }'}, "dc.json:2:10: not valid JSON"),
        ({"dc.json": "[1, 2]"}, "dc.json:1:1: must be a JSON object"),
        ({"ic.json": '{"sourceDirectory": "source_dir"}'}, "ic.json:1:1: entryScript is missing"),
        (
            {"ic.json": '{"entryScript": "score.py",\n  "sourceDirectory": "nowhere"}'},
            "ic.json:2:3: sourceDirectory 'nowhere' is not a folder",
        ),
        (
            {"ic.json": '{"entryScript": "missing.py", "sourceDirectory": "source_dir"}'},
            "ic.json:1:2: entryScript 'missing.py' is not a file",
        ),
        (
            {"dc.json": '{"computeType": "ACI",\n "port": ' + "9" * 5000 + "}"},
            "dc.json:2:10: an integer with 5000 digits is too large (at most 30)",
        ),
        ({"dc.json": '{"computeType": "ACI", "cpu": NaN}'}, "dc.json:1:31: NaN is not a JSON number"),
        ({"dc.json": '{"computeType": "ACI", "cpu": 1e999}'}, "dc.json:1:31: 1e999 is not a finite number"),
    ],
)
def test_bad_inputs_are_one_located_line(work, files, expected):
    for name, text in files.items():
        (work / name).write_text(text)
    case = {
        "inference_config": "ic.json" if "ic.json" in files else "inferenceconfig.json",
        "deploy_configs": ["dc.json" if "dc.json" in files else "deploymentconfig.json"],
    }
    with pytest.raises(MlopsError) as caught:
        run_import(case, work / "ml.yaml")
    message = str(caught.value)
    assert "\n" not in message and message.startswith(expected), message


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ({"models": ["no-equals-sign"]}, "--model 'no-equals-sign': write it as NAME=PATH"),
        ({"models": ["m=does/not/exist.pkl"]}, "--model m: "),
        ({"service": "Bad_Name"}, "service name 'Bad_Name' is not a valid service name"),
        ({"deploy_configs": []}, "no deployment configuration"),
        ({"inference_config": None}, "no inference configuration"),
        ({"from_az": ["az ml model deploy -n svc -m ghost:1"]}, "model 'ghost'"),
        ({"deploy_configs": ["nowhere.json"]}, "nowhere.json: file not found"),
    ],
)
def test_bad_arguments_are_one_line(work, case, expected):
    full = {"inference_config": "inferenceconfig.json", "deploy_configs": ["deploymentconfig.json"], **case}
    if "from_az" in case:
        full["models"] = []
    with pytest.raises(MlopsError) as caught:
        run_import(full, work / "ml.yaml")
    assert expected in str(caught.value) and "\n" not in str(caught.value), str(caught.value)


def test_cli_import_writes_then_reports_up_to_date(work, capsys):
    from planner.cli import main

    argv = [
        "import",
        "--ic",
        "inferenceconfig.json",
        "--dc",
        "deploymentconfig.json",
        "--dc",
        "re-deploymentconfig.json",
        "--model",
        "bidaf-onnx=model.onnx",
        "--service",
        "myservice",
    ]
    assert main(argv) == 0
    out = capsys.readouterr()
    assert "Wrote ml.yaml: 2 service(s) (myservice-aci, myservice-local)" in out.out
    assert "Warning: inferenceconfig.json: environment: python 3.6" in out.err
    assert main(["validate"]) == 0
    assert main(argv) == 0
    assert "already up to date" in capsys.readouterr().out


def test_cli_bad_input_is_one_error_line(work, capsys):
    from planner.cli import main

    (work / "iot.json").write_text('{"computeType": "iot"}')
    argv = ["import", "--ic", "inferenceconfig.json", "--dc", "iot.json", "--model", "m=model.onnx", "--service", "abc"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert (
        err == "Error: iot.json:1:2: unknown computeType 'iot': use local, ACI or AKS (IoT Edge deployments "
        "cannot be imported)\n"
    )
    assert not (work / "ml.yaml").exists()


def test_conda_file_pip_carried_over_conda_only_flagged(work):
    (work / "source_dir" / "env.yml").write_text(
        "name: project_environment\nchannels: [conda-forge]\ndependencies:\n"
        "  - python=3.12\n  - numpy=1.26\n  - pip\n  - pip:\n    - scikit-learn==1.5.*\n    - azureml-defaults\n"
        "    - --extra-index-url https://example.invalid/simple\n"
    )
    (work / "ic.json").write_text(
        json.dumps(
            {
                "entryScript": "score.py",
                "sourceDirectory": "source_dir",
                "environment": {"name": "env", "python": {"condaDependenciesFile": "env.yml"}},
            }
        )
    )
    result = run_import({"inference_config": "ic.json", "deploy_configs": ["deploymentconfig.json"]}, work / "o.yaml")
    assert result.data["environments"]["env"] == {"python": "3.12", "pip": ["scikit-learn==1.5.*"]}
    warnings = "\n".join(result.warnings)
    assert "env.yml: dependencies[1]: conda package 'numpy=1.26' is not installed" in warnings
    assert "--extra-index-url" in warnings and "pip package azureml-defaults left out" in warnings


@pytest.mark.slow
def test_imported_example_applies_and_answers_like_azure(work):
    """Azure's echo example, imported then applied on the local target: `mlops call` answers what
    Azure's docs show for it."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    env = {**MACHINE_ENV, "PYTHONPATH": str(repo)}

    def mlops(*args: str) -> subprocess.CompletedProcess:
        # the import checks pins against the test's index; virtualenvs build from the machine's
        run_env = {**os.environ, "PYTHONPATH": str(repo)} if args[0] == "import" else env
        return subprocess.run(
            [sys.executable, "-m", "planner.cli", *args], cwd=work, env=run_env, capture_output=True, text=True,
            timeout=600,
        )

    (work / "deploymentconfig.json").write_text('{"computeType": "local"}')
    imported = mlops(
        "import",
        "--ic",
        "dummyinferenceconfig.json",
        "--dc",
        "deploymentconfig.json",
        "--model",
        "echo=model.onnx",
        "--service",
        "echo-svc",
    )
    assert imported.returncode == 0, imported.stderr
    try:
        applied = mlops("apply", "--auto-approve")
        assert applied.returncode == 0, applied.stdout + applied.stderr
        called = mlops("call", "echo-svc", "--data", '{"this": "is a test"}')
        assert called.returncode == 0, called.stderr
        assert json.loads(called.stdout) == "test is {'this': 'is a test'}"
    finally:
        mlops("destroy", "--auto-approve")


def test_a_5000_digit_integer_is_one_error_line_from_the_cli(work, capsys):
    """Python refuses to parse integers over 4300 digits (ValueError, not a JSONDecodeError): the
    import used to end in a traceback."""
    from planner.cli import main

    (work / "big.json").write_text('{\n  "computeType": "local",\n  "port": ' + "1" * 5000 + "\n}")
    argv = ["import", "--ic", "inferenceconfig.json", "--dc", "big.json", "--model", "m=model.onnx", "--service", "abc"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err == "Error: big.json:3:11: an integer with 5000 digits is too large (at most 30)\n"


@pytest.mark.parametrize(
    ("environment", "field"),
    [
        ({"python": {"condaDependenciesFile": "../../outside/env.yml"}}, "environment.python.condaDependenciesFile"),
        ({"python": {"condaDependenciesFile": "link.yml"}}, "environment.python.condaDependenciesFile"),
        (None, "condaFile"),
    ],
)
def test_a_conda_file_outside_the_project_is_refused(work, environment, field):
    """A v1 file from a pull request must not make the import read files elsewhere on the machine
    (through ``..`` or a symlink); the error names the file and the field."""
    outside = work.parent / "outside"
    outside.mkdir()
    (outside / "env.yml").write_text("dependencies:\n  - python=3.11\n  - pip:\n    - secret-package-name\n")
    (work / "source_dir" / "link.yml").symlink_to(outside / "env.yml")
    config = {"entryScript": "score.py", "sourceDirectory": "source_dir"}
    if environment is None:
        config["condaFile"] = "../../outside/env.yml"
    else:
        config["environment"] = environment
    (work / "ic.json").write_text(json.dumps(config))
    with pytest.raises(MlopsError) as caught:
        run_import({"inference_config": "ic.json", "deploy_configs": ["deploymentconfig.json"]}, work / "ml.yaml")
    message = str(caught.value)
    assert message.startswith("ic.json:1:") and f"{field} " in message and "points outside the project" in message
    assert "\n" not in message and "secret-package-name" not in message


def test_without_a_service_name_one_is_derived_and_said(mlopspython, capsys):
    """MLOpsPython's configs sit in diabetes_regression/scoring: the generic `scoring` folder is
    skipped and the service is named after diabetes_regression; --service still overrides."""
    from planner.cli import main

    case = {**MLOPSPYTHON, "service": None}
    result = run_import(case, mlopspython / "ml.yaml")
    assert set(result.data["services"]) == {"diabetes-regression-aci", "diabetes-regression-aks"}
    assert result.data["project"] == "diabetes-regression"
    assert (
        "no service name given: named the service 'diabetes-regression' after the folder diabetes_regression "
        "(pass --service NAME to choose another)" in result.warnings
    )
    argv = ["import", "--ic", MLOPSPYTHON["inference_config"], "--dc", MLOPSPYTHON["deploy_configs"][0],
            "--model", MLOPSPYTHON["models"][0]]
    assert main(argv) == 0, capsys.readouterr().err
    assert "1 service(s) (diabetes-regression)" in capsys.readouterr().out
    assert main([*argv, "-o", "other.yaml", "--service", "chosen"]) == 0
    assert "1 service(s) (chosen)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("inference_config", "entry_script", "expected"),
    [
        ("p/diabetes_inference_config.json", "p/src/score.py", "diabetes"),
        ("p/dummyinferenceconfig.json", "p/source_dir/echo_score.py", "dummy"),
        ("p/inferenceconfig.json", "p/Fraud_Detection/scoring/score.py", "fraud-detection"),
        ("p/inference_config.yml", "p/scoring/score.py", "p-svc"),
        ("p/inference-config.yaml", "p/src/predict_churn.py", "p-svc"),
        ("p/InferenceConfig.JSON", "p/2024 Models/score.py", "models"),
        ("p/ic.json", "p/score.py", "p-svc"),
        ("q/my-inference-config.json", "q/score.py", "ml-service"),
    ],
)
def test_derived_service_names(tmp_path, inference_config, entry_script, expected):
    from planner.importers.azureml_v1 import derive_service_name

    name, reason = derive_service_name(tmp_path / inference_config, tmp_path / entry_script, tmp_path / "p")
    assert name == expected, reason


def test_derived_service_name_falls_back_to_the_entry_script_then_a_default(tmp_path):
    from planner.importers.azureml_v1 import derive_service_name

    project = tmp_path / "123"
    assert derive_service_name(project / "inference_config.yml", project / "src/predict_churn.py", project) == (
        "predict-churn",
        "the entry script predict_churn.py",
    )
    assert derive_service_name(project / "config.json", project / "score.py", project)[0] == "ml-service"


@settings(max_examples=300, deadline=None)
@given(
    st.text(min_size=0, max_size=80),
    st.text(min_size=1, max_size=40).filter(lambda t: "/" not in t and "\0" not in t and t not in (".", "..")),
)
def test_any_derived_name_follows_azure_mls_rule(text, folder):
    from planner.importers.v1_names import _DNS, derive_service_name, service_name_from

    name = service_name_from(text)
    assert name is None or _DNS.match(name) and "\n" not in name
    project = Path("/nonexistent-project")
    derived, _ = derive_service_name(project / "inference_config.yml", project / folder / "score.py", project)
    assert _DNS.match(derived) and not derived.endswith("\n")


def test_two_deploy_lines_with_one_name_keep_both_stages(work):
    """Like --dc repeated: one service per stage, NAME-<computeType> (only the last stage was kept)."""
    lines = [
        "az ml model deploy -n myservice -m bidaf-onnx:1 --ic inferenceconfig.json --dc deploymentconfig.json",
        "az ml model deploy -n myservice -m bidaf-onnx:1 --ic inferenceconfig.json --dc re-deploymentconfig.json",
    ]
    result = run_import({"inference_config": None, "from_az": lines, "service": None}, work / "ml.yaml")
    assert set(result.data["services"]) == {"myservice-local", "myservice-aci"}
    assert set(result.data["targets"]) == {"local", "aci"}
    repeated = run_import({"inference_config": "inferenceconfig.json", "service": "myservice",
                           "deploy_configs": ["deploymentconfig.json", "re-deploymentconfig.json"]}, work / "ml.yaml")
    assert repeated.text == result.text


def test_mlopspythons_cd_lines_keep_their_service_names(mlopspython):
    """MLOpsPython's CD pipeline deploys one model to ACI as mlops-aci and to AKS as mlops-aks."""
    scoring = "diabetes_regression/scoring"
    lines = [
        f"az ml model deploy --name mlops-aci --model 'diabetes_regression_model.pkl:3' "
        f"--ic {scoring}/inference_config.yml --dc {scoring}/deployment_config_aci.yml -g rg --overwrite -v",
        f"az ml model deploy --name mlops-aks --model 'diabetes_regression_model.pkl:3' --compute-target aks1 "
        f"--ic {scoring}/inference_config.yml --dc {scoring}/deployment_config_aks.yml -g rg --workspace-name ws",
    ]
    case = {"inference_config": None, "from_az": lines, "service": None, "models": MLOPSPYTHON["models"]}
    result = run_import(case, mlopspython / "ml.yaml")
    services = result.data["services"]
    assert set(services) == {"mlops-aci", "mlops-aks"}
    assert (services["mlops-aci"]["target"], services["mlops-aks"]["target"]) == ("aci", "aks")
    assert not any("no service name given" in w for w in result.warnings)
    write(result, mlopspython / "ml.yaml")
    load_manifest(mlopspython / "ml.yaml")


def test_deploy_lines_with_different_inference_configs_are_refused(work):
    lines = [
        "az ml model deploy -n a-svc -m bidaf-onnx:1 --ic inferenceconfig.json --dc deploymentconfig.json",
        "az ml model deploy -n b-svc -m bidaf-onnx:1 --ic dummyinferenceconfig.json --dc re-deploymentconfig.json",
    ]
    with pytest.raises(MlopsError, match="the deploy lines name 2 inference configs"):
        run_import({"inference_config": None, "from_az": lines, "service": None}, work / "ml.yaml")


# -- pins against the package index (issue 22, item 16) ----------------------------------------------


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_old_pins_name_the_nearest_release_with_a_wheel(mlopspython):
    """MLOpsPython's scoring pins (Python 3.7) raised to 3.11: each pin without a cp311 wheel is
    named with the nearest release that has one; pure-Python pins (joblib) pass."""
    result = run_import(MLOPSPYTHON, mlopspython / "ml.yaml")
    pins = {w.split("pip entry ")[1].split("'")[1]: w for w in result.warnings if "pip entry '" in w}
    assert set(pins) == {"scikit-learn==0.22", "numpy==1.17.3", "scipy==1.3.1", "pandas==0.25.3"}
    assert "nearest release with one: 1.1.3 (pin scikit-learn==1.1.3)" in pins["scikit-learn==0.22"]
    assert "nearest release with one: 1.23.2 (pin numpy==1.23.2)" in pins["numpy==1.17.3"]
    assert not any("check that the pinned packages exist" in w for w in result.warnings)


def test_pins_that_fit_the_python_pass(mlopspython):
    conda = mlopspython / "diabetes_regression/scoring/conda_dependencies.yml"
    conda.write_text("dependencies:\n- python=3.11\n- pip:\n  - scikit-learn==1.5.*\n  - numpy>=1.23,<2\n"
                     "  - joblib\n  - nltk==3.9.1; python_version < '3.8'\n")
    result = run_import(MLOPSPYTHON, mlopspython / "ml.yaml")
    assert not any("pip entry" in w or "not checked" in w for w in result.warnings), result.warnings


@pytest.mark.parametrize(
    ("pip", "expected"),
    [
        ("numpy>=1.17,<1.22", "pip entry 'numpy>=1.17,<1.22' has no wheel for Python 3.11 on this platform "
         "(1.17.3, 1.21.6 only as sources or for other Pythons; pip would try to build it); nearest release with "
         "one: 1.23.2"),
        ("numpy==9.9", "pip entry 'numpy==9.9': no release on the index matches it; nearest release with one: 1.26.4"),
        ("not-a-real-package==1.0", "pip entry 'not-a-real-package==1.0': not-a-real-package is not on the package "
         "index (http://127.0.0.1:"),
        ("azureml-model-management-sdk==1.0.1b6.post1", None),
    ],
)
def test_pin_verdicts(mlopspython, pip, expected):
    conda = mlopspython / "diabetes_regression/scoring/conda_dependencies.yml"
    conda.write_text(f"dependencies:\n- python=3.11\n- pip:\n  - {pip}\n")
    result = run_import(MLOPSPYTHON, mlopspython / "ml.yaml")
    found = [w for w in result.warnings if "pip entry" in w]
    if expected is None:
        assert not found
    else:
        assert len(found) == 1 and expected in found[0], found


def test_yanked_and_requires_python_files_do_not_count(tmp_path):
    from planner.importers.pincheck import check_pins

    catalogue = {"numpy": [(f, ">=3.12") for f in pypi_simple._cp("numpy", "1.26.4", ["311", "312"])]
                 + [(f, None) for f in pypi_simple._cp("numpy", "1.25.0", ["311"])]}
    with pypi_simple.serve(catalogue, yanked=[pypi_simple._cp("numpy", "1.25.0", ["311"])[0]]) as index:
        warnings = check_pins(["numpy==1.26.4"], "3.11", IndexConfig((index.url,)))
        assert len(warnings) == 1 and "no release of it has one" in warnings[0], warnings
        assert check_pins(["numpy==1.26.4"], "3.12", IndexConfig((index.url,))) == []
        assert check_pins(["numpy==1.25.0"], "3.11", IndexConfig((index.url,))) == []  # an exact pin takes it
        assert "no release of it has one" in check_pins(["numpy>=1.25"], "3.11", IndexConfig((index.url,)))[0]


@settings(max_examples=200, deadline=None)
@given(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-._~", min_size=1, max_size=20),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEF0123456789-_.~%!$&'()*+,;=", min_size=1, max_size=40),
    st.sampled_from(["https", "http", "git+https"]),
)
def test_the_mask_replaces_exactly_the_password(user, password, scheme):
    from planner.urlmask import mask_url_credentials

    text = f"pip entry '--extra-index-url {scheme}://{user}:{password}@index.example/simple' left out"
    assert mask_url_credentials(text) == text.replace(f"{user}:{password}@", f"{user}:(sensitive)@")


def test_an_unreachable_index_is_one_warning_and_the_import_goes_on(work, capsys, monkeypatch):
    from planner.cli import main

    monkeypatch.setenv("PIP_INDEX_URL", f"http://builder:hunter2-secret@127.0.0.1:{_closed_port()}/simple")
    argv = ["import", "--ic", "inferenceconfig.json", "--dc", "deploymentconfig.json", "--model", "m=model.onnx"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    unreachable = [line for line in err.splitlines() if "pip pins not checked" in line]
    assert len(unreachable) == 1 and "cannot be reached" in unreachable[0], err
    assert "http://builder:(sensitive)@127.0.0.1:" in unreachable[0]
    assert "hunter2" not in err
    assert (work / "ml.yaml").exists()


def test_the_index_comes_from_pips_configuration_with_its_login(work, capsys, monkeypatch, tmp_path):
    """No PIP_INDEX_URL: the index-url of pip's configuration file is used (read with `pip config
    list`), its login sent as HTTP Basic, its password never shown."""
    from planner.cli import main

    with pypi_simple.serve(credentials=("feed", "s3cret-token-value")) as index:
        url = index.url.replace("http://", "http://feed:s3cret-token-value@")
        config = tmp_path / "pip.conf"
        config.write_text(f"[global]\nindex-url = {url}\n")
        monkeypatch.setenv("PIP_CONFIG_FILE", str(config))
        monkeypatch.delenv("PIP_INDEX_URL")
        (work / "source_dir" / "env.yml").write_text(
            "dependencies:\n- python=3.7\n- pip:\n  - numpy==1.17.3\n  - private-thing==2.0\n"
            f"  - --extra-index-url {url}\n"
        )
        (work / "ic.json").write_text(json.dumps({"entryScript": "score.py", "sourceDirectory": "source_dir",
                                                  "environment": {"python": {"condaDependenciesFile": "env.yml"}}}))
        argv = ["import", "--ic", "ic.json", "--dc", "deploymentconfig.json", "--model", "m=model.onnx"]
        assert main(argv) == 0
        assert any(p.startswith("/simple/numpy/") for p in index.requests)
    err = capsys.readouterr().err
    assert "pip entry 'numpy==1.17.3' has no wheel for Python 3.11" in err
    assert "private-thing is not on the package index (http://feed:(sensitive)@127.0.0.1:" in err
    assert "--extra-index-url http://feed:(sensitive)@127.0.0.1:" in err
    assert "s3cret-token-value" not in err


def test_entry_script_imports_of_the_v1_sdk_are_flagged_web_servers_dropped_unless_imported(work):
    (work / "source_dir" / "score.py").write_text(
        "import os\nimport flask\nfrom azureml.contrib.services.aml_request import rawhttp\n"
        "from azureml.core import Model\n\n"
        "def init():\n    global path\n    path = Model.get_model_path('m')\n\ndef run(r):\n    return path\n"
    )
    (work / "source_dir" / "env.yml").write_text(
        "dependencies:\n- python=3.11\n- pip:\n  - flask==3.0.3\n  - gunicorn==22.0.0\n"
    )
    (work / "ic.json").write_text(json.dumps({"entryScript": "score.py", "sourceDirectory": "source_dir",
                                              "environment": {"python": {"condaDependenciesFile": "env.yml"}}}))
    result = run_import({"inference_config": "ic.json", "deploy_configs": ["deploymentconfig.json"]}, work / "o.yaml")
    sdk = [w for w in result.warnings if "Azure ML SDK v1" in w]
    assert len(sdk) == 1 and sdk[0].startswith("source_dir/score.py:4: imports azureml.core ")
    assert "line 8 calls Model.get_model_path" in sdk[0] and "AZUREML_MODEL_DIR" in sdk[0]
    assert result.data["environments"]["myservice"]["pip"] == ["flask==3.0.3"]
    assert any("pip package gunicorn left out" in w for w in result.warnings)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("--extra-index-url https://user:pa55@host.example/simple",
         "--extra-index-url https://user:(sensitive)@host.example/simple"),
        ("see https://tok3n@pkgs.example/simple/ now", "see https://(sensitive)@pkgs.example/simple/ now"),
        ("https://h.example/simple?token=abc&x=1", "https://h.example/simple?token=(sensitive)&x=(sensitive)"),
        ("https://h.example/simple/?api_key=abc;sig=zz", "https://h.example/simple/?api_key=(sensitive)"),
        ("plain https://h.example/simple and user@mail", "plain https://h.example/simple and user@mail"),
    ],
)
def test_mask_url_credentials(text, expected):
    from planner.urlmask import mask_url_credentials

    assert mask_url_credentials(text) == expected


def test_a_login_in_a_file_url_passed_on_the_command_line_is_masked_in_the_error(work, capsys):
    from planner.cli import main

    url = "https://deployer:pa55-w0rd-value@files.example/ic.json"
    argv = ["import", "--ic", url, "--dc", "deploymentconfig.json", "--model", "m=model.onnx"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "https:/deployer:(sensitive)@files.example/ic.json: file not found" in err and "pa55-w0rd-value" not in err
    assert len(err.strip().splitlines()) == 1


def test_service_overrides_an_invalid_deploy_line_name(work):
    lines = ["az ml model deploy -n Bad_Name -m bidaf-onnx:1 --ic inferenceconfig.json --dc deploymentconfig.json"]
    result = run_import({"inference_config": None, "from_az": lines, "service": "good-name"}, work / "ml.yaml")
    assert set(result.data["services"]) == {"good-name"}


def test_deploy_lines_with_two_names_and_a_nameless_stage_say_why_the_name_is_derived(work):
    lines = [
        "az ml model deploy -n first-svc -m bidaf-onnx:1 --ic inferenceconfig.json --dc deploymentconfig.json",
        "az ml model deploy -n second-svc -m bidaf-onnx:1 --ic inferenceconfig.json --dc re-deploymentconfig.json",
    ]
    case = {"inference_config": None, "from_az": lines, "service": None,
            "deploy_configs": ["aks-deploymentconfig.json"]}
    result = run_import(case, work / "ml.yaml")
    assert set(result.data["services"]) == {"project-local", "project-aci", "project-aks"}
    assert any(w.startswith("the deploy lines name 'first-svc', 'second-svc', not one for every stage: named the "
                            "service 'project'") for w in result.warnings), result.warnings



@pytest.mark.parametrize(("service", "configs", "expected"), [
    ("a" * 31, ["deploymentconfig.json", "aks-deploymentconfig.json"], {"a" * 26 + "-local", "a" * 28 + "-aks"}),
    ("b" * 30, ["deploymentconfig.json", "copy-deploymentconfig.json"], {"b" * 25 + "-local1", "b" * 25 + "-local2"}),
])
def test_a_long_service_name_keeps_each_stage_suffix_so_stages_never_share_a_name(work, service, configs, expected):
    """A 31-character ``--service`` with two stages named both services the same cut name and the import
    crashed with a traceback on the duplicate key; the name is cut now, never the stage's suffix."""
    shutil.copy(work / "deploymentconfig.json", work / "copy-deploymentconfig.json")   # a second local stage
    case = {"inference_config": "inferenceconfig.json", "service": service, "deploy_configs": configs}
    result = run_import(case, work / "ml.yaml")
    assert set(result.data["services"]) == expected
