"""``python -m CLADE`` runs the ``clade`` command."""

import sys

from .cli.main import main

sys.exit(main())
