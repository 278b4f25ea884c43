"""fedtwin's driver side: config, run loop, recipes, Tune, cluster tools and the CLI.

Installed as ``fedtwin.orchestrator``; the supported Python API is re-exported by :mod:`fedtwin`.
"""
