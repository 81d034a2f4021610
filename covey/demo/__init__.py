"""The full-cycle demo: one story through every capability, each adding its stage."""

from covey.demo.runner import DemoContext, Stage, run_demo

__all__ = ["DemoContext", "Stage", "run_demo"]
