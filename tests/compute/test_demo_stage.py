"""The compute chapter of `covey demo` on the embedded chain: a provider killed mid-job, the other finishes."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from rich.console import Console

from covey.chain import Chain, dev_accounts
from covey.chain.deploy import Deployment, deploy_suite
from covey.config import Settings, get_settings
from covey.demo.compute_stage import SEEDS, compute_stage


@dataclass
class StageContext:
    chain: Chain
    deployment: Deployment
    settings: Settings
    console: Console


@pytest.mark.e2e
def test_the_compute_stage_kills_a_provider_and_pays_only_verified_units(embedded_chain: Chain) -> None:
    deployment = deploy_suite(embedded_chain, dev_accounts(1)[0])  # a suite without the Market: the stage adds it
    console = Console(record=True, width=140)

    result = compute_stage(StageContext(embedded_chain, deployment, get_settings(), console))

    assert result["verifiedUnits"] == len(SEEDS)
    assert len(result["jobs"]) == 2  # the job and the re-post of what the killed provider left
    assert result["slashedCov"] == {"fast-box": 10.0}
    assert set(result["paidUsd"]) == {"fast-box", "steady-box"}
    assert all(check["ok"] for check in result["checks"])
    assert result["arena"] is None  # no Arena in this suite
    assert "killed mid-job" in console.export_text()
