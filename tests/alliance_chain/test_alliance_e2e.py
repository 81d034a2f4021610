"""Whole alliances on a real chain: hospitals train together, a poisoner ends slashed, raw data never leaves anyone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from covey.alliance.canonical import decode_update
from covey.alliance.runner import RunConfig, private_partition, run_in_process
from covey.alliance.spec import AllianceSpec
from covey.errors import CoveyError
from covey.ml.datasets import load_split
from covey.storage import LocalStore

HOSPITALS = ("honest", "honest", "honest", "honest", "sign_flip")
ACCURACY_TARGET = 0.90


@pytest.mark.e2e
def test_hospitals_reach_the_target_while_the_poisoner_is_slashed(world, tmp_path: Path) -> None:
    config = RunConfig(dataset="breast_cancer", behaviours=HOSPITALS, rounds=3, proposers=2, voters=3)
    store = LocalStore(tmp_path / "artifacts")
    pool_before = world.balance(world.client.address)

    run, _ = run_in_process(world.chain, world.client, world.staking.address, store, config, world.owner)

    assert run.final_accuracy >= ACCURACY_TARGET, [r.accuracy for r in run.rounds]
    assert run.final_accuracy > run.initial_accuracy
    (poisoner,) = [m for m in run.members if m.behaviour == "sign_flip"]
    assert poisoner.slashed > 0 and poisoner.stake_after < poisoner.stake_before
    for member in run.members:
        if member.behaviour == "honest":
            assert member.slashed == 0 and member.stake_after == member.stake_before, member
    assert sum(m.rewarded for m in run.members) > 0
    # Every training round moved the model on, and the closing round confirmed the last one on chain.
    assert all(r.accepted for r in run.rounds[:-1])
    assert run.rounds[-1].model_confirmed
    info = world.client.alliance(run.alliance_id)
    assert (info.model_round, info.reward_pool) == (config.rounds, 0)
    # Paid out or refunded to the creator: the Alliance keeps nothing of this alliance's pool.
    assert world.balance(world.client.address) == pool_before


def test_only_updates_and_hashes_leave_a_participant(world, tmp_path: Path) -> None:
    config = RunConfig(dataset="breast_cancer", behaviours=HOSPITALS, rounds=1, proposers=2, voters=3)
    store = LocalStore(tmp_path / "artifacts")
    first_block = world.chain.block_number() + 1

    run, participants = run_in_process(world.chain, world.client, world.staking.address, store, config, world.owner)

    spec = config.spec()
    model_size = spec.initial_model().shape[0]
    samples = [private_partition(config, i) for i in range(len(HOSPITALS))]
    raw_rows = [row.astype(np.float32).tobytes() for data in samples for row in data.inputs.reshape(len(data), -1)]
    assert all(len(row) == 120 for row in raw_rows)  # 30 float32 features per patient

    # The store: the creator's spec, and otherwise only model-sized vectors (updates and global models).
    blobs = sorted(path for path in store.root.rglob("*") if path.is_file() and not path.name.startswith("."))
    spec_hash = world.client.alliance(run.alliance_id).spec_hash.hex()
    vectors = 0
    for path in blobs:
        data = path.read_bytes()
        if path.name == spec_hash:
            assert AllianceSpec.from_bytes(data) == spec
        else:
            assert decode_update(data).shape == (model_size,), path.name
            vectors += 1
        assert not any(row in data for row in raw_rows), f"{path.name} holds a raw sample"
    assert vectors >= 3  # the initial model and at least two proposers' updates

    # The chain: members only staked, joined, committed hashes and revealed votes.
    members = {p.address for p in participants}
    decoders = [world.client.contract, world.cov, world.staking]
    called: set[str] = set()
    for number in range(first_block, world.chain.block_number() + 1):
        for tx in world.chain.w3.eth.get_block(number, full_transactions=True)["transactions"]:
            if tx["from"] not in members or tx.get("to") is None:
                continue
            called.add(_function_name(decoders, tx["input"]))
            assert not any(row in bytes(tx["input"]) for row in raw_rows)
    assert called <= {"approve", "stake", "join", "commitUpdate", "commitVote", "revealVote"}
    assert {"commitUpdate", "commitVote", "revealVote"} <= called


def test_a_participant_refuses_data_that_does_not_fit_the_model() -> None:
    spec = AllianceSpec.for_dataset("breast_cancer")
    digits = load_split("digits").public_train
    with pytest.raises(CoveyError, match="does not fit"):
        spec.check_data(digits)


def _function_name(contracts, data) -> str:
    for contract in contracts:
        try:
            function, _ = contract.decode_function_input(data)
        except ValueError:
            continue
        return str(function.fn_name)
    raise AssertionError(f"a member sent a transaction no Covey contract understands: {bytes(data)[:4].hex()}")
