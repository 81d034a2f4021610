"""Every revert reason the code acts on (`covey.chain.reverts`) is still, word for word, its contract's message.

Code matches `ChainError.reason` against these names; were a contract to reword an `assert`, the match would
silently stop matching. Here the rewording fails loudly instead.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from covey.chain import reverts

CONTRACTS = Path(reverts.__file__).with_name("contracts")
CONTRACT_OF_PREFIX = {"ARENA_": "Arena.vy", "MARKET_": "Market.vy"}
NAMED_REVERTS = sorted(name for name in vars(reverts) if name.isupper() and not name.startswith("_"))


def test_every_named_revert_belongs_to_a_contract() -> None:
    assert NAMED_REVERTS, "covey.chain.reverts names no revert"
    for name in NAMED_REVERTS:
        assert name.startswith(tuple(CONTRACT_OF_PREFIX)), f"{name}: which contract reverts with it?"


@pytest.mark.parametrize("name", NAMED_REVERTS)
def test_a_named_revert_occurs_in_its_contract_source(name: str) -> None:
    contract = next(file for prefix, file in CONTRACT_OF_PREFIX.items() if name.startswith(prefix))
    reason = getattr(reverts, name)
    source = (CONTRACTS / contract).read_text()
    assert f'"{reason}"' in source, f"{name} = {reason!r} is not a revert message in {contract}"
