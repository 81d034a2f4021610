"""`python -m covey.cli` runs the `covey` command."""

from covey.cli.app import main

main()
