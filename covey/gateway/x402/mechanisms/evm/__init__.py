"""EVM payment mechanisms and their shared EIP-3009 / EIP-712 helpers."""
