"""Test scaffolding: a tiny paid API over the x402 layer: `/paid` costs a fixed price, `/free` reports settlement.

The gateway tests serve it in a thread or, to SIGKILL it, as a process from the repository root:
`python -m tests.x402_scaffolding.demo_app --rpc-url URL --token ADDR --pay-to ADDR [--mode batched --journal
DIR --batcher ADDR] --port N`, with the facilitator's private key in the environment variable
`COVEY_DEMO_FACILITATOR_KEY` (never on the command line, where `ps` shows it).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from covey.bounded_http import BoundedRequests
from covey.bounds import check_recursion_limit
from covey.chain import Chain
from covey.gateway.x402.facilitator_client import HttpFacilitatorClient, LocalFacilitatorClient
from covey.gateway.x402.interfaces import FacilitatorClient, Settlement, VerifiedPayment
from covey.gateway.x402.mechanisms.evm.exact import ExactEvmFacilitator, ExactEvmServer
from covey.gateway.x402.paywall import Paywall
from covey.gateway.x402.settlement import BatchedSettlement, StrictSettlement

DEMO_PRICE_ATOMIC = 10_000  # 0.01 of a 6-decimal USD token
FACILITATOR_KEY_ENV = "COVEY_DEMO_FACILITATOR_KEY"
MAX_BODY_BYTES = 64 * 1024


def create_demo_app(
    chain: Chain,
    token: str,
    pay_to: str,
    facilitator_account: LocalAccount,
    *,
    price_atomic: int = DEMO_PRICE_ATOMIC,
    mode: str = "strict",
    journal_dir: Path | None = None,
    batcher: str | None = None,
    facilitator_url: str | None = None,
    batch_size: int = 50,
    flush_interval_s: float = 1.0,
) -> FastAPI:
    """The demo API with its paywall, facilitator (in process, or remote at `facilitator_url`) and settlement."""
    check_recursion_limit()
    # Batched settlement settles later anyway: verify off chain, balances from a ledger (see the facilitator).
    facilitator = ExactEvmFacilitator(
        chain, facilitator_account, batcher=batcher, verification="ledger" if mode == "batched" else "onchain"
    )
    local = LocalFacilitatorClient(facilitator)
    client: FacilitatorClient = HttpFacilitatorClient(facilitator_url) if facilitator_url else local
    settlement: Settlement
    if mode == "strict":
        settlement = StrictSettlement(client)
    elif mode == "batched":
        if journal_dir is None:
            raise ValueError("batched settlement needs a journal directory")
        settlement = BatchedSettlement(
            facilitator, journal_dir, batch_size=batch_size, flush_interval_s=flush_interval_s
        )
    else:
        raise ValueError(f"unknown settlement mode {mode!r}: expected 'strict' or 'batched'")
    paywall = Paywall(ExactEvmServer(chain, token, pay_to), client, settlement)
    served = {"count": 0}

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await settlement.start()
        try:
            yield
        finally:
            await settlement.close()
            if isinstance(client, HttpFacilitatorClient):
                await client.aclose()
            local.close()

    app = FastAPI(title="Covey x402 demo", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.add_middleware(BoundedRequests, max_body_bytes=MAX_BODY_BYTES)  # type: ignore[arg-type]

    @app.api_route("/paid", methods=["GET", "POST"])
    async def paid(request: Request) -> Response:
        async def answer(payment: VerifiedPayment) -> Response:
            served["count"] += 1
            return JSONResponse({"message": "thank you for paying", "payer": payment.payer, "served": served["count"]})

        return await paywall.serve(request, price_atomic, answer, description="A paid demo answer")

    @app.get("/free")
    async def free() -> dict[str, object]:
        return {"message": "free of charge", "served": served["count"], "settlement": settlement.status()}

    app.state.paywall = paywall
    app.state.facilitator = facilitator
    return app


def main(argv: list[str] | None = None) -> None:
    """Serve the demo app with uvicorn on 127.0.0.1 (see the module docstring for the arguments)."""
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rpc-url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--pay-to", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=["strict", "batched"], default="strict")
    parser.add_argument("--journal", type=Path)
    parser.add_argument("--batcher")
    parser.add_argument("--price", type=int, default=DEMO_PRICE_ATOMIC)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--flush-interval", type=float, default=1.0)
    args = parser.parse_args(argv)
    key = os.environ.get(FACILITATOR_KEY_ENV)
    if not key:
        parser.error(f"set {FACILITATOR_KEY_ENV} to the facilitator's private key")
    app = create_demo_app(
        Chain.from_rpc(args.rpc_url),
        args.token,
        args.pay_to,
        Account.from_key(key),
        price_atomic=args.price,
        mode=args.mode,
        journal_dir=args.journal,
        batcher=args.batcher,
        batch_size=args.batch_size,
        flush_interval_s=args.flush_interval,
    )
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
