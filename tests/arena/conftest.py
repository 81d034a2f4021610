"""Fixtures for the off-chain Arena: a suite with the Arena on a chain, the artifact store, staked accounts."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from covey.arena import ArenaClient, Deadlines, PostedTask, post_task
from covey.chain import Chain, dev_accounts
from covey.chain.arena_deploy import ARENA_STEPS
from covey.chain.deploy import SUITE_STEPS, Deployment, deploy_suite
from covey.chain.faucet import fund
from covey.chain.roles import Role
from covey.ml import TaskSpec, default_spec
from covey.storage import ArtifactStore, open_store

COV = 10**18
PHASE_S = 600

# The `covey` command, run as `python -c CLI_ENTRY ARGS...` so subprocesses use this interpreter.
CLI_ENTRY = "import sys; from covey.cli.app import main; main(sys.argv[1:])"


def run_covey(home: Path, *args: str, rpc_url: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run `covey ARGS...` as a user would: its own process, this data directory, no other COVEY_ settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVEY_")}
    env["COVEY_HOME"] = str(home)
    if rpc_url is not None:
        env["COVEY_RPC_URL"] = rpc_url
    return subprocess.run(
        [sys.executable, "-c", CLI_ENTRY, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def deploy_with_arena(chain: Chain) -> Deployment:
    """The whole suite with the Arena in it (short delays), whether or not the suite lists it yet."""
    has_arena = any(step.name == ARENA_STEPS[0].name for step in SUITE_STEPS)
    steps = SUITE_STEPS if has_arena else [*SUITE_STEPS, *ARENA_STEPS]
    return deploy_suite(chain, dev_accounts(1)[0], steps=steps, unbonding_delay_s=100, commission_delay_s=10)


@dataclass
class ArenaEnv:
    """A chain with the suite and the Arena, a store and a data directory, plus helpers to staff a task."""

    chain: Chain
    deployment: Deployment
    client: ArenaClient
    store: ArtifactStore
    home: Path

    def funded(self) -> LocalAccount:
        """A new random account with gas money, USD and COV (the anvil node is shared: no fixed keys)."""
        account: LocalAccount = Account.create()
        fund(self.chain, self.deployment, account.address)
        return account

    def staked(self, role: Role, cov: int) -> LocalAccount:
        account = self.funded()
        staking = self.client.staking
        self.chain.transact(self.client.token.functions.approve(staking.address, cov * COV), account)
        self.chain.transact(staking.functions.stake(role, cov * COV), account)
        return account

    def post(self, spec: TaskSpec | None = None, *, creator: LocalAccount | None = None, **terms: object) -> PostedTask:
        """A task with 10-minute phases, 100 COV pool, 10 COV minimum stakes (override any of them)."""
        options: dict[str, object] = {
            "reward_pool": 100 * COV,
            "deadlines": Deadlines.after(self.client.now(), PHASE_S, PHASE_S, PHASE_S, PHASE_S),
            "top_k": 3,
            "min_trainer_stake": 10 * COV,
            "min_validator_stake": 10 * COV,
            "tolerance": 0.02,
            **terms,
        }
        return post_task(
            self.client,
            creator or self.funded(),
            self.store,
            self.home,
            spec or default_spec("digits"),
            **options,  # type: ignore[arg-type]
        )

    def travel_to(self, timestamp: int) -> None:
        gap = timestamp - self.client.now()
        if gap > 0:
            self.chain.increase_time(gap)


def make_env(chain: Chain, home: Path) -> ArenaEnv:
    deployment = deploy_with_arena(chain)
    return ArenaEnv(
        chain=chain,
        deployment=deployment,
        client=ArenaClient.from_deployment(chain, deployment),
        store=open_store(None, home),
        home=home,
    )


@pytest.fixture
def arena_env(embedded_chain: Chain, covey_home: Path) -> ArenaEnv:
    """The suite and the Arena on this test's embedded chain."""
    return make_env(embedded_chain, covey_home)


@pytest.fixture
def any_arena_env(chain: Chain, covey_home: Path) -> ArenaEnv:
    """The suite and the Arena on each backend in turn (embedded, then a real anvil node)."""
    return make_env(chain, covey_home)
