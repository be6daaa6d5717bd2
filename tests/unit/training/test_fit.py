"""The training engine: config validation, schedules, augmentation, fit(), checkpoints, resume, safety."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from classwise.errors import ClasswiseError
from classwise.models import load_checkpoint, read_state_dict
from classwise.training import trainer as trainmod  # the loop's steps look up validate there
from classwise.training.augment import augment_batch
from classwise.training.config import TrainConfig, recipe_names, resolve_config
from classwise.training.fit import FitCallbacks, TrainingInterrupted, TrainingStopped, fit, lr_factor
from classwise.training.methods import METHODS, MethodOutput
from tests.helpers import stop_at_epoch, tiny_cfg  # digits, small-cnn, a few seconds per run

# --- config ---------------------------------------------------------------------------------------


def test_every_bundled_recipe_resolves():
    names = recipe_names()
    assert {"digits", "mnist", "fashion-mnist", "fashion-mnist-cpu", "cifar10", "cifar100", "svhn", "stl10",
            "imagefolder"} <= set(names)
    for name in names:
        cfg, path = resolve_config(recipe=name)
        assert path.name == f"{name}.toml"
        assert cfg.eps > 0
    cifar, _ = resolve_config(recipe="cifar10")
    assert cifar.eps == pytest.approx(8 / 255) and cifar.alpha == pytest.approx(2 / 255)
    assert cifar.model == "preact-resnet18" and cifar.batch_size == 128 and cifar.weight_decay == 5e-4


def test_dataset_picks_its_recipe_and_flags_override():
    cfg, path = resolve_config(dataset="digits", overrides={"epochs": 3, "eps": "1/10", "method": "trades"})
    assert path.name == "digits.toml"
    assert cfg.epochs == 3 and cfg.eps == pytest.approx(0.1) and cfg.method == "trades"
    assert cfg.optimizer == "adam"  # from the recipe


@pytest.mark.parametrize("content, match", [
    ("epochz = 3\n", "unknown key 'epochz'"),
    ('epochs = "many"\n', "epochs must be an integer"),
    ("eps = true\n", "eps must be a number"),
    ("eps = 1.5\n", "out of range"),
    ('method = "adversarial"\n', "unknown training method 'adversarial'; choose one of"),
    ("[train]\neps = 0.1\n", "unexpected table"),
    ("eps = \n", "not valid TOML"),
    ('schedule = "linear"\n', "unknown schedule 'linear'"),
])
def test_bad_recipes_get_one_line_errors(tmp_path, content, match):
    p = tmp_path / "r.toml"
    p.write_text(content)
    with pytest.raises(ClasswiseError, match=match) as e:
        resolve_config(recipe=p)
    assert "\n" not in str(e.value)


def test_unknown_recipe_lists_choices():
    with pytest.raises(ClasswiseError, match="choose one of: .*cifar10"):
        resolve_config(recipe="cifar11")


def test_schedules():
    cfg = TrainConfig(schedule="piecewise", milestones=[0.5, 0.75], lr_decay=0.1)
    assert [lr_factor(cfg, t) for t in (0, 0.49, 0.5, 0.8)] == pytest.approx([1, 1, 0.1, 0.01])
    one = TrainConfig(schedule="onecycle")
    assert lr_factor(one, 0.0) < 0.1 and lr_factor(one, 0.25) == pytest.approx(1) and lr_factor(one, 0.999) < 0.01
    cyc = TrainConfig(schedule="cyclic")
    assert lr_factor(cyc, 0.4) == pytest.approx(1) and lr_factor(cyc, 0.2) == pytest.approx(0.5)
    assert lr_factor(TrainConfig(schedule="cosine"), 0.5) == pytest.approx(0.5)


def test_augment_crop_is_a_shift_and_flip_mirrors():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 3, 8, 8)
    out = augment_batch(x, "crop", g)
    assert out.shape == x.shape
    pad = 1
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    for i in range(16):  # every output is some window of the zero-padded input
        assert any(torch.equal(out[i], xp[i, :, dy:dy + 8, dx:dx + 8]) for dy in range(3) for dx in range(3))
    flips = augment_batch(x, "crop-flip", torch.Generator().manual_seed(1))
    assert not torch.equal(flips, augment_batch(x, "crop", torch.Generator().manual_seed(1)))
    assert torch.equal(augment_batch(x, "crop", torch.Generator().manual_seed(3)),
                       augment_batch(x, "crop", torch.Generator().manual_seed(3)))
    assert augment_batch(x, "none") is x


# --- fit ------------------------------------------------------------------------------------------


def test_fit_writes_checkpoints_history_and_loadable_best(tmp_path):
    cfg = tiny_cfg()
    res = fit(cfg, tmp_path / "run", device="cpu")
    hist = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in hist] == [1, 2, 3] == [h["epoch"] for h in res.history]
    h = hist[-1]
    assert len(h["val_robust_per_class"]) == 10 and sum(h["val_support"]) == 60
    assert 0 <= h["val_robust_acc"] <= h["val_clean_acc"] <= 1
    ck = tmp_path / "run" / "checkpoints"
    assert {"best.safetensors", "best.json", "last.safetensors", "last.json", "state-e0003.pt"} <= {
        p.name for p in ck.iterdir()}
    model, meta = load_checkpoint(res.best)  # no other information needed
    assert meta["dataset"] == "digits" and meta["architecture"] == "small-cnn"
    assert meta["recipe"]["method"] == "pgd-at" and meta["threat_model"]["eps"] == pytest.approx(0.1)
    assert meta["epoch"] == max(hist, key=lambda r: r["val_robust_acc"])["epoch"]
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize("name", METHODS.names())
def test_every_registered_method_trains_one_epoch(tmp_path, name):
    """Loops over the registry, so a new method is checked inside fit() without a new test."""
    res = fit(tiny_cfg(method=name, epochs=1, train_limit=128, val_limit=30), tmp_path / "run", device="cpu")
    (rec,) = res.history
    assert rec["epoch"] == 1 and math.isfinite(rec["train_loss"]) and 0 <= rec["train_acc"] <= 1
    assert sum(rec["val_support"]) == 30 and 0 <= rec["val_robust_acc"] <= rec["val_clean_acc"] <= 1
    meta = json.loads((tmp_path / "run" / "checkpoints" / "last.json").read_text())
    assert meta["method"] == meta["recipe"]["method"] == name and meta["metrics"]["train_loss"] == rec["train_loss"]


def test_fit_refuses_to_overwrite_and_to_resume_nothing(tmp_path):
    cfg = tiny_cfg(epochs=1)
    with pytest.raises(ClasswiseError, match="nothing to resume"):
        fit(cfg, tmp_path / "run", resume=True, device="cpu")
    fit(cfg, tmp_path / "run", device="cpu")
    with pytest.raises(ClasswiseError, match="already holds a training run"):
        fit(cfg, tmp_path / "run", device="cpu")


def test_interrupt_then_resume_equals_uninterrupted(tmp_path):
    cfg = tiny_cfg(epochs=4, method="trades", augment="crop-flip")
    full = fit(cfg, tmp_path / "a", device="cpu")
    with pytest.raises(TrainingInterrupted, match="continue with --resume"):
        # the callback runs after epoch 2's checkpoint is written
        fit(cfg, tmp_path / "b", device="cpu", callbacks=stop_at_epoch(2))
    assert (tmp_path / "b" / "checkpoints" / "interrupted.safetensors").is_file()
    resumed = fit(cfg, tmp_path / "b", resume=True, device="cpu")
    a, b = read_state_dict(full.last), read_state_dict(resumed.last)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    assert resumed.history[-1]["train_loss"] == full.history[-1]["train_loss"]


def test_resume_with_a_changed_config_is_refused(tmp_path):
    fit(tiny_cfg(epochs=1), tmp_path / "run", device="cpu")
    with pytest.raises(ClasswiseError, match="different configuration: eps"):
        fit(tiny_cfg(epochs=2, eps=0.2), tmp_path / "run", resume=True, device="cpu")


def test_corrupt_state_is_a_clear_error(tmp_path):
    fit(tiny_cfg(epochs=1), tmp_path / "run", device="cpu")
    (tmp_path / "run" / "checkpoints" / "state-e0001.pt").write_bytes(b"garbage")
    with pytest.raises(ClasswiseError, match="cannot read training state .*corrupt"):
        fit(tiny_cfg(epochs=2), tmp_path / "run", resume=True, device="cpu")


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    calls = {"n": 0}
    inner = METHODS.get("standard")

    def nan_in_epoch_2(model, x, y, **kw):
        calls["n"] += 1
        out = inner(model, x, y, **kw)
        if calls["n"] > 4:  # 400 training images / 128 = 4 batches per epoch
            return MethodOutput(loss=out.loss * float("nan"), logits=out.logits, per_sample_loss=out.per_sample_loss)
        return out

    # registered for this test only (test_methods checks the registry holds exactly the real methods)
    monkeypatch.setitem(METHODS._items, "test-nan", nan_in_epoch_2)
    with pytest.raises(TrainingStopped, match=r"loss became nan at epoch 2.*last good checkpoint \(epoch 1\)"):
        fit(tiny_cfg(method="test-nan", epochs=3), tmp_path / "run", device="cpu")
    meta = json.loads((tmp_path / "run" / "checkpoints" / "last.json").read_text())
    assert meta["epoch"] == 1
    w = read_state_dict(tmp_path / "run" / "checkpoints" / "last.safetensors")
    assert all(torch.isfinite(t).all() for t in w.values())


def test_fgsm_rs_catastrophic_overfitting_stops(tmp_path, monkeypatch):
    scores = iter([0.5, 0.55, 0.1, 0.1])
    real = trainmod.validate

    def fake_validate(*a, **k):
        r = real(*a, **k)
        r["val_robust_acc"] = next(scores)
        return r

    monkeypatch.setattr(trainmod, "validate", fake_validate)
    res = fit(tiny_cfg(method="fgsm-rs", epochs=4, schedule="cyclic"), tmp_path / "run", device="cpu")
    assert res.stopped_early and "catastrophic overfitting at epoch 3" in res.stopped_early
    assert [h["epoch"] for h in res.history] == [1, 2, 3]
    assert json.loads((tmp_path / "run" / "checkpoints" / "best.json").read_text())["epoch"] == 2


def test_class_weights_length_checked(tmp_path):
    with pytest.raises(ClasswiseError, match="class_weights has 3 values but digits has 10 classes"):
        fit(tiny_cfg(class_weights=[1, 2, 3]), tmp_path / "run", device="cpu")


def test_history_lr_follows_schedule(tmp_path):
    res = fit(tiny_cfg(epochs=2, schedule="constant", lr=0.003), tmp_path / "run", device="cpu")
    assert all(math.isclose(h["lr"], 0.003) for h in res.history)
    assert Path(res.run_dir, "history.jsonl").is_file()


# --- divergence and interruption: only finite checkpoints, messages that name what exists --------------


def test_nan_in_epoch_1_says_no_checkpoint_exists(tmp_path):
    with pytest.raises(TrainingStopped) as ei:
        fit(tiny_cfg(lr=1e6, epochs=2), tmp_path / "run", device="cpu")
    msg = str(ei.value)
    assert "at epoch 1" in msg and "No checkpoint was written" in msg and "epoch 0" not in msg
    assert not list((tmp_path / "run" / "checkpoints").glob("*.safetensors"))
    assert not list((tmp_path / "run" / "checkpoints").glob("state-e*.pt"))


def test_huge_lr_never_saves_a_diverged_model(tmp_path):
    """--lr 1e38 on the digits recipe: weights blow up (finite 4e36 or inf). Whatever exists is finite."""
    cfg, _ = resolve_config(recipe="digits", overrides={"lr": 1e38, "epochs": 2, "train_limit": 300,
                                                        "val_limit": 60, "steps": 2, "val_steps": 2})
    with pytest.raises(TrainingStopped, match="No checkpoint was written|last good checkpoint"):
        fit(cfg, tmp_path / "run", device="cpu")
    x = torch.rand(8, 1, 8, 8)
    for ck in (tmp_path / "run" / "checkpoints").glob("*.safetensors"):
        model, _ = load_checkpoint(ck)
        assert all(torch.isfinite(t).all() for t in model.state_dict().values() if t.is_floating_point())
        assert torch.isfinite(model(x)).all()


def _blow_up_weights_after(n_batches: int):
    inner = METHODS.get("standard")
    calls = {"n": 0}

    def method(model, x, y, **kw):
        out = inner(model, x, y, **kw)
        calls["n"] += 1
        if calls["n"] == n_batches:  # loss finite, but the weights the epoch ends with are not
            with torch.no_grad():
                next(model.parameters()).fill_(float("inf"))
            out = MethodOutput(loss=out.loss.detach().requires_grad_(), logits=out.logits.detach(),
                               per_sample_loss=out.per_sample_loss)
        return out

    return method


def test_epoch_with_non_finite_weights_is_not_saved(tmp_path, monkeypatch):
    monkeypatch.setitem(METHODS._items, "test-inf", _blow_up_weights_after(8))  # last batch of epoch 2
    with pytest.raises(TrainingStopped, match=r"epoch 2 diverged \(the weights are not finite\).*"
                                              r"last good checkpoint \(epoch 1\)"):
        fit(tiny_cfg(method="test-inf", epochs=3), tmp_path / "run", device="cpu")
    ck = tmp_path / "run" / "checkpoints"
    assert json.loads((ck / "last.json").read_text())["epoch"] == 1
    assert sorted(p.name for p in ck.glob("state-e*.pt")) == ["state-e0001.pt"]
    assert all(torch.isfinite(t).all() for t in read_state_dict(ck / "last.safetensors").values())


def test_non_finite_validation_outputs_stop_without_saving(tmp_path, monkeypatch):
    real = trainmod.validate

    def inf_in_epoch_1(*a, **k):
        return {**real(*a, **k), "val_nonfinite": 5}

    monkeypatch.setattr(trainmod, "validate", inf_in_epoch_1)
    with pytest.raises(TrainingStopped, match=r"epoch 1 diverged \(its validation outputs are not finite\).*"
                                              "No checkpoint was written"):
        fit(tiny_cfg(epochs=2), tmp_path / "run", device="cpu")
    assert not list((tmp_path / "run" / "checkpoints").glob("*.safetensors"))


def _interrupt_in_epoch(epoch: int, exc: type[BaseException]):
    def on_batch(e, k, loss, correct):
        if e == epoch:
            raise exc()

    return FitCallbacks(on_batch=on_batch)


def test_interrupt_in_epoch_1_says_there_is_nothing_to_resume(tmp_path):
    from classwise.errors import Terminated

    with pytest.raises(TrainingInterrupted) as ei:
        fit(tiny_cfg(epochs=2), tmp_path / "run", device="cpu", callbacks=_interrupt_in_epoch(1, KeyboardInterrupt))
    assert "nothing to resume" in str(ei.value) and "--resume" in str(ei.value) and "without --resume" in str(ei.value)
    assert ei.value.exit_code == 130
    with pytest.raises(ClasswiseError, match="nothing to resume"):  # what the message says is true
        fit(tiny_cfg(epochs=2), tmp_path / "run", resume=True, device="cpu")
    fit(tiny_cfg(epochs=1), tmp_path / "run", device="cpu")  # and the advised rerun works
    # SIGTERM arrives as Terminated: the same, with exit status 143
    with pytest.raises(TrainingInterrupted, match=r"terminated \(SIGTERM\) during epoch 2; checkpoints up to "
                                                  r"epoch 1 .*continue with --resume") as ei:
        fit(tiny_cfg(epochs=3), tmp_path / "run2", device="cpu", callbacks=_interrupt_in_epoch(2, Terminated))
    assert ei.value.exit_code == 143
