"""``python -m astropix_hil`` runs the ``apx-hil`` command line."""

import sys

from .cli import main

sys.exit(main())
