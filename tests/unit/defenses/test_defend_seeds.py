"""defenses.seeds / `defend --phase train --seeds`: per seed an undefended model retrained with the seed, the
validation split carved with it, and the aggregate's gains read back from each seed's own defend.json."""

from __future__ import annotations

import json

import numpy as np
import pytest

from classwise.outcomes import Outcomes
from tests.helpers import run_cli

EPS = 0.2


@pytest.mark.slow
def test_defend_train_seeds_pairs_each_seed_with_its_own_undefended_model(tmp_path):
    from classwise.training.config import resolve_config
    from classwise.training.fit import fit

    cfg, _ = resolve_config(recipe="digits", overrides={"epochs": 3, "steps": 2, "eps": EPS, "val_steps": 2,
                                                         "seed": 0})
    res = fit(cfg, tmp_path / "base", device="cpu")
    out = tmp_path / "def"
    r = run_cli(["defend", "--checkpoint", res.best, "--phase", "train", "--defense", "fixed", "--weight", "3",
                 "--set", "epochs=3", "--set", "defense_warmup=1", "--limit", "100", "--device", "cpu",
                 "--attack", f"pgd:eps={EPS},steps=3", "--seeds", "0,1", "--out", out], tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr
    agg = json.loads((out / "aggregate.json").read_text())
    assert agg["seeds"] == [0, 1] and agg["command"] == "defend"
    for s in (0, 1):  # the undefended model of each seed is retrained with that seed
        side = json.loads((out / f"seed-{s}/train/undefended/checkpoints/best.json").read_text())
        assert side["recipe"]["seed"] == s and side["recipe"]["defense"] == "none"
    v0, v1 = (Outcomes.load(out / f"seed-{s}/validation/undefended/outcomes.npz") for s in (0, 1))
    assert not np.array_equal(np.sort(v0.index), np.sort(v1.index))  # carved with each seed
    # each setting's per-seed gain is that seed's own test table: setting minus undefended
    d = agg["defense"]
    gains = []
    for s in (0, 1):
        rows = json.loads((out / f"seed-{s}/defend.json").read_text())["test"]["tradeoff"]
        cell = {(x["setting"], x["attack"]): x["worst_robust"] for x in rows}
        gains.append(cell[("fixed:w=3", d["attack"])] - cell[("undefended", d["attack"])])
    assert d["settings"]["fixed:w=3"]["worst"]["values"] == pytest.approx(gains)
    assert all(t["interval"] == "seed-level t 95%" for t in agg["tests"])
    assert run_cli(["report", out], tmp_path).returncode == 0
    assert "seed-level t 95%" in (out / "report.html").read_text()
