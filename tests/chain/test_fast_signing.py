"""Covey's own signer gives byte-for-byte what eth-account gives, and leaves odd shapes to eth-account."""

from __future__ import annotations

import random
from typing import Any

import pytest
from eth_account import Account

from covey.chain import dev_accounts
from covey.chain.chain import FastSigningAccount, sign_transaction


def random_transaction(rnd: random.Random, to: str) -> dict[str, Any]:
    data_length = rnd.choice([0, 1, 2, 36, 55, 56, 57, 300, 70_000])
    tx: dict[str, Any] = {
        "type": 2,
        "chainId": rnd.choice([1, 31337]),
        "nonce": rnd.randrange(2**20),
        "maxFeePerGas": rnd.randrange(2**70),
        "maxPriorityFeePerGas": rnd.randrange(2**40),
        "gas": rnd.randrange(21_000, 10**7),
        "value": rnd.choice([0, 1, 127, 128, rnd.randrange(2**100)]),
        "data": rnd.choice(["0x" + rnd.randbytes(data_length).hex(), rnd.randbytes(data_length)]),
    }
    if rnd.random() < 0.8:
        tx["to"] = to
    if rnd.random() < 0.2:
        del tx["type"]
    return tx


def test_fast_signatures_match_eth_account() -> None:
    fast_accounts = dev_accounts(3)
    assert all(isinstance(account, FastSigningAccount) for account in fast_accounts)
    plain_accounts = [Account.from_key(account.key) for account in fast_accounts]
    rnd = random.Random(7)
    for _ in range(300):
        index = rnd.randrange(3)
        tx = random_transaction(rnd, plain_accounts[rnd.randrange(3)].address)
        expected = plain_accounts[index].sign_transaction(dict(tx))
        assert fast_accounts[index].sign_transaction(tx) == expected
        assert sign_transaction(plain_accounts[index], tx) == expected


def test_other_shapes_go_to_eth_account() -> None:
    (account,) = dev_accounts(1)
    plain = Account.from_key(account.key)
    legacy = {"chainId": 31337, "nonce": 1, "gasPrice": 10**9, "gas": 21_000, "to": plain.address, "value": 1}
    hex_fields = {
        "type": "0x2",
        "chainId": 31337,
        "nonce": "0x1",
        "maxFeePerGas": 10**9,
        "maxPriorityFeePerGas": 1,
        "gas": 21_000,
        "to": plain.address,
    }
    with_access_list = {**hex_fields, "nonce": 1, "to": plain.address, "accessList": []}
    for tx in (legacy, hex_fields, with_access_list):
        assert account.sign_transaction(dict(tx)) == plain.sign_transaction(dict(tx))
    # eth-account's own checks still apply: a lower-case `to` is refused, by both.
    for signer in (account, plain):
        with pytest.raises(TypeError, match="invalid fields"):
            signer.sign_transaction({**with_access_list, "to": plain.address.lower()})


def test_fast_sender_recovery_matches_py_evm() -> None:
    """The engine recovers type-2 senders from the raw bytes; py-evm, re-encoding, finds the same."""
    from covey.chain._embedded.engine import decode_transaction, recover_dynamic_fee_sender

    accounts = dev_accounts(3)
    rnd = random.Random(11)
    for _ in range(100):
        account = accounts[rnd.randrange(3)]
        tx = random_transaction(rnd, accounts[0].address)
        if rnd.random() < 0.3:
            tx["accessList"] = [{"address": accounts[1].address, "storageKeys": ["0x" + "11" * 32]}]
        raw = bytes(account.sign_transaction(tx).raw_transaction)
        recovered = recover_dynamic_fee_sender(raw, decode_transaction(raw))
        assert recovered == decode_transaction(raw).sender == bytes.fromhex(account.address[2:])
    legacy = accounts[0].sign_transaction(
        {"chainId": 31337, "nonce": 0, "gasPrice": 1, "gas": 21_000, "to": accounts[1].address}
    )
    raw = bytes(legacy.raw_transaction)
    assert recover_dynamic_fee_sender(raw, decode_transaction(raw)) is None  # py-evm's path for other types
