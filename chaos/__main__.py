"""``python -m chaos``: the ``ichaos`` command line."""

import sys

from .cli import main

sys.exit(main())
