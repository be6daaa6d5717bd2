"""`classwise study --checkpoint`: each reused checkpoint's method, the study's threat model and the record,
from the sidecars alone (study/reuse.py and paper.plan_study). No model is built: the sidecars are JSON
beside placeholder weight files, which nothing here reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from classwise.errors import ClasswiseError
from classwise.study.paper import plan_study
from classwise.study.reuse import (
    Reused,
    agreed,
    check_slot,
    sidecar_method,
    study_dataset,
    study_threat_model,
)


def meta(method: str | None = "pgd-at", eps=0.2, *, steps=20, alpha=None, norm="linf", dataset="digits",
         defense="none", recipe=True) -> dict:
    m = {"architecture": "small-cnn", "num_classes": 10, "in_channels": 1, "input_size": 8, "dataset": dataset,
         "method": method, "threat_model": {"norm": norm, "eps": eps}}
    if recipe:
        m["recipe"] = {"dataset": dataset, "method": method, "norm": norm, "eps": eps, "eval_steps": steps,
                       "eval_alpha": alpha, "defense": defense, "epochs": 7}
    return {k: v for k, v in m.items() if v is not None}


def ckpt(tmp_path: Path, name: str, m: dict) -> str:
    d = tmp_path / name
    d.mkdir()
    (d / "best.safetensors").write_bytes(b"not read")
    (d / "best.json").write_text(json.dumps(m))
    return str(d / "best.safetensors")


def one_line(e: pytest.ExceptionInfo) -> str:
    text = str(e.value)
    assert "\n" not in text
    return text


# --- the slot's method ------------------------------------------------------------------------------------


def test_sidecar_method_adds_a_recipe_defense():
    assert sidecar_method(meta("trades")) == "trades"
    assert sidecar_method(meta("pgd-at", defense="adaptive")) == "pgd-at+adaptive"
    assert sidecar_method({"method": "  "}) is None and sidecar_method({}) is None


def test_a_checkpoint_of_another_method_is_refused_unless_forced():
    assert check_slot("mart", "m.safetensors", meta("mart")).forced is False
    with pytest.raises(ClasswiseError) as e:
        check_slot("mart", "p.safetensors", meta("pgd-at"))
    msg = one_line(e)
    assert "mart=p.safetensors" in msg and "pgd-at" in msg and "--force" in msg and "--checkpoint pgd-at=" in msg
    with pytest.raises(ClasswiseError) as e:  # a defense on makes it another method, too
        check_slot("pgd-at", "p.safetensors", meta("pgd-at", defense="fixed"))
    assert "pgd-at+fixed" in one_line(e) and "--force" in one_line(e)
    with pytest.raises(ClasswiseError) as e:
        check_slot("trades", "x.safetensors", meta(None))
    assert "does not say" in one_line(e) and "--force" in one_line(e)
    r = check_slot("mart", "p.safetensors", meta("pgd-at"), force=True)
    assert r.forced and r.method == "pgd-at" and r.record()["forced"] is True
    assert r.record()["sidecar_method"] == "pgd-at" and r.record()["recipe"]["epochs"] == 7
    with pytest.raises(ClasswiseError, match="unknown defense"):
        check_slot("fgsm", "p", meta(), force=True)


# --- the threat model ---------------------------------------------------------------------------------------


def reused(*metas: dict) -> list[Reused]:
    slots = ("pgd-at", "trades", "mart")
    return [Reused(slots[i], f"c{i}.safetensors", m, m.get("method")) for i, m in enumerate(metas)]


RECIPE = {"norm": "linf", "eps": 0.3, "eval_steps": 20, "eval_alpha": None}


def test_the_threat_model_is_the_sidecars_and_a_mix_names_both_values():
    warnings: list[str] = []
    t = study_threat_model(reused(meta(eps=0.1, steps=5), meta("trades", eps="1/10", steps=5)), RECIPE, "r.toml",
                           warnings.append)
    assert (t.norm, t.eps, t.eval_steps, t.eval_alpha) == ("linf", pytest.approx(0.1), 5, None)
    assert set(t.source.values()) == {"the checkpoints' sidecars"} and warnings == []
    with pytest.raises(ClasswiseError) as e:
        study_threat_model(reused(meta(eps=0.2), meta("trades", eps=8 / 255)), RECIPE, "r.toml", warnings.append)
    msg = one_line(e)
    assert "eps" in msg and "0.2 (pgd-at=c0.safetensors)" in msg and "0.0313" in msg and "trades=c1" in msg
    for bad, what in [(meta("trades", norm="l2"), "norm"), (meta("trades", steps=10), "eval_steps"),
                      (meta("trades", alpha=0.01), "eval_alpha")]:
        with pytest.raises(ClasswiseError, match=what):
            study_threat_model(reused(meta(), bad), RECIPE, "r.toml", warnings.append)
    t = study_threat_model(reused(meta(alpha=0.02), meta("trades", alpha=0.02)), RECIPE, "r.toml", warnings.append)
    assert t.eval_alpha == pytest.approx(0.02)


def test_values_no_sidecar_states_come_from_the_recipe_with_a_warning():
    warnings: list[str] = []
    t = study_threat_model(reused(meta(recipe=False)), RECIPE, "r.toml", warnings.append)
    assert t.eps == 0.2 and t.eval_steps == 20 and t.source["eps"] == "the checkpoints' sidecars"
    assert t.source["eval_steps"] == "recipe r.toml" and any("eval_steps" in w and "r.toml" in w for w in warnings)
    warnings.clear()
    t = study_threat_model(reused(meta(eps=0.1, steps=5), meta("trades", eps=0.1, recipe=False)), RECIPE, "r.toml",
                           warnings.append)
    assert t.eval_steps == 5 and any("trades=c1.safetensors" in w for w in warnings)  # the others' value, said
    warnings.clear()
    t = study_threat_model([], RECIPE, "r.toml", warnings.append)  # nothing reused: the recipe, no warning
    assert t.eps == 0.3 and warnings == [] and t.source["eps"] == "recipe r.toml"
    assert agreed([], "eps", "eps") == (None, [])


def test_the_dataset_is_the_checkpoints_and_a_conflicting_flag_is_an_error():
    def canonical(n):
        return n.lower().replace("_", "-")

    rs = reused(meta(dataset="digits"), meta("trades", dataset="Digits"))
    assert study_dataset(None, rs, canonical) == "digits" and study_dataset("DIGITS", rs, canonical) == "digits"
    assert study_dataset(None, [], canonical) == "digits"
    with pytest.raises(ClasswiseError) as e:
        study_dataset("mnist", rs, canonical)
    assert "--dataset mnist" in one_line(e) and "digits" in one_line(e)
    with pytest.raises(ClasswiseError) as e:
        study_dataset(None, reused(meta(dataset="digits"), meta("trades", dataset="mnist")), canonical)
    assert "digits (pgd-at=c0.safetensors) and mnist (trades=c1.safetensors)" in one_line(e)


# --- the plan: files, the trained models' config, the record ------------------------------------------------


def test_plan_reads_the_sidecars_and_records_each_models_own_recipe(tmp_path):
    a = ckpt(tmp_path, "a", meta("pgd-at", eps=0.1, steps=5))
    b = ckpt(tmp_path, "b", meta("pgd-at", eps=0.1, steps=5))
    with pytest.raises(ClasswiseError, match="--force"):
        plan_study(None, checkpoints={"pgd-at": a, "mart": b})
    plan = plan_study(None, checkpoints={"pgd-at": a, "mart": b}, force=True)
    assert plan.dataset == "digits" and [w for w in plan.warnings if "--force" in w and "mart" in w]
    assert plan.attacks[1] == "pgd:eps=0.1,steps=5,norm=linf"
    # TRADES is trained here: at the checkpoints' eps and evaluation steps, with the default training step
    assert (plan.base.eps, plan.base.eval_steps, plan.base.alpha) == (0.1, 5, None)
    assert any("trained here" in w for w in plan.warnings)
    rec = plan.models_record()
    assert rec["pgd-at"]["source"] == "checkpoint" and rec["pgd-at"]["recipe"]["epochs"] == 7
    assert rec["mart"]["forced"] is True and rec["mart"]["sidecar_method"] == "pgd-at"
    assert rec["trades"]["source"] == "trained" and rec["trades"]["config"]["method"] == "trades"
    assert rec["trades"]["config"]["eps"] == 0.1 and rec["trades"]["config"]["epochs"] <= 15  # smoke scale
    c = ckpt(tmp_path, "c", meta("trades", eps=0.2))
    with pytest.raises(ClasswiseError, match=r"eps: 0\.1 \(pgd-at=.*\) and 0\.2 \(trades="):
        plan_study(None, checkpoints={"pgd-at": a, "trades": c})
    with pytest.raises(ClasswiseError, match="--dataset mnist"):
        plan_study("mnist", checkpoints={"pgd-at": a})


def test_plan_without_checkpoints_is_the_bundled_recipe():
    plan = plan_study("digits", scale="full")
    assert plan.reused == {} and plan.warnings == [] and plan.base.eps == 0.2 and plan.base.alpha == 0.05
    assert plan.attacks[1] == "pgd:eps=0.2,steps=20,norm=linf"
    assert all(r["source"] == "trained" for r in plan.models_record().values())
