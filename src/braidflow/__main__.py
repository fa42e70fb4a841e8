"""``python -m braidflow``: the same as the ``braidflow`` command."""

import sys

from .cli import main

sys.exit(main())
