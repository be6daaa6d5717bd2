"""Names of evaluation settings, shared by outcomes, analysis, report and CLI (torch-free).

A run's attacks are columns named by their labels (``PGD-20``, ``FGSM`` ...). Two more names are not
attacks: ``clean`` (no attack) and :data:`WORST_CASE`, the point-wise worst case over all of a run's
attacks (a sample counts robust only if every attack failed on it).
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["CLEAN", "WORST_CASE", "budget_text", "eps_text", "headline_attack"]

CLEAN = "clean"
WORST_CASE = "worst-case"


def headline_attack(attacks: Sequence[str], want: str | None = None) -> str | None:
    """The setting that stands for a run: ``want`` when the run has it, else the worst case with two or
    more attacks, the only attack with one, None with none."""
    if want and (want in attacks or (want == WORST_CASE and len(attacks) > 1)):
        return want
    if not attacks:
        return None
    return WORST_CASE if len(attacks) > 1 else attacks[0]


def eps_text(eps: float) -> str:
    """A budget as labels write it: short decimals as written (``0.3``, ``0.5``, ``1``), multiples of
    1/255 as ``8/255``, anything else to 4 significant digits."""
    short = f"{eps:g}"
    if len(short) <= 5:
        return short
    k = eps * 255
    if abs(k - round(k)) < 1e-6 * max(1.0, abs(k)):
        return f"{round(k)}/255"
    return f"{eps:.4g}"


def budget_text(norm: str, eps: float) -> str:
    """``linf 8/255``, ``l2 0.5``: the suffix an attack's label carries when the attacks of a run differ
    in budget (:func:`classwise.attacks.label_run`)."""
    return f"{norm} {eps_text(eps)}"
