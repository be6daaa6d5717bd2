"""E2b, the remove-a-class experiment (Tian et al. 2021, claim 2).

Take the test examples of a source class S that the attack pushed into a target class T. Retrain the
same recipe without class T and attack those examples again (also with a stronger attack): if T was
what made them vulnerable, many now have no adversarial counterpart inside the eps-ball and stay S.
As a control, retrain without the class C that receives the most of S's broken examples after T (the
strongest control: removing any class changes the model, so the control should be a class that also
attracts S's examples). Target and control are measured on the same examples with the same attacks, and
compared per example with the exact McNemar test (a binomial test on the discordant examples).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from classwise.analysis import wilson_interval
from classwise.analysis.paired import ALPHA, mcnemar_exact
from classwise.attacks import build_attack, predictions
from classwise.core import resolve_device
from classwise.data import load_dataset
from classwise.errors import ClasswiseError
from classwise.io import atomic_write_json
from classwise.models import check_loadable, load_checkpoint
from classwise.outcomes import Outcomes
from classwise.runs import RunDir, read_config
from classwise.study.common import class_index
from classwise.training.config import TrainConfig, apply_overrides
from classwise.training.fit import FitCallbacks, fit

log = logging.getLogger(__name__)


@dataclass
class RemovalRow:
    model: str  # "original", "without T", "without C"
    removed: int | None
    attack: str
    n: int
    robust: int  # still classified as the source class after the attack
    share: float
    lo: float
    hi: float
    top_target: str = ""  # where the broken ones go now
    still_source: list[int] = field(default_factory=list)  # per example (aligned with indices): 1 = still S

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class RemovalResult:
    source: int
    target: int
    control: int
    class_names: list[str]
    indices: list[int]  # test-split positions of the S->T examples
    rows: list[RemovalRow] = field(default_factory=list)
    control_rule: str = ""  # how the control was chosen (or "given")
    control_note: str = ""  # set when the rule fell back (no broken example went elsewhere than T)
    source_flows: list[int] = field(default_factory=list)  # S's broken examples per receiving class
    tests: list[dict[str, Any]] = field(default_factory=list)  # target vs control, one per attack

    def to_dict(self) -> dict[str, Any]:
        n = self.class_names
        return {"source": self.source, "source_name": n[self.source], "target": self.target,
                "target_name": n[self.target], "control": self.control, "control_name": n[self.control],
                "control_rule": self.control_rule, "control_note": self.control_note,
                "source_flows": self.source_flows,
                "n_examples": len(self.indices), "indices": self.indices, "rows": [r.to_dict() for r in self.rows],
                "tests": self.tests}


def _run_config(run: Path) -> TrainConfig:
    path = run / "config.toml"
    if not path.is_file():
        raise ClasswiseError(f"{run} has no config.toml; --run must be a directory written by `classwise train`")
    raw = read_config(path)
    if "train" in raw and isinstance(raw["train"], dict):  # a demo run keeps the training config in [train]
        raw = raw["train"]
    keys = set(TrainConfig.keys())
    return apply_overrides(TrainConfig(), {k: v for k, v in raw.items() if k in keys}, where=str(path)).validate()


CONTROL_RULE = ("the class receiving the most of the source's broken test examples (clean-correct, attacked "
                "into another class) after the target; ties go to the lower index")
PAIRED_TEST = ("exact McNemar: two-sided binomial test of the examples still classified as the source without the "
               "target but not without the control, against the reverse (the same examples and attack)")


def broken_flows(outcomes: Outcomes, attack: str, source: int) -> np.ndarray:
    """(K,) how many of the source's clean-correct examples ``attack`` sent to each class (a prediction of
    -1, no valid class, goes to none)."""
    y, p, c = outcomes.labels, outcomes.pred(attack), outcomes.clean_pred
    broken = (y == source) & (c == source) & (p != source) & (p >= 0)
    return np.bincount(p[broken], minlength=outcomes.num_classes)[:outcomes.num_classes]


def pick_control(outcomes: Outcomes, attack: str, source: int, target: int) -> tuple[int, str]:
    """The control class of :data:`CONTROL_RULE` and a note, empty unless the rule fell back.

    When no broken example of S went to a class other than T, every candidate received none: the control
    falls back to the lowest index other than S and T, and the note says so (a weak control)."""
    counts = broken_flows(outcomes, attack, source).astype(float)
    counts[[source, target]] = -1
    if counts.max() < 0:
        raise ClasswiseError("a control needs a third class besides the source and the target")
    best = int(np.argmax(counts))  # the first maximum: ties go to the lower index
    if counts[best] > 0:
        return best, ""
    names = outcomes.class_names
    return best, (f"no broken example of {names[source]!r} went to a class other than {names[target]!r} under "
                  f"{attack}; the control falls back to the lowest other class, {names[best]!r}, which received "
                  "none of them (a weak control)")


def paired_removal_tests(rows: list[RemovalRow], target: int, control: int) -> list[dict[str, Any]]:
    """Per attack, the model without the target against the model without the control on the same examples
    (:data:`PAIRED_TEST`): the discordant counts, the exact McNemar p and whether it is significant."""
    by = {(r.removed, r.attack): r for r in rows}
    out = []
    for (removed, attack), rt in by.items():
        rc = by.get((control, attack))
        if removed != target or rc is None:
            continue
        t, c = np.asarray(rt.still_source, bool), np.asarray(rc.still_source, bool)
        t_only, c_only = int((t & ~c).sum()), int((~t & c).sum())
        p = mcnemar_exact(t_only, c_only)
        out.append({"attack": attack, "n": len(t), "target_robust": int(t.sum()), "control_robust": int(c.sum()),
                    "target_only": t_only, "control_only": c_only, "both": int((t & c).sum()),
                    "neither": int((~t & ~c).sum()), "p_value": p, "test": PAIRED_TEST,
                    "significant": bool(p < ALPHA and t_only != c_only),
                    "direction": "target" if t_only > c_only else "control" if c_only > t_only else "none"})
    return out


def remove_class(
    run: str | Path,
    *,
    source: str | int,
    target: str | int,
    control: str | int | None = None,
    out: str | Path | None = None,
    epochs: int | None = None,
    attack: str | None = None,
    strong_attack: str | None = None,
    device: str | torch.device = "auto",
    data_root: str | Path | None = None,
    seed: int = 0,
    callbacks: FitCallbacks | None = None,
    train_seed: int | None = None,
) -> RemovalResult:
    """Run E2b on a trained run; returns the shares of S->T examples still robust per model and attack.
    ``train_seed``: retrain with this seed instead of the run's (``remove-class --seeds``)."""
    run = Path(run)
    dev = resolve_device(device)
    cfg = _run_config(run)
    check_loadable(run / "checkpoints" / "best.safetensors")  # before any work; never imports a model file
    outcomes = Outcomes.load(run / "outcomes.npz")
    if not outcomes.attacks:
        raise ClasswiseError(f"{run}/outcomes.npz holds no attack; evaluate the run with an attack first")
    attack_label = outcomes.attacks[0]
    names = outcomes.class_names
    s = class_index(source, names, what="source class")
    t = class_index(target, names, what="target class")
    if s == t:
        raise ClasswiseError("source and target must be different classes")
    if control is not None:
        c, rule, note = class_index(control, names, what="control class"), "given (--control)", ""
    else:
        (c, note), rule = pick_control(outcomes, attack_label, s, t), CONTROL_RULE
        if note:
            log.warning("%s", note)
    if c in (s, t):
        raise ClasswiseError("the control class must differ from source and target")
    positions = _examples(outcomes, attack_label, s, t)
    test = load_dataset(cfg.dataset, outcomes.split, root=data_root, image_size=cfg.image_size).subset(
        torch.as_tensor(positions))
    x, y_src = test.tensors(dev)
    attacks = _attacks(outcomes.specs.get(attack_label) or {}, cfg, attack, strong_attack)
    out = Path(out) if out else run / f"remove-{s}-{t}"
    out_dir = RunDir(out).open()  # locked while this writes it; run.json says when it is complete
    result = RemovalResult(s, t, c, list(names), [int(i) for i in positions], control_rule=rule, control_note=note,
                           source_flows=[int(v) for v in broken_flows(outcomes, attack_label, s)])

    def measure(label: str, model: torch.nn.Module, removed: int | None) -> None:
        result.rows.extend(_measure(label, model, removed, x, y_src, attacks, s, names, seed))

    original, _ = load_checkpoint(run / "checkpoints" / "best.safetensors", device=dev)
    measure("original", original, None)
    for removed, tag in ((t, "target"), (c, "control")):
        sub = out / f"without-{removed}"
        rcfg = dataclasses.replace(cfg, exclude_classes=[removed], epochs=epochs or cfg.epochs,
                                   seed=cfg.seed if train_seed is None else train_seed).validate()
        log.info("retraining without class %s (%s) into %s", names[removed], tag, sub)
        res = fit(rcfg, sub, device=dev, data_root=data_root, callbacks=callbacks)
        model, _ = load_checkpoint(res.best, device=dev)
        measure(f"without {names[removed]} ({tag})", model, removed)
    result.tests = paired_removal_tests(result.rows, t, c)
    atomic_write_json(out / "remove_class.json", result.to_dict())
    out_dir.finish()
    return result


def _examples(outcomes: Outcomes, attack_label: str, s: int, t: int) -> np.ndarray:
    """Test-split positions of the examples of S, correct clean, that ``attack_label`` pushed into T."""
    names = outcomes.class_names
    y, cp, ap = outcomes.labels, outcomes.clean_pred, outcomes.pred(attack_label)
    sel = np.flatnonzero((y == s) & (cp == s) & (ap == t))
    if len(sel) == 0:
        raise ClasswiseError(f"no test example of {names[s]!r} was attacked into {names[t]!r} under {attack_label}; "
                             "pick a target from the run's confusion flows (metrics.json: dominant_target)")
    assert outcomes.index is not None  # set on construction
    return outcomes.index[sel]


def _attacks(spec: dict[str, Any], cfg: TrainConfig, attack: str | None, strong_attack: str | None) -> list[Any]:
    """The attack of the run's outcomes (or ``attack``) and a stronger one (or ``strong_attack``)."""
    weak = build_attack(attack) if attack else build_attack(_spec_str(spec))
    if strong_attack:
        strong = build_attack(strong_attack)
    else:  # 5x the steps (at least 100) and 3 restarts of PGD at the same budget
        sp = spec.get("params", {})
        strong = build_attack(f"pgd:eps={sp.get('eps', cfg.eps)},norm={sp.get('norm', cfg.norm)},"
                              f"steps={max(100, 5 * int(sp.get('steps', 20)))},restarts=3")
    return [weak, strong]


def _measure(label: str, model: torch.nn.Module, removed: int | None, x: torch.Tensor, y_src: torch.Tensor,
             attacks: list[Any], s: int, names: list[str], seed: int) -> list[RemovalRow]:
    """One row per attack: how many of the S->T examples ``model`` (trained without ``removed``) still
    classifies as S, with a Wilson interval, and where the broken ones go now."""
    keep = [k for k in range(len(names)) if k != removed]
    new_src = keep.index(s)
    yy = torch.full_like(y_src, new_src)
    rows = []
    for a in attacks:
        g = torch.Generator().manual_seed(seed)
        x_adv = a(model, x, yy, generator=g)
        with torch.no_grad():
            pred = predictions(model(x_adv)).cpu().numpy()  # -1: non-finite output, wrong
        ok = int((pred == new_src).sum())
        lo, hi = wilson_interval(np.array([ok]), np.array([len(pred)]))
        others = pred[(pred != new_src) & (pred >= 0)]
        top = names[keep[int(np.bincount(others).argmax())]] if len(others) else ""
        rows.append(RemovalRow(label, removed, a.label, len(pred), ok, ok / len(pred), float(lo[0]),
                               float(hi[0]), top, [int(v) for v in pred == new_src]))
    return rows


def _spec_str(spec: dict[str, Any]) -> str:
    params = dict(spec.get("params", {}))
    params.pop("early_stop", None)
    return spec.get("name", "pgd") + ":" + ",".join(f"{k}={v}" for k, v in params.items())
