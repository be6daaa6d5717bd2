"""``classwise``: class-wise robustness analysis from the command line.

Each command parses its options, calls the library and writes a run directory; the logic lives in the
library. A :class:`~classwise.errors.ClasswiseError` is printed as one line (``error: ...``) and the
command exits with status 2. The app is built in :mod:`classwise.cli.app`, each command in its own
module; this module is the console script's entry point (``classwise.cli.main:main``).
"""

from __future__ import annotations

from classwise.cli._print import console, err_console
from classwise.cli.app import app, main, run_cli

__all__ = ["app", "console", "err_console", "main", "run_cli"]

if __name__ == "__main__":
    main()
