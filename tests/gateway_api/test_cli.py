"""`covey gateway|host|facilitator serve` refuse bad options with one clear error before serving anything."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from covey.cli import facilitator_cmd, gateway_cmd, host_cmd
from covey.errors import ValidationError

from .conftest import World


def test_the_gateway_refuses_an_unknown_settlement_mode() -> None:
    result = CliRunner().invoke(gateway_cmd.app, ["serve", "--settlement", "sometimes"])

    assert isinstance(result.exception, ValidationError)
    assert "strict, batched, free" in str(result.exception)


def test_a_host_without_stake_is_told_how_much_to_stake(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COVEY_HOME", str(world.home))
    monkeypatch.setenv("COVEY_RPC_URL", world.rpc_url)
    args = ["serve", "--model", world.model_id, "--from", "dev7", "--registry", world.registry.address]

    result = CliRunner().invoke(host_cmd.app, args)

    assert isinstance(result.exception, ValidationError)
    assert "hosts need 100 COV staked for the host role" in str(result.exception)
    assert "covey stake add host 100" in str(result.exception)


def test_every_command_has_help() -> None:
    for app in (gateway_cmd.app, host_cmd.app, facilitator_cmd.app):
        result = CliRunner().invoke(app, ["serve", "--help"])
        assert result.exit_code == 0 and "--port" in result.output
