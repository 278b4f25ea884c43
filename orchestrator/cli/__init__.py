"""The ``fedtwin`` command line (``orchestrator.cli.main``); ``main`` is the console-script entry point."""

from orchestrator.cli.main import main

__all__ = ["main"]
