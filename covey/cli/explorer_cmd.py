"""`covey explorer serve`: the web dashboard of the network, indexing chain events while it serves."""

from __future__ import annotations

import typer

from covey.cli._output import console

app = typer.Typer(help="Explorer: a web dashboard of the network (read only).", no_args_is_help=True)


@app.callback()
def explorer() -> None:
    """Explorer: a web dashboard of the network (read only)."""
    # A callback keeps `serve` a subcommand even while it is the only one.


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (0.0.0.0 for every interface)."),
    port: int = typer.Option(8600, help="TCP port."),
    poll: float = typer.Option(1.0, help="Seconds between index polls of the chain."),
) -> None:
    """Serve the explorer: overview, Arena, Alliance, Gateway, Compute and accounts, updating live.

    It reads the chain the settings name (COVEY_RPC_URL, or the embedded chain in COVEY_HOME; run
    `covey chain serve` first to share the embedded chain with other processes) and keeps its event
    index in COVEY_HOME/explorer/index.sqlite.
    """
    import uvicorn

    from covey.explorer import create_app

    explorer_app = create_app(poll_interval_s=poll)
    console.print(f"Covey Explorer on http://{host}:{port} (Ctrl-C stops it)")
    uvicorn.run(explorer_app, host=host, port=port, log_level="warning")
