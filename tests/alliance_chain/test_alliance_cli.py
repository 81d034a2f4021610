"""`covey alliance create|join|run|status` against a real node, as a user would type them."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from covey.alliance.client import AllianceClient, Phase
from covey.chain import dev_accounts
from covey.chain.deploy import manifest_path
from covey.cli.alliance_cmd import app

COV = 10**18


@pytest.fixture
def cli(world, anvil_url: str, monkeypatch: pytest.MonkeyPatch):
    """Invoke `covey alliance ...` on the module's suite: its manifest copied into this test's home."""
    monkeypatch.setenv("COVEY_RPC_URL", anvil_url)
    path = manifest_path(world.chain.chain_id)
    path.write_text(json.dumps(world.deployment.to_json()))
    runner = CliRunner()

    def invoke(*args: str) -> dict:
        result = runner.invoke(app, [*args, "--json"], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return json.loads(result.output)

    return invoke


def test_create_join_and_status(cli, world) -> None:
    created = cli("create", "--rounds", "2", "--pool", "10", "--phase", "30", "--from", "dev0")
    alliance_id = created["allianceId"]
    member = dev_accounts(6)[5]
    world.stake(member, 100 * COV)

    joined = cli("join", str(alliance_id), "--from", "dev5")
    status = cli("status", str(alliance_id))

    assert joined["member"] == member.address
    assert status["phase"] == Phase.IDLE.name.lower()
    assert (status["rounds"], status["currentRound"], status["rewardPool"]) == (2, 0, 10 * COV)
    assert status["members"] == [member.address]
    assert status["rule"] == "covey_default"
    on_chain = AllianceClient(world.chain, created["alliance"]).alliance(alliance_id)
    assert on_chain.member_count == 1 and on_chain.spec_hash.hex() == created["spec"].removeprefix("sha256:")


def test_create_with_covey_trust_needs_three_proposers(cli, world) -> None:
    created = cli("create", "--rule", "covey_trust", "--proposers", "3", "--pool", "10", "--from", "dev0")

    assert cli("status", str(created["allianceId"]))["rule"] == "covey_trust"
    result = CliRunner().invoke(app, ["create", "--rule", "covey_trust", "--proposers", "2", "--from", "dev0"])
    assert result.exit_code != 0
    assert "covey_trust needs at least 3 proposers" in str(result.exception or result.output)


@pytest.mark.e2e
def test_run_plays_every_member_in_its_own_process(cli) -> None:
    result = cli("run", "--members", "5", "--rounds", "1", "--phase", "60")

    assert [r["round"] for r in result["rounds"]] == [1, 2]
    assert result["final_accuracy"] > result["initial_accuracy"]
    behaviours = sorted(m["behaviour"] for m in result["members"])
    assert behaviours == ["honest"] * 4 + ["sign_flip"]
