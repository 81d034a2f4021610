"""What commands share: settings, the chain connection, the deployment and the signing account."""

from __future__ import annotations

import getpass
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property

from eth_account.signers.local import LocalAccount

from covey.chain import Chain
from covey.chain.deploy import Deployment, load_deployment
from covey.chain.wallets import Keystore
from covey.config import Settings, get_settings
from covey.config import debug_enabled as debug_enabled
from covey.errors import WalletError

NO_SIGNER = "no signing account: pass --from NAME or set COVEY_KEY"

LOCAL_SERVER_ACCOUNTS = {"host": "dev4", "gateway": "dev5", "facilitator": "dev6"}
"""The dev account each `serve` command signs with on a local chain when neither --from nor COVEY_KEY names one.

Every dev account holds ETH for gas from genesis (embedded and anvil alike). Each server gets its own, so
their transactions (settlements, payouts, heartbeats) never race for one nonce, and none is an account the
demo or the faucet (dev0) transacts with.
"""


@dataclass
class Context:
    """Lazily opened resources for one CLI invocation; `close()` releases the embedded chain."""

    settings: Settings = field(default_factory=get_settings)

    @cached_property
    def chain(self) -> Chain:
        return Chain.connect(self.settings)

    @cached_property
    def deployment(self) -> Deployment:
        return load_deployment(self.chain)

    @cached_property
    def keystore(self) -> Keystore:
        return Keystore(self.settings)

    def signer(self, name_or_address: str | None) -> LocalAccount:
        """The account that signs: `--from`, else COVEY_KEY; the password from COVEY_PASSWORD or a prompt."""
        chosen = name_or_address or self.settings.key
        if not chosen:
            raise WalletError(NO_SIGNER)
        wallet = self.keystore.find(chosen)
        if wallet.path is None:
            if not self.chain.is_local:
                raise WalletError("dev accounts exist only on local chains")
            return self.keystore.unlock(chosen, None)
        password = self.settings.password
        if password is None and sys.stdin.isatty():
            password = getpass.getpass(f"password for {wallet.name}: ")
        return self.keystore.unlock(chosen, password)

    def server_signer(self, name_or_address: str | None, role: str) -> tuple[LocalAccount, str]:
        """The account a `serve` command signs with, and how its start-up line names it.

        `--from`, else COVEY_KEY; else, on a local chain only, the role's dev account (`LOCAL_SERVER_ACCOUNTS`).
        """
        if name_or_address or self.settings.key:
            account = self.signer(name_or_address)
            return account, str(account.address)
        if not self.chain.is_local:
            raise WalletError(NO_SIGNER)
        default = LOCAL_SERVER_ACCOUNTS[role]
        account = self.signer(default)
        return account, f"{account.address} ({default}, the local chain's default {role} account; --from picks another)"

    def close(self) -> None:
        if "chain" in self.__dict__:
            self.chain.close()


@contextmanager
def open_context() -> Iterator[Context]:
    """A `Context` for one command, closed (chain snapshot written) however the command ends."""
    context = Context()
    try:
        yield context
    finally:
        context.close()
