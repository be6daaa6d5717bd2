"""``classwise tpgd``: the Temperature-PGD sweep at equal cost, gain over PGD class by class."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from classwise.cli import _common as C
from classwise.cli._print import console, print_files
from classwise.cli._print import info as print_info
from classwise.cli._progress import configure_output, progress, stage_ticker
from classwise.errors import ClasswiseError


def tpgd_cmd(
    checkpoint: Annotated[Path, typer.Option(help="Weights: .safetensors with its .json sidecar, or a run directory.")],
    temperatures: Annotated[str, typer.Option("--T", help="Comma-separated temperatures to sweep; T=1 (PGD, the "
                                                          "baseline) is added if missing.")] = "0.1,0.2,0.5,1,2,5",
    rule: Annotated[list[str] | None, typer.Option(
        "--rule", help="Per-image temperature rule, repeatable: none, conf (from each image's clean confidence) or "
                       "class (from its predicted class), with optional range, e.g. conf:lo=0.2,hi=2 "
                       "(see docs/tpgd.md).")] = None,
    dataset: C.CheckpointDataset = None,
    eps: Annotated[str | None, typer.Option(help="Budget (default: the checkpoint's training eps), e.g. 0.2 or 8/255.")] = None,
    steps: Annotated[int, typer.Option(min=1, help="Steps of every row (equal cost).")] = 20,
    restarts: Annotated[int, typer.Option(min=1, help="Random restarts of every row.")] = 1,
    alpha: Annotated[str | None, typer.Option(help="Step size (default 2.5*eps/steps).")] = None,
    norm: Annotated[str | None, typer.Option(help="linf or l2 (default: the checkpoint's).")] = None,
    split: C.Split = "test",
    limit: Annotated[int | None, typer.Option(min=1, help="Use a class-stratified subset of N samples.")] = None,
    image_size: Annotated[int | None, typer.Option(min=1, help="imagefolder only: resize and centre-crop every "
                                                               "image to NxN (default: the images' own size, "
                                                               "when they all share one).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per batch.")] = 256,
    bottom_k: Annotated[int | None, typer.Option(min=1, help="Number of vulnerable classes (least robust under "
                                                             "PGD; default K // 5, at least 1).")] = None,
    n_boot: Annotated[int, typer.Option(min=100, help="Paired bootstrap resamples for the gain intervals.")] = 2000,
    data_root: C.DataRoot = None,
    download: C.Download = False,
    out: Annotated[Path | None, typer.Option(help="Run directory (default: runs/tpgd-DATASET-TIMESTAMP).")] = None,
    device: C.Device = "auto",
    seed: Annotated[int, typer.Option(help="Seed of the random starts (shared by every row) and the bootstrap.")] = 0,
    quiet: C.Quiet = False,
) -> None:
    """Sweep the Temperature-PGD temperature at equal eps, steps and restarts; gain over PGD class by class.

    Every row shares PGD's random starts, so T=1 is exactly PGD and rows differ by T alone. Gains over PGD
    come with paired intervals (class-stratified bootstrap) and McNemar p-values; the T-ensemble row is the
    worst case over all rows. Writes metrics/tpgd.json, metrics.json, outcomes.npz, config.toml, run.json.
    """
    run_tpgd(TpgdArgs(**locals()))


@dataclass
class TpgdArgs:
    """tpgd's options, as typed."""

    checkpoint: Path
    temperatures: str
    rule: list[str] | None
    dataset: str | None
    eps: str | None
    steps: int
    restarts: int
    alpha: str | None
    norm: str | None
    split: str
    limit: int | None
    image_size: int | None
    batch_size: int
    bottom_k: int | None
    n_boot: int
    data_root: Path | None
    download: bool
    out: Path | None
    device: str
    seed: int
    quiet: bool = False


@dataclass
class _Sweep:
    """The checked sweep: temperatures, rules, budget, norm and step size (None: the default rule)."""

    temps: Any
    rules: list[Any]
    dev: Any
    ds_name: str
    eps: float
    norm: str
    alpha: float | None


def _check(a: TpgdArgs) -> _Sweep:
    from classwise.core import Norm, parse_number
    from classwise.data.folder import check_image_size_option
    from classwise.study.tpgd import parse_rule, parse_temperatures

    temps = parse_temperatures(a.temperatures)
    rules = [r for r in (parse_rule(s) for s in (a.rule or [])) if r is not None]
    names = [r.name for r in rules]
    if len(set(names)) != len(names):
        raise ClasswiseError("--rule: give each rule (conf, class) once")
    C.check_split(a.split)
    dev = C.check_device(a.device)
    sidecar = C.check_checkpoint(a.checkpoint)
    ds_name = C.checkpoint_dataset(a.dataset, sidecar, a.checkpoint)
    tm = (sidecar or {}).get("threat_model") or {}
    raw_eps = a.eps if a.eps is not None else tm.get("eps")
    if raw_eps is None:
        raise ClasswiseError(f"checkpoint {a.checkpoint} does not say its eps; pass --eps (e.g. --eps 8/255)")
    eps_v = parse_number(raw_eps, name="--eps")
    if not eps_v > 0:
        raise ClasswiseError(f"--eps must be > 0 for a sweep, got {eps_v:g}")
    norm_v = Norm.parse(a.norm or tm.get("norm") or "linf").value
    alpha_v = parse_number(a.alpha, name="--alpha") if a.alpha is not None else None
    if alpha_v is not None and not alpha_v > 0:
        raise ClasswiseError(f"--alpha must be > 0, got {a.alpha}")
    check_image_size_option(ds_name, a.image_size)
    C.check_data(ds_name, [a.split], a.data_root, a.download)
    return _Sweep(temps, rules, dev, ds_name, eps_v, norm_v, alpha_v)


def run_tpgd(a: TpgdArgs) -> None:
    from classwise.data import load_dataset
    from classwise.models import load_checkpoint
    from classwise.runs import RunDir, default_run_dir
    from classwise.study.tpgd import run_sweep

    configure_output(a.quiet)
    s = _check(a)
    net, meta = load_checkpoint(a.checkpoint, device=s.dev)
    data = load_dataset(s.ds_name, a.split, root=a.data_root, download=a.download, image_size=a.image_size)
    if a.limit:
        data = data.take(a.limit, seed=a.seed)
    C.check_outputs(net, data, s.ds_name)
    run = RunDir(a.out or default_run_dir("tpgd", s.ds_name)).open()
    n_rows = len(s.temps) + (0 if any(abs(t - 1) < 1e-12 for t in s.temps) else 1) + len(s.rules)
    print_info(f"[bold]classwise tpgd[/]: {len(data)} {s.ds_name} {a.split} images, {n_rows} rows of "
               f"T-PGD-{a.steps} ({s.norm} eps={s.eps:g}, {a.restarts} restart(s) each), device {s.dev}",
               highlight=False)
    t0 = time.perf_counter()
    with progress() as prog:
        outcomes, info = run_sweep(net, data, s.temps, s.rules, eps=s.eps, steps=a.steps, restarts=a.restarts,
                                   alpha=s.alpha, norm=s.norm, seed=a.seed, batch_size=a.batch_size, device=s.dev,
                                   progress=stage_ticker(prog, len(data), skip=("clean",), stages=n_rows))
    elapsed = time.perf_counter() - t0
    res, files = _write(run, a, s, outcomes, info, meta, data, elapsed)
    print_info(f"swept in {elapsed:.1f}s")
    print_tpgd(res)
    print_files({**files, "run": run.path})


def _write(run: Any, a: TpgdArgs, s: _Sweep, outcomes: Any, info: dict, meta: dict, data: Any,
           elapsed: float) -> tuple[dict, dict[str, Any]]:
    """Analyse the sweep; write metrics/tpgd.json, the evaluation files, config.toml and run.json.
    Returns the analysis and the files written."""
    from classwise.core import DEFAULT_STEP_RULE, default_step
    from classwise.io import atomic_write_json
    from classwise.report.artifacts import write_evaluation
    from classwise.study.tpgd import analyse_sweep

    res = analyse_sweep(outcomes, bottom_k=a.bottom_k, n_boot=a.n_boot, seed=a.seed)
    alpha_used = s.alpha if s.alpha is not None else default_step(s.eps, a.steps)  # the rows' step size
    res["attack"] = {"eps": s.eps, "norm": s.norm, "steps": a.steps, "restarts": a.restarts, "alpha": alpha_used}
    res["rules"] = [r.to_dict() for r in s.rules]
    res.update(info)
    written = write_evaluation(run, outcomes)
    tpgd_json = atomic_write_json(run.file("metrics/tpgd.json"), res)
    run.write_config({"command": "tpgd", "checkpoint": str(a.checkpoint), "dataset": s.ds_name, "split": a.split,
                      "limit": a.limit, "image_size": data.input_size, "model": meta.get("architecture"), "method": meta.get("method"),
                      "temperatures": [float(t) for t in s.temps], "rules": [r.to_dict() for r in s.rules],
                      "eps": s.eps, "norm": s.norm, "steps": a.steps, "restarts": a.restarts, "alpha": alpha_used,
                      "alpha_rule": "given" if s.alpha is not None else DEFAULT_STEP_RULE,
                      "batch_size": a.batch_size, "bottom_k": a.bottom_k, "n_boot": a.n_boot, "seed": a.seed,
                      "device": str(s.dev), "data_root": C.data_root_record(data),
                      "attacks": [outcomes.specs[x] for x in outcomes.attacks]})
    run.write_run_info(seed=a.seed, device=str(s.dev), extra={"eval_seconds": round(elapsed, 2)})
    run.finish()
    return res, {"tpgd": tpgd_json, **written["files"]}


# --- the tables ---------------------------------------------------------------------------------------


def _pct(v: Any) -> str:
    return "—" if v is None or not math.isfinite(v) else f"{100 * v:.1f}"


def _pts(v: Any) -> str:
    return "—" if v is None or not math.isfinite(v) else f"{100 * v:+.1f}"


def _ci(lo: Any, hi: Any, f: Any = _pct) -> str:
    return "" if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)) else f"[{f(lo)}, {f(hi)}]"


def print_tpgd(res: dict) -> None:
    """The rows table, the per-class gain table, the best row against PGD, the summary lines."""
    names = res["class_names"]
    console.print(_rows_table(res))
    base = next(r for r in res["rows"] if r["label"] == res["baseline"])
    order = sorted(range(len(names)), key=lambda c: (not math.isfinite(base["per_class"][c]["robust_acc"]),
                                                     base["per_class"][c]["robust_acc"], c))
    console.print(_gain_table(res, base, order))
    best = (res.get("best") or {}).get("overall")
    if best:
        console.print(_best_table(res, best, order))
    for line in res.get("summary", []):
        console.print(line, highlight=False, soft_wrap=True)


def _rows_table(res: dict) -> Any:
    from rich.table import Table

    names = res["class_names"]
    vul = ", ".join(str(names[c]) for c in res["vulnerable_classes"])
    t = Table(title=f"Temperature-PGD sweep on {res['dataset']} {res['split']}, n={res['num_samples']}: robust accuracy "
                    f"(%) and gain over PGD ({res['baseline']}) in points, 95% intervals; vulnerable = {vul}",
              header_style="bold")
    for col in ("row", "cost", "robust", "95% CI", "gain", "gain CI", "p", "worst class", "vuln. gain", "vuln. CI",
                "vuln. p", "vuln. share"):
        t.add_column(col, justify="left" if col in ("row", "worst class") else "right", no_wrap=True)
    for r in res["rows"]:
        wc = "—" if r["worst_class"] is None else f"{names[r['worst_class']]} ({_pct(r['worst_acc'])})"
        # a share of a gain that may be zero is noise over a near-zero denominator: only when the gain is clear
        share = _pct(r["bottom_k_share"]) if r["gain_lo"] is not None and r["gain_lo"] > 0 else "—"
        style = "bold" if r["label"] == res["baseline"] else ("dim" if r["kind"] == "ensemble" else None)
        t.add_row(r["label"], f"{r['cost']}x", _pct(r["robust_accuracy"]), _ci(r["robust_lo"], r["robust_hi"]),
                  _pts(r["gain"]), _ci(r["gain_lo"], r["gain_hi"], _pts), f"{r['p_value']:.3g}", wc,
                  _pts(r["vulnerable_gain"]), _ci(r["vulnerable_gain_lo"], r["vulnerable_gain_hi"], _pts),
                  f"{r['vulnerable_p_value']:.3g}", share, style=style)
    return t


def _gain_table(res: dict, base: dict, order: list[int]) -> Any:
    from rich.table import Table

    names = res["class_names"]
    g = Table(title="Gain over PGD per class (points; * McNemar p < 0.05), classes by PGD robustness, least robust "
                    "first; ! = vulnerable", header_style="bold")
    g.add_column("class", no_wrap=True)
    g.add_column("n", justify="right")
    g.add_column("PGD", justify="right")
    rows = [r for r in res["rows"] if r["label"] != res["baseline"]]
    for r in rows:
        g.add_column(r["label"], justify="right", no_wrap=True)
    for c in order:
        pc = base["per_class"][c]
        g.add_row(f"{names[c]}{' !' if pc['vulnerable'] else ''}", str(pc["support"]), _pct(pc["robust_acc"]),
                  *[_pts(r["per_class"][c]["gain"]) + ("*" if r["per_class"][c]["significant"] else "") for r in rows],
                  style="bold red" if pc["vulnerable"] else None)
    return g


def _best_table(res: dict, best: str, order: list[int]) -> Any:
    from rich.table import Table

    names = res["class_names"]
    b = next(r for r in res["rows"] if r["label"] == best)
    d = Table(title=f"Best equal-cost row {best} against PGD, per class (paired bootstrap interval, McNemar)",
              header_style="bold")
    for col in ("class", "n", "PGD", best, "gain", "gain CI", f"{best} only", "PGD only", "p"):
        d.add_column(col, justify="left" if col == "class" else "right", no_wrap=True)
    for c in order:
        pc = b["per_class"][c]
        d.add_row(f"{names[c]}{' !' if pc['vulnerable'] else ''}", str(pc["support"]), _pct(pc["baseline_acc"]),
                  _pct(pc["robust_acc"]), _pts(pc["gain"]), _ci(pc["gain_lo"], pc["gain_hi"], _pts),
                  str(pc["row_only_broken"]), str(pc["baseline_only_broken"]), f"{pc['p_value']:.3g}")
    return d
