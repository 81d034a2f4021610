"""The demo's Alliance stage, played on a real chain: a table per round, and the poisoner slashed."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from rich.console import Console

from covey.chain import Chain
from covey.chain.deploy import Deployment
from covey.config import Settings, get_settings
from covey.demo.alliance_stage import HOSPITALS, alliance_stage


@dataclass
class StageContext:
    chain: Chain
    deployment: Deployment
    settings: Settings
    console: Console


@pytest.mark.e2e
def test_the_alliance_stage_tells_the_hospital_story(world) -> None:
    console = Console(record=True, width=160)
    result = alliance_stage(StageContext(world.chain, world.deployment, get_settings(), console))

    text = console.export_text()
    assert "Alliance rounds" in text and "Hospitals" in text
    assert list(result["slashedCov"]) == [HOSPITALS[-1]]
    assert result["finalAccuracy"] >= 0.9
    assert len(result["accuracyPerRound"]) == 3
