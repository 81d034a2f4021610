"""The dev accounts: the keys of the standard test mnemonic, derived here once for the whole chain layer.

They are the accounts anvil and hardhat fund, and the ones the embedded chain's genesis funds; only
local chains may use them. Deriving a key from the mnemonic costs a few milliseconds, so each is
derived once per process.
"""

from __future__ import annotations

from functools import cache

from eth_account import Account
from eth_account.signers.local import LocalAccount

from covey.chain.signing import FastSigningAccount

DEV_MNEMONIC = "test test test test test test test test test test test junk"
DEV_ACCOUNT_COUNT = 10


@cache
def _derived(index: int) -> LocalAccount:
    """Dev account `index` of the mnemonic (BIP-44 path m/44'/60'/0'/0/index)."""
    Account.enable_unaudited_hdwallet_features()
    return Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")


def dev_accounts(count: int = DEV_ACCOUNT_COUNT) -> list[LocalAccount]:
    """The funded dev accounts of the standard test mnemonic (the same ones anvil and hardhat fund)."""
    return [FastSigningAccount(_derived(index)._key_obj, Account) for index in range(count)]  # type: ignore[arg-type]


def dev_private_keys(count: int = DEV_ACCOUNT_COUNT) -> list[str]:
    """The first `count` dev private keys (0x-hex)."""
    return ["0x" + bytes(_derived(index).key).hex() for index in range(count)]


def dev_addresses(count: int = DEV_ACCOUNT_COUNT) -> list[bytes]:
    """The first `count` dev account addresses (20 bytes each)."""
    return [bytes.fromhex(_derived(index).address[2:]) for index in range(count)]
