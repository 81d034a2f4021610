"""`covey chain ...`: deploy the contract suite, show chain facts, serve the embedded chain over JSON-RPC."""

from __future__ import annotations

import os
import sys

import typer

from covey.cli._context import open_context
from covey.cli._output import console, print_json, table
from covey.errors import ChainError

app = typer.Typer(help="The chain: deploy the contracts, show facts, serve the embedded chain.", no_args_is_help=True)

JSON_OPTION = typer.Option(False, "--json", help="Print the result as JSON.")


@app.command()
def deploy(
    as_json: bool = JSON_OPTION,
    from_: str = typer.Option("dev0", "--from", help="Deployer account (a wallet name or dev0..dev9)."),
) -> None:
    """Deploy the whole contract suite and write the manifest to COVEY_HOME/deployments/<chainId>.json."""
    from covey.chain.deploy import deploy_suite

    with open_context() as ctx:
        deployer = ctx.signer(from_)
        deployment = deploy_suite(ctx.chain, deployer)
        data = deployment.to_json()
        if as_json:
            print_json(data)
            return
        rows = [(name, address, data["blocks"].get(name, "")) for name, address in data["contracts"].items()]
        console.print(table(f"Covey suite on chain {ctx.chain.chain_id}", ["contract", "address", "block"], rows))


@app.command()
def info(as_json: bool = JSON_OPTION) -> None:
    """Show the backend, chain id, latest block and deployed addresses."""
    with open_context() as ctx:
        chain = ctx.chain
        try:
            contracts = ctx.deployment.contracts
        except ChainError:
            contracts = {}
        data = {
            "backend": chain.backend,
            "chainId": chain.chain_id,
            "block": chain.block_number(),
            "timestamp": chain.timestamp(),
            "rpcUrl": ctx.settings.rpc_url,
            "dataDir": str(chain.data_dir) if chain.data_dir else None,
            "contracts": contracts,
        }
        if as_json:
            print_json(data)
            return
        rows = [(key, value) for key, value in data.items() if key != "contracts"]
        rows += [(name, address) for name, address in contracts.items()]
        if not contracts:
            rows.append(("contracts", "none deployed: run `covey chain deploy`"))
        console.print(table("Chain", ["", "value"], rows))


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8545, help="TCP port."),
    durability: str | None = typer.Option(
        None,
        help="When a transaction is confirmed: write (survives SIGKILL; default, or COVEY_CHAIN_DURABILITY), "
        "fsync (also survives a power cut, slower) or none.",
    ),
    rpc_gas_cap: int | None = typer.Option(
        None,
        "--rpc-gas-cap",
        help="Gas of one eth_call / eth_estimateGas; more is cut to it (default 50000000 as geth, "
        "or COVEY_CHAIN_RPC_GAS_CAP).",
    ),
    rpc_evm_timeout: float | None = typer.Option(
        None,
        "--rpc-evm-timeout",
        help="Seconds one eth_call / eth_estimateGas may run before it is stopped (default 5 as geth, "
        "or COVEY_CHAIN_RPC_EVM_TIMEOUT_S).",
    ),
    allow_unprotected_txs: bool = typer.Option(
        False,
        "--allow-unprotected-txs",
        help="Accept legacy transactions without a chain id (not EIP-155), which replay on any chain.",
    ),
) -> None:
    """Serve the embedded chain as Ethereum JSON-RPC so several processes share it."""
    from covey.chain._embedded import open_node, serve_rpc
    from covey.chain._embedded.limits import RpcLimits

    with open_context() as ctx:
        settings = ctx.settings
        if settings.rpc_url:
            raise ChainError("COVEY_RPC_URL is set: `covey chain serve` serves the embedded chain only")
        limits = RpcLimits(
            gas_cap=settings.chain_rpc_gas_cap if rpc_gas_cap is None else rpc_gas_cap,
            evm_timeout_s=settings.chain_rpc_evm_timeout_s if rpc_evm_timeout is None else rpc_evm_timeout,
            allow_unprotected_txs=allow_unprotected_txs,
        )
        node = open_node(settings.subdir("chain"), durability=durability or settings.chain_durability)  # type: ignore[arg-type]
        try:
            console.print(f"serving the embedded chain on http://{host}:{port} (Ctrl-C to stop)")
            serve_rpc(node, host=host, port=port, limits=limits)
        finally:
            # Stop within ~1 s of SIGTERM even while a long transaction runs (py-evm may take seconds):
            # it was journaled before it started, so the next start replays it. Calls hold no lock.
            if not node.close(wait_s=0.5):
                console.print("a transaction was still running: it is in the journal and replays on the next start")
                # Its thread still holds the GIL for slices; winding down the interpreter around it costs
                # ~0.5 s more, and nothing is left to flush (the journal is written with os.write).
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(0)
