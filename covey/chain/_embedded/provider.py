"""A web3.py provider that answers from an `EmbeddedNode` in process: no HTTP, no JSON text."""

from __future__ import annotations

import itertools
from typing import Any, cast

from web3.providers import BaseProvider
from web3.types import RPCEndpoint, RPCResponse

from covey.chain._embedded.node import EmbeddedNode
from covey.chain._embedded.rpc import Dispatcher, RpcError


class EmbeddedProvider(BaseProvider):
    """`Web3(EmbeddedProvider(node))` talks to the embedded chain; safe to share across threads."""

    def __init__(self, node: EmbeddedNode) -> None:
        super().__init__()
        self.node = node
        self._dispatcher = Dispatcher(node)
        # next() on itertools.count is atomic under the GIL, so ids stay unique across threads.
        self._request_ids = itertools.count()

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        request_id = next(self._request_ids)
        try:
            result = self._dispatcher.dispatch(method, params)
        except RpcError as exc:
            return cast(RPCResponse, {"jsonrpc": "2.0", "id": request_id, "error": exc.to_json()})
        return cast(RPCResponse, {"jsonrpc": "2.0", "id": request_id, "result": result})

    def is_connected(self, show_traceback: bool = False) -> bool:
        return not self.node.closed
