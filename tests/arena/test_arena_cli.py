"""`covey arena ...` as a user types it: post a task, train, validate with the creator's key, finalize, read."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from covey.arena import ArenaClient
from covey.chain import Chain, dev_accounts
from covey.chain.faucet import fund
from covey.chain.roles import Role
from tests.arena.conftest import COV, deploy_with_arena, run_covey

HOUR_S = 3_600


def covey(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = run_covey(home, *args)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def covey_json(home: Path, *args: str) -> Any:
    return json.loads(covey(home, *args, "--json").stdout)


def travel(home: Path, seconds: int) -> None:
    """Move the embedded chain's clock (no command does that: only tests and the demo travel in time)."""
    with Chain.embedded(home / "chain") as chain:
        chain.increase_time(seconds)


@pytest.mark.e2e  # a dozen `covey` processes: about a minute
def test_a_task_from_the_command_line(covey_home: Path, tmp_path: Path) -> None:
    trainer, validator, creator = dev_accounts(4)[1:]
    with Chain.embedded(covey_home / "chain") as chain:
        deployment = deploy_with_arena(chain)
        client = ArenaClient.from_deployment(chain, deployment)
        for account, role in ((trainer, Role.TRAINER), (validator, Role.VALIDATOR)):
            fund(chain, deployment, account.address)
            chain.transact(client.token.functions.approve(client.staking.address, 20 * COV), account)
            chain.transact(client.staking.functions.stake(role, 20 * COV), account)
        fund(chain, deployment, creator.address)

    hour = str(HOUR_S)
    posted = covey_json(
        covey_home,
        "arena",
        "create-task",
        "--from",
        "dev3",
        "--reward",
        "50",
        "--submit",
        "1h",
        "--reveal",
        "1h",
        "--score",
        hour,
        "--score-reveal",
        "60m",
    )
    task = str(posted["taskId"])
    key_file = tmp_path / "key-from-the-creator.json"  # what the creator hands over out of band
    key_file.write_bytes(Path(posted["validationKey"]).read_bytes())
    listed = covey_json(covey_home, "arena", "tasks")
    assert [(row["taskId"], row["phase"], row["task"]) for row in listed] == [
        (posted["taskId"], "committing", "digits/mlp/accuracy")
    ]

    committed = covey_json(covey_home, "arena", "train", "--task", task, "--from", "dev1", "--epochs", "3", "--no-wait")
    assert committed["committed"] and not committed["revealed"]
    travel(covey_home, HOUR_S)
    revealed = covey_json(covey_home, "arena", "train", "--task", task, "--from", "dev1", "--no-wait")
    assert revealed["revealed"] and revealed["weightsHash"] == committed["weightsHash"]

    travel(covey_home, HOUR_S)
    scored = covey_json(
        covey_home, "arena", "validate", "--task", task, "--from", "dev2", "--key", str(key_file), "--no-wait"
    )
    assert scored["committed"] and scored["scores"][0] > 800_000
    early = covey(covey_home, "arena", "finalize", "--task", task, "--from", "dev3", check=False)
    assert early.returncode == 1 and early.stderr.strip() == "error: finalize reverted: arena: not finalisable yet"
    travel(covey_home, HOUR_S)
    assert covey_json(covey_home, "arena", "validate", "--task", task, "--from", "dev2", "--no-wait")["revealed"]
    predicted = covey_json(covey_home, "arena", "leaderboard", "--task", task)
    assert not predicted["settled"] and predicted["winner"] == trainer.address, predicted

    travel(covey_home, HOUR_S)
    settled = covey_json(covey_home, "arena", "finalize", "--task", task, "--from", "dev3")
    assert settled["winner"] == trainer.address
    board = covey_json(covey_home, "arena", "leaderboard", "--task", task)
    assert board["settled"] and board["submissions"][0]["rank"] == 1
    assert board["submissions"][0]["payout"] == predicted["submissions"][0]["payout"] == 40 * COV
    assert board["validators"][0]["payout"] == 10 * COV
    text = covey(covey_home, "arena", "leaderboard", "--task", task).stdout
    assert "winner" in text and trainer.address in text


def test_errors_are_one_line(covey_home: Path) -> None:
    with Chain.embedded(covey_home / "chain") as chain:
        deploy_with_arena(chain)
    for args, fragment in (
        (["arena", "leaderboard", "--task", "7"], "arena: unknown task"),
        (["arena", "create-task", "--from", "dev3", "--submit", "soon"], "malformed --submit"),
        (["node", "run", "--role", "host", "--from", "dev1"], "unknown node role"),
        (["node", "run", "--role", "validator", "--adversary", "junk", "--from", "dev1"], "cannot be a 'junk'"),
    ):
        result = covey(covey_home, *args, check=False)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        assert fragment in lines[0], lines[0]
