"""The ``braidflow`` command: run a flow, draw it, list, resume and draw stored runs.

    braidflow run path/to/file.py:flow --shared '{"topic": "owls"}' --store runs.db
    braidflow runs --store runs.db
    braidflow resume RUN_ID [TARGET] --store runs.db --input '"yes"'
    braidflow timeline RUN_ID --store runs.db -o run.html
    braidflow graph path/to/file.py:flow

The final ``shared`` goes to stdout as JSON; everything else to stderr.
Exit codes: 0 done, 1 the run failed, 2 bad input (a one-line message;
``--debug`` shows the traceback), 3 the run waits for input, 130 stopped by
Ctrl-C. ``import braidflow`` never imports this package.

The parts: what it reads from its user and shows them (``_console``),
finding the flow a TARGET names (``_target``), the store and what the
command keeps in a run's metadata (``_store``), running and resuming
(``_running``), the commands that only show (``_views``), and the parser
with `main` (``_main``).
"""

from ._main import main

__all__ = ["main"]
