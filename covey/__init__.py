"""Covey: a decentralised AI network on an EVM chain (token economy, Arena, Alliance, Gateway, Compute).

Importing covey changes no global state; what the chain needs from the process (the fast keccak
backend) it sets when a chain is opened (`covey.chain._keccak`).
"""

__version__ = "0.1.0"
