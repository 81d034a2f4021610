"""An agent that pays for Covey inference per request: the `openai` client over the x402 httpx client.

    AGENT_PRIVATE_KEY=0x... python examples/agent.py --base-url http://127.0.0.1:8000 "Who art thou?"

The official `openai` client sends its requests through `x402HttpxClient`, which answers the gateway's 402
by signing an EIP-3009 authorisation with the `exact` EVM scheme registered for `eip155:<chainId>`, and
retries with the `PAYMENT-SIGNATURE` header; nothing else changes but `base_url`. The agent needs USD on
the chain (on a local chain: `covey wallet faucet`), no ETH: the facilitator pays the gas.

Spend controls: the official client (x402 2.25) pays only in well-known USDC deployments unless told
otherwise: for Covey's USD token it raises `NoMatchingRequirementsError` ("All payment requirements were
rejected by spend_controls") before signing anything.
`payment_client` opts the token in with `set_spend_controls`; add `"max_amount_per_payment"` (atomic units)
to the entry to cap what one request may cost.

Only the `exact` scheme is paid: the spec's `upto` scheme (pay for the tokens generated, up to a ceiling)
settles through Permit2 and the x402Permit2Proxy contract, which Covey's chain does not deploy yet.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path

from eth_account import Account
from openai import AsyncOpenAI
from x402 import x402Client
from x402.http.clients import x402HttpxClient
from x402.mechanisms.evm.exact import ExactEvmScheme
from x402.mechanisms.evm.signers import EthAccountSigner

KEY_ENV = "AGENT_PRIVATE_KEY"
LOCAL_CHAIN_ID = 31337


def payment_client(private_key: str, chain_id: int, token: str) -> x402Client:
    """The x402 client: the exact EVM scheme for this chain, and this chain's USD token allowed to spend.

    Its default spend controls allow only well-known USDC deployments, so a local token is opted in.
    """
    network = f"eip155:{chain_id}"
    client = x402Client()
    client.register(network, ExactEvmScheme(EthAccountSigner(Account.from_key(private_key))))
    client.set_spend_controls({"allowed_assets": [{"network": network, "asset": token}]})
    return client


def usd_token_from_manifest(chain_id: int) -> str:
    """The USD token of the Covey deployment recorded under COVEY_HOME for `chain_id`."""
    home = Path(os.environ.get("COVEY_HOME", Path.home() / ".covey"))
    manifest = home / "deployments" / f"{chain_id}.json"
    if not manifest.exists():
        raise SystemExit(f"no Covey deployment for chain {chain_id} at {manifest}: pass --token")
    return str(json.loads(manifest.read_text())["contracts"]["USDToken"])


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("question", nargs="*", default=["Who art thou?"])
    parser.add_argument("--base-url", default="http://127.0.0.1:8000", help="the gateway (without /v1)")
    parser.add_argument("--chain-id", type=int, default=LOCAL_CHAIN_ID)
    parser.add_argument("--token", help="the USD token's address (default: from the local deployment manifest)")
    parser.add_argument("--model", help="a model id (default: the first the gateway lists)")
    parser.add_argument("--max-tokens", type=int, default=60)
    parser.add_argument("--stream", action="store_true")
    args = parser.parse_args()
    key = os.environ.get(KEY_ENV)
    if not key:
        raise SystemExit(f"set {KEY_ENV} to the agent's private key")
    payments = payment_client(key, args.chain_id, args.token or usd_token_from_manifest(args.chain_id))

    async with x402HttpxClient(payments, timeout=120) as http:
        client = AsyncOpenAI(base_url=f"{args.base_url}/v1", api_key="paid-with-x402", http_client=http)
        models = (await client.models.list()).data  # free
        model = args.model or models[0].id
        pricing = next((m.model_extra or {} for m in models if m.id == model), {}).get("covey", {}).get("pricing", {})
        print(f"model {model}: {pricing.get('price_per_request_at_default_max_tokens')} USD a request")
        messages = [{"role": "user", "content": " ".join(args.question)}]
        if args.stream:
            stream = await client.chat.completions.create(
                model=model,
                messages=messages,
                max_tokens=args.max_tokens,
                stream=True,  # type: ignore[arg-type]
            )
            async for chunk in stream:
                if chunk.choices:
                    print(chunk.choices[0].delta.content or "", end="", flush=True)
            print()
            return
        raw = await client.chat.completions.with_raw_response.create(
            model=model,
            messages=messages,
            max_tokens=args.max_tokens,  # type: ignore[arg-type]
        )
        reply = raw.parse()
        print(reply.choices[0].message.content)
        print(f"usage: {reply.usage}; payment: {raw.headers.get('PAYMENT-RESPONSE', '(none)')[:60]}…")


if __name__ == "__main__":
    asyncio.run(main())
