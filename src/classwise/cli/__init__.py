"""The ``classwise`` command line (Typer). Commands parse, call the library, write artifacts."""
