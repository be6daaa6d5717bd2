"""``classwise leaderboard``: several models evaluated class by class under one protocol.

* :mod:`classwise.leaderboard.models`: the MODEL arguments (a classwise checkpoint, ``file.py:factory``,
  ``robustbench:NAME``, each optionally ``NAME=SPEC``), their cheap checks and their loading;
* :mod:`classwise.leaderboard.chunks`: the resumable evaluation of one model, chunk by chunk, into its
  own run directory ``DIR/models/<slug>/``;
* :mod:`classwise.leaderboard.aggregate`: the per-class rows, the summary and ``leaderboard.json``
  (torch-free: recomputed from the per-sample outcomes, never from a new attack).

See docs/leaderboard.md.
"""
