"""``classwise defend``: defend the most vulnerable class c* (inference-phase decision rules or
training-phase sweeps) and report the trade-off over a sweep, with intervals."""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from classwise.cli import _common as C
from classwise.cli._print import console, err_console, info, print_files
from classwise.cli._progress import configure_output
from classwise.errors import ClasswiseError


class DefendPhase(str, Enum):
    inference = "inference"
    train = "train"


def defend(
    checkpoint: Annotated[Path, typer.Option(help="The undefended model: a classwise checkpoint (its sidecar "
                                                  "names the dataset and the recipe the validation split comes "
                                                  "from) or a run directory.")],
    phase: Annotated[DefendPhase, typer.Option(help="inference: change the decision rule of the checkpoint; "
                                                    "train: retrain its recipe with a training defense.")] = DefendPhase.inference,
    rule: Annotated[str, typer.Option(help="inference: bias (add b to logit c*) or threshold (predict c* "
                                           "when p(c*) >= tau).")] = "bias",
    bias: Annotated[str | None, typer.Option(help="rule bias: the values of b to sweep.")] = None,
    tau: Annotated[str | None, typer.Option(help="rule threshold: the values of tau in (0, 1] to sweep "
                                                 "(1 = undefended).")] = None,
    defense: Annotated[str | None, typer.Option(help="train: the training defense (fixed, adaptive, frl).")] = None,
    weight: Annotated[str | None, typer.Option(help="train: the values to sweep of the defense's key "
                                                    "(fixed: defense_weight, adaptive: defense_tau, frl: frl_rate).")] = None,
    key: Annotated[str | None, typer.Option(help="train: sweep this recipe key instead.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="train: override any recipe key (repeatable), "
                                                              "e.g. --set epochs=15.")] = None,
    cls: Annotated[int | None, typer.Option("--class", help="Force c* (default: the least robust class of the "
                                                            "undefended model on the validation split).")] = None,
    attack: Annotated[list[str] | None, typer.Option(
        "--attack", "-a", help="Attack spec, repeatable (default: PGD-20 and CW-20 at the checkpoint's eps). "
                               "Attacks see the defended model (adaptive).")] = None,
    eps: Annotated[str | None, typer.Option(help="Default eps for attack specs that give none.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Dataset (default: the checkpoint's).")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Test on a class-stratified subset of N images.")] = None,
    val_fraction: Annotated[float | None, typer.Option(help="Carve this share of the training set as the "
                                                            "validation split (default: the checkpoint recipe's).")] = None,
    objective: Annotated[str, typer.Option(help="Choose the setting on validation by: worst (worst-class robust "
                                                "accuracy), cstar or average.")] = "worst",
    max_drop: Annotated[float, typer.Option(help="... among settings whose validation average robust drop against "
                                                 "the undefended model stays within this many points at the UPPER "
                                                 "bound of its paired bootstrap 95% interval (not the point "
                                                 "estimate).")] = 2.0,
    transfer: Annotated[bool, typer.Option(help="inference: also report the NON-adaptive contrast (attacks "
                                                "crafted on the undefended model).")] = True,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per batch.")] = 256,
    data_root: C.DataRootShort = None,
    out: Annotated[Path | None, typer.Option(help="Run directory (default: runs/defend-DATASET-TIMESTAMP).")] = None,
    device: C.Device = "auto",
    seed: Annotated[int, typer.Option(help="Seed of the attacks (and of training, with --phase train).")] = 0,
    seeds: Annotated[str | None, typer.Option(help="train: run the sweep once per seed (e.g. 0,1,2) into "
                                                   "OUT/seed-N, each against the recipe retrained undefended with "
                                                   "that seed; OUT/aggregate.json has the seed-level t interval "
                                                   "of the chosen setting's gain. Not with --seed.")] = None,
    quiet: C.Quiet = False,
) -> None:
    """Defend the most vulnerable class c* and report the trade-off over a sweep, with intervals.

    c* and the setting to deploy are chosen on a validation split of the training set (the one the
    checkpoint's training carved), never on the test set. Every setting is evaluated on the test set with
    attacks on the defended model (adaptive); --transfer adds the non-adaptive contrast. Each setting's
    worst-class gain and average robust drop against the undefended model are paired by sample (paired
    bootstrap 95% interval, exact McNemar p); "significant" needs the interval to exclude 0, p < 0.05 and
    both to agree in sign. Writes
    defend.json, the chosen setting's metrics.json/outcomes.npz, settings/*/outcomes.npz (for
    `classwise compare`), plots/tradeoff.png; `classwise report RUN` renders it.
    """
    run_defend(DefendArgs(**locals()))


@dataclass
class DefendArgs:
    """defend's options, as typed."""

    checkpoint: Path
    phase: DefendPhase
    rule: str
    bias: str | None
    tau: str | None
    defense: str | None
    weight: str | None
    key: str | None
    set_: list[str] | None
    cls: int | None
    attack: list[str] | None
    eps: str | None
    dataset: str | None
    limit: int | None
    val_fraction: float | None
    objective: str
    max_drop: float
    transfer: bool
    batch_size: int
    data_root: Path | None
    out: Path | None
    device: str
    seed: int
    seeds: str | None = None
    quiet: bool = False


def _float_list(text: str, what: str) -> list[float]:
    from classwise.core import parse_number

    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ClasswiseError(f"{what}: give comma-separated numbers, e.g. 0,0.5,1,2,4")
    return [float(parse_number(t, name=what)) for t in items]


def _inference_values(a: DefendArgs) -> list[float]:
    """The inference phase's sweep (--bias or --tau), after its flags are checked."""
    if a.defense or a.weight or a.key or a.set_:
        raise ClasswiseError("--defense/--weight/--key/--set belong to --phase train; the inference phase "
                             "sweeps --bias (rule bias) or --tau (rule threshold)")
    if a.rule not in ("bias", "threshold"):
        raise ClasswiseError(f"unknown --rule {a.rule!r}; choose bias or threshold")
    if a.rule == "bias" and a.tau is not None:
        raise ClasswiseError("--tau is the sweep of --rule threshold; with --rule bias sweep --bias")
    if a.rule == "threshold" and a.bias is not None:
        raise ClasswiseError("--bias is the sweep of --rule bias; with --rule threshold sweep --tau")
    if a.rule == "bias":
        return _float_list(a.bias or "0,0.5,1,2,4", "--bias")
    values = _float_list(a.tau or "1,0.4,0.3,0.2,0.1", "--tau")
    if any(not 0 < v <= 1 for v in values):
        raise ClasswiseError(f"--tau values must lie in (0, 1], got {a.tau}")
    return values


def _train_values(a: DefendArgs) -> list[float]:
    """The training phase's sweep (--weight), after its flags are checked."""
    if a.bias is not None or a.tau is not None or a.rule != "bias":
        raise ClasswiseError("--rule/--bias/--tau belong to --phase inference; --phase train sweeps "
                             "--defense NAME --weight W1,W2,...")
    if not a.defense:
        raise ClasswiseError("--phase train needs --defense NAME (fixed, adaptive or frl) and --weight W1,W2,...")
    return _float_list(a.weight or "", "--weight")


@dataclass
class _Checked:
    """What the options resolve to before anything is loaded."""

    values: list[float]
    overrides: dict[str, str]
    dev: Any
    ds_name: str
    recipe: dict | None
    bound: list


def _check(a: DefendArgs) -> _Checked:
    from classwise.defenses.tradeoff import OBJECTIVES

    if a.objective not in OBJECTIVES:
        raise ClasswiseError(f"unknown --objective {a.objective!r}; choose one of: {', '.join(OBJECTIVES)}")
    if not 0 <= a.max_drop <= 100:
        raise ClasswiseError(f"--max-drop is in accuracy points and must lie in [0, 100], got {a.max_drop:g}")
    values = _inference_values(a) if a.phase is DefendPhase.inference else _train_values(a)
    overrides = C.parse_set(a.set_)
    dev = C.check_device(a.device)
    sidecar = C.check_checkpoint(a.checkpoint) or {}
    ds_name = C.checkpoint_dataset(a.dataset, sidecar, a.checkpoint)
    C.check_class(a.cls, ds_name)
    recipe = sidecar.get("recipe")
    default_eps = a.eps or C.sidecar_eps(sidecar) or (recipe or {}).get("eps")
    bound = C.build_attacks(a.attack, default_eps=default_eps, default_specs=C.default_attacks("pgd", "cw"),
                            no_attack_hint="no attack given and the checkpoint names no eps; pass --attack SPEC "
                                           "(e.g. --attack pgd:eps=0.2,steps=20) or --eps")
    if a.phase is DefendPhase.train:
        assert a.defense is not None  # _train_values checked it
        C.check_train_sweep(recipe, ds_name, defense=a.defense, key=a.key, values=values, overrides=overrides)
    if a.val_fraction is not None and not 0 <= a.val_fraction < 1:
        raise ClasswiseError(f"--val-fraction must lie in [0, 1), got {a.val_fraction:g}")
    C.check_data(ds_name, ["train", "test"], a.data_root)
    return _Checked(values, overrides, dev, ds_name, recipe, bound)


def _load_splits(a: DefendArgs, c: _Checked) -> tuple[Any, Any]:
    """The validation split (carved as the checkpoint's training did) and the test split."""
    from classwise.data import load_dataset
    from classwise.defenses.sweep import validation_split

    if not c.recipe:
        err_console.print("warning: the checkpoint carries no training recipe; the validation split is carved "
                          "with the default val_fraction/seed and may overlap the model's training images",
                          markup=False, highlight=False)
    val = validation_split(c.recipe, c.ds_name, data_root=a.data_root, val_fraction=a.val_fraction, seed=a.seed)
    image_size = (c.recipe or {}).get("image_size")
    test = load_dataset(c.ds_name, "test", root=a.data_root,
                        image_size=image_size if image_size not in (None, "none") else None)
    if a.limit:
        test = test.take(a.limit, seed=a.seed)
    return val, test


def run_defend(a: DefendArgs) -> None:
    from classwise.defenses.artifacts import write_sweep
    from classwise.models import load_checkpoint
    from classwise.runs import RunDir, default_run_dir

    configure_output(a.quiet)
    if a.seeds is not None:
        from classwise.cli._defend_seeds import run_defend_seeds

        return run_defend_seeds(a, check=_check, load_splits=_load_splits, config_of=_config)
    c = _check(a)
    net, meta = load_checkpoint(a.checkpoint, device=c.dev)
    val, test = _load_splits(a, c)
    run = RunDir(a.out or default_run_dir("defend", c.ds_name)).open()
    what = f"rule {a.rule}" if a.phase is DefendPhase.inference else f"training defense {a.defense}"
    info(f"[bold]classwise defend[/]: {a.phase.value} phase, {what}, sweep "
         f"{', '.join(f'{v:g}' for v in c.values)}; {len(val)} validation / {len(test)} test {c.ds_name} "
         f"images; attacks {', '.join(b.label for b in c.bound)}; device {c.dev}", highlight=False)
    t0 = time.perf_counter()
    res = _sweep(a, c, net, val, test, run.path)
    elapsed = time.perf_counter() - t0
    config = _config(a, c, res, test)
    run.write_config(config)
    files = write_sweep(run, res, config={k: config[k] for k in ("command", "phase", "checkpoint", "dataset", "rule")},
                        phase=a.phase.value, objective=a.objective, max_drop=a.max_drop / 100)
    run.write_run_info(seed=a.seed, device=str(c.dev), extra={"seconds": round(elapsed, 2)})
    run.finish()
    print_tradeoff(res, max_drop=a.max_drop / 100)
    console.print(f"swept in {elapsed:.0f}s; chosen on validation: [bold]{res.chosen}[/] ({res.reason})",
                  highlight=False, soft_wrap=True)
    print_files(files)
    console.print(f"  {'settings':<15} {run.path / 'settings'}  (e.g. classwise compare {run.path / 'settings' / 'undefended'} "
                  f"{run.path})", highlight=False, soft_wrap=True)


def _sweep(a: DefendArgs, c: _Checked, net: Any, val: Any, test: Any, run_path: Path) -> Any:
    from classwise.cli._print import say
    from classwise.defenses.sweep import run_inference_sweep, run_train_sweep

    common: dict[str, Any] = dict(objective=a.objective, max_drop=a.max_drop / 100, device=c.dev, seed=a.seed,
                                  batch_size=a.batch_size, on_stage=say)
    if a.phase is DefendPhase.inference:
        return run_inference_sweep(net, val, test, c.bound, rule=a.rule, values=c.values, cstar=a.cls,
                                   transfer=a.transfer, **common)
    assert a.defense is not None  # _train_values checked it
    return run_train_sweep(c.recipe or {"dataset": c.ds_name}, net, val, test, c.bound, run_path / "train",
                           defense=a.defense, values=c.values, key=a.key, cstar=a.cls, overrides=c.overrides,
                           data_root=a.data_root, **common)


def _config(a: DefendArgs, c: _Checked, res: Any, test: Any) -> dict[str, Any]:
    return {"command": "defend", "phase": a.phase.value, "checkpoint": str(a.checkpoint), "dataset": c.ds_name,
            "rule": res.rule, "values": c.values, "class": a.cls, "defense": a.defense, "key": a.key,
            "overrides": a.set_ or [], "limit": a.limit, "val_fraction": a.val_fraction, "objective": a.objective,
            "max_drop_points": a.max_drop, "transfer": a.transfer, "batch_size": a.batch_size,
            "attacks": [C.resolved_attack(b) for b in c.bound], "seed": a.seed, "device": str(c.dev),
            "data_root": C.data_root_record(test)}


# --- the trade-off tables -----------------------------------------------------------------------------


def _iv(v: Any, lo: Any, hi: Any) -> str:
    return "—" if v != v else f"{100 * v:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def print_tradeoff(res: Any, max_drop: float | None = None) -> None:
    """The trade-off tables: test (adaptive) per attack, the paired effects against the undefended model on
    the test split, the transferred contrast, and the validation table the setting was chosen on (with the
    budget check on the upper bound of the average drop, ``max_drop`` a fraction). Every row of every attack
    is in defend.json and the report."""
    from rich.console import Console

    out = console if console.is_terminal else Console(width=150)  # logs and pipes: no wrapped cells
    names = res.test[next(iter(res.test))].class_names
    for title, df, a in _tradeoff_views(res):
        d = df[df["attack"] == a]
        if d.empty:
            continue
        if title.startswith("validation"):
            out.print(_validation_table(res, names, title, d, max_drop))
            continue
        out.print(_tradeoff_table(res, names, title, d))
        if title.startswith("test") and a == res.selection_attack and "worst_gain" in d.columns:
            out.print(_paired_table(res, names, f"test, {a}: paired against the undefended model on the same "
                                                 f"{int(d['n'].iloc[0])} images", d))


def _tradeoff_views(res: Any) -> list[tuple[str, Any, str]]:
    """(title, table, attack) of each table to print."""
    sel = res.selection_attack
    how = "attacks on each retrained model" if res.rule.startswith("train:") else \
        "adaptive (attacks see the defended model)"
    tables = [(f"test, {a}, {how}", res.test_table, a)
              for a in [*res.attacks, *(["worst-case"] if len(res.attacks) > 1 else [])]]
    if len(res.transfer_table):
        ta = sel if sel == "worst-case" else f"{sel} (transfer)"
        tables.append((f"test, {ta}: TRANSFERRED from the undefended model (NOT adaptive, a contrast only: "
                       "it overstates robustness)", res.transfer_table, ta))
    tables.append((f"validation, {sel} (c* and the setting are chosen here)", res.val_table, sel))
    return tables


def _pts(v: Any, lo: Any, hi: Any) -> str:
    """A difference in points with its interval, signed."""
    return "—" if v != v else f"{100 * v:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"


def _p(v: Any) -> str:
    return "—" if v != v else (f"{v:.2g}" if v < 0.001 else f"{v:.3f}")


def _paired_table(res: Any, names: Any, title: str, d: Any) -> Any:
    """Worst-class gain and average drop of each setting against the undefended model, paired by sample."""
    from rich.table import Table

    from classwise.analysis.paired import PAIRED_INTERVAL, SIGNIFICANCE_RULE

    t = Table(title=f"c* = {names[res.cstar]}: {title}; points, {PAIRED_INTERVAL} intervals, exact McNemar p; "
                    f"{SIGNIFICANCE_RULE}", header_style="bold", title_justify="left")
    for col in ("setting", "worst-class gain", f"p (c* = {names[res.cstar]})", "verdict", "average drop", "p (all)",
                "verdict"):
        t.add_column(col, justify="left" if col in ("setting", "verdict") else "right", no_wrap=True)
    for _, r in d.iterrows():
        if r["setting"] == r["reference"]:
            continue
        t.add_row(str(r["setting"]), _pts(r["worst_gain"], r["worst_gain_lo"], r["worst_gain_hi"]), _p(r["worst_p"]),
                  "significant" if r["worst_significant"] else "n.s.",
                  _pts(r["avg_drop"], r["avg_drop_lo"], r["avg_drop_hi"]), _p(r["avg_p"]),
                  "significant" if r["avg_significant"] else "n.s.",
                  style="bold" if r["setting"] == res.chosen else None)
    return t


def _validation_table(res: Any, names: Any, title: str, d: Any, max_drop: float | None) -> Any:
    """The validation rows the setting was chosen from, with the budget applied to the upper bound."""
    from rich.table import Table

    budget = "" if max_drop is None else f" (upper bound <= {100 * max_drop:g})"
    t = Table(title=f"c* = {names[res.cstar]}: {title}; % with 95% intervals, the drop's paired bootstrap",
              header_style="bold", title_justify="left")
    for col in ("setting", f"c* robust (n={int(d['cstar_n'].iloc[0])})", f"average robust (n={int(d['n'].iloc[0])})",
                "worst-class robust (class)", "average drop, points", f"within budget{budget}"):
        t.add_column(col, justify="left" if col == "setting" else "right", no_wrap=True)
    for _, r in d.iterrows():
        wc = names[int(r["worst_class"])] if r["worst_class"] >= 0 else "—"
        t.add_row(str(r["setting"]), _iv(r["cstar_robust"], r["cstar_lo"], r["cstar_hi"]),
                  _iv(r["avg_robust"], r["avg_lo"], r["avg_hi"]),
                  _iv(r["worst_robust"], r["worst_lo"], r["worst_hi"]) + f" ({wc})",
                  _pts(r["avg_drop"], r["avg_drop_lo"], r["avg_drop_hi"]),
                  "yes" if r["setting"] in res.eligible else "no", style="bold" if r["setting"] == res.chosen else None)
    return t


def _tradeoff_table(res: Any, names: Any, title: str, d: Any) -> Any:
    from rich.table import Table

    t = Table(title=f"c* = {names[res.cstar]}: {title}; % with 95% intervals", header_style="bold",
              title_justify="left")
    for col in ("setting", "clean", f"c* robust (n={int(d['cstar_n'].iloc[0])})", f"average robust (n={int(d['n'].iloc[0])})",
                "worst-class robust (class)", "others to c*"):
        t.add_column(col, justify="left" if col == "setting" else "right", no_wrap=True)
    for _, r in d.iterrows():
        wc = names[int(r["worst_class"])] if r["worst_class"] >= 0 else "—"
        t.add_row(str(r["setting"]), f"{100 * r['clean_acc']:.1f}", _iv(r["cstar_robust"], r["cstar_lo"], r["cstar_hi"]),
                  _iv(r["avg_robust"], r["avg_lo"], r["avg_hi"]),
                  _iv(r["worst_robust"], r["worst_lo"], r["worst_hi"]) + f" ({wc})",
                  f"{100 * r['to_cstar_clean']:.1f}", style="bold" if r["setting"] == res.chosen else None)
    return t
