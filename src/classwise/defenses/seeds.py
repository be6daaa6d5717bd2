"""``defend --phase train --seeds``: the training-phase sweep once per seed, each paired with an undefended
model trained with the same seed, and the seed-level tests (:func:`classwise.analysis.seeds.defense_over_seeds`).

Per seed ``s`` (into ``OUT/seed-s``, the layout of a single-seed ``defend`` run):

1. the validation split is carved with seed ``s``, as training with seed ``s`` carves it (a split
   carved with another seed would hold images the seed-``s`` models trained on);
2. the undefended model is the checkpoint's recipe (with ``--set``) retrained with seed ``s``
   (``OUT/seed-s/train/undefended``): the defense's gain is paired within the seed, so seed-to-seed
   variance of training enters the test instead of being fixed by one lucky or unlucky checkpoint;
3. :func:`classwise.defenses.sweep.run_train_sweep` trains every setting with seed ``s`` and evaluates it.

c* is held fixed over the seeds (found once on the checkpoint's own validation split, or given), so every
seed defends the same class; the test split (or its ``--limit`` subset) is the same for every seed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from classwise.data.base import ImageData
from classwise.defenses.sweep import UNDEFENDED, SweepResult, run_train_sweep, validation_split
from classwise.seedruns import seed_folder


def retrain_undefended(recipe: Mapping[str, Any], seed: int, out: Path, *, overrides: Mapping[str, Any], dev: Any,
                       data_root: str | Path | None) -> Any:
    """The checkpoint's recipe (no defense, ``overrides`` applied) trained with ``seed``; its best model."""
    from classwise.models import load_checkpoint
    from classwise.training.config import TrainConfig, apply_overrides
    from classwise.training.fit import fit

    known = set(TrainConfig.keys())
    base = {k: v for k, v in recipe.items() if k in known and v != "none"}
    cfg = apply_overrides(TrainConfig(), {**base, **dict(overrides), "seed": seed},
                          where="the checkpoint's recipe").validate()
    res = fit(cfg, out, device=dev, data_root=data_root)
    net, _ = load_checkpoint(res.best, device=dev)
    return net


def run_train_sweep_seeds(recipe: Mapping[str, Any], dataset: str, test_data: ImageData, attacks: Sequence[Any],
                          out: str | Path, *, seeds: Sequence[int], cstar: int, dev: Any,
                          overrides: Mapping[str, Any] | None = None, val_fraction: float | None = None,
                          data_root: str | Path | None = None, on_stage: Callable[[str], None] | None = None,
                          **sweep: Any) -> Iterator[tuple[int, SweepResult]]:
    """Yield ``(seed, SweepResult)`` per seed (module docstring); ``sweep`` goes to :func:`run_train_sweep`
    (``defense``, ``values``, ``key``, ``objective``, ``max_drop``, ``batch_size``)."""
    say = on_stage or (lambda s: None)
    ov = dict(overrides or {})
    for s in seeds:
        folder = Path(out) / seed_folder(s)
        recipe_s = {**recipe, "seed": s}
        say(f"seed {s}: undefended model, retrained with seed {s}")
        base = retrain_undefended(recipe, s, folder / "train" / UNDEFENDED, overrides=ov, dev=dev, data_root=data_root)
        val = validation_split(recipe_s, dataset, data_root=data_root, val_fraction=val_fraction)
        res = run_train_sweep(recipe_s, base, val, test_data, attacks, folder / "train", cstar=cstar,
                              overrides=ov, device=dev, seed=s, data_root=data_root, on_stage=say, **sweep)
        yield s, res
