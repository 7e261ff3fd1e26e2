"""``python -m convkit``: the same as the ``convkit`` command."""

import sys

from .cli import main

sys.exit(main())
