"""Explorer fixtures: a small network (token moves plus one Arena task settled by hand), the explorer app
over it, and the helpers that act on the chain. The browser tests' demo chain lives in test_browser.py.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient

from covey.chain import Chain, dev_accounts
from covey.chain.arena_deploy import ARENA_STEPS, scores_commitment, submission_commitment
from covey.chain.deploy import CORE_STEPS, DeployContext, Deployment, Step, deploy_suite
from covey.chain.faucet import fund
from covey.chain.roles import Role
from covey.explorer import Indexer, create_app

REPO_ROOT = Path(__file__).resolve().parents[2]
COV = 10**18
SCORE = 10**6
PHASE_S = 600


def _deploy_batcher(ctx: DeployContext) -> None:
    ctx.deploy("PaymentBatcher")


def _host_steps() -> list[Step]:
    try:
        from covey.chain.hosts_deploy import HOSTS_STEPS
    except ModuleNotFoundError:
        return []
    return list(HOSTS_STEPS)


SMALL_SUITE: list[Step] = [*CORE_STEPS, Step("deploy PaymentBatcher", _deploy_batcher), *ARENA_STEPS, *_host_steps()]
"""What the explorer tests need: the token economy, the Arena, the PaymentBatcher and the HostRegistry."""
USD = 10**6
TRANSFER_FIELDS = [
    {"name": "from", "type": "address"},
    {"name": "to", "type": "address"},
    {"name": "value", "type": "uint256"},
    {"name": "validAfter", "type": "uint256"},
    {"name": "validBefore", "type": "uint256"},
    {"name": "nonce", "type": "bytes32"},
]


def make_home(path: Path) -> Path:
    """A data directory sharing the compiled-contract cache with the other tests."""
    shared_cache = REPO_ROOT / ".pytest_cache" / "covey-contracts"
    shared_cache.mkdir(parents=True, exist_ok=True)
    (path / "cache").mkdir(parents=True, exist_ok=True)
    link = path / "cache" / "contracts"
    if not link.exists():
        os.symlink(shared_cache, link)
    return path


def deploy_small_suite(chain: Chain) -> Deployment:
    return deploy_suite(chain, dev_accounts(1)[0], steps=SMALL_SUITE, unbonding_delay_s=100, commission_delay_s=10)


def funded(chain: Chain, deployment: Deployment) -> LocalAccount:
    account: LocalAccount = Account.create()
    fund(chain, deployment, account.address)
    return account


def stake(chain: Chain, deployment: Deployment, account: LocalAccount, role: Role, cov: int) -> None:
    token, staking = deployment.contract(chain, "CoveyToken"), deployment.contract(chain, "Staking")
    chain.transact(token.functions.approve(staking.address, cov * COV), account)
    chain.transact(staking.functions.stake(int(role), cov * COV), account)


def transfer(chain: Chain, deployment: Deployment, to: str, cov: int = 1) -> None:
    """One COV transfer from dev0: exactly one new event (CoveyToken.Transfer)."""
    token = deployment.contract(chain, "CoveyToken")
    chain.transact(token.functions.transfer(to, cov * COV), dev_accounts(1)[0])


@dataclass
class SmallNetwork:
    """A suite with one Arena task played to the end by hand: three trainers (one junk) and two validators."""

    chain: Chain
    deployment: Deployment
    task_id: int
    creator: LocalAccount
    trainers: list[LocalAccount]
    validators: list[LocalAccount]
    delegator: LocalAccount
    gateway: GatewayFacts | None = None
    names: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class GatewayFacts:
    """What `play_gateway` did: one host serving one model, paid twice; x402 payments, some batched."""

    host: str
    model_id: str
    price_per_1k: int
    payee: str
    payments: list[int]  # USD units per paid request
    batched: int
    host_paid: list[int]


def play_small_task(chain: Chain, deployment: Deployment) -> SmallNetwork:
    """Post, play and finalise one task with raw contract calls (no training): seconds, not minutes."""
    arena = deployment.contract(chain, "Arena")
    token, staking = deployment.contract(chain, "CoveyToken"), deployment.contract(chain, "Staking")
    creator = funded(chain, deployment)
    trainers = [funded(chain, deployment) for _ in range(3)]
    validators = [funded(chain, deployment) for _ in range(2)]
    delegator = funded(chain, deployment)
    for trainer in trainers:
        stake(chain, deployment, trainer, Role.TRAINER, 50)
    stake(chain, deployment, validators[0], Role.VALIDATOR, 300)
    stake(chain, deployment, validators[1], Role.VALIDATOR, 100)
    chain.transact(token.functions.approve(staking.address, 40 * COV), delegator)
    chain.transact(staking.functions.delegate(trainers[0].address, int(Role.TRAINER), 40 * COV), delegator)

    pool = 100 * COV
    chain.transact(token.functions.approve(arena.address, pool), creator)
    now = chain.timestamp()
    deadlines = [now + PHASE_S * i for i in (1, 2, 3, 4)]
    chain.transact(
        arena.functions.createTask(
            secrets.token_bytes(32), pool, *deadlines, 2, 10 * COV, 10 * COV, SCORE // 2, SCORE // 20
        ),
        creator,
    )
    task_id = int(arena.functions.taskCount().call())
    weights = [secrets.token_bytes(32) for _ in trainers]
    salts = [secrets.token_bytes(32) for _ in trainers]
    for trainer, weight, salt in zip(trainers, weights, salts, strict=True):
        commitment = submission_commitment(weight, salt, trainer.address)
        chain.transact(arena.functions.commitSubmission(task_id, commitment), trainer)
    chain.increase_time(deadlines[0] - chain.timestamp())
    for index, (trainer, weight, salt) in enumerate(zip(trainers, weights, salts, strict=True)):
        chain.transact(arena.functions.revealSubmission(task_id, weight, salt, f"file:///weights/{index}"), trainer)
    chain.increase_time(deadlines[1] - chain.timestamp())
    scores = [[950_000, 900_000, 300_000], [940_000, 910_000, 650_000]]
    score_salts = [secrets.token_bytes(32) for _ in validators]
    for validator, row, salt in zip(validators, scores, score_salts, strict=True):
        commitment = scores_commitment(row, salt, validator.address)
        chain.transact(arena.functions.commitScores(task_id, commitment), validator)
    chain.increase_time(deadlines[2] - chain.timestamp())
    for validator, row, salt in zip(validators, scores, score_salts, strict=True):
        chain.transact(arena.functions.revealScores(task_id, row, salt), validator)
    chain.increase_time(deadlines[3] - chain.timestamp())
    chain.transact(arena.functions.finalize(task_id), creator)
    return SmallNetwork(chain, deployment, task_id, creator, trainers, validators, delegator)


def sign_payment(chain: Chain, usd: Any, payer: LocalAccount, payee: str, value: int) -> tuple[Any, ...]:
    """An x402 payment: a signed EIP-3009 `transferWithAuthorization`, as `PaymentBatcher.settle` takes it."""
    _, name, version, chain_id, contract, _, _ = usd.functions.eip712Domain().call()
    message = {
        "from": payer.address,
        "to": payee,
        "value": value,
        "validAfter": 0,
        "validBefore": chain.timestamp() + 86_400,
        "nonce": secrets.token_bytes(32),
    }
    signed = payer.sign_typed_data(
        domain_data={"name": name, "version": version, "chainId": chain_id, "verifyingContract": contract},
        message_types={"TransferWithAuthorization": TRANSFER_FIELDS},
        message_data=message,
    )
    return (*message.values(), signed.v, signed.r.to_bytes(32, "big"), signed.s.to_bytes(32, "big"))


def play_gateway(chain: Chain, deployment: Deployment) -> GatewayFacts:
    """A host registers a model and is paid by a gateway (with the Treasury's subsidy); agents pay x402."""
    owner = dev_accounts(1)[0]
    hosts, usd = deployment.contract(chain, "HostRegistry"), deployment.contract(chain, "USDToken")
    batcher = deployment.contract(chain, "PaymentBatcher")
    host, gateway, agent = (funded(chain, deployment) for _ in range(3))
    stake(chain, deployment, host, Role.HOST, 100)
    model_id, price = "covey/digits-mlp", 2_000
    chain.transact(hosts.functions.register(model_id, "http://127.0.0.1:9001", price), host)
    chain.transact(hosts.functions.heartbeat(), host)
    chain.transact(hosts.functions.setGateway(gateway.address, True), owner)

    payments = [1_000, 2_000, 3_000, 4_000]
    direct = sign_payment(chain, usd, agent, gateway.address, payments[0])
    chain.transact(usd.functions.transferWithAuthorization(*direct), gateway)  # strict settlement
    batch = [sign_payment(chain, usd, agent, gateway.address, value) for value in payments[1:]]
    chain.transact(batcher.functions.settle(usd.address, batch), gateway)  # batched settlement

    host_paid = [5_000, 3_000]
    chain.transact(usd.functions.transfer(hosts.address, sum(host_paid)), gateway)
    for amount in host_paid:
        chain.transact(hosts.functions.payHosts([host.address], [amount]), gateway)
    return GatewayFacts(host.address, model_id, price, gateway.address, payments, len(batch), host_paid)


@pytest.fixture(scope="module")
def small_network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmallNetwork]:
    """One module's shared chain: the small suite, a settled Arena task, and its own data directory."""
    home = make_home(tmp_path_factory.mktemp("explorer-home"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COVEY_HOME", str(home))
        patch.delenv("COVEY_RPC_URL", raising=False)
        chain = Chain.embedded(home / "chain")
        try:
            deployment = deploy_small_suite(chain)
            network = play_small_task(chain, deployment)
            if "HostRegistry" in deployment.contracts:
                network.gateway = play_gateway(chain, deployment)
            yield network
        finally:
            chain.close()


@pytest.fixture
def network_home(small_network: SmallNetwork, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point this test's COVEY_HOME at the shared network's data directory (its manifest lives there)."""
    assert small_network.chain.data_dir is not None
    home = small_network.chain.data_dir.parent
    monkeypatch.setenv("COVEY_HOME", str(home))
    return home


@pytest.fixture
def indexed(small_network: SmallNetwork, network_home: Path, tmp_path: Path) -> Path:
    """A fresh index of the shared network, fully caught up; returns the index file."""
    path = tmp_path / "index.sqlite"
    indexer = Indexer(small_network.chain, path)
    indexer.poll()
    indexer.close()
    return path


@pytest.fixture
def client(small_network: SmallNetwork, indexed: Path) -> Iterator[TestClient]:
    """The explorer app over the shared network and its index (no background thread: the index is ready)."""
    app = create_app(small_network.chain, index=indexed, run_indexer=False)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client
