"""The demo's gateway stage: an agent pays to ask the Arena's consensus model; the host earns price + subsidy."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from covey.chain import Chain
from covey.chain.deploy import Deployment
from covey.config import Settings
from covey.demo.gateway_stage import gateway_stage

from .conftest import World


@dataclass
class StageContext:
    chain: Chain
    deployment: Deployment
    settings: Settings
    console: Console
    results: dict[str, Any] = field(default_factory=dict)


def test_the_agent_pays_less_than_the_host_earns_and_the_treasury_pays_the_difference(
    world: World, tmp_path: Path
) -> None:
    console = Console(record=True, width=160)
    ctx = StageContext(
        world.chain,
        world.deployment,
        Settings(home=world.home),
        console,
        {"arena": {"taskId": world.task_id, "arena": world.arena.address}},
    )

    result = gateway_stage(ctx)

    assert result["model"] == world.model_id and result["requests"] == 3
    assert result["spotChecks"] == ["match", "match", "match"]
    assert 0 < result["agentPaidUsd"] < result["hostEarnedUsd"]
    assert abs(result["agentPaidUsd"] + result["subsidyUsd"] - result["hostEarnedUsd"]) < 1e-9
    assert result["agentPaidUsd"] == 3 * result["pricePerRequestUsd"]
    assert "USD balances" in console.export_text()
