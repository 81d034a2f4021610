"""DP-SGD for a participant's local training: the model learns, and the privacy spent adds up over rounds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from covey.alliance.privacy import DPConfig, PrivateTrainer
from covey.alliance.spec import AllianceSpec
from covey.errors import ValidationError
from covey.ml import evaluate, flatten
from covey.ml.datasets import load_split

pytest.importorskip("opacus")


def test_private_training_learns_and_epsilon_grows_with_every_round() -> None:
    spec = AllianceSpec.for_dataset("breast_cancer", local_epochs=2, lr=0.05)
    split = load_split("breast_cancer")
    hospital = split.public_train.subset(np.arange(150))
    model = spec.build_model()
    before = evaluate(model, split.private_validation, "accuracy")
    trainer = PrivateTrainer(DPConfig(noise_multiplier=1.0, max_grad_norm=1.0, delta=1e-5))

    first = trainer.train(model, hospital, spec, seed=1)
    start_of_round_two = flatten(model).copy()
    second = trainer.train(model, hospital, spec, seed=2)

    assert first[1] == second[1] == 1e-5
    assert 0 < first[0] < second[0] < math.inf  # the budget composes over rounds
    assert not np.array_equal(start_of_round_two, flatten(model))
    assert evaluate(model, split.private_validation, "accuracy") > before
    assert not hasattr(model, "_forward_counter")  # opacus's hooks are gone from the plain model


def test_more_noise_spends_less_privacy() -> None:
    spec = AllianceSpec.for_dataset("breast_cancer")
    hospital = load_split("breast_cancer").public_train.subset(np.arange(100))
    noisy = PrivateTrainer(DPConfig(noise_multiplier=3.0)).train(spec.build_model(), hospital, spec, seed=0)
    quiet = PrivateTrainer(DPConfig(noise_multiplier=0.7)).train(spec.build_model(), hospital, spec, seed=0)
    assert noisy[0] < quiet[0]


def test_dp_settings_are_checked() -> None:
    with pytest.raises(ValidationError):
        DPConfig(noise_multiplier=0)
    with pytest.raises(ValidationError):
        DPConfig(delta=1.5)


@pytest.mark.e2e
def test_an_alliance_of_private_hospitals_reports_what_each_spent(world, tmp_path) -> None:
    from covey.alliance.runner import RunConfig, run_in_process
    from covey.storage import LocalStore

    config = RunConfig(behaviours=("honest",) * 5, rounds=1, dp_noise_multiplier=1.0, local_epochs=2, lr=0.05)
    run, _ = run_in_process(
        world.chain, world.client, world.staking.address, LocalStore(tmp_path / "store"), config, world.owner
    )

    proposers = set(run.rounds[0].proposers)
    for member in run.members:
        if member.address in proposers:
            ((epsilon, delta),) = member.privacy_spent
            assert 0 < epsilon < math.inf and delta == 1e-5
        else:
            assert member.privacy_spent == []
    assert run.rounds[0].accepted
