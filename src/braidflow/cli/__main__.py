"""``python -m braidflow.cli``: the same as the ``braidflow`` command."""

import sys

from ._main import main

sys.exit(main())
