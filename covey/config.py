"""Settings in one place: environment variables `COVEY_*`, with defaults for a laptop."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def _flag(value: object) -> object:
    # As the variable was always read: any text but "" and "0" switches the flag on ("yes", "2", ...).
    return value not in ("", "0") if isinstance(value, str) else value


Flag = Annotated[bool, BeforeValidator(_flag)]
"""A boolean setting that any value other than empty or "0" turns on."""


class DebugSettings(BaseSettings):
    """The setting the CLI reads when any other may be malformed: `debug` (`COVEY_DEBUG`) shows tracebacks."""

    model_config = SettingsConfigDict(env_prefix="COVEY_", extra="ignore")

    debug: Flag = False


class Settings(DebugSettings):
    """Everything a Covey process needs to know about where it runs.

    - `home`: the data directory (`COVEY_HOME`, default `~/.covey`), created on first use.
    - `rpc_url`: an Ethereum JSON-RPC URL (`COVEY_RPC_URL`); unset means the embedded chain.
    - `store_url`: where artifacts live (`COVEY_STORE_URL`); unset means `home/artifacts`.
    - `key`: the keystore account name or address used by commands that sign (`COVEY_KEY`).
    - `password`: the keystore password (`COVEY_PASSWORD`); unset means prompt.
    - `chain_durability`: when the embedded chain confirms a transaction (`COVEY_CHAIN_DURABILITY`):
      `write` (default; survives SIGKILL), `fsync` (also survives a power cut, slower) or `none`.
    - `chain_rpc_gas_cap`, `chain_rpc_evm_timeout_s`: how much gas and wall time one `eth_call` or
      `eth_estimateGas` may use on `covey chain serve` (`COVEY_CHAIN_RPC_GAS_CAP`, default 50,000,000,
      and `COVEY_CHAIN_RPC_EVM_TIMEOUT_S`, default 5; geth's defaults).
    - `s3_endpoint_url`: the S3-compatible server of `s3://` stores whose URL names none
      (`COVEY_S3_ENDPOINT_URL`); unset means AWS itself.
    - `host_key`: the private key `python -m covey.gateway.host` serves and signs with (`COVEY_HOST_KEY`;
      from the environment, never the command line, where `ps` shows it).
    - `debug`: show the traceback of an unexpected error (`COVEY_DEBUG`: any value but empty or "0").
    """

    home: Path = Field(default_factory=lambda: Path.home() / ".covey")
    rpc_url: str | None = None
    store_url: str | None = None
    key: str | None = None
    password: str | None = None
    chain_durability: Literal["write", "fsync", "none"] = "write"
    chain_rpc_gas_cap: int = Field(default=50_000_000, ge=21_000)
    chain_rpc_evm_timeout_s: float = Field(default=5.0, gt=0)
    s3_endpoint_url: str | None = None
    host_key: SecretStr | None = None

    @cached_property
    def data_dir(self) -> Path:
        """The data directory, created (with its parents) on first use."""
        path = self.home.expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        return path

    def subdir(self, name: str) -> Path:
        """A named folder inside the data directory, created on first use."""
        path = self.data_dir / name
        path.mkdir(parents=True, exist_ok=True)
        return path


def get_settings() -> Settings:
    """Read settings from the environment now (no global cache, so tests can change it)."""
    return Settings()


def debug_enabled() -> bool:
    """Whether `COVEY_DEBUG` asks for tracebacks; read alone, so that a malformed other setting cannot hide it."""
    return DebugSettings().debug
