"""Eps grids: every attack of a run at every eps of a list, paired (same samples, same seeds).

``classwise evaluate --eps 1/255,2/255,4/255,8/255 -a pgd -a fgsm`` binds each attack once per eps
(:func:`expand_grid`; its label carries the budget, ``PGD-20 linf 2/255``) and runs one
:func:`~classwise.evaluation.evaluate` per eps (:func:`evaluate_grid`): within one call the attacks keep
their positions, so attack i draws from the generators of ``(seed, i, batch)`` at every eps and the
columns are paired. The curves and smallest breaking eps are computed by
:mod:`classwise.analysis.eps_curve`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from classwise.analysis.eps_curve import GridColumn
from classwise.analysis.labels import budget_text
from classwise.attacks import BoundAttack, bind_run, build_attack
from classwise.core import AttackSpec, parse_number
from classwise.errors import ClasswiseError
from classwise.outcomes import Outcomes

__all__ = ["EpsGrid", "evaluate_grid", "expand_grid", "grid_columns", "parse_eps_grid"]


def parse_eps_grid(text: str | None) -> list[float] | None:
    """The eps values of ``--eps A,B,...`` (two or more, distinct, as numbers such as 8/255), ascending;
    None for a single value (or none): that keeps its meaning, the default eps of specs that give none."""
    if text is None or "," not in str(text):
        return None
    items = [s.strip() for s in str(text).split(",")]
    if any(not s for s in items):
        raise ClasswiseError(f"--eps {text!r} has an empty entry; write a comma list like 1/255,2/255,4/255")
    values = [parse_number(s, name="--eps") for s in items]
    if len(values) < 2:
        return None
    if len(set(values)) != len(values):
        dup = next(s for i, s in enumerate(items) if values[i] in values[:i])
        raise ClasswiseError(f"--eps {text!r} lists {dup} twice; give each eps once")
    return sorted(values)


@dataclass
class EpsGrid:
    """The bound attacks of a grid (eps-major: all attacks at the first eps, then the next) and what each
    of them is (:class:`~classwise.analysis.eps_curve.GridColumn`)."""

    values: list[float]
    attacks: list[BoundAttack]
    columns: list[GridColumn]

    def at(self, eps: float) -> list[BoundAttack]:
        return [a for a, c in zip(self.attacks, self.columns, strict=True) if c.eps == eps]


def expand_grid(specs: Sequence[AttackSpec], values: Sequence[float]) -> EpsGrid:
    """Each spec bound at each eps of ``values``, labelled ``ATTACK NORM EPS`` where ATTACK is the spec's
    ``label=`` or its registry label. A spec that sets eps itself is refused (the grid sets it)."""
    for s in specs:
        if "eps" in s.params:
            raise ClasswiseError(f"attack {str(s)!r} sets eps, and --eps gives a grid; leave eps out of the spec "
                                 "(the grid sets it) or pass a single --eps")
    attacks, columns = [], []
    for eps in values:
        for s in specs:
            a = build_attack(s, defaults={"eps": eps})
            if "eps" not in a.kwargs:
                raise ClasswiseError(f"attack {s.name!r} takes no eps, so it cannot run on an --eps grid; "
                                     "run it without the grid")
            base = a.label
            label = f"{base} {budget_text(a.norm.value, a.eps)}"
            attacks.append(BoundAttack(AttackSpec(a.spec.name, dict(a.spec.params), label), a.fn, a.kwargs))
            columns.append(GridColumn(base, a.eps, a.norm.value, label))
    bind_run(attacks)  # duplicate labels (two specs with one name) are refused here, before any loading
    return EpsGrid(list(values), attacks, columns)


def evaluate_grid(grid: EpsGrid, run_one: Callable[[list[BoundAttack]], Outcomes]) -> Outcomes:
    """One ``run_one(attacks)`` (an :func:`~classwise.evaluation.evaluate` call) per eps, merged into
    one :class:`Outcomes` with a column per (attack, eps); clean predictions must agree across calls."""
    parts = [run_one(grid.at(eps)) for eps in grid.values]
    first = parts[0]
    for eps, o in zip(grid.values[1:], parts[1:], strict=True):
        if not (np.array_equal(o.clean_pred, first.clean_pred) and np.array_equal(o.labels, first.labels)):
            raise ClasswiseError(f"clean predictions changed between grid points (at eps {eps:g}); the model is not "
                                 "deterministic on this device, so the eps columns cannot be paired")
    adv = {k: v for o in parts for k, v in o.adv_pred.items()}
    specs = {k: v for o in parts for k, v in o.specs.items()}
    return Outcomes(first.labels, first.clean_pred, adv, list(first.class_names), first.index, specs,
                    first.dataset, first.split, first.mode)


def grid_columns(bound: Sequence[BoundAttack]) -> list[GridColumn]:
    """The :class:`GridColumn` of each attack :func:`expand_grid` bound (read back from its label)."""
    out = []
    for a in bound:
        suffix = " " + budget_text(a.norm.value, a.eps)
        if not a.label.endswith(suffix):
            raise ValueError(f"attack {a.label!r} was not bound by expand_grid")
        out.append(GridColumn(a.label[: -len(suffix)], a.eps, a.norm.value, a.label))
    return out
