"""``python -m fedtwin.orchestrator.cli`` runs the ``fedtwin`` command line."""

import sys

from fedtwin.orchestrator.cli.main import main

sys.exit(main())
