"""The cyclic garbage collector around a command's start-up and exit (the console entry point only).

Importing torch and its company creates a few hundred thousand objects, none of them garbage; Python's
cyclic collector walks all of them again and again while they are created, and once more when the process
ends. :func:`pause` (the first thing ``main()`` does) turns the collector off for the start-up;
:func:`resume` (when a command's long work begins: its first progress step, see
:mod:`classwise.cli._progress`) moves everything alive into the collector's permanent generation
(``gc.freeze``: the imported modules live as long as the process anyway) and turns it back on, so the long
work collects its own garbage as usual; :func:`before_exit` freezes again so that the exit does not walk
them once more. In-process callers (``run_cli`` in tests) never pause: nothing changes for them.
"""

from __future__ import annotations

import gc

_paused = False


def pause() -> None:
    """Collector off until :func:`resume` (console entry point only)."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def resume() -> None:
    """Collector back on, the start-up's objects frozen out of its way; a no-op unless :func:`pause` ran."""
    global _paused
    if _paused:
        gc.freeze()
        gc.enable()
        _paused = False


def before_exit() -> None:
    """Everything still alive frozen: the interpreter's last collection does not walk it (the process's
    memory goes back to the system at exit anyway)."""
    gc.freeze()
