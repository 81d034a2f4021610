"""The embedded chain through web3.py in process: contracts, reverts, logs, time, rejections."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import pytest
from eth.abc import SignedTransactionAPI
from eth.db.trie import make_trie_root_and_nodes
from eth_account.signers.local import LocalAccount
from eth_bloom import BloomFilter
from eth_utils import keccak
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractLogicError, TransactionNotFound, Web3RPCError
from web3.types import FilterParams, TxData, TxReceipt, Wei

from covey.chain._embedded import BLOCK_GAS_LIMIT, DEV_BALANCE_WEI, EmbeddedNode, EmbeddedProvider, dev_private_keys

Send = Callable[..., TxReceipt]
GWEI = 10**9


def rpc(w3: Web3, method: str, *params: Any) -> Any:
    response = w3.provider.make_request(method, list(params))  # type: ignore[arg-type]
    assert "error" not in response, response
    return response["result"]


def test_dev_accounts_match_anvil_and_are_funded(w3: Web3, dev_accounts: list[LocalAccount]) -> None:
    assert dev_private_keys(1) == ["0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"]
    assert dev_accounts[0].address == "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
    assert dev_accounts[9].address == "0xa0Ee7A142d267C1f36714E4a8F75612F20a79720"
    assert all(w3.eth.get_balance(account.address) == DEV_BALANCE_WEI for account in dev_accounts)
    assert w3.eth.chain_id == 31337
    assert w3.eth.block_number == 0
    genesis = w3.eth.get_block("latest")
    assert genesis["baseFeePerGas"] == GWEI
    assert genesis["gasLimit"] == BLOCK_GAS_LIMIT
    assert w3.eth.gas_price == 2 * GWEI
    assert w3.eth.max_priority_fee == GWEI
    assert w3.eth.accounts == []
    assert w3.eth.syncing is False


def test_token_transfer_mines_a_block_with_a_full_receipt(
    w3: Web3, token: Contract, dev_accounts: list[LocalAccount], send: Send
) -> None:
    alice, bob = dev_accounts[0], dev_accounts[1]
    before = w3.eth.block_number
    receipt = send(alice, to=token.address, data=token.encode_abi("transfer", [bob.address, 250]))

    assert receipt["status"] == 1
    assert receipt["blockNumber"] == before + 1 == w3.eth.block_number
    assert receipt["from"] == alice.address and receipt["to"] == token.address
    assert receipt["effectiveGasPrice"] == 2 * GWEI  # base fee 1 gwei + tip 1 gwei (under the 3 gwei cap)
    assert receipt["cumulativeGasUsed"] == receipt["gasUsed"] > 21_000
    assert receipt["contractAddress"] is None and receipt["type"] == 2
    (transfer,) = token.events.Transfer().process_receipt(receipt)
    assert (transfer.args.sender, transfer.args.receiver, transfer.args.amount) == (alice.address, bob.address, 250)
    assert token.functions.balanceOf(bob.address).call() == 250
    bloom = BloomFilter()
    for log in receipt["logs"]:
        bloom.add(bytes.fromhex(log["address"][2:]))
        for topic in log["topics"]:
            bloom.add(bytes(topic))
    assert bytes(receipt["logsBloom"]) == int(bloom).to_bytes(256, "big")

    block = w3.eth.get_block(receipt["blockNumber"], full_transactions=True)
    assert block["hash"] == receipt["blockHash"]
    assert block["parentHash"] == w3.eth.get_block(before)["hash"]
    (mined,) = cast(list[TxData], block["transactions"])
    assert mined["hash"] == receipt["transactionHash"]
    assert w3.eth.get_block(block["hash"])["number"] == block["number"]
    tx = w3.eth.get_transaction(receipt["transactionHash"])
    assert tx["from"] == alice.address and tx["nonce"] == w3.eth.get_transaction_count(alice.address) - 1
    assert tx["maxFeePerGas"] == 3 * GWEI and tx["chainId"] == 31337
    gas_cost = receipt["gasUsed"] * receipt["effectiveGasPrice"]
    assert w3.eth.get_balance(alice.address) <= DEV_BALANCE_WEI - gas_cost


def test_transactions_root_matches_a_real_trie(w3: Web3, token: Contract, dev_accounts: list[LocalAccount]) -> None:
    alice, bob = dev_accounts[0], dev_accounts[1]
    nonce = w3.eth.get_transaction_count(alice.address)
    signed = alice.sign_transaction(
        {
            "chainId": 31337,
            "nonce": nonce,
            "to": token.address,
            "data": token.encode_abi("transfer", [bob.address, 1]),
            "gas": 100_000,
            "maxFeePerGas": 3 * GWEI,
            "maxPriorityFeePerGas": GWEI,
        }
    )
    tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
    block = w3.eth.get_block(w3.eth.get_transaction_receipt(tx_hash)["blockNumber"])
    expected_root, _ = make_trie_root_and_nodes(
        cast(Sequence[SignedTransactionAPI], [_RawTx(bytes(signed.raw_transaction))])
    )
    assert block["transactionsRoot"] == expected_root


class _RawTx:
    """Just enough of a transaction for py-evm's trie helper: it only calls encode()."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    def encode(self) -> bytes:
        return self.raw


def test_revert_reason_surfaces_as_contract_logic_error(
    w3: Web3, token: Contract, dev_accounts: list[LocalAccount], send: Send
) -> None:
    broke, bob = dev_accounts[5], dev_accounts[1]
    transfer = token.functions.transfer(bob.address, 1)
    with pytest.raises(ContractLogicError, match="token: balance too low"):
        transfer.call({"from": broke.address})
    with pytest.raises(ContractLogicError, match="token: balance too low"):
        transfer.estimate_gas({"from": broke.address})

    # Sent anyway (gas set by hand), it is mined like on a real chain, with status 0.
    receipt = send(broke, to=token.address, data=token.encode_abi("transfer", [bob.address, 1]), gas=80_000)
    assert receipt["status"] == 0
    assert receipt["logs"] == []
    assert w3.eth.get_transaction_count(broke.address) == 1


def test_rejected_transactions_are_errors_and_not_mined(w3: Web3, dev_accounts: list[LocalAccount], send: Send) -> None:
    alice, bob = dev_accounts[0], dev_accounts[1]
    send(alice, to=bob.address, value=1)
    head = w3.eth.block_number
    base: dict[str, Any] = {
        "chainId": 31337,
        "to": bob.address,
        "value": 1,
        "gas": 21_000,
        "maxFeePerGas": 3 * GWEI,
        "maxPriorityFeePerGas": GWEI,
    }
    cases = [
        ({**base, "nonce": 0, "value": 2}, "nonce too low"),
        ({**base, "nonce": 5}, "nonce too high"),
        ({**base, "nonce": 1, "chainId": 1}, "invalid chain id"),
        ({**base, "nonce": 1, "gas": BLOCK_GAS_LIMIT + 1}, "exceeds block gas limit"),
        ({**base, "nonce": 1, "value": DEV_BALANCE_WEI}, "insufficient funds"),
        ({**base, "nonce": 1, "maxFeePerGas": GWEI // 2, "maxPriorityFeePerGas": 0}, "less than block base fee"),
        ({**base, "nonce": 1, "gas": 20_000}, "intrinsic gas too low"),
    ]
    for fields, message in cases:
        with pytest.raises(Web3RPCError, match=message):
            w3.eth.send_raw_transaction(alice.sign_transaction(fields).raw_transaction)
    assert w3.eth.block_number == head
    assert w3.eth.get_transaction_count(alice.address) == 1

    # The same transaction twice: the second is already known.
    signed = alice.sign_transaction({**base, "nonce": 1})
    w3.eth.send_raw_transaction(signed.raw_transaction)
    with pytest.raises(Web3RPCError, match="already known"):
        w3.eth.send_raw_transaction(signed.raw_transaction)


def test_legacy_and_access_list_transactions_are_accepted(
    w3: Web3, dev_accounts: list[LocalAccount], token: Contract
) -> None:
    alice, bob = dev_accounts[2], dev_accounts[3]
    legacy: dict[str, Any] = {
        "chainId": 31337,
        "nonce": 0,
        "to": bob.address,
        "value": 7,
        "gas": 21_000,
        "gasPrice": 2 * GWEI,
    }
    access_list: dict[str, Any] = {
        **legacy,
        "nonce": 1,
        "type": 1,
        "accessList": [{"address": token.address, "storageKeys": ["0x" + "00" * 32]}],
        "gas": 30_000,
    }
    for fields in (legacy, access_list):
        tx_hash = w3.eth.send_raw_transaction(alice.sign_transaction(fields).raw_transaction)
        receipt = w3.eth.get_transaction_receipt(tx_hash)
        assert receipt["status"] == 1 and receipt["type"] == fields.get("type", 0)
        assert receipt["effectiveGasPrice"] == 2 * GWEI
    assert w3.eth.get_transaction(tx_hash)["accessList"][0]["address"] == token.address
    assert w3.eth.get_balance(bob.address) == DEV_BALANCE_WEI + 14


def test_estimate_gas_is_enough_and_exact_for_plain_transfers(
    w3: Web3, token: Contract, dev_accounts: list[LocalAccount], send: Send
) -> None:
    alice, bob = dev_accounts[0], dev_accounts[1]
    assert w3.eth.estimate_gas({"from": alice.address, "to": bob.address, "value": Wei(1)}) == 21_000
    data = token.encode_abi("transfer", [bob.address, 3])
    estimate = w3.eth.estimate_gas({"from": alice.address, "to": token.address, "data": data})
    receipt = send(alice, to=token.address, data=data, gas=estimate)
    assert receipt["status"] == 1
    assert receipt["gasUsed"] <= estimate < receipt["gasUsed"] * 1.2


def test_get_logs_filters_by_block_address_and_topics(
    w3: Web3, probe: Contract, token: Contract, dev_accounts: list[LocalAccount], send: Send
) -> None:
    alice, bob = dev_accounts[0], dev_accounts[1]
    first = w3.eth.block_number + 1
    for caller, tag in [(alice, 1), (bob, 2), (alice, 3)]:
        send(caller, to=probe.address, data=probe.encode_abi("ping", [tag, tag * 10]))
    send(alice, to=token.address, data=token.encode_abi("transfer", [bob.address, 1]))
    last = w3.eth.block_number
    ping_topic = probe.events.Ping().topic
    alice_topic = "0x" + "00" * 12 + alice.address[2:].lower()
    tag_topic = "0x" + (2).to_bytes(32, "big").hex()
    tag3_topic = "0x" + (3).to_bytes(32, "big").hex()

    def tags(**criteria: Any) -> list[int]:
        logs = w3.eth.get_logs(cast(FilterParams, {"fromBlock": first, "toBlock": last, **criteria}))
        return [int.from_bytes(log["topics"][2], "big") for log in logs if log["address"] == probe.address]

    assert tags(address=probe.address) == [1, 2, 3]
    assert tags(topics=[ping_topic, alice_topic]) == [1, 3]
    assert tags(topics=[None, None, [tag_topic, tag3_topic]]) == [2, 3]
    assert tags(topics=[ping_topic, None, None, None]) == []  # Ping has only three topics
    assert len(w3.eth.get_logs({"fromBlock": first, "toBlock": last, "address": [probe.address, token.address]})) == 4
    assert w3.eth.get_logs({"fromBlock": last + 5, "toBlock": last + 9}) == []

    third = w3.eth.get_block(first + 2)
    (log,) = w3.eth.get_logs({"blockHash": third["hash"]})
    assert log["blockNumber"] == first + 2 and log["logIndex"] == 0 and log["removed"] is False
    pings = probe.events.Ping().get_logs(from_block=first, argument_filters={"caller": bob.address})
    assert [event.args.amount for event in pings] == [20]


def test_log_filters_report_only_new_logs(
    w3: Web3, probe: Contract, dev_accounts: list[LocalAccount], send: Send
) -> None:
    alice = dev_accounts[0]
    log_filter = w3.eth.filter({"address": probe.address})
    block_filter = w3.eth.filter("latest")
    send(alice, to=probe.address, data=probe.encode_abi("ping", [1, 1]))
    send(alice, to=probe.address, data=probe.encode_abi("ping", [2, 2]))
    assert len(log_filter.get_new_entries()) == 2
    assert log_filter.get_new_entries() == []
    assert len(block_filter.get_new_entries()) == 2
    assert log_filter.filter_id is not None
    assert w3.eth.uninstall_filter(log_filter.filter_id) is True


def test_time_travel_moves_block_timestamp(
    w3: Web3, probe: Contract, dev_accounts: list[LocalAccount], send: Send
) -> None:
    alice = dev_accounts[0]
    start = w3.eth.get_block("latest")["timestamp"]
    rpc(w3, "evm_increaseTime", 3600)
    rpc(w3, "evm_mine")
    assert probe.functions.now().call() >= start + 3600

    pinned = w3.eth.get_block("latest")["timestamp"] + 86_400
    rpc(w3, "evm_setNextBlockTimestamp", pinned)
    receipt = send(alice, to=probe.address, data=probe.encode_abi("ping", [0, 0]), gas=200_000)
    assert w3.eth.get_block(receipt["blockNumber"])["timestamp"] == pinned
    assert probe.functions.last_timestamp().call() == pinned
    # The clock continues from the pinned time and never runs backwards.
    rpc(w3, "evm_mine")
    assert w3.eth.get_block("latest")["timestamp"] >= pinned

    error = w3.provider.make_request("evm_setNextBlockTimestamp", [start])  # type: ignore[arg-type]
    assert "before the latest block" in error["error"]["message"]


def test_prevrandao_and_blockhash_follow_the_virtual_block(
    w3: Web3, probe: Contract, dev_accounts: list[LocalAccount], send: Send
) -> None:
    alice = dev_accounts[0]
    seen = []
    for tag in range(3):
        receipt = send(alice, to=probe.address, data=probe.encode_abi("ping", [tag, 0]), gas=200_000)
        block = w3.eth.get_block(receipt["blockNumber"])
        randao = probe.functions.last_randao().call()
        assert randao == bytes(block["mixHash"])
        assert probe.functions.last_number().call() == block["number"]
        seen.append(randao)
    assert len(set(seen)) == 3
    latest = w3.eth.get_block("latest")
    assert probe.functions.parent_hash().call() == bytes(w3.eth.get_block(latest["number"] - 1)["hash"])
    expected = keccak(bytes(latest["parentHash"]) + latest["number"].to_bytes(32, "big"))
    assert bytes(latest["mixHash"]) == expected


def test_set_balance_and_fee_history(w3: Web3, node: EmbeddedNode) -> None:
    someone = "0x" + "ab" * 20
    rpc(w3, "anvil_setBalance", someone, hex(5 * 10**18))
    assert w3.eth.get_balance(Web3.to_checksum_address(someone)) == 5 * 10**18
    rpc(w3, "evm_mine")
    history = w3.eth.fee_history(2, "latest", [25, 75])
    assert history["baseFeePerGas"] == [GWEI] * 3
    assert history["reward"] == [[GWEI, GWEI]] * 2


def test_only_the_latest_state_is_kept(w3: Web3, dev_accounts: list[LocalAccount], send: Send) -> None:
    alice, bob = dev_accounts[0], dev_accounts[1]
    send(alice, to=bob.address, value=1)
    latest = w3.eth.block_number
    assert w3.eth.get_balance(bob.address, block_identifier=latest) == DEV_BALANCE_WEI + 1
    assert w3.eth.get_balance(bob.address, block_identifier="pending") == DEV_BALANCE_WEI + 1
    with pytest.raises(Web3RPCError, match="keeps only the latest state"):
        w3.eth.get_balance(bob.address, block_identifier=latest - 1)
    # Blocks and receipts of the past stay available.
    assert w3.eth.get_block(0)["number"] == 0


def test_unknown_methods_and_bad_params_are_json_rpc_errors(w3: Web3) -> None:
    unknown = w3.provider.make_request("eth_doesNotExist", [])  # type: ignore[arg-type]
    assert unknown["error"]["code"] == -32601
    bad = w3.provider.make_request("eth_getBalance", ["0x1234", "latest"])  # type: ignore[arg-type]
    assert bad["error"]["code"] == -32602
    missing = w3.provider.make_request("eth_getTransactionReceipt", ["0x" + "11" * 32])  # type: ignore[arg-type]
    assert missing["result"] is None


def test_fast_path_answers_exactly_what_web3_would(
    w3: Web3, node: EmbeddedNode, token: Contract, probe: Contract, dev_accounts: list[LocalAccount], send: Send
) -> None:
    """`embedded_web3` skips web3's formatters for send and receipt; a plain Web3 sees the same receipts."""
    plain = Web3(EmbeddedProvider(node))
    alice, bob = dev_accounts[0], dev_accounts[1]
    receipts = [
        send(alice, to=token.address, data=token.encode_abi("transfer", [bob.address, 5])),
        send(alice, to=bob.address, value=7, gas=21_000),
        send(alice, to=probe.address, data=probe.encode_abi("refuse", [1]), gas=100_000),  # reverts
        send(alice, data=w3.eth.contract(abi=[], bytecode="0x6000600055").constructor().data_in_transaction),
    ]
    assert [receipt["status"] for receipt in receipts] == [1, 1, 0, 1]
    for receipt in receipts:
        tx_hash = receipt["transactionHash"]
        expected = plain.eth.get_transaction_receipt(tx_hash)
        for fast in (receipt, w3.eth.wait_for_transaction_receipt(tx_hash)):
            assert fast == expected
            assert {key: type(value) for key, value in fast.items()} == {
                key: type(value) for key, value in expected.items()
            }
            for fast_log, log in zip(fast["logs"], expected["logs"], strict=True):
                assert {k: type(v) for k, v in fast_log.items()} == {k: type(v) for k, v in log.items()}
    # Rejections and unknown hashes still raise web3's own errors.
    signed = alice.sign_transaction(
        {
            "chainId": 31337,
            "nonce": 0,
            "to": bob.address,
            "gas": 21_000,
            "maxFeePerGas": 3 * GWEI,
            "maxPriorityFeePerGas": GWEI,
        }
    )
    with pytest.raises(Web3RPCError, match="nonce too low"):
        w3.eth.send_raw_transaction(signed.raw_transaction)
    with pytest.raises(TransactionNotFound):
        w3.eth.get_transaction_receipt(b"\x01" * 32)
