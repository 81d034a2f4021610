"""Gateway API fixtures: a chain whose Arena finalised a small language model, gateways and hosts on real ports.

The consensus model is produced the way the Arena produces one: a tiny CharGPT is trained for a few steps,
its weights and the task manifest go to the artifact store, a staked trainer commits and reveals it, a
staked validator scores it, and the task is finalised on the Arena contract. The chain is the embedded one,
also served over JSON-RPC so host processes can share it.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from eth_account import Account
from eth_account.signers.local import LocalAccount
from fastapi import FastAPI
from web3.contract import Contract
from web3.logs import DISCARD

from covey.arena.manifest import TaskManifest
from covey.chain import Chain, dev_accounts
from covey.chain._embedded import start_server_thread
from covey.chain.arena_deploy import deploy_arena, scores_commitment, submission_commitment
from covey.chain.deploy import Deployment, deploy_suite
from covey.chain.hosts_deploy import deploy_hosts
from covey.gateway.app import PaymentOptions, create_gateway_app
from covey.gateway.backend import LocalBackend
from covey.gateway.models import ModelCatalog, model_id_for_task
from covey.ml import build_model, default_spec, save_weights
from covey.storage import LocalStore, sha256_hex
from tests.support import REPO_ROOT, free_port, serve_in_thread

__all__ = ["free_port", "serve_in_thread"]  # the gateway API tests import these from here

COV = 10**18
USD = 10**6
PHASE_S = 5
TINY_GPT = {"block_size": 32, "vocab_size": 256, "n_layer": 1, "n_head": 2, "n_embd": 32}
TEXT = (
    "ROMEO:\nBut soft, what light through yonder window breaks?\n\n"
    "JULIET:\nO Romeo, Romeo, wherefore art thou Romeo?\n\n"
) * 8
HOST_PRICE_PER_1K = 20_000  # 0.02 USD per 1,000 tokens


@cache
def tiny_weights(seed: int = 0, steps: int = 40) -> bytes:
    """A tiny CharGPT trained for a few steps on a short text (cached: every test serves the same model)."""
    torch.manual_seed(seed)
    model = build_model("char_gpt", TINY_GPT)
    data = torch.tensor(list(TEXT.encode()), dtype=torch.long)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-2)
    block = TINY_GPT["block_size"]
    for _ in range(steps):
        starts = torch.randint(0, len(data) - block - 1, (16,))
        inputs = torch.stack([data[s : s + block] for s in starts])
        targets = torch.stack([data[s + 1 : s + block + 1] for s in starts])
        logits = model(inputs)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 256), targets.reshape(-1))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return save_weights(model)


@dataclass
class World:
    """One chain with the suite, an Arena with a finalised language task, and a HostRegistry."""

    chain: Chain
    rpc_url: str
    deployment: Deployment
    home: Path
    store: LocalStore
    owner: LocalAccount
    arena: Contract
    registry: Contract
    usd: Contract
    cov: Contract
    staking: Contract
    task_id: int
    gateway_account: LocalAccount

    @property
    def model_id(self) -> str:
        return model_id_for_task(self.task_id)

    def catalog(self) -> ModelCatalog:
        return ModelCatalog(self.chain, self.store, self.arena.address)

    def payer(self, amount: int = 1 * USD) -> LocalAccount:
        """A new agent holding `amount` USD and no ETH (x402 payments are gasless)."""
        agent: LocalAccount = Account.create()
        self.chain.transact(self.usd.functions.faucet(agent.address, amount), self.owner)
        return agent

    def usd_balance(self, address: str) -> int:
        return int(self.usd.functions.balanceOf(address).call())

    def host_account(self, stake: int = 100 * COV) -> LocalAccount:
        """A new host with gas money and `stake` COV staked for the host role."""
        host: LocalAccount = Account.create()
        self.chain.send_eth(self.owner, host.address, 10**18)
        if stake:
            self.chain.transact(self.cov.functions.transfer(host.address, stake), self.owner)
            self.chain.transact(self.cov.functions.approve(self.staking.address, stake), host)
            self.chain.transact(self.staking.functions.stake(2, stake), host)
        return host

    def host_stake(self, address: str) -> int:
        return int(self.staking.functions.effectiveStake(address, 2).call())


def _stake(
    chain: Chain, cov: Contract, staking: Contract, owner: LocalAccount, account: LocalAccount, role: int, amount: int
) -> None:
    chain.transact(cov.functions.transfer(account.address, amount), owner)
    chain.transact(cov.functions.approve(staking.address, amount), account)
    chain.transact(staking.functions.stake(role, amount), account)


def finalise_language_task(
    chain: Chain, deployment: Deployment, arena: Contract, store: LocalStore, weights: bytes
) -> int:
    """Post a language task, have a staked trainer submit `weights` and a validator score them; finalise."""
    spec = default_spec("shakespeare", architecture=TINY_GPT, size_limit_bytes=1 << 20)
    return finalise_task(chain, deployment, arena, store, spec, weights, TEXT.encode())


def finalise_task(
    chain: Chain, deployment: Deployment, arena: Contract, store: LocalStore, spec: Any, weights: bytes, data: bytes
) -> int:
    """Post a task for `spec`, have a staked trainer submit `weights` and a validator score them; finalise."""
    owner, trainer, validator = dev_accounts(3)
    cov, staking = deployment.contract(chain, "CoveyToken"), deployment.contract(chain, "Staking")
    train_ref = store.put(data)
    manifest = TaskManifest(
        spec=spec,
        train_data=train_ref.digest,
        train_examples=1,
        validation_examples=1,
        validation_commitment=sha256_hex(b"test key"),
    )
    spec_ref = store.put(manifest.to_bytes())
    weights_ref = store.put(weights)
    for account, role, amount in ((trainer, 0, 100 * COV), (validator, 1, 1_000 * COV)):
        if int(staking.functions.stakeOf(account.address, role).call()) < amount:
            _stake(chain, cov, staking, owner, account, role, amount)
    pool = 10 * COV
    chain.transact(cov.functions.approve(arena.address, pool), owner)
    now = chain.timestamp()
    deadlines = [now + PHASE_S * step for step in (1, 2, 3, 4)]
    receipt = chain.transact(
        arena.functions.createTask(
            bytes.fromhex(spec_ref.digest), pool, *deadlines, 1, 100 * COV, 1_000 * COV, 1_000_000, 1_000_000
        ),
        owner,
    )
    task_id = int(arena.events.TaskCreated().process_receipt(receipt, errors=DISCARD)[0]["args"]["taskId"])
    salt, score_salt = secrets.token_bytes(32), secrets.token_bytes(32)
    weights_hash = bytes.fromhex(weights_ref.digest)
    chain.transact(
        arena.functions.commitSubmission(task_id, submission_commitment(weights_hash, salt, trainer.address)), trainer
    )
    _advance(chain, deadlines[0])
    chain.transact(arena.functions.revealSubmission(task_id, weights_hash, salt, weights_ref.uri), trainer)
    _advance(chain, deadlines[1])
    scores = [5_000_000]
    chain.transact(
        arena.functions.commitScores(task_id, scores_commitment(scores, score_salt, validator.address)), validator
    )
    _advance(chain, deadlines[2])
    chain.transact(arena.functions.revealScores(task_id, scores, score_salt), validator)
    _advance(chain, deadlines[3])
    chain.transact(arena.functions.finalize(task_id), owner)
    return task_id


def _advance(chain: Chain, timestamp: int) -> None:
    gap = timestamp - chain.timestamp()
    if gap > 0:
        chain.increase_time(gap)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A fresh chain per test module with a finalised Arena language task and a HostRegistry."""
    home = tmp_path_factory.mktemp("gateway-world")
    shared_cache = REPO_ROOT / ".pytest_cache" / "covey-contracts"
    shared_cache.mkdir(parents=True, exist_ok=True)
    (home / "cache").mkdir(parents=True)
    os.symlink(shared_cache, home / "cache" / "contracts")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COVEY_HOME", str(home))
        chain = Chain.embedded(home / "chain")
        server = start_server_thread(chain._node, announce=False)
        try:
            owner, gateway_account = dev_accounts(4)[0], dev_accounts(4)[3]
            deployment = deploy_suite(chain, owner, unbonding_delay_s=100, commission_delay_s=10)
            # The suite deploys the Arena and the HostRegistry; a checkout without them deploys them here.
            arena_address = deployment.contracts.get("Arena") or deploy_arena(chain, deployment, owner)
            arena = chain.contract("Arena", arena_address)
            store = LocalStore(home / "artifacts")
            task_id = finalise_language_task(chain, deployment, arena, store, tiny_weights())
            registry_address = deployment.contracts.get("HostRegistry") or deploy_hosts(chain, deployment, owner)
            registry = chain.contract("HostRegistry", registry_address)
            chain.transact(registry.functions.setGateway(gateway_account.address, True), owner)
            yield World(
                chain=chain,
                rpc_url=server.url,
                deployment=deployment,
                home=home,
                store=store,
                owner=owner,
                arena=arena,
                registry=registry,
                usd=deployment.contract(chain, "USDToken"),
                cov=deployment.contract(chain, "CoveyToken"),
                staking=deployment.contract(chain, "Staking"),
                task_id=task_id,
                gateway_account=gateway_account,
            )
        finally:
            server.shutdown()
            chain.close()


def local_gateway(world: World, *, payments: PaymentOptions | None = None, **kwargs: Any) -> FastAPI:
    """A gateway that generates in process (no hosts) at the test price."""
    catalog = world.catalog()
    backend = LocalBackend(catalog, price_per_1k_atomic=HOST_PRICE_PER_1K)
    return create_gateway_app(catalog, backend, payments=payments, **kwargs)


@contextmanager
def host_process(
    world: World, account: LocalAccount, *, price_usd: float = 0.02, tokens_per_s: float = 0.0, log_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`python -m covey.gateway.host` serving the world's model, registered on chain; killed on exit."""
    port = free_port()
    python = str(REPO_ROOT / ".venv" / "bin" / "python")
    args = [
        python,
        "-m",
        "covey.gateway.host",
        "--model",
        world.model_id,
        "--port",
        str(port),
        "--price",
        str(price_usd),
        "--rpc-url",
        world.rpc_url,
        "--arena",
        world.arena.address,
        "--registry",
        world.registry.address,
        "--tokens-per-s",
        str(tokens_per_s),
        "--heartbeat",
        "5",
    ]
    env = {**os.environ, "COVEY_HOME": str(world.home), "COVEY_HOST_KEY": account.key.hex(), "OMP_NUM_THREADS": "1"}
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the host exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
            try:
                if (
                    httpx.get(f"{url}/health", timeout=2).status_code == 200
                    and world.registry.functions.isRegistered(account.address).call()
                ):
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the host did not come up: {log_path.read_text()[-2000:]}")
            time.sleep(0.2)
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
