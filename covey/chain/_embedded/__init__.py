"""The embedded chain: a persistent, in-process EVM (py-evm) for web3.py and JSON-RPC clients.

node = open_node(data_dir)            # exclusive; ChainBusyError if another process has it
w3 = embedded_web3(node)              # in process (Web3 over EmbeddedProvider, fast send/receipt)
serve_rpc(node, port=8545)            # or over HTTP for other processes, within RpcLimits
node.close()
"""

from covey.chain._recursion import keeping_recursion_limit

with keeping_recursion_limit():
    import eth  # noqa: F401  # py-evm raises the recursion limit to 12,288 on import; put it back

from covey.chain._embedded.engine import (
    BASE_FEE_WEI,
    BLOCK_GAS_LIMIT,
    CHAIN_ID,
    DEV_BALANCE_WEI,
    DEV_MNEMONIC,
    dev_private_keys,
)
from covey.chain._embedded.limits import RpcLimits
from covey.chain._embedded.node import EmbeddedNode, open_node
from covey.chain._embedded.provider import EmbeddedProvider, embedded_web3
from covey.chain._embedded.server import ServerHandle, running_server_url, serve_rpc, start_server_thread

__all__ = [
    "BASE_FEE_WEI",
    "BLOCK_GAS_LIMIT",
    "CHAIN_ID",
    "DEV_BALANCE_WEI",
    "DEV_MNEMONIC",
    "EmbeddedNode",
    "EmbeddedProvider",
    "RpcLimits",
    "ServerHandle",
    "dev_private_keys",
    "embedded_web3",
    "open_node",
    "running_server_url",
    "serve_rpc",
    "start_server_thread",
]
