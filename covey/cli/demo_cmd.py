"""`covey demo`: the full-cycle story on the embedded chain (or any local chain)."""

from __future__ import annotations

import typer

from covey.cli._output import console, print_json
from covey.config import get_settings
from covey.errors import ValidationError


def demo(
    stages: str = typer.Option("all", help="Comma-separated stages to run (default: all, in order)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON at the end."),
) -> None:
    """Run the full-cycle demo: the token economy, then each capability's stage."""
    from covey.demo import run_demo
    from covey.demo.stages import STAGES

    chosen = list(STAGES)
    if stages != "all":
        names = [name.strip() for name in stages.split(",") if name.strip()]
        known = {stage.name: stage for stage in STAGES}
        unknown = [name for name in names if name not in known]
        if unknown:
            raise ValidationError(f"unknown stage(s) {', '.join(unknown)}: choose from {', '.join(known)}")
        chosen = [known[name] for name in names]
    summary = run_demo(chosen, get_settings(), console)
    if as_json:
        print_json(summary)
