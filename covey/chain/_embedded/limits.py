"""The bounds of the embedded chain's JSON-RPC server, in one place, beside geth's defaults.

Everything a client sends is untrusted work. Each bound below names geth's default where geth has
one; ours differ only where a pure-Python EVM or a thread per connection needs it.

- `gas_cap` (geth `--rpc.gascap`, 50,000,000): gas of `eth_call`, and the ceiling of `eth_estimateGas`;
  a request asking for more is cut to it (as geth does). Same as geth, so clients written for geth
  behave the same. py-evm runs a tight loop at ~0.5-1M gas/s here (a 30M-gas loop transaction took
  27 s on the loaded 2-core machine), so the gas cap bounds a call's memory (quadratic memory gas:
  ~5 MB at 50M) and `evm_timeout_s` bounds its time.
- `evm_timeout_s` (geth `--rpc.evmtimeout`, 5 s): wall time of one call or estimate; past it the call is
  stopped (see `watchdog`) and answers "execution aborted (timeout = 5s)".
- `max_concurrent_calls` (geth: none): calls run on state views outside the node lock, each in its
  request's thread; they share one GIL, so this many maximal calls at once slow everyone else's
  requests in proportion. A call waits up to `evm_timeout_s` for a slot, then is refused.
- `allow_unprotected_txs` (geth `--rpc.allow-unprotected-txs`, off): legacy transactions without a
  chain id (not EIP-155) replay on any chain; refused over RPC unless allowed.
- `filter_ttl_s` (geth: 5 minutes): a filter nobody polled for this long is removed.
- `max_filters` (geth: none): live filters at once; past it `eth_new*Filter` is refused.
- `max_body_bytes` (geth: 5 MB): a larger body is answered 413 with a JSON-RPC error, unread.
- `max_batch` (geth `--rpc.batch-request-limit`, 1,000): longer batches get one error object.
- `idle_timeout_s` (geth: 30 s read, 120 s idle): a connection silent this long, between requests
  or in the middle of one, is closed; each open connection holds a thread.
- `max_connections` (geth: none): connections served at once (a thread each); past it new
  connections are not accepted until one closes: they wait in the listen backlog, in order, and
  idle holders of slots are closed after `idle_timeout_s` (refusing them instead raced with clients
  still sending their request, which saw a broken pipe rather than the refusal).
- `backlog` (Python's socketserver: 5): the listen queue for connections not yet accepted; past it
  the kernel drops new connection attempts and clients retry.
"""

from __future__ import annotations

from dataclasses import dataclass

from covey.errors import ConfigError

DEFAULT_RPC_GAS_CAP = 50_000_000
DEFAULT_EVM_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class RpcLimits:
    """How much work and state one JSON-RPC server of the embedded chain accepts (see the module docstring)."""

    gas_cap: int = DEFAULT_RPC_GAS_CAP
    evm_timeout_s: float = DEFAULT_EVM_TIMEOUT_S
    max_concurrent_calls: int = 4
    allow_unprotected_txs: bool = False
    filter_ttl_s: float = 300.0
    max_filters: int = 1000
    max_body_bytes: int = 5 * 1024 * 1024
    max_batch: int = 1000
    idle_timeout_s: float = 30.0
    max_connections: int = 256
    backlog: int = 128

    def __post_init__(self) -> None:
        if self.gas_cap < 21_000:
            raise ConfigError(f"the RPC gas cap must be at least 21000 (a plain transfer), got {self.gas_cap}")
        for name in ("evm_timeout_s", "filter_ttl_s", "idle_timeout_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        for name in (
            "max_concurrent_calls",
            "max_filters",
            "max_body_bytes",
            "max_batch",
            "max_connections",
            "backlog",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
