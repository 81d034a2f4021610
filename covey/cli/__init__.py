"""The `covey` command line: one typer app with a sub-app per capability."""

from covey.cli.app import app, main

__all__ = ["app", "main"]
