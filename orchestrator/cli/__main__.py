"""``python -m orchestrator.cli`` runs the ``fedtwin`` command line."""

import sys

from orchestrator.cli.main import main

sys.exit(main())
