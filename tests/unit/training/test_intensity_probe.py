"""The robustified-intensity probe: per-example parameter-gradient norms by torch.func against a slow
one-image-at-a-time loop, the model left as found, the probe's keys, and a run with the probe trains as
one without it and resumes to the same log."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from classwise.errors import ClasswiseError
from classwise.models import create_model
from classwise.training.fit import TrainingInterrupted, fit
from classwise.training.intensity import per_example_grad_norms
from tests.helpers import stop_at_epoch, tiny_cfg


class ConvBNNet(nn.Module):
    """Conv, BatchNorm, ReLU, Linear: every layer kind whose per-example gradient the probe must get right."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3 * 6 * 6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.relu(self.bn(self.conv(x))).flatten(1))


def _loop_norms(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss) -> torch.Tensor:
    """The slow reference: one image at a time, autograd in eval mode."""
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    out = []
    for i in range(len(y)):
        g = torch.autograd.grad(loss(model(x[i:i + 1]), y[i:i + 1]).sum(), params)
        out.append(torch.sqrt(sum((t ** 2).sum() for t in g)))
    return torch.stack(out)


def _bn_model(dtype: torch.dtype) -> nn.Module:
    torch.manual_seed(0)
    m = ConvBNNet().to(dtype)
    m.train()
    with torch.no_grad():  # running statistics away from their (0, 1) start, so eval mode matters
        m(2 + 3 * torch.randn(32, 1, 6, 6, dtype=dtype))
    return m


def test_vmap_norms_equal_a_one_at_a_time_loop_in_float64():
    m = _bn_model(torch.float64)
    x, y = torch.randn(7, 1, 6, 6, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 0, 1, 2])

    def loss(z, t):
        return F.cross_entropy(z, t, reduction="none")

    before = {k: v.clone() for k, v in m.state_dict().items()}
    fast = per_example_grad_norms(m, x, y, loss=loss, chunk_size=3)  # chunks that do not divide the batch
    assert m.training  # the mode it was handed over in
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())  # no BN buffer moved
    slow = _loop_norms(m, x, y, loss)
    torch.testing.assert_close(fast, slow, rtol=1e-12, atol=1e-12)
    assert len(set(fast.tolist())) == len(y)  # per example, not one batch value repeated


def test_default_loss_on_the_small_cnn_matches_the_loop():
    """The training loss (float32 cross-entropy) on the digits architecture (in-place ReLUs, normalization)."""
    torch.manual_seed(1)
    m = create_model("small-cnn", num_classes=10, in_channels=1, input_size=8, mean=[0.3], std=[0.4])
    x, y = torch.rand(5, 1, 8, 8), torch.tensor([0, 3, 5, 7, 9])
    from classwise.attacks.losses import cross_entropy

    torch.testing.assert_close(per_example_grad_norms(m, x, y), _loop_norms(m, x, y, cross_entropy),
                               rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kw, match", [
    (dict(intensity_every=0), "must be >= 1 step"),
    (dict(intensity_every=2, intensity_batch=0), "intensity_batch .* must be >= 1"),
    (dict(intensity_batch=16), "needs intensity_every"),
    (dict(intensity_every=2, method="trades"), "not trades"),
])
def test_bad_probe_keys_are_one_line_errors(kw, match):
    with pytest.raises(ClasswiseError, match=match) as e:
        tiny_cfg(**kw)
    assert "\n" not in str(e.value)


def _log(run) -> list[dict]:
    return [json.loads(line) for line in (run / "intensity.jsonl").read_text().splitlines()]


def test_probe_changes_no_training_and_a_resumed_log_equals_an_uninterrupted_one(tmp_path):
    kw = dict(epochs=2, train_limit=200, batch_size=64, val_limit=20, val_steps=1)
    cfg = tiny_cfg(intensity_every=2, intensity_batch=8, **kw)
    full = fit(cfg, tmp_path / "a", device="cpu")
    plain = fit(tiny_cfg(**kw), tmp_path / "plain", device="cpu")
    assert [h["train_loss"] for h in full.history] == [h["train_loss"] for h in plain.history]
    with pytest.raises(TrainingInterrupted):
        fit(cfg, tmp_path / "b", device="cpu", callbacks=stop_at_epoch(1))
    fit(cfg, tmp_path / "b", resume=True, device="cpu")
    a, b = _log(tmp_path / "a"), _log(tmp_path / "b")
    assert a == b
    assert [r["step"] for r in a] == [2, 4, 6, 8]  # 4 steps per epoch (180 images / 64), every 2nd probed
    r = a[0]
    assert r["n"] == 8 and len(r["adv"]) == len(r["clean"]) == len(r["labels"]) == 8
    assert r["adv_summary"]["max"] == max(r["adv"]) and r["clean_summary"]["n"] == 8
    assert all(v > 0 for v in r["adv"] + r["clean"])
