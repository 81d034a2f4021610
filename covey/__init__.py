"""Covey: a decentralised AI network on an EVM chain (token economy, Arena, Alliance, Gateway, Compute)."""

__version__ = "0.1.0"
