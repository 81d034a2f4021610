"""The indexer stores every suite event exactly once, resumes after a restart, and follows a redeployed suite."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from covey.chain import Chain, dev_accounts
from covey.chain.deploy import CORE_STEPS, deploy_suite, load_deployment
from covey.chain.market_deploy import deploy_market
from covey.explorer import Indexer

from .conftest import SmallNetwork, deploy_small_suite, transfer


def chain_logs(chain: Chain, addresses: list[str]) -> set[tuple[str, int]]:
    """Every log of `addresses` according to the node itself: (tx hash, log index)."""
    logs = chain.w3.eth.get_logs({"address": addresses, "fromBlock": 0, "toBlock": "latest"})
    return {("0x" + bytes(log["transactionHash"]).hex(), int(log["logIndex"])) for log in logs}


def indexed_keys(path: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(path) as conn:
        return [(str(tx), int(index)) for tx, index in conn.execute("SELECT tx_hash, log_index FROM events")]


def meta_count(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT value FROM meta WHERE key = 'event_count'").fetchone()[0])


def test_indexes_every_suite_event_once(small_network: SmallNetwork, network_home: Path, tmp_path: Path) -> None:
    chain, deployment = small_network.chain, small_network.deployment
    path = tmp_path / "index.sqlite"
    indexer = Indexer(chain, path)
    first = indexer.poll()
    again = indexer.poll()
    indexer.close()

    expected = chain_logs(chain, list(deployment.contracts.values()))
    keys = indexed_keys(path)
    assert set(keys) == expected
    assert len(keys) == len(expected) == first.events == meta_count(path)
    assert again.events == 0
    assert first.indexed_block == chain.block_number()


def test_resumes_after_restart_without_losing_or_repeating(
    small_network: SmallNetwork, network_home: Path, tmp_path: Path
) -> None:
    chain, deployment = small_network.chain, small_network.deployment
    path = tmp_path / "index.sqlite"
    # Stop after a few small ranges, as if the process were killed mid-way.
    partial = Indexer(chain, path, batch_blocks=7)
    stopped_at = partial.poll(max_ranges=3)
    partial.close()
    assert 0 < stopped_at.indexed_block < chain.block_number()

    resumed = Indexer(chain, path, batch_blocks=7)
    rest = resumed.poll()
    transfer(chain, deployment, dev_accounts(2)[1].address)
    after_new_block = resumed.poll()
    resumed.close()

    keys = indexed_keys(path)
    assert len(keys) == len(set(keys)), "an event was stored twice"
    assert set(keys) == chain_logs(chain, list(deployment.contracts.values()))
    assert stopped_at.events + rest.events + after_new_block.events == len(keys) == meta_count(path)
    assert after_new_block.events == 1


def test_a_range_fetched_twice_is_not_counted_twice(
    small_network: SmallNetwork, network_home: Path, tmp_path: Path
) -> None:
    """A crash after the rows were written but before the process noticed: the same blocks come again."""
    chain = small_network.chain
    path = tmp_path / "index.sqlite"
    indexer = Indexer(chain, path)
    indexer.poll()
    total = len(indexed_keys(path))
    indexer.conn.execute("UPDATE contracts SET next_block = start_block")  # rewind every cursor
    replay = indexer.poll()
    indexer.close()
    assert replay.events == 0
    assert len(indexed_keys(path)) == total == meta_count(path)


def test_follows_a_redeployed_suite_and_registered_contracts(embedded_chain: Chain, tmp_path: Path) -> None:
    deployer = dev_accounts(1)[0]
    old = deploy_suite(embedded_chain, deployer, steps=CORE_STEPS)
    path = tmp_path / "index.sqlite"
    indexer = Indexer(embedded_chain, path)
    indexer.poll()
    with sqlite3.connect(path) as conn:
        old_addresses = {row[0] for row in conn.execute("SELECT DISTINCT address FROM events")}
    assert old_addresses == set(old.contracts.values())

    new = deploy_small_suite(embedded_chain)  # a new manifest: other addresses, plus Arena and PaymentBatcher
    indexer.poll()
    with sqlite3.connect(path) as conn:
        addresses = {row[0] for row in conn.execute("SELECT DISTINCT address FROM events")}
        watched = dict(conn.execute("SELECT name, address FROM contracts").fetchall())
    assert watched == new.contracts
    assert addresses <= set(new.contracts.values())
    assert not addresses & old_addresses, "the old suite's events must be gone"
    assert len(indexed_keys(path)) == meta_count(path)

    # A contract set in the on-chain Registry after the manifest was written is found and indexed too
    # (as `ensure_alliance` does); a name with no ABI in the package is left alone.
    market = deploy_market(embedded_chain, new, deployer)
    registry = load_deployment(embedded_chain).contract(embedded_chain, "Registry")
    embedded_chain.transact(registry.functions.set("Market", market), deployer)
    embedded_chain.transact(registry.functions.set("SomethingElse", dev_accounts(3)[2].address), deployer)
    indexer.poll()
    indexer.close()
    with sqlite3.connect(path) as conn:
        names = dict(conn.execute("SELECT address, name FROM contracts").fetchall())
        market_events = conn.execute("SELECT COUNT(*) FROM events WHERE contract = 'Market'").fetchone()[0]
    assert names[market] == "Market"
    assert "SomethingElse" not in names.values()
    assert market_events >= 1  # at least its ParamsSet from the constructor


def test_a_restarted_chain_empties_the_index(small_network: SmallNetwork, network_home: Path, tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite"
    indexer = Indexer(small_network.chain, path)
    indexer.poll()
    # Pretend the index was made on another chain (a dev node restarted with a new genesis block).
    indexer.conn.execute("UPDATE meta SET value = 'another-chain' WHERE key = 'chain'")
    indexer.conn.execute("UPDATE contracts SET next_block = next_block + 1000000")
    result = indexer.poll()
    indexer.close()
    keys = indexed_keys(path)
    assert result.events == len(keys) == meta_count(path)
    assert len(keys) == len(set(keys))


def test_indexes_a_real_node_too(anvil_chain: Chain, tmp_path: Path) -> None:
    """The same indexer over JSON-RPC to anvil (a shared node: only this suite's contracts count)."""
    deployment = deploy_small_suite(anvil_chain)
    transfer(anvil_chain, deployment, dev_accounts(2)[1].address)
    path = tmp_path / "index.sqlite"
    indexer = Indexer(anvil_chain, path, batch_blocks=50)
    result = indexer.poll()
    indexer.close()
    keys = indexed_keys(path)
    assert set(keys) == chain_logs(anvil_chain, list(deployment.contracts.values()))
    assert len(keys) == result.events == meta_count(path)
