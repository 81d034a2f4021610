"""SIGKILL `covey chain serve` under load: no receipted transaction is lost, none doubled, and the chain resumes.

Four client threads send signed USD transfers round a ring of accounts (one in seven is a transfer of
more than exists, which reverts) and read each receipt. Mid-load the server is killed with SIGKILL and
started again on the same data directory. A receipt is the chain's promise: every transaction a client
got one for must be there after the restart, in the same block with the same status. The one transfer
each client may have had in flight is either wholly there or wholly absent. Balances then follow exactly
from the transfers that are on chain, the supply is unchanged, nonces carry on, and new transfers land.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from eth_typing import HexStr
from web3.contract import Contract
from web3.exceptions import TransactionNotFound

from covey.chain import Chain, dev_accounts
from covey.chain.chain import sign_transaction

from .conftest import chain_server, wait_for

pytestmark = pytest.mark.e2e

CLIENTS = 4
FUNDS = 10**9  # 1,000 USD each, in 6-decimal units
RECEIPTS_BEFORE_KILL = 600
MAX_TX_PER_CLIENT = 2_000
LOAD_TIMEOUT_S = 120.0
REVERT_EVERY = 7
TOO_MUCH = 10**15  # more USD than exists: the transfer reverts (status 0) and still uses a nonce
GWEI = 10**9


@dataclass
class Sent:
    """One signed transfer a client sent, and what its receipt said if the client got one."""

    tx_hash: str
    sender: str
    to: str
    amount: int
    nonce: int
    receipt: dict[str, Any] | None = None


@dataclass
class Client:
    """A load client: one account sending to the next in the ring, one transfer at a time."""

    account: LocalAccount
    to: str
    first_nonce: int
    sent: list[Sent] = field(default_factory=list)
    error: tuple[float, str] | None = None


def receipt_facts(receipt: Any) -> dict[str, Any]:
    """What a user checks on a receipt: where it landed and whether it worked."""
    return {
        "block": int(receipt["blockNumber"]),
        "block_hash": bytes(receipt["blockHash"]).hex(),
        "index": int(receipt["transactionIndex"]),
        "status": int(receipt["status"]),
    }


def transfer_tx(usd: Contract, client: Client, nonce: int, amount: int) -> dict[str, Any]:
    return {
        "chainId": 31337,
        "nonce": nonce,
        "to": usd.address,
        "data": usd.functions.transfer(client.to, amount)._encode_transaction_data(),
        "value": 0,
        "gas": 100_000,
        "maxFeePerGas": 3 * GWEI,
        "maxPriorityFeePerGas": GWEI,
    }


def load(url: str, usd: Contract, client: Client, index: int, stop: threading.Event) -> None:
    """Send transfers and read receipts until stopped, the cap is reached, or the server goes away.

    `usd` only encodes the calls; each client talks to the server over its own connection.
    """
    rng = random.Random(index)
    try:
        w3 = Chain.from_rpc(url).w3
        for offset in range(MAX_TX_PER_CLIENT):
            if stop.is_set():
                return
            nonce = client.first_nonce + offset
            amount = TOO_MUCH if offset % REVERT_EVERY == REVERT_EVERY - 1 else rng.randint(1, 1_000_000)
            signed = sign_transaction(client.account, transfer_tx(usd, client, nonce, amount))
            record = Sent("0x" + signed.hash.hex().removeprefix("0x"), client.account.address, client.to, amount, nonce)
            client.sent.append(record)  # before sending: from here on it may be on chain
            w3.eth.send_raw_transaction(signed.raw_transaction)
            record.receipt = receipt_facts(w3.eth.get_transaction_receipt(signed.hash))
    except Exception as exc:  # the server was killed (or something is wrong: the test checks when it happened)
        client.error = (time.monotonic(), f"{type(exc).__name__}: {exc}")


def test_a_sigkilled_chain_server_keeps_every_receipted_transfer_and_resumes(covey_home: Path, tmp_path: Path) -> None:
    owner, *senders = dev_accounts(CLIENTS + 1)
    with chain_server(covey_home, tmp_path / "chain-1.log") as (server, url):
        chain = Chain.from_rpc(url)
        usd = chain.deploy("USDToken", sender=owner)
        for sender in senders:
            chain.transact(usd.functions.faucet(sender.address, FUNDS), owner)
        supply = int(usd.functions.totalSupply().call())
        clients = [
            Client(sender, senders[(index + 1) % CLIENTS].address, chain.w3.eth.get_transaction_count(sender.address))
            for index, sender in enumerate(senders)
        ]

        # The users: four threads sending and reading receipts as fast as the server lets them.
        stop = threading.Event()
        threads = [
            threading.Thread(target=load, args=(url, usd, client, index, stop), daemon=True)
            for index, client in enumerate(clients)
        ]
        started = time.monotonic()
        for thread in threads:
            thread.start()

        def receipted() -> int:
            return sum(1 for client in clients for sent in client.sent if sent.receipt is not None)

        wait_for(lambda: receipted() >= RECEIPTS_BEFORE_KILL, "transfers under load", LOAD_TIMEOUT_S, poll_s=0.02)
        assert all(client.error is None for client in clients), [client.error for client in clients]
        killed_at = time.monotonic()
        server.sigkill()  # mid-load: every client has a transfer on its way
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        assert not any(thread.is_alive() for thread in threads)
        load_s = killed_at - started

    # Nothing failed before the kill; after it, every client lost its connection.
    for client in clients:
        assert client.error is None or client.error[0] >= killed_at, client.error
    restart_started = time.monotonic()
    with chain_server(covey_home, tmp_path / "chain-2.log") as (_server, url):
        restart_s = time.monotonic() - restart_started
        chain = Chain.from_rpc(url)
        usd = chain.contract("USDToken", usd.address)

        on_chain: list[Sent] = []
        for client in clients:
            landed = []
            for sent in client.sent:
                try:
                    facts = receipt_facts(chain.w3.eth.get_transaction_receipt(HexStr(sent.tx_hash)))
                except TransactionNotFound:
                    facts = None
                if sent.receipt is not None:
                    assert facts == sent.receipt, f"receipted transfer {sent.tx_hash} changed or vanished"
                if facts is not None:
                    landed.append(sent)
                    sent.receipt = facts
            # Transfers land in nonce order: what is on chain is a prefix of what was sent, and it holds
            # every receipted one. At most the one transfer in flight at the kill is missing.
            assert landed == client.sent[: len(landed)]
            unreceipted = client.sent[len(landed) :]
            assert len(unreceipted) <= 1, unreceipted
            assert chain.w3.eth.get_transaction_count(client.account.address) == client.first_nonce + len(landed)
            on_chain += landed

        # Balances follow exactly from the transfers on chain (reverted ones move nothing); the supply stays.
        expected: dict[str, int] = dict.fromkeys((str(client.account.address) for client in clients), FUNDS)
        for sent in on_chain:
            assert sent.receipt is not None
            assert sent.receipt["status"] == (0 if sent.amount == TOO_MUCH else 1), sent
            if sent.receipt["status"] == 1:
                expected[sent.sender] -= sent.amount
                expected[sent.to] += sent.amount
        assert any(sent.receipt["status"] == 0 for sent in on_chain if sent.receipt is not None)
        balances = {address: int(usd.functions.balanceOf(address).call()) for address in expected}
        assert balances == expected
        assert int(usd.functions.totalSupply().call()) == supply == sum(balances.values())

        # The chain resumes: each account's next nonce is accepted and moves money.
        head = max(sent.receipt["block"] for sent in on_chain if sent.receipt is not None)
        for client in clients:
            nonce = chain.w3.eth.get_transaction_count(client.account.address)
            signed = sign_transaction(client.account, transfer_tx(usd, client, nonce, 5))
            chain.w3.eth.send_raw_transaction(signed.raw_transaction)
            receipt = chain.w3.eth.get_transaction_receipt(signed.hash)
            assert receipt["status"] == 1 and receipt["blockNumber"] > head
        assert {address: int(usd.functions.balanceOf(address).call()) for address in expected} == balances

    sent_count = sum(len(client.sent) for client in clients)
    print(
        f"\nchain kill: {sent_count} sent, {len(on_chain)} on chain, {RECEIPTS_BEFORE_KILL}+ receipted in "
        f"{load_s:.1f}s before the kill, restart answered in {restart_s:.1f}s"
    )
