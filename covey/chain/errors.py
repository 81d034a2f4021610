"""Every exception the chain layer raises, and the revert reasons they carry, in one place.

    covey.errors.ChainError              a chain call failed (`reason`: the contract's revert text)
     +-- covey.errors.ChainBusyError     the embedded chain's directory is held by another process
     +-- TransactionRejected             refused before execution (nonce, funds, gas, fee, chain id)
     +-- ExecutionReverted               a call or estimate reverted (`data`: the raw revert data)
     +-- ExecutionFailed                 a call or estimate failed otherwise (out of gas, bad opcode)
     +-- StateUnavailable                state asked for at a block the embedded chain no longer keeps
    RpcError (Exception)                 a JSON-RPC error answer (`code`, `message`, `data`)
    DeadlineExceeded (BaseException)     raised into a thread whose wall-time limit ran out

`RpcError` is a wire answer, not a failure of Covey's: the embedded chain's dispatcher turns every
`ChainError` into one, and web3 turns it back into its own exceptions on the client side.
"""

from __future__ import annotations

from typing import Any

from eth_abi import decode as abi_decode
from eth_abi.exceptions import DecodingError
from web3.exceptions import ContractLogicError, Web3RPCError

from covey.errors import ChainBusyError, ChainError

__all__ = [
    "ChainBusyError",
    "ChainError",
    "DeadlineExceeded",
    "ExecutionFailed",
    "ExecutionReverted",
    "RpcError",
    "StateUnavailable",
    "TransactionRejected",
    "decode_revert_reason",
    "revert_reason",
]

_ERROR_SELECTOR = bytes.fromhex("08c379a0")  # Error(string)
_PANIC_SELECTOR = bytes.fromhex("4e487b71")  # Panic(uint256)


def decode_revert_reason(data: bytes) -> str | None:
    """The text of an `Error(string)` or `Panic(uint256)` revert, or None for other data."""
    try:
        if data[:4] == _ERROR_SELECTOR:
            return str(abi_decode(["string"], data[4:])[0])
        if data[:4] == _PANIC_SELECTOR:
            return f"panic code {abi_decode(['uint256'], data[4:])[0]:#x}"
    except (DecodingError, ValueError, OverflowError):
        return None
    return None


def revert_reason(exc: BaseException) -> str:
    """The contract's own revert message from a web3 error, without web3's prefixes."""
    if isinstance(exc, ContractLogicError) and exc.message:
        text = str(exc.message)
    elif isinstance(exc, Web3RPCError) and exc.rpc_response:
        text = str(exc.rpc_response.get("error", {}).get("message", exc))
    else:
        text = str(exc)
    for prefix in ("execution reverted: ", "execution reverted"):
        if text.startswith(prefix):
            text = text[len(prefix) :]
    return text.strip() or "execution reverted"


class TransactionRejected(ChainError):
    """A transaction was refused before execution (nonce, funds, gas, fee, chain id, encoding).

    It was neither mined nor journaled; the message says which rule it broke.
    """


class ExecutionReverted(ChainError):
    """A call or gas estimate reverted; `data` is the raw revert data, `reason` its decoded text."""

    def __init__(self, data: bytes) -> None:
        reason = decode_revert_reason(data)
        message = f"execution reverted: {reason}" if reason else "execution reverted"
        super().__init__(message, reason=reason)
        self.data = data


class ExecutionFailed(ChainError):
    """A call or gas estimate failed for a reason other than a revert (out of gas, bad opcode)."""


class StateUnavailable(ChainError):
    """A query asked for state at a block the engine no longer keeps (only the latest is kept)."""


class RpcError(Exception):
    """A JSON-RPC error response: `code`, `message` and optional hex `data`."""

    def __init__(self, code: int, message: str, data: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_json(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


class DeadlineExceeded(BaseException):
    """Raised inside a thread whose `Watchdog.limit` ran out.

    A `BaseException`, so that no `except Exception` on the way (py-evm has some) swallows it.
    """
