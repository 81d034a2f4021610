"""Keys: encrypted eth-account keystore files under `COVEY_HOME/keys`, and the named dev accounts."""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

from covey.chain.chain import dev_accounts
from covey.config import Settings, get_settings
from covey.errors import ValidationError, WalletError

NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")
DEV_NAME = re.compile(r"^dev([0-9])$")


@dataclass(frozen=True)
class WalletInfo:
    """What can be said about a wallet without its password."""

    name: str
    address: str
    path: Path | None  # None for the built-in dev accounts


def parse_address(text: str) -> str:
    """A checksummed address from user input, or a clear `ValidationError`."""
    if not isinstance(text, str) or not Web3.is_address(text.strip()):
        raise ValidationError(f"malformed address {text!r}: expected 0x followed by 40 hex digits")
    return Web3.to_checksum_address(text.strip())


class Keystore:
    """The folder of encrypted key files, one `<name>.json` per wallet."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.folder = self.settings.subdir("keys")

    def create(self, name: str, password: str) -> WalletInfo:
        """Make a new random key and store it encrypted under `name`."""
        if not NAME_PATTERN.match(name) or DEV_NAME.match(name):
            raise ValidationError(f"bad wallet name {name!r}: use letters, digits, '-' or '_' (not dev0..dev9)")
        if not password:
            raise WalletError("refusing an empty password: set COVEY_PASSWORD or type one")
        path = self.folder / f"{name}.json"
        if path.exists():
            raise WalletError(f"a wallet named {name!r} already exists")
        account = Account.create()
        keyfile = Account.encrypt(account.key, password)
        fd, tmp = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
        with os.fdopen(fd, "w") as handle:
            json.dump(keyfile, handle)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
        return WalletInfo(name, account.address, path)

    def list(self) -> list[WalletInfo]:
        """Every stored wallet, by name."""
        wallets = []
        for path in sorted(self.folder.glob("*.json")):
            try:
                address = Web3.to_checksum_address("0x" + json.loads(path.read_text())["address"].removeprefix("0x"))
            except (ValueError, KeyError):
                continue
            wallets.append(WalletInfo(path.stem, address, path))
        return wallets

    def find(self, name_or_address: str) -> WalletInfo:
        """A wallet by name, by address, or a dev account (`dev0`..`dev9`)."""
        dev = DEV_NAME.match(name_or_address)
        if dev:
            return WalletInfo(name_or_address, dev_accounts(10)[int(dev.group(1))].address, None)
        for wallet in self.list():
            if wallet.name == name_or_address or wallet.address.lower() == name_or_address.lower():
                return wallet
        raise WalletError(f"unknown account {name_or_address!r}: see `covey wallet list`")

    def unlock(self, name_or_address: str, password: str | None) -> LocalAccount:
        """Decrypt a wallet; dev accounts need no password. Keys are never printed or logged."""
        wallet = self.find(name_or_address)
        dev = DEV_NAME.match(wallet.name)
        if dev and wallet.path is None:
            return dev_accounts(10)[int(dev.group(1))]
        assert wallet.path is not None
        if password is None:
            raise WalletError(f"wallet {wallet.name!r} is locked: set COVEY_PASSWORD or type the password")
        try:
            key = Account.decrypt(json.loads(wallet.path.read_text()), password)
        except ValueError as exc:
            raise WalletError(f"wrong password for wallet {wallet.name!r}") from exc
        return Account.from_key(key)
