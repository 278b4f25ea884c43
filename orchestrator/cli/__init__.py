"""The ``fedtwin`` command line (``fedtwin.orchestrator.cli.main``); ``main`` is the console-script entry point."""

from fedtwin.orchestrator.cli.main import main

__all__ = ["main"]
