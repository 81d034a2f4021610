"""An alliance that aggregates with covey_trust, on a real chain: the poisoner is slashed, honest proposers are paid."""

from __future__ import annotations

from pathlib import Path

import pytest

from covey.alliance.rules import rule_id
from covey.alliance.runner import RunConfig, run_in_process
from covey.storage import LocalStore

# Six members fill both committees every round, so the poisoner is drawn every round until slashed out.
# It stakes more than the others, which makes it a proposer in about 70% of rounds (the draw goes by
# stake), but less than two honest voters hold together, so as a voter it cannot carry a tally; a
# 25% slash keeps it eligible through three slashes.
HOSPITALS = ("honest",) * 5 + ("sign_flip",)
STAKES_COV = (100,) * 5 + (190,)
SLASH_BPS = 2_500
ACCURACY_TARGET = 0.90


@pytest.mark.e2e
def test_covey_trust_drops_the_sign_flipped_update_and_pays_the_honest_proposers(world, tmp_path: Path) -> None:
    config = RunConfig(
        dataset="breast_cancer",
        behaviours=HOSPITALS,
        stakes_cov=STAKES_COV,
        slash_bps=SLASH_BPS,
        rounds=3,
        proposers=3,
        voters=3,
        rule="covey_trust",
    )
    store = LocalStore(tmp_path / "artifacts")

    run, _ = run_in_process(world.chain, world.client, world.staking.address, store, config, world.owner)

    assert world.client.alliance(run.alliance_id).aggregation_rule == rule_id("covey_trust")
    (poisoner,) = [m for m in run.members if m.behaviour == "sign_flip"]
    assert poisoner.slashed > 0 and poisoner.stake_after < poisoner.stake_before
    for member in run.members:
        if member.behaviour == "honest":
            assert member.slashed == 0 and member.stake_after == member.stake_before, member
    for report in run.rounds[:-1]:
        honest_proposers = [a for a in report.proposers if a != poisoner.address]
        # Every voter recomputed the rule's keep/drop decision: honest updates kept and paid, the flip dropped.
        assert report.accepted == honest_proposers, report
        assert all(report.rewards.get(a, 0) > 0 for a in honest_proposers), report
        if poisoner.address in report.proposers:
            assert report.rejected == [poisoner.address] and poisoner.address in report.slashes, report
    assert run.final_accuracy >= ACCURACY_TARGET, [r.accuracy for r in run.rounds]
    assert run.final_accuracy > run.initial_accuracy
    # The closing round's voters confirmed the model every member replayed with the rule's reference.
    assert run.rounds[-1].model_confirmed
