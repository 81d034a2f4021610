"""x402 v2 for Covey: message types, the HTTP header codec, the exact EVM scheme, paywall and settlement.

Layout after the reference SDK: `types`, `encoding`, `interfaces` and `errors` are scheme-free;
`mechanisms/evm/exact/{client,server,facilitator}.py` is the one scheme; `paywall`, `settlement`,
`facilitator_app` and `facilitator_client` are the HTTP and money-movement layers around it.
"""
