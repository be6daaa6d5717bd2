"""The cyclic garbage collector around a command's start-up and exit (the console entry point only).

Importing torch and its company creates a few hundred thousand objects, none of them garbage; Python's
cyclic collector walks all of them again and again while they are created, and once more when the process
ends. :func:`pause` (the first thing ``main()`` does) turns the collector off for the start-up;
:func:`resume` (when a command's long work begins: its first progress step, see
:mod:`classwise.cli._progress`) moves everything alive into the collector's permanent generation
(``gc.freeze``: the imported modules live as long as the process anyway) and turns it back on, so the long
work collects its own garbage as usual; :func:`before_exit` freezes again so that the exit does not walk
them once more. In-process callers (``run_cli`` in tests) never pause: nothing changes for them.

:func:`tune_allocator` (before ``pause``, before torch is imported) and :func:`tune_for_attacks` (before
``evaluate``'s attack loops) set the C allocator and torch's allocation up for the attack loops, whose peak
memory would otherwise grow with the number of images; in-process callers keep their own settings there
too (run.json's ``allocator`` says what applied).
"""

from __future__ import annotations

import gc
import os
from collections.abc import Mapping

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


# --- memory: the allocator settings of a console command ---------------------------------------------

#: ``CLASSWISE_ALLOCATOR``: ``tuned`` (the default) applies the settings below; ``system`` leaves glibc's
#: malloc and torch's allocation as they come (their own defaults, or what the environment sets).
ALLOCATOR_MODES = ("tuned", "system")
#: glibc's ``mallopt`` parameter number of M_MMAP_THRESHOLD (malloc.h).
M_MMAP_THRESHOLD = -3
#: Allocations of at least this many bytes get their own mmap and go back to the system when freed.
MMAP_THRESHOLD = 1 << 20
#: Environment a tuned process sets when the user has not: 2 MiB-aligned tensor buffers of >= 2 MiB on
#: transparent huge pages (torch's c10 allocator; 512x fewer page faults for the mmapped buffers).
TUNED_ENV = {"THP_MEM_ALLOC_ENABLE": "1"}
_IN_PROCESS = "as the calling process set it (not started as the classwise command)"
_state: dict[str, object] = {"mode": None, "allocator": _IN_PROCESS}


def tune_allocator() -> None:
    """The console command's allocator mode (``CLASSWISE_ALLOCATOR``) and, when ``tuned``, torch's huge
    pages (:data:`TUNED_ENV`, read when torch is imported: this runs first). A value the environment
    already gives is kept. See :func:`tune_for_attacks` and docs/output.md ("Memory")."""
    mode = os.environ.get("CLASSWISE_ALLOCATOR", "tuned").strip().lower() or "tuned"
    if mode not in ALLOCATOR_MODES:
        from classwise.errors import ClasswiseError

        raise ClasswiseError(f"CLASSWISE_ALLOCATOR={mode!r} is not an allocator mode; set it to tuned (the "
                             "default) or system (glibc's and torch's own defaults), or unset it")
    _state.clear()
    if mode == "system":
        _state.update(mode=mode, allocator="system (CLASSWISE_ALLOCATOR=system): glibc's and torch's own defaults")
        return
    _state.update(mode=mode, allocator="tuned", env={k: os.environ.setdefault(k, v) for k, v in TUNED_ENV.items()})


def tune_for_attacks() -> dict[str, object]:
    """Before a command's attack loops (``evaluate``): glibc's M_MMAP_THRESHOLD fixed at
    :data:`MMAP_THRESHOLD` in a tuned console process; returns what applied (run.json's ``allocator``).

    The attacks' early exits shrink their batches step by step, so the tensors freed and allocated take
    ever new sizes; glibc's dynamic mmap threshold (raised to the largest buffer freed, up to 32 MiB)
    keeps such buffers in the heap, where they fragment it: peak memory grew with the number of images.
    A fixed threshold (which also turns the dynamic adjustment off) maps every large buffer on its own
    and unmaps it when freed. Set after the start-up, whose imports it would only slow down; a threshold
    the environment gives (``MALLOC_MMAP_THRESHOLD_``, ``GLIBC_TUNABLES``) is kept. In-process callers
    and ``CLASSWISE_ALLOCATOR=system`` change nothing.
    """
    if _state["mode"] == "tuned" and "malloc" not in _state:
        _state["malloc"] = _fix_mmap_threshold(os.environ)
    return dict((k, v) for k, v in _state.items() if k != "mode")


def _fix_mmap_threshold(environ: Mapping[str, str]) -> str:
    """glibc's M_MMAP_THRESHOLD fixed at :data:`MMAP_THRESHOLD`; what was done, as run.json says it."""
    import ctypes

    if "MALLOC_MMAP_THRESHOLD_" in environ or "mmap_threshold" in environ.get("GLIBC_TUNABLES", ""):
        return "glibc mmap threshold left to the environment (MALLOC_MMAP_THRESHOLD_ or GLIBC_TUNABLES)"
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return "not glibc (no mallopt): the C allocator left as it is"
    if mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1:
        return "mallopt(M_MMAP_THRESHOLD) refused: the C allocator left as it is"
    return f"glibc mallopt M_MMAP_THRESHOLD={MMAP_THRESHOLD} (fixed: no dynamic threshold)"
