"""For the demo when no consensus model is servable yet: finalise a small language task on the Arena contract.

It does what Arena nodes do, through the contract's ABI only (the gateway never imports `covey.arena`): a
creator posts a task whose manifest is in the store, a staked trainer commits to and reveals a CharGPT
trained for a hundred-odd steps on Shakespeare, a staked validator commits and reveals its score, and the
task is finalised. The phases last seconds and are waited for in real time (the chain's clock follows wall
time: x402 clients sign from it); the faucet makes this a local-chain affair.
"""

from __future__ import annotations

import json
import secrets

import numpy as np
from eth_abi import encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.contract import Contract
from web3.logs import DISCARD

from covey.chain import Chain
from covey.chain.deploy import Deployment
from covey.chain.faucet import fund
from covey.chain.roles import Role
from covey.errors import ChainError
from covey.ml import TrainConfig, default_spec, load_dataset, save_weights, train
from covey.storage import ArtifactStore, sha256_hex

COV = 10**18
TRAIN_STEPS = 150
TRAIN_CHUNKS = 256
PHASE_S = 4  # each phase is one transaction here: the work (training) happens before the task is posted
SCORE = 2_500_000  # 2.5 bits per character, in the Arena's 6-decimal fixed point


def publish_language_model(
    chain: Chain,
    deployment: Deployment,
    arena: Contract,
    store: ArtifactStore,
    *,
    steps: int = TRAIN_STEPS,
    phase_s: int = PHASE_S,
) -> int:
    """Train a small Shakespeare CharGPT, take it through an Arena task to consensus; return the task id."""
    if not chain.is_local:
        raise ChainError("the demo's language task funds its accounts from the faucet: run it on a local chain")
    spec = default_spec("shakespeare", description="Covey demo: a small Shakespeare model for the gateway")
    data = load_dataset("shakespeare").subset(np.arange(TRAIN_CHUNKS))
    model = spec.build_model()
    train(model, data, TrainConfig(lr=3e-3, batch_size=16, max_steps=steps, seed=0), progress=False)
    weights = store.put(save_weights(model))
    train_ref = store.put(bytes(data.inputs.tobytes()))
    # The manifest has the Arena's shape, so Arena nodes reading the task find what they expect.
    manifest = {
        "version": 1,
        "spec": spec.model_dump(mode="json"),
        "train_data": train_ref.digest,
        "train_examples": len(data),
        "validation_examples": 1,
        "validation_commitment": sha256_hex(secrets.token_bytes(32)),
    }
    spec_ref = store.put(json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode())

    creator, trainer, validator = (_funded(chain, deployment) for _ in range(3))
    cov, staking = deployment.contract(chain, "CoveyToken"), deployment.contract(chain, "Staking")
    _stake(chain, cov, staking, trainer, Role.TRAINER, 100 * COV)
    _stake(chain, cov, staking, validator, Role.VALIDATOR, 1_000 * COV)
    pool = 100 * COV
    chain.transact(cov.functions.approve(arena.address, pool), creator)
    now = chain.now()
    deadlines = [now + phase_s * step for step in (1, 2, 3, 4)]
    create = arena.functions.createTask(
        bytes.fromhex(spec_ref.digest), pool, *deadlines, 1, 100 * COV, 1_000 * COV, 1_000_000, 1_000_000
    )
    receipt = chain.transact(create, creator)
    task_id = int(arena.events.TaskCreated().process_receipt(receipt, errors=DISCARD)[0]["args"]["taskId"])

    weights_hash, salt = bytes.fromhex(weights.digest), secrets.token_bytes(32)
    commitment = Web3.keccak(encode(["bytes32", "bytes32", "address"], [weights_hash, salt, trainer.address]))
    chain.transact(arena.functions.commitSubmission(task_id, commitment), trainer)
    chain.wait_until(deadlines[0])
    chain.transact(arena.functions.revealSubmission(task_id, weights_hash, salt, weights.uri), trainer)
    chain.wait_until(deadlines[1])
    scores, score_salt = [SCORE], secrets.token_bytes(32)
    scored = Web3.keccak(encode(["uint256[]", "bytes32", "address"], [scores, score_salt, validator.address]))
    chain.transact(arena.functions.commitScores(task_id, scored), validator)
    chain.wait_until(deadlines[2])
    chain.transact(arena.functions.revealScores(task_id, scores, score_salt), validator)
    chain.wait_until(deadlines[3])
    chain.transact(arena.functions.finalize(task_id), creator)
    return task_id


def _funded(chain: Chain, deployment: Deployment) -> LocalAccount:
    account: LocalAccount = Account.create()
    fund(chain, deployment, account.address)
    return account


def _stake(chain: Chain, cov: Contract, staking: Contract, account: LocalAccount, role: Role, amount: int) -> None:
    chain.transact(cov.functions.approve(staking.address, amount), account)
    chain.transact(staking.functions.stake(role, amount), account)
