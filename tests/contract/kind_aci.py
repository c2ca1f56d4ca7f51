"""The provider contract over ``provider: aci``: the real SDK against the ARM double, whose container groups
run the service's image for real in the Docker engine (skipped with the reason when there is none)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "aci"))

from aci_fixtures import TARGET_FLOW, engine_double, free_port  # noqa: E402
from test_provider_contract import ContractKind  # noqa: E402

KIND = ContractKind(
    name="aci",
    target=TARGET_FLOW,
    deploy={"port": free_port(), "auth": "key", "startup_timeout_s": 60},   # host network in the double
    marks=(pytest.mark.slow, pytest.mark.docker),
    setup=engine_double,
)
