"""The study's train-vs-test disparity is measured on images the PGD-AT model was trained on."""

from __future__ import annotations

from classwise.data import load_dataset
from classwise.models import create_model, save_checkpoint
from classwise.study.paper import _trained_images
from classwise.training.validation import split_train_val
from tests.helpers import tiny_cfg


def _trained_and_val(cfg):
    train, val = split_train_val(load_dataset("digits", "train"), cfg)
    return set(train.meta["index"]), set(val.meta["index"]) if val is not None else set()


def test_study_train_images_are_trained_on_not_validation():
    cfg = tiny_cfg(train_limit=300)
    imgs, source = _trained_images(cfg, None, 120, None, 0)
    trained, val = _trained_and_val(cfg)
    idx = set(imgs.meta["index"])
    assert source == "trained-on" and len(idx) == 120
    assert idx <= trained and idx.isdisjoint(val)


def test_a_reused_checkpoint_uses_its_own_recipe_or_says_it_cannot(tmp_path):
    model = create_model("small-cnn", num_classes=10, in_channels=1, input_size=8)
    own = tiny_cfg(train_limit=200, seed=3)
    with_recipe = save_checkpoint(tmp_path / "a.safetensors", model, {"dataset": "digits", "recipe": own.to_dict()})
    imgs, source = _trained_images(tiny_cfg(), with_recipe, 100, None, 0)
    assert source == "trained-on" and set(imgs.meta["index"]) <= _trained_and_val(own)[0]
    bare = save_checkpoint(tmp_path / "b.safetensors", model, {"dataset": "digits"})
    imgs, source = _trained_images(tiny_cfg(), bare, 100, None, 0)
    assert "not known to be trained-on" in source and len(imgs) == 100
